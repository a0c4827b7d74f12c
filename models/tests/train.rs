//! The training loop end to end: the MLP learns scikit-learn's digits, training is reproducible
//! from its seeds, and PMF fits a low-rank ratings matrix.

use candle_core::{Device, Tensor};
use cumulus_models::data::digits;
use cumulus_models::loss::Loss;
use cumulus_models::optim::OptimizerConfig;
use cumulus_models::train::{FitOptions, Metric, evaluate, fit};
use cumulus_models::{Model, ModelConfig};

fn adam(lr: f64) -> OptimizerConfig {
    OptimizerConfig::Adam {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

fn train_digits(epochs: usize) -> (Vec<f64>, f64) {
    let dev = Device::Cpu;
    let (train, test) = digits::load()
        .expect("embedded digits")
        .train_test_split(0.2, 42)
        .expect("split");
    let (x, y) = train.dense_tensors(&dev).expect("train tensors");
    let (xt, yt) = test.dense_tensors(&dev).expect("test tensors");
    let model =
        Model::with_seed(&ModelConfig::default_for("mlp").expect("mlp"), &dev, 42).expect("builds");
    let mut opt = adam(3e-3).build(model.vars()).expect("adam");
    let options = FitOptions {
        epochs,
        batch_size: 32,
        seed: 7,
    };
    let losses = fit(&model, &x, &y, Loss::CrossEntropy, opt.as_mut(), &options).expect("fit");
    let accuracy = evaluate(&model, &xt, &yt, Metric::Accuracy, 256).expect("evaluate");
    (losses, accuracy)
}

#[test]
fn mlp_learns_digits_to_95_percent_held_out() {
    let (losses, accuracy) = train_digits(20);
    assert_eq!(losses.len(), 20);
    assert!(
        losses[19] < losses[0] / 10.0,
        "loss fell too little: {losses:?}"
    );
    assert!(accuracy >= 0.95, "held-out accuracy {accuracy}");
}

#[test]
fn training_is_reproducible_from_its_seeds() {
    let (a, acc_a) = train_digits(2);
    let (b, acc_b) = train_digits(2);
    assert_eq!(a, b);
    assert_eq!(acc_a, acc_b);
}

/// Ratings from a rank-2 matrix plus biases: PMF with Adam gets the training RMSE well below the
/// ratings' own spread.
#[test]
fn pmf_fits_a_low_rank_matrix() {
    let dev = Device::Cpu;
    let (users, items) = (12u32, 9u32);
    let mut ids = Vec::new();
    let mut ratings = Vec::new();
    for u in 0..users {
        for i in 0..items {
            let (uf, itf) = (u as f32, i as f32);
            let r = 3.0
                + 0.8 * (uf * 0.7).sin() * (itf * 0.9).cos()
                + 0.5 * (uf * 0.3).cos() * (itf * 0.4).sin()
                + 0.1 * (uf - 6.0) / 6.0;
            ids.extend([u, i]);
            ratings.push(r);
        }
    }
    let n = ratings.len();
    let x = Tensor::from_vec(ids, (n, 2), &dev).expect("ids");
    let y = Tensor::from_vec(ratings, n, &dev).expect("ratings");
    let cfg: ModelConfig =
        serde_json::from_str(r#"{"arch":"pmf","n_users":12,"n_items":9,"n_factors":4}"#)
            .expect("valid");
    let model = Model::with_seed(&cfg, &dev, 1).expect("builds");
    let before = evaluate(&model, &x, &y, Metric::Rmse, 64).expect("rmse");
    let mut opt = adam(0.05).build(model.vars()).expect("adam");
    let options = FitOptions {
        epochs: 150,
        batch_size: 27,
        seed: 3,
    };
    fit(&model, &x, &y, Loss::Mse, opt.as_mut(), &options).expect("fit");
    let after = evaluate(&model, &x, &y, Metric::Rmse, 64).expect("rmse");
    assert!(
        before > 2.5,
        "ratings around 3 from a zero-bias start: {before}"
    );
    assert!(after < 0.1, "training RMSE {after} (from {before})");
}

#[test]
fn fit_refuses_mismatched_inputs() {
    let dev = Device::Cpu;
    let model =
        Model::new(&ModelConfig::default_for("logreg").expect("logreg"), &dev).expect("builds");
    let x = Tensor::zeros((4, 64), candle_core::DType::F32, &dev).expect("x");
    let y = Tensor::zeros(3, candle_core::DType::F32, &dev).expect("y");
    let mut opt = adam(0.1).build(model.vars()).expect("adam");
    let options = FitOptions {
        epochs: 1,
        batch_size: 2,
        seed: 0,
    };
    assert!(fit(&model, &x, &y, Loss::CrossEntropy, opt.as_mut(), &options).is_err());
    let y = Tensor::zeros(4, candle_core::DType::F32, &dev).expect("y");
    let zero_batch = FitOptions {
        batch_size: 0,
        ..options
    };
    assert!(
        fit(
            &model,
            &x,
            &y,
            Loss::CrossEntropy,
            opt.as_mut(),
            &zero_batch
        )
        .is_err()
    );
}
