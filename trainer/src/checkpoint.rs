//! Periodic checkpoints of a running job (`checkpoint_every_steps` in the job file).
//!
//! A checkpoint is a model folder, the same as the job's final output (`config.json` and
//! `model.safetensors`, loadable with `Model::load`, servable, and usable as `[model] from = ...`
//! to fine-tune or resume), written to `<output>/checkpoints/step-<N>/` where `N` is the global
//! step count (local steps of all workers together, `steps` in `metrics.json`) at the moment it was
//! taken.
//!
//! - **When.** The coordinator checkpoints at round boundaries, where it has just pulled the whole
//!   model from the parameter store to evaluate it: at the first boundary at or past each multiple
//!   of the interval. A round is one report of every active worker, so `N` may overshoot the
//!   multiple by up to a round's steps.
//! - **Atomic.** The folder is written under a hidden temporary name (`.step-<N>.tmp`) and renamed
//!   into place, so a crash leaves either the whole checkpoint or none (a leftover temporary folder
//!   is removed by the next checkpoint).
//! - **Bounded.** Only the newest [`KEEP_CHECKPOINTS`] remain; older ones are deleted after a new
//!   one is in place. The checkpoints of an earlier run into the same output folder are removed
//!   when the job starts, since the run replaces that folder's model too.
//!
//! ```
//! use cumulus_trainer::checkpoint::Checkpoints;
//!
//! let dir = tempfile::tempdir()?;
//! let mut ckpt = Checkpoints::new(dir.path(), 100);
//! assert!(!ckpt.due(99));
//! assert!(ckpt.due(130));
//! ckpt.advance(130);
//! assert!(!ckpt.due(199));
//! assert!(ckpt.due(200));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use cumulus_models::Model;

use crate::TrainerError;

/// How many checkpoints a job keeps: enough to step back past a bad stretch of training without
/// letting a long job fill the disk.
pub const KEEP_CHECKPOINTS: usize = 3;
/// The folder under the job's output that holds the checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

const PREFIX: &str = "step-";

/// The checkpoint schedule and folder of one job.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    every: u64,
    next_at: u64,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TrainerError + '_ {
    move |source| TrainerError::Checkpoint {
        path: path.to_path_buf(),
        source,
    }
}

impl Checkpoints {
    /// Checkpoints every `every` global steps under `<output>/checkpoints`; `every = 0` never.
    pub fn new(output: &Path, every: u64) -> Self {
        Self {
            dir: output.join(CHECKPOINTS_DIR),
            every,
            next_at: every,
        }
    }

    /// The folder that holds the `step-<N>` checkpoints.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the checkpoints an earlier run left in this output folder.
    pub fn clear(&self) -> Result<(), TrainerError> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&self.dir)(e)),
            _ => Ok(()),
        }
    }

    /// Whether a checkpoint is due at `steps` global steps.
    pub fn due(&self, steps: u64) -> bool {
        self.every > 0 && steps >= self.next_at
    }

    /// Moves the schedule past `steps`: the next checkpoint is due at the next multiple.
    pub fn advance(&mut self, steps: u64) {
        if let Some(done) = steps.checked_div(self.every) {
            self.next_at = (done + 1) * self.every;
        }
    }

    /// Writes `model` as the checkpoint of `steps` (atomically), keeps the newest
    /// [`KEEP_CHECKPOINTS`] and advances the schedule. Returns the checkpoint's folder.
    pub fn write(&mut self, model: &Model, steps: u64) -> Result<PathBuf, TrainerError> {
        std::fs::create_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        let name = format!("{PREFIX}{steps}");
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let target = self.dir.join(&name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_error(&tmp))?;
        }
        model.save(&tmp)?;
        if target.exists() {
            // Only a rerun into the same folder can get here; the new one replaces it.
            std::fs::remove_dir_all(&target).map_err(io_error(&target))?;
        }
        std::fs::rename(&tmp, &target).map_err(io_error(&target))?;
        self.advance(steps);
        self.prune()?;
        Ok(target)
    }

    /// The checkpoints on disk, oldest first, as `(steps, folder)`.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, TrainerError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.dir)(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&self.dir))?;
            let name = entry.file_name();
            let steps = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(steps) = steps
                && entry.path().is_dir()
            {
                found.push((steps, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Deletes all but the newest [`KEEP_CHECKPOINTS`] checkpoints and any leftover temporary
    /// folder of an interrupted write.
    fn prune(&self) -> Result<(), TrainerError> {
        let all = self.list()?;
        let excess = all.len().saturating_sub(KEEP_CHECKPOINTS);
        for (_, dir) in &all[..excess] {
            std::fs::remove_dir_all(dir).map_err(io_error(dir))?;
        }
        for entry in std::fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let path = entry.map_err(io_error(&self.dir))?.path();
            let leftover = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".step-") && n.ends_with(".tmp"));
            if leftover {
                std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use cumulus_models::ModelConfig;

    use super::*;

    fn small_model(seed: u64) -> Model {
        let cfg = ModelConfig::default_for("logreg").expect("logreg has a default");
        Model::with_seed(&cfg, &Device::Cpu, seed).expect("a logreg builds")
    }

    #[test]
    fn keeps_the_newest_three_and_each_loads() {
        let out = tempfile::tempdir().unwrap();
        let mut ckpt = Checkpoints::new(out.path(), 10);
        // A leftover of a crashed write is not a checkpoint and is cleaned up.
        std::fs::create_dir_all(ckpt.dir().join(".step-5.tmp")).unwrap();
        let mut written = Vec::new();
        for steps in [10, 24, 30, 47, 50] {
            assert!(ckpt.due(steps), "due at {steps}");
            written.push(ckpt.write(&small_model(steps), steps).unwrap());
            assert!(!ckpt.due(steps));
        }
        let left: Vec<u64> = ckpt.list().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(left, vec![30, 47, 50]);
        assert!(!ckpt.dir().join(".step-5.tmp").exists());
        let loaded = Model::load(&written[4], &Device::Cpu).unwrap();
        let saved = small_model(50);
        for (name, var) in saved.named_vars(true) {
            let a = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let var = loaded.var(&name).unwrap();
            let b = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(a, b, "{name}");
        }
    }

    #[test]
    fn the_schedule_follows_multiples_and_zero_turns_it_off() {
        let out = tempfile::tempdir().unwrap();
        let mut ckpt = Checkpoints::new(out.path(), 25);
        assert!(!ckpt.due(24));
        ckpt.advance(61);
        assert!(!ckpt.due(74));
        assert!(ckpt.due(75));
        let off = Checkpoints::new(out.path(), 0);
        assert!(!off.due(u64::MAX));
    }

    #[test]
    fn clear_removes_an_earlier_runs_checkpoints() {
        let out = tempfile::tempdir().unwrap();
        let mut ckpt = Checkpoints::new(out.path(), 1);
        ckpt.write(&small_model(0), 3).unwrap();
        ckpt.clear().unwrap();
        assert!(ckpt.list().unwrap().is_empty());
        // Clearing what is not there is fine.
        ckpt.clear().unwrap();
    }
}
