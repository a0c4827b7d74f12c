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
    let mut child = Command::new(cumulus_e2e::cumulus_bin())
        .args([
            "param-store",
            "--listen",
            listen,
            "--shard",
            &format!("{i}/{n}"),
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cumulus param-store starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading the shard's stdout");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the shard: {line:?}"))
        .parse()
        .expect("a socket address");
    ShardProcess { child, addr }
}
