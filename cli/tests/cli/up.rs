//! `cumulus up` and its clients as a user runs them: the real binary on port 0 with a token in
//! its config, `cumulus submit --watch` of the digits example against it (worker functions are
//! real `cumulus fn` processes), `cumulus jobs list`, then SIGTERM and a clean exit.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::common::{LIMIT, cumulus, run_bounded, wait_bounded};

const TOKEN: &str = "up-cli-test-token";

/// Kills `up` if the test fails before it stops it.
struct Up(Option<Child>);

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

#[test]
fn up_serves_jobs_that_submit_watches_to_the_end_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cumulus.toml");
    std::fs::write(&config, format!("[auth]\ntokens = [\"{TOKEN}\"]\n")).unwrap();
    let mut up = Up(Some(
        cumulus()
            .args([
                "up",
                "--http",
                "127.0.0.1:0",
                "--serve-http",
                "127.0.0.1:0",
                "--serve-grpc",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&config)
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cumulus up starts"),
    ));
    let child = up.0.as_mut().expect("up is running");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut url = None;
    let mut store = None;
    while url.is_none() || store.is_none() {
        let line = lines_rx
            .recv_timeout(LIMIT)
            .expect("cumulus up prints its endpoints");
        if let Some(u) = line.strip_prefix("jobs ") {
            url = Some(u.to_string());
        } else if let Some(a) = line.strip_prefix("param-store ") {
            store = Some(a.to_string());
        }
    }
    let url = url.expect("the jobs line was read");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.ends_with("/v1/jobs"), "{url}");
    assert!(
        !url.ends_with(":0/v1/jobs"),
        "the printed URL shows the bound port: {url}"
    );
    assert!(
        store
            .expect("the store line was read")
            .starts_with("127.0.0.1:")
    );

    let job = examples().join("jobs/digits-mlp.toml");
    // Without the token the control plane refuses, and says why.
    let refused = run_bounded(cumulus().arg("submit").arg(&job).args(["--url", &url]));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("401"), "{stderr}");

    let watched = run_bounded(
        cumulus()
            .arg("submit")
            .arg(&job)
            .args(["--watch", "--url", &url])
            .env("CUMULUS_TOKEN", TOKEN),
    );
    let stdout = String::from_utf8_lossy(&watched.stdout);
    let stderr = String::from_utf8_lossy(&watched.stderr);
    assert!(watched.status.success(), "{stdout}\n{stderr}");
    let id = stdout.lines().next().expect("submit prints the id").trim();
    assert!(id.starts_with("digits-mlp-"), "{stdout}");
    assert!(stdout.contains(&format!("{id}: succeeded")), "{stdout}");
    assert!(!stderr.contains(TOKEN) && !stdout.contains(TOKEN));
    // Under `up`, a job without an `output` writes into the gateway's model repository.
    let model = dir.path().join("work/models").join(id);
    assert!(model.join("metrics.json").is_file());

    let listed = run_bounded(
        cumulus()
            .args(["jobs", "list", "--url", &url, "--token", TOKEN])
            .env_remove("CUMULUS_TOKEN"),
    );
    assert!(listed.status.success());
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(table.contains(id) && table.contains("succeeded"), "{table}");

    let child = up.0.take().expect("up is running");
    sigterm(&child);
    let out = wait_bounded(child);
    assert!(
        out.status.success(),
        "cumulus up exits cleanly on SIGTERM: {:?}",
        out.status
    );
}

/// A `cumulus up` on port 0 with `config` as its cumulus.toml, and the base URL it printed.
fn start_up(dir: &Path, config: &str, extra: &[&str]) -> (Up, String) {
    let file = dir.join("cumulus.toml");
    std::fs::write(&file, config).unwrap();
    let mut up = Up(Some(
        cumulus()
            .args([
                "up",
                "--http",
                "127.0.0.1:0",
                "--serve-http",
                "127.0.0.1:0",
                "--serve-grpc",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&file)
            .arg("--work-dir")
            .arg(dir.join("work"))
            .args(extra)
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cumulus up starts"),
    ));
    let child = up.0.as_mut().expect("up is running");
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(LIMIT)
            .expect("cumulus up prints its endpoints");
        if let Some(u) = line.strip_prefix("metrics ") {
            let base = u.trim_end_matches("/metrics").to_string();
            return (up, base);
        }
    }
}

/// One HTTP/1.1 request over a plain socket: (status, body).
fn http(method: &str, url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').expect("a URL with a path");
    let mut socket = std::net::TcpStream::connect(host).expect("the server is reachable");
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        socket,
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status line");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn job_view(base: &str, id: &str) -> serde_json::Value {
    let (status, body) = http("GET", &format!("{base}/v1/jobs/{id}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("a job is JSON")
}

/// Polls the job until `done` holds for it, within [`LIMIT`]; returns the view that did.
fn wait_job(base: &str, id: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let view = job_view(base, id);
        if done(&view) {
            return view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} did not get there: {view}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The digits example with `edits` applied and a name of its own, written into `dir`.
fn job(dir: &Path, name: &str, edits: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(examples().join("jobs/digits-mlp.toml")).unwrap();
    text = text.replace("name = \"digits-mlp\"", &format!("name = \"{name}\""));
    for (from, to) in edits {
        assert!(text.contains(from), "the example has no {from:?}");
        text = text.replace(from, to);
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn submit(base: &str, job: &Path) -> std::process::Output {
    run_bounded(cumulus().arg("submit").arg(job).args(["--url", base]))
}

fn submitted_id(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Invocations that got an instance so far, as `/metrics` counts them (cold + warm starts).
fn worker_starts(base: &str) -> u64 {
    let (status, page) = http("GET", &format!("{base}/metrics"));
    assert_eq!(status, 200);
    page.lines()
        .filter(|l| {
            (l.starts_with("cumulus_runtime_cold_starts_total")
                || l.starts_with("cumulus_runtime_warm_starts_total"))
                && l.contains("function=\"train-worker\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn two_jobs_share_up_one_with_8_bsp_workers_and_one_that_cannot_fit_is_refused_or_queued() {
    let dir = tempfile::tempdir().unwrap();
    // Room for 8 + 2 workers of 1769 MB (17 690 MB), not for 2 more beside them.
    let (_up, base) = start_up(
        dir.path(),
        "[functions]\ncapacity_mb = 20000\n",
        &["--max-running-jobs", "4"],
    );
    let eight = job(dir.path(), "eight", &[("count = 2", "count = 8")]);
    let two = job(dir.path(), "two", &[]);
    let watch = |file: &Path| {
        cumulus()
            .arg("submit")
            .arg(file)
            .args(["--watch", "--url", &base])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("submit starts")
    };
    let (a, b) = (watch(&eight), watch(&two));

    // 12 workers can never fit: refused at once, naming the limit.
    let twelve = job(dir.path(), "twelve", &[("count = 2", "count = 12")]);
    let refused = submit(&base, &twelve);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("422") && why.contains("functions.capacity_mb") && why.contains("21228 MB"),
        "{why}"
    );

    // Both have their workers before the next one comes.
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let (_, list) = http("GET", &format!("{base}/v1/jobs"));
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        let started = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["started"] == true)
            .count();
        if started == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // 2 more fit alone but not beside the running two: queued, saying why, then run.
    let later = job(dir.path(), "later", &[]);
    let later_id = submitted_id(&submit(&base, &later));
    let first = job_view(&base, &later_id);
    let others_running = |name: &str| {
        let (_, list) = http("GET", &format!("{base}/v1/jobs"));
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == name && j["state"] != "succeeded" && j["state"] != "failed")
    };
    if others_running("eight") && others_running("two") {
        assert_eq!(first["state"], "queued", "{first}");
        let phase = first["status"]["phase"].as_str().unwrap_or("");
        assert!(
            phase.contains("waiting for room") && phase.contains("MB"),
            "{first}"
        );
    }

    for child in [a, b] {
        let out = wait_bounded(child);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains(": succeeded"), "{stdout}");
        // The watcher said what the job was doing, not silence.
        assert!(
            stderr.contains("starting") && stderr.contains("round"),
            "{stderr}"
        );
    }
    let ended = wait_job(&base, &later_id, |v| {
        v["metrics"].is_object() || v["error"].is_string()
    });
    assert_eq!(ended["state"], "succeeded", "{ended}");
    assert!(ended["metrics"]["test_accuracy"].as_f64().unwrap() >= 0.95);

    // One /metrics for the whole control plane: the store's, the platform's and the jobs'.
    let metrics_page = http("GET", &format!("{base}/metrics")).1;
    for series in [
        "cumulus_param_store_pushes_total",
        "cumulus_runtime_invocations_total",
        "cumulus_trainer_jobs",
        "cumulus_trainer_steps_total",
    ] {
        assert!(
            metrics_page.contains(&format!("# HELP {series} ")),
            "/metrics describes {series}: {metrics_page}"
        );
    }
}

#[test]
fn a_cancel_and_a_sigterm_reach_workers_waiting_at_the_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let (mut up, base) = start_up(dir.path(), "", &[]);
    // One long invocation per worker: every wait is at the BSP barrier, never between
    // invocations, and the store's clock limit (300 s) is far beyond the bounds below.
    let endless = [
        ("count = 2", "count = 4\ntimeout_secs = 900"),
        (
            "steps_per_invocation = 25",
            "steps_per_invocation = 1000000",
        ),
        ("target_accuracy = 0.95", "target_accuracy = 1.0"),
        ("max_epochs = 40", "max_epochs = 100000"),
        ("max_wall_secs = 300", "max_wall_secs = 3600"),
    ];
    let training = |v: &serde_json::Value| {
        v["status"]["phase"]
            .as_str()
            .is_some_and(|p| p.starts_with("round"))
    };

    let id = submitted_id(&submit(&base, &job(dir.path(), "cancelled", &endless)));
    wait_job(&base, &id, training);
    let starts = worker_starts(&base);
    assert_eq!(starts, 4, "one invocation per worker");
    let cancelled = run_bounded(cumulus().args(["jobs", "cancel", &id, "--url", &base]));
    assert!(cancelled.status.success());
    // The bound is generous on purpose; without the store ending the barrier waits, the
    // workers would wait out their clock limit and their 900 s invocations.
    let asked = std::time::Instant::now();
    let ended = wait_job(&base, &id, |v| v["metrics"].is_object());
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(60),
        "{ended}"
    );
    assert_eq!(ended["state"], "cancelled", "{ended}");
    let model = dir.path().join("work/models").join(&id);
    assert!(model.join("model.safetensors").is_file() && model.join("metrics.json").is_file());
    assert_eq!(
        worker_starts(&base),
        starts,
        "no worker was invoked after the cancel"
    );

    let id = submitted_id(&submit(&base, &job(dir.path(), "interrupted", &endless)));
    wait_job(&base, &id, training);
    let child = up.0.take().expect("up is running");
    sigterm(&child);
    let signalled = std::time::Instant::now();
    let out = wait_bounded(child);
    assert!(
        out.status.success(),
        "cumulus up exits cleanly: {:?}",
        out.status
    );
    assert!(signalled.elapsed() < std::time::Duration::from_secs(60));
    let model = dir.path().join("work/models").join(&id);
    assert!(model.join("model.safetensors").is_file() && model.join("metrics.json").is_file());
}

#[test]
fn a_restarted_control_plane_never_reuses_a_job_id_and_its_new_job_trains() {
    let dir = tempfile::tempdir().unwrap();
    let job_file = job(dir.path(), "again", &[]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (mut up, base) = start_up(dir.path(), "", &[]);
        let id = submitted_id(&submit(&base, &job_file));
        let ended = wait_job(&base, &id, |v| {
            v["metrics"].is_object() || v["error"].is_string()
        });
        assert_eq!(ended["state"], "succeeded", "{ended}");
        assert!(ended["metrics"]["steps"].as_u64().unwrap() > 0, "{ended}");
        ids.push(id);
        let child = up.0.take().unwrap();
        sigterm(&child);
        assert!(wait_bounded(child).status.success());
    }
    assert_ne!(ids[0], ids[1], "the same work folder gave two jobs one id");
}
