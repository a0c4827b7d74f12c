//! Helpers shared by the integration tests: tiny configs of every architecture and deterministic
//! inputs for them.
#![allow(dead_code)]

pub mod reference;

use candle_core::{DType, Device, Tensor};
use cumulus_models::ModelConfig;

/// A small config of `arch`, fast enough for numeric tests.
pub fn tiny(arch: &str) -> ModelConfig {
    let json = match arch {
        "logreg" => r#"{"arch":"logreg","n_features":5,"n_outputs":3}"#,
        "sparse_logreg" => {
            r#"{"arch":"sparse_logreg","n_features":11,"n_outputs":1,"pairs_per_example":4}"#
        }
        "mlp" => r#"{"arch":"mlp","input_dim":6,"hidden":[5,4],"n_outputs":3,"activation":"tanh"}"#,
        "lenet" => r#"{"arch":"lenet","in_channels":1,"height":12,"width":12,"n_classes":3}"#,
        "resnet" => r#"{"arch":"resnet","depth":18,"n_classes":3,"in_channels":3,"image_size":8}"#,
        "pmf" => r#"{"arch":"pmf","n_users":4,"n_items":5,"n_factors":3}"#,
        "transformer" => {
            r#"{"arch":"transformer","vocab_size":7,"max_seq_len":5,"d_model":8,"n_heads":2,"n_layers":2,"d_ff":12,"n_classes":3}"#
        }
        other => panic!("no tiny config for {other}"),
    };
    serde_json::from_str(json).expect("tiny configs are valid JSON")
}

/// Every architecture's name.
pub fn archs() -> Vec<&'static str> {
    cumulus_models::architectures().to_vec()
}

/// A deterministic input of `batch` examples for `cfg`, floats in `dtype`.
pub fn input(cfg: &ModelConfig, batch: usize, dtype: DType, dev: &Device) -> Tensor {
    let t = match cfg {
        ModelConfig::SparseLogreg(c) => {
            let k = c.pairs_per_example;
            let mut v = Vec::new();
            for b in 0..batch {
                for j in 0..k {
                    let idx = ((b * 7 + j * 3) % c.n_features) as f32;
                    // The last pair of every row is padding: index 0, value 0.
                    let (idx, val) = if j == k - 1 {
                        (0.0, 0.0)
                    } else {
                        (idx, 0.5 + 0.25 * j as f32 - 0.1 * b as f32)
                    };
                    v.push(idx);
                    v.push(val);
                }
            }
            Tensor::from_vec(v, (batch, k, 2), dev).and_then(|t| t.to_dtype(dtype))
        }
        ModelConfig::Pmf(c) => {
            let v: Vec<u32> = (0..batch)
                .flat_map(|b| [(b % c.n_users) as u32, ((b * 3 + 1) % c.n_items) as u32])
                .collect();
            Tensor::from_vec(v, (batch, 2), dev)
        }
        ModelConfig::Transformer(c) => {
            let seq = c.max_seq_len - 1;
            let v: Vec<u32> = (0..batch * seq)
                .map(|i| ((i * 5 + 2) % c.vocab_size) as u32)
                .collect();
            Tensor::from_vec(v, (batch, seq), dev)
        }
        _ => {
            let shape = cfg.input_shape(batch);
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|i| ((i as f64) * 0.37).sin() as f32).collect();
            Tensor::from_vec(v, shape, dev).and_then(|t| t.to_dtype(dtype))
        }
    };
    t.expect("test inputs are well-formed")
}

/// Largest absolute difference of two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_dtype(DType::F64))
        .and_then(|d| d.to_scalar::<f64>())
        .expect("same-shape tensors subtract")
}
