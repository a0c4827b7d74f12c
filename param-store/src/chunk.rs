//! One chunk of a tensor: its values and a bounded, version-sorted log of recent changes, so that
//! "what changed since version v" costs what changed rather than the chunk's size.

/// The offsets one push changed in one chunk.
#[derive(Debug, Clone)]
pub struct LogBatch {
    /// The push's version.
    pub version: u64,
    /// Chunk offsets it changed.
    pub offsets: Vec<u32>,
}

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
    /// Recent changes, one batch per push, sorted by version: a pull "since v" with
    /// `v >= log_floor` reads only these, so a sparse pull costs what changed, not the chunk's
    /// size. Callers further behind get the whole chunk (a superset is always a correct answer).
    /// Pushes applied concurrently may reach a chunk out of version order; a late batch is
    /// inserted among a handful of batches instead of shifting every logged entry.
    pub log: Vec<LogBatch>,
    /// Offsets in `log`, all batches together.
    pub log_entries: usize,
    /// Every change dropped from `log` has a version at or below this.
    pub log_floor: u64,
}

impl Chunk {
    /// A chunk with an empty log.
    pub fn new(tensor: u32, index: u32, start: u64, values: Vec<f32>, log_floor: u64) -> Self {
        Self {
            tensor,
            index,
            start,
            values,
            log: Vec::new(),
            log_entries: 0,
            log_floor,
        }
    }

    /// Most logged offsets before the oldest batches are dropped: as many as the chunk has
    /// values, so the log at most doubles a chunk's memory. (An eighth, as before, made every
    /// pull of a small, busy tensor — a PMF embedding table — fall back to the whole chunk.)
    pub(crate) fn log_limit(&self) -> usize {
        self.values.len().max(64)
    }

    /// Most offsets one push may log; a push touching more than half the chunk resets the log
    /// instead, as pullers are then better served by the dense chunk anyway.
    pub(crate) fn batch_limit(&self) -> usize {
        (self.values.len() / 2).max(32)
    }

    /// Logs the offsets one push changed (at most [`Self::batch_limit`]; more should
    /// [`Self::reset_log`] instead).
    pub(crate) fn log_batch(&mut self, version: u64, offsets: Vec<u32>) {
        if offsets.is_empty() {
            return;
        }
        self.log_entries += offsets.len();
        let batch = LogBatch { version, offsets };
        if self.log.last().is_none_or(|b| b.version <= version) {
            self.log.push(batch);
        } else {
            let at = self.log.partition_point(|b| b.version <= version);
            self.log.insert(at, batch);
        }
        // Drop the oldest batches until the log is within its limit again.
        let limit = self.log_limit();
        let mut drop_n = 0;
        let mut left = self.log_entries;
        let mut floor = self.log_floor;
        for b in &self.log {
            if left <= limit {
                break;
            }
            left -= b.offsets.len();
            floor = floor.max(b.version);
            drop_n += 1;
        }
        if drop_n > 0 {
            self.log.drain(..drop_n);
            self.log_entries = left;
            self.log_floor = floor;
        }
    }

    /// Forgets the log (after a change to much of the chunk): pulls from before `version` get the
    /// whole chunk instead.
    pub(crate) fn reset_log(&mut self, version: u64) {
        let dropped = self.log.iter().map(|b| b.version).max().unwrap_or(0);
        self.log.clear();
        self.log_entries = 0;
        self.log_floor = self.log_floor.max(dropped).max(version);
    }

    /// Entries of `[from, to)` (chunk offsets) changed after `since`, each once and in offset
    /// order: `offset - from` appended to `offsets` as gap-coded varints (see
    /// [`decode_offsets`]) and the current value to `values` (little-endian f32). Or the whole
    /// range as a dense run of values (nothing appended to `offsets`) when `since` is older than
    /// the log or when the dense run is the smaller answer.
    pub(crate) fn changed_since(
        &self,
        since: u64,
        from: usize,
        to: usize,
        offsets: &mut Vec<u8>,
        values: &mut Vec<u8>,
    ) {
        let width = to.saturating_sub(from);
        if since >= self.log_floor {
            let first = self.log.partition_point(|b| b.version <= since);
            let batches = self.log.get(first..).unwrap_or_default();
            let (seen, n) = changed_set(batches, from, to);
            // A sparse entry costs 4 bytes of value and 1–2 of offset, a dense value 4: past two
            // thirds of the range, the dense run is the smaller answer.
            if 3 * n <= 2 * width {
                append_sparse(&seen, n, from, &self.values, offsets, values);
                return;
            }
        }
        extend_le(values, self.values.get(from..to).unwrap_or_default());
    }
}

/// Marks the offsets in `[from, to)` that `batches` changed; returns the bitmap (bit `o - from`)
/// and how many are set.
fn changed_set(batches: &[LogBatch], from: usize, to: usize) -> (Vec<u64>, usize) {
    let width = to.saturating_sub(from);
    let mut seen = vec![0u64; width.div_ceil(64)];
    let mut n = 0;
    for b in batches {
        for &off in &b.offsets {
            let o = off as usize;
            if o < from || o >= to {
                continue;
            }
            let (word, bit) = ((o - from) / 64, 1u64 << ((o - from) % 64));
            if let Some(w) = seen.get_mut(word)
                && *w & bit == 0
            {
                *w |= bit;
                n += 1;
            }
        }
    }
    (seen, n)
}

/// Appends the entries marked in `seen`, in offset order: gaps as varints, values as f32.
fn append_sparse(
    seen: &[u64],
    n: usize,
    from: usize,
    chunk: &[f32],
    offsets: &mut Vec<u8>,
    values: &mut Vec<u8>,
) {
    offsets.reserve(2 * n);
    values.reserve(4 * n);
    let mut prev = 0u64;
    for (w, &word) in seen.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let rel = (w * 64 + bits.trailing_zeros() as usize) as u64;
            bits &= bits - 1;
            let Some(v) = chunk.get(from + rel as usize) else {
                continue;
            };
            prost::encoding::encode_varint(rel - prev, offsets);
            values.extend_from_slice(&v.to_le_bytes());
            prev = rel;
        }
    }
}

/// Decodes the offsets of a sparse pull answer: varints, the first the offset itself, each next
/// the gap from the one before (answers list offsets in increasing order).
pub(crate) fn decode_offsets(mut bytes: &[u8]) -> Result<Vec<u32>, String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0u64;
    while !bytes.is_empty() {
        let gap = prost::encoding::decode_varint(&mut bytes)
            .map_err(|e| format!("offsets: bad varint after {} entries: {e}", out.len()))?;
        at = at
            .checked_add(gap)
            .filter(|&o| o <= u64::from(u32::MAX))
            .ok_or_else(|| format!("offsets: entry {} is past 2^32", out.len()))?;
        out.push(at as u32);
    }
    Ok(out)
}

/// Appends f32 values as little-endian bytes.
pub(crate) fn extend_le(out: &mut Vec<u8>, values: &[f32]) {
    out.reserve(4 * values.len());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Reads little-endian 4-byte words (`what` names the field in the error).
pub(crate) fn words_le<'a>(
    bytes: &'a [u8],
    what: &'a str,
) -> Result<impl Iterator<Item = [u8; 4]> + 'a, String> {
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "{what}: {} bytes is not a whole number of 4-byte words",
            bytes.len()
        ));
    }
    Ok(bytes.chunks_exact(4).map(|w| [w[0], w[1], w[2], w[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(chunk: &Chunk, since: u64) -> Option<Vec<u32>> {
        let (mut offsets, mut values) = (Vec::new(), Vec::new());
        chunk.changed_since(since, 0, chunk.values.len(), &mut offsets, &mut values);
        if offsets.is_empty() && !values.is_empty() {
            return None; // dense fallback
        }
        let got = decode_offsets(&offsets).unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in increasing order");
        Some(got)
    }

    #[test]
    fn out_of_order_batches_and_trimming_keep_every_change_after_the_floor() {
        // 1024 values: the log holds at most 1024 offsets.
        let mut chunk = Chunk::new(0, 0, 0, vec![0.0; 1024], 0);
        let mut last = vec![0u64; 1024];
        // Versions arrive 2, 1, 4, 3, ... as concurrent pushes do.
        let order: Vec<u64> = (1..=120u64)
            .map(|v| if v % 2 == 1 { v + 1 } else { v - 1 })
            .collect();
        for &v in &order {
            let offsets: Vec<u32> = (0..20).map(|k| ((v * 37 + k * 11) % 1024) as u32).collect();
            for &o in &offsets {
                last[o as usize] = last[o as usize].max(v);
            }
            chunk.log_batch(v, offsets);
            assert!(chunk.log_entries <= chunk.log_limit());
            assert_eq!(
                chunk.log_entries,
                chunk.log.iter().map(|b| b.offsets.len()).sum::<usize>()
            );
            assert!(chunk.log.windows(2).all(|w| w[0].version <= w[1].version));
        }
        assert!(chunk.log_floor > 0, "the log was trimmed");
        for since in 0..=120 {
            let want: Vec<u32> = (0..1024u32).filter(|&o| last[o as usize] > since).collect();
            match changed(&chunk, since) {
                None => assert!(
                    since < chunk.log_floor || 3 * want.len() > 2 * 1024,
                    "dense only below the floor or when most of the chunk changed (since {since})"
                ),
                Some(got) => {
                    assert!(since >= chunk.log_floor);
                    assert_eq!(got, want, "since {since}: each changed entry exactly once");
                }
            }
        }
    }
}
