//! CPU time of a process tree from `/proc`: the server's pid, every live descendant (found through
//! the `ppid` field of `/proc/*/stat`), and the descendants that already exited and were reaped
//! (their time is in their parent's `cutime`/`cstime`).
//!
//! Summing `utime + stime + cutime + cstime` over the live tree counts each process once: a live
//! one by its own times, a reaped one inside its parent's children times, which the kernel folds
//! into the grandparent's when the parent is reaped in turn. What escapes is a descendant that was
//! re-parented away (a daemon that double-forks to init) or one that exited and was never reaped.
//!
//! ```no_run
//! use cumulus_inference::loadgen::cpu::tree_cpu;
//! let before = tree_cpu(std::process::id())?;
//! // ... the run ...
//! let after = tree_cpu(std::process::id())?;
//! println!("{:.1} CPU-ms", after.cpu_ms() - before.cpu_ms());
//! # Ok::<(), cumulus_inference::loadgen::LoadgenError>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{LoadgenError, Result};

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, which the kernel fixes
/// at 100 for user space on every architecture Rust targets, whatever `CONFIG_HZ` is).
pub const USER_HZ: u64 = 100;

/// The fields of one `/proc/<pid>/stat` line this module uses (times in clock ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
}

impl ProcStat {
    /// Parse a stat line. The command name (field 2) may hold spaces and parentheses, so the
    /// fields are counted from the *last* `)`.
    pub fn parse(line: &str) -> Option<Self> {
        let pid = line.split_once(' ')?.0.parse().ok()?;
        let rest = &line[line.rfind(')')? + 1..];
        // After the name: state(3) ppid(4) pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime(14) stime(15) cutime(16) cstime(17).
        let fields: Vec<&str> = rest.split_whitespace().take(15).collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        Some(Self {
            pid,
            ppid: u32::try_from(field(4)?).ok()?,
            utime: field(14)?,
            stime: field(15)?,
            // Children times are signed in the kernel's format; a negative one never happens.
            cutime: fields.get(13)?.parse::<i64>().ok()?.max(0) as u64,
            cstime: fields.get(14)?.parse::<i64>().ok()?.max(0) as u64,
        })
    }

    /// Own and reaped-children ticks.
    pub fn total_ticks(&self) -> u64 {
        self.utime + self.stime + self.cutime + self.cstime
    }
}

/// CPU time of a process tree at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeCpu {
    /// Clock ticks ([`USER_HZ`] per second) of the tree, reaped children included.
    pub ticks: u64,
    /// Live processes in the tree, the root included.
    pub processes: usize,
}

impl TreeCpu {
    pub fn cpu_ms(&self) -> f64 {
        self.ticks as f64 * 1000.0 / USER_HZ as f64
    }
}

fn read_stat(path: &Path) -> Result<ProcStat> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadgenError::Proc {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    ProcStat::parse(&text).ok_or_else(|| LoadgenError::Proc {
        path: path.to_path_buf(),
        reason: "not a /proc stat line".to_string(),
    })
}

/// Every process's stat, read from `proc_root` (normally `/proc`). Processes that exit while the
/// directory is walked are skipped.
fn all_stats(proc_root: &Path) -> Result<Vec<ProcStat>> {
    let dir = std::fs::read_dir(proc_root).map_err(|e| LoadgenError::Proc {
        path: proc_root.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.bytes().all(|b| b.is_ascii_digit())
            && let Ok(stat) = read_stat(&entry.path().join("stat"))
        {
            out.push(stat);
        }
    }
    Ok(out)
}

/// The CPU time of `root` and its descendants, from `/proc`.
pub fn tree_cpu(root: u32) -> Result<TreeCpu> {
    tree_cpu_in(Path::new("/proc"), root)
}

/// [`tree_cpu`] over another proc root (tests point it at a fixture).
pub fn tree_cpu_in(proc_root: &Path, root: u32) -> Result<TreeCpu> {
    // The root must exist: a missing server is an error, not zero CPU.
    let root_stat = read_stat(&PathBuf::from(proc_root).join(root.to_string()).join("stat"))?;
    let stats = all_stats(proc_root)?;
    let mut children: HashMap<u32, Vec<&ProcStat>> = HashMap::new();
    for s in &stats {
        children.entry(s.ppid).or_default().push(s);
    }
    let (mut ticks, mut processes) = (root_stat.total_ticks(), 1);
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for child in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            // A pid is its own parent only for pid 0; guard anyway against a cycle.
            if child.pid != root && child.pid != pid {
                ticks += child.total_ticks();
                processes += 1;
                stack.push(child.pid);
            }
        }
    }
    Ok(TreeCpu { ticks, processes })
}

/// This process's own CPU time (the load generator's cost), in milliseconds.
pub fn self_cpu_ms() -> Result<f64> {
    let stat = read_stat(Path::new("/proc/self/stat"))?;
    Ok((stat.utime + stat.stime) as f64 * 1000.0 / USER_HZ as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_line(pid: u32, comm: &str, ppid: u32, times: [i64; 4]) -> String {
        format!(
            "{pid} ({comm}) S {ppid} 1 1 0 -1 4194560 100 0 0 0 {} {} {} {} 20 0 1 0 100 1000 10",
            times[0], times[1], times[2], times[3]
        )
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_parses() {
        let s = ProcStat::parse(&stat_line(42, "we (ird) name", 7, [11, 22, 33, 44])).unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 42,
                ppid: 7,
                utime: 11,
                stime: 22,
                cutime: 33,
                cstime: 44
            }
        );
        assert_eq!(s.total_ticks(), 110);
        assert!(ProcStat::parse("garbage").is_none());
        assert!(ProcStat::parse("1 (x) S").is_none());
    }

    #[test]
    fn the_tree_sums_descendants_and_reaped_children_but_not_others() {
        let dir = tempfile::tempdir().unwrap();
        let write = |pid: u32, ppid: u32, times: [i64; 4]| {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("stat"), stat_line(pid, "p", ppid, times)).unwrap();
        };
        write(1, 0, [1000, 1000, 0, 0]); // init: not in the tree
        write(10, 1, [5, 5, 100, 0]); // root, 100 ticks of reaped children
        write(11, 10, [20, 0, 0, 0]); // child
        write(12, 11, [0, 7, 0, 3]); // grandchild
        write(13, 1, [999, 0, 0, 0]); // unrelated
        std::fs::create_dir_all(dir.path().join("self")).unwrap(); // non-numeric: skipped
        let cpu = tree_cpu_in(dir.path(), 10).unwrap();
        assert_eq!(cpu.ticks, 10 + 100 + 20 + 10);
        assert_eq!(cpu.processes, 3);
        assert!((cpu.cpu_ms() - 1400.0).abs() < 1e-9);
        assert!(matches!(
            tree_cpu_in(dir.path(), 99),
            Err(LoadgenError::Proc { .. })
        ));
    }

    /// Burn CPU in this thread until `/proc` shows at least `ticks` more for `pid`'s tree (bounded:
    /// at most a few hundred million iterations).
    fn burn_until(pid: u32, from: u64, ticks: u64) -> u64 {
        let mut x = 0u64;
        for round in 0..4000 {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i ^ round);
            }
            std::hint::black_box(x);
            let now = tree_cpu(pid).unwrap().ticks;
            if now >= from + ticks {
                return now;
            }
        }
        panic!("400M iterations did not show {ticks} ticks");
    }

    #[test]
    fn the_test_process_tree_is_read_with_its_children() {
        let me = std::process::id();
        let before = tree_cpu(me).unwrap();
        assert!(before.processes >= 1);
        // This process's own CPU shows up.
        let after = burn_until(me, before.ticks, 2);
        assert!(after >= before.ticks + 2);

        // A live child is part of the tree; once it exits and is reaped, its CPU stays counted
        // (through cutime) rather than vanishing.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec sleep 30",
            ])
            .spawn()
            .expect("sh runs");
        let with_child = tree_cpu(me).unwrap();
        assert!(with_child.processes > before.processes, "{with_child:?}");
        // Wait (bounded) until the child's busy loop is visible, then end and reap it.
        let child_busy = (0..600).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let stat = read_stat(&PathBuf::from(format!("/proc/{}/stat", child.id()))).unwrap();
            stat.utime + stat.stime >= 3
        });
        let live = tree_cpu(me).unwrap().ticks;
        child.kill().unwrap();
        child.wait().unwrap();
        let reaped = tree_cpu(me).unwrap().ticks;
        assert!(child_busy, "the child's loop never showed 3 ticks");
        assert!(
            reaped >= live,
            "reaped {reaped} < live {live}: lost the child"
        );
        assert!(self_cpu_ms().unwrap() > 0.0);
    }
}
