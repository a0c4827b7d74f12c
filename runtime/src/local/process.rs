//! The local backend: each instance is a child process `cumulus fn <kind>`, limited in memory and
//! CPU, watched by a monitor task that reaps it, tells how it ended, and removes its cgroup.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::limits::{self, AppliedLimits, CgroupLayout};
use crate::config::{FunctionSpec, FunctionsConfig, LimitMode};
use crate::error::{InstanceExit, RuntimeError};

/// Lines of an instance's stderr kept to explain its failure.
const STDERR_TAIL_LINES: usize = 20;

/// Starts instances as local processes.
#[derive(Debug)]
pub(crate) struct LocalBackend {
    exe: PathBuf,
    mode: LimitMode,
    layout: Option<CgroupLayout>,
    mb_per_vcpu: u32,
    start_timeout: Duration,
    max_body_bytes: usize,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

/// A running (or just ended) instance process.
#[derive(Debug)]
pub(crate) struct LocalInstance {
    pub id: u64,
    pub addr: SocketAddr,
    pub invoke_url: String,
    exit: watch::Receiver<Option<InstanceExit>>,
    kill: Arc<Notify>,
}

impl LocalInstance {
    pub(crate) fn is_alive(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Asks the monitor to kill the process (idempotent).
    pub(crate) fn kill(&self) {
        self.kill.notify_one();
    }

    /// Waits up to `limit` for the process to end and says how it did.
    pub(crate) async fn exited(&self, limit: Duration) -> Option<InstanceExit> {
        let mut rx = self.exit.clone();
        let waited = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(exit)) => exit.clone(),
            _ => None,
        }
    }
}

impl Drop for LocalInstance {
    fn drop(&mut self) {
        // The last handle is gone: nobody can invoke it any more.
        self.kill.notify_one();
    }
}

impl LocalBackend {
    pub(crate) fn new(
        config: &FunctionsConfig,
        client: reqwest::Client,
    ) -> Result<Self, RuntimeError> {
        let exe = match &config.executable {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| RuntimeError::io("locating the current executable", e))?,
        };
        let layout = match config.limits {
            LimitMode::Auto | LimitMode::Cgroup => limits::detect(&config.cgroup_root),
            LimitMode::Rlimit | LimitMode::None => None,
        };
        if let Some(layout) = &layout {
            limits::sweep_stale(layout);
        }
        if config.limits == LimitMode::Cgroup && layout.is_none() {
            return Err(RuntimeError::InvalidConfig(format!(
                "functions.limits = \"cgroup\" but no writable memory cgroup under {}",
                config.cgroup_root.display()
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("cumulus-instances-")
            .tempdir()
            .map_err(|e| RuntimeError::io("creating the instances directory", e))?;
        Ok(Self {
            exe,
            mode: config.limits,
            layout,
            mb_per_vcpu: config.mb_per_vcpu,
            start_timeout: Duration::from_millis(config.start_timeout_ms),
            max_body_bytes: config.max_payload_bytes,
            dir,
            client,
        })
    }

    /// Spawns an instance and waits until it answers `/healthz`; returns it and the start latency.
    pub(crate) async fn start(
        &self,
        function: &str,
        spec: &FunctionSpec,
        id: u64,
    ) -> Result<(LocalInstance, Duration), RuntimeError> {
        let started = Instant::now();
        let failed = |reason: String| RuntimeError::StartFailed {
            function: function.to_owned(),
            reason,
        };
        let applied = limits::prepare(
            self.mode,
            self.layout.as_ref(),
            spec.memory_mb,
            self.mb_per_vcpu,
        )
        .map_err(|e| failed(format!("preparing limits: {e}")))?;
        let addr_file = self.dir.path().join(format!("instance-{id}.addr"));
        let kind = spec.kind.as_deref().unwrap_or(function);
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("fn")
            .arg(kind)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--concurrency")
            .arg(spec.concurrency.to_string())
            .arg("--max-body-bytes")
            .arg(self.max_body_bytes.to_string())
            .arg("--exit-with-parent")
            .env("CUMULUS_FUNCTION", function)
            .env("CUMULUS_MEMORY_MB", spec.memory_mb.to_string())
            .env_remove("PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Compute libraries size their thread pools from RAYON_NUM_THREADS; without it candle
        // asks num_cpus for the physical cores, which reads /proc/cpuinfo on every matmul (7% of
        // a loaded server core in perf). The instance's vCPU share, rounded up, is its size.
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            cmd.env(
                "RAYON_NUM_THREADS",
                instance_threads(spec.memory_mb, self.mb_per_vcpu).to_string(),
            );
        }
        match &applied {
            AppliedLimits::Cgroup(g) => limits::install_pre_exec(&mut cmd, g.procs_files(), None),
            AppliedLimits::Rlimit { bytes } => {
                limits::install_pre_exec(&mut cmd, Vec::new(), Some(*bytes))
            }
            AppliedLimits::None => {}
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| failed(format!("spawning {}: {e}", self.exe.display())))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_task = child.stderr.take().map(|err| {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(instance = id, "{line}");
                    let mut t = tail
                        .lock()
                        .expect("stderr tail lock is never poisoned: no panics while held");
                    if t.len() == STDERR_TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })
        });
        let (exit_tx, exit_rx) = watch::channel(None);
        let kill = Arc::new(Notify::new());
        let memory_mb = spec.memory_mb;
        tokio::spawn(monitor(
            child,
            applied,
            kill.clone(),
            exit_tx,
            stderr_task,
            tail.clone(),
            memory_mb,
        ));
        let instance = |addr: SocketAddr| LocalInstance {
            id,
            addr,
            invoke_url: format!("http://{addr}/invoke"),
            exit: exit_rx.clone(),
            kill: kill.clone(),
        };
        let tail_text = || {
            tail.lock()
                .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
                .unwrap_or_default()
        };
        let deadline = started + self.start_timeout;
        let mut exit_rx = exit_rx.clone();
        let mut addr: Option<SocketAddr> = None;
        loop {
            if let Some(exit) = exit_rx.borrow().clone() {
                return Err(failed(format!(
                    "instance {exit} before ready; stderr: {}",
                    tail_text()
                )));
            }
            if Instant::now() >= deadline {
                kill.notify_one();
                return Err(failed(format!(
                    "not ready within {:?}; stderr: {}",
                    self.start_timeout,
                    tail_text()
                )));
            }
            match addr {
                None => {
                    if let Ok(text) = tokio::fs::read_to_string(&addr_file).await {
                        addr = text.trim().parse().ok();
                        continue;
                    }
                }
                Some(a) => {
                    let url = format!("http://{a}/healthz");
                    if let Ok(r) = self
                        .client
                        .get(&url)
                        .timeout(Duration::from_secs(1))
                        .send()
                        .await
                        && r.status().is_success()
                    {
                        let _ = tokio::fs::remove_file(&addr_file).await;
                        return Ok((instance(a), started.elapsed()));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll_pause(started.elapsed())) => {}
                _ = exit_rx.changed() => {}
            }
        }
    }
}

/// How long to wait before looking for readiness again: every millisecond while a start is young
/// (the wait is part of the measured cold start), then less often.
fn poll_pause(elapsed: Duration) -> Duration {
    if elapsed < Duration::from_millis(200) {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(10)
    }
}

/// Owns the child: waits for it (or kills it on request), classifies its end, removes its cgroup.
async fn monitor(
    mut child: tokio::process::Child,
    applied: AppliedLimits,
    kill: Arc<Notify>,
    exit_tx: watch::Sender<Option<InstanceExit>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    memory_mb: u32,
) {
    let (status, stopped) = tokio::select! {
        s = child.wait() => (s, false),
        _ = kill.notified() => {
            let _ = child.start_kill();
            (child.wait().await, true)
        }
    };
    if let Some(task) = stderr_task {
        let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
    }
    let stderr = tail
        .lock()
        .map(|t| t.iter().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    let exit = classify(status.ok(), stopped, &applied, &stderr, memory_mb);
    tracing::debug!(?exit, "instance ended");
    if let AppliedLimits::Cgroup(group) = applied {
        group.remove().await;
    }
    let _ = exit_tx.send(Some(exit));
}

fn classify(
    status: Option<ExitStatus>,
    stopped: bool,
    applied: &AppliedLimits,
    stderr: &[String],
    limit_mb: u32,
) -> InstanceExit {
    let signal = status.and_then(|s| s.signal());
    let oom = match applied {
        AppliedLimits::Cgroup(g) => {
            let ev = g.oom_evidence();
            ev.oom_kills > 0 || (signal == Some(libc::SIGKILL) && ev.limit_hits > 0 && !stopped)
        }
        // Under RLIMIT_DATA an allocation fails and Rust's allocator aborts with this message.
        AppliedLimits::Rlimit { .. } => stderr.iter().any(|l| l.contains("memory allocation of")),
        AppliedLimits::None => false,
    };
    if oom {
        return InstanceExit::OutOfMemory { limit_mb };
    }
    if stopped {
        return InstanceExit::Stopped;
    }
    match (status.and_then(|s| s.code()), signal) {
        (Some(code), _) => InstanceExit::Code(code),
        (None, Some(sig)) => InstanceExit::Signal(sig),
        (None, None) => InstanceExit::Code(-1),
    }
}

/// Threads for an instance of `memory_mb`: its vCPU share rounded up, within the machine's
/// available parallelism (all of it when CPU is not limited).
fn instance_threads(memory_mb: u32, mb_per_vcpu: u32) -> usize {
    let machine = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if mb_per_vcpu == 0 {
        return machine;
    }
    (memory_mb.div_ceil(mb_per_vcpu) as usize).clamp(1, machine)
}
