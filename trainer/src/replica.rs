//! A worker's local replica of the model: what one `train-worker` function trains between pulls.
//!
//! The replica runs minibatch steps with candle (forward, backward, optimizer), adds each step's
//! *applied change* (`w_after - w_before`) to one [`Accumulator`] per trainable tensor, and hands the
//! significant entries to the caller to push. When the caller pulls the store's values, the replica
//! sets `w = store + held`, so its own unsent changes are never lost or counted twice (MLLess's
//! local-replica rule). Transport-agnostic: pushing and pulling are the caller's.
//!
//! Only trainable tensors are shared; buffers (BatchNorm running statistics) stay local.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use cumulus_models::{Model, ModelConfig, loss::Loss, optim::OptimizerConfig};
//! use cumulus_trainer::{filter::FilterConfig, replica::Replica};
//!
//! let config = ModelConfig::default_for("logreg")?;
//! let model = Model::with_seed(&config, &Device::Cpu, 1)?;
//! let sgd = OptimizerConfig::Sgd { lr: 0.1, momentum: 0.0, nesterov: false, weight_decay: 0.0 };
//! let mut replica = Replica::new(model, &sgd, Loss::CrossEntropy, FilterConfig::new(0.0, 1e-6)?)?;
//! let x = Tensor::ones((4, 64), candle_core::DType::F32, &Device::Cpu)?;
//! let y = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu)?;
//! let loss = replica.train_step(&x, &y)?;
//! assert!(loss > 0.0);
//! let (updates, stats) = replica.take_significant()?;
//! assert_eq!(stats.sent as usize, updates.iter().map(|u| u.delta.len()).sum::<usize>());
//! # Ok::<(), cumulus_trainer::TrainerError>(())
//! ```

use candle_core::{Tensor, Var};
use cumulus_models::Model;
use cumulus_models::loss::Loss;
use cumulus_models::optim::{Optimize, OptimizerConfig};

use crate::TrainerError;
use crate::filter::{Accumulator, FilterConfig, FilterStats, SparseDelta};

/// One tensor's part of a push.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDelta {
    pub tensor: String,
    pub delta: SparseDelta,
}

struct Tracked {
    name: String,
    var: Var,
    acc: Accumulator,
}

/// The model a worker trains, its optimizer, and what it has not pushed yet.
pub struct Replica {
    model: Model,
    optimizer: Box<dyn Optimize>,
    loss: Loss,
    filter: FilterConfig,
    tracked: Vec<Tracked>,
    /// Local steps taken: the `t` of the filter's threshold `v / sqrt(t + 1)`.
    steps: u64,
    /// Round significant entries to f16 (the rounding error stays held).
    half_pushes: bool,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("arch", &self.model.config().arch())
            .field("tensors", &self.tracked.len())
            .field("steps", &self.steps)
            .finish()
    }
}

fn flat(var: &Var) -> Result<Vec<f32>, TrainerError> {
    Ok(var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

impl Replica {
    pub fn new(
        model: Model,
        optimizer: &OptimizerConfig,
        loss: Loss,
        filter: FilterConfig,
    ) -> Result<Self, TrainerError> {
        let tracked = model
            .named_vars(true)
            .into_iter()
            .map(|(name, var)| {
                Ok(Tracked {
                    acc: Accumulator::new(var.elem_count())?,
                    name,
                    var,
                })
            })
            .collect::<Result<Vec<_>, TrainerError>>()?;
        let optimizer = optimizer.build(model.vars())?;
        Ok(Self {
            model,
            optimizer,
            loss,
            filter,
            tracked,
            steps: 0,
            half_pushes: false,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Local steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Whether [`Self::take_significant`] rounds what it hands out to values f16 holds exactly
    /// (half the bytes on the wire), keeping each rounding error for a later push.
    pub fn set_half_pushes(&mut self, on: bool) {
        self.half_pushes = on;
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.optimizer.set_learning_rate(lr);
    }

    /// Names and element counts of the shared tensors, in layer order.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, usize)> {
        self.tracked.iter().map(|t| (t.name.as_str(), t.acc.len()))
    }

    /// One minibatch step; the applied change goes into the accumulators. Returns the loss.
    pub fn train_step(&mut self, x: &Tensor, y: &Tensor) -> Result<f64, TrainerError> {
        let before = self
            .tracked
            .iter()
            .map(|t| flat(&t.var))
            .collect::<Result<Vec<_>, _>>()?;
        let out = self.model.forward_t(x, true)?;
        let loss = self.loss.compute(&out, y)?;
        let value = f64::from(loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?);
        if !value.is_finite() {
            return Err(TrainerError::Diverged {
                step: self.steps,
                loss: value,
            });
        }
        self.optimizer.step(&loss.backward()?)?;
        for (t, before) in self.tracked.iter_mut().zip(before) {
            let mut change = flat(&t.var)?;
            for (c, b) in change.iter_mut().zip(&before) {
                *c -= b;
            }
            t.acc.add(&change)?;
        }
        self.steps += 1;
        Ok(value)
    }

    /// One step from gradients computed elsewhere (the GPU executor): the optimizer applies
    /// `grads` (by parameter name) as if a backward pass had produced them, and the applied
    /// change goes into the accumulators as in [`Replica::train_step`]. Returns the loss.
    pub fn step_with_gradients(
        &mut self,
        loss: f64,
        grads: &[(String, Tensor)],
    ) -> Result<f64, TrainerError> {
        if !loss.is_finite() {
            return Err(TrainerError::Diverged {
                step: self.steps,
                loss,
            });
        }
        let before = self
            .tracked
            .iter()
            .map(|t| flat(&t.var))
            .collect::<Result<Vec<_>, _>>()?;
        // d/dw Σ (w · g) = g: backward of this surrogate hands the optimizer exactly `grads`.
        let mut surrogate: Option<Tensor> = None;
        for (name, g) in grads {
            let var = self
                .model
                .var(name)
                .ok_or_else(|| TrainerError::UnknownTensor(name.clone()))?;
            let term = var.as_tensor().mul(&g.detach())?.sum_all()?;
            surrogate = Some(match surrogate {
                Some(s) => (s + term)?,
                None => term,
            });
        }
        if let Some(s) = surrogate {
            self.optimizer.step(&s.backward()?)?;
        }
        for (t, before) in self.tracked.iter_mut().zip(before) {
            let mut change = flat(&t.var)?;
            for (c, b) in change.iter_mut().zip(&before) {
                *c -= b;
            }
            t.acc.add(&change)?;
        }
        self.steps += 1;
        Ok(loss)
    }

    /// The trainable parameters' current values, by name (what the GPU executor trains).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.model
            .named_vars(true)
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().clone()))
            .collect()
    }

    /// The significant entries of every tensor at the current local step, removed from the
    /// accumulators; tensors with nothing significant are left out.
    pub fn take_significant(&mut self) -> Result<(Vec<TensorDelta>, FilterStats), TrainerError> {
        let step = self.steps.saturating_sub(1);
        let mut stats = FilterStats::default();
        let mut out = Vec::new();
        for t in &mut self.tracked {
            let weights = flat(&t.var)?;
            let (mut delta, mut s) = t.acc.take_significant(&weights, &self.filter, step)?;
            if self.half_pushes && t.acc.round_to_f16(&mut delta) {
                s.sent = delta.len() as u64;
            }
            stats += s;
            if !delta.is_empty() {
                out.push(TensorDelta {
                    tensor: t.name.clone(),
                    delta,
                });
            }
        }
        Ok((out, stats))
    }

    /// Everything still held, removed: what a worker pushes before it exits.
    pub fn take_all(&mut self) -> Vec<TensorDelta> {
        self.tracked
            .iter_mut()
            .filter_map(|t| {
                let delta = t.acc.take_all();
                (!delta.is_empty()).then(|| TensorDelta {
                    tensor: t.name.clone(),
                    delta,
                })
            })
            .collect()
    }

    /// Set `tensor[start..start + values.len()] = values + held` from the store's dense values.
    pub fn set_dense(
        &mut self,
        tensor: &str,
        start: usize,
        values: &[f32],
    ) -> Result<(), TrainerError> {
        self.set_with(tensor, |w, held| {
            let end = start
                .checked_add(values.len())
                .filter(|&e| e <= w.len())
                .ok_or(TrainerError::Range {
                    tensor: tensor.to_string(),
                    start,
                    len: values.len(),
                    size: w.len(),
                })?;
            for ((w, v), h) in w[start..end].iter_mut().zip(values).zip(&held[start..end]) {
                *w = v + h;
            }
            Ok(())
        })
    }

    /// Set `tensor[indices[k]] = values[k] + held` from the store's changed entries.
    pub fn set_entries(
        &mut self,
        tensor: &str,
        indices: &[u64],
        values: &[f32],
    ) -> Result<(), TrainerError> {
        self.set_with(tensor, |w, held| {
            let size = w.len();
            for (&i, v) in indices.iter().zip(values) {
                let range = || TrainerError::Range {
                    tensor: tensor.to_string(),
                    start: usize::try_from(i).unwrap_or(usize::MAX),
                    len: 1,
                    size,
                };
                let i = usize::try_from(i).map_err(|_| range())?;
                let slot = w.get_mut(i).ok_or_else(range)?;
                *slot = v + held[i];
            }
            Ok(())
        })
    }

    fn set_with(
        &mut self,
        tensor: &str,
        write: impl FnOnce(&mut [f32], &[f32]) -> Result<(), TrainerError>,
    ) -> Result<(), TrainerError> {
        let t = self
            .tracked
            .iter()
            .find(|t| t.name == tensor)
            .ok_or_else(|| TrainerError::UnknownTensor(tensor.to_string()))?;
        let mut w = flat(&t.var)?;
        write(&mut w, t.acc.residual())?;
        let shape = t.var.as_tensor().shape().clone();
        t.var
            .set(&Tensor::from_vec(w, shape, t.var.as_tensor().device())?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use cumulus_models::ModelConfig;
    use std::collections::HashMap;

    fn sgd(lr: f64) -> OptimizerConfig {
        OptimizerConfig::Sgd {
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    fn batch(seed: u32) -> (Tensor, Tensor) {
        let x: Vec<f32> = (0..8 * 64)
            .map(|i| ((i * 7 + seed * 13) % 17) as f32 / 17.0)
            .collect();
        let y: Vec<f32> = (0..8).map(|i| ((i + seed) % 10) as f32).collect();
        (
            Tensor::from_vec(x, (8, 64), &Device::Cpu).unwrap(),
            Tensor::from_vec(y, 8, &Device::Cpu).unwrap(),
        )
    }

    fn params(model: &Model) -> HashMap<String, Vec<f32>> {
        model
            .named_vars(true)
            .into_iter()
            .map(|(n, v)| (n, flat(&v).unwrap()))
            .collect()
    }

    /// Two workers with v = 0 under BSP: each step both start from the store, push everything,
    /// and the store sums the changes. That is synchronous SGD on the summed gradient, which a
    /// single model computes directly by stepping on the concatenated batch with lr scaled by 2
    /// (cross-entropy is a mean over the batch).
    #[test]
    fn v_zero_bsp_equals_synchronous_sgd() {
        let config = ModelConfig::default_for("logreg").unwrap();
        let filter = FilterConfig::new(0.0, 1e-6).unwrap();
        let mut workers: Vec<Replica> = (0..2)
            .map(|_| {
                let m = Model::with_seed(&config, &Device::Cpu, 7).unwrap();
                Replica::new(m, &sgd(0.05), Loss::CrossEntropy, filter).unwrap()
            })
            .collect();
        let reference = Model::with_seed(&config, &Device::Cpu, 7).unwrap();
        let mut ref_opt = sgd(0.1).build(reference.vars()).unwrap();
        let mut store = params(&reference);

        for step in 0..5u32 {
            let mut sum: HashMap<String, Vec<f32>> = HashMap::new();
            for (k, w) in workers.iter_mut().enumerate() {
                for (name, values) in &store {
                    w.set_dense(name, 0, values).unwrap();
                }
                let (x, y) = batch(step * 2 + k as u32);
                w.train_step(&x, &y).unwrap();
                let (deltas, _) = w.take_significant().unwrap();
                for d in deltas {
                    let acc = sum
                        .entry(d.tensor.clone())
                        .or_insert_with(|| vec![0.0; store[&d.tensor].len()]);
                    for (&i, &v) in d.delta.indices.iter().zip(&d.delta.values) {
                        acc[i as usize] += v;
                    }
                }
            }
            for (name, delta) in sum {
                for (s, d) in store.get_mut(&name).unwrap().iter_mut().zip(delta) {
                    *s += d;
                }
            }
            let (x0, y0) = batch(step * 2);
            let (x1, y1) = batch(step * 2 + 1);
            let x = Tensor::cat(&[&x0, &x1], 0).unwrap();
            let y = Tensor::cat(&[&y0, &y1], 0).unwrap();
            let out = reference.forward_t(&x, true).unwrap();
            let loss = Loss::CrossEntropy.compute(&out, &y).unwrap();
            ref_opt.step(&loss.backward().unwrap()).unwrap();
        }
        for (name, expected) in params(&reference) {
            let got = &store[&name];
            let max = got
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(max < 1e-5, "{name}: max abs diff {max}");
        }
    }

    #[test]
    fn pulled_values_keep_what_the_worker_still_holds() {
        let config = ModelConfig::default_for("logreg").unwrap();
        let m = Model::with_seed(&config, &Device::Cpu, 3).unwrap();
        // A huge threshold: nothing is significant, everything stays held.
        let filter = FilterConfig::new(1e9, 1e-6).unwrap();
        let mut r = Replica::new(m, &sgd(0.5), Loss::CrossEntropy, filter).unwrap();
        let (x, y) = batch(1);
        r.train_step(&x, &y).unwrap();
        let (sent, stats) = r.take_significant().unwrap();
        assert!(sent.is_empty());
        assert_eq!(stats.sent, 0);
        let (name, len) = r.tensors().next().map(|(n, l)| (n.to_string(), l)).unwrap();
        let held = r.tracked[0].acc.residual().to_vec();
        assert!(held.iter().any(|&h| h != 0.0));
        // The store says every weight is 1.0: local = 1.0 + held.
        r.set_dense(&name, 0, &vec![1.0; len]).unwrap();
        let local = flat(&r.tracked[0].var).unwrap();
        for (l, h) in local.iter().zip(&held) {
            assert_eq!(*l, 1.0 + h);
        }
        // Draining returns exactly what was held, entry by entry.
        let all = r.take_all();
        let weights = all.iter().find(|d| d.tensor == name).unwrap();
        let mut dense = vec![0.0f32; len];
        for (&i, &v) in weights.delta.indices.iter().zip(&weights.delta.values) {
            dense[i as usize] = v;
        }
        assert_eq!(dense, held);
        assert!(r.take_all().is_empty());
    }

    #[test]
    fn out_of_range_and_unknown_tensors_are_refused() {
        let config = ModelConfig::default_for("logreg").unwrap();
        let m = Model::with_seed(&config, &Device::Cpu, 3).unwrap();
        let filter = FilterConfig::new(0.1, 1e-6).unwrap();
        let mut r = Replica::new(m, &sgd(0.1), Loss::CrossEntropy, filter).unwrap();
        let (name, len) = r.tensors().next().map(|(n, l)| (n.to_string(), l)).unwrap();
        assert!(matches!(
            r.set_dense(&name, len - 1, &[1.0, 2.0]),
            Err(TrainerError::Range { .. })
        ));
        assert!(matches!(
            r.set_entries(&name, &[len as u64], &[1.0]),
            Err(TrainerError::Range { .. })
        ));
        assert!(matches!(
            r.set_dense("nope", 0, &[1.0]),
            Err(TrainerError::UnknownTensor(_))
        ));
        let bad = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(
            r.train_step(&bad, &Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap())
                .is_err()
        );
    }
}
