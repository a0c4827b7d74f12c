//! Dataset partitions in the object store: the coordinator cuts the training split into one file
//! per worker, and a worker function reads only its own. A partition is a safetensors file with
//! two tensors, `x` (the examples) and `y` (the labels), so any tool that reads safetensors can
//! inspect it. A local directory is the store by default (`file://` URLs); S3, GCS and Azure URLs
//! go through the same `object_store` calls.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use crate::TrainerError;

fn store_for(url: &str) -> Result<(Box<dyn ObjectStore>, object_store::path::Path), TrainerError> {
    let parsed = Url::parse(url).map_err(|e| TrainerError::Data(format!("{url}: {e}")))?;
    object_store::parse_url(&parsed).map_err(|e| TrainerError::Data(format!("{url}: {e}")))
}

/// The `file://` URL of a local path (made absolute).
pub fn file_url(path: &Path) -> Result<String, TrainerError> {
    let abs = std::path::absolute(path)
        .map_err(|e| TrainerError::Data(format!("{}: {e}", path.display())))?;
    Url::from_file_path(&abs)
        .map(String::from)
        .map_err(|()| TrainerError::Data(format!("{} is not a usable file path", abs.display())))
}

/// Writes `(x, y)` as a partition at `url`.
pub async fn write(url: &str, x: &Tensor, y: &Tensor) -> Result<(), TrainerError> {
    let bytes = safetensors::serialize([("x", x), ("y", y)], None)
        .map_err(|e| TrainerError::Data(format!("{url}: encoding the partition: {e}")))?;
    let (store, path) = store_for(url)?;
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| TrainerError::Data(format!("{url}: writing: {e}")))?;
    Ok(())
}

/// Reads the partition at `url`.
pub async fn read(url: &str) -> Result<(Tensor, Tensor), TrainerError> {
    let (store, path) = store_for(url)?;
    let bytes = store
        .get(&path)
        .await
        .map_err(|e| TrainerError::Data(format!("{url}: reading: {e}")))?
        .bytes()
        .await
        .map_err(|e| TrainerError::Data(format!("{url}: reading: {e}")))?;
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| TrainerError::Data(format!("{url}: not a partition: {e}")))?;
    let (Some(x), Some(y)) = (tensors.remove("x"), tensors.remove("y")) else {
        return Err(TrainerError::Data(format!(
            "{url}: a partition holds tensors `x` and `y`"
        )));
    };
    if x.dims().first() != y.dims().first() {
        return Err(TrainerError::Data(format!(
            "{url}: x has {:?} rows but y has {:?}",
            x.dims().first(),
            y.dims().first()
        )));
    }
    Ok((x, y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_partition_round_trips_through_a_local_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = file_url(&dir.path().join("part-0.safetensors")).unwrap();
        let x = Tensor::new(&[[1f32, 2.], [3., 4.], [5., 6.]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[0f32, 1., 0.], &Device::Cpu).unwrap();
        write(&url, &x, &y).await.unwrap();
        let (x2, y2) = read(&url).await.unwrap();
        assert_eq!(x2.to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());
        assert_eq!(y2.to_vec1::<f32>().unwrap(), y.to_vec1::<f32>().unwrap());
    }

    #[tokio::test]
    async fn a_missing_or_foreign_file_is_refused_with_its_url() {
        let dir = tempfile::tempdir().unwrap();
        let url = file_url(&dir.path().join("nope.safetensors")).unwrap();
        let err = read(&url).await.unwrap_err().to_string();
        assert!(err.contains("nope.safetensors"), "{err}");
        std::fs::write(dir.path().join("junk"), b"not safetensors").unwrap();
        let url = file_url(&dir.path().join("junk")).unwrap();
        let err = read(&url).await.unwrap_err().to_string();
        assert!(err.contains("not a partition"), "{err}");
    }
}
