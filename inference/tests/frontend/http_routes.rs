//! Every REST route and every error class, through the router without a socket.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cumulus_inference::protocol::Limits;
use serde_json::{Value, json};

use super::{app, app_with, call, error_of, get, json_of, post_bytes, post_json};

fn add_one_request() -> Value {
    json!({
        "id": "req-7",
        "parameters": {"custom": "yes", "answer": 42},
        "inputs": [{"name": "INPUT0", "shape": [2, 4], "datatype": "FP32",
                    "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}],
    })
}

#[tokio::test]
async fn health_and_server_metadata() {
    let (backend, app) = app_with(Limits::default());
    let (s, _, b) = call(&app, get("/v2/health/live")).await;
    assert_eq!((s, json_of(&b)), (StatusCode::OK, json!({"live": true})));
    let (s, _, b) = call(&app, get("/v2/health/ready")).await;
    assert_eq!((s, json_of(&b)), (StatusCode::OK, json!({"ready": true})));
    backend.set_ready(false);
    let (s, _, b) = call(&app, get("/v2/health/ready")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&b).contains("not ready"));

    let (s, _, b) = call(&app, get("/v2")).await;
    assert_eq!(s, StatusCode::OK);
    let meta = json_of(&b);
    assert_eq!(meta["name"], "cumulus-fake");
    assert_eq!(
        meta["extensions"],
        json!(["binary_tensor_data", "model_repository"])
    );
}

#[tokio::test]
async fn model_metadata_and_readiness() {
    let app = app();
    let (s, _, b) = call(&app, get("/v2/models/add_one")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        json_of(&b),
        json!({"name": "add_one", "versions": ["1"], "platform": "fake",
               "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}],
               "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]},
                           {"name": "OUTPUT1", "datatype": "FP32", "shape": [-1, 4]}]})
    );
    let (s, _, _) = call(&app, get("/v2/models/add_one/versions/1")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = call(&app, get("/v2/models/add_one/versions/2")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_of(&b).contains("no version '2'"));
    let (s, _, b) = call(&app, get("/v2/models/nope")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&b), "unknown model 'nope'");

    let (s, _, b) = call(&app, get("/v2/models/add_one/ready")).await;
    assert_eq!(
        (s, json_of(&b)),
        (StatusCode::OK, json!({"name": "add_one", "ready": true}))
    );
    let (s, _, _) = call(&app, get("/v2/models/add_one/versions/1/ready")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = call(&app, get("/v2/models/sleepy/ready")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&b).contains("'sleepy' is not ready"));
    let (s, _, _) = call(&app, get("/v2/models/nope/ready")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_model_names_are_refused_before_the_backend() {
    let app = app();
    for path in [
        "/v2/models/a%2Fb",
        "/v2/models/..",
        "/v2/models/a%00b",
        "/v2/models/a%0Ab/ready",
        "/v2/models/ok/versions/..%2F1",
    ] {
        let (s, _, b) = call(&app, get(path)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}");
        let e = error_of(&b);
        assert!(
            e.contains("model name") || e.contains("model version"),
            "{path}: {e}"
        );
    }
    let long = format!("/v2/models/{}", "m".repeat(300));
    let (s, _, _) = call(&app, get(&long)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn infer_json_echoes_the_id_and_passes_parameters() {
    let app = app();
    let (s, h, b) = call(
        &app,
        post_json("/v2/models/add_one/infer", &add_one_request()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h[header::CONTENT_TYPE], "application/json");
    assert!(h.get("inference-header-content-length").is_none());
    let r = json_of(&b);
    assert_eq!(r["model_name"], "add_one");
    assert_eq!(r["model_version"], "1");
    assert_eq!(r["id"], "req-7");
    assert_eq!(r["parameters"], json!({"custom": "yes", "answer": 42}));
    assert_eq!(r["outputs"][0]["name"], "OUTPUT0");
    assert_eq!(r["outputs"][0]["shape"], json!([2, 4]));
    assert_eq!(
        r["outputs"][0]["data"],
        json!([2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    );
    assert_eq!(r["outputs"][1]["name"], "OUTPUT1");

    // Versioned path, flat data, one requested output.
    let req = json!({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0.5]}],
                     "outputs": [{"name": "OUTPUT1"}]});
    let (s, _, b) = call(&app, post_json("/v2/models/add_one/versions/1/infer", &req)).await;
    assert_eq!(s, StatusCode::OK);
    let r = json_of(&b);
    assert_eq!(r["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(r["outputs"][0]["name"], "OUTPUT1");
    assert_eq!(r["outputs"][0]["data"], json!([0.0, 0.0, 0.0, 0.5]));
    assert!(r.get("id").is_none());
}

#[tokio::test]
async fn infer_binary_in_and_out() {
    let app = app();
    let header = json!({
        "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": true}}, {"name": "OUTPUT1"}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    for x in [1.0f32, 2.0, 3.0, 4.0] {
        body.extend_from_slice(&x.to_le_bytes());
    }
    let (s, h, b) = call(
        &app,
        post_bytes("/v2/models/add_one/infer", body, Some(header.len())),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");
    let n: usize = h["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let r: Value = serde_json::from_slice(&b[..n]).unwrap();
    assert_eq!(r["outputs"][0]["parameters"]["binary_data_size"], 16);
    assert!(r["outputs"][0].get("data").is_none());
    assert_eq!(
        r["outputs"][1]["data"],
        json!([1.0, 2.0, 3.0, 4.0]),
        "OUTPUT1 stays JSON"
    );
    let values: Vec<f32> = b[n..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, [2.0, 3.0, 4.0, 5.0]);

    // binary_data_output asks for every output in binary, in the requested order.
    let req = json!({"parameters": {"binary_data_output": true},
                     "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]});
    let (s, h, b) = call(&app, post_json("/v2/models/add_one/infer", &req)).await;
    assert_eq!(s, StatusCode::OK);
    let n: usize = h["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(b.len(), n + 32);
}

async fn bad_infer(model: &str, req: Value) -> (StatusCode, String) {
    let (s, _, b) = call(
        &app(),
        post_json(&format!("/v2/models/{model}/infer"), &req),
    )
    .await;
    (s, error_of(&b))
}

#[tokio::test]
async fn infer_errors_name_what_is_wrong() {
    let input = |name: &str, shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]});
    let (s, e) = bad_infer(
        "nope",
        input("INPUT0", json!([1, 4]), "FP32", json!([1, 2, 3, 4])),
    )
    .await;
    assert_eq!(
        (s, e.as_str()),
        (StatusCode::NOT_FOUND, "unknown model 'nope'")
    );

    let (s, e) = bad_infer(
        "add_one",
        input("INPUT0", json!([1, 3]), "FP32", json!([1, 2, 3])),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e.contains("'INPUT0' has shape [1, 3]") && e.contains("[-1, 4]"),
        "{e}"
    );

    let (s, e) = bad_infer(
        "add_one",
        input(
            "INPUT0",
            json!([1, 4]),
            "BYTES",
            json!(["a", "b", "c", "d"]),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e.contains("BYTES") && e.contains("FP32"), "{e}");

    let (s, e) = bad_infer(
        "add_one",
        input("INPUT9", json!([1, 4]), "FP32", json!([1, 2, 3, 4])),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e.contains("no input 'INPUT9'") && e.contains("'INPUT0'"),
        "{e}"
    );

    let (s, e) = bad_infer(
        "add_one",
        input("INPUT0", json!([1, 4]), "FP32", json!([1, 2, 3])),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e.contains("needs 4 elements but its data has 3"), "{e}");

    let (s, e) = bad_infer(
        "add_one",
        input("INPUT0", json!([1, 4]), "FLOAT", json!([1, 2, 3, 4])),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e.contains("unknown datatype"), "{e}");

    let mut req = input("INPUT0", json!([1, 4]), "FP32", json!([1, 2, 3, 4]));
    req["outputs"] = json!([{"name": "OUTPUT7"}]);
    let (s, e) = bad_infer("add_one", req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e.contains("no output 'OUTPUT7'"), "{e}");

    // Integers convert to the model's FP32; floats never become integers.
    let (s, _, _) = call(
        &app(),
        post_json(
            "/v2/models/add_one/infer",
            &input("INPUT0", json!([1, 4]), "INT64", json!([1, 2, 3, 4])),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = bad_infer(
        "identity_int32",
        input("INPUT0", json!([1, 1]), "FP32", json!([1.0])),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e.contains("never converted to integers"), "{e}");

    let (s, e) = bad_infer(
        "add_one",
        input("INPUT0", json!([1099511627776_u64, 4]), "FP32", json!([1])),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(e.contains("elements allowed"), "{e}");

    let (s, e) = bad_infer(
        "sleepy",
        input("INPUT0", json!([1, 4]), "FP32", json!([1, 2, 3, 4])),
    )
    .await;
    assert_eq!(
        (s, e.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "model 'sleepy' is not ready"
        )
    );
}

#[tokio::test]
async fn malformed_bodies_and_headers_are_400() {
    let app = app();
    for (body, header_len) in [
        (b"{not json".to_vec(), None),
        (b"{}".to_vec(), None),
        (br#"{"inputs": 3}"#.to_vec(), None),
        (br#"{"inputs": []}"#.to_vec(), Some(100)),
        (br#"{"inputs": []}"#.to_vec(), Some(0)),
        (vec![0xff, 0xfe], None),
    ] {
        let (s, _, b) = call(
            &app,
            post_bytes("/v2/models/add_one/infer", body.clone(), header_len),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "{:?}",
            String::from_utf8_lossy(&body)
        );
        error_of(&b);
    }
    let r = Request::post("/v2/models/add_one/infer")
        .header("inference-header-content-length", "lots")
        .body(Body::from("{}"))
        .unwrap();
    let (s, _, b) = call(&app, r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&b).contains("Inference-Header-Content-Length"));
    let r = Request::post("/v2/models/add_one/infer")
        .header("content-encoding", "gzip")
        .body(Body::from("{}"))
        .unwrap();
    let (s, _, b) = call(&app, r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&b).contains("Content-Encoding"));
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_content_length() {
    let (_, app) = app_with(Limits {
        max_body_bytes: 1024,
        ..Limits::default()
    });
    let big = vec![b' '; 2048];
    let (s, _, b) = call(
        &app,
        post_bytes("/v2/models/add_one/infer", big.clone(), None),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&b).contains("1024"));
    // A streamed body has no Content-Length: the limit applies while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(vec![b' '; 700]), Ok(vec![b' '; 700])];
    let r = Request::post("/v2/models/add_one/infer")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let (s, _, b) = call(&app, r).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    error_of(&b);
    let (s, _, _) = call(&app, post_bytes("/v2/repository/index", big, None)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // A client that waits for `100 Continue` is answered without reading its (never sent) body.
    let r = Request::post("/v2/models/add_one/infer")
        .header(header::CONTENT_LENGTH, 1 << 30)
        .header(header::EXPECT, "100-continue")
        .body(Body::from_stream(futures::stream::pending::<
            Result<Vec<u8>, std::io::Error>,
        >()))
        .unwrap();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), call(&app, r)).await;
    assert_eq!(
        answered.expect("answered without waiting for the body").0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn overloaded_is_429_with_retry_after_and_internal_is_generic() {
    let req = json!({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]});
    let (s, h, b) = call(&app(), post_json("/v2/models/busy/infer", &req)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h[header::RETRY_AFTER], "2", "1.5 s rounds up");
    assert!(error_of(&b).contains("overloaded"));
    let (s, _, b) = call(&app(), post_json("/v2/models/broken/infer", &req)).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    let e = error_of(&b);
    assert!(!e.contains("secret") && !e.contains("GPU"), "{e}");
}

#[tokio::test]
async fn repository_index_load_and_unload() {
    let app = app();
    let (s, _, b) = call(
        &app,
        Request::post("/v2/repository/index")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let all = json_of(&b);
    let sleepy = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "sleepy")
        .unwrap();
    assert_eq!(
        *sleepy,
        json!({"name": "sleepy", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"})
    );
    let (s, _, b) = call(
        &app,
        post_json("/v2/repository/index", &json!({"ready": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let ready = json_of(&b);
    assert_eq!(
        ready.as_array().unwrap().len(),
        all.as_array().unwrap().len() - 1
    );
    assert!(
        ready
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["state"] == "READY")
    );

    let (s, _, b) = call(
        &app,
        post_json("/v2/repository/models/sleepy/load", &json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.is_empty());
    let (s, _, _) = call(&app, get("/v2/models/sleepy/ready")).await;
    assert_eq!(s, StatusCode::OK);

    let unload = json!({"parameters": {"unload_dependents": false}});
    let (s, _, _) = call(
        &app,
        post_json("/v2/repository/models/add_one/unload", &unload),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(
        &app,
        post_json("/v2/models/add_one/infer", &add_one_request()),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, _, _) = call(
        &app,
        Request::post("/v2/repository/models/add_one/load")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(
        &app,
        post_json("/v2/models/add_one/infer", &add_one_request()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let (s, _, b) = call(
        &app,
        post_json("/v2/repository/models/nope/load", &json!({})),
    )
    .await;
    assert_eq!(
        (s, error_of(&b).as_str()),
        (StatusCode::NOT_FOUND, "unknown model 'nope'")
    );
    let config = json!({"parameters": {"config": "{}"}});
    let (s, _, b) = call(
        &app,
        post_json("/v2/repository/models/add_one/load", &config),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&b).contains("'config' is not supported"));
    let (s, _, _) = call(
        &app,
        post_bytes("/v2/repository/index", b"[".to_vec(), None),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = app();
    let (s, _, b) = call(&app, get("/v2/models/add_one/config")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    error_of(&b);
    let (s, _, b) = call(&app, get("/v2/models/add_one/infer")).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    error_of(&b);
}
