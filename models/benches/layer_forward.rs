//! Per-layer forward time of every architecture's default config on the CPU (or the first CUDA
//! device with `--features cuda`): one benchmark per layer, `layer_forward/<arch>/<layer>`, fed
//! with the real activation that reaches that layer. The partitioner's profiler builds on these.
//!
//! ```text
//! cargo bench -p cumulus-models --bench layer_forward -- mlp
//! ```

use std::time::Duration;

use candle_core::Device;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use cumulus_models::{Model, ModelConfig, architectures};

/// Examples per batch: small enough that ResNet-18 stays quick on a laptop CPU.
const BATCH: usize = 8;

fn device() -> Device {
    if cfg!(feature = "cuda") {
        Device::cuda_if_available(0).expect("probing CUDA does not fail when the feature is on")
    } else {
        Device::Cpu
    }
}

fn layer_forward(c: &mut Criterion) {
    let dev = device();
    for arch in architectures() {
        let cfg = ModelConfig::default_for(arch).expect("every listed architecture has a default");
        let model = Model::new(&cfg, &dev).expect("default configs build");
        let mut group = c.benchmark_group(format!("layer_forward/{arch}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let mut xs = model.example_input(BATCH).expect("example input");
        for (i, layer) in model.layers().iter().enumerate() {
            let input = xs.clone();
            group.bench_with_input(
                BenchmarkId::new(layer.kind(), layer.name()),
                &input,
                |b, input| {
                    b.iter(|| {
                        let ys = model
                            .forward_range(i, i, input, false)
                            .expect("layer forward");
                        dev.synchronize().expect("device synchronizes");
                        ys
                    })
                },
            );
            xs = model
                .forward_range(i, i, &input, false)
                .expect("layer forward");
        }
        group.finish();
    }
}

criterion_group!(benches, layer_forward);
criterion_main!(benches);
