//! Property: no reader panics on arbitrary input; each returns a dataset or an error.

/// Named `data` so that `cargo test -p cumulus-models data` selects these tests.
mod data {
    use cumulus_models::data::{csv, hashed, idx, libsvm, mnist_csv, ratings};
    use proptest::prelude::*;

    /// Bytes that look a little like each format, so parsing gets past the first checks.
    fn text_like() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b','),
                Just(b'\t'),
                Just(b'\n'),
                Just(b':'),
                Just(b' '),
                Just(b'"'),
                Just(b'#'),
                b'0'..=b'9',
                any::<u8>(),
            ],
            0..300,
        )
    }

    proptest! {
        #[test]
        fn text_readers_never_panic(bytes in text_like()) {
            let _ = csv::read("f.csv", bytes.as_slice(), &Default::default());
            let _ = libsvm::read("f.svm", bytes.as_slice(), &Default::default());
            let _ = hashed::read("f.csv", bytes.as_slice(), &Default::default());
            let _ = ratings::read("f.inter", bytes.as_slice(), &Default::default());
            let opts = mnist_csv::MnistCsvOptions { image_shape: vec![1, 2, 2], ..Default::default() };
            let _ = mnist_csv::read("m.csv", bytes.as_slice(), &opts);
        }

        #[test]
        fn idx_reader_never_panics(
            dims in proptest::collection::vec(0u32..5, 3),
            data in proptest::collection::vec(any::<u8>(), 0..80),
            n_labels in 0u32..5,
        ) {
            let mut images = vec![0, 0, 8, 3];
            for d in &dims {
                images.extend(d.to_be_bytes());
            }
            images.extend(&data);
            let mut labels = vec![0, 0, 8, 1];
            labels.extend(n_labels.to_be_bytes());
            labels.extend(&data[..data.len().min(n_labels as usize)]);
            let _ = idx::read(("i", images.as_slice()), ("l", labels.as_slice()), &Default::default());
        }
    }
}
