//! Both front ends on real sockets (127.0.0.1:0) over one backend, with explicit shutdown.

use std::sync::Arc;

use cumulus_inference::protocol::{
    InferBackend, InferRequest, Limits, Tensor, TensorData, grpc_conv, rest,
};
use cumulus_proto::inference as pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use super::fake::FakeBackend;

#[tokio::test]
async fn http_and_grpc_serve_one_backend_and_shut_down() {
    let limits = Limits {
        max_body_bytes: 1 << 20,
        ..Limits::default()
    };
    let backend: Arc<dyn InferBackend> = Arc::new(FakeBackend::new(limits.clone()));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let http_task = tokio::spawn(
        axum::serve(http, cumulus_inference::http::router(backend.clone()))
            .with_graceful_shutdown(wait(stopped.clone()))
            .into_future(),
    );
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(cumulus_inference::grpc::service(backend))
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), wait(stopped)),
    );

    // REST: a binary request over a real connection, and a body over the limit.
    let base = format!("http://{http_addr}");
    let client = reqwest::Client::new();
    let live: serde_json::Value = client
        .get(format!("{base}/v2/health/live"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live["live"], true);
    let request = InferRequest {
        id: Some("sock".into()),
        inputs: vec![
            Tensor::new(
                "INPUT0",
                vec![1, 4],
                TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]),
            )
            .unwrap(),
        ],
        parameters: [(
            "binary_data_output",
            cumulus_inference::protocol::ParameterValue::Bool(true),
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let encoded = rest::encode_request(&request, true).unwrap();
    let response = client
        .post(format!("{base}/v2/models/add_one/infer"))
        .header(
            "inference-header-content-length",
            encoded.header_len.unwrap(),
        )
        .body(encoded.body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header_len = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = response.bytes().await.unwrap();
    let decoded = rest::decode_response(&body, Some(header_len), &limits).unwrap();
    assert_eq!(decoded.id.as_deref(), Some("sock"));
    assert_eq!(
        decoded.outputs[0].data,
        TensorData::F32(vec![2.0, 3.0, 4.0, 5.0])
    );

    let oversized = client
        .post(format!("{base}/v2/models/add_one/infer"))
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(
        oversized.status(),
        413,
        "the client sees the 413, not a reset connection"
    );
    let e: serde_json::Value = oversized.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("1048576"));
    // The same connection pool still works.
    let again = client
        .get(format!("{base}/v2/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);

    // gRPC on the same backend.
    let mut grpc_client = GrpcInferenceServiceClient::connect(format!("http://{grpc_addr}"))
        .await
        .unwrap();
    let msg = grpc_conv::request_to_grpc("add_one", Some("1"), &request, true).unwrap();
    let r = grpc_client.model_infer(msg).await.unwrap().into_inner();
    let r = grpc_conv::response_from_grpc(r, &limits).unwrap();
    assert_eq!(r.outputs[1].data, request.inputs[0].data);

    stop.send(true).unwrap();
    http_task.await.unwrap().unwrap();
    drop(grpc_client);
    grpc_task.await.unwrap().unwrap();
}
