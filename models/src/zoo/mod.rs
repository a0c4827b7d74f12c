//! The architectures: each module turns its config into an ordered list of [`Layer`]s whose
//! parameters come from one seeded [`ParamBuilder`].

pub mod cnn;
pub mod logreg;
pub mod mlp;
pub mod pmf;
pub mod resnet;
pub mod transformer;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::layer::{Layer, ParamBuilder};

/// The layers of `cfg` (which must already be validated).
pub fn build(cfg: &ModelConfig, pb: &mut ParamBuilder) -> Result<Vec<Box<dyn Layer>>> {
    match cfg {
        ModelConfig::Logreg(c) => logreg::build_dense(c, pb),
        ModelConfig::SparseLogreg(c) => logreg::build_sparse(c, pb),
        ModelConfig::Mlp(c) => mlp::build(c, pb),
        ModelConfig::Lenet(c) => cnn::build(c, pb),
        ModelConfig::Resnet(c) => resnet::build(c, pb),
        ModelConfig::Pmf(c) => pmf::build(c, pb),
        ModelConfig::Transformer(c) => transformer::build(c, pb),
    }
}
