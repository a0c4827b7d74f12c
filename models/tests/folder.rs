//! Model folders: save then load is bit-identical; damaged or mismatched files are refused with
//! the file and the tensor named.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use cumulus_models::folder::{CONFIG_FILE, FolderConfig, WEIGHTS_FILE};
use cumulus_models::{Model, ModelError};

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("f32 output")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn save_then_load_is_bit_identical_for_every_architecture() {
    let dev = Device::Cpu;
    for arch in common::archs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = common::tiny(arch);
        let model = Model::with_seed(&cfg, &dev, 11).expect("builds");
        model.save(dir.path()).expect("saves");
        let back = Model::load(dir.path(), &dev).expect("loads");
        let xs = common::input(&cfg, 3, DType::F32, &dev);
        let a = model.forward_t(&xs, false).expect("fwd");
        let b = back.forward_t(&xs, false).expect("fwd");
        assert_eq!(bits(&a), bits(&b), "{arch}");
        for (name, var) in model.named_vars(false) {
            let other = back.var(&name).expect("same names");
            assert_eq!(
                bits(var.as_tensor()),
                bits(other.as_tensor()),
                "{arch} {name}"
            );
        }
        // The safetensors keys are exactly the parameter names.
        let stored =
            candle_core::safetensors::load(dir.path().join(WEIGHTS_FILE), &dev).expect("readable");
        let mut keys: Vec<_> = stored.keys().cloned().collect();
        let mut names: Vec<_> = model.param_infos().into_iter().map(|p| p.name).collect();
        keys.sort();
        names.sort();
        assert_eq!(keys, names, "{arch}");
        // config.json carries the KServe tensor specs.
        let folder = FolderConfig::read(dir.path()).expect("config reads back");
        assert_eq!(folder.model, cfg);
        assert_eq!(folder.inputs, cfg.inputs());
    }
}

/// A saved MLP folder and the path of its weights.
fn saved_mlp(dir: &Path) -> (Model, std::path::PathBuf) {
    let model = Model::new(&common::tiny("mlp"), &Device::Cpu).expect("builds");
    model.save(dir).expect("saves");
    (model, dir.join(WEIGHTS_FILE))
}

/// Loading must fail with a checkpoint error whose message names the file and `tensor`.
fn assert_refused(dir: &Path, tensor: &str) {
    let err = Model::load(dir, &Device::Cpu).expect_err("damaged file must be refused");
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Checkpoint { .. }), "{msg}");
    assert!(
        msg.contains(WEIGHTS_FILE) && msg.contains(&dir.display().to_string()),
        "no file in: {msg}"
    );
    assert!(msg.contains(tensor), "no `{tensor}` in: {msg}");
}

/// The weights file's header: tensor name -> (begin, end) of its data.
fn offsets(bytes: &[u8]) -> (usize, HashMap<String, (usize, usize)>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("valid header");
    let map = header
        .as_object()
        .expect("object")
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = &v["data_offsets"];
            (
                k.clone(),
                (
                    o[0].as_u64().expect("u64") as usize,
                    o[1].as_u64().expect("u64") as usize,
                ),
            )
        })
        .collect();
    (8 + n, map)
}

#[test]
fn truncated_weights_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, file) = saved_mlp(dir.path());
    let bytes = std::fs::read(&file).expect("read");
    let (start, map) = offsets(&bytes);
    // Cut inside the tensor whose data ends last.
    let (name, (begin, end)) = map.iter().max_by_key(|(_, (_, e))| *e).expect("tensors");
    std::fs::write(&file, &bytes[..start + (begin + end) / 2]).expect("truncate");
    assert_refused(dir.path(), name);

    // Cut inside the header: no tensor can be read, the message says so.
    std::fs::write(&file, &bytes[..20]).expect("truncate");
    assert_refused(dir.path(), "header");
    std::fs::write(&file, b"").expect("empty");
    assert_refused(dir.path(), "header");
}

#[test]
fn corrupted_weights_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, file) = saved_mlp(dir.path());
    let bytes = std::fs::read(&file).expect("read");
    let (start, map) = offsets(&bytes);

    // NaN bytes in the middle of one tensor's data.
    let (begin, _) = map["layers.1.weight"];
    let mut nan = bytes.clone();
    nan[start + begin + 4..start + begin + 8].copy_from_slice(&[0xff; 4]);
    std::fs::write(&file, &nan).expect("write");
    assert_refused(dir.path(), "layers.1.weight");

    // Garbage in the JSON header.
    let mut garbage = bytes.clone();
    garbage[9..15].copy_from_slice(b"\x00\x01%%#!");
    std::fs::write(&file, &garbage).expect("write");
    assert_refused(dir.path(), "header");

    // A header entry whose offsets overlap the next tensor's.
    let n = start - 8;
    let header = String::from_utf8(bytes[8..start].to_vec()).expect("utf8");
    let (b0, e0) = map["layers.0.bias"];
    let bad = header.replace(&format!("[{b0},{e0}]"), &format!("[{b0},{}]", e0 + 4));
    assert_eq!(
        bad.len(),
        n + (e0 + 4).to_string().len() - e0.to_string().len()
    );
    let mut shifted = (bad.len() as u64).to_le_bytes().to_vec();
    shifted.extend_from_slice(bad.as_bytes());
    shifted.extend_from_slice(&bytes[start..]);
    std::fs::write(&file, &shifted).expect("write");
    assert_refused(dir.path(), "layers.0.bias");
}

#[test]
fn mismatched_tensors_are_refused_naming_the_tensor() {
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().expect("tempdir");
    let (model, file) = saved_mlp(dir.path());
    let good: HashMap<String, Tensor> = model
        .named_vars(false)
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let write =
        |map: &HashMap<String, Tensor>| candle_core::safetensors::save(map, &file).expect("write");

    let mut missing = good.clone();
    missing.remove("layers.2.bias");
    write(&missing);
    assert_refused(dir.path(), "layers.2.bias");

    let mut shape = good.clone();
    shape.insert(
        "layers.1.weight".into(),
        Tensor::zeros((4, 6), DType::F32, &dev).expect("zeros"),
    );
    write(&shape);
    assert_refused(dir.path(), "layers.1.weight");

    let mut dtype = good.clone();
    let f64_bias = good["layers.0.bias"].to_dtype(DType::F64).expect("cast");
    dtype.insert("layers.0.bias".into(), f64_bias);
    write(&dtype);
    assert_refused(dir.path(), "layers.0.bias");

    let mut extra = good.clone();
    extra.insert(
        "layers.9.weight".into(),
        Tensor::zeros(3, DType::F32, &dev).expect("zeros"),
    );
    write(&extra);
    assert_refused(dir.path(), "layers.9.weight");

    // After all that, the intact file loads again.
    write(&good);
    Model::load(dir.path(), &dev).expect("intact file loads");
}

#[test]
fn bad_config_files_are_refused_naming_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    saved_mlp(dir.path());
    let path = dir.path().join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).expect("config");

    let cases = [
        (text.replace("\"hidden\"", "\"hiden\""), "hiden"),
        (
            text.replacen("\"n_outputs\": 3", "\"n_outputs\": 0", 1),
            "n_outputs",
        ),
        (text.replacen("\"FP32\"", "\"FP16\"", 1), "inputs"),
        ("{".to_string(), "EOF"),
    ];
    for (body, key) in cases {
        std::fs::write(&path, &body).expect("write");
        let msg = Model::load(dir.path(), &Device::Cpu)
            .expect_err(key)
            .to_string();
        assert!(msg.contains(CONFIG_FILE) && msg.contains(key), "{msg}");
    }
    std::fs::remove_file(&path).expect("rm");
    let msg = Model::load(dir.path(), &Device::Cpu)
        .expect_err("missing")
        .to_string();
    assert!(msg.contains(CONFIG_FILE), "{msg}");
}

/// A model folder whose config asks for 10^12 parameters (4 TB): refused from the config alone,
/// naming the size and the limit, before a weight is allocated or the weights file is read (there
/// is none here: reading it would be an I/O error instead).
#[test]
fn a_huge_model_is_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = r#"{"arch": "mlp", "input_dim": 1000000, "hidden": [1000000], "n_outputs": 10}"#;
    let config: cumulus_models::ModelConfig = serde_json::from_str(model).expect("valid json");
    let folder = FolderConfig::of(&config);
    std::fs::write(
        dir.path().join(CONFIG_FILE),
        serde_json::to_string(&folder).expect("serializes"),
    )
    .expect("write config");
    let err = Model::load(dir.path(), &Device::Cpu).expect_err("refused");
    assert!(matches!(err, ModelError::TooLarge { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("1000011000010 parameters"), "{msg}");
    assert!(msg.contains("over the limit of 2147483648"), "{msg}");
    assert!(matches!(
        Model::new(&config, &Device::Cpu),
        Err(ModelError::TooLarge { .. })
    ));
    let limits = cumulus_models::SizeLimits {
        max_params: 10,
        ..Default::default()
    };
    let small = cumulus_models::ModelConfig::default_for("logreg").expect("default");
    assert!(Model::with_limits(&small, &Device::Cpu, 0, DType::F32, &limits).is_err());
}

/// A weights file larger than the model's tensors and a header is refused before it is read.
#[test]
fn an_oversized_weights_file_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (model, weights) = saved_mlp(dir.path());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .expect("open weights");
    // Sparse: the length is what counts, no disk space is used.
    file.set_len(1 << 40).expect("extend");
    let err = model
        .load_weights(&weights)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("1099511627776 bytes"), "{err}");
}

#[test]
fn a_stage_loads_only_its_layers_and_answers_as_the_whole_model() {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["mlp", "resnet", "transformer"] {
        let path = dir.path().join(arch);
        let cfg = cumulus_models::ModelConfig::default_for(arch).unwrap();
        let whole = Model::with_seed(&cfg, &Device::Cpu, 9).unwrap();
        whole.save(&path).unwrap();
        let n = whole.num_layers();
        let cut = n / 2;
        let shape = cfg.input_shape(2);
        let xs = if cfg.takes_ids() {
            Tensor::zeros(shape.as_slice(), DType::U32, &Device::Cpu)
        } else {
            Tensor::rand(0f32, 1f32, shape.as_slice(), &Device::Cpu)
        }
        .unwrap();
        let want = whole.forward_t(&xs, false).unwrap();
        let head = Model::load_layers(&path, 0, cut - 1, &Device::Cpu).unwrap();
        let tail = Model::load_layers(&path, cut, n - 1, &Device::Cpu).unwrap();
        // Each holds only its layers' tensors.
        let held = |m: &Model| m.param_infos().len();
        assert_eq!(
            held(&head) + held(&tail),
            whole.param_infos().len(),
            "{arch}"
        );
        let mid = head.forward_range(0, cut - 1, &xs, false).unwrap();
        let got = tail.forward_range(cut, n - 1, &mid, false).unwrap();
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff <= 1e-5, "{arch}: {diff}");
        // A layer it does not hold is refused, not run on placeholders.
        assert!(tail.forward_range(0, n - 1, &xs, false).is_err(), "{arch}");
    }
}
