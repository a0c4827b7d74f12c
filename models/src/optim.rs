//! Optimizers, chosen by one serde enum [`OptimizerConfig`] and built over a model's variables.
//!
//! Plain SGD and AdamW are candle-nn's; SGD with momentum (optionally Nesterov) or weight decay,
//! AdaGrad and Adam (L2 weight decay added to the gradient) are written here over candle `Var`s
//! with PyTorch's update rules, so the reference tests compare against `torch.optim` directly.
//! Variables without a gradient in a step (e.g. untouched embedding rows still get a zero
//! gradient; BatchNorm buffers get none) are left alone.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use cumulus_models::optim::OptimizerConfig;
//!
//! let w = Var::new(&[1.0f32, -2.0], &Device::Cpu)?;
//! let cfg: OptimizerConfig = serde_json::from_str(r#"{"kind": "sgd", "lr": 0.1, "momentum": 0.9}"#).unwrap();
//! let mut opt = cfg.build(vec![w.clone()])?;
//! let loss = w.as_tensor().sqr()?.sum_all()?;
//! opt.step(&loss.backward()?)?;
//! assert_eq!(w.as_tensor().to_vec1::<f32>()?, vec![0.8, -1.6]);
//! # Ok::<(), cumulus_models::ModelError>(())
//! ```

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer as _;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Which optimizer, with its hyper-parameters (PyTorch's defaults where a field is left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// `p -= lr * g`; with `momentum`, PyTorch's heavy-ball buffer, `nesterov` for the look-ahead.
    Sgd {
        lr: f64,
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
    },
    /// `s += g^2; p -= lr * g / (sqrt(s) + eps)`.
    Adagrad {
        lr: f64,
        #[serde(default = "adagrad_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam with bias correction; `weight_decay` is L2 added to the gradient (torch.optim.Adam).
    Adam {
        lr: f64,
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "adam_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay (torch.optim.AdamW; default decay 0.01).
    Adamw {
        lr: f64,
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "adam_eps")]
        eps: f64,
        #[serde(default = "adamw_decay")]
        weight_decay: f64,
    },
}

fn adagrad_eps() -> f64 {
    1e-10
}
fn adam_eps() -> f64 {
    1e-8
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn adamw_decay() -> f64 {
    0.01
}

/// A built optimizer.
pub trait Optimize: Send {
    /// Apply one update from the gradients of the last backward pass.
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    fn learning_rate(&self) -> f64;
    fn set_learning_rate(&mut self, lr: f64);
}

fn check(field: &str, ok: bool, value: f64, expect: &str) -> Result<()> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(ModelError::Optimizer {
            field: field.to_string(),
            reason: format!("must be {expect}, got {value}"),
        })
    }
}

impl OptimizerConfig {
    /// Check every hyper-parameter; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let (lr, wd) = match *self {
            Self::Sgd {
                lr,
                momentum,
                nesterov,
                weight_decay,
            } => {
                check(
                    "momentum",
                    (0.0..1.0).contains(&momentum),
                    momentum,
                    "in [0, 1)",
                )?;
                if nesterov && momentum == 0.0 {
                    return Err(ModelError::Optimizer {
                        field: "nesterov".into(),
                        reason: "needs a momentum above 0".into(),
                    });
                }
                (lr, weight_decay)
            }
            Self::Adagrad {
                lr,
                eps,
                weight_decay,
            } => {
                check("eps", eps > 0.0, eps, "positive")?;
                (lr, weight_decay)
            }
            Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            }
            | Self::Adamw {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                check("beta1", (0.0..1.0).contains(&beta1), beta1, "in [0, 1)")?;
                check("beta2", (0.0..1.0).contains(&beta2), beta2, "in [0, 1)")?;
                check("eps", eps > 0.0, eps, "positive")?;
                (lr, weight_decay)
            }
        };
        check("lr", lr > 0.0, lr, "positive")?;
        check("weight_decay", wd >= 0.0, wd, "at least 0")
    }

    /// The optimizer over `vars` (normally [`Model::vars`](crate::Model::vars)).
    pub fn build(&self, vars: Vec<Var>) -> Result<Box<dyn Optimize>> {
        self.validate()?;
        Ok(match *self {
            Self::Sgd {
                lr,
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            } => Box::new(CandleSgd(candle_nn::SGD::new(vars, lr)?)),
            Self::Sgd {
                lr,
                momentum,
                nesterov,
                weight_decay,
            } => Box::new(Momentum {
                state: State::new(vars, 1),
                lr,
                momentum,
                nesterov,
                weight_decay,
            }),
            Self::Adagrad {
                lr,
                eps,
                weight_decay,
            } => Box::new(Adagrad {
                state: State::new(vars, 1),
                lr,
                eps,
                weight_decay,
            }),
            Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Box::new(Adam {
                state: State::new(vars, 2),
                t: 0,
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            }),
            Self::Adamw {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let params = candle_nn::ParamsAdamW {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                };
                Box::new(CandleAdamW(candle_nn::AdamW::new(vars, params)?))
            }
        })
    }
}

struct CandleSgd(candle_nn::SGD);

impl Optimize for CandleSgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        Ok(self.0.step(grads)?)
    }
    fn learning_rate(&self) -> f64 {
        self.0.learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.0.set_learning_rate(lr)
    }
}

struct CandleAdamW(candle_nn::AdamW);

impl Optimize for CandleAdamW {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        Ok(self.0.step(grads)?)
    }
    fn learning_rate(&self) -> f64 {
        self.0.learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.0.set_learning_rate(lr)
    }
}

/// Float variables with `slots` state tensors each, created lazily at the first gradient.
struct State {
    vars: Vec<(Var, Vec<Option<Tensor>>)>,
}

impl State {
    fn new(vars: Vec<Var>, slots: usize) -> Self {
        Self {
            vars: vars
                .into_iter()
                .filter(|v| v.dtype().is_float())
                .map(|v| (v, vec![None; slots]))
                .collect(),
        }
    }
}

/// `grad + weight_decay * p`, detached from the autograd graph.
///
/// A variable's gradient from `backward` still refers to the forward pass's activations (candle
/// detaches only the intermediate gradients). Momentum and moment buffers built from it would
/// chain every step's graph to the next: a worker's memory grew by hundreds of MB per ResNet-18
/// step until the function ran out of memory.
fn decayed(grad: &Tensor, var: &Var, weight_decay: f64) -> Result<Tensor> {
    if weight_decay == 0.0 {
        Ok(grad.detach())
    } else {
        Ok((grad + (var.as_tensor() * weight_decay)?)?.detach())
    }
}

struct Momentum {
    state: State,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
}

impl Optimize for Momentum {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (var, slots) in &mut self.state.vars {
            let Some(grad) = grads.get(var) else { continue };
            let g = decayed(grad, var, self.weight_decay)?;
            let g = if self.momentum > 0.0 {
                let buf = match &slots[0] {
                    Some(buf) => ((buf * self.momentum)? + &g)?,
                    None => g.clone(),
                };
                let dir = if self.nesterov {
                    (&g + (&buf * self.momentum)?)?
                } else {
                    buf.clone()
                };
                slots[0] = Some(buf);
                dir
            } else {
                g
            };
            var.set(&(var.as_tensor() - (g * self.lr)?)?)?;
        }
        Ok(())
    }
    fn learning_rate(&self) -> f64 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr
    }
}

struct Adagrad {
    state: State,
    lr: f64,
    eps: f64,
    weight_decay: f64,
}

impl Optimize for Adagrad {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (var, slots) in &mut self.state.vars {
            let Some(grad) = grads.get(var) else { continue };
            let g = decayed(grad, var, self.weight_decay)?;
            let sum = match &slots[0] {
                Some(s) => (s + g.sqr()?)?,
                None => g.sqr()?,
            };
            let update = (&g / (sum.sqrt()? + self.eps)?)?;
            var.set(&(var.as_tensor() - (update * self.lr)?)?)?;
            slots[0] = Some(sum);
        }
        Ok(())
    }
    fn learning_rate(&self) -> f64 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr
    }
}

struct Adam {
    state: State,
    t: i32,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl Optimize for Adam {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t);
        let bc2 = 1.0 - self.beta2.powi(self.t);
        for (var, slots) in &mut self.state.vars {
            let Some(grad) = grads.get(var) else { continue };
            let g = decayed(grad, var, self.weight_decay)?;
            let m = match &slots[0] {
                Some(m) => ((m * self.beta1)? + (&g * (1.0 - self.beta1))?)?,
                None => (&g * (1.0 - self.beta1))?,
            };
            let v = match &slots[1] {
                Some(v) => ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?,
                None => (g.sqr()? * (1.0 - self.beta2))?,
            };
            let denom = ((v.sqrt()? / bc2.sqrt())? + self.eps)?;
            let update = ((&m / denom)? * (self.lr / bc1))?;
            var.set(&(var.as_tensor() - update)?)?;
            slots[0] = Some(m);
            slots[1] = Some(v);
        }
        Ok(())
    }
    fn learning_rate(&self) -> f64 {
        self.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    /// The optimizers' state holds values, never the graph of the step that produced them.
    #[test]
    fn state_buffers_are_detached_from_the_graph() {
        let w1 = Var::ones((3, 4), DType::F32, &Device::Cpu).unwrap();
        let w2 = Var::ones((4, 2), DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::new(&[[1f32, 2.0, 3.0]], &Device::Cpu).unwrap();
        let vars = || vec![w1.clone(), w2.clone()];
        let mut adam = Adam {
            state: State::new(vars(), 2),
            t: 0,
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let mut adagrad = Adagrad {
            state: State::new(vars(), 1),
            lr: 0.01,
            eps: 1e-10,
            weight_decay: 0.0,
        };
        let mut momentum = Momentum {
            state: State::new(vars(), 1),
            lr: 0.01,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.0,
        };
        for _ in 0..3 {
            // Two layers: the gradient of `w2` is computed from the activation `x @ w1`.
            let h = x.matmul(w1.as_tensor()).unwrap();
            let loss = h
                .matmul(w2.as_tensor())
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            assert!(grads.get(&w2).unwrap().track_op(), "candle keeps the graph");
            adam.step(&grads).unwrap();
            adagrad.step(&grads).unwrap();
            momentum.step(&grads).unwrap();
        }
        for (name, state) in [
            ("adam", &adam.state),
            ("adagrad", &adagrad.state),
            ("momentum", &momentum.state),
        ] {
            let buffers: Vec<&Tensor> = state
                .vars
                .iter()
                .flat_map(|(_, s)| s.iter().flatten())
                .collect();
            assert!(!buffers.is_empty(), "{name} keeps state");
            for t in buffers {
                assert!(!t.track_op(), "{name}: a state buffer keeps the graph");
            }
        }
    }
}
