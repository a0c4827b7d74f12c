//! Worker clocks of one job and the waits that enforce its synchronization mode.
//!
//! Each worker reports the clock it has reached; the table keeps the slowest active worker's clock
//! in a `watch` channel, so a pull for clock `c` under `ssp:k` simply waits for `min >= c - k`.
//! A worker that leaves (scale-in) stops holding the others back.

use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Result, StoreError};
use crate::layout::SyncMode;

/// Clocks of the workers of one job.
#[derive(Debug)]
pub struct ClockTable {
    job: String,
    sync: SyncMode,
    inner: std::sync::Mutex<Clocks>,
    min_tx: watch::Sender<u64>,
    /// The job was asked to stop: every wait ends at once, and clock answers say so (not
    /// persisted; a coordinator registering the job again clears it).
    stopping: watch::Sender<bool>,
}

#[derive(Debug, Clone)]
struct Clocks {
    clocks: Vec<u64>,
    left: Vec<bool>,
}

impl Clocks {
    fn min(&self) -> u64 {
        self.clocks
            .iter()
            .zip(&self.left)
            .filter(|(_, left)| !**left)
            .map(|(c, _)| *c)
            .min()
            // Everyone left: nobody holds anyone back.
            .unwrap_or(u64::MAX)
    }
}

/// A serializable copy of a clock table (snapshots).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ClockSnapshot {
    /// Clock of each worker.
    pub clocks: Vec<u64>,
    /// Workers that left.
    pub left: Vec<bool>,
}

impl ClockTable {
    /// A table with every worker at clock 0.
    pub fn new(job: &str, sync: SyncMode, workers: u32) -> Self {
        let n = workers as usize;
        let (min_tx, _) = watch::channel(0);
        let (stopping, _) = watch::channel(false);
        Self {
            stopping,
            job: job.to_owned(),
            sync,
            inner: std::sync::Mutex::new(Clocks {
                clocks: vec![0; n],
                left: vec![false; n],
            }),
            min_tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clocks> {
        // A panic while holding this lock cannot leave the vectors inconsistent (plain stores).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves a worker's clock forward (never back) or marks it as left; returns the new minimum.
    pub fn advance(&self, worker: u32, clock: u64, leave: bool) -> Result<u64> {
        let mut c = self.lock();
        let w = worker as usize;
        let Some(slot) = c.clocks.get_mut(w) else {
            drop(c);
            return Err(self.bad_worker(worker));
        };
        *slot = (*slot).max(clock);
        if leave && let Some(l) = c.left.get_mut(w) {
            *l = true;
        }
        let min = c.min();
        self.min_tx.send_if_modified(|m| {
            let changed = *m != min;
            *m = min;
            changed
        });
        Ok(min)
    }

    fn bad_worker(&self, worker: u32) -> StoreError {
        StoreError::invalid(format!(
            "job '{}': worker {worker} is out of range (the job has {} workers)",
            self.job,
            self.lock().clocks.len()
        ))
    }

    /// Checks that a worker id belongs to the job.
    pub fn check_worker(&self, worker: u32) -> Result<()> {
        if (worker as usize) < self.lock().clocks.len() {
            Ok(())
        } else {
            Err(self.bad_worker(worker))
        }
    }

    /// Asks the job to stop: waits in progress end with [`StoreError::JobStopping`], and so
    /// does every later one.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// The job runs again (registered anew by a coordinator starting over).
    pub fn resume(&self) {
        self.stopping.send_replace(false);
    }

    /// Whether the job was asked to stop.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// The slowest active worker's clock.
    pub fn min_clock(&self) -> u64 {
        *self.min_tx.borrow()
    }

    /// The fastest worker's clock.
    pub fn max_clock(&self) -> u64 {
        self.lock().clocks.iter().copied().max().unwrap_or(0)
    }

    /// Waits until `worker` may run `clock` under the job's synchronization mode, at most
    /// `max_wait`, or until `shutdown` turns true.
    pub async fn wait_for(
        &self,
        worker: u32,
        clock: u64,
        max_wait: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<u64> {
        self.check_worker(worker)?;
        let Some(required) = self.sync.required_min_clock(clock) else {
            return Ok(self.min_clock());
        };
        let mut rx = self.min_tx.subscribe();
        let wait = rx.wait_for(|&m| m >= required);
        let mut stopping = self.stopping.subscribe();
        let job = self.job.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|s| *s).await;
            StoreError::JobStopping(job)
        };
        tokio::select! {
            biased;
            e = stopped => Err(e),
            r = tokio::time::timeout(max_wait, wait) => match r {
                Ok(Ok(m)) => Ok(*m),
                // The sender lives as long as `self`: a closed channel means the job is gone.
                Ok(Err(_)) => Err(StoreError::ShuttingDown),
                Err(_) => Err(StoreError::ClockTimeout {
                    job: self.job.clone(),
                    worker,
                    clock,
                    min_clock: self.min_clock(),
                    waited_ms: u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX),
                }),
            },
            _ = shutdown.wait_for(|s| *s) => Err(StoreError::ShuttingDown),
        }
    }

    /// A copy for a snapshot.
    pub fn snapshot(&self) -> ClockSnapshot {
        let c = self.lock();
        ClockSnapshot {
            clocks: c.clocks.clone(),
            left: c.left.clone(),
        }
    }

    /// Restores clocks saved by [`ClockTable::snapshot`] (workers beyond the job's count are ignored).
    pub fn restore(&self, snap: &ClockSnapshot) {
        let mut c = self.lock();
        for (dst, src) in c.clocks.iter_mut().zip(&snap.clocks) {
            *dst = (*dst).max(*src);
        }
        for (dst, src) in c.left.iter_mut().zip(&snap.left) {
            *dst |= *src;
        }
        let min = c.min();
        self.min_tx.send_replace(min);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ssp_waits_for_the_slowest_worker() {
        let t = std::sync::Arc::new(ClockTable::new("j", SyncMode::Ssp(1), 2));
        let (_tx, rx) = watch::channel(false);
        t.advance(0, 3, false).unwrap();
        // Worker 0 pulling for clock 3 needs the slowest at 2.
        let t2 = t.clone();
        let waiter =
            tokio::spawn(async move { t2.wait_for(0, 3, Duration::from_secs(30), rx).await });
        tokio::task::yield_now().await;
        t.advance(1, 1, false).unwrap();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(t.advance(1, 2, false).unwrap(), 2);
        assert_eq!(waiter.await.unwrap().unwrap(), 2);
        assert!(t.advance(5, 1, false).is_err());
    }

    #[tokio::test]
    async fn stopping_ends_waits_at_once_and_resume_clears_it() {
        let t = std::sync::Arc::new(ClockTable::new("j", SyncMode::Bsp, 2));
        let (_tx, rx) = watch::channel(false);
        t.advance(0, 1, false).unwrap();
        let t2 = t.clone();
        let rx2 = rx.clone();
        // Worker 0 waits for worker 1, which never comes.
        let waiter =
            tokio::spawn(async move { t2.wait_for(0, 1, Duration::from_secs(3600), rx2).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        t.stop();
        assert!(t.is_stopping());
        let err = waiter.await.unwrap().expect_err("a stop ends the wait");
        assert!(
            matches!(err, StoreError::JobStopping(ref j) if j == "j"),
            "{err}"
        );
        // A later wait ends at once too.
        let again = t
            .wait_for(0, 1, Duration::from_secs(3600), rx.clone())
            .await;
        assert!(matches!(again, Err(StoreError::JobStopping(_))));
        t.resume();
        assert!(!t.is_stopping());
        // Nothing to wait for at clock 0.
        assert!(t.wait_for(1, 0, Duration::from_secs(1), rx).await.is_ok());
    }

    #[tokio::test]
    async fn leaving_releases_waiters() {
        let t = ClockTable::new("j", SyncMode::Bsp, 2);
        let (_tx, rx) = watch::channel(false);
        t.advance(0, 4, false).unwrap();
        t.advance(1, 0, true).unwrap();
        assert_eq!(
            t.wait_for(0, 4, Duration::from_secs(30), rx).await.unwrap(),
            4
        );
    }
}
