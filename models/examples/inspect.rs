//! Print every layer of an architecture's default config (what `cumulus models inspect` shows):
//! name, kind, output shape, parameters, bytes and FLOPs for a batch of 1, then the total.
//!
//! ```text
//! cargo run -p cumulus-models --example inspect -- resnet
//! cargo run -p cumulus-models --example inspect            # every architecture
//! ```

use std::process::ExitCode;

use candle_core::Device;
use cumulus_models::{Model, ModelConfig, ModelError, architectures};

fn inspect(arch: &str) -> Result<(), ModelError> {
    let cfg = ModelConfig::default_for(arch)?;
    let model = Model::new(&cfg, &Device::Cpu)?;
    println!(
        "{arch}: {}",
        serde_json::to_string(&cfg).expect("configs serialize")
    );
    println!(
        "{:<10} {:<20} {:<18} {:>12} {:>12} {:>14}",
        "layer", "kind", "output", "params", "bytes", "flops"
    );
    for info in model.layer_infos(&cfg.input_shape(1))? {
        println!(
            "{:<10} {:<20} {:<18} {:>12} {:>12} {:>14}",
            info.name,
            info.kind,
            format!("{:?}", info.output_shape),
            info.param_count,
            info.param_bytes,
            info.flops
        );
    }
    println!("total params: {}\n", model.total_params());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let archs: Vec<&str> = if args.is_empty() {
        architectures().to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for arch in archs {
        if let Err(err) = inspect(arch) {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
