//! Every job file in `examples/jobs/` loads and validates (STYLE 8: examples never rot).

use std::path::Path;

use cumulus_trainer::job::JobSpec;

#[test]
fn every_example_job_file_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/jobs exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let job = JobSpec::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!job.name.is_empty());
            seen += 1;
        }
    }
    assert!(seen >= 1, "no job files found in {}", dir.display());
}
