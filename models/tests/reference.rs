//! Forward and backward of every architecture against PyTorch reference values.
//!
//! Each model gets deterministic weights from a formula of the tensor's name (so PyTorch and this
//! crate agree without shipping a checkpoint), runs on a deterministic input of 3 examples, and
//! its output `out` is compared element-wise. Then `L = sum(out * c)` with `c[j] = cos(0.3 j)` is
//! back-propagated and each parameter's gradient `g` is compared through the projection
//! `sum_i g[i] * cos(0.13 i)` (one number per tensor, sensitive to any wrong element). The models
//! run in inference mode; BatchNorm's training mode (batch statistics, running-statistics update)
//! is checked on its own, where it is well conditioned. The Python that produced every number is pasted at the end of this file
//! (`python3 ref.py <arch>`, torch 2.15, CPU).
//!
//! Both sides compute in float64: the deep ResNet with these weights is ill-conditioned enough that
//! PyTorch's own float32 and float64 gradients differ by a few percent, which would hide real bugs.

mod common;

use candle_core::{DType, Device, Tensor};
use cumulus_models::blocks::BatchNorm2d;
use cumulus_models::layer::ParamBuilder;
use cumulus_models::{Model, ModelConfig};

/// The weight formula of `ref.py`: `0.4 sin(0.61 i + 0.37 s)`, `s` the byte sum of the name mod 97
/// (plus 1 for BatchNorm running variances, which must be positive; convolution kernels divided by
/// `sqrt(fan_in)`).
fn formula(name: &str, shape: &[usize], dev: &Device) -> Tensor {
    let s = (name.bytes().map(u64::from).sum::<u64>() % 97) as f64;
    let n: usize = shape.iter().product();
    let shift = if name.ends_with("running_var") {
        1.0
    } else {
        0.0
    };
    // Convolution kernels are scaled by 1/sqrt(fan_in) so eval-mode activations stay O(1).
    let scale = if shape.len() == 4 {
        1.0 / ((n / shape[0]) as f64).sqrt()
    } else {
        1.0
    };
    let v: Vec<f64> = (0..n)
        .map(|i| shift + 0.4 * (0.61 * i as f64 + 0.37 * s).sin() * scale)
        .collect();
    Tensor::from_vec(v, shape, dev).expect("formula shape")
}

/// `sum_i t[i] * cos(0.13 i)` in f64.
fn projection(t: &Tensor) -> f64 {
    let v = t
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("float tensor");
    v.iter()
        .enumerate()
        .map(|(i, x)| x * (0.13 * i as f64).cos())
        .sum()
}

fn close(got: f64, want: f64, scale: f64, what: &str) {
    // 1e-5 relative: candle's erf (inside GELU) is accurate to about 1e-7, not to f64 precision.
    let tol = 1e-10 * scale.max(1.0) + 1e-5 * want.abs();
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, PyTorch {want} (tolerance {tol})"
    );
}

fn check(
    cfg: &ModelConfig,
    train: bool,
    output: &[f64],
    grads: &[(&str, f64)],
    buffers: &[(&str, f64)],
) {
    let dev = Device::Cpu;
    let model = Model::with_options(cfg, &dev, 0, DType::F64).expect("reference configs build");
    for p in model.param_infos() {
        model
            .set_param(&p.name, &formula(&p.name, &p.shape, &dev))
            .expect("formula fits");
    }
    let xs = common::input(cfg, 3, DType::F64, &dev);
    let out = model.forward_t(&xs, train).expect("forward");
    let got: Vec<f64> = out
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("output");
    assert_eq!(got.len(), output.len(), "{} output size", cfg.arch());
    let scale = output.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(output).enumerate() {
        close(*g, *w, scale, &format!("{} output[{i}]", cfg.arch()));
    }

    let n = out.elem_count();
    let c: Vec<f64> = (0..n).map(|j| (0.3 * j as f64).cos()).collect();
    let c = Tensor::from_vec(c, out.shape(), &dev).expect("weights of L");
    let loss = (&out * &c).and_then(|t| t.sum_all()).expect("L");
    let store = loss.backward().expect("backward");
    let trainable = model.named_vars(true);
    assert_eq!(
        trainable.len(),
        grads.len(),
        "{}: one reference per parameter",
        cfg.arch()
    );
    let scale = grads.iter().fold(0.0f64, |m, (_, v)| m.max(v.abs()));
    for ((name, var), (ref_name, want)) in trainable.iter().zip(grads) {
        assert_eq!(name, ref_name, "parameter order");
        let g = store
            .get(var)
            .unwrap_or_else(|| panic!("{name} got no gradient"));
        close(projection(g), *want, scale, &format!("grad of {name}"));
    }
    for (name, want) in buffers {
        let var = model
            .var(name)
            .unwrap_or_else(|| panic!("no buffer {name}"));
        close(
            projection(var.as_tensor()),
            *want,
            1.0,
            &format!("buffer {name}"),
        );
    }
}

#[test]
fn logreg_matches_pytorch() {
    check(
        &common::tiny("logreg"),
        false,
        LOGREG_OUTPUT,
        LOGREG_GRADS,
        &[],
    );
}

#[test]
fn mlp_matches_pytorch() {
    check(&common::tiny("mlp"), false, MLP_OUTPUT, MLP_GRADS, &[]);
}

#[test]
fn sparse_logreg_matches_pytorch() {
    check(
        &common::tiny("sparse_logreg"),
        false,
        SPARSE_LOGREG_OUTPUT,
        SPARSE_LOGREG_GRADS,
        &[],
    );
}

#[test]
fn pmf_matches_pytorch() {
    check(&common::tiny("pmf"), false, PMF_OUTPUT, PMF_GRADS, &[]);
}

#[test]
fn lenet_matches_pytorch() {
    check(
        &common::tiny("lenet"),
        false,
        LENET_OUTPUT,
        LENET_GRADS,
        &[],
    );
}

#[test]
fn transformer_matches_pytorch() {
    check(
        &common::tiny("transformer"),
        false,
        TRANSFORMER_OUTPUT,
        TRANSFORMER_GRADS,
        &[],
    );
}

#[test]
fn resnet_matches_pytorch() {
    let cfg: ModelConfig =
        serde_json::from_str(r#"{"arch":"resnet","depth":18,"n_classes":3,"image_size":16}"#)
            .expect("valid");
    check(&cfg, false, RESNET_OUTPUT, RESNET_GRADS, &[]);
}

/// BatchNorm2d in training mode: output, weight/bias gradients and the running statistics after
/// one step (momentum 0.1, unbiased variance), on a `[3, 4, 2, 3]` input.
#[test]
fn batchnorm_training_step_matches_pytorch() {
    let dev = Device::Cpu;
    let mut pb = ParamBuilder::new(&dev, DType::F64, 0);
    let mut scope = pb.scope("bn");
    let bn = BatchNorm2d::new(&mut scope, "", 4).expect("builds");
    let infos = scope.finish();
    let vars = pb.into_varmap();
    let data = vars.data().lock().expect("not poisoned");
    for p in &infos {
        let value = formula(&p.name, &p.shape, &dev);
        data.get(&p.name)
            .expect("created above")
            .set(&value)
            .expect("same shape");
    }
    let n = 3 * 4 * 2 * 3;
    let x: Vec<f64> = (0..n)
        .map(|i| ((i as f64) * 0.37).sin() as f32 as f64)
        .collect();
    let xs = Tensor::from_vec(x, (3, 4, 2, 3), &dev).expect("input");
    let out = bn.forward_t(&xs, true).expect("forward");
    let got: Vec<f64> = out.flatten_all().and_then(|t| t.to_vec1()).expect("output");
    for (i, (g, w)) in got.iter().zip(BATCHNORM_OUTPUT).enumerate() {
        close(*g, *w, 1.0, &format!("batchnorm output[{i}]"));
    }
    let c: Vec<f64> = (0..n).map(|j| (0.3 * j as f64).cos()).collect();
    let c = Tensor::from_vec(c, out.shape(), &dev).expect("weights of L");
    let store = (&out * &c)
        .and_then(|t| t.sum_all())
        .and_then(|l| l.backward())
        .expect("backward");
    for (name, want) in BATCHNORM_GRADS {
        let var = data.get(*name).expect("trainable");
        close(
            projection(store.get(var).expect("has a gradient")),
            *want,
            1.0,
            name,
        );
    }
    for (name, want) in BATCHNORM_BUFFERS {
        close(
            projection(data.get(*name).expect("buffer").as_tensor()),
            *want,
            1.0,
            name,
        );
    }
}

// Reference values: `python3 ref.py <arch>`, formatted one line per tensor.
const LOGREG_OUTPUT: &[f64] = &[
    0.39370144862903594,
    -1.1376412505371858,
    0.7813361584576471,
    0.2684404830210763,
    -0.9143731417837813,
    0.461932641464139,
    -1.5558254654226984,
    0.875264318714444,
    -1.2780731722342473,
];
const LOGREG_GRADS: &[(&str, f64)] = &[
    ("layers.0.weight", 8.017176817e+00),
    ("layers.0.bias", 2.353743007e+00),
];
const MLP_OUTPUT: &[f64] = &[
    -0.43959719045256607,
    -0.032854656287046306,
    0.351282200189426,
    -0.45511721560832463,
    -0.03127593310437226,
    0.36439051981158643,
    -0.4522116322015619,
    -0.022246467338279653,
    0.34769124996725903,
];
const MLP_GRADS: &[(&str, f64)] = &[
    ("layers.0.weight", 9.032260836e-02),
    ("layers.0.bias", 1.263673723e-01),
    ("layers.1.weight", -8.334654973e-03),
    ("layers.1.bias", 5.913343099e-01),
    ("layers.2.weight", -5.067148816e-01),
    ("layers.2.bias", 2.353743007e+00),
];
const SPARSE_LOGREG_OUTPUT: &[f64] = &[
    -0.40134148414989557,
    -0.14095601371439653,
    -0.5997300576176655,
];
const SPARSE_LOGREG_GRADS: &[(&str, f64)] = &[
    ("layers.0.weight", 3.945463289e+00),
    ("layers.0.bias", 2.780672104e+00),
];
const PMF_OUTPUT: &[f64] = &[0.6933058195033929, 0.3347105246267604, 0.5147409273799518];
const PMF_GRADS: &[(&str, f64)] = &[
    ("layers.0.user_factors", -1.357624468e+00),
    ("layers.0.item_factors", 6.271263647e-01),
    ("layers.0.user_bias", 2.744871325e+00),
    ("layers.0.item_bias", 2.618217289e+00),
    ("layers.0.global_bias", 2.780672104e+00),
];
const LENET_OUTPUT: &[f64] = &[
    0.1179291516388478,
    -2.2410931159538197,
    -2.5132668720483573,
    0.1140557731154385,
    -2.2463710501609455,
    -2.5153213242516888,
    0.11931405989431536,
    -2.257355972994314,
    -2.532917158363884,
];
const LENET_GRADS: &[(&str, f64)] = &[
    ("layers.0.weight", -1.441776594e+00),
    ("layers.0.bias", -1.669240219e-01),
    ("layers.1.weight", -6.417354857e+00),
    ("layers.1.bias", 8.297314751e-01),
    ("layers.2.weight", 2.903502462e+00),
    ("layers.2.bias", 2.754024000e-01),
    ("layers.3.weight", -1.224255610e+00),
    ("layers.3.bias", -6.042020768e-03),
    ("layers.4.weight", -5.845957340e-01),
    ("layers.4.bias", 2.353743007e+00),
];
const TRANSFORMER_OUTPUT: &[f64] = &[
    -0.17632715869745935,
    0.3917025214118241,
    0.46713132285677034,
    -0.1951192101308693,
    0.3935738812250313,
    0.4865477621968622,
    -0.16013224302377288,
    0.3858748979021656,
    0.44899199349072744,
];
const TRANSFORMER_GRADS: &[(&str, f64)] = &[
    ("layers.0.tok_emb.weight", -1.090950131e-02),
    ("layers.0.pos_emb.weight", -2.213902983e-02),
    ("layers.1.ln1.weight", -3.985598891e-02),
    ("layers.1.ln1.bias", 3.173699363e-02),
    ("layers.1.attn.q.weight", -5.646152004e-03),
    ("layers.1.attn.q.bias", 4.233897430e-04),
    ("layers.1.attn.k.weight", -9.518447826e-03),
    ("layers.1.attn.k.bias", -4.280043976e-18),
    ("layers.1.attn.v.weight", 2.051567986e-01),
    ("layers.1.attn.v.bias", -1.738468886e-01),
    ("layers.1.attn.o.weight", 1.134155775e-01),
    ("layers.1.attn.o.bias", -3.274358735e-02),
    ("layers.1.ln2.weight", -6.339557501e-02),
    ("layers.1.ln2.bias", 2.772216666e-02),
    ("layers.1.mlp.fc1.weight", -4.220190589e-02),
    ("layers.1.mlp.fc1.bias", 5.016097059e-03),
    ("layers.1.mlp.fc2.weight", 1.232520449e-01),
    ("layers.1.mlp.fc2.bias", -3.359629705e-02),
    ("layers.2.ln1.weight", -3.410684355e-02),
    ("layers.2.ln1.bias", 3.720260030e-02),
    ("layers.2.attn.q.weight", 6.785632588e-04),
    ("layers.2.attn.q.bias", -2.673223273e-04),
    ("layers.2.attn.k.weight", -1.784809208e-04),
    ("layers.2.attn.k.bias", -1.491693662e-18),
    ("layers.2.attn.v.weight", 1.891413424e-01),
    ("layers.2.attn.v.bias", -1.720332843e-01),
    ("layers.2.attn.o.weight", 1.357048933e-01),
    ("layers.2.attn.o.bias", -3.438910347e-02),
    ("layers.2.ln2.weight", -6.159082951e-02),
    ("layers.2.ln2.bias", -2.016275181e-02),
    ("layers.2.mlp.fc1.weight", -5.057090502e-02),
    ("layers.2.mlp.fc1.bias", -2.394125593e-03),
    ("layers.2.mlp.fc2.weight", 9.300778537e-02),
    ("layers.2.mlp.fc2.bias", -3.357568750e-02),
    ("layers.3.ln.weight", 1.375494858e+00),
    ("layers.3.ln.bias", -1.153987276e+00),
    ("layers.3.fc.weight", 1.085241454e+00),
    ("layers.3.fc.bias", 2.353743007e+00),
];
const RESNET_OUTPUT: &[f64] = &[
    34.92541091445687,
    10.431979966226159,
    -41.278621101440905,
    34.925410871232934,
    10.431979996595876,
    -41.27862107432845,
    34.92541081414921,
    10.431980031823835,
    -41.27862103593355,
];
const RESNET_GRADS: &[(&str, f64)] = &[
    ("layers.0.conv.weight", -1.622194307e-06),
    ("layers.0.bn.weight", -4.368455355e-06),
    ("layers.0.bn.bias", -1.054110237e-05),
    ("layers.1.conv1.weight", 3.092142945e-07),
    ("layers.1.bn1.weight", 7.885249276e-08),
    ("layers.1.bn1.bias", 4.460514695e-07),
    ("layers.1.conv2.weight", 6.075038809e-06),
    ("layers.1.bn2.weight", -4.144876141e-06),
    ("layers.1.bn2.bias", -1.081758212e-05),
    ("layers.2.conv1.weight", 5.470118669e-07),
    ("layers.2.bn1.weight", -1.755678139e-08),
    ("layers.2.bn1.bias", 1.776451930e-07),
    ("layers.2.conv2.weight", 2.499672297e-05),
    ("layers.2.bn2.weight", -4.909124490e-06),
    ("layers.2.bn2.bias", -1.299887221e-05),
    ("layers.3.conv1.weight", -6.196519569e-05),
    ("layers.3.bn1.weight", -3.960155839e-07),
    ("layers.3.bn1.bias", 3.822948764e-07),
    ("layers.3.conv2.weight", -8.747270594e-05),
    ("layers.3.bn2.weight", -1.788818877e-05),
    ("layers.3.bn2.bias", -2.790631887e-04),
    ("layers.3.shortcut.conv.weight", 6.940882302e-05),
    ("layers.3.shortcut.bn.weight", 1.711807496e-04),
    ("layers.3.shortcut.bn.bias", -2.790631887e-04),
    ("layers.4.conv1.weight", -1.182134744e-06),
    ("layers.4.bn1.weight", 1.080478240e-06),
    ("layers.4.bn1.bias", 2.860577879e-06),
    ("layers.4.conv2.weight", -1.167361465e-04),
    ("layers.4.bn2.weight", 1.266704377e-05),
    ("layers.4.bn2.bias", -3.082968351e-04),
    ("layers.5.conv1.weight", 1.643301169e-05),
    ("layers.5.bn1.weight", 1.081861516e-05),
    ("layers.5.bn1.bias", 1.974685217e-04),
    ("layers.5.conv2.weight", 1.098728566e-02),
    ("layers.5.bn2.weight", 1.155529042e-02),
    ("layers.5.bn2.bias", 5.297437148e-02),
    ("layers.5.shortcut.conv.weight", 7.957543386e-03),
    ("layers.5.shortcut.bn.weight", -2.879157963e-03),
    ("layers.5.shortcut.bn.bias", 5.297437148e-02),
    ("layers.6.conv1.weight", 8.250162598e-04),
    ("layers.6.bn1.weight", -6.033575487e-05),
    ("layers.6.bn1.bias", 9.461524944e-05),
    ("layers.6.conv2.weight", 9.509771353e-03),
    ("layers.6.bn2.weight", 6.728624287e-03),
    ("layers.6.bn2.bias", 5.500892744e-02),
    ("layers.7.conv1.weight", 1.417391318e-02),
    ("layers.7.bn1.weight", -1.115227614e-03),
    ("layers.7.bn1.bias", 3.679192774e-03),
    ("layers.7.conv2.weight", 1.470617332e+00),
    ("layers.7.bn2.weight", 1.256412194e-01),
    ("layers.7.bn2.bias", -7.930547301e-02),
    ("layers.7.shortcut.conv.weight", 1.163846711e+00),
    ("layers.7.shortcut.bn.weight", 7.426426024e-02),
    ("layers.7.shortcut.bn.bias", -7.930547301e-02),
    ("layers.8.conv1.weight", -4.869648663e-04),
    ("layers.8.bn1.weight", 1.102803394e-03),
    ("layers.8.bn1.bias", 4.798785189e-03),
    ("layers.8.conv2.weight", 1.770730723e-01),
    ("layers.8.bn2.weight", 7.092989152e-02),
    ("layers.8.bn2.bias", -3.637974163e-01),
    ("layers.9.fc.weight", 7.212882380e-01),
    ("layers.9.fc.bias", 2.353743007e+00),
];
const BATCHNORM_OUTPUT: &[f64] = &[
    0.32264288151389825,
    0.1045426181244436,
    -0.08403881408666143,
    -0.21757776346792995,
    -0.27800040509696633,
    -0.25712879694119817,
    -0.005164893861132774,
    0.15041595532286262,
    0.34648860917845314,
    0.5565155552582903,
    0.7520706266686761,
    0.9066864085814804,
    0.5993920664934079,
    0.6091527768880562,
    0.5779660227158057,
    0.510052805971887,
    0.41460483462495407,
    0.3045405721261459,
    0.20393102937403063,
    0.20278097523839286,
    0.20197053494980682,
    0.2016093977466774,
    0.20174644197777727,
    0.20236311922091982,
    0.010085097683542377,
    0.2177653207237876,
    0.4396402152355006,
    0.6456800758141162,
    0.8079983451706184,
    0.9046260475331426,
    1.0173747687957098,
    0.9574323209797486,
    0.8287558227790164,
    0.6487610106743447,
    0.4418093403011889,
    0.23591075479840426,
    0.0985964587621953,
    0.032513830459075924,
    0.0035291058005268673,
    0.015565264207774333,
    0.066993237611376,
    0.15085251021037152,
    0.2046726994707818,
    0.20603143882294558,
    0.20728985699516095,
    0.20827763302253866,
    0.20886107607969928,
    0.20896121985785795,
    0.8572681757242426,
    0.7201346288654197,
    0.5292024238752295,
    0.3103133516813404,
    0.09309302834418856,
    -0.09305879446985296,
    -0.06684212164086792,
    -0.11989234014507451,
    -0.09586580268246202,
    0.0019856417746446577,
    0.16041820502592152,
    0.3579888552126009,
    0.36963985435400615,
    0.47291248556869886,
    0.5536771648153471,
    0.6010027255808957,
    0.6084839292897581,
    0.5751081732199725,
    0.2077056517832758,
    0.20653160299601117,
    0.20518953811170357,
    0.2038610993829059,
    0.202726084713794,
    0.20193811319026497,
];
const BATCHNORM_GRADS: &[(&str, f64)] =
    &[("bn.weight", 1.124719518e+01), ("bn.bias", 1.492777591e+00)];
const BATCHNORM_BUFFERS: &[(&str, f64)] = &[
    ("bn.running_mean", -8.625876730e-01),
    ("bn.running_var", 4.423461724e+00),
];

// ref.py, verbatim:
// import math, numpy as np, torch, torch.nn.functional as F
// torch.set_default_dtype(torch.float64)
//
// def formula(name, shape):
//     s = sum(name.encode()) % 97
//     n = int(np.prod(shape)) if len(shape) else 1
//     i = np.arange(n, dtype=np.float64)
//     v = 0.4 * np.sin(0.61 * i + 0.37 * s)
//     if name.endswith("running_var"):
//         v = 1.0 + v
//     if len(shape) == 4:  # conv kernels: scaled by 1/sqrt(fan_in) so eval-mode activations stay O(1)
//         v = v / math.sqrt(n / shape[0])
//     return torch.tensor(v.astype(np.float64).reshape(shape), requires_grad=not name.split(".")[-1].startswith("running"))
//
// def dense_input(shape):
//     n = int(np.prod(shape))
//     return torch.tensor(np.sin(np.arange(n) * 0.37).astype(np.float32).astype(np.float64).reshape(shape))
//
// def report(P, out, buffers=()):
//     c = torch.tensor(np.cos(0.3 * np.arange(out.numel())).astype(np.float64)).reshape(out.shape)
//     (out * c).sum().backward()
//     print("output:", [float(x) for x in out.detach().flatten()])
//     for name, t in P.items():
//         if t.requires_grad:
//             g = t.grad.detach().double().flatten()
//             r = torch.tensor(np.cos(0.13 * np.arange(g.numel())))
//             print(f'("{name}", {float((g * r).sum()):.9e}),')
//     for name in buffers:
//         t = P[name].detach().double().flatten()
//         r = torch.tensor(np.cos(0.13 * np.arange(t.numel())))
//         print(f'buffer ("{name}", {float((t * r).sum()):.9e}),')
//
// def params(spec):
//     return {n: formula(n, s) for n, s in spec}
//
// def lin(P, p, x):
//     return x @ P[p + "weight"].T + P[p + "bias"]
//
// import sys  # usage: python3 ref.py <arch>  (float64 throughout)
// arch = sys.argv[1]
// B = 3
// if arch == "logreg":
//     P = params([("layers.0.weight", (3, 5)), ("layers.0.bias", (3,))])
//     report(P, lin(P, "layers.0.", dense_input((B, 5))))
// elif arch == "mlp":
//     P = params([("layers.0.weight", (5, 6)), ("layers.0.bias", (5,)), ("layers.1.weight", (4, 5)), ("layers.1.bias", (4,)), ("layers.2.weight", (3, 4)), ("layers.2.bias", (3,))])
//     h = torch.tanh(lin(P, "layers.0.", dense_input((B, 6))))
//     h = torch.tanh(lin(P, "layers.1.", h))
//     report(P, lin(P, "layers.2.", h))
// elif arch == "sparse_logreg":
//     k, nf = 4, 11
//     x = []
//     for b in range(B):
//         for j in range(k):
//             x += [0.0, 0.0] if j == k - 1 else [float((b * 7 + j * 3) % nf), 0.5 + 0.25 * j - 0.1 * b]
//     x = torch.tensor(np.array(x, dtype=np.float32).reshape(B, k, 2))
//     P = params([("layers.0.weight", (nf, 1)), ("layers.0.bias", (1,))])
//     idx, val = x[..., 0].long(), x[..., 1:]
//     report(P, (P["layers.0.weight"][idx] * val).sum(1) + P["layers.0.bias"])
// elif arch == "pmf":
//     nu, ni, k = 4, 5, 3
//     ids = torch.tensor([[b % nu, (b * 3 + 1) % ni] for b in range(B)])
//     P = params([("layers.0.user_factors", (nu, k)), ("layers.0.item_factors", (ni, k)), ("layers.0.user_bias", (nu,)), ("layers.0.item_bias", (ni,)), ("layers.0.global_bias", (1,))])
//     u, i = ids[:, 0], ids[:, 1]
//     out = (P["layers.0.user_factors"][u] * P["layers.0.item_factors"][i]).sum(1) + P["layers.0.user_bias"][u] + P["layers.0.item_bias"][i] + P["layers.0.global_bias"]
//     report(P, out)
// elif arch == "lenet":
//     P = params([("layers.0.weight", (6, 1, 5, 5)), ("layers.0.bias", (6,)), ("layers.1.weight", (16, 6, 5, 5)), ("layers.1.bias", (16,)), ("layers.2.weight", (120, 16)), ("layers.2.bias", (120,)), ("layers.3.weight", (84, 120)), ("layers.3.bias", (84,)), ("layers.4.weight", (3, 84)), ("layers.4.bias", (3,))])
//     x = dense_input((B, 1, 12, 12))
//     h = F.max_pool2d(F.relu(F.conv2d(x, P["layers.0.weight"], P["layers.0.bias"], padding=2)), 2)
//     h = F.max_pool2d(F.relu(F.conv2d(h, P["layers.1.weight"], P["layers.1.bias"])), 2)
//     h = F.relu(lin(P, "layers.2.", h.flatten(1)))
//     h = F.relu(lin(P, "layers.3.", h))
//     report(P, lin(P, "layers.4.", h))
// elif arch == "resnet":
//     spec, buffers = [], []
//     def bn(p, c):
//         spec.extend([(p + "weight", (c,)), (p + "bias", (c,)), (p + "running_mean", (c,)), (p + "running_var", (c,))])
//         buffers.extend([p + "running_mean", p + "running_var"])
//     spec.append(("layers.0.conv.weight", (64, 3, 3, 3))); bn("layers.0.bn.", 64)
//     blocks, cin, li = [], 64, 1
//     for stage in range(4):
//         cout = 64 << stage
//         for b in range(2):
//             stride = 2 if stage > 0 and b == 0 else 1
//             p = f"layers.{li}."
//             spec.append((p + "conv1.weight", (cout, cin, 3, 3))); bn(p + "bn1.", cout)
//             spec.append((p + "conv2.weight", (cout, cout, 3, 3))); bn(p + "bn2.", cout)
//             short = stride != 1 or cin != cout
//             if short:
//                 spec.append((p + "shortcut.conv.weight", (cout, cin, 1, 1))); bn(p + "shortcut.bn.", cout)
//             blocks.append((p, stride, short)); cin = cout; li += 1
//     spec += [(f"layers.{li}.fc.weight", (3, 512)), (f"layers.{li}.fc.bias", (3,))]
//     P = params(spec)
//     def BN(p, x):
//         return F.batch_norm(x, P[p + "running_mean"], P[p + "running_var"], P[p + "weight"], P[p + "bias"], training=False, momentum=0.1, eps=1e-5)
//     x = dense_input((B, 3, 16, 16))
//     h = F.relu(BN("layers.0.bn.", F.conv2d(x, P["layers.0.conv.weight"], padding=1)))
//     for p, stride, short in blocks:
//         o = F.relu(BN(p + "bn1.", F.conv2d(h, P[p + "conv1.weight"], stride=stride, padding=1)))
//         o = BN(p + "bn2.", F.conv2d(o, P[p + "conv2.weight"], padding=1))
//         s = BN(p + "shortcut.bn.", F.conv2d(h, P[p + "shortcut.conv.weight"], stride=stride)) if short else h
//         h = F.relu(o + s)
//     report(P, lin(P, f"layers.{li}.fc.", h.mean((2, 3))))
// elif arch == "batchnorm":
//     P = params([("bn.weight", (4,)), ("bn.bias", (4,)), ("bn.running_mean", (4,)), ("bn.running_var", (4,))])
//     x = dense_input((3, 4, 2, 3))
//     out = F.batch_norm(x, P["bn.running_mean"], P["bn.running_var"], P["bn.weight"], P["bn.bias"], training=True, momentum=0.1, eps=1e-5)
//     report(P, out, ["bn.running_mean", "bn.running_var"])
// elif arch == "transformer":
//     V, S, D, H, L, FF, C = 7, 5, 8, 2, 2, 12, 3
//     spec = [("layers.0.tok_emb.weight", (V, D)), ("layers.0.pos_emb.weight", (S, D))]
//     for l in range(1, L + 1):
//         p = f"layers.{l}."
//         spec += [(p + "ln1.weight", (D,)), (p + "ln1.bias", (D,))]
//         for m in "qkvo":
//             spec += [(p + f"attn.{m}.weight", (D, D)), (p + f"attn.{m}.bias", (D,))]
//         spec += [(p + "ln2.weight", (D,)), (p + "ln2.bias", (D,)), (p + "mlp.fc1.weight", (FF, D)), (p + "mlp.fc1.bias", (FF,)), (p + "mlp.fc2.weight", (D, FF)), (p + "mlp.fc2.bias", (D,))]
//     p = f"layers.{L + 1}."
//     spec += [(p + "ln.weight", (D,)), (p + "ln.bias", (D,)), (p + "fc.weight", (C, D)), (p + "fc.bias", (C,))]
//     P = params(spec)
//     seq = S - 1
//     ids = torch.tensor([(i * 5 + 2) % V for i in range(B * seq)]).reshape(B, seq)
//     def LN(p, x):
//         return F.layer_norm(x, (D,), P[p + "weight"], P[p + "bias"], eps=1e-5)
//     h = P["layers.0.tok_emb.weight"][ids] + P["layers.0.pos_emb.weight"][:seq]
//     for l in range(1, L + 1):
//         p = f"layers.{l}."
//         a = LN(p + "ln1.", h)
//         q, k, v = [lin(P, p + f"attn.{m}.", a).reshape(B, seq, H, D // H).transpose(1, 2) for m in "qkv"]
//         att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H), -1) @ v
//         h = h + lin(P, p + "attn.o.", att.transpose(1, 2).reshape(B, seq, D))
//         h = h + lin(P, p + "mlp.fc2.", F.gelu(lin(P, p + "mlp.fc1.", LN(p + "ln2.", h))))
//     p = f"layers.{L + 1}."
//     report(P, lin(P, p + "fc.", LN(p + "ln.", h).mean(1)))
