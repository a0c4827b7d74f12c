//! `cumulus up` and its clients as a user runs them: the real binary on port 0 with a token in
//! its config, `cumulus submit --watch` of the digits example against it (worker functions are
//! real `cumulus fn` processes), `cumulus jobs list`, then SIGTERM and a clean exit.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

mod common;

use common::{LIMIT, cumulus, run_bounded, wait_bounded};

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
            .args(["up", "--http", "127.0.0.1:0", "--config"])
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
    let model = dir.path().join("work/jobs").join(id).join("model");
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
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let out = wait_bounded(child);
    assert!(
        out.status.success(),
        "cumulus up exits cleanly on SIGTERM: {:?}",
        out.status
    );
}
