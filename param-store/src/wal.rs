//! The write-ahead log of one shard: numbered segment files of checksummed records, appended by
//! one dedicated writer thread that commits in groups (many records per `fsync`).
//!
//! Record framing: `len: u32 LE | crc32(payload): u32 LE | payload`. A push is acknowledged only
//! after the `fsync` that covers it returns, so a torn record can only be one nobody was told about;
//! it is cut off when the log is opened. After a snapshot the log is rotated to a new segment and
//! older segments are deleted once the snapshot is complete.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StoreError};

/// Largest record accepted (a push bigger than this is refused before it gets here).
pub const MAX_RECORD_BYTES: usize = 1 << 30;
/// Commands waiting for the writer; a full queue makes callers wait (bounded memory).
const QUEUE: usize = 4096;
/// Most bytes written per group commit.
const GROUP_BYTES: usize = 64 << 20;

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
pub struct Replayed {
    /// Segment number.
    pub segment: u64,
    /// Payload.
    pub payload: Vec<u8>,
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

/// Reads a segment; a torn or corrupt tail of the last segment is cut off, elsewhere it is an error.
fn read_segment(path: &Path, n: u64, last: bool, out: &mut Vec<Replayed>) -> Result<()> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(StoreError::Wal)?;
    let mut pos = 0usize;
    while pos < data.len() {
        let bad = |reason: &str| StoreError::CorruptWal {
            path: path.display().to_string(),
            offset: pos as u64,
            reason: reason.to_owned(),
        };
        let header = data.get(pos..pos + 8);
        let parsed = header.and_then(|h| {
            let len = u32::from_le_bytes(h.get(0..4)?.try_into().ok()?) as usize;
            let crc = u32::from_le_bytes(h.get(4..8)?.try_into().ok()?);
            let payload = data.get(pos + 8..pos + 8 + len)?;
            (crc32fast::hash(payload) == crc).then_some((len, payload))
        });
        match parsed {
            Some((len, payload)) => {
                out.push(Replayed {
                    segment: n,
                    payload: payload.to_vec(),
                });
                pos += 8 + len;
            }
            None if last => {
                tracing::warn!(path = %path.display(), offset = pos, "cutting a torn write-ahead log tail");
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(StoreError::Wal)?;
                f.set_len(pos as u64)
                    .and_then(|()| f.sync_all())
                    .map_err(StoreError::Wal)?;
                return Ok(());
            }
            None => return Err(bad("torn or checksum mismatch in a sealed segment")),
        }
    }
    Ok(())
}

impl Wal {
    /// Opens the log in `dir`: returns the records of segments `>= from_segment` for replay, and a
    /// writer that appends to a fresh segment.
    pub fn open(dir: &Path, from_segment: u64, fsync: bool) -> Result<(Wal, Vec<Replayed>)> {
        std::fs::create_dir_all(dir).map_err(StoreError::Wal)?;
        let segs = segments(dir)?;
        let mut records = Vec::new();
        let mut bytes = 0u64;
        let last_n = segs.last().map(|(n, _)| *n);
        for (n, path) in &segs {
            if *n < from_segment {
                // Covered by the snapshot; a crash before its deletion left it behind.
                let _ = std::fs::remove_file(path);
                continue;
            }
            read_segment(path, *n, Some(*n) == last_n, &mut records)?;
            bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        }
        let next = last_n.map_or(from_segment, |n| n + 1).max(from_segment);
        let file = open_segment(dir, next)?;
        let bytes = Arc::new(AtomicU64::new(bytes));
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            dir: dir.to_owned(),
            file,
            segment: next,
            fsync,
            bytes: bytes.clone(),
        };
        std::thread::Builder::new()
            .name("param-store-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(StoreError::Wal)?;
        Ok((
            Wal {
                tx,
                dir: dir.to_owned(),
                bytes,
            },
            records,
        ))
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

    /// Deletes the segments below `segment` (a complete snapshot covers them).
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

    /// Bytes in the log now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

fn open_segment(dir: &Path, n: u64) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, n))
        .map_err(StoreError::Wal)?;
    // Make the new file's directory entry durable too.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::Wal)?;
    Ok(file)
}

struct Writer {
    dir: PathBuf,
    file: File,
    segment: u64,
    fsync: bool,
    bytes: Arc<AtomicU64>,
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
                        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
                        buf.extend_from_slice(&payload);
                        acks.push(ack);
                    }
                    Cmd::Rotate(ack) => {
                        let flushed = self.commit(&mut buf, &mut acks);
                        let r = flushed.and_then(|()| {
                            self.segment += 1;
                            self.file = open_segment(&self.dir, self.segment)?;
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

    fn commit(
        &mut self,
        buf: &mut Vec<u8>,
        acks: &mut Vec<oneshot::Sender<Result<()>>>,
    ) -> Result<()> {
        if buf.is_empty() && acks.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(buf).and_then(|()| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
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
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_reopen_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, old) = Wal::open(dir.path(), 0, true).unwrap();
            assert!(old.is_empty());
            let a = wal.append(b"one".to_vec());
            let b = wal.append(b"two".to_vec());
            let (a, b) = tokio::join!(a, b);
            a.unwrap();
            b.unwrap();
        }
        // A torn record at the end: a header promising more bytes than follow.
        let last = segments(dir.path()).unwrap().last().unwrap().1.clone();
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&[100, 0, 0, 0, 1, 2, 3, 4, 9]).unwrap();
        drop(f);
        let (wal, records) = Wal::open(dir.path(), 0, true).unwrap();
        let payloads: Vec<_> = records.iter().map(|r| r.payload.clone()).collect();
        assert_eq!(payloads, vec![b"one".to_vec(), b"two".to_vec()]);
        let seg = wal.rotate().await.unwrap();
        wal.append(b"three".to_vec()).await.unwrap();
        wal.remove_before(seg).unwrap();
        drop(wal);
        let (_wal, records) = Wal::open(dir.path(), seg, true).unwrap();
        assert_eq!(records.len(), 1);
    }
}
