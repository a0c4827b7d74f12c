//! Every zoo architecture translated into a program and run on the CPU backend: equal to
//! `Model::forward_range` (eval mode) within 1e-5 for single layers, splits and whole models;
//! the same names and parameters as the zoo; train steps equal to candle's autograd; and the
//! typed errors for what is not supported or not valid.

use candle_core::{DType, Device, Tensor};
use cumulus_gpu::executor::weights::{ModelSource, read_model};
use cumulus_gpu::program::Program;
use cumulus_gpu::{GpuError, HostTensor, check_supported};
use cumulus_models::{Loss, Model, ModelConfig, architectures};

use crate::common::{cpu_forward, host, perturbed_model, rel_err, save, small_config, wave};

const TOL: f32 = 1e-5;

#[test]
fn programs_name_every_layer_and_parameter_as_the_zoo_does() {
    for arch in architectures() {
        for cfg in [
            small_config(arch),
            ModelConfig::default_for(arch).expect("default"),
        ] {
            let model = Model::new(&cfg, &Device::Cpu).expect("model");
            let program = Program::new(&cfg, 0, None).expect("program");
            let zoo: Vec<(&str, &str)> = model
                .layers()
                .iter()
                .map(|l| (l.name(), l.kind()))
                .collect();
            let ours: Vec<(&str, &str)> = program
                .layers()
                .iter()
                .map(|l| (l.name.as_str(), l.kind))
                .collect();
            assert_eq!(ours, zoo, "{arch}: layers");
            let zoo_params: Vec<(String, Vec<usize>, bool)> = model
                .param_infos()
                .into_iter()
                .map(|p| (p.name, p.shape, p.trainable))
                .collect();
            let our_params: Vec<(String, Vec<usize>, bool)> = program
                .params()
                .map(|p| (p.name.clone(), p.shape.clone(), p.trainable))
                .collect();
            assert_eq!(our_params, zoo_params, "{arch}: parameters");
        }
    }
}

/// The ranges checked for a model of `n` layers: each layer alone, a split, the whole.
fn ranges(n: usize) -> Vec<(usize, usize)> {
    let mut r: Vec<(usize, usize)> = (0..n).map(|i| (i, i)).collect();
    if n > 2 {
        r.push((0, n / 2));
        r.push((n / 2 + 1, n - 1));
    }
    r.push((0, n - 1));
    r
}

#[test]
fn every_layer_range_of_every_architecture_equals_forward_range() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut worst = Vec::new();
    for (seed, arch) in architectures().iter().enumerate() {
        let cfg = small_config(arch);
        let model = perturbed_model(&cfg, seed as u32 + 1);
        let folder = save(&model, dir.path(), arch);
        let x = model.example_input(3).expect("input");
        let mut arch_worst = 0.0f32;
        for (first, last) in ranges(model.num_layers()) {
            let input = if first == 0 {
                x.clone()
            } else {
                model
                    .forward_range(0, first - 1, &x, false)
                    .expect("prefix")
            };
            let want = model
                .forward_range(first, last, &input, false)
                .expect("reference");
            let loaded = read_model(
                &ModelSource::Folder(folder.clone()),
                first,
                Some(last),
                false,
                &[],
                1 << 30,
            )
            .expect("reads");
            let got = cpu_forward(&loaded.program, &loaded.tensors, &host(&input))
                .unwrap_or_else(|e| panic!("{arch} [{first}, {last}]: {e}"));
            assert_eq!(got.shape(), want.dims(), "{arch} [{first}, {last}]: shape");
            let want_v = want
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("f32");
            let e = rel_err(got.as_f32().expect("f32"), &want_v);
            assert!(e <= TOL, "{arch} [{first}, {last}]: relative error {e}");
            arch_worst = arch_worst.max(e);
        }
        worst.push(format!("{arch} {arch_worst:.1e}"));
    }
    println!(
        "program vs forward_range, worst relative error per architecture: {}",
        worst.join(", ")
    );
}

#[test]
fn default_sized_models_match_too() {
    // The defaults the CLI builds (ResNet-18 on CIFAR-sized images left to the GPU check).
    let dir = tempfile::tempdir().expect("temp dir");
    for arch in ["mlp", "lenet", "transformer", "pmf", "logreg"] {
        let cfg = ModelConfig::default_for(arch).expect("default");
        let model = perturbed_model(&cfg, 77);
        let folder = save(&model, dir.path(), arch);
        let x = model.example_input(2).expect("input");
        let want = model.forward_t(&x, false).expect("reference");
        let loaded = read_model(
            &ModelSource::inline_from_folder(&folder).expect("reads"),
            0,
            None,
            false,
            &[],
            1 << 30,
        )
        .expect("loads");
        let got = cpu_forward(&loaded.program, &loaded.tensors, &host(&x)).expect("runs");
        let want_v = want
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("f32");
        let e = rel_err(got.as_f32().expect("f32"), &want_v);
        assert!(e <= TOL, "{arch}: relative error {e}");
    }
}

fn mlp(act: &str, n_outputs: usize) -> ModelConfig {
    serde_json::from_str(&format!(
        r#"{{"arch":"mlp","input_dim":10,"hidden":[12,8],"n_outputs":{n_outputs},"activation":"{act}"}}"#
    ))
    .expect("valid")
}

#[test]
fn train_steps_equal_candle_autograd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rows = 7;
    let mut cases: Vec<(String, ModelConfig, Loss)> = Vec::new();
    for act in ["relu", "tanh", "gelu", "sigmoid"] {
        cases.push((format!("mlp {act} ce"), mlp(act, 4), Loss::CrossEntropy));
    }
    cases.push(("mlp mse".into(), mlp("tanh", 1), Loss::Mse));
    cases.push(("mlp logistic".into(), mlp("relu", 1), Loss::BinaryLogistic));
    cases.push((
        "logreg ce".into(),
        serde_json::from_str(r#"{"arch":"logreg","n_features":9,"n_outputs":3}"#).expect("valid"),
        Loss::CrossEntropy,
    ));
    let mut worst = 0.0f32;
    for (i, (name, cfg, loss)) in cases.into_iter().enumerate() {
        let model = perturbed_model(&cfg, 40 + i as u32);
        let folder = save(&model, dir.path(), &format!("train{i}"));
        let x = model.example_input(rows).expect("input");
        let outputs = cfg.outputs()[0].shape[1] as usize;
        let targets: Vec<f32> = match loss {
            Loss::CrossEntropy => (0..rows).map(|r| (r % outputs) as f32).collect(),
            Loss::Mse => wave(rows, 9),
            Loss::BinaryLogistic => (0..rows).map(|r| (r % 2) as f32).collect(),
        };
        let y = Tensor::from_slice(&targets, rows, &Device::Cpu).expect("targets");
        let l = loss
            .compute(&model.forward_t(&x, true).expect("forward"), &y)
            .expect("loss");
        let want_loss = l
            .to_dtype(DType::F32)
            .and_then(|v| v.to_scalar::<f32>())
            .expect("scalar");
        let grads = l.backward().expect("backward");

        let loaded =
            read_model(&ModelSource::Folder(folder), 0, None, true, &[], 1 << 30).expect("loads");
        let step = crate::common::cpu_train(
            &loaded,
            &host(&x),
            &HostTensor::f32(vec![rows], targets).expect("t"),
            loss,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let e = rel_err(&[step.0], &[want_loss]);
        assert!(e <= TOL, "{name}: loss {} vs {want_loss}", step.0);
        for (pname, g) in &step.1 {
            let var = model.var(pname).expect("parameter");
            let want = grads
                .get(var.as_tensor())
                .expect("gradient")
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("f32");
            let e = rel_err(g.as_f32().expect("f32"), &want);
            assert!(e <= TOL, "{name}: gradient of {pname}: relative error {e}");
            worst = worst.max(e);
        }
    }
    println!("train step vs candle autograd: worst relative gradient error {worst:.1e}");
}

#[test]
fn what_cannot_run_or_train_says_which_layer_and_kind() {
    let lenet = small_config("lenet");
    match check_supported(&lenet, 0, None, true) {
        Err(GpuError::Unsupported { layer, kind, .. }) => {
            assert_eq!((layer.as_str(), kind.as_str()), ("layers.0", "conv_pool"));
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // The dense tail of LeNet trains.
    check_supported(&lenet, 3, None, true).expect("dense layers train");
    let dropout: ModelConfig = serde_json::from_str(
        r#"{"arch":"mlp","input_dim":4,"hidden":[3],"n_outputs":2,"dropout":0.5}"#,
    )
    .expect("valid");
    let err = check_supported(&dropout, 0, None, true).expect_err("dropout");
    assert!(
        err.is_unsupported() && err.to_string().contains("layers.0"),
        "{err}"
    );
    // Ids past 2^24 (what an f32 gather index holds exactly) are refused before any program is
    // built: the model config's own limit says which field.
    let huge: ModelConfig =
        serde_json::from_str(r#"{"arch":"pmf","n_users":20000000,"n_items":3,"n_factors":1}"#)
            .expect("parses");
    let err = check_supported(&huge, 0, None, false).expect_err("ids past 2^24");
    assert!(err.to_string().contains("n_users"), "{err}");
    for arch in architectures() {
        check_supported(&small_config(arch), 0, None, false).expect("every kind runs");
    }
    assert!(matches!(
        check_supported(&lenet, 3, Some(9), false),
        Err(GpuError::Model(_))
    ));
}

#[test]
fn bad_inputs_are_refused_on_the_host_naming_the_layer() {
    let transformer = Program::new(&small_config("transformer"), 0, None).expect("program");
    let cases: Vec<(HostTensor, &str)> = vec![
        (
            HostTensor::u32(vec![2, 3], vec![1, 2, 50, 0, 0, 0]).expect("t"),
            "token id 50",
        ),
        (
            HostTensor::u32(vec![1, 9], vec![0; 9]).expect("t"),
            "sequence length 9",
        ),
        (
            HostTensor::f32(vec![1, 2], vec![0.0, 1.0]).expect("t"),
            "UINT32",
        ),
        (HostTensor::u32(vec![6], vec![0; 6]).expect("t"), "rank 2"),
        (
            HostTensor::u32(vec![0, 4], vec![]).expect("t"),
            "empty batch",
        ),
    ];
    for (x, needle) in cases {
        let err = transformer.check_input(&x).expect_err(needle);
        assert!(matches!(err, GpuError::BadInput { .. }), "{err}");
        assert!(
            err.to_string().contains(needle) && err.to_string().contains("layers.0"),
            "{err}"
        );
    }
    let pmf = Program::new(&small_config("pmf"), 0, None).expect("program");
    let err = pmf
        .check_input(&HostTensor::u32(vec![1, 2], vec![3, 30]).expect("t"))
        .expect_err("item 30");
    assert!(err.to_string().contains("item id 30"), "{err}");
    let sparse = Program::new(&small_config("sparse_logreg"), 0, None).expect("program");
    let err = sparse
        .check_input(&HostTensor::f32(vec![1, 1, 2], vec![2.5, 1.0]).expect("t"))
        .expect_err("fractional index");
    assert!(err.to_string().contains("feature index 2.5"), "{err}");
    let resnet = Program::new(&small_config("resnet"), 3, Some(5)).expect("program");
    let err = resnet
        .check_input(&HostTensor::f32(vec![1, 3, 8, 8], vec![0.0; 192]).expect("t"))
        .expect_err("channels");
    assert!(
        err.to_string().contains("layers.3") && err.to_string().contains("channels"),
        "{err}"
    );
}

#[test]
fn broken_model_files_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = perturbed_model(&small_config("mlp"), 3);
    let folder = save(&model, dir.path(), "mlp");
    let ModelSource::Inline {
        config_json,
        safetensors,
    } = ModelSource::inline_from_folder(&folder).expect("reads")
    else {
        unreachable!("inline_from_folder returns Inline");
    };
    let truncated = ModelSource::Inline {
        config_json: config_json.clone(),
        safetensors: safetensors[..safetensors.len() / 2].to_vec(),
    };
    assert!(read_model(&truncated, 0, None, false, &[], 1 << 30).is_err());
    let other = perturbed_model(&mlp("relu", 4), 4);
    let other_folder = save(&other, dir.path(), "other");
    let mismatched = ModelSource::Inline {
        config_json,
        safetensors: std::fs::read(other_folder.join("model.safetensors")).expect("reads"),
    };
    let err = read_model(&mismatched, 0, None, false, &[], 1 << 30).expect_err("shapes differ");
    assert!(err.to_string().contains("layers.0.weight"), "{err}");
    let roots = [dir.path().join("elsewhere")];
    std::fs::create_dir_all(&roots[0]).expect("dir");
    let err = read_model(
        &ModelSource::Folder(folder),
        0,
        None,
        false,
        &roots,
        1 << 30,
    )
    .expect_err("outside the roots");
    assert!(err.to_string().contains("model root"), "{err}");
}
