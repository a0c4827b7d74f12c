//! Every platform config in `examples/` (the files named `cumulus*.toml`) loads and validates, and
//! the first example states exactly the built-in defaults it says it states.

use std::path::PathBuf;

use cumulus_runtime::CumulusConfig;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn every_platform_config_example_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples()).expect("examples/ exists") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.starts_with("cumulus") && name.ends_with(".toml") {
            CumulusConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "expected examples/cumulus.toml and examples/cumulus-knative.toml"
    );
}

#[test]
fn documented_defaults_match_the_code() {
    let c = CumulusConfig::load(&examples().join("cumulus.toml")).expect("valid");
    let d = CumulusConfig::default();
    assert_eq!(c.functions.defaults, d.functions.defaults);
    assert_eq!(c.functions.memory_tiers_mb, d.functions.memory_tiers_mb);
    assert_eq!(c.functions.mb_per_vcpu, d.functions.mb_per_vcpu);
    assert_eq!(c.pricing.gb_second_usd, d.pricing.gb_second_usd);
    assert_eq!(c.pricing.invocation_usd, d.pricing.invocation_usd);
    assert!((c.pricing.gpu_second_usd - d.pricing.gpu_second_usd).abs() < 1e-8);
    // The most workers one job may have; their tier and timeout come from each job.
    let worker = c.functions.spec("train-worker");
    assert_eq!(worker.max_instances, 16);
    assert_eq!(c.functions.spec("infer-stage").min_instances, 2);
}

#[test]
fn a_bad_key_names_file_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cumulus.toml");
    std::fs::write(
        &path,
        "[functions.defaults]\nmemory_mb = 1024\nmax_instance = 3\n",
    )
    .expect("write");
    let text = CumulusConfig::load(&path)
        .expect_err("typo refused")
        .to_string();
    assert!(
        text.contains("cumulus.toml") && text.contains("max_instance") && text.contains("line 3"),
        "{text}"
    );
}
