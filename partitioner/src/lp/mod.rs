//! The AMPS-Inf model in CPLEX LP format, for an external MIQP/MILP solver (SCIP, Gurobi, CPLEX,
//! HiGHS) to check the optimum.
//!
//! Slots `k = 1..=K` (`K = min(max_functions, layers)`) stand for the groups; a slot may be
//! empty, but used slots come first. Variables (layers `l` 0-based, tiers `m` by their MB):
//! - `x_l_k` binary: layer `l` is in slot `k` (only for `k <= l + 1`: a slot's layers come after
//!   one layer per earlier slot);
//! - `z_k_m` binary: slot `k` runs at tier `m`; `u_k` binary: slot `k` is used;
//! - `y_l_k_m` in [0, 1]: the product `x_l_k · z_k_m` of the MIQP's objective and SLO, written
//!   exactly linear: `Σ_m y_l_k_m = x_l_k` and `y_l_k_m <= z_k_m` force `y = x · z` because a used
//!   slot has exactly one tier (no `y` where the layer has no time at `m`, so `x_l_k` forces a tier
//!   the layer runs at);
//! - `s_l_k` in [0, 1] (`k >= 2`): layer `l` starts slot `k` (`s >= x_l_k − x_{l−1}_k`; only
//!   its least value is ever worth taking, as it only adds cost and latency);
//! - `tr_k` (ms): the input transfer of slot `k >= 2`; `v_k_m = tr_k · z_k_m`, linear the same
//!   way with the bound `v_k_m <= max transfer · z_k_m`; slot 1's input is the model input, so its
//!   transfer is a constant;
//! - `A_k` (MiB): the peak activation of slot `k`.
//!
//! Constraints: each layer in one slot; `g(l) = Σ_k k · x_l_k` grows by 0 or 1 from layer to
//! layer (contiguous groups in slot order), by 0 where the cut would carry more than the payload
//! limit; used slots are non-empty and come first; one tier per used slot; memory
//! `base · u_k + Σ_l w_l x_l_k + A_k <= Σ_m m z_k_m` (MiB); the SLO; at most `max_functions` used.
//!
//! The objective is scaled to **dollars per million requests** ([`OBJECTIVE_SCALE`]): per-request
//! costs around 1e-6 $ have coefficients below solvers' default tolerances (1e-9), and SCIP then
//! stops at wrong "optimal" plans. The file says so in its first lines.
//!
//! ```
//! use cumulus_partitioner::{Instance, lp};
//! use cumulus_partitioner::random::{self, RandomSpec};
//!
//! let instance: Instance = random::instance(&RandomSpec::default(), 1);
//! let mut text = Vec::new();
//! lp::export_lp(&instance, &mut text)?;
//! let text = String::from_utf8(text).unwrap();
//! assert!(text.starts_with("\\ Cumulus"));
//! assert!(text.contains("\\ objective in $ per 1e6 requests"));
//! assert!(text.trim_end().ends_with("End"));
//! # Ok::<(), cumulus_partitioner::PartitionError>(())
//! ```

use std::fmt::Write as _;
use std::io::Write;

use crate::error::Result;
use crate::instance::{Instance, Problem};
use crate::plan::Plan;

/// The exported objective is the cost per request times this: dollars per million requests.
pub const OBJECTIVE_SCALE: f64 = 1e6;

/// Lines wrap once past this many characters (plus one term, at most ~40 more): LP readers
/// differ in what they accept, and 255 is safe for all.
const LINE: usize = 200;

/// Validates `instance` and writes its model in LP format to `out`.
pub fn export_lp(instance: &Instance, out: &mut impl Write) -> Result<()> {
    Problem::new(instance)?.export_lp(out)
}

/// Name of the binary "layer `l` in slot `k`".
pub fn x(l: usize, k: usize) -> String {
    format!("x_{l}_{k}")
}

/// Name of the binary "slot `k` at tier `mb`".
pub fn z(k: usize, mb: u32) -> String {
    format!("z_{k}_{mb}")
}

/// Name of the binary "slot `k` used".
pub fn u(k: usize) -> String {
    format!("u_{k}")
}

impl Problem {
    /// Writes the model in LP format to `out` (see the [module docs](crate::lp)).
    pub fn export_lp(&self, out: &mut impl Write) -> Result<()> {
        let mut lp = String::new();
        self.write_lp(&mut lp);
        out.write_all(lp.as_bytes())?;
        Ok(())
    }

    /// Whether `x_l_k` exists: slot `k` (1-based) can hold layer `l`.
    fn slot_can_hold(&self, l: usize, k: usize) -> bool {
        k <= l + 1 && k <= self.effective_max_functions()
    }

    fn write_lp(&self, lp: &mut String) {
        let n = self.layers();
        let slots = self.effective_max_functions();
        let tiers = &self.tiers_mb;
        let mib = f64::from(1u32 << 20);
        let bw = self.bandwidth_bytes_per_ms;
        // $ per ms at tier t, scaled.
        let per_ms: Vec<f64> = tiers
            .iter()
            .map(|&mb| f64::from(mb) / 1024.0 * self.price_per_gb_s / 1000.0 * OBJECTIVE_SCALE)
            .collect();
        let first_transfer = self.input_bytes as f64 / bw;
        let max_transfer = (1..n)
            .map(|l| self.output[l - 1] as f64 / bw)
            .fold(0.0, f64::max);

        let _ = writeln!(
            lp,
            "\\ Cumulus layer-group partitioning (AMPS-Inf MIQP, products x*z linearized exactly)"
        );
        let _ = writeln!(
            lp,
            "\\ objective in $ per 1e6 requests (cost per request x {OBJECTIVE_SCALE:e})"
        );
        let _ = writeln!(
            lp,
            "\\ memory in MiB, time in ms; {n} layers, tiers {tiers:?} MB, {slots} slots"
        );
        let _ = writeln!(
            lp,
            "\\ x_l_k: layer l (0-based) in slot k (1-based); z_k_m: slot k at m MB; u_k: slot k used"
        );

        let _ = writeln!(lp, "Minimize");
        let mut obj = Expr::new("obj");
        for (t, &mb) in tiers.iter().enumerate() {
            obj.add(per_ms[t] * first_transfer, &z(1, mb));
        }
        for k in 1..=slots {
            for l in (0..n).filter(|&l| self.slot_can_hold(l, k)) {
                for (t, &mb) in tiers.iter().enumerate() {
                    if let Some(ms) = self.time(l, t) {
                        obj.add(per_ms[t] * ms, &format!("y_{l}_{k}_{mb}"));
                    }
                }
            }
            if k >= 2 {
                for (t, &mb) in tiers.iter().enumerate() {
                    obj.add(per_ms[t], &format!("v_{k}_{mb}"));
                }
            }
            obj.add(self.price_per_invocation * OBJECTIVE_SCALE, &u(k));
        }
        obj.finish(lp, None);

        let _ = writeln!(lp, "Subject To");
        for l in 0..n {
            let mut e = Expr::new(&format!("assign_{l}"));
            for k in (1..=slots).filter(|&k| self.slot_can_hold(l, k)) {
                e.add(1.0, &x(l, k));
            }
            e.finish(lp, Some(("=", 1.0)));
        }
        // g(l) − g(l−1) ∈ {0, 1}: contiguous groups in slot order; 0 where the cut is too big.
        for l in 1..n {
            let step = |name: &str| {
                let mut e = Expr::new(name);
                for k in (1..=slots).filter(|&k| self.slot_can_hold(l, k)) {
                    e.add(k as f64, &x(l, k));
                }
                for k in (1..=slots).filter(|&k| self.slot_can_hold(l - 1, k)) {
                    e.add(-(k as f64), &x(l - 1, k));
                }
                e
            };
            if self.output[l - 1] > self.max_payload_bytes {
                step(&format!("nocut_{l}")).finish(lp, Some(("=", 0.0)));
            } else {
                step(&format!("order_lo_{l}")).finish(lp, Some((">=", 0.0)));
                step(&format!("order_hi_{l}")).finish(lp, Some(("<=", 1.0)));
            }
        }
        if self.input_bytes > self.max_payload_bytes {
            // The first function cannot even be invoked: no slot 1, yet layer 0 needs it.
            let mut e = Expr::new("payload_input");
            e.add(1.0, &u(1));
            e.finish(lp, Some(("<=", 0.0)));
        }
        for k in 1..=slots {
            let holds: Vec<usize> = (0..n).filter(|&l| self.slot_can_hold(l, k)).collect();
            for &l in &holds {
                let mut e = Expr::new(&format!("used_{l}_{k}"));
                e.add(1.0, &x(l, k));
                e.add(-1.0, &u(k));
                e.finish(lp, Some(("<=", 0.0)));
            }
            let mut e = Expr::new(&format!("nonempty_{k}"));
            e.add(1.0, &u(k));
            for &l in &holds {
                e.add(-1.0, &x(l, k));
            }
            e.finish(lp, Some(("<=", 0.0)));
            if k >= 2 {
                let mut e = Expr::new(&format!("in_order_{k}"));
                e.add(1.0, &u(k));
                e.add(-1.0, &u(k - 1));
                e.finish(lp, Some(("<=", 0.0)));
            }
            let mut e = Expr::new(&format!("tier_{k}"));
            for &mb in tiers {
                e.add(1.0, &z(k, mb));
            }
            e.add(-1.0, &u(k));
            e.finish(lp, Some(("=", 0.0)));

            // y = x · z.
            for &l in &holds {
                let mut e = Expr::new(&format!("ysum_{l}_{k}"));
                for (t, &mb) in tiers.iter().enumerate() {
                    if self.time(l, t).is_some() {
                        e.add(1.0, &format!("y_{l}_{k}_{mb}"));
                    }
                }
                e.add(-1.0, &x(l, k));
                e.finish(lp, Some(("=", 0.0)));
                for (t, &mb) in tiers.iter().enumerate() {
                    if self.time(l, t).is_some() {
                        let mut e = Expr::new(&format!("ycap_{l}_{k}_{mb}"));
                        e.add(1.0, &format!("y_{l}_{k}_{mb}"));
                        e.add(-1.0, &z(k, mb));
                        e.finish(lp, Some(("<=", 0.0)));
                    }
                }
            }

            // Memory, in MiB: base + weights + peak activation within the tier.
            let mut e = Expr::new(&format!("memory_{k}"));
            e.add(f64::from(self.base_memory_mb), &u(k));
            for &l in &holds {
                e.add(self.weight[l] as f64 / mib, &x(l, k));
            }
            e.add(1.0, &format!("A_{k}"));
            for &mb in tiers {
                e.add(-f64::from(mb), &z(k, mb));
            }
            e.finish(lp, Some(("<=", 0.0)));
            for &l in holds.iter().filter(|&&l| self.activation[l] > 0) {
                let mut e = Expr::new(&format!("peak_{l}_{k}"));
                e.add(self.activation[l] as f64 / mib, &x(l, k));
                e.add(-1.0, &format!("A_{k}"));
                e.finish(lp, Some(("<=", 0.0)));
            }

            // Input transfer of slots after the first, and its product with the tier.
            if k >= 2 {
                for &l in holds.iter().filter(|&&l| l >= 1) {
                    let mut e = Expr::new(&format!("start_{l}_{k}"));
                    e.add(1.0, &x(l, k));
                    if self.slot_can_hold(l - 1, k) {
                        e.add(-1.0, &x(l - 1, k));
                    }
                    e.add(-1.0, &format!("s_{l}_{k}"));
                    e.finish(lp, Some(("<=", 0.0)));
                }
                let mut e = Expr::new(&format!("transfer_{k}"));
                e.add(1.0, &format!("tr_{k}"));
                for &l in holds.iter().filter(|&&l| l >= 1) {
                    e.add(-(self.output[l - 1] as f64 / bw), &format!("s_{l}_{k}"));
                }
                e.finish(lp, Some(("=", 0.0)));
                let mut e = Expr::new(&format!("vsum_{k}"));
                for &mb in tiers {
                    e.add(1.0, &format!("v_{k}_{mb}"));
                }
                e.add(-1.0, &format!("tr_{k}"));
                e.finish(lp, Some(("=", 0.0)));
                for &mb in tiers {
                    let mut e = Expr::new(&format!("vcap_{k}_{mb}"));
                    e.add(1.0, &format!("v_{k}_{mb}"));
                    e.add(-max_transfer, &z(k, mb));
                    e.finish(lp, Some(("<=", 0.0)));
                }
            }
        }
        // Latency: overhead per used slot, run times, transfers; slot 1's transfer is constant.
        let mut e = Expr::new("slo");
        for k in 1..=slots {
            e.add(self.invoke_overhead_ms, &u(k));
            for l in (0..n).filter(|&l| self.slot_can_hold(l, k)) {
                for (t, &mb) in tiers.iter().enumerate() {
                    if let Some(ms) = self.time(l, t) {
                        e.add(ms, &format!("y_{l}_{k}_{mb}"));
                    }
                }
            }
            if k >= 2 {
                e.add(1.0, &format!("tr_{k}"));
            }
        }
        e.finish(lp, Some(("<=", self.slo_ms - first_transfer)));
        let mut e = Expr::new("functions");
        for k in 1..=slots {
            e.add(1.0, &u(k));
        }
        e.finish(lp, Some(("<=", self.max_functions as f64)));

        let _ = writeln!(lp, "Bounds");
        for k in 1..=slots {
            for l in (0..n).filter(|&l| self.slot_can_hold(l, k)) {
                for (t, &mb) in tiers.iter().enumerate() {
                    if self.time(l, t).is_some() {
                        let _ = writeln!(lp, " 0 <= y_{l}_{k}_{mb} <= 1");
                    }
                }
                if k >= 2 && l >= 1 {
                    let _ = writeln!(lp, " 0 <= s_{l}_{k} <= 1");
                }
            }
            let _ = writeln!(lp, " A_{k} >= 0");
            if k >= 2 {
                let _ = writeln!(lp, " tr_{k} >= 0");
                for &mb in tiers {
                    let _ = writeln!(lp, " v_{k}_{mb} >= 0");
                }
            }
        }

        let _ = writeln!(lp, "Binaries");
        let mut names = Line::default();
        for k in 1..=slots {
            for l in (0..n).filter(|&l| self.slot_can_hold(l, k)) {
                names.push(lp, &x(l, k));
            }
            for &mb in tiers {
                names.push(lp, &z(k, mb));
            }
            names.push(lp, &u(k));
        }
        names.flush(lp);
        let _ = writeln!(lp, "End");
    }

    /// The values of every LP variable for `plan` (which must be a plan of this problem), in the
    /// order of the file: what a solver should find at the optimum, or check as a solution.
    pub fn lp_values(&self, plan: &Plan) -> Vec<(String, f64)> {
        let n = self.layers();
        let slots = self.effective_max_functions();
        let bw = self.bandwidth_bytes_per_ms;
        let mut values = Vec::new();
        for k in 1..=slots {
            let group = plan.groups.get(k - 1);
            for l in (0..n).filter(|&l| self.slot_can_hold(l, k)) {
                let inside = group.is_some_and(|g| (g.first..=g.last).contains(&l));
                values.push((x(l, k), f64::from(u8::from(inside))));
                for (t, &mb) in self.tiers_mb.iter().enumerate() {
                    if self.time(l, t).is_some() {
                        let on = inside && group.is_some_and(|g| g.memory_mb == mb);
                        values.push((format!("y_{l}_{k}_{mb}"), f64::from(u8::from(on))));
                    }
                }
                if k >= 2 && l >= 1 {
                    let starts = group.is_some_and(|g| g.first == l);
                    values.push((format!("s_{l}_{k}"), f64::from(u8::from(starts))));
                }
            }
            for &mb in &self.tiers_mb {
                let on = group.is_some_and(|g| g.memory_mb == mb);
                values.push((z(k, mb), f64::from(u8::from(on))));
            }
            values.push((u(k), f64::from(u8::from(group.is_some()))));
            let peak = group.map_or(0, |g| {
                (g.first..=g.last)
                    .map(|l| self.activation[l])
                    .max()
                    .unwrap_or(0)
            });
            values.push((format!("A_{k}"), peak as f64 / f64::from(1u32 << 20)));
            if k >= 2 {
                let transfer = group.map_or(0.0, |g| g.input_bytes as f64 / bw);
                values.push((format!("tr_{k}"), transfer));
                for &mb in &self.tiers_mb {
                    let on = group.is_some_and(|g| g.memory_mb == mb);
                    values.push((format!("v_{k}_{mb}"), if on { transfer } else { 0.0 }));
                }
            }
        }
        values
    }

    /// `plan` as a solution file in SCIP's format (`objective value:` then `name value` lines,
    /// zeros left out), for `read_sol`/`check_sol` against the exported model.
    pub fn write_sol(&self, plan: &Plan, out: &mut impl Write) -> Result<()> {
        let mut text = format!(
            "objective value: {}\n",
            plan.cost_per_request * OBJECTIVE_SCALE
        );
        for (name, value) in self.lp_values(plan) {
            if value != 0.0 {
                let _ = writeln!(text, "{name} {value}");
            }
        }
        out.write_all(text.as_bytes())?;
        Ok(())
    }
}

/// A linear expression written as `name: ±c var ± ...` over as many lines as it needs.
struct Expr {
    text: String,
    line_start: usize,
    terms: usize,
}

impl Expr {
    fn new(name: &str) -> Self {
        Self {
            text: format!(" {name}:"),
            line_start: 0,
            terms: 0,
        }
    }

    fn add(&mut self, coefficient: f64, var: &str) {
        if coefficient == 0.0 {
            return;
        }
        if self.text.len() - self.line_start > LINE {
            self.text.push_str("\n   ");
            self.line_start = self.text.len() - 3;
        }
        let sign = if coefficient < 0.0 { '-' } else { '+' };
        let magnitude = coefficient.abs();
        if magnitude == 1.0 {
            let _ = write!(self.text, " {sign} {var}");
        } else {
            let _ = write!(self.text, " {sign} {} {var}", number(magnitude));
        }
        self.terms += 1;
    }

    /// Writes the expression, with `(sense, rhs)` for a constraint. Every constraint has terms;
    /// an objective without any (everything free) gets `0 u_1`, as LP readers want a term.
    fn finish(self, lp: &mut String, constraint: Option<(&str, f64)>) {
        lp.push_str(&self.text);
        if self.terms == 0 {
            debug_assert!(constraint.is_none(), "every constraint has terms");
            lp.push_str(" 0 u_1");
        }
        if let Some((sense, rhs)) = constraint {
            let _ = write!(lp, " {sense} {}", number(rhs));
        }
        lp.push('\n');
    }
}

/// A line of names, wrapped.
#[derive(Default)]
struct Line {
    len: usize,
}

impl Line {
    fn push(&mut self, lp: &mut String, name: &str) {
        if self.len + name.len() > LINE {
            lp.push('\n');
            self.len = 0;
        }
        lp.push(' ');
        lp.push_str(name);
        self.len += name.len() + 1;
    }

    fn flush(&mut self, lp: &mut String) {
        if self.len > 0 {
            lp.push('\n');
        }
        self.len = 0;
    }
}

/// The shortest decimal that reads back as the same f64 (never NaN or ∞ here), with an exponent
/// when that is shorter.
fn number(value: f64) -> String {
    let plain = format!("{value}");
    let exp = format!("{value:e}");
    if exp.len() < plain.len() { exp } else { plain }
}

#[cfg(test)]
mod tests;
