//! Snapshots of a shard in an object store: one safetensors file of the shard's chunks, a manifest
//! JSON, and a done-marker written last (PERSIA's checkpoint shape). A snapshot without its
//! marker is incomplete and never loaded.
//!
//! Layout under the store's prefix:
//! `snapshots/{id}/shard-{i}-of-{n}/{data.safetensors, manifest.json, _DONE}` and
//! `latest/shard-{i}-of-{n}` holding the id of that shard's newest complete snapshot.
//! Chunks are saved with their flat start offset (`{job}/{tensor}@{start}`), so a snapshot taken
//! with one shard count (or chunk size) is loaded by any other: each new shard keeps the elements
//! of the chunks it owns.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use safetensors::tensor::{Dtype, TensorView};

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
}

/// One chunk read back: job, tensor, flat start, values.
pub type LoadedChunk = (String, String, u64, Vec<f32>);

/// A snapshot read back (one shard's part, or all parts for a re-chunking restore).
#[derive(Debug, Default)]
pub struct Loaded {
    /// Manifests of the parts read.
    pub manifests: Vec<Manifest>,
    /// Every chunk of every part.
    pub chunks: Vec<LoadedChunk>,
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
}

fn shard_dir(i: u32, n: u32) -> String {
    format!("shard-{i:05}-of-{n:05}")
}

impl SnapshotStore {
    /// A store rooted at `prefix` of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: StorePath) -> Self {
        Self { store, prefix }
    }

    /// Opens `url` (`s3://…`, `gs://…`, `az://…`, `file:///…`, `memory:///`) or, when `None`, a
    /// local directory.
    pub fn open(url: Option<&str>, local_dir: &std::path::Path) -> Result<Self> {
        match url {
            None => {
                std::fs::create_dir_all(local_dir)?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(local_dir)?;
                Ok(Self::new(Arc::new(fs), StorePath::default()))
            }
            Some(url) => {
                let parsed = url::Url::parse(url).map_err(|e| {
                    StoreError::invalid(format!("--store '{url}' is not a URL: {e}"))
                })?;
                if parsed.scheme() == "file" {
                    // parse_url's local store needs the directory to exist.
                    if let Ok(p) = parsed.to_file_path() {
                        std::fs::create_dir_all(p)?;
                    }
                }
                let (store, prefix) = object_store::parse_url(&parsed)?;
                Ok(Self::new(Arc::from(store), prefix))
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

    /// Writes one shard's part of snapshot `manifest.snapshot_id`: data, manifest, done-marker,
    /// then the shard's `latest` pointer. Returns the bytes written.
    pub async fn write(&self, manifest: &mut Manifest, chunks: &[LoadedChunk]) -> Result<u64> {
        let dir = format!(
            "snapshots/{}/{}",
            manifest.snapshot_id,
            shard_dir(manifest.shard_index, manifest.shard_count)
        );
        let data = encode_chunks(chunks, &manifest.snapshot_id)?;
        manifest.data_bytes = data.len() as u64;
        self.store
            .put(&self.path(&format!("{dir}/data.safetensors")), data.into())
            .await?;
        let json =
            serde_json::to_vec_pretty(manifest).map_err(|e| StoreError::CorruptSnapshot {
                id: manifest.snapshot_id.clone(),
                reason: e.to_string(),
            })?;
        let json_len = json.len() as u64;
        self.store
            .put(&self.path(&format!("{dir}/manifest.json")), json.into())
            .await?;
        self.store
            .put(
                &self.path(&format!("{dir}/_DONE")),
                b"done\n".to_vec().into(),
            )
            .await?;
        let latest = format!(
            "latest/{}",
            shard_dir(manifest.shard_index, manifest.shard_count)
        );
        self.store
            .put(
                &self.path(&latest),
                manifest.snapshot_id.clone().into_bytes().into(),
            )
            .await?;
        Ok(manifest.data_bytes + json_len)
    }

    /// The newest complete snapshot of shard `i` of `n`, if any.
    pub async fn latest(&self, i: u32, n: u32) -> Result<Option<String>> {
        let latest = format!("latest/{}", shard_dir(i, n));
        match self.store.get(&self.path(&latest)).await {
            Ok(r) => {
                let id = String::from_utf8_lossy(&r.bytes().await?).trim().to_owned();
                validate_snapshot_id(&id)?;
                Ok(Some(id))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads snapshot `id`: only shard `only`'s part, or every part (all must be complete).
    pub async fn load(&self, id: &str, only: Option<(u32, u32)>) -> Result<Loaded> {
        validate_snapshot_id(id)?;
        let dirs: Vec<String> = match only {
            Some((i, n)) => vec![shard_dir(i, n)],
            None => self.part_dirs(id).await?,
        };
        let mut out = Loaded::default();
        for dir in dirs {
            let base = format!("snapshots/{id}/{dir}");
            match self.store.head(&self.path(&format!("{base}/_DONE"))).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(StoreError::UnknownSnapshot(format!("{id} ({dir})")));
                }
                Err(e) => return Err(e.into()),
            }
            let manifest = self
                .store
                .get(&self.path(&format!("{base}/manifest.json")))
                .await?
                .bytes()
                .await?;
            let manifest: Manifest =
                serde_json::from_slice(&manifest).map_err(|e| StoreError::CorruptSnapshot {
                    id: id.to_owned(),
                    reason: format!("{dir} manifest: {e}"),
                })?;
            let data = self
                .store
                .get(&self.path(&format!("{base}/data.safetensors")))
                .await?
                .bytes()
                .await?;
            decode_chunks(&data, id, &mut out.chunks)?;
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

fn encode_chunks(chunks: &[LoadedChunk], id: &str) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = chunks
        .iter()
        .map(|(_, _, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(chunks.len());
    for ((job, tensor, start, values), data) in chunks.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, vec![values.len()], data).map_err(|e| {
            StoreError::CorruptSnapshot {
                id: id.to_owned(),
                reason: e.to_string(),
            }
        })?;
        views.push((format!("{job}/{tensor}@{start}"), view));
    }
    safetensors::serialize(views, None).map_err(|e| StoreError::CorruptSnapshot {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

fn decode_chunks(data: &[u8], id: &str, out: &mut Vec<LoadedChunk>) -> Result<()> {
    let bad = |reason: String| StoreError::CorruptSnapshot {
        id: id.to_owned(),
        reason,
    };
    let st = safetensors::SafeTensors::deserialize(data).map_err(|e| bad(e.to_string()))?;
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
            return Err(bad(format!("bad entry name '{name}'")));
        };
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("entry '{name}' is not F32")));
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
