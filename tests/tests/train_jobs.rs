//! `cumulus train` as a user runs it: the real binary, worker functions as real processes on the
//! function platform, an in-process parameter-store shard. Faults are real too: a worker process
//! killed with SIGKILL, and invocations cut short by their time limit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn example_job() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs/digits-mlp.toml");
    std::fs::read_to_string(path).expect("the digits example job exists")
}

/// The example job with some keys replaced (`from` → `to`, each must occur).
fn job_file(dir: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = example_job();
    for (from, to) in edits {
        assert!(text.contains(from), "the example job has no {from:?}");
        text = text.replace(from, to);
    }
    let path = dir.join("job.toml");
    std::fs::write(&path, text).expect("write the job file");
    path
}

fn train(job: &Path, out: &Path, extra: &[&str]) -> Child {
    Command::new(cumulus_e2e::cumulus_bin())
        .arg("train")
        .arg(job)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cumulus train starts")
}

fn finish(child: Child) -> Output {
    let out = child
        .wait_with_output()
        .expect("cumulus train runs to the end");
    assert!(
        out.status.success(),
        "cumulus train failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn metrics(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("metrics.json")).expect("metrics.json written");
    serde_json::from_str(&text).expect("metrics.json is JSON")
}

fn number(m: &Value, key: &str) -> f64 {
    m[key]
        .as_f64()
        .unwrap_or_else(|| panic!("metrics.json has no number {key}: {m}"))
}

/// Pids of the live `cumulus fn train-worker` processes whose parent is `parent`.
fn worker_pids(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Field 4 is the parent pid; the command name (field 2) may hold spaces, so split
            // after its closing parenthesis.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains("train-worker")
        })
        .collect()
}

#[test]
fn the_digits_example_reaches_95_percent_and_writes_a_servable_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs/digits-mlp.toml");
    let output = finish(train(&job, &out, &[]));
    let m = metrics(&out);
    assert!(number(&m, "test_accuracy") >= 0.95, "{m}");
    assert!(number(&m, "bytes_pushed") > 0.0);
    assert!(
        number(&m, "billed_cost_usd") > 0.0,
        "workers ran on the billed platform: {m}"
    );
    assert!(number(&m, "cold_starts") >= 2.0, "{m}");
    for plot in ["training.png", "training.svg"] {
        assert!(out.join(plot).is_file(), "{plot} missing");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("test_accuracy"), "{stdout}");
    // The folder is a model folder: the zoo loads it.
    let inspect = Command::new(cumulus_e2e::cumulus_bin())
        .args(["models", "inspect"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(inspect.status.success());
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("total params: 17226"));
}

#[test]
fn a_worker_killed_with_sigkill_is_replaced_and_the_job_still_reaches_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    // Long invocations, so that a kill lands inside one.
    let job = job_file(
        dir.path(),
        &[("steps_per_invocation = 25", "steps_per_invocation = 150")],
    );
    let mut child = train(&job, &out, &[]);
    let started = Instant::now();
    let victim = loop {
        if let Some(pid) = worker_pids(child.id()).first() {
            break *pid;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "cumulus train ended before any worker started"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no worker process appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let it get into its invocation, then kill it without warning.
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    finish(child);
    let m = metrics(&out);
    assert!(number(&m, "test_accuracy") >= 0.95, "{m}");
    // The kill cost one invocation, which the coordinator ran again.
    assert!(number(&m, "failed_invocations") >= 1.0, "{m}");
}

#[test]
fn invocations_cut_short_by_their_time_limit_hand_over_and_the_job_completes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    // Far more steps than fit in a 2-second invocation: each one runs until its deadline nears,
    // pushes what it holds, and the coordinator invokes it again where it stopped.
    let job = job_file(
        dir.path(),
        &[("steps_per_invocation = 25", "steps_per_invocation = 100000")],
    );
    finish(train(&job, &out, &["--worker-timeout-secs", "2"]));
    let m = metrics(&out);
    assert!(number(&m, "test_accuracy") >= 0.95, "{m}");
    assert!(number(&m, "invocations") >= 2.0, "{m}");
    // No invocation ran its whole step budget: each was ended by its time limit.
    assert!(
        number(&m, "steps") / number(&m, "invocations") < 100000.0,
        "{m}"
    );
}
