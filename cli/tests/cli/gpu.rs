//! The GPU path without a GPU: `[gpu] device = "cuda"` with the executor's CPU backend runs
//! the whole path — the executor role, its socket, tenants, shared weights — so training steps
//! and inference batches really go through it; and `--probe` says there is no CUDA device.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

use crate::common::{LIMIT, cumulus, run_bounded, wait_bounded};

const GPU_ON_CPU: &str = "[gpu]\ndevice = \"cuda\"\nexecutor_backend = \"cpu\"\n";

#[test]
fn probe_says_why_there_is_no_gpu_and_exits_1() {
    let out = run_bounded(cumulus().args(["gpu-executor", "--probe"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains("cuda"), "{text}");
}

#[test]
fn training_steps_run_on_the_executor_and_reach_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cumulus.toml");
    std::fs::write(&config, GPU_ON_CPU).unwrap();
    let out = dir.path().join("out");
    let done = run_bounded(
        cumulus()
            .arg("train")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/jobs/digits-mlp.toml"
            ))
            .arg("--out")
            .arg(&out)
            .arg("--config")
            .arg(&config)
            .env("LOG_LEVEL", "warn"),
    );
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let (steps, gpu) = (
        m["steps"].as_u64().unwrap(),
        m["gpu_steps"].as_u64().unwrap(),
    );
    assert!(
        steps > 0 && gpu == steps,
        "{steps} steps, {gpu} on the executor: {m}"
    );
    assert!(m["test_accuracy"].as_f64().unwrap() >= 0.95, "{m}");
}

#[test]
fn inference_batches_run_on_the_executor_with_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cumulus.toml");
    std::fs::write(&config, GPU_ON_CPU).unwrap();
    let mut child = cumulus()
        .arg("serve")
        .arg("--models")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models"))
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let host = loop {
        let line = lines.next().expect("serve prints its endpoints").unwrap();
        if let Some(u) = line.strip_prefix("http http://") {
            break u.trim_end_matches("/v2").to_string();
        }
    };
    let request = |method: &str, path: &str, body: &str| {
        let mut s = std::net::TcpStream::connect(&host).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    let row: Vec<f32> = (0..64).map(|i| (i % 16) as f32).collect();
    let body = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]});
    let answer = request("POST", "/v2/models/digits-mlp/infer", &body.to_string());
    let json = answer.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(json).expect(&answer);
    let got: Vec<f32> = v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let model = cumulus_models::Model::load(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models/digits-mlp"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let xs = candle_core::Tensor::from_vec(row, (1, 64), &candle_core::Device::Cpu).unwrap();
    let want = model
        .forward_t(&xs, false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (g, w) in got.iter().zip(&want[0]) {
        assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{g} vs {w}");
    }
    let metrics = request("GET", "/metrics", "");
    let on_executor: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("cumulus_gpu_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        on_executor >= 1.0,
        "the batch went through the executor:\n{metrics}"
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(wait_bounded(child).status.success());
}
