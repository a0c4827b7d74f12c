//! Cumulus partitioner: turns per-layer profiles into a plan of contiguous layer groups and a
//! memory tier per group by solving the AMPS-Inf MIQP exactly, and exports the same model in LP
//! format for an external solver. Pure library: no async, no candle.

pub mod bench;
mod bounds;
pub mod error;
pub mod evaluate;
mod explain;
mod graph;
pub mod instance;
mod lagrange;
pub mod lp;
pub mod plan;
pub mod random;
mod search;
pub mod solve;

pub use error::{Infeasibility, PartitionError, Result};
pub use evaluate::{Evaluation, Violation, evaluate};
pub use graph::MAX_EDGES;
pub use instance::{Instance, Layer, Problem};
pub use lp::export_lp;
pub use plan::{Group, GroupChoice, Plan};
pub use search::MAX_LABELS;
pub use solve::{MAX_STATES, SolveStats, TIE_RELATIVE_TOLERANCE, solve};
