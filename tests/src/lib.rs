//! End-to-end scenarios of Cumulus across roles, run against real processes on 127.0.0.1:0.
//!
//! Tests in this crate start the real `cumulus` binary. [`cumulus_bin`] builds it once per test
//! process (with the cargo that runs the tests, into the same target directory) and returns its path, so
//! `cargo test --workspace` needs no separate build step.
//!
//! ```no_run
//! let bin = cumulus_e2e::cumulus_bin();
//! let out = std::process::Command::new(bin).arg("--version").output().unwrap();
//! assert!(out.status.success());
//! ```

use std::path::PathBuf;
use std::sync::OnceLock;

/// Path of the `cumulus` binary, built on first use.
///
/// # Panics
/// When the binary cannot be built: a test cannot go on without it, and the build's own
/// error output is shown.
pub fn cumulus_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let run = escargot::CargoBuild::new()
            .package("cumulus")
            .bin("cumulus")
            .run()
            .expect("building the cumulus binary for end-to-end tests must succeed");
        run.path().to_path_buf()
    })
    .clone()
}
