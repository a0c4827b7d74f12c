//! One chunk of a tensor: its values and a bounded, version-sorted log of recent changes, so that
//! "what changed since version v" costs what changed rather than the chunk's size.

use cumulus_proto::paramstore::v1 as pb;

/// Values of one chunk and its recent changes.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Tensor index in the layout.
    pub tensor: u32,
    /// Chunk index in the tensor.
    pub index: u32,
    /// Flat offset of the first value.
    pub start: u64,
    /// Values.
    pub values: Vec<f32>,
    /// Recent changes as (version, offset), sorted by version: a pull "since v" with `v >= log_floor`
    /// reads only these, so a sparse pull costs what changed, not the chunk's size. Callers
    /// further behind get the whole chunk (a superset is always a correct answer).
    pub log: Vec<(u64, u32)>,
    /// Every change dropped from `log` has a version at or below this.
    pub log_floor: u64,
}

impl Chunk {
    /// Longest change log before its older half is dropped (an eighth of the chunk).
    pub(crate) fn log_limit(&self) -> usize {
        (self.values.len() / 8).max(64)
    }

    pub(crate) fn log_change(&mut self, version: u64, offset: usize) {
        // Kept sorted by version, so a pull finds its start by binary search. Versions arrive in
        // order except among pushes applied concurrently, which insert a little way back.
        if self.log.last().is_none_or(|&(v, _)| v <= version) {
            self.log.push((version, offset as u32));
        } else {
            let at = self.log.partition_point(|&(v, _)| v <= version);
            self.log.insert(at, (version, offset as u32));
        }
        if self.log.len() > self.log_limit() {
            let half = self.log.len() / 2;
            let dropped = self.log.drain(..half).map(|(v, _)| v).max().unwrap_or(0);
            self.log_floor = self.log_floor.max(dropped);
        }
    }

    /// Forgets the log (after a change to much of the chunk): pulls from before `version` get the
    /// whole chunk instead.
    pub(crate) fn reset_log(&mut self, version: u64) {
        let dropped = self.log.iter().map(|(v, _)| *v).max().unwrap_or(0);
        self.log.clear();
        self.log_floor = self.log_floor.max(dropped).max(version);
    }

    /// Entries of `[from, to)` (chunk offsets) changed after `since`, as (offset - from, value)
    /// pairs (an entry changed twice may appear twice, with its current value), or the whole
    /// range as a dense run when `since` is older than the log.
    pub(crate) fn changed_since(
        &self,
        since: u64,
        from: usize,
        to: usize,
        out: &mut pb::PullChunk,
    ) {
        if since >= self.log_floor {
            let first = self.log.partition_point(|&(v, _)| v <= since);
            for &(_, off) in self.log.get(first..).unwrap_or_default() {
                let o = off as usize;
                if o >= from
                    && o < to
                    && let Some(v) = self.values.get(o)
                {
                    out.offsets.push((o - from) as u32);
                    out.values.push(*v);
                }
            }
            return;
        }
        out.values
            .extend_from_slice(self.values.get(from..to).unwrap_or_default());
    }
}
