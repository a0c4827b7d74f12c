//! The executor with several real tenants connecting over a temporary Unix socket (and loopback
//! TCP), on the CPU backend: weight sharing, error isolation, quotas, bounded queues, weighted
//! shares, priorities, training over the socket and sessions that end with their clients.

use cumulus_gpu::{
    BackendChoice, ExecutorClient, ExecutorConfig, GpuError, HostTensor, LayerRange, Listen,
    ModelSource, Priority, TenantOptions,
};

use crate::common::{executor, host, model_folder, reference, rel_err, tenant, tenant_with, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_of_one_model_share_one_copy_freed_with_the_last() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (model, folder) = model_folder(dir.path(), "lenet", 1);
    let exec = executor(dir.path(), |_| {}).await;
    let a = tenant(&exec, "a").await;
    let b = tenant(&exec, "b").await;
    let c = tenant(&exec, "c").await;
    let ha = a
        .load_model(ModelSource::Folder(folder.clone()), LayerRange::all())
        .await
        .expect("a loads");
    let hb = b
        .load_model(ModelSource::Folder(folder.clone()), LayerRange::all())
        .await
        .expect("b loads");
    // The same bytes sent inline are the same model.
    let inline = ModelSource::inline_from_folder(&folder).expect("reads");
    let hc = c
        .load_model(inline, LayerRange::all())
        .await
        .expect("c loads");
    assert!(!ha.shared && hb.shared && hc.shared);
    assert_eq!(ha.model_hash, hc.model_hash);
    let stats = exec.stats().await.expect("stats");
    assert_eq!(
        stats.resident_weight_bytes, ha.weight_bytes,
        "one resident copy"
    );
    for t in &stats.tenants {
        assert_eq!(
            t.memory_used_bytes, ha.weight_bytes,
            "each tenant pays the full size"
        );
    }

    let x = model.example_input(4).expect("input");
    let want = reference(&model, &x);
    for (client, handle) in [(&a, &ha), (&b, &hb), (&c, &hc)] {
        let y = client.forward(handle, &host(&x)).await.expect("forward");
        assert!(rel_err(y.as_f32().expect("f32"), &want) <= 1e-5);
    }

    assert!(
        !a.unload(&ha).await.expect("unload"),
        "b and c still hold it"
    );
    drop(b); // disconnecting releases b's reference
    let stats = until(&exec, "b's session closed", |s| s.tenants.len() == 2).await;
    assert_eq!(stats.resident_weight_bytes, ha.weight_bytes);
    assert!(c.unload(&hc).await.expect("unload"), "c was the last user");
    let stats = exec.stats().await.expect("stats");
    assert_eq!(
        (stats.resident_weight_bytes, stats.device_used_bytes),
        (0, 0)
    );
    assert!(matches!(
        a.forward(&ha, &host(&x)).await,
        Err(GpuError::Remote { .. }) | Err(GpuError::UnknownHandle(_))
    ));
    drop((a, c));
    exec.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_bad_input_fails_that_tenant_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (model, folder) = model_folder(dir.path(), "transformer", 2);
    let exec = executor(dir.path(), |_| {}).await;
    let bad = tenant(&exec, "bad").await;
    let good: Vec<ExecutorClient> =
        vec![tenant(&exec, "good-1").await, tenant(&exec, "good-2").await];
    let hbad = bad
        .load_model(ModelSource::Folder(folder.clone()), LayerRange::all())
        .await
        .expect("loads");
    let x = model.example_input(3).expect("input");
    let want = reference(&model, &x);

    let attacker = tokio::spawn(async move {
        let inputs = [
            HostTensor::u32(vec![2, 3], vec![1, 2, 999, 0, 0, 0]).expect("t"),
            HostTensor::u32(vec![1, 40], vec![0; 40]).expect("t"),
            HostTensor::f32(vec![3, 8], vec![0.5; 24]).expect("t"),
            HostTensor::u32(vec![24], vec![0; 24]).expect("t"),
        ];
        let mut errors = Vec::new();
        for round in 0..10 {
            let err = bad
                .forward(&hbad, &inputs[round % inputs.len()])
                .await
                .expect_err("bad input is refused");
            errors.push(err);
        }
        errors
    });
    let mut workers = Vec::new();
    for client in good {
        let folder = folder.clone();
        let x = host(&x);
        workers.push(tokio::spawn(async move {
            let h = client
                .load_model(ModelSource::Folder(folder), LayerRange::all())
                .await
                .expect("loads");
            let mut outs = Vec::new();
            for _ in 0..15 {
                outs.push(client.forward(&h, &x).await.expect("good work succeeds"));
            }
            (client, outs)
        }));
    }
    for err in attacker.await.expect("attacker task") {
        assert!(
            matches!(err, GpuError::BadInput { ref layer, .. } if layer == "layers.0"),
            "{err}"
        );
    }
    let mut clients = Vec::new();
    for w in workers {
        let (client, outs) = w.await.expect("worker task");
        for y in outs {
            assert!(rel_err(y.as_f32().expect("f32"), &want) <= 1e-5);
        }
        clients.push(client);
    }
    let stats = exec.stats().await.expect("stats");
    for t in stats.tenants.iter().filter(|t| t.name.starts_with("good")) {
        assert_eq!((t.completed, t.failed), (15, 0), "{t:?}");
    }
    drop(clients);
    exec.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_past_the_limit_and_only_for_that_tenant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (model, folder) = model_folder(dir.path(), "mlp", 3);
    let exec = executor(dir.path(), |_| {}).await;
    let rich = tenant(&exec, "rich").await;
    let h = rich
        .load_model(ModelSource::Folder(folder.clone()), LayerRange::all())
        .await
        .expect("loads");

    let tiny = tenant_with(
        &exec,
        TenantOptions {
            memory_quota_bytes: h.weight_bytes / 2,
            ..TenantOptions::named("tiny")
        },
    )
    .await;
    let err = tiny
        .load_model(ModelSource::Folder(folder.clone()), LayerRange::all())
        .await
        .expect_err("weights alone exceed the quota");
    assert!(err.to_string().contains("quota"), "{err}");

    // Room for the weights and a small batch's activations, not a large batch's.
    let snug = tenant_with(
        &exec,
        TenantOptions {
            memory_quota_bytes: h.weight_bytes + (64 << 10),
            ..TenantOptions::named("snug")
        },
    )
    .await;
    let hs = snug
        .load_model(ModelSource::Folder(folder), LayerRange::all())
        .await
        .expect("fits");
    let small = model.example_input(4).expect("input");
    snug.forward(&hs, &host(&small))
        .await
        .expect("a small batch fits");
    let large = model.example_input(2048).expect("input");
    let err = snug
        .forward(&hs, &host(&large))
        .await
        .expect_err("a large batch does not");
    assert!(err.to_string().contains("quota"), "{err}");
    // The others are unaffected.
    let y = rich
        .forward(&h, &host(&large))
        .await
        .expect("rich tenant runs");
    assert_eq!(y.shape(), &[2048, 5]);
    let stats = exec.stats().await.expect("stats");
    let snug_stats = stats
        .tenants
        .iter()
        .find(|t| t.name == "snug")
        .expect("snug");
    assert_eq!(
        snug_stats.memory_used_bytes, h.weight_bytes,
        "activations were released"
    );
    drop((rich, tiny, snug));
    exec.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_bounded_and_a_full_one_answers_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (model, folder) = model_folder(dir.path(), "mlp", 4);
    let exec = executor(dir.path(), |c| c.max_queue_per_tenant = 3).await;
    let client = tenant(&exec, "flood").await;
    let h = client
        .load_model(ModelSource::Folder(folder), LayerRange::all())
        .await
        .expect("loads");
    exec.set_paused(true).expect("pause");
    let x = host(&model.example_input(2).expect("input"));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, h, x) = (client.clone(), h.clone(), x.clone());
        tasks.push(tokio::spawn(async move { c.forward(&h, &x).await }));
    }
    until(&exec, "three queued", |s| s.tenants[0].queued == 3).await;
    exec.set_paused(false).expect("resume");
    let mut ok = 0;
    let mut full = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(
                    e.is_retryable() && e.to_string().contains("queue is full"),
                    "{e}"
                );
                full += 1;
            }
        }
    }
    assert_eq!((ok, full), (3, 5));
    drop(client);
    exec.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlogged_tenants_are_served_by_their_weights_and_priority() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (model, folder) = model_folder(dir.path(), "mlp", 5);
    // One item on the device at a time: the device is the contended resource the weights divide.
    let exec = executor(dir.path(), |c| c.max_in_flight_total = 1).await;
    let light = tenant_with(
        &exec,
        TenantOptions {
            weight: 1,
            ..TenantOptions::named("light")
        },
    )
    .await;
    let heavy = tenant_with(
        &exec,
        TenantOptions {
            weight: 3,
            ..TenantOptions::named("heavy")
        },
    )
    .await;
    let urgent = tenant_with(
        &exec,
        TenantOptions {
            priority: Priority::LatencyCritical,
            ..TenantOptions::named("urgent")
        },
    )
    .await;
    let x = host(&model.example_input(2).expect("input"));
    let mut handles = Vec::new();
    for c in [&light, &heavy, &urgent] {
        handles.push(
            c.load_model(ModelSource::Folder(folder.clone()), LayerRange::all())
                .await
                .expect("loads"),
        );
    }
    // Some history first, so that the scheduler's clock has moved.
    for _ in 0..3 {
        light.forward(&handles[0], &x).await.expect("warm-up");
    }
    exec.set_paused(true).expect("pause");
    let mut tasks = Vec::new();
    for (i, c) in [&light, &heavy].into_iter().enumerate() {
        for _ in 0..24 {
            let (c, h, x) = (c.clone(), handles[i].clone(), x.clone());
            tasks.push((
                i,
                tokio::spawn(async move { c.forward_timed(&h, &x).await }),
            ));
        }
    }
    until(&exec, "48 queued", |s| {
        s.tenants.iter().map(|t| t.queued).sum::<u32>() == 48
    })
    .await;
    let (c, h, xx) = (urgent.clone(), handles[2].clone(), x.clone());
    let urgent_task = tokio::spawn(async move { c.forward_timed(&h, &xx).await });
    until(&exec, "49 queued", |s| {
        s.tenants.iter().map(|t| t.queued).sum::<u32>() == 49
    })
    .await;
    exec.set_paused(false).expect("resume");

    let mut seqs: Vec<(u64, usize)> = Vec::new();
    for (i, t) in tasks {
        seqs.push((t.await.expect("task").expect("forward").dispatch_seq, i));
    }
    let urgent_seq = urgent_task
        .await
        .expect("task")
        .expect("forward")
        .dispatch_seq;
    let first = seqs
        .iter()
        .map(|s| s.0)
        .min()
        .expect("some")
        .min(urgent_seq);
    assert_eq!(
        urgent_seq, first,
        "the latency-critical tenant back from idle goes first"
    );
    seqs.sort();
    let heavy_first_24 = seqs.iter().take(24).filter(|s| s.1 == 1).count();
    println!("weights 1:3, first 24 dispatches: {heavy_first_24} heavy");
    assert!(
        (17..=20).contains(&heavy_first_24),
        "{heavy_first_24} of 24"
    );
    drop((light, heavy, urgent));
    exec.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_session_leaves_nothing_queued_and_tcp_loopback_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (model, folder) = model_folder(dir.path(), "pmf", 8);
    let exec = executor(dir.path(), |c| {
        c.listen = Listen::Tcp("127.0.0.1:0".parse().expect("addr"))
    })
    .await;
    assert!(matches!(exec.listen, Listen::Tcp(a) if a.port() != 0));
    let leaver = tenant(&exec, "leaver").await;
    let stayer = tenant(&exec, "stayer").await;
    let h = leaver
        .load_model(ModelSource::Folder(folder.clone()), LayerRange::all())
        .await
        .expect("loads");
    let hs = stayer
        .load_model(ModelSource::Folder(folder), LayerRange::all())
        .await
        .expect("loads");
    exec.set_paused(true).expect("pause");
    let x = host(&model.example_input(3).expect("input"));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (c, h, x) = (leaver.clone(), h.clone(), x.clone());
        tasks.push(tokio::spawn(async move { c.forward(&h, &x).await }));
    }
    until(&exec, "three queued", |s| {
        s.tenants.iter().any(|t| t.queued == 3)
    })
    .await;
    for t in &tasks {
        t.abort();
    }
    drop(leaver);
    let stats = until(&exec, "the leaver's session closed", |s| {
        s.tenants.len() == 1
    })
    .await;
    assert_eq!(stats.tenants[0].queued, 0);
    exec.set_paused(false).expect("resume");
    let y = stayer
        .forward(&hs, &x)
        .await
        .expect("the other tenant still runs");
    assert!(
        rel_err(
            y.as_f32().expect("f32"),
            &reference(&model, &model.example_input(3).expect("input"))
        ) <= 1e-5
    );
    let err = stayer
        .forward(&hs, &HostTensor::f32(vec![3, 2], vec![0.0; 6]).expect("t"))
        .await
        .expect_err("ids");
    assert!(err.to_string().contains("UINT32"), "{err}");
    drop(stayer);
    exec.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sessions_handles_and_settings_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exec = executor(dir.path(), |c| c.max_tenants = 2).await;
    let a = tenant(&exec, "a").await;
    let too_heavy = ExecutorClient::connect(
        &exec.listen,
        TenantOptions {
            weight: 5000,
            ..TenantOptions::named("x")
        },
    )
    .await
    .expect_err("weight out of range");
    assert!(too_heavy.to_string().contains("weight"), "{too_heavy}");
    let _b = tenant(&exec, "b").await;
    let full = ExecutorClient::connect(&exec.listen, TenantOptions::named("c"))
        .await
        .expect_err("table full");
    assert!(full.is_retryable(), "{full}");
    let missing = a
        .load_model(
            ModelSource::Folder(dir.path().join("nope")),
            LayerRange::all(),
        )
        .await
        .expect_err("no such folder");
    assert!(missing.to_string().contains("nope"), "{missing}");
    let bogus = cumulus_gpu::ModelHandle {
        id: 99,
        model_hash: String::new(),
        arch: String::new(),
        shared: false,
        weight_bytes: 0,
        first_layer: 0,
        last_layer: 0,
        layers: Vec::new(),
    };
    let err = a
        .forward(&bogus, &HostTensor::f32(vec![1], vec![0.0]).expect("t"))
        .await
        .expect_err("handle");
    assert!(err.to_string().contains("99"), "{err}");
    // A second executor may not take over a socket in use.
    let clash = cumulus_gpu::run(ExecutorConfig {
        backend: BackendChoice::Cpu,
        ..ExecutorConfig::new(exec.listen.clone())
    })
    .await
    .expect_err("socket in use");
    assert!(clash.to_string().contains("in use"), "{clash}");
    drop(a);
    exec.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_device_auto_runs_on_the_cpu_and_cuda_refuses_to_start() {
    let report = cumulus_gpu::probe();
    if report.usable() {
        println!("a CUDA device is present: the fallback is not exercised here");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let auto = executor(dir.path(), |c| c.backend = BackendChoice::Auto).await;
    assert_eq!(auto.backend.as_str(), "cpu");
    auto.stop().await.expect("stops");
    let err = cumulus_gpu::run(ExecutorConfig {
        backend: BackendChoice::Cuda,
        ..ExecutorConfig::new(Listen::Unix(dir.path().join("cuda.sock")))
    })
    .await
    .expect_err("no device");
    assert!(matches!(err, GpuError::NoDevice(_)), "{err}");
    assert!(
        err.to_string()
            .contains(report.problem.as_deref().unwrap_or("")),
        "{err}"
    );
}
