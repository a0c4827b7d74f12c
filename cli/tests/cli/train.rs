//! `cumulus train` under interruption and bad output folders, as a user meets them.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{LIMIT, cumulus, run_bounded, wait_bounded};

fn long_job(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/jobs/digits-mlp.toml"
    ))
    .unwrap()
    .replace("target_accuracy = 0.95", "target_accuracy = 1.0")
    .replace("max_epochs = 40", "max_epochs = 100000")
    .replace("max_wall_secs = 300", "max_wall_secs = 3600");
    let path = dir.join("long.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn sigint_stops_the_job_writes_the_model_so_far_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    // The run's temporary folder goes here, so the test can see it is removed.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = dir.path().join("out");
    let child = cumulus()
        .arg("train")
        .arg(long_job(dir.path()))
        .arg("--out")
        .arg(&out)
        .env("TMPDIR", &tmp)
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cumulus train starts");
    // Let it train for a while: workers running, rounds under way.
    let deadline = std::time::Instant::now() + LIMIT;
    while !out.join("model.safetensors").exists() && std::time::Instant::now() < deadline {
        // The output folder is created at submission; wait for real training instead.
        if std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) > 0 {
            std::thread::sleep(std::time::Duration::from_secs(3));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let done = wait_bounded(child);
    let stdout = String::from_utf8_lossy(&done.stdout);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(stdout.contains("interrupted by SIGINT"), "{stdout}");
    assert!(out.join("model.safetensors").is_file() && out.join("metrics.json").is_file());
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["stop_reason"], "cancelled", "{metrics}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "the temporary folder is removed: {left:?}");
}

#[test]
fn an_unwritable_output_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "a file, not a folder").unwrap();
    let out = run_bounded(
        cumulus()
            .arg("train")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/jobs/digits-mlp.toml"
            ))
            .arg("--out")
            .arg(blocker.join("model")),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot write there"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("epochs"));
}
