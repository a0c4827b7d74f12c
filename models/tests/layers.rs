//! Layer-range execution and layer metadata, for every architecture.

mod common;

use candle_core::{DType, Device};
use common::{archs, input, max_abs_diff, tiny};
use cumulus_models::{Model, ModelConfig, ModelError};

/// Running `[0, k]` then `[k + 1, last]` equals running the whole model, for every cut `k`.
#[test]
fn every_split_point_matches_the_whole_model() {
    let dev = Device::Cpu;
    for arch in archs() {
        let cfg = tiny(arch);
        let model = Model::with_seed(&cfg, &dev, 3).expect("tiny configs build");
        let xs = input(&cfg, 3, DType::F32, &dev);
        let whole = model.forward_t(&xs, false).expect("whole forward");
        let last = model.num_layers() - 1;
        for k in 0..last {
            let head = model.forward_range(0, k, &xs, false).expect("head range");
            let tail = model
                .forward_range(k + 1, last, &head, false)
                .expect("tail range");
            let diff = max_abs_diff(&whole, &tail);
            assert!(
                diff <= 1e-5,
                "{arch}: split after layer {k} differs by {diff}"
            );
        }
        // Chained single layers, too.
        let mut ys = xs.clone();
        for i in 0..=last {
            ys = model.forward_range(i, i, &ys, false).expect("single layer");
        }
        assert!(
            max_abs_diff(&whole, &ys) <= 1e-5,
            "{arch}: layer-by-layer differs"
        );
    }
}

/// `layer_infos` predicts each layer's real output shape, and names each parameter with its
/// layer's prefix.
#[test]
fn layer_infos_match_real_shapes_and_names() {
    let dev = Device::Cpu;
    for arch in archs() {
        let cfg = tiny(arch);
        let model = Model::new(&cfg, &dev).expect("tiny configs build");
        let xs = input(&cfg, 2, DType::F32, &dev);
        let infos = model.layer_infos(xs.dims()).expect("infos");
        assert_eq!(infos.len(), model.num_layers());
        let mut ys = xs.clone();
        let mut total = 0;
        for (i, info) in infos.iter().enumerate() {
            ys = model
                .forward_range(i, i, &ys, false)
                .expect("layer forward");
            assert_eq!(info.output_shape, ys.dims(), "{arch} layer {i}");
            assert_eq!(info.name, format!("layers.{i}"));
            assert!(info.flops > 0, "{arch} layer {i} has no FLOPs estimate");
            for p in &info.params {
                assert!(p.name.starts_with(&format!("layers.{i}.")), "{}", p.name);
            }
            total += info.param_count;
            assert!(info.param_bytes >= 4 * info.param_count);
        }
        assert_eq!(total, model.total_params(), "{arch}");
    }
}

/// Bad ranges and bad inputs are errors that say what is wrong, never panics.
#[test]
fn bad_ranges_and_inputs_are_refused() {
    let dev = Device::Cpu;
    let cfg = tiny("mlp");
    let model = Model::new(&cfg, &dev).expect("builds");
    let xs = input(&cfg, 2, DType::F32, &dev);
    assert!(matches!(
        model.forward_range(2, 1, &xs, false),
        Err(ModelError::LayerRange { .. })
    ));
    assert!(matches!(
        model.forward_range(0, 9, &xs, false),
        Err(ModelError::LayerRange { .. })
    ));
    let wrong = candle_core::Tensor::zeros((2, 7), DType::F32, &dev).expect("zeros");
    let err = model
        .forward_t(&wrong, false)
        .expect_err("7 features for a 6-input MLP");
    assert!(err.to_string().contains("layers.0"), "{err}");

    let cfg = tiny("transformer");
    let model = Model::new(&cfg, &dev).expect("builds");
    let ids = candle_core::Tensor::new(&[[1u32, 99]], &dev).expect("ids");
    let err = model
        .forward_t(&ids, false)
        .expect_err("token 99 outside vocab 7");
    assert!(err.to_string().contains("token id 99"), "{err}");
    assert!(matches!(err, ModelError::Input { .. }), "{err}");
    let float_ids = candle_core::Tensor::new(&[[1f32, 2.0]], &dev).expect("ids");
    let err = model
        .forward_t(&float_ids, false)
        .expect_err("float token ids");
    assert!(err.to_string().contains("integers"), "{err}");

    let cfg = tiny("pmf");
    let model = Model::new(&cfg, &dev).expect("builds");
    let ids = candle_core::Tensor::new(&[[4u32, 0]], &dev).expect("ids");
    assert!(model.forward_t(&ids, false).is_err(), "user 4 of 4");

    let cfg = tiny("sparse_logreg");
    let model = Model::new(&cfg, &dev).expect("builds");
    let pairs = candle_core::Tensor::new(&[[[11f32, 1.0]]], &dev).expect("pairs");
    let err = model
        .forward_t(&pairs, false)
        .expect_err("feature 11 of 11");
    assert!(matches!(err, ModelError::Input { .. }), "{err}");
    for bad in [-1.0f32, 2.5, f32::NAN] {
        let pairs = candle_core::Tensor::new(&[[[bad, 1.0]]], &dev).expect("pairs");
        assert!(
            model.forward_t(&pairs, false).is_err(),
            "feature index {bad}"
        );
    }
}

/// Same seed, same weights; another seed, other weights.
#[test]
fn initialization_is_seeded() {
    let dev = Device::Cpu;
    let cfg = tiny("lenet");
    let xs = input(&cfg, 2, DType::F32, &dev);
    let a = Model::with_seed(&cfg, &dev, 5)
        .expect("builds")
        .forward_t(&xs, false)
        .expect("fwd");
    let b = Model::with_seed(&cfg, &dev, 5)
        .expect("builds")
        .forward_t(&xs, false)
        .expect("fwd");
    let c = Model::with_seed(&cfg, &dev, 6)
        .expect("builds")
        .forward_t(&xs, false)
        .expect("fwd");
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert!(max_abs_diff(&a, &c) > 0.0);
}

/// ResNet-18 for 10 classes on 32x32x3 has exactly kuangliu/pytorch-cifar's parameter count:
///
/// ```text
/// stem      conv 3*64*9 = 1,728            + bn 2*64 = 128                        =     1,856
/// stage 1   2 blocks x (2 * 64*64*9 + 2 * 2*64)  = 2 x 73,984                     =   147,968
/// stage 2   64*128*9 + 128*128*9 + 2*256 + shortcut 64*128 + 256 = 230,144
///           + 2 * 128*128*9 + 2*256 = 295,424                                    =   525,568
/// stage 3   128*256*9 + 256*256*9 + 2*512 + 128*256 + 512 = 919,040
///           + 2 * 256*256*9 + 2*512 = 1,180,672                                  = 2,099,712
/// stage 4   256*512*9 + 512*512*9 + 2*1024 + 256*512 + 1024 = 3,673,088
///           + 2 * 512*512*9 + 2*1024 = 4,720,640                                 = 8,393,728
/// head      512*10 + 10                                                          =     5,130
/// total                                                                          = 11,173,962
/// ```
/// (BatchNorm running statistics are buffers, not parameters, as in PyTorch.)
#[test]
fn resnet18_has_the_reference_parameter_count() {
    let dev = Device::Cpu;
    let cfg = ModelConfig::default_for("resnet").expect("default resnet");
    let model = Model::new(&cfg, &dev).expect("resnet-18 builds");
    assert_eq!(model.total_params(), 11_173_962);
    assert_eq!(model.num_layers(), 10, "stem, 8 BasicBlocks, head");
    let infos = model.layer_infos(&[1, 3, 32, 32]).expect("infos");
    assert_eq!(
        infos.last().map(|i| i.output_shape.clone()),
        Some(vec![1, 10])
    );
    assert_eq!(infos[8].output_shape, vec![1, 512, 4, 4]);
    let xs = input(&cfg, 1, DType::F32, &dev);
    let ys = model.forward_t(&xs, false).expect("one tiny forward");
    assert_eq!(ys.dims(), &[1, 10]);

    // ResNet-34: kuangliu's count, 21,282,122 (blocks 3, 4, 6, 3).
    let mut cfg34 = cfg.clone();
    if let ModelConfig::Resnet(c) = &mut cfg34 {
        c.depth = 34;
    }
    let model = Model::new(&cfg34, &dev).expect("resnet-34 builds");
    assert_eq!(model.total_params(), 21_282_122);
    assert_eq!(model.num_layers(), 18);
}

/// Default configs build and describe themselves (what `cumulus models inspect` prints).
#[test]
fn default_configs_build() {
    let dev = Device::Cpu;
    for arch in archs().into_iter().filter(|a| *a != "resnet") {
        let cfg = ModelConfig::default_for(arch).expect("defaults exist");
        let model = Model::new(&cfg, &dev).expect("defaults build");
        let infos = model
            .layer_infos(&cfg.input_shape(2))
            .expect("default infos");
        let out = &infos.last().expect("at least one layer").output_shape;
        let spec = &cfg.outputs()[0].shape;
        assert_eq!(out.len(), spec.len(), "{arch}");
        assert_eq!(
            out[1..].iter().map(|&d| d as i64).collect::<Vec<_>>(),
            spec[1..],
            "{arch}"
        );
        // The example input is valid and runs.
        let xs = model.example_input(2).expect("example input");
        let ys = model.forward_t(&xs, false).expect("default forward");
        assert_eq!(ys.dims(), out.as_slice(), "{arch}");
    }
}

/// Models move to and are shared between threads (an inference stage runs one on its own thread).
#[test]
fn models_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
    assert_send_sync::<Box<dyn cumulus_models::Layer>>();
}
