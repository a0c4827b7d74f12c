//! The write-ahead log of one shard: numbered segment files of checksummed records, appended by
//! one dedicated writer thread that commits in groups (many records per `fsync`).
//!
//! A segment starts with the magic `CUMWAL02`, then holds records framed as
//! `len: u32 LE | crc32(payload): u32 LE | crc32(the first 8 bytes): u32 LE | payload`. The
//! header's own checksum is what tells a damaged length from a record cut short. (Segments
//! without the magic were written before it, framed `len | crc32(payload) | payload`; they are
//! still read.)
//!
//! Reading tells a **torn tail** from **damage**. A push is acknowledged only after the `fsync`
//! that covers it, so a crash while appending can only leave records nobody was told about at the
//! very end of the last segment: a last record the file ends inside of, a zero-filled end (pages
//! the file system extended but never wrote), or a last record failing its checksum with nothing
//! after it. A torn tail is cut off with a warning naming the file, the offset and the bytes cut.
//! Anything else — a record failing a checksum, or with an impossible length, with more data after
//! it, or any unreadable record in a segment before the last — is damage: opening the log fails
//! with the file and the byte offset, and nothing is repaired. With `salvage` the records before
//! the damage are kept, everything after it (the rest of that segment and every later segment) is
//! moved aside to `*.log.damaged-*` files, and the loss is reported.
//!
//! After a snapshot the log is rotated to a new segment; segments are deleted only once no
//! snapshot recovery may fall back to needs them ([`Wal::remove_before`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StoreError};

/// Largest record accepted (a push bigger than this is refused before it gets here).
pub const MAX_RECORD_BYTES: usize = 1 << 30;
/// First bytes of every segment written by this version.
pub const MAGIC: &[u8; 8] = b"CUMWAL02";
/// Commands waiting for the writer; a full queue makes callers wait (bounded memory).
const QUEUE: usize = 4096;
/// Most bytes written per group commit.
const GROUP_BYTES: usize = 64 << 20;
/// Record header: length, payload checksum, header checksum.
const HEADER: usize = 12;
/// Record header of segments without the magic: length, payload checksum.
const HEADER_V1: usize = 8;

enum Cmd {
    Append(Vec<u8>, oneshot::Sender<Result<()>>),
    Rotate(oneshot::Sender<Result<u64>>),
}

/// Handle to the log writer (cheap to clone).
#[derive(Debug, Clone)]
pub struct Wal {
    tx: mpsc::Sender<Cmd>,
    dir: PathBuf,
    bytes: Arc<AtomicU64>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Append(..) => "Append",
            Cmd::Rotate(..) => "Rotate",
        })
    }
}

/// One record read back at start-up.
#[derive(Debug)]
pub struct Replayed<'a> {
    /// Segment file.
    pub path: &'a Path,
    /// Byte offset of the record's header in it.
    pub offset: u64,
    /// Payload.
    pub payload: &'a [u8],
}

/// What opening the log found besides its records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// A torn tail that was cut off: segment, offset, bytes cut.
    pub torn: Option<(PathBuf, u64, u64)>,
    /// Damage that salvage stepped over: where, why, and what was set aside.
    pub salvaged: Option<Salvaged>,
    /// Records read.
    pub records: u64,
}

/// The loss a salvage accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    /// The damaged segment.
    pub path: PathBuf,
    /// Offset of the first unreadable record.
    pub offset: u64,
    /// Why it is unreadable.
    pub reason: String,
    /// Bytes set aside, that segment's rest and every later segment together.
    pub dropped_bytes: u64,
    /// Later segments set aside whole.
    pub dropped_segments: usize,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:020}.log"))
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StoreError::Wal)? {
        let path = entry.map_err(StoreError::Wal)?.path();
        let n = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("wal-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Why the record at some offset could not be read.
#[derive(Debug, PartialEq)]
enum Problem {
    /// The file ends inside the record (its header, or the payload its verified header promises).
    CutShort(String),
    /// The record is complete but its payload fails its checksum.
    Checksum,
    /// The header is unreadable: its checksum fails, or its length is impossible.
    Header(String),
}

/// One segment's records, or where and why reading stopped.
struct Parsed<'a> {
    records: Vec<(u64, &'a [u8])>,
    stop: Option<(usize, Problem, usize)>,
}

/// Parses `data` (a whole segment): the records up to the first problem, and the problem with its
/// offset and the offset where the record would have ended.
fn parse(data: &[u8]) -> Parsed<'_> {
    let v2 = data.starts_with(MAGIC);
    let header = if v2 { HEADER } else { HEADER_V1 };
    let mut pos = if v2 { MAGIC.len() } else { 0 };
    let mut records = Vec::new();
    while pos < data.len() {
        let rest = data.get(pos..).unwrap_or_default();
        let word = |i: usize| {
            rest.get(i..i + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        let (Some(len), Some(crc)) = (word(0), word(4)) else {
            let p = Problem::CutShort(format!("a {header}-byte record header cut short"));
            return Parsed {
                records,
                stop: Some((pos, p, data.len())),
            };
        };
        if v2 {
            let Some(hcrc) = word(8) else {
                let p = Problem::CutShort(format!("a {header}-byte record header cut short"));
                return Parsed {
                    records,
                    stop: Some((pos, p, data.len())),
                };
            };
            if crc32fast::hash(rest.get(..8).unwrap_or_default()) != hcrc {
                let p = Problem::Header("the record header fails its checksum".into());
                return Parsed {
                    records,
                    stop: Some((pos, p, data.len())),
                };
            }
        }
        let len = len as usize;
        if len > MAX_RECORD_BYTES {
            let p = Problem::Header(format!(
                "impossible record length {len} (at most {MAX_RECORD_BYTES})"
            ));
            return Parsed {
                records,
                stop: Some((pos, p, data.len())),
            };
        }
        let end = pos + header + len;
        let Some(payload) = data.get(pos + header..end) else {
            let p = Problem::CutShort(format!(
                "a {len}-byte record cut short ({} bytes left)",
                rest.len().saturating_sub(header)
            ));
            return Parsed {
                records,
                stop: Some((pos, p, data.len())),
            };
        };
        if crc32fast::hash(payload) != crc {
            return Parsed {
                records,
                stop: Some((pos, Problem::Checksum, end)),
            };
        }
        records.push((pos as u64, payload));
        pos = end;
    }
    Parsed {
        records,
        stop: None,
    }
}

/// Whether a problem at `pos` (record ending at `end`) of the last segment is a torn tail: what
/// a crash during an append leaves, never an acknowledged record.
fn is_torn(data: &[u8], pos: usize, problem: &Problem, end: usize) -> bool {
    let zeros = data.get(pos..).is_some_and(|r| r.iter().all(|&b| b == 0));
    match problem {
        Problem::CutShort(_) => true,
        Problem::Checksum => end >= data.len() || zeros,
        Problem::Header(_) => zeros,
    }
}

/// Where a segment's damaged part is set aside: `wal-N.log.damaged-<ms>` (never overwriting an
/// earlier salvage's, and not a name [`segments`] reads).
fn aside_path(path: &Path) -> PathBuf {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    path.with_extension(format!("log.damaged-{ms}"))
}

/// Moves `data[from..]` of `path` aside (see [`aside_path`]) and cuts the segment there.
fn set_aside(path: &Path, data: &[u8], from: usize) -> Result<u64> {
    let aside = aside_path(path);
    let tail = data.get(from..).unwrap_or_default();
    std::fs::write(&aside, tail).map_err(StoreError::Wal)?;
    cut(path, from as u64)?;
    Ok(tail.len() as u64)
}

fn cut(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(StoreError::Wal)?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .map_err(StoreError::Wal)
}

impl Wal {
    /// Opens the log in `dir`: calls `apply` on every record of segments `>= replay_from`, in
    /// order, one segment in memory at a time; then starts a writer that appends to a fresh
    /// segment. Segments below `replay_from` are left alone (an older snapshot may need them).
    /// Segments from `replay_from` on must be consecutive, and the first must be `replay_from`
    /// itself unless no segment that old exists yet.
    pub fn open(
        dir: &Path,
        replay_from: u64,
        fsync: bool,
        salvage: bool,
        mut apply: impl FnMut(Replayed<'_>) -> Result<()>,
    ) -> Result<(Wal, Recovery)> {
        std::fs::create_dir_all(dir).map_err(StoreError::Wal)?;
        let segs: Vec<_> = segments(dir)?
            .into_iter()
            .filter(|(n, _)| *n >= replay_from)
            .collect();
        // Replay needs every segment from `replay_from` on: a gap is lost records, not a tail.
        if let Some(((n, _), want)) = segs
            .iter()
            .zip(replay_from..)
            .find(|((n, _), want)| n != want)
        {
            return Err(StoreError::CorruptWal {
                path: segment_path(dir, want).display().to_string(),
                offset: 0,
                reason: format!("segment {want} is missing (the next one present is {n})"),
            });
        }
        let mut recovery = Recovery::default();
        let last_n = segs.last().map(|(n, _)| *n);
        let mut dropped: Option<Salvaged> = None;
        for (n, path) in &segs {
            if let Some(d) = dropped.as_mut() {
                // Everything after salvaged damage is set aside whole.
                let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                std::fs::rename(path, aside_path(path)).map_err(StoreError::Wal)?;
                d.dropped_bytes += len;
                d.dropped_segments += 1;
                continue;
            }
            let mut data = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut data))
                .map_err(StoreError::Wal)?;
            let parsed = parse(&data);
            for &(offset, payload) in &parsed.records {
                apply(Replayed {
                    path,
                    offset,
                    payload,
                })?;
                recovery.records += 1;
            }
            let Some((pos, problem, end)) = parsed.stop else {
                continue;
            };
            let last = Some(*n) == last_n;
            if last && is_torn(&data, pos, &problem, end) {
                let cut_bytes = (data.len() - pos) as u64;
                tracing::warn!(
                    path = %path.display(),
                    offset = pos,
                    bytes = cut_bytes,
                    "cutting a torn write-ahead log tail (an append a crash interrupted; it was never acknowledged)"
                );
                cut(path, pos as u64)?;
                recovery.torn = Some((path.clone(), pos as u64, cut_bytes));
                continue;
            }
            let reason = match &problem {
                Problem::CutShort(why) => format!("{why} in a segment before the last"),
                Problem::Checksum => "the record fails its checksum and more data follows".into(),
                Problem::Header(why) => format!("{why}, and more data follows"),
            };
            if !salvage {
                return Err(StoreError::CorruptWal {
                    path: path.display().to_string(),
                    offset: pos as u64,
                    reason: format!(
                        "{reason}; refusing to start (--salvage keeps the {} records before it and sets the rest aside)",
                        recovery.records
                    ),
                });
            }
            let set = set_aside(path, &data, pos)?;
            dropped = Some(Salvaged {
                path: path.clone(),
                offset: pos as u64,
                reason,
                dropped_bytes: set,
                dropped_segments: 0,
            });
        }
        if let Some(d) = &dropped {
            tracing::error!(
                path = %d.path.display(),
                offset = d.offset,
                reason = %d.reason,
                dropped_bytes = d.dropped_bytes,
                dropped_segments = d.dropped_segments,
                kept_records = recovery.records,
                "salvaged a damaged write-ahead log: the records after the damage are set aside in *.log.damaged-* files and NOT applied"
            );
        }
        recovery.salvaged = dropped;
        let all = segments(dir)?;
        let bytes: u64 = all
            .iter()
            .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        let next = all
            .last()
            .map_or(replay_from, |(n, _)| n + 1)
            .max(replay_from);
        let (file, len) = open_segment(dir, next)?;
        let bytes = Arc::new(AtomicU64::new(bytes + len));
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            dir: dir.to_owned(),
            file,
            len,
            segment: next,
            fsync,
            bytes: bytes.clone(),
            broken: None,
        };
        std::thread::Builder::new()
            .name("param-store-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(StoreError::Wal)?;
        let wal = Wal {
            tx,
            dir: dir.to_owned(),
            bytes,
        };
        Ok((wal, recovery))
    }

    /// Appends a record; returns once it is durable.
    pub async fn append(&self, payload: Vec<u8>) -> Result<()> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(StoreError::TooLarge {
                what: "write-ahead log record".into(),
                size: payload.len() as u64,
                limit: MAX_RECORD_BYTES as u64,
            });
        }
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Cmd::Append(payload, ack))
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        done.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Starts a new segment; every record appended before this call is in an older segment.
    pub async fn rotate(&self) -> Result<u64> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Cmd::Rotate(ack))
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        done.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Deletes the segments below `segment` (no snapshot recovery may use needs them).
    pub fn remove_before(&self, segment: u64) -> Result<()> {
        for (n, path) in segments(&self.dir)? {
            if n < segment {
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(&path).map_err(StoreError::Wal)?;
                self.bytes.fetch_sub(
                    len.min(self.bytes.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
        }
        Ok(())
    }

    /// Bytes in the log now, every segment kept.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Bytes in segments `>= segment` (what the newest snapshot does not cover).
    pub fn bytes_since(&self, segment: u64) -> u64 {
        segments(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter(|(n, _)| *n >= segment)
            .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// Creates segment `n` with its magic (durably, directory entry included); returns it and its
/// length.
fn open_segment(dir: &Path, n: u64) -> Result<(File, u64)> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, n))
        .map_err(StoreError::Wal)?;
    let mut len = file.metadata().map_err(StoreError::Wal)?.len();
    if len == 0 {
        file.write_all(MAGIC)
            .and_then(|()| file.sync_all())
            .map_err(StoreError::Wal)?;
        len = MAGIC.len() as u64;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::Wal)?;
    Ok((file, len))
}

/// Frames one record.
fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let hcrc = crc32fast::hash(out.get(start..start + 8).unwrap_or_default());
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(payload);
}

struct Writer {
    dir: PathBuf,
    file: File,
    /// Bytes of the current segment that are written whole (and synced, with `fsync`).
    len: u64,
    segment: u64,
    fsync: bool,
    bytes: Arc<AtomicU64>,
    /// Set when a failed write could not be undone: nothing more may be appended after it.
    broken: Option<String>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut buf = Vec::new();
        let mut acks = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            // Gather everything queued (up to GROUP_BYTES) into one write and one fsync.
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Append(payload, ack) => {
                        frame(&payload, &mut buf);
                        acks.push(ack);
                    }
                    Cmd::Rotate(ack) => {
                        let flushed = self.commit(&mut buf, &mut acks);
                        let r = flushed.and_then(|()| {
                            let (file, len) = open_segment(&self.dir, self.segment + 1)?;
                            self.segment += 1;
                            self.file = file;
                            self.len = len;
                            self.bytes.fetch_add(len, Ordering::Relaxed);
                            Ok(self.segment)
                        });
                        let _ = ack.send(r);
                    }
                }
                if buf.len() < GROUP_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            let _ = self.commit(&mut buf, &mut acks);
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(std::io::Error::other(why.clone()));
        }
        let r = self.file.write_all(buf).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match &r {
            Ok(()) => self.len += buf.len() as u64,
            Err(e) => {
                // Undo a partial write, or later records would follow garbage that the next
                // start-up must call damage.
                if let Err(undo) = self.file.set_len(self.len) {
                    self.broken = Some(format!(
                        "a failed write ({e}) could not be undone ({undo}); the log takes no more records"
                    ));
                }
            }
        }
        r
    }

    fn commit(
        &mut self,
        buf: &mut Vec<u8>,
        acks: &mut Vec<oneshot::Sender<Result<()>>>,
    ) -> Result<()> {
        if buf.is_empty() && acks.is_empty() {
            return Ok(());
        }
        let r = self.write(buf);
        if r.is_ok() {
            self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        metrics::counter!(crate::metrics::WAL_COMMITS).increment(1);
        buf.clear();
        let out = r
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()));
        for ack in acks.drain(..) {
            let _ = ack.send(match &out {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Wal(std::io::Error::new(
                    e.kind(),
                    e.to_string(),
                ))),
            });
        }
        out.map_err(StoreError::Wal)
    }
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
