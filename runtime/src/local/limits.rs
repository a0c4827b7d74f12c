//! Memory and CPU limits of a local instance: a cgroup (v1 or v2) when the machine lets us create
//! one, else `RLIMIT_DATA`. The CPU share follows the memory tier as on AWS Lambda (1769 MB = 1
//! vCPU), enforced with CFS quota (`cpu.cfs_quota_us` / v2 `cpu.max`) over a 100 ms period.
//!
//! The child joins its cgroup itself, between fork and exec, by writing `0` to `cgroup.procs`
//! (both cgroup versions read `0` as "the writing process"), so it never runs unlimited.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::LimitMode;

/// CFS period used for the CPU quota, µs.
const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup layout the machine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupLayout {
    /// v1: one hierarchy per controller.
    V1 {
        memory: PathBuf,
        cpu: Option<PathBuf>,
    },
    /// v2: one unified hierarchy.
    V2 { root: PathBuf },
}

/// Finds a writable cgroup layout under `root`, if any.
pub(crate) fn detect(root: &Path) -> Option<CgroupLayout> {
    if root.join("cgroup.controllers").exists() {
        let controllers =
            std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory") {
            return Some(CgroupLayout::V2 {
                root: root.to_owned(),
            });
        }
        return None;
    }
    let memory = root.join("memory");
    if memory.join("memory.limit_in_bytes").exists() {
        let cpu = root.join("cpu");
        let cpu = cpu.join("cpu.cfs_quota_us").exists().then_some(cpu);
        return Some(CgroupLayout::V1 { memory, cpu });
    }
    None
}

/// Removes groups left by platforms that died without cleaning up (`cumulus.<pid>.<n>` whose
/// process is gone); groups still holding processes stay.
pub(crate) fn sweep_stale(layout: &CgroupLayout) {
    let roots: Vec<&Path> = match layout {
        CgroupLayout::V1 { memory, cpu } => [Some(memory.as_path()), cpu.as_deref()]
            .into_iter()
            .flatten()
            .collect(),
        CgroupLayout::V2 { root } => vec![root.as_path()],
    };
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("cumulus."))
                .and_then(|r| r.split('.').next())
            else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// Evidence of memory pressure read from a cgroup after its process ended.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OomEvidence {
    /// Processes the OOM killer killed in the group.
    pub oom_kills: u64,
    /// Times the limit was hit.
    pub limit_hits: u64,
}

/// One instance's cgroup directories; removed by [`Cgroup::remove`] (and on drop, best effort).
#[derive(Debug)]
pub(crate) struct Cgroup {
    v2: bool,
    memory_dir: PathBuf,
    cpu_dir: Option<PathBuf>,
    removed: bool,
}

static NEXT_GROUP: AtomicU64 = AtomicU64::new(0);

impl Cgroup {
    /// Creates the group(s) and writes the limits. `cpu_quota_us` = None: no CPU limit.
    pub(crate) fn create(
        layout: &CgroupLayout,
        memory_mb: u32,
        cpu_quota_us: Option<u64>,
    ) -> std::io::Result<Self> {
        let name = format!(
            "cumulus.{}.{}",
            std::process::id(),
            NEXT_GROUP.fetch_add(1, Ordering::Relaxed)
        );
        let bytes = u64::from(memory_mb) * 1024 * 1024;
        match layout {
            CgroupLayout::V1 { memory, cpu } => {
                let memory_dir = memory.join(&name);
                std::fs::create_dir(&memory_dir)?;
                let mut group = Cgroup {
                    v2: false,
                    memory_dir,
                    cpu_dir: None,
                    removed: false,
                };
                std::fs::write(
                    group.memory_dir.join("memory.limit_in_bytes"),
                    bytes.to_string(),
                )?;
                // Without swap accounting this file is absent; with it, forbid swapping past the limit.
                let memsw = group.memory_dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    let _ = std::fs::write(memsw, bytes.to_string());
                }
                if let (Some(cpu), Some(quota)) = (cpu, cpu_quota_us) {
                    let cpu_dir = cpu.join(&name);
                    std::fs::create_dir(&cpu_dir)?;
                    group.cpu_dir = Some(cpu_dir.clone());
                    std::fs::write(cpu_dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
                    std::fs::write(cpu_dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                }
                Ok(group)
            }
            CgroupLayout::V2 { root } => {
                let dir = root.join(&name);
                std::fs::create_dir(&dir)?;
                let group = Cgroup {
                    v2: true,
                    memory_dir: dir.clone(),
                    cpu_dir: None,
                    removed: false,
                };
                std::fs::write(dir.join("memory.max"), bytes.to_string())?;
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                if let Some(quota) = cpu_quota_us {
                    std::fs::write(dir.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}"))?;
                }
                Ok(group)
            }
        }
    }

    /// The `cgroup.procs` files the child writes itself into.
    pub(crate) fn procs_files(&self) -> Vec<CString> {
        [Some(&self.memory_dir), self.cpu_dir.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|d| {
                CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()
            })
            .collect()
    }

    /// Reads OOM counters (v1 `memory.oom_control` + `memory.failcnt`, v2 `memory.events`).
    pub(crate) fn oom_evidence(&self) -> OomEvidence {
        let read = |f: &str| std::fs::read_to_string(self.memory_dir.join(f)).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        if self.v2 {
            let events = read("memory.events");
            OomEvidence {
                oom_kills: field(&events, "oom_kill"),
                limit_hits: field(&events, "max"),
            }
        } else {
            OomEvidence {
                oom_kills: field(&read("memory.oom_control"), "oom_kill"),
                limit_hits: read("memory.failcnt").trim().parse().unwrap_or(0),
            }
        }
    }

    /// Removes the directories; a group can only go once its processes have exited, so retry briefly.
    pub(crate) async fn remove(mut self) {
        for _ in 0..50 {
            if self.try_remove() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!(group = %self.memory_dir.display(), "cgroup could not be removed");
        self.removed = true;
    }

    fn try_remove(&mut self) -> bool {
        let gone = |d: &Path| match std::fs::remove_dir(d) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        let mem = gone(&self.memory_dir);
        let cpu = self.cpu_dir.as_deref().is_none_or(gone);
        self.removed = mem && cpu;
        self.removed
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.try_remove();
        }
    }
}

/// The CFS quota for a memory tier, µs per 100 ms period; None when CPU is not limited.
pub(crate) fn cpu_quota_us(memory_mb: u32, mb_per_vcpu: u32) -> Option<u64> {
    (mb_per_vcpu > 0)
        .then(|| (CPU_PERIOD_US * u64::from(memory_mb) / u64::from(mb_per_vcpu)).max(1_000))
}

/// How one instance will actually be limited.
#[derive(Debug)]
pub(crate) enum AppliedLimits {
    Cgroup(Cgroup),
    Rlimit { bytes: u64 },
    None,
}

/// Chooses and prepares the limits of one instance per `mode`.
pub(crate) fn prepare(
    mode: LimitMode,
    layout: Option<&CgroupLayout>,
    memory_mb: u32,
    mb_per_vcpu: u32,
) -> std::io::Result<AppliedLimits> {
    let rlimit = AppliedLimits::Rlimit {
        bytes: u64::from(memory_mb) * 1024 * 1024,
    };
    let quota = cpu_quota_us(memory_mb, mb_per_vcpu);
    match (mode, layout) {
        (LimitMode::None, _) => Ok(AppliedLimits::None),
        (LimitMode::Rlimit, _) => Ok(rlimit),
        (LimitMode::Cgroup, Some(l)) => {
            Cgroup::create(l, memory_mb, quota).map(AppliedLimits::Cgroup)
        }
        (LimitMode::Cgroup, None) => {
            Err(std::io::Error::other("no writable cgroup hierarchy found"))
        }
        (LimitMode::Auto, Some(l)) => match Cgroup::create(l, memory_mb, quota) {
            Ok(g) => Ok(AppliedLimits::Cgroup(g)),
            Err(e) => {
                tracing::debug!(error = %e, "cgroup not available; using RLIMIT_DATA");
                Ok(rlimit)
            }
        },
        (LimitMode::Auto, None) => Ok(rlimit),
    }
}

/// Makes the child join `procs_files` and set `RLIMIT_DATA` between fork and exec.
// SAFETY-relevant item: the only unsafe code of the crate.
#[allow(unsafe_code)]
pub(crate) fn install_pre_exec(
    cmd: &mut tokio::process::Command,
    procs_files: Vec<CString>,
    rlimit_bytes: Option<u64>,
) {
    let join = move || -> std::io::Result<()> {
        for path in &procs_files {
            // Only async-signal-safe calls below: open/write/close/setrlimit on prepared data.
            // SAFETY: `path` is a valid NUL-terminated string owned by the closure.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: writes one byte from a static buffer to the fd we just opened.
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            let err = std::io::Error::last_os_error();
            // SAFETY: closes the fd we own.
            unsafe { libc::close(fd) };
            if n != 1 {
                return Err(err);
            }
        }
        if let Some(bytes) = rlimit_bytes {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            // SAFETY: setrlimit reads the struct we pass by pointer and affects only this process.
            if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &lim) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec; it allocates nothing and calls only
    // async-signal-safe functions (open, write, close, setrlimit), as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(join);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_share_follows_lambda() {
        assert_eq!(cpu_quota_us(1769, 1769), Some(100_000));
        assert_eq!(cpu_quota_us(3538, 1769), Some(200_000));
        assert_eq!(cpu_quota_us(128, 0), None);
        assert_eq!(cpu_quota_us(128, 1769), Some(7_235));
    }

    #[test]
    fn detects_nothing_in_an_empty_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(detect(dir.path()), None);
    }
}
