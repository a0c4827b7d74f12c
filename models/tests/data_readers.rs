//! Every reader on small files written to a temporary folder (plain and `.gz`), the refusal of
//! malformed files with file name, line number and reason, and format guessing by `load_path`.

/// Named `data` so that `cargo test -p cumulus-models data` selects these tests.
mod data {
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use candle_core::Device;
    use cumulus_models::data::hashed::{self, HashedCsvOptions};
    use cumulus_models::data::idx::{self, IdxOptions};
    use cumulus_models::data::{
        DataError, DataFormat, Features, LabelColumn, LabelEncoding, LabelSummary, ReadLimits, csv,
        libsvm, load_path, ratings,
    };

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        if name.ends_with(".gz") {
            let file = std::fs::File::create(&path).unwrap();
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            gz.write_all(bytes).unwrap();
            gz.finish().unwrap();
        } else {
            std::fs::write(&path, bytes).unwrap();
        }
        path
    }

    fn err_of(r: Result<impl std::fmt::Debug, DataError>) -> String {
        r.unwrap_err().to_string()
    }

    fn idx_bytes(magic: [u8; 4], dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = magic.to_vec();
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(data);
        b
    }

    #[test]
    fn dense_csv_plain_and_gz_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"f1;f2;y\n0.5;1;0\n2;-3e2;1\n";
        let opts = csv::CsvOptions {
            delimiter: ';',
            ..Default::default()
        };
        let plain = csv::load(write(dir.path(), "x.csv", text), &opts).unwrap();
        let gz = csv::load(write(dir.path(), "x.csv.gz", text), &opts).unwrap();
        assert_eq!(plain.features, gz.features);
        assert_eq!(
            plain.features,
            Features::Dense {
                values: vec![0.5, 1.0, 2.0, -300.0],
                n_features: 2
            }
        );
        assert_eq!(plain.labels, vec![0.0, 1.0]);
    }

    #[test]
    fn malformed_csv_is_refused_with_file_line_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let opts = csv::CsvOptions::default();
        let p = write(dir.path(), "digits.csv", b"1,2,3\n4,5,6\n7,8\n");
        let e = err_of(csv::load(&p, &opts));
        assert!(
            e.ends_with("digits.csv:3: expected 3 columns, found 2"),
            "{e}"
        );
        let p = write(
            dir.path(),
            "x.csv.gz",
            b"a,b,c,y\n1,2,3,0\n1,2,3,0\n1,2,3,0\n1,2,abc,1\n",
        );
        let e = err_of(csv::load(&p, &opts));
        assert!(
            e.ends_with("x.csv.gz:5: column 3: \"abc\" is not a number"),
            "{e}"
        );
        let e = err_of(csv::load(dir.path().join("missing.csv"), &opts));
        assert!(e.contains("missing.csv: No such file"), "{e}");
        let p = dir.path().join("corrupt.csv.gz");
        std::fs::write(&p, b"not gzip at all").unwrap();
        let e = err_of(csv::load(&p, &opts));
        assert!(e.contains("corrupt.csv.gz: "), "{e}");
    }

    #[test]
    fn libsvm_reads_gz_and_refuses_bad_indices() {
        let dir = tempfile::tempdir().unwrap();
        let opts = libsvm::LibSvmOptions::default();
        let p = write(
            dir.path(),
            "rcv1.svm.gz",
            b"+1 qid:1 3:0.25 10:1\n-1 1:2 # c\n",
        );
        let ds = libsvm::load(&p, &opts).unwrap();
        assert_eq!(ds.labels, vec![1.0, 0.0]);
        assert_eq!(ds.n_features(), 10);
        let (x, _) = ds.sparse_tensors(&Device::Cpu).unwrap();
        assert_eq!(
            x.to_vec3::<f32>().unwrap(),
            vec![
                vec![vec![2.0, 0.25], vec![9.0, 1.0]],
                vec![vec![0.0, 2.0], vec![0.0, 0.0]]
            ]
        );
        let p = write(dir.path(), "train.svm", b"1 1:1\n0 2:1\n1 0:1\n");
        let e = err_of(libsvm::load(&p, &opts));
        assert!(
            e.ends_with("train.svm:3: feature index 0 is invalid (LibSVM indices start at 1)"),
            "{e}"
        );
        let p = write(dir.path(), "dec.svm", b"1 1:1\n1 4:1 2:1\n");
        let e = err_of(libsvm::load(&p, &opts));
        assert!(
            e.ends_with(
                "dec.svm:2: feature index 2 follows index 4; indices must be strictly increasing"
            ),
            "{e}"
        );
    }

    #[test]
    fn adult_like_csv_is_hashed_into_sparse_features() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"age,workclass,education,income\n\
                     25,Private,11th,<=50K\n\
                     38,?,HS-grad,>50K\n\
                     28,Local-gov,\"Assoc, acdm\",<=50K\n";
        let opts = HashedCsvOptions {
            label: LabelColumn::Name("income".into()),
            label_encoding: LabelEncoding::Positive(">50K".into()),
            n_buckets: 1 << 10,
            ..Default::default()
        };
        let (ds, schema) = hashed::load(write(dir.path(), "adult.csv", text), &opts).unwrap();
        assert_eq!(ds.labels, vec![0.0, 1.0, 0.0]);
        assert_eq!(schema.numeric, vec!["age"]);
        assert_eq!(schema.categorical, vec!["workclass", "education"]);
        let Features::Sparse { rows, n_features } = &ds.features else {
            panic!("hashed features are sparse")
        };
        assert_eq!(*n_features, 1 + 1024);
        let want = schema.feature_of("education", "Assoc, acdm") as u32;
        assert!(rows[2].iter().any(|&(i, v)| i == want && v == 1.0));
        assert!(rows.iter().all(|r| r.windows(2).all(|w| w[0].0 < w[1].0)));
        // Same input, same features: the hash is stable.
        let (again, _) = hashed::load(dir.path().join("adult.csv"), &opts).unwrap();
        assert_eq!(again, ds);
    }

    #[test]
    fn movielens_ratings_are_remapped_to_dense_ids() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "u.data",
            b"196\t242\t3\t881250949\n22\t377\t1\t878887116\n196\t377\t5\t1\n",
        );
        let r = ratings::load(&p, &Default::default()).unwrap();
        let Features::Ratings {
            users,
            items,
            n_users,
            n_items,
        } = &r.dataset.features
        else {
            panic!("ratings")
        };
        assert_eq!(
            (users.clone(), items.clone()),
            (vec![0, 1, 0], vec![0, 1, 1])
        );
        assert_eq!((*n_users, *n_items), (2, 2));
        assert_eq!(r.item_ids, vec!["242", "377"]);
        let (x, y) = r.dataset.dense_tensors(&Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[3, 2]);
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![3.0, 1.0, 5.0]);
        let p = write(
            dir.path(),
            "ml.inter",
            b"user_id:token\titem_id:token\trating:float\n1\t2\t4\n1\t3\tfive\n",
        );
        let e = err_of(ratings::load(&p, &Default::default()));
        assert!(
            e.ends_with("ml.inter:3: column 3: rating: \"five\" is not a number"),
            "{e}"
        );
    }

    #[test]
    fn idx_images_load_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let images = idx_bytes(
            [0, 0, 8, 3],
            &[2, 2, 3],
            &[0, 255, 0, 0, 0, 0, 51, 0, 0, 0, 0, 255],
        );
        let labels = idx_bytes([0, 0, 8, 1], &[2], &[3, 9]);
        let img = write(dir.path(), "train-images-idx3-ubyte.gz", &images);
        write(dir.path(), "train-labels-idx1-ubyte.gz", &labels);
        let ds = load_path(&img, None).unwrap();
        assert_eq!(ds.example_shape, vec![1, 2, 3]);
        assert_eq!(ds.labels, vec![3.0, 9.0]);
        let (x, _) = ds.dense_tensors(&Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[2, 1, 2, 3]);
        assert_eq!(x.flatten_all().unwrap().to_vec1::<f32>().unwrap()[6], 0.2);

        let opts = IdxOptions::default();
        let lbl = dir.path().join("train-labels-idx1-ubyte.gz");
        let bad_magic = write(
            dir.path(),
            "bad-images-idx3-ubyte",
            &idx_bytes([0, 0, 9, 3], &[2, 2, 3], &[0; 12]),
        );
        let e = err_of(idx::load(&bad_magic, &lbl, &opts));
        assert!(e.ends_with("bad-images-idx3-ubyte: magic number 0x00000903 is not an IDX file of unsigned bytes in 3 dimensions (expected 0x00000803)"), "{e}");
        let truncated = write(
            dir.path(),
            "short-images-idx3-ubyte",
            &images[..images.len() - 1],
        );
        let e = err_of(idx::load(&truncated, &lbl, &opts));
        assert!(e.ends_with("short-images-idx3-ubyte: truncated: dimensions [2, 2, 3] need 12 bytes of data after the header, found 11"), "{e}");
        let header_only = write(dir.path(), "hdr-images-idx3-ubyte", &images[..6]);
        let e = err_of(idx::load(&header_only, &lbl, &opts));
        assert!(
            e.ends_with("hdr-images-idx3-ubyte: truncated: the file ends inside the IDX header"),
            "{e}"
        );
        let limits = ReadLimits {
            max_features: 5,
            ..ReadLimits::default()
        };
        let e = err_of(idx::load(&img, &lbl, &IdxOptions { limits }));
        assert!(
            e.ends_with("too large: 6 features, more than 5 (max_features)"),
            "{e}"
        );
    }

    #[test]
    fn load_path_guesses_formats_and_summaries_describe_them() {
        let dir = tempfile::tempdir().unwrap();
        let svm = write(dir.path(), "a.libsvm", b"1 2:1\n0 1:1 4:1\n");
        let ds = load_path(&svm, None).unwrap();
        let s = ds.summary();
        assert_eq!(
            (s.kind, s.rows, s.n_features, s.density),
            ("sparse", 2, 4, Some(3.0 / 8.0))
        );
        assert_eq!(s.labels, LabelSummary::Classes(vec![(0, 1), (1, 1)]));
        let text = s.to_string();
        assert!(
            text.contains("rows:     2") && text.contains("density 0.375000"),
            "{text}"
        );

        let inter = write(
            dir.path(),
            "ml.inter",
            b"user_id:token\titem_id:token\trating:float\n1\t2\t4\n",
        );
        assert_eq!(load_path(&inter, None).unwrap().summary().kind, "ratings");
        // The format given wins over the name.
        let odd = write(dir.path(), "ratings.tsv", b"1\t2\t4\t0\n");
        assert!(load_path(&odd, None).is_err());
        assert_eq!(load_path(&odd, Some(DataFormat::Ratings)).unwrap().len(), 1);
        let reg = write(dir.path(), "r.csv", b"1,0.5\n2,2.5\n");
        let s = load_path(&reg, None).unwrap().summary();
        assert_eq!(
            s.labels,
            LabelSummary::Regression {
                min: 0.5,
                mean: 1.5,
                max: 2.5
            }
        );
    }
}
