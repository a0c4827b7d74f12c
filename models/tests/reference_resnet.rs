//! Forward and backward of ResNet-18 (inference mode) and BatchNorm's training step against
//! PyTorch; the method and `ref.py` are in `common/reference.rs`.

mod common;

use candle_core::{DType, Device, Tensor};
use common::reference::{check, close, formula, projection};
use cumulus_models::ModelConfig;
use cumulus_models::blocks::BatchNorm2d;
use cumulus_models::layer::ParamBuilder;

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
