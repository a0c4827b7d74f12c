//! Hostile input never panics and is never answered with a 5xx: arbitrary bytes as REST bodies
//! (with and without the binary header, with arbitrary header lengths), arbitrary JSON values,
//! arbitrary inference-shaped JSON, and arbitrary bytes decoded as a `ModelInferRequest`.

use axum::Router;
use bytes::Bytes;
use cumulus_inference::grpc::InferenceService;
use cumulus_inference::protocol::{InferBackend, Limits, ProtocolError, grpc_conv, rest};
use cumulus_proto::inference as pb;
use pb::grpc_inference_service_server::GrpcInferenceService;
use proptest::prelude::*;
use prost::Message;
use serde_json::{Value, json};
use tonic::Code;

use super::{app_with, call, post_bytes};

fn small_limits() -> Limits {
    Limits {
        max_body_bytes: 1 << 16,
        max_tensor_elements: 1 << 12,
        max_request_elements: 1 << 13,
        max_bytes_element_len: 1 << 10,
        ..Limits::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
}

/// Posts `body` to `model`'s infer route and returns the status.
fn status_of(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    model: &str,
    body: Vec<u8>,
    header_len: Option<usize>,
) -> u16 {
    let uri = format!("/v2/models/{model}/infer");
    rt.block_on(async {
        call(app, post_bytes(&uri, body, header_len))
            .await
            .0
            .as_u16()
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-zA-Z0-9_ ]{0,8}".prop_map(Value::String),
        prop::sample::select(vec![
            "INPUT0",
            "FP32",
            "BYTES",
            "inputs",
            "data",
            "shape",
            "datatype",
            "parameters",
            "binary_data_size"
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "inputs",
                    "outputs",
                    "name",
                    "shape",
                    "datatype",
                    "data",
                    "parameters",
                    "id",
                    "binary_data_size",
                    "binary_data",
                    "binary_data_output",
                    "x"
                ]),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// JSON shaped like an inference request, with wrong bits sprinkled in.
fn inference_json() -> impl Strategy<Value = Value> {
    let datatype = prop::sample::select(vec![
        "BOOL", "INT8", "UINT64", "FP16", "BF16", "FP32", "FP64", "BYTES", "NOPE",
    ]);
    let dim = prop_oneof![0u64..5, Just(1u64 << 40), any::<u64>()];
    let input = (
        prop::sample::select(vec!["INPUT0", "A", "B", "C", "D", "X"]),
        prop::collection::vec(dim, 0..4),
        datatype,
        prop::option::of(json_value()),
        prop::option::of(0i64..64),
    )
        .prop_map(|(name, shape, datatype, data, size)| {
            let mut t = json!({"name": name, "shape": shape, "datatype": datatype});
            if let Some(d) = data {
                t["data"] = d;
            }
            if let Some(s) = size {
                t["parameters"] = json!({"binary_data_size": s});
            }
            t
        });
    (prop::collection::vec(input, 0..4), any::<bool>()).prop_map(|(inputs, binary_out)| {
        json!({"inputs": inputs, "parameters": {"binary_data_output": binary_out}})
    })
}

const MODELS: [&str; 4] = ["add_one", "multi", "identity_bytes", "identity_bool"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_never_a_server_error(
        body in prop::collection::vec(any::<u8>(), 0..512),
        header_len in prop::option::of(prop_oneof![0usize..600, any::<usize>()]),
        model in prop::sample::select(MODELS.to_vec()),
    ) {
        let rt = runtime();
        let (_, app) = app_with(small_limits());
        let status = status_of(&rt, &app, model, body.clone(), header_len);
        prop_assert!(status == 200 || (400..500).contains(&status), "status {}", status);
        // The codec alone never panics either, whatever the header claims.
        let _ = rest::decode_request(&Bytes::from(body), header_len, &small_limits());
    }

    #[test]
    fn arbitrary_json_is_never_a_server_error(v in json_value(), model in prop::sample::select(MODELS.to_vec())) {
        let rt = runtime();
        let (_, app) = app_with(small_limits());
        let status = status_of(&rt, &app, model, v.to_string().into_bytes(), None);
        prop_assert!(status == 200 || (400..500).contains(&status), "status {}", status);
    }

    #[test]
    fn inference_shaped_json_with_binary_tails_is_never_a_server_error(
        v in inference_json(),
        tail in prop::collection::vec(any::<u8>(), 0..128),
        model in prop::sample::select(MODELS.to_vec()),
    ) {
        let rt = runtime();
        let (_, app) = app_with(small_limits());
        let mut body = v.to_string().into_bytes();
        let header_len = body.len();
        body.extend_from_slice(&tail);
        let status = status_of(&rt, &app, model, body, Some(header_len));
        prop_assert!(status == 200 || (400..500).contains(&status), "status {}", status);
        let status = status_of(&rt, &app, model, v.to_string().into_bytes(), None);
        prop_assert!(status == 200 || (400..500).contains(&status), "status {}", status);
    }

    #[test]
    fn arbitrary_bytes_as_a_model_infer_request_are_refused_as_client_errors(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let Ok(msg) = pb::ModelInferRequest::decode(bytes.as_slice()) else { return Ok(()) };
        match grpc_conv::request_from_grpc(msg.clone(), &small_limits()) {
            Ok(_) | Err(ProtocolError::BadRequest(_)) | Err(ProtocolError::TooLarge(_)) => {}
            Err(e @ ProtocolError::NotFound(_)) => prop_assert!(false, "decoding cannot find a model missing: {e}"),
        }
        let rt = runtime();
        let backend: std::sync::Arc<dyn InferBackend> = std::sync::Arc::new(super::fake::FakeBackend::new(small_limits()));
        let service = InferenceService::new(backend);
        let result = rt.block_on(service.model_infer(tonic::Request::new(msg)));
        if let Err(status) = result {
            prop_assert!(
                matches!(status.code(), Code::InvalidArgument | Code::NotFound | Code::ResourceExhausted | Code::Unavailable),
                "code {:?}: {}", status.code(), status.message()
            );
        }
    }

    #[test]
    fn mutated_valid_grpc_requests_are_refused_as_client_errors(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let request = cumulus_inference::protocol::InferRequest {
            inputs: vec![cumulus_inference::protocol::Tensor::new(
                "INPUT0", vec![1, 4], cumulus_inference::protocol::TensorData::F32(vec![1.0; 4])).unwrap()],
            ..Default::default()
        };
        let mut bytes = grpc_conv::request_to_grpc("add_one", None, &request, true).unwrap().encode_to_vec();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        let Ok(msg) = pb::ModelInferRequest::decode(bytes.as_slice()) else { return Ok(()) };
        let rt = runtime();
        let backend: std::sync::Arc<dyn InferBackend> = std::sync::Arc::new(super::fake::FakeBackend::new(small_limits()));
        let result = rt.block_on(InferenceService::new(backend).model_infer(tonic::Request::new(msg)));
        if let Err(status) = result {
            prop_assert!(
                matches!(status.code(), Code::InvalidArgument | Code::NotFound | Code::ResourceExhausted | Code::Unavailable),
                "code {:?}: {}", status.code(), status.message()
            );
        }
    }
}
