//! [`ModelConfig`]: which architecture, at which size. It is the `model` object of a model folder's
//! `config.json`, tagged by `arch`, and is validated before any model is built: a zero width, an
//! unsupported depth or a head count that does not divide the model width is refused with an error
//! naming the field.
//!
//! ```
//! use cumulus_models::config::{ModelConfig, architectures};
//!
//! let cfg: ModelConfig = serde_json::from_str(
//!     r#"{"arch": "mlp", "input_dim": 64, "hidden": [32], "n_outputs": 10}"#,
//! )?;
//! cfg.validate()?;
//! assert!(architectures().contains(&"resnet"));
//! assert!(ModelConfig::default_for("nope").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::blocks::Activation;
use crate::error::{ModelError, Result};

/// Largest hashed feature space of `sparse_logreg`: indices travel as f32, exact up to 2^24.
pub const MAX_SPARSE_FEATURES: usize = 1 << 24;
/// Largest input width, vocabulary, user or item count (rows of a table).
pub const MAX_ROWS: usize = 1 << 24;
/// Largest width of a layer (hidden units, model width, feed-forward width, classes).
pub const MAX_WIDTH: usize = 1 << 20;
/// Largest number of layers (MLP hidden layers, transformer blocks).
pub const MAX_LAYERS: usize = 1024;
/// Largest image side, channel count, sequence length, factor count or pairs per example.
pub const MAX_SIDE: usize = 1 << 16;

/// Every architecture name, in the order `cumulus models list` prints them.
pub fn architectures() -> &'static [&'static str] {
    &[
        "logreg",
        "sparse_logreg",
        "mlp",
        "lenet",
        "resnet",
        "pmf",
        "transformer",
    ]
}

/// A model's architecture and size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum ModelConfig {
    /// Dense logistic (one output) or softmax (several outputs) regression; input F32 `[batch, n_features]`.
    Logreg(LogregConfig),
    /// Logistic regression over hashed sparse features; input F32 `[batch, k, 2]` of (index, value) pairs.
    SparseLogreg(SparseLogregConfig),
    /// Multi-layer perceptron; input F32 `[batch, input_dim]`.
    Mlp(MlpConfig),
    /// LeNet-5-style CNN; input F32 `[batch, in_channels, height, width]`.
    Lenet(LenetConfig),
    /// CIFAR-style ResNet (3x3 stem, BasicBlocks); input F32 `[batch, in_channels, image_size, image_size]`.
    Resnet(ResnetConfig),
    /// Matrix factorization with global, user and item biases; input U32 `[batch, 2]` (user, item).
    Pmf(PmfConfig),
    /// Small transformer encoder classifier; input U32 token ids `[batch, seq]`, `seq <= max_seq_len`.
    Transformer(TransformerConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogregConfig {
    pub n_features: usize,
    /// 1: binary logistic regression (one logit); 2 or more: softmax regression.
    pub n_outputs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseLogregConfig {
    /// Size of the hashed feature space (rows of the weight table), at most 2^24.
    pub n_features: usize,
    /// Outputs (1 for click-through prediction).
    #[serde(default = "one")]
    pub n_outputs: usize,
    /// Typical (index, value) pairs per example (39 for Criteo); used only for shape and cost
    /// estimates: any number of pairs is accepted at run time.
    #[serde(default = "criteo_fields")]
    pub pairs_per_example: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    pub input_dim: usize,
    /// Widths of the hidden layers, in order (may be empty: then it is a linear model).
    pub hidden: Vec<usize>,
    pub n_outputs: usize,
    #[serde(default = "relu")]
    pub activation: Activation,
    /// Dropout probability after each hidden activation, in `[0, 1)`.
    #[serde(default)]
    pub dropout: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LenetConfig {
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub n_classes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResnetConfig {
    /// 18 or 34.
    pub depth: usize,
    pub n_classes: usize,
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Side of the square input images (32 for CIFAR); at least 8.
    #[serde(default = "thirty_two")]
    pub image_size: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PmfConfig {
    pub n_users: usize,
    pub n_items: usize,
    pub n_factors: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    pub vocab_size: usize,
    pub max_seq_len: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub d_ff: usize,
    pub n_classes: usize,
    #[serde(default)]
    pub dropout: f32,
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn thirty_two() -> usize {
    32
}
fn criteo_fields() -> usize {
    39
}
fn relu() -> Activation {
    Activation::Relu
}

/// One input or output tensor as KServe V2 metadata describes it (`-1` marks a variable dimension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<i64>,
    /// KServe datatype: `FP32`, `UINT32`, ...
    pub datatype: String,
}

impl TensorSpec {
    fn new(name: &str, shape: &[i64], datatype: &str) -> Self {
        Self {
            name: name.to_string(),
            shape: shape.to_vec(),
            datatype: datatype.to_string(),
        }
    }
}

fn positive(field: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(ModelError::config(field, "must be at least 1"));
    }
    Ok(())
}

/// `1..=max`: each dimension on its own is bounded, so that a size estimate multiplies sane
/// numbers (their product is held to [`crate::SizeLimits`] before anything is allocated).
fn bounded(field: &str, value: usize, max: usize) -> Result<()> {
    positive(field, value)?;
    if value > max {
        return Err(ModelError::config(
            field,
            format!("must be at most {max}, got {value}"),
        ));
    }
    Ok(())
}

fn probability(field: &str, p: f32) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(ModelError::config(
            field,
            format!("must be in [0, 1), got {p}"),
        ));
    }
    Ok(())
}

impl ModelConfig {
    /// The architecture name (`mlp`, `resnet`, ...), as in `arch`.
    pub fn arch(&self) -> &'static str {
        match self {
            Self::Logreg(_) => "logreg",
            Self::SparseLogreg(_) => "sparse_logreg",
            Self::Mlp(_) => "mlp",
            Self::Lenet(_) => "lenet",
            Self::Resnet(_) => "resnet",
            Self::Pmf(_) => "pmf",
            Self::Transformer(_) => "transformer",
        }
    }

    /// A sensible default config of `arch` (digits/MNIST/CIFAR/MovieLens/Criteo sized).
    pub fn default_for(arch: &str) -> Result<Self> {
        Ok(match arch {
            "logreg" => Self::Logreg(LogregConfig {
                n_features: 64,
                n_outputs: 10,
            }),
            "sparse_logreg" => Self::SparseLogreg(SparseLogregConfig {
                n_features: 1 << 20,
                n_outputs: 1,
                pairs_per_example: 39,
            }),
            "mlp" => Self::Mlp(MlpConfig {
                input_dim: 64,
                hidden: vec![128, 64],
                n_outputs: 10,
                activation: Activation::Relu,
                dropout: 0.0,
            }),
            "lenet" => Self::Lenet(LenetConfig {
                in_channels: 1,
                height: 28,
                width: 28,
                n_classes: 10,
            }),
            "resnet" => Self::Resnet(ResnetConfig {
                depth: 18,
                n_classes: 10,
                in_channels: 3,
                image_size: 32,
            }),
            "pmf" => Self::Pmf(PmfConfig {
                n_users: 943,
                n_items: 1682,
                n_factors: 16,
            }),
            "transformer" => Self::Transformer(TransformerConfig {
                vocab_size: 8192,
                max_seq_len: 128,
                d_model: 128,
                n_heads: 4,
                n_layers: 2,
                d_ff: 512,
                n_classes: 2,
                dropout: 0.1,
            }),
            other => return Err(ModelError::UnknownArchitecture(other.to_string())),
        })
    }

    /// Check every field; the error names the first bad one. Each dimension is bounded on its own
    /// ([`MAX_ROWS`], [`MAX_WIDTH`], [`MAX_LAYERS`], [`MAX_SIDE`]); the model as a whole is
    /// bounded by [`ModelConfig::size`] and [`crate::SizeLimits`].
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Logreg(c) => {
                bounded("n_features", c.n_features, MAX_ROWS)?;
                bounded("n_outputs", c.n_outputs, MAX_WIDTH)
            }
            Self::SparseLogreg(c) => {
                positive("n_features", c.n_features)?;
                if c.n_features > MAX_SPARSE_FEATURES {
                    return Err(ModelError::config(
                        "n_features",
                        format!(
                            "at most {MAX_SPARSE_FEATURES} (indices travel as f32), got {}",
                            c.n_features
                        ),
                    ));
                }
                bounded("n_outputs", c.n_outputs, MAX_WIDTH)?;
                bounded("pairs_per_example", c.pairs_per_example, MAX_SIDE)
            }
            Self::Mlp(c) => {
                bounded("input_dim", c.input_dim, MAX_ROWS)?;
                if c.hidden.len() > MAX_LAYERS {
                    return Err(ModelError::config(
                        "hidden",
                        format!("at most {MAX_LAYERS} hidden layers, got {}", c.hidden.len()),
                    ));
                }
                for (i, &w) in c.hidden.iter().enumerate() {
                    bounded(&format!("hidden[{i}]"), w, MAX_WIDTH)?;
                }
                bounded("n_outputs", c.n_outputs, MAX_WIDTH)?;
                probability("dropout", c.dropout)
            }
            Self::Lenet(c) => {
                bounded("in_channels", c.in_channels, MAX_SIDE)?;
                bounded("n_classes", c.n_classes, MAX_WIDTH)?;
                // conv(5, pad 2) -> pool 2 -> conv(5) -> pool 2 must leave at least 1x1.
                for (field, v) in [("height", c.height), ("width", c.width)] {
                    if v < 12 {
                        return Err(ModelError::config(
                            field,
                            format!("must be at least 12, got {v}"),
                        ));
                    }
                    bounded(field, v, MAX_SIDE)?;
                }
                Ok(())
            }
            Self::Resnet(c) => {
                if c.depth != 18 && c.depth != 34 {
                    return Err(ModelError::config(
                        "depth",
                        format!("must be 18 or 34, got {}", c.depth),
                    ));
                }
                bounded("n_classes", c.n_classes, MAX_WIDTH)?;
                bounded("in_channels", c.in_channels, MAX_SIDE)?;
                if c.image_size < 8 {
                    return Err(ModelError::config(
                        "image_size",
                        format!(
                            "must be at least 8 (three stride-2 stages), got {}",
                            c.image_size
                        ),
                    ));
                }
                bounded("image_size", c.image_size, MAX_SIDE)
            }
            Self::Pmf(c) => {
                bounded("n_users", c.n_users, MAX_ROWS)?;
                bounded("n_items", c.n_items, MAX_ROWS)?;
                bounded("n_factors", c.n_factors, MAX_SIDE)
            }
            Self::Transformer(c) => {
                bounded("vocab_size", c.vocab_size, MAX_ROWS)?;
                bounded("max_seq_len", c.max_seq_len, MAX_SIDE)?;
                bounded("d_model", c.d_model, MAX_SIDE)?;
                positive("n_heads", c.n_heads)?;
                if c.d_model % c.n_heads != 0 {
                    return Err(ModelError::config(
                        "n_heads",
                        format!("must divide d_model = {}, got {}", c.d_model, c.n_heads),
                    ));
                }
                bounded("n_layers", c.n_layers, MAX_LAYERS)?;
                bounded("d_ff", c.d_ff, MAX_WIDTH)?;
                bounded("n_classes", c.n_classes, MAX_WIDTH)?;
                probability("dropout", c.dropout)
            }
        }
    }

    /// A concrete input shape for `batch` examples (sequences at `max_seq_len`, sparse rows with
    /// `pairs_per_example` pairs): what benches and `layer_infos` use.
    pub fn input_shape(&self, batch: usize) -> Vec<usize> {
        match self {
            Self::Logreg(c) => vec![batch, c.n_features],
            Self::SparseLogreg(c) => vec![batch, c.pairs_per_example, 2],
            Self::Mlp(c) => vec![batch, c.input_dim],
            Self::Lenet(c) => vec![batch, c.in_channels, c.height, c.width],
            Self::Resnet(c) => vec![batch, c.in_channels, c.image_size, c.image_size],
            Self::Pmf(_) => vec![batch, 2],
            Self::Transformer(c) => vec![batch, c.max_seq_len],
        }
    }

    /// Whether the model input holds integer ids (`UINT32`) rather than floats.
    pub fn takes_ids(&self) -> bool {
        matches!(self, Self::Pmf(_) | Self::Transformer(_))
    }

    /// The KServe input tensors.
    pub fn inputs(&self) -> Vec<TensorSpec> {
        let spec = match self {
            Self::Logreg(c) => TensorSpec::new("input", &[-1, c.n_features as i64], "FP32"),
            Self::SparseLogreg(_) => TensorSpec::new("input", &[-1, -1, 2], "FP32"),
            Self::Mlp(c) => TensorSpec::new("input", &[-1, c.input_dim as i64], "FP32"),
            Self::Lenet(c) => TensorSpec::new(
                "input",
                &[-1, c.in_channels as i64, c.height as i64, c.width as i64],
                "FP32",
            ),
            Self::Resnet(c) => {
                let s = c.image_size as i64;
                TensorSpec::new("input", &[-1, c.in_channels as i64, s, s], "FP32")
            }
            Self::Pmf(_) => TensorSpec::new("input", &[-1, 2], "UINT32"),
            Self::Transformer(_) => TensorSpec::new("input", &[-1, -1], "UINT32"),
        };
        vec![spec]
    }

    /// The KServe output tensors (logits, or the predicted rating for `pmf`).
    pub fn outputs(&self) -> Vec<TensorSpec> {
        let width = match self {
            Self::Logreg(c) => c.n_outputs,
            Self::SparseLogreg(c) => c.n_outputs,
            Self::Mlp(c) => c.n_outputs,
            Self::Lenet(c) => c.n_classes,
            Self::Resnet(c) => c.n_classes,
            Self::Transformer(c) => c.n_classes,
            Self::Pmf(_) => return vec![TensorSpec::new("output", &[-1], "FP32")],
        };
        vec![TensorSpec::new("output", &[-1, width as i64], "FP32")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_validates_and_roundtrips_through_json() {
        for arch in architectures() {
            let cfg = ModelConfig::default_for(arch).expect("listed architectures have defaults");
            cfg.validate().expect("defaults are valid");
            assert_eq!(cfg.arch(), *arch);
            let json = serde_json::to_string(&cfg).expect("configs serialize");
            let back: ModelConfig = serde_json::from_str(&json).expect("own output parses");
            assert_eq!(back, cfg);
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                r#"{"arch":"mlp","input_dim":4,"hidden":[3,0],"n_outputs":2}"#,
                "hidden[1]",
            ),
            (r#"{"arch":"resnet","depth":50,"n_classes":10}"#, "depth"),
            (
                r#"{"arch":"transformer","vocab_size":9,"max_seq_len":4,"d_model":6,"n_heads":4,"n_layers":1,"d_ff":8,"n_classes":2}"#,
                "n_heads",
            ),
            (
                r#"{"arch":"pmf","n_users":0,"n_items":3,"n_factors":2}"#,
                "n_users",
            ),
            (
                r#"{"arch":"lenet","in_channels":1,"height":8,"width":28,"n_classes":10}"#,
                "height",
            ),
            (
                r#"{"arch":"mlp","input_dim":4,"hidden":[],"n_outputs":2,"dropout":1.5}"#,
                "dropout",
            ),
            (
                r#"{"arch":"mlp","input_dim":64,"hidden":[100000000],"n_outputs":10}"#,
                "hidden[0]",
            ),
            (
                r#"{"arch":"transformer","vocab_size":9,"max_seq_len":4000000,"d_model":8,"n_heads":2,"n_layers":1,"d_ff":8,"n_classes":2}"#,
                "max_seq_len",
            ),
            (
                r#"{"arch":"resnet","depth":18,"n_classes":10,"image_size":1000000}"#,
                "image_size",
            ),
        ];
        for (json, field) in cases {
            let cfg: ModelConfig = serde_json::from_str(json).expect("well-formed json");
            let err = cfg.validate().expect_err(json).to_string();
            assert!(err.contains(&format!("`{field}`")), "{err}");
        }
    }

    #[test]
    fn unknown_fields_and_architectures_are_refused() {
        let extra = r#"{"arch":"pmf","n_users":1,"n_items":3,"n_factors":2,"colour":1}"#;
        let err = serde_json::from_str::<ModelConfig>(extra).expect_err("unknown field");
        assert!(err.to_string().contains("colour"), "{err}");
        assert!(serde_json::from_str::<ModelConfig>(r#"{"arch":"vgg"}"#).is_err());
        assert!(matches!(
            ModelConfig::default_for("vgg"),
            Err(ModelError::UnknownArchitecture(_))
        ));
    }
}
