//! The IDX binary format of MNIST / Fashion-MNIST: an images file (`*-images-idx3-ubyte`) and a
//! labels file (`*-labels-idx1-ubyte`), each optionally gzip-compressed (`.gz`).
//!
//! An IDX file is a 4-byte magic number `00 00 08 ndims` (0x08: unsigned bytes), `ndims` big-endian
//! u32 dimensions, then the values. Images must be `0x00000803` (`n x rows x cols`), labels
//! `0x00000801` (`n`). A wrong magic number, a truncated file, trailing bytes, or image and label
//! counts that differ are refused with the file name and the reason. Pixels are divided by 255;
//! `example_shape = [1, rows, cols]`; labels are the byte values.
//!
//! ```
//! use cumulus_models::data::idx::{self, IdxOptions};
//!
//! let mut images = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2];
//! images.extend([0, 51, 255, 102]);
//! let labels = [0, 0, 8, 1, 0, 0, 0, 1, 7];
//! let ds = idx::read(("img", &images[..]), ("lbl", &labels[..]), &IdxOptions::default()).unwrap();
//! assert_eq!((ds.example_shape.as_slice(), ds.labels.as_slice()), (&[1, 2, 2][..], &[7.0][..]));
//!
//! let err = idx::read(("img", &labels[..]), ("lbl", &labels[..]), &IdxOptions::default()).unwrap_err();
//! assert_eq!(err.to_string(), "img: magic number 0x00000801 is not an IDX file of unsigned bytes in 3 dimensions (expected 0x00000803)");
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use super::source::{ReadLimits, open_path};
use super::{DataError, Dataset, Features};

/// Options of the IDX reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdxOptions {
    /// `max_rows` bounds the image count, `max_features` the pixels of one image, `max_values`
    /// all pixels.
    pub limits: ReadLimits,
}

/// Reads an images file and its labels file (`.gz` transparently).
pub fn load(
    images: impl AsRef<Path>,
    labels: impl AsRef<Path>,
    opts: &IdxOptions,
) -> Result<Dataset, DataError> {
    let (images, labels) = (images.as_ref(), labels.as_ref());
    read(
        (&images.display().to_string(), open_path(images)?),
        (&labels.display().to_string(), open_path(labels)?),
        opts,
    )
}

/// The labels file that goes with an images file: `train-images-idx3-ubyte[.gz]` ->
/// `train-labels-idx1-ubyte[.gz]` (also `t10k-...`), or `None` when the name does not follow that
/// convention.
pub fn labels_path_for(images: &Path) -> Option<PathBuf> {
    let file = images.file_name()?.to_str()?;
    if !file.contains("idx3-ubyte") {
        return None;
    }
    let labels = file
        .replace("idx3-ubyte", "idx1-ubyte")
        .replace("images", "labels");
    Some(images.with_file_name(labels))
}

/// Reads `(name, reader)` of the images and of the labels.
pub fn read(
    images: (&str, impl Read),
    labels: (&str, impl Read),
    opts: &IdxOptions,
) -> Result<Dataset, DataError> {
    let limits = opts.limits;
    let (images_name, labels_name) = (images.0, labels.0);
    let (dims, pixels) = read_idx(images_name, images.1, 3, &limits)?;
    let (label_dims, label_bytes) = read_idx(labels_name, labels.1, 1, &limits)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n == 0 || rows == 0 || cols == 0 {
        return Err(DataError::format(
            images_name,
            format!("no images: dimensions {dims:?}"),
        ));
    }
    if label_dims[0] != n {
        return Err(DataError::format(
            labels_name,
            format!("{} labels for {n} images in {images_name}", label_dims[0]),
        ));
    }
    Ok(Dataset {
        name: images_name.to_string(),
        features: Features::Dense {
            values: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
            n_features: rows * cols,
        },
        labels: label_bytes.iter().map(|&l| f32::from(l)).collect(),
        example_shape: vec![1, rows, cols],
    })
}

/// Reads one IDX file of unsigned bytes with `ndims` dimensions: its dimensions and its values.
fn read_idx(
    name: &str,
    mut reader: impl Read,
    ndims: u8,
    limits: &ReadLimits,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let mut magic = [0u8; 4];
    read_header(name, &mut reader, &mut magic)?;
    let expected = u32::from_be_bytes([0, 0, 8, ndims]);
    if magic != expected.to_be_bytes() {
        return Err(DataError::format(
            name,
            format!(
                "magic number 0x{:08x} is not an IDX file of unsigned bytes in {ndims} dimension{} (expected 0x{expected:08x})",
                u32::from_be_bytes(magic),
                if ndims == 1 { "" } else { "s" }
            ),
        ));
    }
    let mut dims = Vec::with_capacity(usize::from(ndims));
    for _ in 0..ndims {
        let mut d = [0u8; 4];
        read_header(name, &mut reader, &mut d)?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    limits.check_rows(name, dims[0])?;
    let per_item: usize = dims[1..].iter().product();
    limits.check_features(name, per_item)?;
    let total = dims[0]
        .checked_mul(per_item)
        .ok_or_else(|| DataError::too_large(name, format!("dimensions {dims:?} overflow")))?;
    limits.check_values(name, total)?;
    let mut data = Vec::with_capacity(total);
    (&mut reader)
        .take(total as u64)
        .read_to_end(&mut data)
        .map_err(|e| DataError::io(name, e))?;
    if data.len() != total {
        return Err(DataError::format(
            name,
            format!(
                "truncated: dimensions {dims:?} need {total} bytes of data after the header, found {}",
                data.len()
            ),
        ));
    }
    let mut extra = [0u8; 1];
    let trailing = reader
        .read(&mut extra)
        .map_err(|e| DataError::io(name, e))?;
    if trailing != 0 {
        return Err(DataError::format(
            name,
            format!("trailing bytes after the {total} bytes of data that dimensions {dims:?} need"),
        ));
    }
    Ok((dims, data))
}

fn read_header(name: &str, reader: &mut impl Read, buf: &mut [u8]) -> Result<(), DataError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            DataError::format(name, "truncated: the file ends inside the IDX header")
        }
        _ => DataError::io(name, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_file_is_derived_from_the_images_file() {
        let p = labels_path_for(Path::new("d/train-images-idx3-ubyte.gz")).unwrap();
        assert_eq!(p, Path::new("d/train-labels-idx1-ubyte.gz"));
        let p = labels_path_for(Path::new("t10k-images-idx3-ubyte")).unwrap();
        assert_eq!(p, Path::new("t10k-labels-idx1-ubyte"));
        assert_eq!(labels_path_for(Path::new("x.csv")), None);
    }

    #[test]
    fn count_mismatch_and_trailing_bytes_are_refused() {
        let images = [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 9, 9];
        let labels = [0, 0, 8, 1, 0, 0, 0, 1, 3];
        let opts = IdxOptions::default();
        let e = read(("i", &images[..]), ("l", &labels[..]), &opts).unwrap_err();
        assert_eq!(e.to_string(), "l: 1 labels for 2 images in i");
        let labels = [0, 0, 8, 1, 0, 0, 0, 2, 3, 4, 5];
        let e = read(("i", &images[..]), ("l", &labels[..]), &opts).unwrap_err();
        assert!(e.to_string().starts_with("l: trailing bytes"), "{e}");
    }
}
