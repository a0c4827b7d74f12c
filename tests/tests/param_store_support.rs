//! Shared helpers of the parameter-store process tests (included with `#[path]`, not a test).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `cumulus param-store` child process; killed on drop.
pub struct ShardProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when started with `--metrics`.
    pub metrics: Option<SocketAddr>,
}

impl Drop for ShardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts shard `i` of `n` on `listen` (port 0 for a fresh one) with data in `dir`, and waits
/// for its `listening on ADDR` line.
pub fn start_shard(dir: &Path, i: u32, n: u32, listen: &str) -> ShardProcess {
    start_shard_with(dir, i, n, listen, false)
}

/// As [`start_shard`]; with `metrics`, also serves Prometheus metrics on a free port.
pub fn start_shard_with(dir: &Path, i: u32, n: u32, listen: &str, metrics: bool) -> ShardProcess {
    let extra: &[&str] = if metrics {
        &["--metrics", "127.0.0.1:0"]
    } else {
        &[]
    };
    start_shard_args(dir, i, n, listen, extra)
}

fn shard_command(dir: &Path, i: u32, n: u32, listen: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(cumulus_e2e::cumulus_bin());
    cmd.args([
        "param-store",
        "--listen",
        listen,
        "--shard",
        &format!("{i}/{n}"),
    ])
    .arg("--data-dir")
    .arg(dir)
    .args(extra);
    cmd
}

/// Runs a shard that is expected to refuse to start: its exit status and stderr.
pub fn refused_shard(dir: &Path, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let out = shard_command(dir, 0, 1, "127.0.0.1:0", extra)
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("cumulus param-store runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// As [`start_shard`], with extra command-line flags (`--metrics ADDR` prints its line too).
pub fn start_shard_args(dir: &Path, i: u32, n: u32, listen: &str, extra: &[&str]) -> ShardProcess {
    let metrics = extra.contains(&"--metrics");
    let mut child = shard_command(dir, i, n, listen, extra)
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cumulus param-store starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("reading the shard's stdout");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the shard: {line:?}"))
        .parse()
        .expect("a socket address");
    let metrics = metrics.then(|| {
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reading the shard's stdout");
        line.trim()
            .strip_prefix("metrics on http://")
            .and_then(|r| r.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("unexpected metrics line from the shard: {line:?}"))
            .parse()
            .expect("a socket address")
    });
    ShardProcess {
        child,
        addr,
        metrics,
    }
}

/// `GET /metrics` over a plain HTTP/1.0 connection.
pub fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connecting to the metrics endpoint");
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("sending the request");
    let mut body = String::new();
    conn.read_to_string(&mut body)
        .expect("reading the response");
    body
}
