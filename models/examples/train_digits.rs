//! Train the default MLP (64 -> 128 -> 64 -> 10, ReLU) on scikit-learn's digits with Adam, print
//! the loss of every epoch and the held-out accuracy, and exit non-zero below 95%.
//!
//! ```text
//! cargo run --release -p cumulus-models --example train_digits
//! ```

use std::process::ExitCode;
use std::time::Instant;

use candle_core::Device;
use cumulus_models::data::digits;
use cumulus_models::loss::Loss;
use cumulus_models::optim::OptimizerConfig;
use cumulus_models::train::{FitOptions, Metric, evaluate, fit};
use cumulus_models::{Model, ModelConfig, ModelError};

const TARGET_ACCURACY: f64 = 0.95;

fn run() -> Result<f64, ModelError> {
    let device = Device::Cpu;
    let (train, test) = digits::load()?.train_test_split(0.2, 42)?;
    let (x_train, y_train) = train.dense_tensors(&device)?;
    let (x_test, y_test) = test.dense_tensors(&device)?;
    println!(
        "digits: {} training and {} held-out examples",
        train.len(),
        test.len()
    );

    let model = Model::with_seed(&ModelConfig::default_for("mlp")?, &device, 42)?;
    let optimizer = OptimizerConfig::Adam {
        lr: 3e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut opt = optimizer.build(model.vars())?;
    let options = FitOptions {
        epochs: 30,
        batch_size: 32,
        seed: 7,
    };
    let start = Instant::now();
    let losses = fit(
        &model,
        &x_train,
        &y_train,
        Loss::CrossEntropy,
        opt.as_mut(),
        &options,
    )?;
    for (epoch, loss) in losses.iter().enumerate() {
        println!("epoch {:>2}  loss {loss:.4}", epoch + 1);
    }
    let accuracy = evaluate(&model, &x_test, &y_test, Metric::Accuracy, 256)?;
    println!(
        "trained in {:.2?}; held-out accuracy {accuracy:.4}",
        start.elapsed()
    );
    Ok(accuracy)
}

fn main() -> ExitCode {
    match run() {
        Ok(accuracy) if accuracy >= TARGET_ACCURACY => ExitCode::SUCCESS,
        Ok(accuracy) => {
            eprintln!("held-out accuracy {accuracy:.4} is below {TARGET_ACCURACY}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
