//! `cumulus serve` as an application sees it: the real binary on port 0 over the committed
//! model repository (`examples/models`), each model running in `infer-stage` function
//! instances (real processes). Answers equal the model run locally; a model scaled to zero
//! answers its next request after a cold start; SIGTERM drains and exits. A model served under
//! a partition plan (one function per layer group) answers as the same model in one function.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use candle_core::{Device, Tensor};

use crate::common::{LIMIT, cumulus, wait_bounded};

struct Serve(Option<Child>);

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn models() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/models"))
}

/// `cumulus serve` of the committed models with `config`; returns it and its REST base URL.
fn serve(dir: &Path, config: &str) -> (Serve, String) {
    serve_models(models(), dir, config)
}

/// `cumulus serve` of the repository `repo` with `config` (written into `dir`).
fn serve_models(repo: &Path, dir: &Path, config: &str) -> (Serve, String) {
    let file = dir.join("cumulus.toml");
    std::fs::write(&file, config).unwrap();
    let child = cumulus()
        .arg("serve")
        .arg("--models")
        .arg(repo)
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--config"])
        .arg(&file)
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cumulus serve starts");
    // Held by the guard from the start, so a failed wait below still kills and reaps it.
    let mut guard = Serve(Some(child));
    let stdout = BufReader::new(guard.0.as_mut().unwrap().stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx.recv_timeout(LIMIT).expect("serve prints its endpoints");
        if let Some(url) = line.strip_prefix("http ") {
            return (guard, url.trim_end_matches("/v2").to_string());
        }
    }
}

fn post(url: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, answer.split_once("\r\n\r\n").unwrap().1.to_string())
}

fn infer(base: &str, rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let body = serde_json::json!({
        "inputs": [{"name": "input", "shape": [rows.len(), 64], "datatype": "FP32", "data": rows}]
    });
    let (status, answer) = post(
        &format!("{base}/v2/models/digits-mlp/infer"),
        &body.to_string(),
    );
    assert_eq!(status, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let flat: Vec<f32> = v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    flat.chunks(10).map(<[f32]>::to_vec).collect()
}

fn local(rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let model = cumulus_models::Model::load(models().join("digits-mlp"), &Device::Cpu).unwrap();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let xs = Tensor::from_vec(flat, (rows.len(), 64), &Device::Cpu).unwrap();
    model
        .forward_t(&xs, false)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

fn close(a: &[Vec<f32>], b: &[Vec<f32>]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() <= 1e-4, "{x} vs {y}");
    }
}

#[test]
fn serve_answers_through_functions_scales_to_zero_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Instances stop after 300 ms idle.
    let (mut server, base) = serve(
        dir.path(),
        "[functions]\nreap_interval_ms = 50\n[models.digits-mlp]\nidle_ms = 300\nslo_p99_ms = 5000\n",
    );
    let rows: Vec<Vec<f32>> = (0..3)
        .map(|r| (0..64).map(|i| ((i + r * 7) % 17) as f32).collect())
        .collect();
    close(&infer(&base, &rows), &local(&rows));

    // Idle past its keep-alive: no instance left, so the next request starts one.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, page) = post(&format!("{base}/v2/repository/index"), "{}");
    assert!(page.contains("READY"), "{page}");
    close(&infer(&base, &rows[..1]), &local(&rows[..1]));
    let metrics = {
        let rest = base.strip_prefix("http://").unwrap();
        let mut s = std::net::TcpStream::connect(rest).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {rest}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).unwrap();
        page
    };
    let cold: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("cumulus_inference_cold_batches_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        cold >= 1.0,
        "the first batch after scale-to-zero was cold:\n{metrics}"
    );

    // Unknown model and a wrong shape are the client's errors, with an {"error"} body.
    let (status, body) = post(&format!("{base}/v2/models/nope/infer"), "{\"inputs\":[]}");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"error\""));
    let bad = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]});
    let (status, body) = post(
        &format!("{base}/v2/models/digits-mlp/infer"),
        &bad.to_string(),
    );
    assert_eq!(status, 400, "{body}");

    let child = server.0.take().unwrap();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = wait_bounded(child);
    assert!(
        out.status.success(),
        "serve exits cleanly on SIGTERM: {:?}",
        out.status
    );
}

/// A plan file as `cumulus partition --json` writes it, with the groups `(first, last, tier)`.
fn plan_file(path: &Path, groups: &[(usize, usize, u32)]) {
    let groups: Vec<serde_json::Value> = groups
        .iter()
        .map(|&(first, last, memory_mb)| {
            serde_json::json!({
                "first": first, "last": last, "first_name": "", "last_name": "",
                "memory_mb": memory_mb, "memory_bytes_needed": 0, "input_bytes": 0,
                "billed_ms": 0.0, "latency_ms": 0.0, "cost": 0.0
            })
        })
        .collect();
    let plan = serde_json::json!({"cost_per_request": 0.0, "latency_ms": 0.0, "groups": groups});
    std::fs::write(path, plan.to_string()).unwrap();
}

/// The first output of `model` for one request of `input` (FP32 or UINT32 data).
fn infer_one(base: &str, model: &str, input: &serde_json::Value) -> Vec<f32> {
    let body = serde_json::json!({ "inputs": [input] });
    let (status, answer) = post(
        &format!("{base}/v2/models/{model}/infer"),
        &body.to_string(),
    );
    assert_eq!(status, 200, "{model}: {answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn resnet18_and_the_transformer_under_a_plan_of_stages_answer_as_one_function() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("models");
    let mut config = String::from("[functions]\nreap_interval_ms = 50\n");
    // ResNet-18 (CIFAR-sized) in two stages, the transformer encoder in three.
    let cases = [("resnet", 2usize), ("transformer", 3)];
    // Small batches keep the gateway's start-up profile of each model short.
    let serving = "slo_p99_ms = 60000\nmax_batch_size = 2\n";
    let mut inputs = Vec::new();
    for (arch, stages) in cases {
        let cfg = cumulus_models::ModelConfig::default_for(arch).unwrap();
        let model = cumulus_models::Model::with_seed(&cfg, &Device::Cpu, 5).unwrap();
        // The same weights twice: one served whole, one under the plan.
        model.save(repo.join(format!("{arch}-whole"))).unwrap();
        model.save(repo.join(arch)).unwrap();
        let n = model.num_layers();
        let groups: Vec<(usize, usize, u32)> = (0..stages)
            .map(|k| (k * n / stages, (k + 1) * n / stages - 1, 1024))
            .collect();
        let plan = dir.path().join(format!("{arch}-plan.json"));
        plan_file(&plan, &groups);
        config.push_str(&format!(
            "[models.{arch}]\nplan = \"{}\"\n{serving}[models.{arch}-whole]\n{serving}",
            plan.display()
        ));
        let shape = cfg.input_shape(2);
        let n: usize = shape.iter().product();
        let input = if cfg.takes_ids() {
            let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7) % 11).collect();
            serde_json::json!({"name": "input", "shape": shape, "datatype": "UINT32", "data": ids})
        } else {
            let xs: Vec<f32> = (0..n)
                .map(|i| ((i * 13) % 29) as f32 / 29.0 - 0.5)
                .collect();
            serde_json::json!({"name": "input", "shape": shape, "datatype": "FP32", "data": xs})
        };
        inputs.push((arch, stages, input));
    }
    let (_server, base) = serve_models(&repo, dir.path(), &config);
    for (arch, stages, input) in &inputs {
        let whole = infer_one(&base, &format!("{arch}-whole"), input);
        let staged = infer_one(&base, arch, input);
        assert_eq!(whole.len(), staged.len(), "{arch}");
        let diff = whole
            .iter()
            .zip(&staged)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff <= 1e-5,
            "{arch} in {stages} stages differs from one function by {diff}"
        );
    }
    // Each stage ran in its own function: the per-stage latency histogram has every stage.
    let rest = base.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(rest).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {rest}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    for (arch, stages, _) in &inputs {
        for k in 0..*stages {
            assert!(
                page.lines().any(|l| l.contains("stage")
                    && l.contains(&format!("model=\"{arch}\""))
                    && l.contains(&format!("stage=\"{k}\""))),
                "no stage {k} of {arch} in /metrics:\n{page}"
            );
        }
    }
}
