//! Losses and optimizer update steps against PyTorch (candle-nn `tests/optim.rs` style), plus the
//! sparse-gradient property of the embedding-style models. Reference numbers come from the Python
//! at the end of this file (torch 2.15, float64); the tests run in F64 too.

use candle_core::{DType, Device, Tensor, Var};
use cumulus_models::loss::Loss;
use cumulus_models::optim::OptimizerConfig;
use cumulus_models::{Model, ModelConfig};

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, PyTorch {w}");
    }
}

fn loss_and_grad(loss: Loss, z: &[f64], shape: &[usize], y: &[f64]) -> (f64, Vec<f64>) {
    let dev = Device::Cpu;
    let z = Var::from_tensor(&Tensor::from_slice(z, shape, &dev).expect("logits")).expect("var");
    let y = Tensor::from_slice(y, y.len(), &dev).expect("targets");
    let l = loss.compute(z.as_tensor(), &y).expect("loss");
    let g = l.backward().expect("backward");
    let grad = g
        .get(&z)
        .expect("gradient")
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .expect("vec");
    (l.to_scalar::<f64>().expect("scalar"), grad)
}

#[test]
fn cross_entropy_matches_pytorch() {
    let (l, g) = loss_and_grad(
        Loss::CrossEntropy,
        &[0.5, -1.2, 2.0, 1.5, 0.3, -0.7],
        &[2, 3],
        &[2.0, 0.0],
    );
    assert_close(&[l], &[0.2896007068966563], 1e-12, "loss");
    let want = [
        0.08827102943318557,
        0.016125662728617002,
        -0.10439669216180258,
        -0.14589169177929523,
        0.10665537282609833,
        0.03923631895319688,
    ];
    assert_close(&g, &want, 1e-12, "grad");
}

#[test]
fn binary_logistic_matches_pytorch_and_is_stable() {
    // The logit 30 with target 0 overflows a naive log(sigmoid) formulation.
    let (l, g) = loss_and_grad(
        Loss::BinaryLogistic,
        &[0.8, -2.5, 30.0],
        &[3, 1],
        &[1.0, 0.0, 0.0],
    );
    assert_close(&[l], &[10.14999680008014], 1e-12, "loss");
    let want = [
        -0.10334183962412917,
        0.025286060007081182,
        0.3333333333333022,
    ];
    assert_close(&g, &want, 1e-12, "grad");
}

#[test]
fn mse_matches_pytorch() {
    let (l, g) = loss_and_grad(Loss::Mse, &[1.0, 2.5, -0.5], &[3], &[0.5, 2.0, 1.0]);
    assert_close(&[l], &[0.9166666666666666], 1e-12, "loss");
    assert_close(&g, &[1.0 / 3.0, 1.0 / 3.0, -1.0], 1e-12, "grad");
}

#[test]
fn losses_refuse_mismatched_targets() {
    let dev = Device::Cpu;
    let z = Tensor::zeros((2, 3), DType::F64, &dev).expect("zeros");
    let three = Tensor::zeros(3, DType::F64, &dev).expect("zeros");
    assert!(
        Loss::CrossEntropy.compute(&z, &three).is_err(),
        "3 targets for 2 rows"
    );
    let bad_label = Tensor::new(&[0.0f64, 3.0], &dev).expect("labels");
    assert!(
        Loss::CrossEntropy.compute(&z, &bad_label).is_err(),
        "class 3 of 3"
    );
    let two = Tensor::zeros(2, DType::F64, &dev).expect("zeros");
    assert!(
        Loss::Mse.compute(&z, &two).is_err(),
        "3 outputs per row for MSE"
    );
}

/// Three steps on `L(w) = sum(c * w^2 + w)`, `c = [1, 2, 0.5]`, from `w = [0.5, -1, 2]`.
fn three_steps(json: &str) -> Vec<f64> {
    let dev = Device::Cpu;
    let cfg: OptimizerConfig = serde_json::from_str(json).expect("valid optimizer JSON");
    let w = Var::new(&[0.5f64, -1.0, 2.0], &dev).expect("var");
    let c = Tensor::new(&[1.0f64, 2.0, 0.5], &dev).expect("c");
    let mut opt = cfg.build(vec![w.clone()]).expect("builds");
    for _ in 0..3 {
        let l = ((w.as_tensor().sqr().and_then(|s| s * &c)).and_then(|s| s + w.as_tensor()))
            .and_then(|s| s.sum_all())
            .expect("loss");
        opt.step(&l.backward().expect("backward")).expect("step");
    }
    w.as_tensor().to_vec1().expect("vec")
}

#[test]
fn optimizers_match_pytorch_after_three_steps() {
    let cases: [(&str, [f64; 3]); 6] = [
        (
            r#"{"kind":"sgd","lr":0.1}"#,
            [0.01199999999999997, -0.412, 1.187],
        ),
        (
            r#"{"kind":"sgd","lr":0.1,"momentum":0.9}"#,
            [
                -0.4380000000000001,
                0.15500000000000005,
                0.45799999999999985,
            ],
        ),
        (
            r#"{"kind":"sgd","lr":0.1,"momentum":0.9,"nesterov":true,"weight_decay":0.01}"#,
            [
                -0.6088857930295001,
                0.07602264375900002,
                -0.02770671901800028,
            ],
        ),
        (
            r#"{"kind":"adagrad","lr":0.5}"#,
            [-0.3436012639540523, -0.2841608284128599, 0.9361988719643912],
        ),
        (
            r#"{"kind":"adam","lr":0.1,"weight_decay":0.05}"#,
            [0.20161501282575398, -0.7024407376750249, 1.7003887671107032],
        ),
        (
            r#"{"kind":"adamw","lr":0.1,"weight_decay":0.1}"#,
            [0.18983029448835673, -0.6761290333097579, 1.6440586057000908],
        ),
    ];
    for (json, want) in cases {
        assert_close(&three_steps(json), &want, 1e-9, json);
    }
}

#[test]
fn optimizer_configs_are_validated() {
    let bad = [
        (r#"{"kind":"sgd","lr":-1}"#, "lr"),
        (r#"{"kind":"sgd","lr":0.1,"nesterov":true}"#, "nesterov"),
        (r#"{"kind":"sgd","lr":0.1,"momentum":1.5}"#, "momentum"),
        (r#"{"kind":"adam","lr":0.1,"beta2":1.0}"#, "beta2"),
        (r#"{"kind":"adagrad","lr":0.1,"eps":0}"#, "eps"),
    ];
    for (json, field) in bad {
        let cfg: OptimizerConfig = serde_json::from_str(json).expect("well-formed");
        let err = cfg.validate().expect_err(json).to_string();
        assert!(err.contains(&format!("`{field}`")), "{err}");
    }
    assert!(
        serde_json::from_str::<OptimizerConfig>(r#"{"kind":"sgd","lr":0.1,"moment":0.9}"#).is_err()
    );
}

/// Sparse logistic regression and PMF gather rows: a step's gradient is zero (exactly) in every
/// row the batch did not touch, so plain SGD leaves those rows bit-identical.
#[test]
fn gradients_reach_only_touched_rows() {
    let dev = Device::Cpu;
    let cfg: ModelConfig =
        serde_json::from_str(r#"{"arch":"sparse_logreg","n_features":10}"#).expect("valid");
    let model = Model::new(&cfg, &dev).expect("builds");
    // Features 2 and 7 (and the padding pair (0, 0.0), which touches row 0 with weight 0).
    let xs = Tensor::new(&[[[2.0f32, 1.5], [7.0, -0.5], [0.0, 0.0]]], &dev).expect("pairs");
    let y = Tensor::new(&[1.0f32], &dev).expect("label");
    let l = Loss::BinaryLogistic
        .compute(&model.forward_t(&xs, true).expect("fwd"), &y)
        .expect("loss");
    let grads = l.backward().expect("backward");
    let w = model.var("layers.0.weight").expect("weight");
    let g: Vec<f32> = grads
        .get(&w)
        .expect("grad")
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .expect("vec");
    for (row, v) in g.iter().enumerate() {
        assert_eq!(*v != 0.0, row == 2 || row == 7, "row {row}: {v}");
    }
    // d/dw = (sigmoid(0) - 1) * value = -0.5 * value.
    assert_eq!(g[2], -0.75);
    assert_eq!(g[7], 0.25);

    let cfg: ModelConfig =
        serde_json::from_str(r#"{"arch":"pmf","n_users":5,"n_items":6,"n_factors":2}"#)
            .expect("valid");
    let model = Model::new(&cfg, &dev).expect("builds");
    let before = model
        .var("layers.0.item_factors")
        .expect("items")
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>());
    let mut opt = OptimizerConfig::Sgd {
        lr: 0.1,
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    }
    .build(model.vars())
    .expect("sgd");
    let ids = Tensor::new(&[[1u32, 3], [4, 3]], &dev).expect("ids");
    let y = Tensor::new(&[4.0f32, 2.0], &dev).expect("ratings");
    let l = Loss::Mse
        .compute(&model.forward_t(&ids, true).expect("fwd"), &y)
        .expect("loss");
    opt.step(&l.backward().expect("backward")).expect("step");
    let after = model
        .var("layers.0.item_factors")
        .expect("items")
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>());
    let (before, after) = (before.expect("vec"), after.expect("vec"));
    for item in 0..6 {
        let changed = before[2 * item..2 * item + 2] != after[2 * item..2 * item + 2];
        assert_eq!(changed, item == 3, "item {item}");
    }
}

// optim.py, verbatim:
// import torch, torch.nn.functional as F
// torch.set_default_dtype(torch.float64)
// # Losses and their input gradients.
// z = torch.tensor([[0.5, -1.2, 2.0], [1.5, 0.3, -0.7]], requires_grad=True)
// l = F.cross_entropy(z, torch.tensor([2, 0])); l.backward(); print("ce", l.item(), z.grad.flatten().tolist())
// z = torch.tensor([0.8, -2.5, 30.0], requires_grad=True)
// l = F.binary_cross_entropy_with_logits(z, torch.tensor([1.0, 0.0, 0.0])); l.backward(); print("bce", l.item(), z.grad.tolist())
// z = torch.tensor([1.0, 2.5, -0.5], requires_grad=True)
// l = F.mse_loss(z, torch.tensor([0.5, 2.0, 1.0])); l.backward(); print("mse", l.item(), z.grad.tolist())
// # Optimizers: three steps on L(w) = sum(c * w^2 + w), c = [1, 2, 0.5], w0 = [0.5, -1, 2].
// def run(name, make):
//     w = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
//     opt = make([w])
//     for _ in range(3):
//         opt.zero_grad(); (torch.tensor([1.0, 2.0, 0.5]) * w * w + w).sum().backward(); opt.step()
//     print(name, w.detach().tolist())
// run("sgd", lambda p: torch.optim.SGD(p, lr=0.1))
// run("momentum", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
// run("nesterov", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01))
// run("adagrad", lambda p: torch.optim.Adagrad(p, lr=0.5))
// run("adam", lambda p: torch.optim.Adam(p, lr=0.1, weight_decay=0.05))
// run("adamw", lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.1))
