//! The zoo's architectures as lists of [`LayerProgram`]s: the same layer names, kinds and
//! parameter names, shapes and order as `cumulus_models::zoo` builds them (the tests compare
//! the two for every architecture).

use cumulus_models::ModelConfig;
use cumulus_models::config::TransformerConfig;

use super::layers::{Conv, LayerOp};
use super::{LayerProgram, ParamSpec};
use crate::backend::Act;
use crate::error::{GpuError, Result};

/// Builds the layers of one model, naming parameters as the zoo does.
struct LayerBuilder {
    name: String,
    params: Vec<ParamSpec>,
}

impl LayerBuilder {
    fn new(index: usize) -> Self {
        Self {
            name: format!("layers.{index}"),
            params: Vec::new(),
        }
    }

    fn p(&mut self, local: &str, shape: &[usize]) -> &mut Self {
        self.params.push(ParamSpec {
            name: format!("{}.{local}", self.name),
            shape: shape.to_vec(),
            trainable: true,
        });
        self
    }

    fn linear(&mut self, prefix: &str, fan_in: usize, fan_out: usize) -> &mut Self {
        self.p(&join(prefix, "weight"), &[fan_out, fan_in])
            .p(&join(prefix, "bias"), &[fan_out])
    }

    fn conv(&mut self, prefix: &str, conv: &Conv) -> &mut Self {
        self.p(
            &join(prefix, "weight"),
            &[conv.c_out, conv.c_in, conv.k, conv.k],
        )
    }

    fn norm(&mut self, prefix: &str, channels: usize) -> &mut Self {
        self.p(&join(prefix, "weight"), &[channels])
            .p(&join(prefix, "bias"), &[channels])
    }

    fn batch_norm(&mut self, prefix: &str, channels: usize) -> &mut Self {
        self.norm(prefix, channels);
        for stat in ["running_mean", "running_var"] {
            self.params.push(ParamSpec {
                name: format!("{}.{}", self.name, join(prefix, stat)),
                shape: vec![channels],
                trainable: false,
            });
        }
        self
    }

    fn finish(self, kind: &'static str, op: LayerOp) -> LayerProgram {
        LayerProgram {
            name: self.name,
            kind,
            op,
            params: self.params,
        }
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}.{b}")
    }
}

fn dense(
    i: usize,
    fan_in: usize,
    fan_out: usize,
    act: Option<Act>,
    flatten: bool,
    dropout: f32,
) -> LayerProgram {
    let mut b = LayerBuilder::new(i);
    b.linear("", fan_in, fan_out);
    let kind = match (flatten, act) {
        (true, _) => "flatten_linear",
        (false, Some(_)) => "linear_activation",
        (false, None) => "linear",
    };
    b.finish(
        kind,
        LayerOp::Dense {
            fan_in,
            fan_out,
            act: act.unwrap_or(Act::Identity),
            flatten,
            dropout,
        },
    )
}

fn conv3(c_in: usize, c_out: usize, stride: usize) -> Conv {
    Conv {
        c_in,
        c_out,
        k: 3,
        pad: 1,
        stride,
    }
}

/// Every layer of `cfg`, in order, as the zoo builds them.
pub(super) fn all_layers(cfg: &ModelConfig) -> Result<Vec<LayerProgram>> {
    let mut out = Vec::new();
    match cfg {
        ModelConfig::Logreg(c) => out.push(dense(0, c.n_features, c.n_outputs, None, false, 0.0)),
        ModelConfig::SparseLogreg(c) => {
            let mut b = LayerBuilder::new(0);
            b.p("weight", &[c.n_features, c.n_outputs])
                .p("bias", &[c.n_outputs]);
            out.push(b.finish(
                "sparse_linear",
                LayerOp::SparseLinear {
                    n_features: c.n_features,
                    n_out: c.n_outputs,
                },
            ));
        }
        ModelConfig::Mlp(c) => {
            let mut fan_in = c.input_dim;
            for (i, &width) in c.hidden.iter().enumerate() {
                let act = Some(Act::from(c.activation));
                out.push(dense(i, fan_in, width, act, false, c.dropout));
                fan_in = width;
            }
            out.push(dense(c.hidden.len(), fan_in, c.n_outputs, None, false, 0.0));
        }
        ModelConfig::Lenet(c) => {
            let h = ((c.height / 2) - 4) / 2;
            let w = ((c.width / 2) - 4) / 2;
            for (i, (c_in, c_out, pad)) in
                [(c.in_channels, 6, 2), (6, 16, 0)].into_iter().enumerate()
            {
                let conv = Conv {
                    c_in,
                    c_out,
                    k: 5,
                    pad,
                    stride: 1,
                };
                let mut b = LayerBuilder::new(i);
                b.conv("", &conv).p("bias", &[c_out]);
                out.push(b.finish("conv_pool", LayerOp::ConvPool { conv }));
            }
            out.push(dense(2, 16 * h * w, 120, Some(Act::Relu), true, 0.0));
            out.push(dense(3, 120, 84, Some(Act::Relu), false, 0.0));
            out.push(dense(4, 84, c.n_classes, None, false, 0.0));
        }
        ModelConfig::Resnet(c) => {
            let blocks: [usize; 4] = match c.depth {
                18 => [2, 2, 2, 2],
                34 => [3, 4, 6, 3],
                other => {
                    return Err(GpuError::config(
                        "depth",
                        format!("must be 18 or 34, got {other}"),
                    ));
                }
            };
            let stem = conv3(c.in_channels, 64, 1);
            let mut b = LayerBuilder::new(0);
            b.conv("conv", &stem).batch_norm("bn", 64);
            out.push(b.finish("conv_bn_relu", LayerOp::ConvBnRelu { conv: stem }));
            let mut c_in = 64;
            for (stage, &count) in blocks.iter().enumerate() {
                let c_out = 64 << stage;
                for blk in 0..count {
                    let stride = if stage > 0 && blk == 0 { 2 } else { 1 };
                    let conv1 = conv3(c_in, c_out, stride);
                    let conv2 = conv3(c_out, c_out, 1);
                    let shortcut = (stride != 1 || c_in != c_out).then_some(Conv {
                        c_in,
                        c_out,
                        k: 1,
                        pad: 0,
                        stride,
                    });
                    let mut b = LayerBuilder::new(out.len());
                    b.conv("conv1", &conv1)
                        .batch_norm("bn1", c_out)
                        .conv("conv2", &conv2)
                        .batch_norm("bn2", c_out);
                    if let Some(sc) = &shortcut {
                        b.conv("shortcut.conv", sc).batch_norm("shortcut.bn", c_out);
                    }
                    out.push(b.finish(
                        "basic_block",
                        LayerOp::BasicBlock {
                            conv1,
                            conv2,
                            shortcut,
                        },
                    ));
                    c_in = c_out;
                }
            }
            let mut b = LayerBuilder::new(out.len());
            b.linear("fc", c_in, c.n_classes);
            out.push(b.finish(
                "avgpool_linear",
                LayerOp::AvgPoolLinear {
                    channels: c_in,
                    n_out: c.n_classes,
                },
            ));
        }
        ModelConfig::Pmf(c) => {
            let mut b = LayerBuilder::new(0);
            b.p("user_factors", &[c.n_users, c.n_factors])
                .p("item_factors", &[c.n_items, c.n_factors])
                .p("user_bias", &[c.n_users])
                .p("item_bias", &[c.n_items])
                .p("global_bias", &[1]);
            out.push(b.finish(
                "matrix_factorization",
                LayerOp::MatrixFactorization {
                    n_users: c.n_users,
                    n_items: c.n_items,
                    factors: c.n_factors,
                },
            ));
        }
        ModelConfig::Transformer(c) => transformer_layers(c, &mut out),
    }
    Ok(out)
}

fn transformer_layers(c: &TransformerConfig, out: &mut Vec<LayerProgram>) {
    let d = c.d_model;
    let mut b = LayerBuilder::new(0);
    b.p("tok_emb.weight", &[c.vocab_size, d])
        .p("pos_emb.weight", &[c.max_seq_len, d]);
    out.push(b.finish(
        "embedding",
        LayerOp::Embedding {
            vocab: c.vocab_size,
            max_seq: c.max_seq_len,
            d,
        },
    ));
    for i in 1..=c.n_layers {
        let mut b = LayerBuilder::new(i);
        b.norm("ln1", d);
        for proj in ["q", "k", "v", "o"] {
            b.linear(&format!("attn.{proj}"), d, d);
        }
        b.norm("ln2", d)
            .linear("mlp.fc1", d, c.d_ff)
            .linear("mlp.fc2", c.d_ff, d);
        out.push(b.finish(
            "transformer_block",
            LayerOp::TransformerBlock {
                d,
                n_heads: c.n_heads,
                d_ff: c.d_ff,
            },
        ));
    }
    let mut b = LayerBuilder::new(c.n_layers + 1);
    b.norm("ln", d).linear("fc", d, c.n_classes);
    out.push(b.finish(
        "pool_classifier",
        LayerOp::PoolClassifier {
            d,
            n_out: c.n_classes,
        },
    ));
}
