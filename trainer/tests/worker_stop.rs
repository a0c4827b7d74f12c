//! A `train-worker` invocation against a real parameter-store shard on 127.0.0.1:0: it runs its
//! step budget, but once the job is asked to stop it returns after the step it is in (the steps it
//! would run out are billed for nothing).

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use cumulus_models::{Model, ModelConfig};
use cumulus_param_store::client::ClientConfig;
use cumulus_param_store::{ParamStoreClient, ShardConfig};
use cumulus_proto::paramstore::v1 as pb;
use cumulus_trainer::coordinator::tensor_specs;
use cumulus_trainer::data_shards;
use cumulus_trainer::job::JobSpec;
use cumulus_trainer::worker::{WorkerTask, run_task};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_returns_after_its_current_step_once_the_job_is_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ShardConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("store"));
    config.wal_fsync = false;
    let shard = cumulus_param_store::run(config).await.unwrap();
    let store = vec![shard.addr.to_string()];
    let client = ParamStoreClient::connect(&store, ClientConfig::default())
        .await
        .unwrap();

    let job = JobSpec::from_toml_str(
        "test.toml",
        &common::digits_job("name = \"stop\"", "sync = \"asp\"", "max_epochs = 1"),
    )
    .unwrap();
    let model_config = ModelConfig::default_for("logreg").unwrap();
    let model = Model::with_seed(&model_config, &Device::Cpu, 1).unwrap();
    client
        .register(pb::RegisterRequest {
            job_id: "stop".into(),
            tensors: tensor_specs(&model),
            sync: "asp".into(),
            workers: 1,
            chunk_size: 0,
        })
        .await
        .unwrap();
    let x = Tensor::ones((64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::from_vec(
        (0..64).map(|i| (i % 10) as f32).collect::<Vec<_>>(),
        64,
        &Device::Cpu,
    )
    .unwrap();
    let url = data_shards::file_url(&dir.path().join("part-0")).unwrap();
    data_shards::write(&url, &x, &y).await.unwrap();

    let task = WorkerTask {
        job_id: "stop".into(),
        worker: 0,
        store,
        model: model_config,
        training: job.training.clone(),
        significance: 0.0,
        partition: url,
        cursor: 0,
        clock: 0,
        seq: 1 << 32,
        steps: 40,
        lr: 0.01,
        wait_for_clock: false,
        half_values: false,
        gpu: None,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let ran = run_task(task.clone(), deadline).await.unwrap();
    assert_eq!(
        ran.steps.len(),
        40,
        "a job that is not stopping runs its budget"
    );

    client.stop("stop").await.unwrap();
    let next = WorkerTask {
        cursor: ran.cursor,
        clock: ran.clock,
        seq: 2 << 32,
        ..task
    };
    let stopped = run_task(next, deadline).await.unwrap();
    assert_eq!(
        stopped.steps.len(),
        1,
        "the step in progress, then it returns"
    );
    assert_eq!(stopped.clock, ran.clock + 1);
    shard.stop().await.unwrap();
}
