//! Every job file in `examples/jobs/` loads and validates (STYLE 8: examples never rot), every
//! architecture of the zoo has one, and each example whose data ships with the repository feeds
//! its model: the dataset reads, takes the model's input shape, and a forward pass runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::Device;
use cumulus_models::{Model, architectures};
use cumulus_trainer::dataset;
use cumulus_trainer::job::{JobSpec, ModelSource};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example_jobs() -> Vec<(PathBuf, JobSpec)> {
    let dir = repo_root().join("examples/jobs");
    let mut jobs = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/jobs exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let job = JobSpec::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
            jobs.push((path, job));
        }
    }
    jobs.sort_by(|a, b| a.0.cmp(&b.0));
    jobs
}

#[test]
fn every_example_job_file_is_valid() {
    let jobs = example_jobs();
    assert!(!jobs.is_empty(), "no job files found in examples/jobs");
    for (path, job) in &jobs {
        assert!(!job.name.is_empty(), "{}", path.display());
        // The file's name is the job's name, so `runs/<name>` is easy to find.
        assert_eq!(
            path.file_stem().and_then(|s| s.to_str()),
            Some(job.name.as_str()),
            "{}",
            path.display()
        );
    }
}

#[test]
fn every_architecture_has_an_example_job() {
    let covered: BTreeSet<&str> = example_jobs()
        .iter()
        .filter_map(|(_, job)| match &job.model {
            ModelSource::Arch(config) => Some(config.arch()),
            ModelSource::Folder(_) => None,
        })
        .collect();
    let missing: Vec<_> = architectures()
        .iter()
        .filter(|a| !covered.contains(*a))
        .collect();
    assert!(missing.is_empty(), "no example job trains {missing:?}");
}

/// Examples on data from `bench/data/fetch.sh` are checked when it has been run; the others
/// (builtin or committed data) always.
#[test]
fn examples_with_data_at_hand_feed_their_model() {
    // Relative data paths in the examples are relative to the repository root.
    std::env::set_current_dir(repo_root()).expect("the repository root exists");
    let mut checked = 0;
    for (path, job) in example_jobs() {
        let source = &job.data.source;
        if source.starts_with("bench/data/downloads/") && !Path::new(source).exists() {
            eprintln!("{}: skipped, {source} not fetched", path.display());
            continue;
        }
        let ModelSource::Arch(config) = &job.model else {
            continue;
        };
        let data = dataset::prepare(&job.data, job.seed, Some((job.training.loss, config)))
            .and_then(|d| d.shaped_for(config))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            data.train_len() >= job.workers.count as usize,
            "{}",
            path.display()
        );
        let model = Model::with_seed(config, &Device::Cpu, job.seed).unwrap();
        let out = model
            .forward_t(&data.test_x.narrow(0, 0, 2).unwrap(), false)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(out.dims()[0], 2, "{}", path.display());
        checked += 1;
    }
    assert!(
        checked >= 4,
        "only {checked} examples had their data at hand"
    );
}
