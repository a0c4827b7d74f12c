//! The inference core without sockets: the batcher over a real model (batched answers equal
//! each request run alone), admission under overload, a draining close, and the gateway over a
//! model repository (bad folders skipped with their reason, load/unload without a restart,
//! names that would leave the repository refused).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use candle_core::{Device, Tensor};
use cumulus_inference::batcher::policy::Profile;
use cumulus_inference::batcher::{BatchError, Batcher};
use cumulus_inference::executor::{ExecFuture, Executed, Executor, InProcessExecutor};
use cumulus_inference::gateway::Gateway;
use cumulus_inference::protocol::{
    InferBackend, InferError, InferRequest, Tensor as V2Tensor, TensorData,
};
use cumulus_inference::repository::Repository;
use cumulus_inference::stage::RawTensor;
use cumulus_models::{Model, ModelConfig};
use cumulus_runtime::{Batching, CumulusConfig, Execution, ModelServing};

fn mlp_folder(dir: &std::path::Path, seed: u64) -> Model {
    let cfg = ModelConfig::default_for("mlp").unwrap();
    let model = Model::with_seed(&cfg, &Device::Cpu, seed).unwrap();
    model.save(dir).unwrap();
    model
}

fn rows(seed: usize, n: usize) -> Vec<f32> {
    (0..n * 64)
        .map(|i| ((i * 31 + seed * 17) % 97) as f32 / 97.0)
        .collect()
}

fn serving(batching: Batching) -> ModelServing {
    ModelServing {
        slo_p99_ms: 2_000.0,
        max_batch_size: 16,
        batching,
        batch: (batching == Batching::Fixed).then_some(16),
        wait_ms: (batching == Batching::Fixed).then_some(50.0),
        execution: Execution::InProcess,
        max_instances: 1,
        ..ModelServing::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_answers_equal_each_request_run_alone() {
    let dir = tempfile::tempdir().unwrap();
    let model = mlp_folder(dir.path(), 5);
    let executor =
        Arc::new(InProcessExecutor::start(dir.path().to_path_buf(), (0, None), 1).unwrap());
    let profile = Profile::new(vec![(1, 1.0), (16, 2.0)]).unwrap();
    let batcher = Arc::new(Batcher::start(
        "mlp",
        &serving(Batching::Fixed),
        executor,
        profile,
    ));
    let mut clients = Vec::new();
    for c in 0..24 {
        let batcher = batcher.clone();
        clients.push(tokio::spawn(async move {
            let n = 1 + c % 3;
            let values = rows(c, n);
            let answer = batcher
                .submit(RawTensor::f32(vec![n, 64], &values))
                .await
                .expect("admitted and answered");
            (values, n, answer)
        }));
    }
    let mut batched = 0;
    for client in clients {
        let (values, n, answer) = client.await.unwrap();
        let alone = model
            .forward_t(
                &Tensor::from_vec(values, (n, 64), &Device::Cpu).unwrap(),
                false,
            )
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let got = answer.output.to_candle().unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got.len(), n, "each request gets exactly its rows back");
        for (g, a) in got.iter().zip(&alone) {
            for (x, y) in g.iter().zip(a) {
                assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
            }
        }
        if answer.batch_rows > n {
            batched += 1;
        }
    }
    assert!(batched > 0, "concurrent requests shared batches");
}

/// A model that takes `ms` per batch, one batch at a time, counting what it ran.
struct Slow {
    ms: u64,
    ran: AtomicUsize,
}

impl Executor for Slow {
    fn execute(&self, batch: RawTensor) -> ExecFuture<'_> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(self.ms)).await;
            self.ran.fetch_add(batch.rows(), Ordering::SeqCst);
            Ok(Executed {
                output: batch,
                took: Duration::from_millis(self.ms),
                compute: Duration::from_millis(self.ms),
                cold: false,
            })
        })
    }
    fn parallelism(&self) -> usize {
        1
    }
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_refused_at_once_and_never_queued_past_the_slo() {
    let executor = Arc::new(Slow {
        ms: 40,
        ran: AtomicUsize::new(0),
    });
    let mut s = serving(Batching::Adaptive);
    s.slo_p99_ms = 100.0;
    s.max_batch_size = 2;
    s.max_queue = 64;
    let profile = Profile::new(vec![(1, 40.0), (2, 40.0)]).unwrap();
    let batcher = Arc::new(Batcher::start("slow", &s, executor.clone(), profile));
    let mut clients = Vec::new();
    for c in 0..40 {
        let batcher = batcher.clone();
        clients.push(tokio::spawn(async move {
            batcher
                .submit(RawTensor::f32(vec![1, 1], &[c as f32]))
                .await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for client in clients {
        match client.await.unwrap() {
            Ok(answer) => {
                ok += 1;
                assert_eq!(answer.output.rows(), 1);
            }
            Err(BatchError::Overloaded {
                retry_after,
                reason,
            }) => {
                refused += 1;
                assert!(retry_after > Duration::ZERO, "{reason}");
                assert!(
                    reason.contains("SLO") || reason.contains("queue"),
                    "{reason}"
                );
            }
            Err(other) => panic!("{other}"),
        }
    }
    // 100 ms of SLO holds about two rounds of 40 ms batches of 2: most are refused, at once.
    assert!(ok >= 2 && refused >= 30, "ok {ok}, refused {refused}");
    assert_eq!(
        executor.ran.load(Ordering::SeqCst),
        ok,
        "refused requests never ran"
    );
    // The front end's pre-check (before it decodes a body) says the same without queueing.
    assert!(batcher.admits(1).is_ok(), "an idle model admits");
    let busy: Vec<_> = (0..6)
        .map(|c| {
            let batcher = batcher.clone();
            tokio::spawn(async move {
                batcher
                    .submit(RawTensor::f32(vec![1, 1], &[c as f32]))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        matches!(batcher.admits(1), Err(BatchError::Overloaded { .. })),
        "a busy model refuses before anything is decoded"
    );
    for b in busy {
        let _ = b.await.unwrap();
    }
}

/// The first batch starts an instance (slow, and says so); every later one takes 1 ms.
struct ColdFirst {
    ran: AtomicUsize,
}

impl Executor for ColdFirst {
    fn execute(&self, batch: RawTensor) -> ExecFuture<'_> {
        Box::pin(async move {
            let first = self.ran.fetch_add(1, Ordering::SeqCst) == 0;
            let ms = if first { 400 } else { 1 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Executed {
                output: batch,
                took: Duration::from_millis(ms),
                compute: Duration::from_millis(1),
                cold: first,
            })
        })
    }
    fn parallelism(&self) -> usize {
        1
    }
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_start_or_a_stale_profile_never_locks_the_model_out() {
    let mut s = serving(Batching::Adaptive);
    s.slo_p99_ms = 50.0;
    // A cold start is not folded into the profile: admission stays as measured.
    let batcher = Batcher::start(
        "cold",
        &s,
        Arc::new(ColdFirst {
            ran: AtomicUsize::new(0),
        }),
        Profile::new(vec![(1, 1.0)]).unwrap(),
    );
    let one = || RawTensor::f32(vec![1, 1], &[1.0]);
    batcher.submit(one()).await.expect("the cold batch answers");
    assert!(batcher.exec_ms(1) < 5.0, "{}", batcher.exec_ms(1));
    batcher.close().await;

    // A profile far past the SLO (as a slow start-up measured it): an idle model still admits,
    // so each request measures it again, until admission under load works from the truth.
    let slow = Arc::new(Slow {
        ms: 1,
        ran: AtomicUsize::new(0),
    });
    let batcher = Batcher::start(
        "stale",
        &s,
        slow.clone(),
        Profile::new(vec![(1, 500.0)]).unwrap(),
    );
    for _ in 0..30 {
        batcher
            .submit(one())
            .await
            .expect("an idle model admits its request");
    }
    assert!(
        batcher.exec_ms(1) < s.slo_p99_ms / 2.0,
        "the profile came back to what batches take: {}",
        batcher.exec_ms(1)
    );
    assert_eq!(slow.ran.load(Ordering::SeqCst), 30);
    batcher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_answers_what_is_queued_then_refuses() {
    let executor = Arc::new(Slow {
        ms: 30,
        ran: AtomicUsize::new(0),
    });
    let mut s = serving(Batching::Off);
    s.slo_p99_ms = 10_000.0;
    let profile = Profile::new(vec![(1, 30.0)]).unwrap();
    let batcher = Arc::new(Batcher::start("drain", &s, executor.clone(), profile));
    let mut clients = Vec::new();
    for c in 0..5 {
        let batcher = batcher.clone();
        clients.push(tokio::spawn(async move {
            batcher
                .submit(RawTensor::f32(vec![1, 1], &[c as f32]))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    batcher.close().await;
    for client in clients {
        assert!(
            client.await.unwrap().is_ok(),
            "a queued request is answered while draining"
        );
    }
    assert_eq!(executor.ran.load(Ordering::SeqCst), 5);
    let late = batcher.submit(RawTensor::f32(vec![1, 1], &[0.0])).await;
    assert!(matches!(late, Err(BatchError::Unavailable(_))), "{late:?}");
}

fn in_process_config() -> CumulusConfig {
    let mut config = CumulusConfig::default();
    config.inference.defaults.execution = Execution::InProcess;
    config.inference.defaults.max_instances = 1;
    config
}

fn request(n: usize) -> InferRequest {
    InferRequest {
        id: Some("r".into()),
        inputs: vec![
            V2Tensor::new("input", vec![n as u64, 64], TensorData::F32(rows(1, n))).unwrap(),
        ],
        ..InferRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_skips_bad_folders_and_serves_new_models_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    mlp_folder(&dir.path().join("good"), 1);
    std::fs::create_dir(dir.path().join("broken")).unwrap();
    std::fs::write(dir.path().join("broken/config.json"), "{").unwrap();
    let repo = Repository::open(dir.path()).unwrap();
    let gateway = Gateway::start(repo, in_process_config(), None, None).await;

    let index = gateway.repository_index(false);
    let broken = index.iter().find(|e| e.name == "broken").expect("listed");
    assert_eq!(broken.state.as_str(), "UNAVAILABLE");
    assert!(!broken.reason.is_empty(), "{broken:?}");
    let answer = gateway.infer("good", None, request(2)).await.unwrap();
    assert_eq!(answer.outputs[0].shape, vec![2, 10]);
    assert_eq!(answer.id.as_deref(), Some("r"));
    assert!(matches!(
        gateway.infer("broken", None, request(1)).await,
        Err(InferError::ModelNotReady(_))
    ));
    assert!(matches!(
        gateway.infer("absent", None, request(1)).await,
        Err(InferError::ModelNotFound(_))
    ));

    // A model trained meanwhile: loaded and served, no restart.
    mlp_folder(&dir.path().join("fresh"), 2);
    assert!(
        gateway
            .repository_index(true)
            .iter()
            .all(|e| e.name != "fresh")
    );
    gateway.load("fresh").await.unwrap();
    assert!(gateway.model_ready("fresh", None).unwrap());
    assert!(gateway.infer("fresh", None, request(1)).await.is_ok());
    gateway.unload("fresh").await.unwrap();
    assert!(!gateway.model_ready("fresh", None).unwrap());
    assert!(matches!(
        gateway.infer("fresh", None, request(1)).await,
        Err(InferError::ModelNotReady(_))
    ));
    // Names that would leave the repository never reach the file system.
    for bad in ["../good", "a/b", ".hidden"] {
        assert!(gateway.load(bad).await.is_err(), "{bad}");
    }
    // A wrong shape is the client's error, named.
    let mut wrong = request(1);
    wrong.inputs[0] = V2Tensor::new("input", vec![1, 63], TensorData::F32(vec![0.0; 63])).unwrap();
    match gateway.infer("good", None, wrong).await {
        Err(InferError::BadRequest(m)) => assert!(m.contains("input"), "{m}"),
        other => panic!("{other:?}"),
    }
    gateway.shutdown().await;
    assert!(!gateway.server_ready());
}
