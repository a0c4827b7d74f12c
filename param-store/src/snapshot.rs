//! Snapshots of a shard in an object store: one safetensors file of the shard's chunks, a manifest
//! JSON, and a done-marker written last (PERSIA's checkpoint shape). A snapshot without its
//! marker is incomplete and never loaded.
//!
//! Layout under the store's prefix:
//! `snapshots/{id}/shard-{i}-of-{n}/{data.safetensors, manifest.json, _DONE}` and
//! `latest/shard-{i}-of-{n}`, the shard's pointer: the id of its newest complete snapshot, then
//! what recovery falls back to when that snapshot is damaged ([`Fallback`]).
//! Chunks are saved with their flat start offset (`{job}/{tensor}@{start}`), so a snapshot taken
//! with one shard count (or chunk size) is loaded by any other: each new shard keeps the elements
//! of the chunks it owns.
//!
//! Nothing loads silently wrong: the manifest holds the CRC-32 and the length of the data file,
//! the done-marker the CRC-32 of the manifest, and both are verified before a value is used. A
//! mismatch is [`StoreError::CorruptSnapshot`] naming the file. (Snapshots written before the
//! checksums have a bare `done` marker and load unverified, with a warning.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use safetensors::tensor::Dtype;

use crate::clock::ClockSnapshot;
use crate::error::{Result, StoreError};
use crate::state::SeqWindow;

/// What a manifest says about one job.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobManifest {
    /// Job id.
    pub job_id: String,
    /// Tensor names and shapes, in layout order.
    pub tensors: Vec<(String, Vec<u64>)>,
    /// Synchronization mode.
    pub sync: String,
    /// Worker count.
    pub workers: u32,
    /// Chunk size.
    pub chunk_size: u32,
    /// Worker clocks.
    pub clocks: ClockSnapshot,
    /// Per-worker deduplication windows.
    pub dedupe: Vec<SeqWindow>,
    /// Digest of the registration request (absent in older snapshots).
    #[serde(default)]
    pub digest: Option<u64>,
    /// Pushes applied to the job so far (0 in older snapshots).
    #[serde(default)]
    pub pushes: u64,
}

/// The manifest of one shard's part of a snapshot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Snapshot id.
    pub snapshot_id: String,
    /// Shard that wrote it.
    pub shard_index: u32,
    /// Shard count when written.
    pub shard_count: u32,
    /// First write-ahead log segment not covered by the snapshot.
    pub wal_from: u64,
    /// Jobs.
    pub jobs: Vec<JobManifest>,
    /// Bytes of the data file.
    pub data_bytes: u64,
    /// CRC-32 of the data file (absent in snapshots written before checksums).
    #[serde(default)]
    pub data_crc32: Option<u32>,
}

/// One chunk read back: job, tensor, flat start, values.
pub type LoadedChunk = (String, String, u64, Vec<f32>);
/// One chunk to save: job, tensor, flat start, values as little-endian f32 bytes.
pub type SavedChunk = (String, String, u64, Vec<u8>);

/// A snapshot read back (one shard's part, or all parts for a re-chunking restore).
#[derive(Debug, Default)]
pub struct Loaded {
    /// Manifests of the parts read.
    pub manifests: Vec<Manifest>,
    /// Every chunk of every part.
    pub chunks: Vec<LoadedChunk>,
}

/// What recovery falls back to when a shard's newest snapshot is damaged: the state the shard ran
/// from when it wrote that snapshot, whose log segments it keeps until the next snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// An older complete snapshot, then the log from its `wal_from`.
    Snapshot(String),
    /// The empty state, then the whole log (the shard's first snapshot).
    Empty,
    /// Nothing: the newest snapshot is the only way back (it was written by a restore, or before
    /// fallbacks were kept).
    None,
}

/// A shard's `latest` pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// Its newest complete snapshot.
    pub newest: String,
    /// What to use when that one is damaged.
    pub fallback: Fallback,
}

/// Snapshot ids appear in paths: keep them short and plain.
pub fn validate_snapshot_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "snapshot id '{id}' must be 1..=128 characters of [A-Za-z0-9._-]"
        )))
    }
}

/// Where snapshots go.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    /// The local directory behind the store, when it is one: messages name real files.
    local: Option<PathBuf>,
}

fn shard_dir(i: u32, n: u32) -> String {
    format!("shard-{i:05}-of-{n:05}")
}

/// The done-marker: `done`, then the manifest's CRC-32.
fn marker(manifest_crc: u32) -> String {
    format!("done\nmanifest_crc32 {manifest_crc:08x}\n")
}

/// The manifest CRC-32 a marker holds; `None` for a bare `done` (written before checksums).
fn marker_crc(text: &str) -> std::result::Result<Option<u32>, String> {
    let mut lines = text.lines();
    if lines.next() != Some("done") {
        return Err(format!(
            "not a done-marker: {:?}",
            text.chars().take(40).collect::<String>()
        ));
    }
    match lines.next() {
        None => Ok(None),
        Some(line) => line
            .strip_prefix("manifest_crc32 ")
            .and_then(|h| u32::from_str_radix(h.trim(), 16).ok())
            .map(Some)
            .ok_or_else(|| format!("unreadable done-marker line {line:?}")),
    }
}

fn pointer_text(p: &Pointer) -> String {
    match &p.fallback {
        Fallback::Snapshot(id) => format!("{}\nfallback {id}\n", p.newest),
        Fallback::Empty => format!("{}\nfallback -\n", p.newest),
        Fallback::None => format!("{}\n", p.newest),
    }
}

fn parse_pointer(text: &str) -> Result<Pointer> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let newest = lines.next().unwrap_or_default().to_owned();
    validate_snapshot_id(&newest)?;
    let fallback = match lines.next() {
        None => Fallback::None,
        Some("fallback -") => Fallback::Empty,
        Some(line) => match line.strip_prefix("fallback ") {
            Some(id) => {
                validate_snapshot_id(id)?;
                Fallback::Snapshot(id.to_owned())
            }
            None => {
                return Err(StoreError::CorruptSnapshot {
                    id: newest,
                    reason: format!("unreadable line {line:?} in the latest pointer"),
                });
            }
        },
    };
    Ok(Pointer { newest, fallback })
}

impl SnapshotStore {
    /// A store rooted at `prefix` of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: StorePath) -> Self {
        Self {
            store,
            prefix,
            local: None,
        }
    }

    /// Opens `url` (`s3://…`, `gs://…`, `az://…`, `file:///…`, `memory:///`) or, when `None`, a
    /// local directory.
    pub fn open(url: Option<&str>, local_dir: &std::path::Path) -> Result<Self> {
        match url {
            None => {
                std::fs::create_dir_all(local_dir)?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(local_dir)?;
                let mut s = Self::new(Arc::new(fs), StorePath::default());
                s.local = Some(local_dir.to_owned());
                Ok(s)
            }
            Some(url) => {
                let parsed = url::Url::parse(url).map_err(|e| {
                    StoreError::invalid(format!("--store '{url}' is not a URL: {e}"))
                })?;
                let mut local = None;
                if parsed.scheme() == "file" {
                    // parse_url's local store needs the directory to exist.
                    if let Ok(p) = parsed.to_file_path() {
                        std::fs::create_dir_all(&p)?;
                        local = Some(p);
                    }
                }
                let (store, prefix) = object_store::parse_url(&parsed)?;
                let mut s = Self::new(Arc::from(store), prefix);
                if local.is_some() {
                    // parse_url roots a file:// store at `/` and puts the directory in the prefix.
                    s.local = Some(PathBuf::from("/"));
                }
                Ok(s)
            }
        }
    }

    fn path(&self, rel: &str) -> StorePath {
        let mut p = self.prefix.clone();
        for part in rel.split('/') {
            p = p.clone().join(part);
        }
        p
    }

    /// How a message names the object `rel`: its file where the store is a local directory.
    pub fn describe(&self, rel: &str) -> String {
        let p = self.path(rel);
        match &self.local {
            Some(root) => root.join(p.as_ref()).display().to_string(),
            None => p.to_string(),
        }
    }

    /// Writes one shard's part of snapshot `manifest.snapshot_id`: data, manifest, done-marker,
    /// then the shard's `latest` pointer (with `fallback`). Returns the bytes written.
    pub async fn write(
        &self,
        manifest: &mut Manifest,
        chunks: Vec<SavedChunk>,
        fallback: Fallback,
    ) -> Result<u64> {
        let dir = format!(
            "snapshots/{}/{}",
            manifest.snapshot_id,
            shard_dir(manifest.shard_index, manifest.shard_count)
        );
        let (data, len, crc) = encode_chunks(chunks, &manifest.snapshot_id)?;
        manifest.data_bytes = len;
        manifest.data_crc32 = Some(crc);
        self.store
            .put(&self.path(&format!("{dir}/data.safetensors")), data)
            .await?;
        let json =
            serde_json::to_vec_pretty(manifest).map_err(|e| StoreError::CorruptSnapshot {
                id: manifest.snapshot_id.clone(),
                reason: e.to_string(),
            })?;
        let json_len = json.len() as u64;
        let manifest_crc = crc32fast::hash(&json);
        self.store
            .put(&self.path(&format!("{dir}/manifest.json")), json.into())
            .await?;
        self.store
            .put(
                &self.path(&format!("{dir}/_DONE")),
                marker(manifest_crc).into_bytes().into(),
            )
            .await?;
        let pointer = Pointer {
            newest: manifest.snapshot_id.clone(),
            fallback,
        };
        let latest = format!(
            "latest/{}",
            shard_dir(manifest.shard_index, manifest.shard_count)
        );
        self.store
            .put(
                &self.path(&latest),
                pointer_text(&pointer).into_bytes().into(),
            )
            .await?;
        Ok(manifest.data_bytes + json_len)
    }

    /// The pointer of shard `i` of `n`: its newest complete snapshot and its fallback, if any.
    pub async fn latest(&self, i: u32, n: u32) -> Result<Option<Pointer>> {
        let latest = format!("latest/{}", shard_dir(i, n));
        match self.store.get(&self.path(&latest)).await {
            Ok(r) => {
                let text = String::from_utf8_lossy(&r.bytes().await?).into_owned();
                parse_pointer(&text).map(Some)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// An object of a snapshot part; a missing one is a damaged snapshot (its marker exists).
    async fn get_part(&self, id: &str, rel: &str) -> Result<Bytes> {
        match self.store.get(&self.path(rel)).await {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::CorruptSnapshot {
                id: id.to_owned(),
                reason: format!("{} is missing", self.describe(rel)),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The verified manifest of one part (`base`: the part's directory).
    async fn manifest(&self, id: &str, base: &str) -> Result<Manifest> {
        let bad = |rel: &str, why: String| StoreError::CorruptSnapshot {
            id: id.to_owned(),
            reason: format!("{}: {why}", self.describe(rel)),
        };
        let done_rel = format!("{base}/_DONE");
        let done = match self.store.get(&self.path(&done_rel)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::UnknownSnapshot(format!("{id} ({base})")));
            }
            Err(e) => return Err(e.into()),
        };
        let want = marker_crc(&String::from_utf8_lossy(&done)).map_err(|e| bad(&done_rel, e))?;
        let manifest_rel = format!("{base}/manifest.json");
        let json = self.get_part(id, &manifest_rel).await?;
        match want {
            Some(want) if crc32fast::hash(&json) != want => {
                return Err(bad(
                    &manifest_rel,
                    format!(
                        "checksum {:08x} where the done-marker says {want:08x}",
                        crc32fast::hash(&json)
                    ),
                ));
            }
            Some(_) => {}
            None => {
                tracing::warn!(snapshot = %id, part = %base, "snapshot written before checksums: loaded unverified")
            }
        }
        serde_json::from_slice(&json).map_err(|e| bad(&manifest_rel, e.to_string()))
    }

    /// The write-ahead log segment a shard's part of snapshot `id` replays from (its manifest
    /// only, verified).
    pub async fn wal_from(&self, id: &str, i: u32, n: u32) -> Result<u64> {
        validate_snapshot_id(id)?;
        let base = format!("snapshots/{id}/{}", shard_dir(i, n));
        Ok(self.manifest(id, &base).await?.wal_from)
    }

    /// Reads snapshot `id`: only shard `only`'s part, or every part (all must be complete). Every
    /// part is verified against its checksums first.
    pub async fn load(&self, id: &str, only: Option<(u32, u32)>) -> Result<Loaded> {
        validate_snapshot_id(id)?;
        let dirs: Vec<String> = match only {
            Some((i, n)) => vec![shard_dir(i, n)],
            None => self.part_dirs(id).await?,
        };
        let mut out = Loaded::default();
        for dir in dirs {
            let base = format!("snapshots/{id}/{dir}");
            let manifest = self.manifest(id, &base).await?;
            let data_rel = format!("{base}/data.safetensors");
            let data = self.get_part(id, &data_rel).await?;
            let bad = |why: String| StoreError::CorruptSnapshot {
                id: id.to_owned(),
                reason: format!("{}: {why}", self.describe(&data_rel)),
            };
            if data.len() as u64 != manifest.data_bytes {
                return Err(bad(format!(
                    "{} bytes where the manifest says {}",
                    data.len(),
                    manifest.data_bytes
                )));
            }
            if let Some(want) = manifest.data_crc32
                && crc32fast::hash(&data) != want
            {
                return Err(bad(format!(
                    "checksum {:08x} where the manifest says {want:08x}",
                    crc32fast::hash(&data)
                )));
            }
            decode_chunks(&data, &mut out.chunks).map_err(bad)?;
            out.manifests.push(manifest);
        }
        Ok(out)
    }

    /// The part directories of snapshot `id`; every part of the shard count it was taken with.
    async fn part_dirs(&self, id: &str) -> Result<Vec<String>> {
        let prefix = self.path(&format!("snapshots/{id}"));
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut count = None;
        let mut done = Vec::new();
        for m in metas {
            let parts: Vec<_> = m.location.parts().map(|p| p.as_ref().to_owned()).collect();
            let n = parts.len();
            let (Some(dir), Some(file)) =
                (n.checked_sub(2).and_then(|k| parts.get(k)), parts.last())
            else {
                continue;
            };
            let Some((_, of)) = dir
                .strip_prefix("shard-")
                .and_then(|r| r.split_once("-of-"))
            else {
                continue;
            };
            let Ok(of) = of.parse::<u32>() else { continue };
            count = Some(of);
            if file == "_DONE" {
                done.push(dir.clone());
            }
        }
        let Some(count) = count else {
            return Err(StoreError::UnknownSnapshot(id.to_owned()));
        };
        done.sort();
        let expected: Vec<String> = (0..count).map(|i| shard_dir(i, count)).collect();
        if done != expected {
            return Err(StoreError::UnknownSnapshot(format!(
                "{id}: {} of {count} shard parts are complete",
                done.len()
            )));
        }
        Ok(done)
    }
}

/// The safetensors file of `chunks` as parts for one upload (header, then each chunk's bytes
/// as they are: no second copy of the values), with its length and CRC-32.
fn encode_chunks(chunks: Vec<SavedChunk>, id: &str) -> Result<(PutPayload, u64, u32)> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (job, tensor, start, bytes) in &chunks {
        let end = offset + bytes.len() as u64;
        header.insert(
            format!("{job}/{tensor}@{start}"),
            serde_json::json!({
                "dtype": "F32",
                "shape": [bytes.len() / 4],
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| StoreError::CorruptSnapshot {
        id: id.to_owned(),
        reason: e.to_string(),
    })?;
    // The data starts 8-byte aligned, as safetensors' own writer keeps it.
    while (json.len() + 8) % 8 != 0 {
        json.push(b' ');
    }
    let mut head = (json.len() as u64).to_le_bytes().to_vec();
    head.extend_from_slice(&json);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    let len = head.len() as u64 + offset;
    let mut parts = vec![Bytes::from(head)];
    for (_, _, _, bytes) in chunks {
        crc.update(&bytes);
        parts.push(Bytes::from(bytes));
    }
    Ok((parts.into_iter().collect(), len, crc.finalize()))
}

fn decode_chunks(data: &[u8], out: &mut Vec<LoadedChunk>) -> std::result::Result<(), String> {
    let st = safetensors::SafeTensors::deserialize(data).map_err(|e| e.to_string())?;
    for (name, view) in st.tensors() {
        let parsed = name.split_once('/').and_then(|(job, rest)| {
            let (tensor, start) = rest.rsplit_once('@')?;
            Some((
                job.to_owned(),
                tensor.to_owned(),
                start.parse::<u64>().ok()?,
            ))
        });
        let Some((job, tensor, start)) = parsed else {
            return Err(format!("bad entry name '{name}'"));
        };
        if view.dtype() != Dtype::F32 {
            return Err(format!("entry '{name}' is not F32"));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push((job, tensor, start, values));
    }
    Ok(())
}

/// A run of a tensor's values: flat start, values.
pub type TensorPart = (u64, Vec<f32>);

/// Groups loaded chunks by job and tensor.
pub fn by_tensor(chunks: Vec<LoadedChunk>) -> HashMap<(String, String), Vec<TensorPart>> {
    let mut map: HashMap<(String, String), Vec<TensorPart>> = HashMap::new();
    for (job, tensor, start, values) in chunks {
        map.entry((job, tensor)).or_default().push((start, values));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str) -> Manifest {
        Manifest {
            snapshot_id: id.into(),
            shard_index: 0,
            shard_count: 1,
            wal_from: 3,
            jobs: Vec::new(),
            data_bytes: 0,
            data_crc32: None,
        }
    }

    fn chunk(start: u64, values: &[f32]) -> SavedChunk {
        let mut bytes = Vec::new();
        crate::chunk::extend_le(&mut bytes, values);
        ("j".into(), "w".into(), start, bytes)
    }

    #[tokio::test]
    async fn snapshots_round_trip_and_any_flipped_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(None, dir.path()).unwrap();
        let mut m = manifest("s1");
        let chunks = vec![chunk(0, &[1.0, 2.0, 3.0]), chunk(3, &[4.5])];
        store.write(&mut m, chunks, Fallback::Empty).await.unwrap();
        let loaded = store.load("s1", Some((0, 1))).await.unwrap();
        let mut got = loaded.chunks.clone();
        got.sort_by_key(|c| c.2);
        assert_eq!(got[0].3, vec![1.0, 2.0, 3.0]);
        assert_eq!(got[1].3, vec![4.5]);
        assert_eq!(loaded.manifests[0].wal_from, 3);
        let pointer = store.latest(0, 1).await.unwrap().unwrap();
        assert_eq!(pointer.fallback, Fallback::Empty);

        let part = dir.path().join("snapshots/s1/shard-00000-of-00001");
        for file in ["data.safetensors", "manifest.json"] {
            let path = part.join(file);
            let clean = std::fs::read(&path).unwrap();
            // A byte in the middle of the values, or of the manifest.
            let mut bad = clean.clone();
            let at = bad.len() - 3;
            bad[at] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            let err = store.load("s1", Some((0, 1))).await.unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, StoreError::CorruptSnapshot { .. }), "{msg}");
            assert!(msg.contains("checksum"), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            std::fs::write(&path, &clean).unwrap();
        }
        std::fs::remove_file(part.join("data.safetensors")).unwrap();
        let msg = store
            .load("s1", Some((0, 1)))
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing"), "{msg}");
    }

    #[test]
    fn pointers_and_markers_parse() {
        for fallback in [
            Fallback::None,
            Fallback::Empty,
            Fallback::Snapshot("older".into()),
        ] {
            let p = Pointer {
                newest: "new".into(),
                fallback,
            };
            assert_eq!(parse_pointer(&pointer_text(&p)).unwrap(), p);
        }
        // A pointer written before fallbacks: the bare id.
        assert_eq!(parse_pointer("0001").unwrap().fallback, Fallback::None);
        assert!(parse_pointer("a\nnonsense").is_err());
        assert_eq!(marker_crc("done\n").unwrap(), None);
        assert_eq!(marker_crc(&marker(0xdead_beef)).unwrap(), Some(0xdead_beef));
        assert!(marker_crc("nope").is_err());
    }
}
