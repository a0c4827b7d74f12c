//! `cumulus data …`: look at a dataset file the way a job would read it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use cumulus_models::data::{DataFormat, load_path};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Print rows, features, density and the label distribution of a dataset file.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The dataset file (`.csv`, `.svm`/`.libsvm`, MovieLens `u.data`/`.inter`, MNIST IDX; `.gz` too).
    file: PathBuf,
    /// Format of the file; guessed from its name when absent.
    #[arg(long, env = "CUMULUS_DATA_FORMAT")]
    format: Option<DataFormat>,
}

pub fn run(command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Inspect(args) => {
            let dataset = load_path(&args.file, args.format)
                .with_context(|| format!("cannot read the dataset {}", args.file.display()))?;
            println!("{}", dataset.summary());
            Ok(())
        }
    }
}
