//! The larger real datasets of `bench/data/fetch.sh`. They are not committed, so these tests are
//! ignored by default; after running the script:
//! `cargo test -p cumulus-models --test data_fetched -- --ignored --nocapture`.

/// Named `data` so that `cargo test -p cumulus-models data -- --ignored` selects these tests.
mod data {
    use std::path::PathBuf;

    use candle_core::Device;
    use cumulus_models::data::hashed::{self, HashedCsvOptions};
    use cumulus_models::data::{
        DataFormat, Features, LabelColumn, LabelEncoding, LabelSummary, load_path, ratings,
    };

    fn downloaded(name: &str) -> PathBuf {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../bench/data/downloads")
            .join(name);
        assert!(
            path.exists(),
            "{} is missing: run bench/data/fetch.sh",
            path.display()
        );
        path
    }

    #[test]
    #[ignore = "needs bench/data/fetch.sh"]
    fn movielens_100k_has_943_users_1682_items_100k_ratings() {
        let r = ratings::load(downloaded("ml-100k.inter"), &Default::default()).unwrap();
        let s = r.dataset.summary();
        println!("{s}");
        let Features::Ratings {
            n_users, n_items, ..
        } = r.dataset.features
        else {
            panic!("ratings")
        };
        assert_eq!(
            (r.dataset.labels.len(), n_users, n_items),
            (100_000, 943, 1682)
        );
        let LabelSummary::Regression { min, mean, max } = s.labels else {
            panic!("ratings are regression targets")
        };
        assert_eq!((min, max), (1.0, 5.0));
        assert!((mean - 3.52986).abs() < 1e-4, "{mean}");
        assert_eq!(
            (r.user_ids[0].as_str(), r.item_ids[0].as_str()),
            ("196", "242")
        );
    }

    #[test]
    #[ignore = "needs bench/data/fetch.sh"]
    fn adult_hashes_into_sparse_features_with_the_known_positive_rate() {
        let opts = HashedCsvOptions {
            label: LabelColumn::Name("income".into()),
            label_encoding: LabelEncoding::Positive(">50K".into()),
            n_buckets: 1 << 12,
            ..HashedCsvOptions::default()
        };
        let (ds, schema) = hashed::load(downloaded("adult.csv"), &opts).unwrap();
        println!(
            "{}\nnumeric: {:?}\ncategorical: {:?}",
            ds.summary(),
            schema.numeric,
            schema.categorical
        );
        assert_eq!(ds.len(), 48_842);
        assert_eq!(ds.labels.iter().filter(|&&l| l == 1.0).count(), 11_687);
        assert_eq!(
            schema.numeric,
            [
                "age",
                "fnlwgt",
                "educational-num",
                "capital-gain",
                "capital-loss",
                "hours-per-week"
            ]
        );
        assert_eq!(schema.categorical.len(), 8);
        let (x, y) = ds
            .subset(&[0, 1, 2])
            .unwrap()
            .sparse_tensors(&Device::Cpu)
            .unwrap();
        assert_eq!((x.dims(), y.dims()), (&[3, 14, 2][..], &[3][..]));
    }

    #[test]
    #[ignore = "needs bench/data/fetch.sh"]
    fn mnist_5k_csv_has_500_images_per_digit() {
        let path = downloaded("mnist_5k.csv.gz");
        assert_eq!(DataFormat::guess(&path), Some(DataFormat::MnistCsv));
        let ds = load_path(&path, None).unwrap();
        let s = ds.summary();
        println!("{s}");
        assert_eq!(
            (ds.len(), ds.example_shape.as_slice()),
            (5000, &[1, 28, 28][..])
        );
        assert_eq!(
            s.labels,
            LabelSummary::Classes((0..10).map(|c| (c, 500)).collect())
        );
        let (x, _) = ds
            .subset(&[0, 1])
            .unwrap()
            .dense_tensors(&Device::Cpu)
            .unwrap();
        assert_eq!(x.dims(), &[2, 1, 28, 28]);
        let max = x
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(max <= 1.0 && max > 0.9, "{max}");
    }
}
