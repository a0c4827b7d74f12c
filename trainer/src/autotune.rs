//! The MLLess scale-in auto-tuner (DESIGN.md §6).
//!
//! Training loss falls steeply at first and then flattens; past that knee, extra workers buy little
//! loss for their cost. The tuner
//! 1. smooths the reported loss with an EWMA,
//! 2. detects the knee: the recent slope of the smoothed loss (per training example) has fallen
//!    below a fraction of the initial slope,
//! 3. then, every `interval_steps`, fits a learning curve `loss(s) = 1 / (b0·s + b1) + b2` over the
//!    examples processed `s` (Nelder–Mead with `argmin`), to the observations from the flat window
//!    that revealed the knee on, and a step-time model, predicts the loss
//!    `horizon_secs` ahead with `W` and with `W − 1` workers, and removes a worker when the
//!    difference stays within `tolerance` (relative).
//!
//! The tuner only decides; the coordinator removes the worker, which pushes its accumulator before
//! it exits, so nothing is lost.
//!
//! ```
//! use cumulus_trainer::autotune::{AutoTuner, AutoTuneConfig, Decision, Observation};
//!
//! let mut tuner = AutoTuner::new(AutoTuneConfig::default())?;
//! // A loss curve that flattened long ago, reported after every local step: 4 workers,
//! // minibatches of 128 examples, 10 ms a step.
//! for step in 1..=400u64 {
//!     let s = (step * 4 * 32) as f64;
//!     let loss = 1.0 / (0.001 * s + 1.0) + 0.3;
//!     tuner.observe(Observation { step, examples: s, loss, workers: 4, step_secs: 0.01 })?;
//! }
//! assert!(matches!(tuner.decide(), Decision::RemoveWorker { .. }));
//! # Ok::<(), cumulus_trainer::autotune::AutoTuneError>(())
//! ```

use argmin::core::{CostFunction, Executor};
use argmin::solver::neldermead::NelderMead;

/// Why the tuner refused a setting or an observation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AutoTuneError {
    #[error("autotune.{field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("observation at step {step}: {reason}")]
    Observation { step: u64, reason: String },
}

/// The tuner's knobs; the defaults follow MLLess's behaviour at small scale.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoTuneConfig {
    /// EWMA weight of a new loss sample, in (0, 1].
    pub ewma_alpha: f64,
    /// Observations in each slope window (initial and recent).
    pub window: usize,
    /// The knee is passed when |recent slope| < `knee_ratio` · |initial slope|.
    pub knee_ratio: f64,
    /// How far ahead the loss is predicted, in seconds.
    pub horizon_secs: f64,
    /// A worker goes when the predicted loss with one fewer is within this relative margin.
    pub tolerance: f64,
    /// Never go below this many workers.
    pub min_workers: u32,
    /// Steps between two decisions after the knee.
    pub interval_steps: u64,
}

impl Default for AutoTuneConfig {
    fn default() -> Self {
        Self {
            ewma_alpha: 0.1,
            window: 20,
            knee_ratio: 0.1,
            horizon_secs: 5.0,
            tolerance: 0.01,
            min_workers: 1,
            interval_steps: 50,
        }
    }
}

impl AutoTuneConfig {
    pub fn validate(&self) -> Result<(), AutoTuneError> {
        let bad = |field, reason: &str| {
            Err(AutoTuneError::Config {
                field,
                reason: reason.to_string(),
            })
        };
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return bad("ewma_alpha", "must be in (0, 1]");
        }
        if self.window < 3 {
            return bad("window", "must be at least 3 observations");
        }
        if !(self.knee_ratio > 0.0 && self.knee_ratio < 1.0) {
            return bad("knee_ratio", "must be in (0, 1)");
        }
        if !(self.horizon_secs.is_finite() && self.horizon_secs > 0.0) {
            return bad("horizon_secs", "must be a positive number of seconds");
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return bad("tolerance", "must be >= 0");
        }
        if self.min_workers == 0 {
            return bad("min_workers", "must be at least 1");
        }
        if self.interval_steps == 0 {
            return bad("interval_steps", "must be at least 1");
        }
        Ok(())
    }
}

/// One report of the job's progress (one worker invocation's steps, as the coordinator feeds it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Local steps of all workers together so far (each one minibatch of one worker); must
    /// increase. Under SSP and ASP the workers' clocks differ, but this count always grows.
    pub step: u64,
    /// Training examples processed by all workers so far; must not decrease.
    pub examples: f64,
    /// Training loss reported for this step.
    pub loss: f64,
    /// Workers active during this step.
    pub workers: u32,
    /// Wall time of one local step of the reporting worker, in seconds.
    pub step_secs: f64,
}

/// What the coordinator should do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Keep the current workers.
    Keep,
    /// Remove one worker: with `workers − 1` the loss predicted `horizon_secs` ahead is
    /// `predicted_fewer`, against `predicted_now` with the current count.
    RemoveWorker {
        predicted_now: f64,
        predicted_fewer: f64,
    },
}

/// `loss(s) = 1 / (b0·s + b1) + b2`, with `s` the examples processed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearningCurve {
    pub b0: f64,
    pub b1: f64,
    pub b2: f64,
}

impl LearningCurve {
    pub fn predict(&self, examples: f64) -> f64 {
        1.0 / (self.b0 * examples + self.b1) + self.b2
    }

    /// Least-squares fit over `(examples, loss)` points; `None` when there are too few points or
    /// the solver fails. `b0` and `b1` are kept positive by fitting their logarithms, and `s` is
    /// rescaled to [0, 1] so that one simplex suits every job size.
    pub fn fit(points: &[(f64, f64)]) -> Option<Self> {
        if points.len() < 4 {
            return None;
        }
        let scale = points.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0);
        let scaled: Vec<(f64, f64)> = points.iter().map(|&(s, l)| (s / scale, l)).collect();
        let first = scaled.first()?.1;
        let last = scaled.last()?.1;
        // Start from a curve through the first point that has fallen most of the way by the end.
        let b2 = last - 0.1 * (first - last).abs().max(1e-6);
        let b1 = 1.0 / (first - b2).max(1e-6);
        let b0 = (1.0 / (last - b2).max(1e-6) - b1).max(1e-3);
        let start = vec![b0.ln(), b1.ln(), b2];
        let simplex = vec![
            start.clone(),
            vec![start[0] + 0.5, start[1], start[2]],
            vec![start[0], start[1] + 0.5, start[2]],
            vec![
                start[0],
                start[1],
                start[2] + 0.1 * (first - last).abs().max(1e-3),
            ],
        ];
        let solver = NelderMead::new(simplex).with_sd_tolerance(1e-12).ok()?;
        let result = Executor::new(CurveFit { points: &scaled }, solver)
            .configure(|state| state.max_iters(2000))
            .run()
            .ok()?;
        let best = result.state.best_param?;
        let curve = Self {
            b0: best[0].exp() / scale,
            b1: best[1].exp(),
            b2: best[2],
        };
        [curve.b0, curve.b1, curve.b2]
            .iter()
            .all(|v| v.is_finite())
            .then_some(curve)
    }
}

struct CurveFit<'a> {
    points: &'a [(f64, f64)],
}

impl CostFunction for CurveFit<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Self::Param) -> Result<f64, argmin::core::Error> {
        let curve = LearningCurve {
            b0: p[0].exp(),
            b1: p[1].exp(),
            b2: p[2],
        };
        let sse = self
            .points
            .iter()
            .map(|&(s, l)| (curve.predict(s) - l).powi(2))
            .sum::<f64>();
        // A non-finite cost would stall the simplex; a huge one steers it away instead.
        Ok(if sse.is_finite() { sse } else { f64::MAX / 4.0 })
    }
}

/// Seconds per global step as a function of the worker count, `t(W) = a + b·W`, fitted by least
/// squares once at least two worker counts were seen; before that, the mean measured step time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTimeModel {
    pub a: f64,
    pub b: f64,
}

impl StepTimeModel {
    pub fn fit(samples: &[(u32, f64)]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let n = samples.len() as f64;
        let mean_w = samples.iter().map(|s| f64::from(s.0)).sum::<f64>() / n;
        let mean_t = samples.iter().map(|s| s.1).sum::<f64>() / n;
        let var_w = samples
            .iter()
            .map(|s| (f64::from(s.0) - mean_w).powi(2))
            .sum::<f64>();
        if var_w == 0.0 {
            return Some(Self { a: mean_t, b: 0.0 });
        }
        let cov = samples
            .iter()
            .map(|s| (f64::from(s.0) - mean_w) * (s.1 - mean_t))
            .sum::<f64>();
        let b = cov / var_w;
        Some(Self {
            a: mean_t - b * mean_w,
            b,
        })
    }

    pub fn predict(&self, workers: u32) -> f64 {
        (self.a + self.b * f64::from(workers)).max(1e-9)
    }
}

/// The tuner's state over one job.
#[derive(Debug, Clone)]
pub struct AutoTuner {
    config: AutoTuneConfig,
    smoothed: Option<f64>,
    history: Vec<Observation>,
    /// Smoothed loss per observation, parallel to `history`.
    curve: Vec<f64>,
    knee_step: Option<u64>,
    /// Index in `history` of the first observation the learning curve is fitted to: the start of
    /// the flat window that revealed the knee.
    fit_from: usize,
    last_decision: u64,
}

impl AutoTuner {
    pub fn new(config: AutoTuneConfig) -> Result<Self, AutoTuneError> {
        config.validate()?;
        Ok(Self {
            config,
            smoothed: None,
            history: Vec::new(),
            curve: Vec::new(),
            knee_step: None,
            fit_from: 0,
            last_decision: 0,
        })
    }

    /// The step at which the knee was detected, if it was.
    pub fn knee_step(&self) -> Option<u64> {
        self.knee_step
    }

    /// The current smoothed loss.
    pub fn smoothed_loss(&self) -> Option<f64> {
        self.smoothed
    }

    /// Record one step's report. Out-of-order or non-finite reports are refused.
    pub fn observe(&mut self, obs: Observation) -> Result<(), AutoTuneError> {
        let refuse = |reason: &str| {
            Err(AutoTuneError::Observation {
                step: obs.step,
                reason: reason.to_string(),
            })
        };
        if !obs.loss.is_finite() || !obs.examples.is_finite() || !obs.step_secs.is_finite() {
            return refuse("loss, examples and step time must be finite");
        }
        if obs.workers == 0 || obs.step_secs <= 0.0 {
            return refuse("needs at least one worker and a positive step time");
        }
        if let Some(prev) = self.history.last()
            && (obs.step <= prev.step || obs.examples < prev.examples)
        {
            return refuse("steps must increase and examples must not decrease");
        }
        let alpha = self.config.ewma_alpha;
        let smoothed = match self.smoothed {
            None => obs.loss,
            Some(s) => alpha * obs.loss + (1.0 - alpha) * s,
        };
        self.smoothed = Some(smoothed);
        self.history.push(obs);
        self.curve.push(smoothed);
        if self.knee_step.is_none() && self.knee_passed() {
            self.knee_step = Some(obs.step);
            self.fit_from = self.history.len() - self.config.window;
            self.last_decision = obs.step;
        }
        Ok(())
    }

    /// Slope of the smoothed loss per example over observations `range`.
    fn slope(&self, range: std::ops::Range<usize>) -> Option<f64> {
        let pts: Vec<(f64, f64)> = range
            .map(|i| (self.history[i].examples, self.curve[i]))
            .collect();
        let n = pts.len() as f64;
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let var = pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
        (var > 0.0).then(|| pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / var)
    }

    fn knee_passed(&self) -> bool {
        let w = self.config.window;
        let n = self.history.len();
        if n < 2 * w {
            return false;
        }
        match (self.slope(0..w), self.slope(n - w..n)) {
            (Some(initial), Some(recent)) if initial < 0.0 => {
                recent.abs() < self.config.knee_ratio * initial.abs()
            }
            _ => false,
        }
    }

    /// Whether to remove a worker now. Before the knee, between intervals, at `min_workers`, or
    /// when a fit fails, the answer is [`Decision::Keep`].
    pub fn decide(&mut self) -> Decision {
        let (Some(knee), Some(last)) = (self.knee_step, self.history.last().copied()) else {
            return Decision::Keep;
        };
        if last.workers <= self.config.min_workers
            || (last.step > knee && last.step < self.last_decision + self.config.interval_steps)
        {
            return Decision::Keep;
        }
        self.last_decision = last.step;
        // The curve is fitted to the flat part only: with the steep start in the fit, the
        // least-squares hyperbola bends the tail to match it, and on a real job (PMF on
        // MovieLens) it put the asymptote below zero and predicted negative losses.
        // The examples are counted from the window's start, so the hyperbola's pole sits there and
        // not at the job's start: fitted over `s` from 0, a slowly flattening tail far from the
        // origin drove `b1` to zero and gave a 1/s tail much steeper than the measured one.
        let origin = self.history[self.fit_from].examples;
        let points: Vec<(f64, f64)> = self.history[self.fit_from..]
            .iter()
            .zip(&self.curve[self.fit_from..])
            .map(|(o, &l)| (o.examples - origin, l))
            .collect();
        let times: Vec<(u32, f64)> = self
            .history
            .iter()
            .map(|o| (o.workers, o.step_secs))
            .collect();
        let (Some(curve), Some(time)) = (LearningCurve::fit(&points), StepTimeModel::fit(&times))
        else {
            tracing::debug!(
                step = last.step,
                "auto-tuner: no learning-curve fit; keeping"
            );
            return Decision::Keep;
        };
        // Steps are local steps of all workers together, so examples per step is one worker's
        // minibatch; in `horizon_secs` each of `w` workers runs `horizon / t(w)` steps.
        let per_step = last.examples / (last.step as f64).max(1.0);
        let rate = |w: u32| per_step * f64::from(w) / time.predict(w);
        // A fitted curve is not extrapolated beyond twice the range it was fitted to: on a fast
        // job (2 ms steps) `horizon_secs` alone would predict four times further ahead than the
        // job had run, where the hyperbola's tail says little.
        let fitted_span = last.examples - origin;
        let horizon = self
            .config
            .horizon_secs
            .min(fitted_span / rate(last.workers).max(f64::MIN_POSITIVE));
        let ahead = |w: u32| curve.predict(fitted_span + horizon * rate(w));
        let predicted_now = ahead(last.workers);
        let predicted_fewer = ahead(last.workers - 1);
        tracing::debug!(
            step = last.step,
            knee,
            workers = last.workers,
            smoothed = self.smoothed,
            predicted_now,
            predicted_fewer,
            horizon,
            ?curve,
            ?time,
            "auto-tuner prediction"
        );
        if predicted_fewer - predicted_now <= self.config.tolerance * predicted_now.abs() {
            Decision::RemoveWorker {
                predicted_now,
                predicted_fewer,
            }
        } else {
            Decision::Keep
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(curve: impl Fn(f64) -> f64, steps: u64, workers: u32) -> AutoTuner {
        let mut tuner = AutoTuner::new(AutoTuneConfig::default()).unwrap();
        for step in 1..=steps {
            let s = (step * u64::from(workers) * 32) as f64;
            tuner
                .observe(Observation {
                    step,
                    examples: s,
                    loss: curve(s),
                    workers,
                    step_secs: 0.01,
                })
                .unwrap();
        }
        tuner
    }

    #[test]
    fn fit_recovers_a_known_learning_curve() {
        let truth = LearningCurve {
            b0: 0.002,
            b1: 0.8,
            b2: 0.25,
        };
        let points: Vec<(f64, f64)> = (0..200)
            .map(|i| {
                let s = f64::from(i) * 100.0;
                (s, truth.predict(s))
            })
            .collect();
        let fit = LearningCurve::fit(&points).unwrap();
        for s in [0.0, 500.0, 5_000.0, 20_000.0, 40_000.0] {
            let (a, b) = (fit.predict(s), truth.predict(s));
            assert!((a - b).abs() < 1e-3, "at s={s}: fit {a} truth {b}");
        }
        assert!((fit.b2 - truth.b2).abs() < 0.01, "{fit:?}");
    }

    #[test]
    fn knee_is_not_seen_while_the_loss_still_falls_steeply() {
        // Linear descent: the slope never flattens.
        let tuner = run(|s| 10.0 - s * 1e-4, 200, 4);
        assert_eq!(tuner.knee_step(), None);
    }

    #[test]
    fn knee_is_seen_once_the_curve_flattens_and_not_before() {
        let tuner = run(|s| 1.0 / (0.001 * s + 1.0) + 0.3, 400, 4);
        let knee = tuner.knee_step().expect("a hyperbolic curve flattens");
        assert!(knee > 40, "knee {knee} too early");
    }

    #[test]
    fn removes_a_worker_on_a_flat_curve_and_keeps_it_on_a_steep_one() {
        let mut flat = run(|s| 1.0 / (0.001 * s + 1.0) + 0.3, 400, 4);
        match flat.decide() {
            Decision::RemoveWorker {
                predicted_now,
                predicted_fewer,
            } => assert!(predicted_fewer >= predicted_now),
            Decision::Keep => panic!("a flat curve should let a worker go"),
        }
        // Steep until the end: tolerance 0 means any predicted loss increase keeps the worker.
        let mut cfg = AutoTuneConfig {
            tolerance: 0.0,
            knee_ratio: 0.9,
            ..AutoTuneConfig::default()
        };
        cfg.window = 10;
        let mut steep = AutoTuner::new(cfg).unwrap();
        for step in 1..=100u64 {
            let s = (step * 128) as f64;
            steep
                .observe(Observation {
                    step,
                    examples: s,
                    loss: 1.0 / (0.0001 * s + 0.5),
                    workers: 4,
                    step_secs: 0.01,
                })
                .unwrap();
        }
        assert!(steep.knee_step().is_some());
        assert_eq!(steep.decide(), Decision::Keep);
    }

    /// The shape of a real PMF-on-MovieLens run with Adam (4 workers, reports of 50 steps of 256
    /// examples, 2 ms a step): a steep fall from the initial loss, then a long, slowly sinking
    /// tail. Fitted to the whole history, the hyperbola put its asymptote below zero and
    /// predicted negative losses 5 s ahead, with a gap between 4 and 3 workers far above the
    /// tolerance, so no worker ever went.
    #[test]
    fn a_steep_start_with_a_slow_tail_still_lets_a_worker_go() {
        let mut tuner = AutoTuner::new(AutoTuneConfig::default()).unwrap();
        for report in 1..=120u64 {
            let s = (report * 50 * 256) as f64;
            let loss = 12.0 * (-s / 40_000.0).exp() + 0.95 * (1.0 + s / 200_000.0).powf(-0.15);
            tuner
                .observe(Observation {
                    step: report * 50,
                    examples: s,
                    loss,
                    workers: 4,
                    step_secs: 0.002,
                })
                .unwrap();
        }
        assert!(tuner.knee_step().is_some());
        match tuner.decide() {
            Decision::RemoveWorker {
                predicted_now,
                predicted_fewer,
            } => {
                let smoothed = tuner.smoothed_loss().unwrap();
                assert!(
                    predicted_now > 0.0 && predicted_now <= smoothed,
                    "{predicted_now}"
                );
                assert!(predicted_fewer >= predicted_now);
            }
            Decision::Keep => panic!("the tail is flat: a worker should go"),
        }
    }

    #[test]
    fn never_goes_below_min_workers_and_waits_between_decisions() {
        let mut one = run(|s| 1.0 / (0.001 * s + 1.0) + 0.3, 400, 1);
        assert_eq!(one.decide(), Decision::Keep);
        let mut four = run(|s| 1.0 / (0.001 * s + 1.0) + 0.3, 400, 4);
        assert!(matches!(four.decide(), Decision::RemoveWorker { .. }));
        // Same step again: within the interval, no second removal.
        assert_eq!(four.decide(), Decision::Keep);
    }

    #[test]
    fn step_time_model_fits_a_line_and_falls_back_to_the_mean() {
        let m = StepTimeModel::fit(&[(2, 0.02), (4, 0.03), (8, 0.05)]).unwrap();
        assert!((m.predict(6) - 0.04).abs() < 1e-12);
        let m = StepTimeModel::fit(&[(4, 0.02), (4, 0.04)]).unwrap();
        assert!((m.predict(3) - 0.03).abs() < 1e-12);
    }

    #[test]
    fn bad_settings_and_reports_are_refused() {
        let cfg = AutoTuneConfig {
            ewma_alpha: 0.0,
            ..AutoTuneConfig::default()
        };
        assert!(matches!(
            AutoTuner::new(cfg),
            Err(AutoTuneError::Config {
                field: "ewma_alpha",
                ..
            })
        ));
        let mut t = AutoTuner::new(AutoTuneConfig::default()).unwrap();
        let obs = Observation {
            step: 2,
            examples: 10.0,
            loss: 1.0,
            workers: 2,
            step_secs: 0.1,
        };
        t.observe(obs).unwrap();
        assert!(t.observe(obs).is_err(), "the same step twice");
        assert!(
            t.observe(Observation {
                step: 3,
                loss: f64::NAN,
                ..obs
            })
            .is_err()
        );
        assert_eq!(t.smoothed_loss(), Some(1.0));
    }
}
