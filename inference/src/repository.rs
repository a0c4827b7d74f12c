//! The model repository: a folder of model folders (`config.json` + `model.safetensors`, the
//! foundation's format), as Triton's `model_repository` extension sees it.
//!
//! Names are checked before they touch the file system, and a folder must resolve (symbolic
//! links followed) to a place inside the repository: no name ever reaches a path outside it.
//! A folder that cannot be read is reported with its reason, never fatal.

use std::path::{Path, PathBuf};

use cumulus_models::folder::{CONFIG_FILE, FolderConfig};

/// Why a model folder cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepositoryError {
    #[error("'{0}' is not a valid model name: use 1-128 of [A-Za-z0-9_.-], not starting with '.'")]
    BadName(String),
    #[error("no model '{0}' in the repository")]
    NotFound(String),
    #[error("model '{0}' resolves outside the repository")]
    Escapes(String),
    #[error("model '{name}': {reason}")]
    Unreadable { name: String, reason: String },
}

/// A model folder found by [`Repository::scan`].
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    pub config: Result<FolderConfig, String>,
}

/// The repository at one folder.
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
}

/// Whether `name` may name a model: 1-128 of `[A-Za-z0-9_.-]`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

impl Repository {
    /// The repository at `root`, which must be a readable folder.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, String> {
        let root = root.as_ref();
        let root = root
            .canonicalize()
            .map_err(|e| format!("model repository {}: {e}", root.display()))?;
        if !root.is_dir() {
            return Err(format!(
                "model repository {} is not a folder",
                root.display()
            ));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of model `name`, checked to be inside the repository.
    pub fn folder(&self, name: &str) -> Result<PathBuf, RepositoryError> {
        if !valid_name(name) {
            return Err(RepositoryError::BadName(name.to_string()));
        }
        let path = self.root.join(name);
        let resolved = match path.canonicalize() {
            Ok(p) => p,
            Err(_) => return Err(RepositoryError::NotFound(name.to_string())),
        };
        if !resolved.starts_with(&self.root) {
            return Err(RepositoryError::Escapes(name.to_string()));
        }
        if !resolved.is_dir() {
            return Err(RepositoryError::NotFound(name.to_string()));
        }
        Ok(resolved)
    }

    /// The folder and configuration of model `name`.
    pub fn read(&self, name: &str) -> Result<(PathBuf, FolderConfig), RepositoryError> {
        let dir = self.folder(name)?;
        let config = FolderConfig::read(&dir).map_err(|e| RepositoryError::Unreadable {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        if !dir.join(cumulus_models::folder::WEIGHTS_FILE).is_file() {
            return Err(RepositoryError::Unreadable {
                name: name.to_string(),
                reason: format!("no {}", cumulus_models::folder::WEIGHTS_FILE),
            });
        }
        Ok((dir, config))
    }

    /// Every model folder (a sub-folder with a `config.json`, or any sub-folder with a valid
    /// name), sorted by name, each with its configuration or why it cannot be read.
    pub fn scan(&self) -> Vec<Found> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut found: Vec<Found> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .map(|name| {
                let config = if !valid_name(&name) {
                    Err(RepositoryError::BadName(name.clone()).to_string())
                } else if !self.root.join(&name).join(CONFIG_FILE).is_file() {
                    Err(format!("no {CONFIG_FILE}"))
                } else {
                    self.read(&name).map(|(_, c)| c).map_err(|e| e.to_string())
                };
                Found { name, config }
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_leave_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ok")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        assert!(repo.folder("ok").is_ok());
        for bad in ["", "..", "../x", "a/b", ".hidden", "x\0y", &"n".repeat(129)] {
            assert!(
                matches!(repo.folder(bad), Err(RepositoryError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            repo.folder("missing"),
            Err(RepositoryError::NotFound(_))
        ));
        #[cfg(unix)]
        assert!(matches!(
            repo.folder("link"),
            Err(RepositoryError::Escapes(_))
        ));
    }

    #[test]
    fn a_bad_folder_is_reported_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        let cfg = cumulus_models::ModelConfig::default_for("logreg").unwrap();
        cumulus_models::Model::new(&cfg, &candle_core::Device::Cpu)
            .unwrap()
            .save(&good)
            .unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let broken = dir.path().join("broken");
        std::fs::create_dir(&broken).unwrap();
        std::fs::write(broken.join(CONFIG_FILE), "{not json").unwrap();
        let found = Repository::open(dir.path()).unwrap().scan();
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["broken", "empty", "good"]);
        assert!(found[2].config.is_ok());
        assert!(
            found[1]
                .config
                .as_ref()
                .unwrap_err()
                .contains("config.json")
        );
        assert!(found[0].config.is_err());
    }
}
