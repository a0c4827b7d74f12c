//! Every RPC of `inference.GRPCInferenceService` and every error code, against a real tonic
//! server on 127.0.0.1:0 driven by the generated client.

use std::collections::HashMap;
use std::sync::Arc;

use cumulus_inference::protocol::{
    DataType, InferBackend, InferRequest, Limits, ParameterValue, RequestedOutput, Tensor,
    TensorData, grpc_conv,
};
use cumulus_proto::inference as pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::transport::Channel;

use super::fake::FakeBackend;

/// A running gRPC server over a fake backend; stops when dropped.
pub struct GrpcServer {
    pub client: GrpcInferenceServiceClient<Channel>,
    _stop: oneshot::Sender<()>,
}

pub async fn start(limits: Limits) -> GrpcServer {
    let backend: Arc<dyn InferBackend> = Arc::new(FakeBackend::new(limits));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(cumulus_inference::grpc::service(backend))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    let client = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    GrpcServer {
        client,
        _stop: stop,
    }
}

fn add_one(batch: u64, values: Vec<f32>) -> InferRequest {
    InferRequest {
        id: Some("g-1".into()),
        parameters: [("custom", ParameterValue::Int64(5))].into_iter().collect(),
        inputs: vec![Tensor::new("INPUT0", vec![batch, 4], TensorData::F32(values)).unwrap()],
        outputs: vec![],
    }
}

fn msg(model: &str, request: &InferRequest) -> pb::ModelInferRequest {
    grpc_conv::request_to_grpc(model, None, request, true).unwrap()
}

#[tokio::test]
async fn health_and_metadata_rpcs() {
    let server = start(Limits::default()).await;
    let mut c = server.client.clone();
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let meta = c
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.extensions, ["binary_tensor_data", "model_repository"]);

    let m = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "add_one".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.inputs[0].name, "INPUT0");
    assert_eq!(m.inputs[0].datatype, "FP32");
    assert_eq!(m.inputs[0].shape, [-1, 4]);
    assert_eq!(m.versions, ["1"]);
    let e = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "add_one".into(),
            version: "9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "unknown model 'nope'")
    );
    let e = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "../x".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let ready = |name: &str| pb::ModelReadyRequest {
        name: name.into(),
        version: String::new(),
    };
    assert!(
        c.model_ready(ready("add_one"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !c.model_ready(ready("sleepy"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert_eq!(
        c.model_ready(ready("nope")).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn model_infer_raw_and_typed() {
    let server = start(Limits::default()).await;
    let mut c = server.client.clone();
    let request = add_one(2, (0..8).map(|i| i as f32).collect());
    let r = c
        .model_infer(msg("add_one", &request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.id, "g-1");
    assert_eq!(r.model_version, "1");
    assert_eq!(r.raw_output_contents.len(), 2, "every output, raw");
    assert!(r.outputs.iter().all(|o| o.contents.is_none()));
    let response = grpc_conv::response_from_grpc(r, &Limits::default()).unwrap();
    assert_eq!(
        response.outputs[0].data,
        TensorData::F32((1..9).map(|i| i as f32).collect())
    );
    assert_eq!(
        response.parameters.get("custom"),
        Some(&ParameterValue::Int64(5))
    );

    let mut only_one = request.clone();
    only_one.outputs = vec![RequestedOutput::new("OUTPUT1")];
    let r = c
        .model_infer(msg("add_one", &only_one))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = r.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["OUTPUT1"]);

    let typed = InferRequest {
        inputs: vec![Tensor::new("INPUT0", vec![1, 3], TensorData::I16(vec![-3, 0, 3])).unwrap()],
        ..Default::default()
    };
    let m = grpc_conv::request_to_grpc("identity_int16", None, &typed, false).unwrap();
    assert!(m.raw_input_contents.is_empty());
    let r = c.model_infer(m).await.unwrap().into_inner();
    let back = grpc_conv::response_from_grpc(r, &Limits::default()).unwrap();
    assert_eq!(back.outputs[0].data, typed.inputs[0].data);
}

async fn infer_error(
    c: &mut GrpcInferenceServiceClient<Channel>,
    m: pb::ModelInferRequest,
) -> tonic::Status {
    c.model_infer(m).await.expect_err("the request is refused")
}

#[tokio::test]
async fn model_infer_errors_have_their_codes_and_messages() {
    let server = start(Limits::default()).await;
    let mut c = server.client.clone();
    let good = add_one(1, vec![1.0; 4]);
    let e = infer_error(&mut c, msg("nope", &good)).await;
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "unknown model 'nope'")
    );

    let wrong_shape = InferRequest {
        inputs: vec![Tensor::new("INPUT0", vec![1, 3], TensorData::F32(vec![1.0; 3])).unwrap()],
        ..Default::default()
    };
    let e = infer_error(&mut c, msg("add_one", &wrong_shape)).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("'INPUT0' has shape [1, 3]"),
        "{}",
        e.message()
    );

    let wrong_type = InferRequest {
        inputs: vec![Tensor::new("INPUT0", vec![1, 4], TensorData::Bool(vec![true; 4])).unwrap()],
        ..Default::default()
    };
    let e = infer_error(&mut c, msg("add_one", &wrong_type)).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("BOOL"), "{}", e.message());

    let mut wrong_name = good.clone();
    wrong_name.inputs[0].name = "IN".into();
    let e = infer_error(&mut c, msg("add_one", &wrong_name)).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("no input 'IN'"), "{}", e.message());

    let e = infer_error(&mut c, msg("busy", &good)).await;
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(e.metadata().get("retry-after").unwrap(), "2");
    let e = infer_error(&mut c, msg("broken", &good)).await;
    assert_eq!(e.code(), Code::Internal);
    assert!(!e.message().contains("secret"));
    let e = infer_error(&mut c, msg("sleepy", &good)).await;
    assert_eq!(e.code(), Code::Unavailable);

    let mut huge = msg("add_one", &good);
    huge.inputs[0].shape = vec![1 << 40, 4];
    let e = infer_error(&mut c, huge).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());

    let mut mixed = msg("add_one", &good);
    mixed.inputs[0].contents = Some(pb::InferTensorContents {
        fp32_contents: vec![1.0; 4],
        ..Default::default()
    });
    let e = infer_error(&mut c, mixed).await;
    assert_eq!(e.code(), Code::InvalidArgument);

    let mut no_value = msg("add_one", &good);
    no_value.parameters.insert(
        "p".into(),
        pb::InferParameter {
            parameter_choice: None,
        },
    );
    let e = infer_error(&mut c, no_value).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    // The server still answers after all of that.
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
}

#[tokio::test]
async fn messages_over_the_size_limit_are_refused() {
    let server = start(Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    })
    .await;
    let mut c = server.client.clone();
    let big = add_one(512, vec![0.5; 2048]);
    let e = infer_error(&mut c, msg("add_one", &big)).await;
    // tonic refuses by the length prefix, before reading the message; its OUT_OF_RANGE is
    // answered as RESOURCE_EXHAUSTED, as gRPC's C core (and so Triton) does.
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("4096"), "{}", e.message());
    assert!(
        c.model_infer(msg("add_one", &add_one(1, vec![0.0; 4])))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn repository_rpcs() {
    let server = start(Limits::default()).await;
    let mut c = server.client.clone();
    let all = c
        .repository_index(pb::RepositoryIndexRequest {
            repository_name: String::new(),
            ready: false,
        })
        .await
        .unwrap()
        .into_inner()
        .models;
    let sleepy = all.iter().find(|m| m.name == "sleepy").unwrap();
    assert_eq!(
        (sleepy.state.as_str(), sleepy.reason.as_str()),
        ("UNAVAILABLE", "unloaded")
    );
    let ready = c
        .repository_index(pb::RepositoryIndexRequest {
            repository_name: String::new(),
            ready: true,
        })
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(ready.len(), all.len() - 1);

    let load = |name: &str, parameters| pb::RepositoryModelLoadRequest {
        repository_name: String::new(),
        model_name: name.into(),
        parameters,
    };
    c.repository_model_load(load("sleepy", HashMap::new()))
        .await
        .unwrap();
    let ready = pb::ModelReadyRequest {
        name: "sleepy".into(),
        version: String::new(),
    };
    assert!(
        c.model_ready(ready.clone())
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let mut unload_params = HashMap::new();
    unload_params.insert(
        "unload_dependents".to_owned(),
        pb::ModelRepositoryParameter {
            parameter_choice: Some(pb::model_repository_parameter::ParameterChoice::BoolParam(
                false,
            )),
        },
    );
    c.repository_model_unload(pb::RepositoryModelUnloadRequest {
        repository_name: String::new(),
        model_name: "sleepy".into(),
        parameters: unload_params,
    })
    .await
    .unwrap();
    assert!(!c.model_ready(ready).await.unwrap().into_inner().ready);

    let e = c
        .repository_model_load(load("nope", HashMap::new()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let mut config = HashMap::new();
    config.insert(
        "config".to_owned(),
        pb::ModelRepositoryParameter {
            parameter_choice: Some(
                pb::model_repository_parameter::ParameterChoice::StringParam("{}".into()),
            ),
        },
    );
    let e = c
        .repository_model_load(load("add_one", config))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("'config'"), "{}", e.message());
}

#[test]
fn datatype_names_match_the_proto_strings() {
    // The generated messages carry datatypes as strings: the same names as the REST binding.
    for t in DataType::ALL {
        let m = grpc_conv::model_metadata_to_grpc(&cumulus_inference::protocol::ModelMetadata {
            name: "m".into(),
            versions: vec![],
            platform: String::new(),
            inputs: vec![cumulus_inference::protocol::TensorMetadata::new(
                "x",
                t,
                vec![-1],
            )],
            outputs: vec![],
        });
        assert_eq!(m.inputs[0].datatype, t.as_str());
    }
}
