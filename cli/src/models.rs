//! `cumulus models …`: list the zoo, write an initialized model folder, inspect one.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::Device;
use clap::{Args, Subcommand};
use comfy_table::Table;
use cumulus_models::folder::{CONFIG_FILE, WEIGHTS_FILE};
use cumulus_models::size::human_bytes;
use cumulus_models::{
    LayerInfo, MAX_BATCH, MAX_PARAMS, Model, ModelConfig, SizeLimits, architectures,
};

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the architectures of the model zoo with their default size.
    List,
    /// Write an initialized model folder (`config.json` + `model.safetensors`).
    Init(InitArgs),
    /// Print one row per layer (name, output shape, params, bytes, FLOPs) and the total.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Architecture, one of `cumulus models list`.
    arch: String,
    /// JSON file with the architecture's config (as the `model` object of config.json); its `arch`
    /// must equal ARCH. Without it the architecture's default size is used.
    #[arg(long, env = "CUMULUS_MODEL_CONFIG")]
    config: Option<PathBuf>,
    /// Folder to write; created if missing. A folder that already holds a model is refused
    /// unless --force is given.
    #[arg(long, env = "CUMULUS_MODEL_OUT")]
    out: PathBuf,
    /// Seed of the weight initialization.
    #[arg(long, env = "CUMULUS_SEED", default_value_t = 0)]
    seed: u64,
    /// Replace the model an existing --out folder holds.
    #[arg(long, env = "CUMULUS_MODEL_FORCE")]
    force: bool,
    /// Most trainable parameters the model may have; a larger config is refused before any
    /// weight is allocated.
    #[arg(long, env = "CUMULUS_MODEL_MAX_PARAMS", default_value_t = MAX_PARAMS)]
    max_params: u64,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A model folder holding config.json and model.safetensors.
    dir: PathBuf,
    /// Batch size of the shapes and FLOPs shown (1 to 1048576).
    #[arg(long, env = "CUMULUS_BATCH", default_value_t = 1)]
    batch: usize,
    /// Print the layers as JSON instead of a table.
    #[arg(long, env = "CUMULUS_JSON")]
    json: bool,
}

pub fn run(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List => list(),
        ModelsCommand::Init(args) => init(&args),
        ModelsCommand::Inspect(args) => inspect(&args),
    }
}

fn list() -> anyhow::Result<()> {
    let mut table = Table::new();
    table.set_header(["arch", "layers", "params (default size)", "input"]);
    for arch in architectures() {
        let config = ModelConfig::default_for(arch)?;
        let model = Model::new(&config, &Device::Cpu)?;
        let input = config
            .inputs()
            .iter()
            .map(|t| format!("{} {} {:?}", t.name, t.datatype, t.shape))
            .collect::<Vec<_>>()
            .join(", ");
        table.add_row([
            arch.to_string(),
            model.num_layers().to_string(),
            model.total_params().to_string(),
            input,
        ]);
    }
    println!("{table}");
    Ok(())
}

fn init(args: &InitArgs) -> anyhow::Result<()> {
    if !architectures().contains(&args.arch.as_str()) {
        bail!(
            "unknown architecture {:?}; choose one of: {}",
            args.arch,
            architectures().join(", ")
        );
    }
    let config = match &args.config {
        Some(file) => read_config(file, &args.arch)?,
        None => ModelConfig::default_for(&args.arch)?,
    };
    if !args.force {
        refuse_existing_model(&args.out)?;
    }
    let limits = SizeLimits {
        max_params: args.max_params,
        ..SizeLimits::default()
    };
    // Sized (and refused) from the config alone, before a weight is allocated.
    let model = Model::with_limits(
        &config,
        &Device::Cpu,
        args.seed,
        candle_core::DType::F32,
        &limits,
    )
    .with_context(|| format!("cannot build the {} model", config.arch()))?;
    model
        .save(&args.out)
        .with_context(|| format!("cannot write the model folder {}", args.out.display()))?;
    println!(
        "wrote {} ({}, {} params)",
        args.out.display(),
        config.arch(),
        model.total_params()
    );
    Ok(())
}

/// A folder that already holds a model (either file of one) is not overwritten by accident.
fn refuse_existing_model(out: &Path) -> anyhow::Result<()> {
    for name in [CONFIG_FILE, WEIGHTS_FILE] {
        let path = out.join(name);
        if path.exists() {
            bail!(
                "{} already holds a model ({} exists); pass --force to replace it",
                out.display(),
                path.display()
            );
        }
    }
    Ok(())
}

fn read_config(file: &Path, arch: &str) -> anyhow::Result<ModelConfig> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the model config {}", file.display()))?;
    let config: ModelConfig = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a valid model config", file.display()))?;
    if config.arch() != arch {
        bail!(
            "{}: arch is {:?} but the command asks for {arch:?}",
            file.display(),
            config.arch()
        );
    }
    // The error says "invalid model config: field `…`: …" itself: the context only names the file.
    config
        .validate()
        .with_context(|| file.display().to_string())?;
    Ok(config)
}

fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    SizeLimits::default()
        .check_batch(args.batch)
        .with_context(|| format!("--batch {} (1 to {MAX_BATCH})", args.batch))?;
    let model = Model::load(&args.dir, &Device::Cpu)?;
    let size = model
        .config()
        .size(args.batch)
        .with_context(|| format!("--batch {}", args.batch))?;
    let infos = model.layer_infos(&model.config().input_shape(args.batch))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(());
    }
    println!("{}", layer_table(&infos));
    let total_bytes: u64 = infos.iter().map(|l| l.param_bytes as u64).sum();
    // Saturating: a FLOP count past u64 prints as its ceiling instead of overflowing.
    let total_flops = infos
        .iter()
        .fold(0u64, |acc, l| acc.saturating_add(l.flops));
    let flops = if total_flops == u64::MAX {
        format!("more than {total_flops}")
    } else {
        total_flops.to_string()
    };
    println!(
        "{} ({}), {} layers, {total_bytes} bytes, {flops} FLOPs at batch {}",
        args.dir.display(),
        model.config().arch(),
        infos.len(),
        args.batch
    );
    println!(
        "activations at batch {}: about {} for a forward pass, {} kept by a training step",
        args.batch,
        human_bytes(size.activation_bytes),
        human_bytes(size.train_activation_bytes)
    );
    println!("total params: {}", model.total_params());
    Ok(())
}

fn layer_table(infos: &[LayerInfo]) -> Table {
    let mut table = Table::new();
    table.set_header([
        "#",
        "name",
        "kind",
        "output shape",
        "params",
        "bytes",
        "FLOPs",
    ]);
    for l in infos {
        table.add_row([
            l.index.to_string(),
            l.name.clone(),
            l.kind.clone(),
            format!("{:?}", l.output_shape),
            l.param_count.to_string(),
            l.param_bytes.to_string(),
            l.flops.to_string(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_args(out: &Path, config: Option<PathBuf>, force: bool) -> InitArgs {
        InitArgs {
            arch: "mlp".into(),
            config,
            out: out.to_path_buf(),
            seed: 0,
            force,
            max_params: MAX_PARAMS,
        }
    }

    /// The whole message as `main` prints it (every cause, once).
    fn message(e: &anyhow::Error) -> String {
        format!("{e:#}")
    }

    #[test]
    fn init_refuses_to_overwrite_a_model_without_force() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("m");
        init(&init_args(&out, None, false)).expect("a fresh folder is written");
        let before = std::fs::read(out.join(WEIGHTS_FILE)).expect("weights written");
        let err = message(&init(&init_args(&out, None, false)).expect_err("refused"));
        assert!(err.contains("--force"), "{err}");
        assert!(err.contains("already holds a model"), "{err}");
        assert_eq!(
            std::fs::read(out.join(WEIGHTS_FILE)).expect("still there"),
            before
        );
        init(&init_args(&out, None, true)).expect("--force replaces it");
    }

    #[test]
    fn a_huge_config_is_refused_before_allocating_with_its_size_and_the_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("huge.json");
        // Each width passes on its own; the model has 10^12 parameters (4 TB): building it would
        // abort the process, so the refusal must come from the estimate.
        std::fs::write(
            &config,
            r#"{"arch": "mlp", "input_dim": 1000000, "hidden": [1000000], "n_outputs": 10}"#,
        )
        .expect("write config");
        let out = dir.path().join("m");
        let err = message(&init(&init_args(&out, Some(config), false)).expect_err("refused"));
        assert!(err.contains("1000011000010 parameters"), "{err}");
        assert!(err.contains(&format!("limit of {MAX_PARAMS}")), "{err}");
        assert!(!out.exists(), "nothing written");
    }

    #[test]
    fn a_bad_config_is_reported_once_naming_the_file_and_the_field() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("bad.json");
        std::fs::write(
            &config,
            r#"{"arch": "mlp", "input_dim": 64, "hidden": [100000000], "n_outputs": 10}"#,
        )
        .expect("write config");
        let out = dir.path().join("m");
        let err = message(&init(&init_args(&out, Some(config), false)).expect_err("refused"));
        assert_eq!(err.matches("invalid model config").count(), 1, "{err}");
        assert!(err.contains("bad.json"), "{err}");
        assert!(err.contains("`hidden[0]`"), "{err}");
    }

    #[test]
    fn inspect_refuses_absurd_batches_and_counts_flops_without_overflow() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("t");
        let mut args = init_args(&out, None, false);
        args.arch = "transformer".into();
        init(&args).expect("written");
        for batch in [0, MAX_BATCH + 1, usize::MAX] {
            let err = inspect(&InspectArgs {
                dir: out.clone(),
                batch,
                json: false,
            })
            .expect_err("refused");
            assert!(message(&err).contains("--batch"), "{}", message(&err));
        }
        inspect(&InspectArgs {
            dir: out,
            batch: MAX_BATCH,
            json: false,
        })
        .expect("the largest batch is inspected");
    }
}
