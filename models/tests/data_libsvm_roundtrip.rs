//! Property: any sparse dataset written as LibSVM reads back identical.

/// Named `data` so that `cargo test -p cumulus-models data` selects these tests.
mod data {
    use cumulus_models::data::libsvm::{self, BinaryLabels, LibSvmOptions};
    use cumulus_models::data::{Dataset, Features};
    use proptest::prelude::*;

    /// Rows of strictly increasing indices below `n_features`, with finite values and labels.
    fn sparse_dataset() -> impl Strategy<Value = Dataset> {
        (1usize..200).prop_flat_map(|n_features| {
            let row = proptest::collection::btree_map(
                0..n_features as u32,
                -1e6f32..1e6f32,
                0..n_features.min(20),
            )
            .prop_map(|m| m.into_iter().collect::<Vec<_>>());
            let labels = prop_oneof![Just(-1.0f32), Just(1.0f32), -1e3f32..1e3f32];
            proptest::collection::vec((row, labels), 1..30).prop_map(move |rows| {
                let (rows, labels): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
                Dataset {
                    name: "prop.svm".into(),
                    features: Features::Sparse { rows, n_features },
                    labels,
                    example_shape: vec![n_features],
                }
            })
        })
    }

    proptest! {
        #[test]
        fn libsvm_write_then_read_is_identity(ds in sparse_dataset()) {
            let mut text = Vec::new();
            libsvm::write(&ds, &mut text).unwrap();
            let opts = LibSvmOptions {
                n_features: Some(ds.n_features()),
                labels: BinaryLabels::Keep,
                ..LibSvmOptions::default()
            };
            let back = libsvm::read("prop.svm", text.as_slice(), &opts).unwrap();
            prop_assert_eq!(back, ds);
        }
    }
}
