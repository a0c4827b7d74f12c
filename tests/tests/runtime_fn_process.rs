//! `cumulus fn <kind>` as a process: binds where it is told (`--listen` + `--addr-file`, or `PORT`
//! as Knative sets it), answers `/healthz` and `/invoke`, refuses an unknown kind, and drains on
//! SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn wait_for_addr(file: &Path, child: &mut Child) -> SocketAddr {
    for _ in 0..2000 {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(addr) = text.trim().parse::<SocketAddr>()
        {
            return SocketAddr::from(([127, 0, 0, 1], addr.port()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("instance exited before writing its address: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("instance never wrote its address");
}

/// One HTTP/1.1 exchange; returns the status line and the body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let status = String::from_utf8_lossy(&out[..split])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    (status, out[split + 4..].to_vec())
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(ok.success());
    child.wait().expect("wait")
}

#[test]
fn serves_invoke_and_healthz_then_drains_on_sigterm() {
    let dir = tempfile_dir();
    let file = dir.join("addr");
    let mut child = Command::new(cumulus_e2e::cumulus_bin())
        .args([
            "fn",
            "builtin-echo",
            "--listen",
            "127.0.0.1:0",
            "--addr-file",
        ])
        .arg(&file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let addr = wait_for_addr(&file, &mut child);
    let (status, body) = http(addr, "GET", "/healthz", "", b"");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, b"ok");
    let headers =
        "x-cumulus-deadline-ms: 5000\r\nx-cumulus-memory-mb: 256\r\nx-cumulus-request-id: r-42\r\n";
    let (status, body) = http(addr, "POST", "/invoke", headers, br#"{"op":"info"}"#);
    assert!(status.contains("200"), "{status}");
    let info: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        (info["request_id"].as_str(), info["memory_mb"].as_u64()),
        (Some("r-42"), Some(256))
    );
    let (status, _) = http(
        addr,
        "POST",
        "/invoke",
        "x-cumulus-deadline-ms: soon\r\n",
        b"x",
    );
    assert!(
        status.contains("400"),
        "a malformed deadline is refused: {status}"
    );
    let exit = terminate(&mut child);
    assert!(exit.success(), "SIGTERM drains and exits 0: {exit}");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    assert!(
        stdout.is_empty(),
        "the instance prints nothing on stdout: {stdout:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn listens_on_port_from_env_as_knative() {
    let dir = tempfile_dir();
    let file = dir.join("addr");
    let mut child = Command::new(cumulus_e2e::cumulus_bin())
        .args(["fn", "builtin-echo", "--addr-file"])
        .arg(&file)
        .env("PORT", "0")
        .env_remove("CUMULUS_FN_LISTEN")
        .spawn()
        .expect("spawn");
    let written: SocketAddr = {
        let addr = wait_for_addr(&file, &mut child);
        let text = std::fs::read_to_string(&file).expect("addr file");
        assert!(
            text.starts_with("0.0.0.0:"),
            "PORT binds all interfaces: {text}"
        );
        addr
    };
    let (status, body) = http(written, "POST", "/invoke", "", b"knative");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, b"knative");
    assert!(terminate(&mut child).success());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_kind_is_refused_naming_the_known_ones() {
    let out = Command::new(cumulus_e2e::cumulus_bin())
        .args(["fn", "no-such-kind", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-kind") && err.contains("builtin-echo"),
        "{err}"
    );
}

/// A fresh directory under the system temp dir (the e2e crate keeps its dependencies small).
fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cumulus-fn-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
