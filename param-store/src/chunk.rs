//! One chunk of a tensor: its values and a bounded, version-sorted log of recent changes, so that
//! "what changed since version v" costs what changed rather than the chunk's size.

use cumulus_proto::paramstore::v1 as pb;
pub(crate) use pb::ValueEncoding;

/// Appends `v` in `enc`; false (nothing appended) when `v` is finite but past the encoding's
/// range (f16: ±65504), which the caller answers in f32 instead.
pub(crate) fn put_value(enc: ValueEncoding, v: f32, out: &mut Vec<u8>) -> bool {
    match enc {
        ValueEncoding::F32 => out.extend_from_slice(&v.to_le_bytes()),
        ValueEncoding::F16 => {
            let h = half::f16::from_f32(v);
            if v.is_finite() && !h.is_finite() {
                return false;
            }
            out.extend_from_slice(&h.to_le_bytes());
        }
    }
    true
}

/// Bytes per value in `enc`.
pub(crate) fn value_width(enc: ValueEncoding) -> usize {
    match enc {
        ValueEncoding::F32 => 4,
        ValueEncoding::F16 => 2,
    }
}

/// Appends `values` in `enc`, or in f32 when one of them has no finite `enc` form; returns the
/// encoding used.
pub(crate) fn put_values(enc: ValueEncoding, values: &[f32], out: &mut Vec<u8>) -> ValueEncoding {
    let mark = out.len();
    out.reserve(value_width(enc) * values.len());
    if values.iter().all(|&v| put_value(enc, v, out)) {
        return enc;
    }
    out.truncate(mark);
    extend_le(out, values);
    ValueEncoding::F32
}

/// The value encoding a message names (a protobuf enum travels as its number).
pub(crate) fn value_encoding(raw: i32) -> Result<ValueEncoding, String> {
    ValueEncoding::try_from(raw).map_err(|_| format!("unknown value encoding {raw}"))
}

/// Decodes values sent in the encoding numbered `encoding` (`what` names them in errors).
pub(crate) fn decode_values(bytes: &[u8], encoding: i32, what: &str) -> Result<Vec<f32>, String> {
    match value_encoding(encoding)? {
        ValueEncoding::F32 => Ok(words_le(bytes, what)?.map(f32::from_le_bytes).collect()),
        ValueEncoding::F16 => {
            if !bytes.len().is_multiple_of(2) {
                return Err(format!(
                    "{what}: {} bytes is not a whole number of 2-byte f16 values",
                    bytes.len()
                ));
            }
            Ok(bytes
                .chunks_exact(2)
                .map(|w| half::f16::from_le_bytes([w[0], w[1]]).to_f32())
                .collect())
        }
    }
}

/// The offsets one push changed in one chunk.
#[derive(Debug, Clone)]
pub struct LogBatch {
    /// The push's version.
    pub version: u64,
    /// The worker that pushed it (pulls may leave out a worker's own changes).
    pub worker: u32,
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
    pub(crate) fn log_batch(&mut self, version: u64, worker: u32, offsets: Vec<u32>) {
        if offsets.is_empty() {
            return;
        }
        self.log_entries += offsets.len();
        let batch = LogBatch {
            version,
            worker,
            offsets,
        };
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

    /// Entries of `[from, to)` (chunk offsets) changed after `since` — by a push of any worker but
    /// `except` — each once and in offset order: `offset - from` appended to `offsets` as
    /// gap-coded varints (see [`decode_offsets`]) and the current value to `values`
    /// (in `enc`, or f32 when a value has no finite `enc` form: the encoding used is returned).
    /// Or the whole range as a dense run of values (nothing appended to `offsets`) when `since`
    /// is older than the log or when the dense run is the smaller answer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn changed_since(
        &self,
        since: u64,
        except: Option<u32>,
        enc: ValueEncoding,
        from: usize,
        to: usize,
        offsets: &mut Vec<u8>,
        values: &mut Vec<u8>,
    ) -> ValueEncoding {
        let width = to.saturating_sub(from);
        let dense = self.values.get(from..to).unwrap_or_default();
        if since >= self.log_floor {
            let first = self.log.partition_point(|b| b.version <= since);
            let batches = self.log.get(first..).unwrap_or_default();
            let changed = changed_offsets(batches, except, from, to);
            // A sparse entry costs a value and 1–2 bytes of offset, a dense one only the value:
            // past two thirds of the range, the dense run is the smaller answer.
            if 3 * changed.len() <= 2 * width {
                return append_sparse(&changed, from, &self.values, enc, offsets, values);
            }
        }
        put_values(enc, dense, values)
    }
}

/// The offsets in `[from, to)` that `batches` (but those `except` pushed) changed, relative to
/// `from`, each once, in increasing order. A few are sorted; many are marked in a bitmap over the
/// range (which costs the range's width however few changed).
fn changed_offsets(batches: &[LogBatch], except: Option<u32>, from: usize, to: usize) -> Vec<u32> {
    let width = to.saturating_sub(from);
    let batches = || batches.iter().filter(move |b| Some(b.worker) != except);
    let relative = move |off: &u32| {
        let o = *off as usize;
        (o >= from && o < to).then(|| (o - from) as u32)
    };
    let logged: usize = batches().map(|b| b.offsets.len()).sum();
    if logged <= width / 512 {
        let mut out: Vec<u32> = batches()
            .flat_map(|b| b.offsets.iter().filter_map(relative))
            .collect();
        out.sort_unstable();
        out.dedup();
        return out;
    }
    let mut seen = vec![0u64; width.div_ceil(64)];
    let mut n = 0;
    for rel in batches().flat_map(|b| b.offsets.iter().filter_map(relative)) {
        let (word, bit) = (rel as usize / 64, 1u64 << (rel % 64));
        if let Some(w) = seen.get_mut(word)
            && *w & bit == 0
        {
            *w |= bit;
            n += 1;
        }
    }
    let mut out = Vec::with_capacity(n);
    for (w, &word) in seen.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            out.push((w * 64) as u32 + bits.trailing_zeros());
            bits &= bits - 1;
        }
    }
    out
}

/// Appends the entries at `changed` (offsets relative to `from`, increasing): gaps as varints,
/// values in `enc`, or in f32 when one of them has no finite `enc` form (as [`put_values`]);
/// returns the encoding used.
fn append_sparse(
    changed: &[u32],
    from: usize,
    chunk: &[f32],
    enc: ValueEncoding,
    offsets: &mut Vec<u8>,
    values: &mut Vec<u8>,
) -> ValueEncoding {
    let (o, v) = (offsets.len(), values.len());
    offsets.reserve(2 * changed.len());
    values.reserve(value_width(enc) * changed.len());
    let mut prev = 0u32;
    for &rel in changed {
        let Some(x) = chunk.get(from + rel as usize) else {
            continue;
        };
        if !put_value(enc, *x, values) {
            offsets.truncate(o);
            values.truncate(v);
            return append_sparse(changed, from, chunk, ValueEncoding::F32, offsets, values);
        }
        prost::encoding::encode_varint(u64::from(rel - prev), offsets);
        prev = rel;
    }
    enc
}

/// Decodes gap-coded varints (`what` names the field in errors): the first the value itself, each
/// next the gap from the one before — the offsets of a sparse pull answer and the `index_gaps` of a
/// push, both in increasing order.
pub(crate) fn decode_offsets(mut bytes: &[u8], what: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0u64;
    while !bytes.is_empty() {
        let gap = prost::encoding::decode_varint(&mut bytes)
            .map_err(|e| format!("{what}: bad varint after {} entries: {e}", out.len()))?;
        at = at
            .checked_add(gap)
            .filter(|&o| o <= u64::from(u32::MAX))
            .ok_or_else(|| format!("{what}: entry {} is past 2^32", out.len()))?;
        out.push(at as u32);
    }
    Ok(out)
}

/// Appends non-decreasing values as gap-coded varints (what [`decode_offsets`] reads).
pub(crate) fn encode_gaps(values: impl IntoIterator<Item = u32>, out: &mut Vec<u8>) {
    let mut prev = 0u32;
    for v in values {
        prost::encoding::encode_varint(u64::from(v.wrapping_sub(prev)), out);
        prev = v;
    }
}

/// The indices of a sparse push, from whichever of its two encodings it carries.
pub(crate) fn decode_indices(u: &pb::TensorUpdate) -> Result<Vec<u32>, String> {
    match (u.indices.is_empty(), u.index_gaps.is_empty()) {
        (_, true) => Ok(words_le(&u.indices, "indices")?
            .map(u32::from_le_bytes)
            .collect()),
        (true, false) => decode_offsets(&u.index_gaps, "index_gaps"),
        (false, false) => Err("both indices and index_gaps are set; send one".to_owned()),
    }
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
        let len = chunk.values.len();
        let enc = ValueEncoding::F32;
        chunk.changed_since(since, None, enc, 0, len, &mut offsets, &mut values);
        if offsets.is_empty() && !values.is_empty() {
            return None; // dense fallback
        }
        let got = decode_offsets(&offsets, "offsets").unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in increasing order");
        Some(got)
    }

    #[test]
    fn few_changes_are_sorted_many_are_marked_and_both_answer_the_same() {
        // 8192 values: up to 16 logged offsets are sorted, more go through the bitmap.
        let mut chunk = Chunk::new(0, 0, 0, vec![0.0; 8192], 0);
        let mut last = vec![0u64; 8192];
        for v in 1..=12u64 {
            // Three offsets per push, one of them repeating an earlier push's.
            let offsets = vec![(v * 977 % 8192) as u32, 5, (v * 31) as u32];
            for &o in &offsets {
                last[o as usize] = v;
            }
            chunk.log_batch(v, (v % 2) as u32, offsets);
        }
        for since in 0..=12 {
            let want: Vec<u32> = (0..8192u32).filter(|&o| last[o as usize] > since).collect();
            assert_eq!(changed(&chunk, since), Some(want), "since {since}");
        }
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
            chunk.log_batch(v, 0, offsets);
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
