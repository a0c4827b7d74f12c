//! Training workers on the executor: a train step over the socket equals candle's autograd, a
//! worker's parameters are its own (copy-on-write of the shared weights), and models the
//! executor cannot train are refused at load, naming the layer and its kind.

use candle_core::Tensor;
use cumulus_gpu::{GpuError, HostTensor, LayerRange, Loss, ModelSource};

use crate::common::{
    executor, host, model_folder, perturbed_model, reference, rel_err, save, small_config, tenant,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_runs_over_the_socket_and_private_params_do_not_leak() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = small_config("mlp");
    let model = perturbed_model(&cfg, 6);
    let folder = save(&model, dir.path(), "mlp");
    let exec = executor(dir.path(), |_| {}).await;
    let worker = tenant(&exec, "worker").await;
    let server = tenant(&exec, "server").await;
    let hw = worker
        .load_for_training(ModelSource::Folder(folder.clone()))
        .await
        .expect("trainable");
    let hs = server
        .load_model(ModelSource::Folder(folder.clone()), LayerRange::all())
        .await
        .expect("loads");
    assert!(hs.shared);

    let rows = 6;
    let x = model.example_input(rows).expect("input");
    let targets: Vec<f32> = (0..rows).map(|r| (r % 5) as f32).collect();
    let y = Tensor::from_slice(&targets, rows, &candle_core::Device::Cpu).expect("targets");
    let l = Loss::CrossEntropy
        .compute(&model.forward_t(&x, true).expect("fwd"), &y)
        .expect("loss");
    let want_loss = l.to_scalar::<f32>().expect("scalar");
    let grads = l.backward().expect("backward");
    let step = worker
        .train_step(
            &hw,
            &host(&x),
            &HostTensor::f32(vec![rows], targets).expect("t"),
            Loss::CrossEntropy,
        )
        .await
        .expect("train step");
    assert!((step.loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0));
    assert_eq!(step.gradients.len(), model.param_infos().len());
    for (name, g) in &step.gradients {
        let want = grads
            .get(model.var(name).expect("param").as_tensor())
            .expect("grad")
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("f32");
        assert!(rel_err(g.as_f32().expect("f32"), &want) <= 1e-5, "{name}");
    }

    // The worker's new weights are its own: the shared copy the server reads is unchanged.
    let zeros = HostTensor::f32(vec![5, 24], vec![0.0; 120]).expect("t");
    let copied = worker
        .set_params(&hw, &[("layers.2.weight".into(), zeros)])
        .await
        .expect("set params");
    assert_eq!(copied, 1);
    let probe = host(&model.example_input(2).expect("input"));
    let theirs = server.forward(&hs, &probe).await.expect("forward");
    let mine = worker.forward(&hw, &probe).await.expect("forward");
    let want = reference(&model, &model.example_input(2).expect("input"));
    assert!(rel_err(theirs.as_f32().expect("f32"), &want) <= 1e-5);
    assert!(
        rel_err(mine.as_f32().expect("f32"), &want) > 1e-3,
        "the worker sees its zeros"
    );
    let bad = worker
        .set_params(
            &hw,
            &[(
                "layers.9.weight".into(),
                HostTensor::f32(vec![1], vec![0.0]).expect("t"),
            )],
        )
        .await
        .expect_err("unknown parameter");
    assert!(bad.to_string().contains("layers.9.weight"), "{bad}");
    // A model the executor cannot train is refused at load, naming the layer and kind.
    let (_, lenet) = model_folder(dir.path(), "lenet", 7);
    let err = worker
        .load_for_training(ModelSource::Folder(lenet))
        .await
        .expect_err("conv");
    assert!(err.is_unsupported(), "{err}");
    assert!(
        matches!(err, GpuError::Unsupported { ref layer, ref kind, .. } if layer == "layers.0" && kind == "conv_pool")
    );
    drop((worker, server));
    exec.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_loads_the_model_it_holds_in_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = perturbed_model(&small_config("mlp"), 9);
    let exec = executor(dir.path(), |_| {}).await;
    let worker = tenant(&exec, "worker").await;
    let h = worker
        .load_for_training(ModelSource::from_model(&model).expect("serializes"))
        .await
        .expect("loads");
    assert_eq!(h.arch, "mlp");
    let x = model.example_input(3).expect("input");
    let y = worker.forward(&h, &host(&x)).await.expect("forward");
    assert!(rel_err(y.as_f32().expect("f32"), &reference(&model, &x)) <= 1e-5);
    drop(worker);
    exec.stop().await.expect("stops");
}
