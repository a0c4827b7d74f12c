//! Small transformer encoder classifier (pre-norm blocks, as in ViT / GPT-2).
//!
//! | layer | kind | does |
//! |---|---|---|
//! | `layers.0` | `embedding` | `tok_emb[ids] + pos_emb[0..seq]`, dropout; U32 `[batch, seq]` -> `[batch, seq, d]` |
//! | `layers.1 ..= layers.N` | `transformer_block` | `x + attn(ln1(x))`, then `x + mlp(ln2(x))` (GELU) |
//! | `layers.N+1` | `pool_classifier` | `ln`, mean over the sequence, Linear -> `[batch, n_classes]` |
//!
//! Attention has no mask: every position (padding included) takes part, and the pool averages all
//! `seq` positions, so callers that pad should pad consistently.

use candle_core::{DType, Tensor};

use crate::blocks::{
    LayerNorm, Linear, check_ids, dropout, gather_rows, softmax_last_dim, to_candle,
};
use crate::config::TransformerConfig;
use crate::error::{ModelError, Result};
use crate::layer::{
    Init, Layer, ParamBuilder, ParamInfo, expect_dim, expect_rank, sat_mul, sat_sum,
};

/// Token and learned position embeddings.
pub struct Embedding {
    name: String,
    params: Vec<ParamInfo>,
    tok: Tensor,
    pos: Tensor,
    vocab_size: usize,
    max_seq_len: usize,
    d_model: usize,
    dropout: f32,
}

impl Embedding {
    pub fn new(pb: &mut ParamBuilder, name: &str, cfg: &TransformerConfig) -> Result<Self> {
        let mut scope = pb.scope(name);
        let tok = scope.param(
            "tok_emb.weight",
            &[cfg.vocab_size, cfg.d_model],
            Init::Normal(0.02),
        )?;
        let pos = scope.param(
            "pos_emb.weight",
            &[cfg.max_seq_len, cfg.d_model],
            Init::Normal(0.02),
        )?;
        Ok(Self {
            name: name.to_string(),
            params: scope.finish(),
            tok,
            pos,
            vocab_size: cfg.vocab_size,
            max_seq_len: cfg.max_seq_len,
            d_model: cfg.d_model,
            dropout: cfg.dropout,
        })
    }
}

impl Layer for Embedding {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "embedding"
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        expect_rank(&self.name, input, 2, "[batch, seq] token ids")?;
        if input[1] == 0 || input[1] > self.max_seq_len {
            return Err(ModelError::input(
                &self.name,
                format!(
                    "sequence length {} not in 1..={}",
                    input[1], self.max_seq_len
                ),
            ));
        }
        Ok(vec![input[0], input[1], self.d_model])
    }

    fn check_input(&self, xs: &Tensor) -> Result<()> {
        check_ids(&self.name, "token id", xs, self.vocab_size)
    }

    fn flops(&self, input: &[usize]) -> u64 {
        sat_mul(input).saturating_mul(self.d_model as u64)
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (_, seq) = xs.dims2()?;
        if seq > self.max_seq_len {
            candle_core::bail!(
                "{}: sequence length {seq} exceeds max_seq_len {}",
                self.name,
                self.max_seq_len
            )
        }
        check_ids(&self.name, "token id", xs, self.vocab_size).map_err(to_candle)?;
        let ids = xs.to_dtype(DType::U32)?;
        let tok = gather_rows(&self.tok, &ids)?;
        let ys = tok.broadcast_add(&self.pos.narrow(0, 0, seq)?)?;
        dropout(&ys, self.dropout, train)
    }
}

/// One pre-norm encoder block: multi-head self-attention and a GELU MLP, each residual.
pub struct Block {
    name: String,
    params: Vec<ParamInfo>,
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    n_heads: usize,
    d_model: usize,
    d_ff: usize,
    dropout: f32,
}

impl Block {
    pub fn new(pb: &mut ParamBuilder, name: &str, cfg: &TransformerConfig) -> Result<Self> {
        let d = cfg.d_model;
        let mut scope = pb.scope(name);
        let ln1 = LayerNorm::new(&mut scope, "ln1", d)?;
        let q = Linear::new(&mut scope, "attn.q", d, d)?;
        let k = Linear::new(&mut scope, "attn.k", d, d)?;
        let v = Linear::new(&mut scope, "attn.v", d, d)?;
        let o = Linear::new(&mut scope, "attn.o", d, d)?;
        let ln2 = LayerNorm::new(&mut scope, "ln2", d)?;
        let fc1 = Linear::new(&mut scope, "mlp.fc1", d, cfg.d_ff)?;
        let fc2 = Linear::new(&mut scope, "mlp.fc2", cfg.d_ff, d)?;
        Ok(Self {
            name: name.to_string(),
            params: scope.finish(),
            ln1,
            q,
            k,
            v,
            o,
            ln2,
            fc1,
            fc2,
            n_heads: cfg.n_heads,
            d_model: d,
            d_ff: cfg.d_ff,
            dropout: cfg.dropout,
        })
    }

    fn attention(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, d) = xs.dims3()?;
        let dh = d / self.n_heads;
        let heads = |t: Tensor| {
            t.reshape((b, s, self.n_heads, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.q.forward(xs)?)?;
        let k = heads(self.k.forward(xs)?)?;
        let v = heads(self.v.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (dh as f64).sqrt())?;
        let ctx = softmax_last_dim(&scores)?.matmul(&v)?;
        self.o.forward(&ctx.transpose(1, 2)?.reshape((b, s, d))?)
    }
}

impl Layer for Block {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "transformer_block"
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        expect_rank(&self.name, input, 3, "[batch, seq, d_model]")?;
        expect_dim(&self.name, input, 2, self.d_model, "d_model")?;
        Ok(input.to_vec())
    }

    fn flops(&self, input: &[usize]) -> u64 {
        let &[b, s, d] = input else { return 0 };
        let (h, ff) = (self.n_heads, self.d_ff);
        sat_sum(&[
            sat_mul(&[8, b, s, d, d]),
            sat_mul(&[4, b, s, s, d]),
            sat_mul(&[5, b, h, s, s]),
            sat_mul(&[4, b, s, d, ff]),
            sat_mul(&[8, b, s, ff]),
            sat_mul(&[20, b, s, d]),
        ])
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let attn = dropout(
            &self.attention(&self.ln1.forward(xs)?)?,
            self.dropout,
            train,
        )?;
        let xs = (xs + attn)?;
        let hidden = self.fc1.forward(&self.ln2.forward(&xs)?)?.gelu_erf()?;
        let mlp = dropout(&self.fc2.forward(&hidden)?, self.dropout, train)?;
        xs + mlp
    }
}

/// Final layer norm, mean pooling over the sequence, and the classifier.
pub struct PoolClassifier {
    name: String,
    params: Vec<ParamInfo>,
    ln: LayerNorm,
    fc: Linear,
    d_model: usize,
    n_classes: usize,
}

impl PoolClassifier {
    pub fn new(pb: &mut ParamBuilder, name: &str, cfg: &TransformerConfig) -> Result<Self> {
        let mut scope = pb.scope(name);
        let ln = LayerNorm::new(&mut scope, "ln", cfg.d_model)?;
        let fc = Linear::new(&mut scope, "fc", cfg.d_model, cfg.n_classes)?;
        Ok(Self {
            name: name.to_string(),
            params: scope.finish(),
            ln,
            fc,
            d_model: cfg.d_model,
            n_classes: cfg.n_classes,
        })
    }
}

impl Layer for PoolClassifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "pool_classifier"
    }

    fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        expect_rank(&self.name, input, 3, "[batch, seq, d_model]")?;
        expect_dim(&self.name, input, 2, self.d_model, "d_model")?;
        Ok(vec![input[0], self.n_classes])
    }

    fn flops(&self, input: &[usize]) -> u64 {
        sat_sum(&[
            sat_mul(input).saturating_mul(10),
            self.fc.flops(input.first().copied().unwrap_or(0)),
        ])
    }

    fn forward_t(&self, xs: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        self.fc.forward(&self.ln.forward(xs)?.mean(1)?)
    }
}

/// Embedding, `n_layers` blocks, classifier.
pub fn build(cfg: &TransformerConfig, pb: &mut ParamBuilder) -> Result<Vec<Box<dyn Layer>>> {
    let mut layers: Vec<Box<dyn Layer>> = vec![Box::new(Embedding::new(pb, "layers.0", cfg)?)];
    for i in 1..=cfg.n_layers {
        layers.push(Box::new(Block::new(pb, &format!("layers.{i}"), cfg)?));
    }
    let name = format!("layers.{}", cfg.n_layers + 1);
    layers.push(Box::new(PoolClassifier::new(pb, &name, cfg)?));
    Ok(layers)
}
