//! `cumulus models …`: list the zoo, write an initialized model folder, inspect one.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::Device;
use clap::{Args, Subcommand};
use comfy_table::Table;
use cumulus_models::{LayerInfo, Model, ModelConfig, architectures};

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
    /// Folder to write; created if missing.
    #[arg(long, env = "CUMULUS_MODEL_OUT")]
    out: PathBuf,
    /// Seed of the weight initialization.
    #[arg(long, env = "CUMULUS_SEED", default_value_t = 0)]
    seed: u64,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A model folder holding config.json and model.safetensors.
    dir: PathBuf,
    /// Batch size of the shapes and FLOPs shown.
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
    let model = Model::with_seed(&config, &Device::Cpu, args.seed)?;
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
    config
        .validate()
        .with_context(|| format!("{}: invalid model config", file.display()))?;
    Ok(config)
}

fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let model = Model::load(&args.dir, &Device::Cpu)?;
    let infos = model.layer_infos(&model.config().input_shape(args.batch))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(());
    }
    println!("{}", layer_table(&infos));
    let total_bytes: usize = infos.iter().map(|l| l.param_bytes).sum();
    let total_flops: u64 = infos.iter().map(|l| l.flops).sum();
    println!(
        "{} ({}), {} layers, {total_bytes} bytes, {total_flops} FLOPs at batch {}",
        args.dir.display(),
        model.config().arch(),
        infos.len(),
        args.batch
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
