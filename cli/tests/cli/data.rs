//! `cumulus data inspect` as a user runs it.

use std::process::Command;

#[test]
fn inspect_summarizes_digits_and_refuses_a_malformed_file_with_its_line() {
    let digits = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/data/digits.csv.gz");
    let out = Command::new(env!("CARGO_BIN_EXE_cumulus"))
        .args(["data", "inspect", digits])
        .output()
        .expect("the cumulus binary runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1797"), "{text}");
    assert!(text.contains("10 classes"), "{text}");

    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "1,2,3\n4,abc,6\n").expect("write fixture");
    let out = Command::new(env!("CARGO_BIN_EXE_cumulus"))
        .args(["data", "inspect", bad.to_str().expect("utf-8 path")])
        .output()
        .expect("the cumulus binary runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.csv:2: column 2: \"abc\" is not a number"),
        "{err}"
    );
    // One line, no backtrace, no repeated cause.
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_cumulus"))
        .args(["data", "inspect", "--format", "nope", digits])
        .output()
        .expect("the cumulus binary runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}
