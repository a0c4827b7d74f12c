//! Seeded random instances shaped like real models, for tests, benchmarks and the comparison with
//! an external solver.
//!
//! A model is a CNN (ResNet-like stages: channels double as the image halves, so early outputs are
//! large and some cuts are over the payload limit), a transformer (embedding, attention and MLP
//! blocks, a head) or an MLP, run at batch 1–8. Its total weight is drawn relative to the largest
//! tier (0.3×–2.5×), so some models fit one function and others must be split, and some layers
//! fit only the larger tiers. Times follow a Lambda-like CPU model: below 1769 MB a function gets
//! that share of one vCPU, above it `m / 1769` vCPUs that speed up each layer's parallel part
//! (Amdahl), with a few percent of noise; times never grow with memory. About one layer in twelve
//! has no time at its smallest tiers (its profiling run failed there). The SLO is drawn between
//! 1.1× and 2.5× the fastest single-tier time plus a few invocation overheads, so it usually binds
//! and is sometimes unreachable.
//!
//! ```
//! use cumulus_partitioner::random::{RandomSpec, instance};
//!
//! let spec = RandomSpec { layers: 20, tiers: 4, max_functions: 6, ..RandomSpec::default() };
//! let a = instance(&spec, 7);
//! assert_eq!(a, instance(&spec, 7)); // The seed fixes it.
//! assert_eq!((a.layers.len(), a.tiers_mb.len()), (20, 4));
//! a.validate()?;
//! # Ok::<(), cumulus_partitioner::PartitionError>(())
//! ```

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::instance::{Instance, Layer};

/// Lambda's memory sizes worth listing; tiers are drawn from these (then from 64 MB steps when
/// more are asked for).
pub const TIER_LADDER_MB: [u32; 14] = [
    128, 256, 512, 768, 1024, 1536, 1769, 2048, 3008, 4096, 5120, 6144, 8192, 10240,
];

/// The shape of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Cnn,
    Transformer,
    Mlp,
}

/// What to generate; fields left at their default are drawn from the seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomSpec {
    pub layers: usize,
    /// At most 64.
    pub tiers: usize,
    pub max_functions: usize,
    /// `None`: drawn.
    pub family: Option<Family>,
}

impl Default for RandomSpec {
    fn default() -> Self {
        Self {
            layers: 20,
            tiers: 4,
            max_functions: 8,
            family: None,
        }
    }
}

/// One layer before scaling: relative weight, activation and output bytes, and work.
struct Shape {
    name: String,
    weight: f64,
    activation: f64,
    output: f64,
    flops: f64,
}

/// A random instance for `spec`, the same for the same seed.
///
/// # Panics
/// When `spec.layers` or `spec.max_functions` is 0, or `spec.tiers` is 0 or over 64.
pub fn instance(spec: &RandomSpec, seed: u64) -> Instance {
    assert!(
        spec.layers > 0 && spec.max_functions > 0,
        "a model has layers and functions"
    );
    assert!((1..=64).contains(&spec.tiers), "1..=64 tiers");
    let mut rng = StdRng::seed_from_u64(seed);
    let tiers_mb = draw_tiers(&mut rng, spec.tiers);
    let family = spec.family.unwrap_or_else(|| {
        *[Family::Cnn, Family::Transformer, Family::Mlp]
            .choose(&mut rng)
            .expect("non-empty")
    });
    let batch = f64::from(*[1u32, 1, 2, 4, 8].choose(&mut rng).expect("non-empty"));
    let (shapes, input_bytes) = match family {
        Family::Cnn => cnn(&mut rng, spec.layers, batch),
        Family::Transformer => transformer(&mut rng, spec.layers, batch),
        Family::Mlp => mlp(&mut rng, spec.layers, batch),
    };

    // Total weights relative to the largest tier: some models fit one function, some do not.
    let largest_bytes = f64::from(*tiers_mb.last().expect("at least one tier")) * 1048576.0;
    let raw_weight: f64 = shapes.iter().map(|s| s.weight).sum();
    let weight_scale = rng.random_range(0.3..2.5) * largest_bytes / raw_weight;
    // Total time at one vCPU between 20 ms and 600 ms.
    let raw_flops: f64 = shapes.iter().map(|s| s.flops).sum();
    let ms_per_flop = rng.random_range(20.0..600.0) / raw_flops;

    let bandwidth: f64 = rng.random_range(30_000.0..150_000.0f64).round();
    let overhead: f64 = (rng.random_range(2.0..25.0f64) * 10.0).round() / 10.0;
    let layers: Vec<Layer> = shapes
        .iter()
        .map(|s| {
            let one_vcpu_ms = s.flops * ms_per_flop;
            let parallel = rng.random_range(0.6..0.95);
            let mut time_ms = BTreeMap::new();
            let mut previous = f64::INFINITY;
            for &mb in &tiers_mb {
                let vcpus = f64::from(mb) / 1769.0;
                let ms = if vcpus <= 1.0 {
                    one_vcpu_ms / vcpus
                } else {
                    one_vcpu_ms * ((1.0 - parallel) + parallel / vcpus)
                };
                let noisy = (ms * rng.random_range(0.97..1.03) * 1000.0).round() / 1000.0;
                previous = noisy.min(previous).max(0.001);
                time_ms.insert(mb, previous);
            }
            if tiers_mb.len() > 1 && rng.random_bool(1.0 / 12.0) {
                let missing = rng.random_range(1..=2.min(tiers_mb.len() - 1));
                for mb in &tiers_mb[..missing] {
                    time_ms.remove(mb);
                }
            }
            Layer {
                name: s.name.clone(),
                weight_bytes: (s.weight * weight_scale).round() as u64,
                activation_bytes: s.activation.round() as u64,
                output_bytes: s.output.round() as u64,
                time_ms,
            }
        })
        .collect();

    let fastest: f64 = layers
        .iter()
        .map(|l| l.time_ms.values().copied().fold(f64::INFINITY, f64::min))
        .sum();
    let slo = fastest * rng.random_range(1.1..2.5)
        + overhead * rng.random_range(1.0..4.0)
        + input_bytes as f64 / bandwidth;
    let price_scale = if rng.random_bool(0.5) {
        1.0
    } else {
        rng.random_range(0.8..1.2)
    };
    Instance {
        layers,
        input_bytes,
        tiers_mb,
        price_per_gb_s: 0.0000166667 * price_scale,
        price_per_invocation: 0.0000002,
        slo_ms: (slo * 100.0).round() / 100.0,
        invoke_overhead_ms: overhead,
        bandwidth_bytes_per_ms: bandwidth,
        max_payload_bytes: if rng.random_bool(0.7) {
            6_291_456
        } else {
            rng.random_range(1..=6u64) << 20
        },
        max_functions: spec.max_functions,
        base_memory_mb: rng.random_range(64..=256),
    }
}

fn draw_tiers(rng: &mut StdRng, count: usize) -> Vec<u32> {
    let mut tiers: Vec<u32> = if count <= TIER_LADDER_MB.len() {
        TIER_LADDER_MB
            .choose_multiple(rng, count)
            .copied()
            .collect()
    } else {
        let mut tiers = TIER_LADDER_MB.to_vec();
        while tiers.len() < count {
            let mb = 64 * rng.random_range(2..=160u32);
            if !tiers.contains(&mb) {
                tiers.push(mb);
            }
        }
        tiers
    };
    tiers.sort_unstable();
    tiers
}

/// ResNet-like: five stages, channels doubling as the image halves, a classifier last.
fn cnn(rng: &mut StdRng, n: usize, batch: f64) -> (Vec<Shape>, u64) {
    let width = *[32.0, 64.0, 96.0].choose(rng).expect("non-empty");
    let mut shapes = Vec::with_capacity(n);
    let (mut channels, mut side) = (3.0f64, 224.0f64);
    for l in 0..n {
        if l + 1 == n && n > 1 {
            let classes = 1000.0;
            shapes.push(Shape {
                name: format!("fc{l}"),
                weight: channels * classes * 4.0,
                activation: (channels + classes) * 4.0 * batch,
                output: classes * 4.0 * batch,
                flops: 2.0 * channels * classes * batch,
            });
            break;
        }
        let stage = (l * 5 / n.max(1)) as i32;
        let out_channels = width * 2f64.powi(stage);
        let out_side = (112.0 / 2f64.powi(stage)).max(7.0);
        let kernel = if rng.random_bool(0.3) { 1.0 } else { 9.0 };
        shapes.push(Shape {
            name: format!("conv{l}"),
            weight: kernel * channels * out_channels * 4.0,
            activation: (channels * side * side + 2.0 * out_channels * out_side * out_side)
                * 4.0
                * batch,
            output: out_channels * out_side * out_side * 4.0 * batch,
            flops: 2.0 * kernel * channels * out_channels * out_side * out_side * batch,
        });
        (channels, side) = (out_channels, out_side);
    }
    (shapes, (3.0 * 224.0 * 224.0 * 4.0 * batch) as u64)
}

/// BERT/GPT-like: an embedding, alternating attention and MLP blocks, a head.
fn transformer(rng: &mut StdRng, n: usize, batch: f64) -> (Vec<Shape>, u64) {
    let d: f64 = *[512.0, 768.0, 1024.0, 1600.0]
        .choose(rng)
        .expect("non-empty");
    let seq: f64 = *[128.0, 256.0, 512.0].choose(rng).expect("non-empty");
    let vocab = 30522.0;
    let tokens = seq * batch;
    let hidden = tokens * d * 4.0;
    let mut shapes = Vec::with_capacity(n);
    for l in 0..n {
        let shape = if l == 0 {
            Shape {
                name: "embed".into(),
                weight: vocab * d * 4.0,
                activation: 2.0 * hidden,
                output: hidden,
                flops: tokens * d * 4.0,
            }
        } else if l + 1 == n {
            Shape {
                name: "head".into(),
                weight: d * 1000.0 * 4.0,
                activation: hidden + batch * 4000.0,
                output: batch * 4000.0,
                flops: 2.0 * batch * d * 1000.0,
            }
        } else if l % 2 == 1 {
            Shape {
                name: format!("attn{}", l / 2),
                weight: 4.0 * d * d * 4.0,
                activation: 4.0 * hidden + 12.0 * tokens * seq * 4.0,
                output: hidden,
                flops: 8.0 * tokens * d * d + 4.0 * tokens * seq * d,
            }
        } else {
            Shape {
                name: format!("mlp{}", l / 2),
                weight: 8.0 * d * d * 4.0,
                activation: 6.0 * hidden,
                output: hidden,
                flops: 16.0 * tokens * d * d,
            }
        };
        shapes.push(shape);
    }
    (shapes, (tokens * 8.0) as u64)
}

/// Dense layers of random widths, as a recommender's tower.
fn mlp(rng: &mut StdRng, n: usize, batch: f64) -> (Vec<Shape>, u64) {
    let rows = batch * 4.0;
    let mut width: f64 = *[256.0, 1024.0, 4096.0].choose(rng).expect("non-empty");
    let input = width;
    let mut shapes = Vec::with_capacity(n);
    for l in 0..n {
        let out: f64 = *[256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0]
            .choose(rng)
            .expect("non-empty");
        shapes.push(Shape {
            name: format!("dense{l}"),
            weight: width * out * 4.0,
            activation: (width + out) * rows * 4.0,
            output: out * rows * 4.0,
            flops: 2.0 * width * out * rows,
        });
        width = out;
    }
    (shapes, (input * rows * 4.0) as u64)
}
