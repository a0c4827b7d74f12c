//! Confinement of jobs that come over the network: they read data and models, and write their
//! output, only under the folders the operator allows (`[storage]` of `cumulus.toml`), so a
//! job file can never make the control plane read `/etc/passwd` or write over a system file.
//!
//! Paths are resolved the way the file system will: relative ones against the server's current
//! folder, `..` and symbolic links followed (for a path that does not exist yet, from its
//! nearest existing ancestor), and the result must lie inside an allowed root. `cumulus train`,
//! run by a local user on their own files, is not confined.

use std::path::{Component, Path, PathBuf};

use crate::dataset::{self, BUILTIN_DIGITS};
use crate::job::{JobSpec, ModelSource};

/// The folders a confined job may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    /// Where data sources and `[model] from` folders may be read.
    pub read_roots: Vec<PathBuf>,
    /// Where outputs may be written.
    pub write_roots: Vec<PathBuf>,
}

/// Resolves `path` as the file system would, following `..` and symbolic links, also when its
/// last components do not exist yet.
fn resolve(path: &Path) -> Result<PathBuf, String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("the server's current folder: {e}"))?
            .join(path)
    };
    // The longest existing prefix, canonicalized; the rest appended as plain names.
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(real) => {
                let mut out = real;
                for name in rest.iter().rev() {
                    out.push(name);
                }
                return Ok(out);
            }
            Err(_) => {
                let name = existing
                    .file_name()
                    .map(|n| n.to_os_string())
                    .ok_or_else(|| format!("{} cannot be resolved", path.display()))?;
                rest.push(name);
                if !existing.pop() {
                    return Err(format!("{} cannot be resolved", path.display()));
                }
            }
        }
    }
}

fn inside(path: &Path, roots: &[PathBuf]) -> bool {
    roots
        .iter()
        .filter_map(|r| r.canonicalize().ok())
        .any(|root| path.starts_with(&root))
}

impl Confinement {
    fn check(&self, what: &str, path: &Path, roots: &[PathBuf]) -> Result<(), String> {
        if path.components().any(|c| matches!(c, Component::ParentDir)) && !path.is_absolute() {
            // Resolved below all the same; this only makes the message clearer.
            tracing::debug!(path = %path.display(), "relative path with ..");
        }
        let resolved = resolve(path)?;
        if inside(&resolved, roots) {
            return Ok(());
        }
        let allowed: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        Err(format!(
            "{what} {} resolves to {}, outside the folders this control plane allows ({}; [storage] in cumulus.toml)",
            path.display(),
            resolved.display(),
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            }
        ))
    }

    /// Refuses a job that would read or write outside the allowed folders; the message names
    /// the key, where the path leads, and what is allowed.
    pub fn check_job(&self, job: &JobSpec) -> Result<(), String> {
        if job.data.source != BUILTIN_DIGITS {
            let path = dataset::source_path(&job.data.source).map_err(|e| e.to_string())?;
            self.check("data.source", &path, &self.read_roots)?;
        }
        if let ModelSource::Folder(dir) = &job.model {
            self.check("model.from", dir, &self.read_roots)?;
        }
        if let Some(out) = &job.output {
            self.check("output", out, &self.write_roots)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_links_out_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("data")).unwrap();
        std::fs::write(root.path().join("data/ok.csv"), "a\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), root.path().join("data/link")).unwrap();
        let c = Confinement {
            read_roots: vec![root.path().join("data")],
            write_roots: vec![root.path().join("out")],
        };
        let ok = root.path().join("data/ok.csv");
        assert!(c.check("data.source", &ok, &c.read_roots).is_ok());
        let up = root.path().join("data/../../etc/passwd");
        let err = c.check("data.source", &up, &c.read_roots).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        assert!(
            c.check("data.source", Path::new("/etc/passwd"), &c.read_roots)
                .is_err()
        );
        #[cfg(unix)]
        assert!(
            c.check(
                "data.source",
                &root.path().join("data/link/x.csv"),
                &c.read_roots
            )
            .is_err()
        );
        // The write root need not exist yet; a new folder below it is fine, one beside it not.
        std::fs::create_dir(root.path().join("out")).unwrap();
        assert!(
            c.check("output", &root.path().join("out/new/model"), &c.write_roots)
                .is_ok()
        );
        assert!(
            c.check("output", &root.path().join("elsewhere"), &c.write_roots)
                .is_err()
        );
    }
}
