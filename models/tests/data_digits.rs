//! The embedded digits dataset, splitting, batching and tensor conversion.

/// Named `data` so that `cargo test -p cumulus-models data` selects these tests.
mod data {
    use candle_core::{DType, Device};
    use cumulus_models::data::{Features, digits};

    #[test]
    fn digits_has_the_known_shape_and_class_counts() {
        let ds = digits::load().unwrap();
        assert_eq!(ds.len(), 1797);
        assert_eq!(ds.n_features(), 64);
        assert_eq!(ds.n_classes(), Some(10));
        assert_eq!(ds.example_shape, vec![64]);
        let mut counts = [0usize; 10];
        for &l in &ds.labels {
            counts[l as usize] += 1;
        }
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
        let Features::Dense { values, .. } = &ds.features else {
            panic!("digits must be dense");
        };
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(
            values.contains(&1.0),
            "16/16 pixels exist, so scaling must reach 1.0"
        );
        // First row of sklearn's file: 0,0,5,13,9,1,0,0,... label 0.
        assert_eq!(&values[..4], &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0]);
        assert_eq!(ds.labels[0], 0.0);
    }

    #[test]
    fn split_is_deterministic_disjoint_and_complete() {
        let ds = digits::load().unwrap();
        let (train, test) = ds.train_test_split(0.2, 42).unwrap();
        assert_eq!(test.len(), 359); // round(1797 * 0.2)
        assert_eq!(train.len() + test.len(), ds.len());
        let (train2, test2) = ds.train_test_split(0.2, 42).unwrap();
        assert_eq!((train.clone(), test.clone()), (train2, test2));
        let (_, other) = ds.train_test_split(0.2, 43).unwrap();
        assert_ne!(other, test);

        // Every row of the original appears exactly once across the two parts.
        let rows = |d: &cumulus_models::data::Dataset| -> Vec<Vec<u32>> {
            let Features::Dense { values, n_features } = &d.features else {
                unreachable!()
            };
            values
                .chunks(*n_features)
                .zip(&d.labels)
                .map(|(r, l)| r.iter().chain([l]).map(|v| v.to_bits()).collect())
                .collect()
        };
        let mut all = rows(&train);
        all.extend(rows(&test));
        all.sort();
        let mut expected = rows(&ds);
        expected.sort();
        assert_eq!(all, expected);
    }

    #[test]
    fn split_refuses_bad_fractions() {
        let ds = digits::load().unwrap();
        for f in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            let e = ds.train_test_split(f, 1).unwrap_err().to_string();
            assert!(e.contains("test fraction"), "{f}: {e}");
        }
        let one = ds.subset(&[3]).unwrap();
        assert!(one.train_test_split(0.5, 1).is_err());
    }

    #[test]
    fn subset_selects_rows_in_order_and_refuses_out_of_range() {
        let ds = digits::load().unwrap();
        let b = ds.subset(&[10, 0, 10]).unwrap();
        assert_eq!(b.labels, vec![ds.labels[10], ds.labels[0], ds.labels[10]]);
        let e = ds.subset(&[0, 1797]).unwrap_err().to_string();
        assert!(e.contains("row index 1797 is out of range"), "{e}");
    }

    #[test]
    fn dense_tensors_have_the_example_shape() {
        let ds = digits::load().unwrap().subset(&[0, 1, 2, 3, 4]).unwrap();
        let (x, y) = ds.dense_tensors(&Device::Cpu).unwrap();
        assert_eq!((x.dims(), x.dtype()), (&[5usize, 64][..], DType::F32));
        assert_eq!((y.dims(), y.dtype()), (&[5usize][..], DType::F32));
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        let mut img = ds.clone();
        img.example_shape = vec![1, 8, 8];
        let (x, _) = img.dense_tensors(&Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[5, 1, 8, 8]);
        img.example_shape = vec![65];
        assert!(img.dense_tensors(&Device::Cpu).is_err());
    }
}
