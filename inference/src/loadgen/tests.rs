//! Runs against fake servers on 127.0.0.1:0 in this process. Assertions are lower bounds on what
//! a server's deliberate sleep must produce, or counts; none depends on how fast this machine is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cumulus_proto::inference as pb;
use cumulus_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use tokio::net::TcpListener;
use tonic::{Request, Status};

use super::*;

/// What a fake REST server does with request number `n` (counted from 0).
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answer one at a time (a single worker), sleeping 200 ms once, at request `stall_at`.
    StallOnce { stall_at: usize },
    /// Every second request gets 429.
    HalfOverloaded,
    /// Every request sleeps this long (concurrently).
    Slow(Duration),
    /// Checks the binary tensor extension and answers in it.
    Binary,
}

struct Fake {
    behaviour: Behaviour,
    count: AtomicUsize,
    /// Serializes `StallOnce`: requests queue behind the stalled one, as in a one-worker server.
    worker: tokio::sync::Mutex<()>,
}

const JSON_ANSWER: &str = r#"{"model_name":"m","outputs":[{"name":"output","shape":[1,1],"datatype":"FP32","data":[1.0]}]}"#;

async fn infer(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> Response {
    let n = fake.count.fetch_add(1, Ordering::SeqCst);
    match fake.behaviour {
        Behaviour::StallOnce { stall_at } => {
            let _one_at_a_time = fake.worker.lock().await;
            if n == stall_at {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            JSON_ANSWER.into_response()
        }
        Behaviour::HalfOverloaded if n % 2 == 1 => {
            (StatusCode::TOO_MANY_REQUESTS, r#"{"error":"overloaded"}"#).into_response()
        }
        Behaviour::HalfOverloaded => JSON_ANSWER.into_response(),
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            JSON_ANSWER.into_response()
        }
        Behaviour::Binary => binary_answer(&headers, &body),
    }
}

fn binary_answer(headers: &HeaderMap, body: &[u8]) -> Response {
    let bad = |why: &str| (StatusCode::BAD_REQUEST, why.to_string()).into_response();
    let Some(n) = headers
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    else {
        return bad("no Inference-Header-Content-Length");
    };
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&body[..n.min(body.len())]) else {
        return bad("header is not JSON");
    };
    let size = header["inputs"][0]["parameters"]["binary_data_size"].as_u64();
    if size != Some((body.len() - n) as u64) || size != Some(4 * 784) {
        return bad("binary_data_size does not match the body");
    }
    if header["parameters"]["binary_data_output"] != true {
        return bad("binary outputs not asked for");
    }
    let mut answer = br#"{"outputs":[{"name":"output","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#.to_vec();
    let header_len = answer.len();
    answer.extend_from_slice(&[0; 8]);
    (
        [
            ("content-type", "application/octet-stream".to_string()),
            ("inference-header-content-length", header_len.to_string()),
        ],
        answer,
    )
        .into_response()
}

async fn rest_server(behaviour: Behaviour) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        behaviour,
        count: AtomicUsize::new(0),
        worker: tokio::sync::Mutex::new(()),
    });
    let app = Router::new()
        .route("/v2/models/{model}/infer", post(infer))
        .with_state(fake.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), fake)
}

fn spec(url: &str, rate: f64) -> LoadSpec {
    LoadSpec {
        arrival: Arrival::Constant { rate },
        duration_s: 1.5,
        warmup_s: 0.25,
        slo_ms: 50.0,
        timeout_ms: 5_000,
        ..LoadSpec::new(url, Payload::new("mlp", "input", &[1, 784]))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_shows_as_the_queueing_of_every_request_scheduled_during_it() {
    // 200/s evenly: 50 warm-up requests, 300 measured; request 100 (t = 0.5 s) stalls the only
    // worker for 200 ms, so the ~40 requests due meanwhile queue behind it.
    let (url, fake) = rest_server(Behaviour::StallOnce { stall_at: 100 }).await;
    let r = run(&LoadSpec {
        server_pid: Some(std::process::id()),
        ..spec(&url, 200.0)
    })
    .await
    .unwrap();
    assert_eq!(fake.count.load(Ordering::SeqCst), 350);
    assert_eq!((r.scheduled, r.sent, r.ok, r.errors), (300, 300, 300, 0));
    // Measured from the actual send of each request by a closed-loop client, only the stalled
    // request would be slow (1 in 300, under p99). From the schedule, the requests due during the
    // first 150 ms of the stall each waited over 50 ms: about 30 of them, 10%.
    assert!(
        r.latency.p99_ms >= 100.0,
        "p99 {} ms hides the stall",
        r.latency.p99_ms
    );
    assert!(r.latency.p90_ms >= 40.0, "p90 {} ms", r.latency.p90_ms);
    assert!(
        r.ok - r.ok_within_slo >= 20,
        "only {} answers over the 50 ms SLO",
        r.ok - r.ok_within_slo
    );
    assert!(r.latency.max_ms >= 190.0, "max {} ms", r.latency.max_ms);
    assert!((r.achieved_send_rate - 200.0).abs() < 1e-9);
    assert!(r.goodput_rps < r.throughput_rps);
    // The server is this process: its CPU was measured.
    assert!(r.server_cpu_ms.is_some() && r.server_processes.is_some());
    assert!(r.cost_per_million_usd.is_some());
    assert_eq!(r.cost_basis, Some(CostBasis::CpuSeconds));
    let printed = table(std::slice::from_ref(&r));
    assert!(printed.contains("200.0"), "{printed}");
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<RunResult>(&json).unwrap(), r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_are_counted_apart() {
    let (url, _) = rest_server(Behaviour::HalfOverloaded).await;
    let r = run(&LoadSpec {
        duration_s: 0.5,
        ..spec(&url, 200.0)
    })
    .await
    .unwrap();
    assert_eq!(r.scheduled, 100);
    assert_eq!(r.ok + r.overloaded, 100);
    assert_eq!(r.error_counts.get("http_429").copied(), Some(r.overloaded));
    assert!(r.overloaded >= 45 && r.overloaded <= 55, "{}", r.overloaded);
    assert!((r.error_rate - r.overloaded as f64 / 100.0).abs() < 1e-12);
    assert!(!sustainable(&r, 0.01));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_limit_requests_are_dropped_not_delayed() {
    // Every answer takes 300 ms, 100/s arrive: ~30 would be in flight, 4 are allowed.
    let (url, _) = rest_server(Behaviour::Slow(Duration::from_millis(300))).await;
    let r = run(&LoadSpec {
        max_in_flight: 4,
        duration_s: 1.0,
        ..spec(&url, 100.0)
    })
    .await
    .unwrap();
    assert_eq!(r.sent + r.dropped, r.scheduled);
    assert!(r.dropped >= 50, "{} dropped of {}", r.dropped, r.scheduled);
    assert_eq!(r.error_counts.get("dropped").copied(), Some(r.dropped));
    // Whatever was sent was sent on time, so no answer took much longer than the server's 300 ms
    // sleep plus one in-flight slot's wait... which the limit prevents: the minimum is the sleep.
    assert!(r.latency.min_ms >= 300.0, "{:?}", r.latency);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_time_out() {
    let (url, _) = rest_server(Behaviour::Slow(Duration::from_secs(30))).await;
    let r = run(&LoadSpec {
        duration_s: 0.5,
        warmup_s: 0.0,
        timeout_ms: 100,
        ..spec(&url, 20.0)
    })
    .await
    .unwrap();
    assert_eq!(r.scheduled, 10);
    assert_eq!(r.ok, 0);
    assert_eq!(r.error_counts.get("timeout").copied(), Some(10));
    assert_eq!(r.latency.count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_binary_speaks_the_binary_tensor_extension() {
    let (url, _) = rest_server(Behaviour::Binary).await;
    let r = run(&LoadSpec {
        transport: Transport::RestBinary,
        duration_s: 0.5,
        ..spec(&url, 100.0)
    })
    .await
    .unwrap();
    assert_eq!(r.error_counts, Default::default());
    assert_eq!(r.ok, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_there_is_counted_as_connect_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let r = run(&LoadSpec {
        duration_s: 0.2,
        warmup_s: 0.0,
        ..spec(&url, 50.0)
    })
    .await
    .unwrap();
    assert_eq!(r.error_counts.get("connect").copied(), Some(r.scheduled));
    assert!(matches!(
        run(&LoadSpec {
            server_pid: Some(u32::MAX),
            ..spec(&url, 1.0)
        })
        .await,
        Err(LoadgenError::Proc { .. })
    ));
    assert!(matches!(
        run(&LoadSpec {
            duration_s: 0.0,
            ..spec(&url, 1.0)
        })
        .await,
        Err(LoadgenError::Spec(_))
    ));
}

/// A gRPC V2 server answering every `ModelInfer` with one output, or `RESOURCE_EXHAUSTED` (every
/// other RPC of the service is unimplemented).
struct FakeGrpc {
    exhausted: bool,
}

#[tonic::async_trait]
impl GrpcInferenceService for FakeGrpc {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<tonic::Response<pb::ServerLiveResponse>, Status> {
        Ok(tonic::Response::new(pb::ServerLiveResponse { live: true }))
    }
    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<tonic::Response<pb::ServerReadyResponse>, Status> {
        Ok(tonic::Response::new(pb::ServerReadyResponse {
            ready: true,
        }))
    }
    async fn model_ready(
        &self,
        _: Request<pb::ModelReadyRequest>,
    ) -> Result<tonic::Response<pb::ModelReadyResponse>, Status> {
        Ok(tonic::Response::new(pb::ModelReadyResponse { ready: true }))
    }
    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<tonic::Response<pb::ServerMetadataResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn model_metadata(
        &self,
        _: Request<pb::ModelMetadataRequest>,
    ) -> Result<tonic::Response<pb::ModelMetadataResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn repository_index(
        &self,
        _: Request<pb::RepositoryIndexRequest>,
    ) -> Result<tonic::Response<pb::RepositoryIndexResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn repository_model_load(
        &self,
        _: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<tonic::Response<pb::RepositoryModelLoadResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn repository_model_unload(
        &self,
        _: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<tonic::Response<pb::RepositoryModelUnloadResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<tonic::Response<pb::ModelInferResponse>, Status> {
        if self.exhausted {
            return Err(Status::resource_exhausted("queue full"));
        }
        let r = request.into_inner();
        if r.model_name != "mlp" || r.raw_input_contents.first().map(Vec::len) != Some(4 * 784) {
            return Err(Status::invalid_argument("bad tensor"));
        }
        Ok(tonic::Response::new(pb::ModelInferResponse {
            model_name: r.model_name,
            outputs: vec![pb::model_infer_response::InferOutputTensor {
                name: "output".to_string(),
                datatype: "FP32".to_string(),
                shape: vec![1, 2],
                ..Default::default()
            }],
            raw_output_contents: vec![vec![0; 8]],
            ..Default::default()
        }))
    }
}

async fn grpc_server(exhausted: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GrpcInferenceServiceServer::new(FakeGrpc { exhausted }))
            .serve_with_incoming(incoming),
    );
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_sends_raw_input_contents() {
    let addr = grpc_server(false).await;
    let r = run(&LoadSpec {
        transport: Transport::Grpc,
        duration_s: 0.5,
        ..spec(&format!("http://{addr}"), 100.0)
    })
    .await
    .unwrap();
    assert_eq!(r.error_counts, Default::default());
    assert_eq!(r.ok, 50);

    let addr = grpc_server(true).await;
    let r = run(&LoadSpec {
        transport: Transport::Grpc,
        duration_s: 0.2,
        ..spec(&format!("http://{addr}"), 100.0)
    })
    .await
    .unwrap();
    assert_eq!(r.overloaded, 20);
    assert_eq!(
        r.error_counts.get("grpc_ResourceExhausted").copied(),
        Some(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_over_a_real_server_runs_each_rate() {
    let (url, _) = rest_server(Behaviour::Slow(Duration::from_millis(1))).await;
    let plan = SweepPlan {
        pause_s: 0.0,
        ..SweepPlan::new(vec![40.0, 20.0])
    };
    let s = sweep(
        &LoadSpec {
            duration_s: 0.25,
            warmup_s: 0.05,
            slo_ms: 5_000.0,
            ..spec(&url, 1.0)
        },
        &plan,
    )
    .await
    .unwrap();
    assert_eq!(s.max_sustainable_rate, Some(40.0));
    let rates: Vec<f64> = s.runs.iter().map(|r| r.target_rate).collect();
    assert_eq!(rates, vec![20.0, 40.0]);
    assert!(sweep_table(&s).contains("at least 40.0"));
}
