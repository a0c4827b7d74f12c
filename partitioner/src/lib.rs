//! Cumulus partitioner: splits a model into contiguous layer groups, one serverless function
//! each, and picks each function's memory tier, minimizing the cost per request under a latency
//! SLO — the MIQP of AMPS-Inf (ICPP'21), solved exactly. Pure library: no async, no candle.
//!
//! * [`Instance`] is the JSON file (`cumulus partition --instance FILE`); [`Instance::from_json`]
//!   parses and validates it, naming the offending field (`layers[3].time_ms["512"]: ...`).
//! * [`solve()`] (or [`Problem::solve`] on a validated [`Problem`]) returns the optimal [`Plan`] —
//!   ties in cost go to the faster plan — or [`PartitionError::Infeasible`] with the
//!   [`Infeasibility`] that binds (the fastest achievable latency against the SLO, a layer that
//!   fits no tier, cuts over the payload limit, too few functions). How: [`solve`](mod@solve).
//! * [`evaluate()`] recomputes any plan from the definition, independently of the solver, and lists
//!   the constraints it breaks.
//! * [`export_lp`] writes the same model in CPLEX LP format (objective in $ per 1e6 requests) for
//!   SCIP or Gurobi to check; [`lp`] documents the formulation.
//! * [`random`] generates seeded, realistic instances; [`bench`](mod@bench) times the solver on them.
//!
//! ```
//! use cumulus_partitioner::{Instance, evaluate, solve};
//!
//! let instance = Instance::from_json(r#"{
//!   "layers": [
//!     { "name": "conv1", "weight_bytes": 37632, "activation_bytes": 802816,
//!       "output_bytes": 802816, "time_ms": { "512": 3.1, "1024": 1.7, "2048": 1.1 } },
//!     { "name": "fc", "weight_bytes": 1600000000, "activation_bytes": 8000,
//!       "output_bytes": 4000, "time_ms": { "2048": 9.0 } } ],
//!   "input_bytes": 602112, "tiers_mb": [512, 1024, 2048],
//!   "price_per_gb_s": 0.0000166667, "price_per_invocation": 0.0000002,
//!   "slo_ms": 200.0, "invoke_overhead_ms": 5.0, "bandwidth_bytes_per_ms": 70000.0,
//!   "max_payload_bytes": 6291456, "max_functions": 8, "base_memory_mb": 100 }"#)?;
//!
//! let plan = solve(&instance)?;
//! // `fc` needs the 2048 MB tier, and giving `conv1` a function of its own at 512 MB would cost
//! // a second invocation and the transfer of its 800 KB output: one function is cheaper.
//! let tiers: Vec<u32> = plan.groups.iter().map(|g| g.memory_mb).collect();
//! assert_eq!(tiers, [2048]);
//! assert!(plan.latency_ms <= 200.0);
//!
//! // The evaluator, from the definition, agrees to the last bit.
//! let check = evaluate(&instance, &plan.choices())?;
//! assert!(check.is_feasible());
//! assert_eq!(check.plan, plan);
//! println!("{plan}");
//! # Ok::<(), cumulus_partitioner::PartitionError>(())
//! ```

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
