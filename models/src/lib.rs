//! Cumulus model zoo: models as ordered lists of layers that run whole or as any contiguous range,
//! with losses, optimizers, safetensors model folders and readers for real datasets.
//! No async, no network.
//!
//! * [`ModelConfig`] picks an architecture (`architectures()` lists them) and its size;
//! * [`Model`] builds it (seeded), runs it whole or by layer range, and describes each layer
//!   ([`layer::LayerInfo`]: parameters, bytes, output shape, FLOPs);
//! * [`loss::Loss`], [`optim::OptimizerConfig`] and [`train`] fit it;
//! * [`size`] estimates parameters and activations from the config alone, and [`SizeLimits`]
//!   refuses a model too large to build before anything is allocated;
//! * [`folder`] saves and loads a model folder (`config.json` + `model.safetensors`).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use cumulus_models::{Model, ModelConfig};
//!
//! let model = Model::new(&ModelConfig::default_for("lenet")?, &Device::Cpu)?;
//! let xs = Tensor::zeros((2, 1, 28, 28), candle_core::DType::F32, &Device::Cpu)?;
//! assert_eq!(model.forward_t(&xs, false)?.dims(), &[2, 10]);
//! assert_eq!(model.total_params(), 61_706);
//! # Ok::<(), cumulus_models::ModelError>(())
//! ```

pub mod blocks;
pub mod config;
pub mod data;
pub mod error;
pub mod folder;
pub mod layer;
pub mod loss;
pub mod model;
pub mod optim;
pub mod size;
pub mod train;
pub mod zoo;

pub use config::{ModelConfig, TensorSpec, architectures};
pub use error::{ModelError, Result};
pub use layer::{Layer, LayerInfo, ParamInfo};
pub use loss::Loss;
pub use model::Model;
pub use optim::{Optimize, OptimizerConfig};
pub use size::{MAX_BATCH, MAX_PARAMS, ModelSize, SizeLimits};
