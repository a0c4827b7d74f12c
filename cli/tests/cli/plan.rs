//! `cumulus train --plan` as a user runs it: the real binary profiles the digits example with real
//! worker functions (`cumulus fn` processes) and a real parameter store, prints the plan and
//! exits. Wall-clock values are never asserted on: only the plan's shape and its consistency.

use std::path::PathBuf;
use std::process::Output;

fn digits_job() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/jobs/digits-mlp.toml")
}

fn cumulus(args: &[&str]) -> Output {
    crate::common::run_bounded(crate::common::cumulus().args(args))
}

#[test]
fn plan_of_the_digits_job_prints_a_table_and_a_choice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("out");
    let work_dir = dir.path().join("work");
    let job = digits_job();
    let out = cumulus(&[
        "train",
        "--plan",
        job.to_str().expect("utf-8 path"),
        "--out",
        out_dir.to_str().expect("utf-8 path"),
        "--work-dir",
        work_dir.to_str().expect("utf-8 path"),
        "--plan-workers",
        "1,2,4",
        "--plan-tiers",
        "512,1769,3008",
        "--profile-secs",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("fitted model"), "{stdout}");
    assert!(
        stdout.contains("wall s") && stdout.contains("cost $"),
        "{stdout}"
    );
    let chosen = stdout
        .lines()
        .find(|l| l.starts_with("chosen: "))
        .unwrap_or_else(|| panic!("no chosen line in:\n{stdout}"));

    // plan.json: 3 × 3 predictions, the chosen one among them, no run measured.
    let text = std::fs::read_to_string(out_dir.join("plan.json")).expect("plan.json written");
    let plan: serde_json::Value = serde_json::from_str(&text).expect("plan.json is JSON");
    let predictions = plan["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 9);
    let i = plan["chosen"].as_u64().expect("chosen index") as usize;
    let c = &predictions[i];
    let workers = c["workers"].as_u64().expect("workers");
    let memory = c["memory_mb"].as_u64().expect("memory");
    assert!(
        chosen.starts_with(&format!("chosen: {workers} worker(s) × {memory} MB")),
        "{chosen}"
    );
    // The job's 300 s deadline: the choice is the cheapest of those meeting it.
    let feasible: Vec<&serde_json::Value> = predictions
        .iter()
        .filter(|p| p["meets_deadline"] == true && p["within_budget"] == true)
        .collect();
    if !feasible.is_empty() {
        assert_eq!(plan["choice"], "cheapest_within_limits");
        let cheapest = feasible
            .iter()
            .map(|p| p["cost_usd"].as_f64().expect("cost"))
            .fold(f64::INFINITY, f64::min);
        assert_eq!(c["cost_usd"].as_f64(), Some(cheapest));
    } else {
        assert_eq!(plan["choice"], "none_within_limits_fastest");
    }
    assert!(plan["measured"].is_null());
    // Profiled: 2 worker counts × the 2 tiers that differ in CPU.
    assert_eq!(plan["profile"]["runs"].as_array().map(Vec::len), Some(4));
    // --plan alone trains nothing: no model folder.
    assert!(!out_dir.join("model.safetensors").exists());
}

#[test]
fn plan_refuses_bad_input_with_a_clear_error() {
    let job = digits_job();
    let job = job.to_str().expect("utf-8 path");
    let out = cumulus(&["train", "--plan", job, "--plan-tiers", "777"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--plan-tiers: 777 MB is not one of"),
        "{stderr}"
    );

    let out = cumulus(&["train", "--plan", job, "--profile-secs", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("profile seconds"), "{stderr}");

    let out = cumulus(&["train", "--plan", job, "--plan-workers", "0"]);
    assert!(!out.status.success());

    // --run only makes sense with --plan.
    let out = cumulus(&["train", "--run", job]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--plan"), "{stderr}");
}
