//! [`ModelSize`]: how much a model needs, computed from its [`ModelConfig`] alone, before anything
//! is allocated — so that `hidden = [100000000]` is refused with a message instead of a process
//! trying to allocate 51 GB and aborting.
//!
//! Every product is checked: an overflow is an error naming the config key that caused it. The
//! parameter count is exact (it mirrors the zoo's builders, and a test holds every architecture to
//! [`Model::total_params`](crate::Model::total_params)); activation bytes are an estimate that
//! counts the intermediate tensors candle materializes per layer, good to a small factor — enough
//! to refuse the absurd and to size a function's memory.
//!
//! ```
//! use cumulus_models::{ModelConfig, SizeLimits};
//!
//! // Each width is within its bound (`hidden = [100000000]` is refused by `validate` alone);
//! // together they make 10^12 parameters.
//! let cfg: ModelConfig = serde_json::from_str(
//!     r#"{"arch": "mlp", "input_dim": 1000, "hidden": [1000000, 1000000], "n_outputs": 10}"#,
//! )?;
//! let size = cfg.size(1)?;
//! assert_eq!(size.params, 1000 * 1_000_000 + 1_000_000 + 1_000_000 * 1_000_000 + 1_000_000 + 1_000_000 * 10 + 10);
//! let err = SizeLimits::default().check(&cfg, &size).unwrap_err();
//! assert!(err.to_string().contains("over the limit"), "{err}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::Serialize;

use crate::config::{
    LenetConfig, LogregConfig, MlpConfig, ModelConfig, PmfConfig, ResnetConfig, SparseLogregConfig,
    TransformerConfig,
};
use crate::error::{ModelError, Result};

/// Most trainable parameters a model may have by default: 2^31 (8 GiB of F32 weights).
pub const MAX_PARAMS: u64 = 1 << 31;
/// Largest batch a size estimate (and `models inspect --batch`) accepts by default.
pub const MAX_BATCH: usize = 1 << 20;
/// Bytes per element of the F32 models the estimate describes.
const F32_BYTES: u64 = 4;

/// What a model needs, from its config alone (F32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModelSize {
    /// The batch the activation figures are for.
    pub batch: u64,
    /// Trainable parameters (what `total params` prints).
    pub params: u64,
    /// Elements of every tensor, buffers (BatchNorm running statistics) included.
    pub tensor_elements: u64,
    /// Bytes of every tensor at F32: what a model folder's weights file holds and a stage keeps.
    pub param_bytes: u64,
    /// Peak activation bytes of one forward pass at `batch` (no gradient kept): the largest layer's
    /// input, intermediates and output.
    pub activation_bytes: u64,
    /// Activation bytes a training step keeps for its backward pass at `batch`: the input and
    /// every layer's intermediates and output.
    pub train_activation_bytes: u64,
}

/// Ceilings a model must stay under before it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    /// Most trainable parameters.
    pub max_params: u64,
    /// Largest batch of an estimate.
    pub max_batch: usize,
}

impl Default for SizeLimits {
    fn default() -> Self {
        Self {
            max_params: MAX_PARAMS,
            max_batch: MAX_BATCH,
        }
    }
}

impl SizeLimits {
    /// Refuses a model whose parameter count is over the limit; the error names the size in
    /// parameters and bytes, and the limit.
    pub fn check(&self, config: &ModelConfig, size: &ModelSize) -> Result<()> {
        if size.params > self.max_params {
            return Err(ModelError::TooLarge {
                what: format!("{} model", config.arch()),
                size: size.params,
                limit: self.max_params,
                unit: "parameters",
                detail: format!(
                    "{} of F32 weights; make the model smaller or raise the limit",
                    human_bytes(size.param_bytes)
                ),
            });
        }
        Ok(())
    }

    /// Refuses a batch of 0 or over the limit.
    pub fn check_batch(&self, batch: usize) -> Result<()> {
        if batch == 0 {
            return Err(ModelError::config("batch", "must be at least 1"));
        }
        if batch > self.max_batch {
            return Err(ModelError::TooLarge {
                what: "batch".into(),
                size: batch as u64,
                limit: self.max_batch as u64,
                unit: "examples",
                detail: "a larger batch is never run in one piece".into(),
            });
        }
        Ok(())
    }
}

/// `12.3 GiB`-style bytes for messages.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Checked arithmetic that names the config key an overflow comes from.
#[derive(Clone, Copy)]
struct Checked<'a>(&'a str);

impl Checked<'_> {
    fn overflow(&self) -> ModelError {
        ModelError::config(self.0, "makes the model's size overflow 64 bits")
    }

    fn mul(&self, factors: &[u64]) -> Result<u64> {
        factors
            .iter()
            .try_fold(1u64, |acc, &f| acc.checked_mul(f))
            .ok_or_else(|| self.overflow())
    }

    fn add(&self, terms: &[u64]) -> Result<u64> {
        terms
            .iter()
            .try_fold(0u64, |acc, &t| acc.checked_add(t))
            .ok_or_else(|| self.overflow())
    }

    /// Elements of a Linear `fan_in -> fan_out` (weight and bias).
    fn linear(&self, fan_in: u64, fan_out: u64) -> Result<u64> {
        self.add(&[self.mul(&[fan_in, fan_out])?, fan_out])
    }
}

/// One layer as the estimate sees it; activation figures are per example.
struct LayerCost<'a> {
    /// The config key that sizes this layer (named when its arithmetic overflows).
    key: &'a str,
    params: u64,
    buffers: u64,
    /// Elements of the intermediate tensors of one forward pass.
    internal: u64,
    /// Elements of the output.
    output: u64,
}

fn u(v: usize) -> u64 {
    v as u64
}

fn aggregate(batch: usize, input: u64, layers: &[LayerCost<'_>]) -> Result<ModelSize> {
    let batch = u(batch);
    let (mut params, mut elements) = (0u64, 0u64);
    let (mut peak, mut kept) = (0u64, input);
    let mut previous = input;
    for l in layers {
        let c = Checked(l.key);
        params = c.add(&[params, l.params])?;
        elements = c.add(&[elements, l.params, l.buffers])?;
        peak = peak.max(c.add(&[previous, l.internal, l.output])?);
        kept = c.add(&[kept, l.internal, l.output])?;
        previous = l.output;
    }
    let key = layers.last().map_or("batch", |l| l.key);
    let by_batch = |per_example: u64| {
        per_example
            .checked_mul(batch)
            .and_then(|e| e.checked_mul(F32_BYTES))
            .ok_or_else(|| {
                ModelError::config(
                    "batch",
                    format!("{batch} examples make the activation estimate overflow 64 bits"),
                )
            })
    };
    Ok(ModelSize {
        batch,
        params,
        tensor_elements: elements,
        param_bytes: Checked(key).mul(&[elements, F32_BYTES])?,
        activation_bytes: by_batch(peak)?,
        train_activation_bytes: by_batch(kept)?,
    })
}

impl ModelConfig {
    /// The model's size and its activations at `batch`, from the config alone, with checked
    /// arithmetic (an overflow names the key); the config is validated first.
    pub fn size(&self, batch: usize) -> Result<ModelSize> {
        self.validate()?;
        match self {
            Self::Logreg(c) => logreg(c, batch),
            Self::SparseLogreg(c) => sparse_logreg(c, batch),
            Self::Mlp(c) => mlp(c, batch),
            Self::Lenet(c) => lenet(c, batch),
            Self::Resnet(c) => resnet(c, batch),
            Self::Pmf(c) => pmf(c, batch),
            Self::Transformer(c) => transformer(c, batch),
        }
    }
}

/// A Linear plus an optional activation (and dropout): matmul and bias-add results, then the
/// activation's and the dropout's.
fn dense<'a>(
    key: &'a str,
    fan_in: u64,
    fan_out: u64,
    activation: bool,
    dropout: bool,
) -> Result<LayerCost<'a>> {
    let c = Checked(key);
    let extra = u64::from(activation) + u64::from(dropout);
    Ok(LayerCost {
        key,
        params: c.linear(fan_in, fan_out)?,
        buffers: 0,
        internal: c.mul(&[fan_out, 1 + extra])?,
        output: fan_out,
    })
}

fn logreg(c: &LogregConfig, batch: usize) -> Result<ModelSize> {
    let layer = dense("n_features", u(c.n_features), u(c.n_outputs), false, false)?;
    aggregate(batch, u(c.n_features), &[layer])
}

fn sparse_logreg(c: &SparseLogregConfig, batch: usize) -> Result<ModelSize> {
    let ck = Checked("n_features");
    let (k, out) = (u(c.pairs_per_example), u(c.n_outputs));
    let layer = LayerCost {
        key: "n_features",
        params: ck.linear(u(c.n_features), out)?,
        buffers: 0,
        // index and value columns, the gathered rows and their weighted copy, the sum.
        internal: Checked("pairs_per_example").add(&[
            2 * k,
            Checked("pairs_per_example").mul(&[2, k, out])?,
            out,
        ])?,
        output: out,
    };
    aggregate(batch, 2 * k, &[layer])
}

fn mlp(c: &MlpConfig, batch: usize) -> Result<ModelSize> {
    let keys: Vec<String> = (0..c.hidden.len())
        .map(|i| format!("hidden[{i}]"))
        .collect();
    let mut layers = Vec::with_capacity(c.hidden.len() + 1);
    let mut fan_in = u(c.input_dim);
    for (key, &w) in keys.iter().zip(&c.hidden) {
        layers.push(dense(key, fan_in, u(w), true, c.dropout > 0.0)?);
        fan_in = u(w);
    }
    layers.push(dense("n_outputs", fan_in, u(c.n_outputs), false, false)?);
    aggregate(batch, u(c.input_dim), &layers)
}

/// A 5x5 convolution (with bias), ReLU and 2x2 pooling: conv, bias-add and ReLU results and the
/// pooling's cropped copy, then the pooled output.
fn conv_pool<'a>(
    key: &'a str,
    c_in: u64,
    c_out: u64,
    side: (u64, u64),
    pooled: (u64, u64),
) -> Result<LayerCost<'a>> {
    let c = Checked(key);
    Ok(LayerCost {
        key,
        params: c.add(&[c.mul(&[c_out, c_in, 25])?, c_out])?,
        buffers: 0,
        internal: c.mul(&[4, c_out, side.0, side.1])?,
        output: c.mul(&[c_out, pooled.0, pooled.1])?,
    })
}

fn lenet(c: &LenetConfig, batch: usize) -> Result<ModelSize> {
    let (h, w) = (u(c.height), u(c.width));
    // conv 5x5 pad 2 keeps the side, pool halves it; conv 5x5 takes 4 off, pool halves it.
    let shrink = |key: &str, side: u64| {
        (side / 2)
            .checked_sub(4)
            .filter(|&s| s >= 2)
            .ok_or_else(|| ModelError::config(key, format!("must be at least 12, got {side}")))
    };
    let (h1, w1) = (h / 2, w / 2);
    let (h2, w2) = (shrink("height", h)?, shrink("width", w)?);
    let (h3, w3) = (h2 / 2, w2 / 2);
    let features = Checked("height").mul(&[16, h3, w3])?;
    let layers = [
        conv_pool("in_channels", u(c.in_channels), 6, (h, w), (h1, w1))?,
        conv_pool("height", 6, 16, (h2, w2), (h3, w3))?,
        LayerCost {
            key: "height",
            params: Checked("height").linear(features, 120)?,
            buffers: 0,
            internal: features + 2 * 120,
            output: 120,
        },
        dense("n_classes", 120, 84, true, false)?,
        dense("n_classes", 84, u(c.n_classes), false, false)?,
    ];
    let input = Checked("in_channels").mul(&[u(c.in_channels), h, w])?;
    aggregate(batch, input, &layers)
}

/// Elements of a BatchNorm's trainable (weight, bias) and buffer (running mean, variance) tensors.
const BN: u64 = 2;

fn resnet(c: &ResnetConfig, batch: usize) -> Result<ModelSize> {
    let blocks: &[u64] = if c.depth == 34 {
        &[3, 4, 6, 3]
    } else {
        &[2, 2, 2, 2]
    };
    let ck = Checked("image_size");
    let mut side = u(c.image_size);
    let plane = |channels: u64, side: u64| ck.mul(&[channels, side, side]);
    // Stem: 3x3 conv (no bias), BatchNorm (about six intermediates), ReLU.
    let mut layers = vec![LayerCost {
        key: "in_channels",
        params: Checked("in_channels").add(&[
            Checked("in_channels").mul(&[64, u(c.in_channels), 9])?,
            BN * 64,
        ])?,
        buffers: BN * 64,
        internal: ck.mul(&[8, plane(64, side)?])?,
        output: plane(64, side)?,
    }];
    let mut c_in = 64u64;
    for (stage, &count) in blocks.iter().enumerate() {
        let c_out = 64u64 << stage;
        for b in 0..count {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            side = (side - 1) / stride + 1;
            let shortcut = if stride != 1 || c_in != c_out {
                c_out * c_in + BN * c_out
            } else {
                0
            };
            let params = 9 * c_out * c_in + 9 * c_out * c_out + 2 * BN * c_out + shortcut;
            let buffers = 2 * BN * c_out + if shortcut > 0 { BN * c_out } else { 0 };
            let out = plane(c_out, side)?;
            // Two conv + BatchNorm chains, the shortcut, the sum and two ReLUs.
            layers.push(LayerCost {
                key: "image_size",
                params,
                buffers,
                internal: ck.mul(&[16, out])?,
                output: out,
            });
            c_in = c_out;
        }
    }
    let n = u(c.n_classes);
    layers.push(LayerCost {
        key: "n_classes",
        params: Checked("n_classes").linear(c_in, n)?,
        buffers: 0,
        internal: ck.add(&[ck.mul(&[c_in, side])?, c_in, n])?,
        output: n,
    });
    let input =
        Checked("in_channels").mul(&[u(c.in_channels), u(c.image_size), u(c.image_size)])?;
    aggregate(batch, input, &layers)
}

fn pmf(c: &PmfConfig, batch: usize) -> Result<ModelSize> {
    let k = u(c.n_factors);
    let params = Checked("n_users").add(&[
        Checked("n_users").mul(&[u(c.n_users), k + 1])?,
        Checked("n_items").mul(&[u(c.n_items), k + 1])?,
        1,
    ])?;
    // Ids and their columns, the two factor rows and their product, the sum and the biases.
    let layer = LayerCost {
        key: "n_factors",
        params,
        buffers: 0,
        internal: Checked("n_factors").add(&[Checked("n_factors").mul(&[3, k])?, 8])?,
        output: 1,
    };
    aggregate(batch, 2, &[layer])
}

fn transformer(c: &TransformerConfig, batch: usize) -> Result<ModelSize> {
    let (s, d, ff, h) = (u(c.max_seq_len), u(c.d_model), u(c.d_ff), u(c.n_heads));
    let cd = Checked("d_model");
    let sd = Checked("max_seq_len").mul(&[s, d])?;
    let mut layers = vec![LayerCost {
        key: "vocab_size",
        params: Checked("vocab_size").add(&[
            Checked("vocab_size").mul(&[u(c.vocab_size), d])?,
            Checked("max_seq_len").mul(&[s, d])?,
        ])?,
        buffers: 0,
        // Gathered token rows, plus positions, dropout.
        internal: cd.mul(&[2, sd])?,
        output: sd,
    }];
    let block_params = cd.add(&[
        4 * d,
        cd.mul(&[4, cd.linear(d, d)?])?,
        Checked("d_ff").linear(d, ff)?,
        Checked("d_ff").linear(ff, d)?,
    ])?;
    // Layer norms, projections and head reshapes (about 26 per position and width), the attention
    // scores and their softmax (4 per head and position pair), the MLP's hidden layer (3).
    let block_internal = Checked("max_seq_len").add(&[
        cd.mul(&[26, sd])?,
        Checked("max_seq_len").mul(&[4, h, s, s])?,
        Checked("d_ff").mul(&[3, s, ff])?,
    ])?;
    for _ in 0..c.n_layers {
        layers.push(LayerCost {
            key: "n_layers",
            params: block_params,
            buffers: 0,
            internal: block_internal,
            output: sd,
        });
    }
    let n = u(c.n_classes);
    layers.push(LayerCost {
        key: "n_classes",
        params: Checked("n_classes").add(&[2 * d, Checked("n_classes").linear(d, n)?])?,
        buffers: 0,
        internal: cd.add(&[cd.mul(&[4, sd])?, d, 2 * n])?,
        output: n,
    });
    aggregate(batch, s, &layers)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::Model;
    use crate::config::architectures;

    #[test]
    fn the_estimate_counts_exactly_the_parameters_the_zoo_builds() {
        let mut configs: Vec<ModelConfig> = architectures()
            .iter()
            .map(|a| ModelConfig::default_for(a).expect("listed architectures have defaults"))
            .collect();
        configs.push(
            serde_json::from_str(
                r#"{"arch":"resnet","depth":34,"n_classes":7,"in_channels":1,"image_size":9}"#,
            )
            .expect("valid json"),
        );
        configs.push(
            serde_json::from_str(
                r#"{"arch":"mlp","input_dim":5,"hidden":[3,9,2],"n_outputs":4,"dropout":0.5}"#,
            )
            .expect("valid json"),
        );
        configs.push(
            serde_json::from_str(
                r#"{"arch":"lenet","in_channels":3,"height":13,"width":40,"n_classes":5}"#,
            )
            .expect("valid json"),
        );
        for cfg in configs {
            let model = Model::new(&cfg, &Device::Cpu).expect("the config builds");
            let size = cfg.size(3).expect("small configs have a size");
            assert_eq!(size.params, model.total_params() as u64, "{cfg:?}");
            let elements: usize = model.param_infos().iter().map(|p| p.numel()).sum();
            assert_eq!(size.tensor_elements, elements as u64, "{cfg:?}");
            assert_eq!(size.param_bytes, 4 * elements as u64);
            assert!(
                size.activation_bytes > 0 && size.activation_bytes <= size.train_activation_bytes
            );
        }
    }

    #[test]
    fn activations_grow_with_the_batch() {
        let cfg = ModelConfig::default_for("resnet").expect("resnet has a default");
        let one = cfg.size(1).expect("size");
        let many = cfg.size(64).expect("size");
        assert_eq!(many.activation_bytes, 64 * one.activation_bytes);
        assert_eq!(many.params, one.params);
    }

    #[test]
    fn the_largest_config_is_sized_without_overflow_and_a_huge_batch_names_the_key() {
        // Every dimension at its bound: the bounds keep the parameter arithmetic within u64
        // (the ceiling then refuses it); only a batch can overflow the activation estimate.
        let cfg: ModelConfig = serde_json::from_str(
            r#"{"arch":"transformer","vocab_size":16777216,"max_seq_len":65536,"d_model":65536,"n_heads":65536,"n_layers":1024,"d_ff":1048576,"n_classes":1048576}"#,
        )
        .expect("valid json");
        let size = cfg.size(1).expect("sized");
        assert!(SizeLimits::default().check(&cfg, &size).is_err());
        let err = cfg.size(MAX_BATCH).expect_err("overflows").to_string();
        assert!(err.contains("`batch`") && err.contains("overflow"), "{err}");
        let big_batch = ModelConfig::default_for("transformer")
            .expect("default")
            .size(usize::MAX)
            .expect_err("batch overflows")
            .to_string();
        assert!(big_batch.contains("`batch`"), "{big_batch}");
    }

    #[test]
    fn the_ceiling_refuses_with_the_size_and_the_limit() {
        let cfg: ModelConfig = serde_json::from_str(
            r#"{"arch":"mlp","input_dim":64,"hidden":[1000000, 1000000],"n_outputs":10}"#,
        )
        .expect("valid json");
        let size = cfg.size(1).expect("the estimate itself fits in u64");
        let err = SizeLimits::default()
            .check(&cfg, &size)
            .expect_err("over 2^31")
            .to_string();
        assert!(err.contains(&size.params.to_string()), "{err}");
        assert!(err.contains(&MAX_PARAMS.to_string()), "{err}");
        assert!(err.contains("TiB of F32 weights"), "{err}");
        let limits = SizeLimits {
            max_params: 100,
            ..SizeLimits::default()
        };
        let small = ModelConfig::default_for("logreg").expect("default");
        assert!(limits.check(&small, &small.size(1).expect("size")).is_err());
        assert!(SizeLimits::default().check_batch(MAX_BATCH + 1).is_err());
        assert!(SizeLimits::default().check_batch(0).is_err());
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
