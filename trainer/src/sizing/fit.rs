//! The fits behind the planner: weighted least squares with coefficients kept non-negative
//! (a time cannot fall as a job gets more work), and a power-law learning curve.

/// One observation: feature values, the measured response and its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub x: Vec<f64>,
    pub y: f64,
    pub weight: f64,
}

/// Weighted least squares with every coefficient `>= 0` (exact for a handful of features: the
/// best unconstrained fit over every subset of the features whose coefficients all come out
/// non-negative; features left out get 0). `None` when no subset can be solved, or when there
/// are no rows.
pub fn non_negative_least_squares(rows: &[Row], features: usize) -> Option<Vec<f64>> {
    if rows.is_empty() || features == 0 || features > 8 {
        return None;
    }
    let mut best: Option<(f64, Vec<f64>)> = None;
    for mask in 1u32..(1 << features) {
        let chosen: Vec<usize> = (0..features).filter(|&j| mask & (1 << j) != 0).collect();
        let Some(beta) = least_squares(rows, &chosen) else {
            continue;
        };
        if beta.iter().any(|&b| b < 0.0 || !b.is_finite()) {
            continue;
        }
        let mut full = vec![0.0; features];
        for (&j, &b) in chosen.iter().zip(&beta) {
            full[j] = b;
        }
        let residual = weighted_residual(rows, &full);
        // Ties (within rounding) go to the fit with more features, i.e. the one seen later.
        let better = match &best {
            None => true,
            Some((r, _)) => residual <= *r * (1.0 + 1e-9) + 1e-18,
        };
        if better {
            best = Some((residual, full));
        }
    }
    best.map(|(_, beta)| beta)
}

/// Sum of weighted squared residuals of `beta` on `rows`.
pub fn weighted_residual(rows: &[Row], beta: &[f64]) -> f64 {
    rows.iter()
        .map(|r| {
            let pred: f64 = r.x.iter().zip(beta).map(|(x, b)| x * b).sum();
            r.weight * (r.y - pred).powi(2)
        })
        .sum()
}

/// Unconstrained weighted least squares on every feature of `rows`.
pub fn least_squares_all(rows: &[Row]) -> Option<Vec<f64>> {
    let k = rows.first()?.x.len();
    least_squares(rows, &(0..k).collect::<Vec<_>>())
}

/// Unconstrained weighted least squares on the feature columns `cols`, by the normal equations
/// and Gaussian elimination with partial pivoting. Each column is scaled to unit norm first, so
/// features of very different magnitude (seconds and bytes) are judged alike. `None` when the
/// equations are singular.
fn least_squares(rows: &[Row], cols: &[usize]) -> Option<Vec<f64>> {
    let k = cols.len();
    let usable = |r: &&Row| r.weight > 0.0 && r.weight.is_finite() && r.y.is_finite();
    let mut norms = vec![0.0f64; k];
    for r in rows.iter().filter(usable) {
        for (norm, &c) in norms.iter_mut().zip(cols) {
            *norm += r.weight * r.x.get(c)?.powi(2);
        }
    }
    let norms: Vec<f64> = norms.into_iter().map(f64::sqrt).collect();
    if norms.iter().any(|&n| !(n > 0.0 && n.is_finite())) {
        return None;
    }
    // Augmented matrix [XᵀWX | XᵀWy] of the scaled columns.
    let mut a = vec![vec![0.0; k + 1]; k];
    for r in rows.iter().filter(usable) {
        for (i, &ci) in cols.iter().enumerate() {
            let xi = r.x[ci] / norms[i];
            for (j, &cj) in cols.iter().enumerate() {
                a[i][j] += r.weight * xi * r.x[cj] / norms[j];
            }
            a[i][k] += r.weight * xi * r.y;
        }
    }
    for col in 0..k {
        let pivot = (col..k).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))?;
        // The scaled matrix has a unit diagonal: a pivot this small means a column repeats
        // (a combination of) the others.
        if a[pivot][col].abs() <= 1e-10 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let factor = row[col] / pivot_row[col];
                for (v, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *v -= factor * p;
                }
            }
        }
    }
    Some((0..k).map(|i| a[i][k] / a[i][i] / norms[i]).collect())
}

/// A power-law learning curve `gap(e) = a · e^(-b)` fitted in log-log space to `(epoch, gap)`
/// points; the gap is `1 - accuracy` (or AUC) or the RMSE itself. Returns `(a, b)` when at
/// least two usable points show the gap falling (`b > 0`).
pub fn power_law(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let rows: Vec<Row> = points
        .iter()
        .filter(|&&(e, g)| e > 0.0 && g > 0.0 && e.is_finite() && g.is_finite())
        .map(|&(e, g)| Row {
            x: vec![1.0, e.ln()],
            y: g.ln(),
            weight: 1.0,
        })
        .collect();
    if rows.len() < 2 {
        return None;
    }
    let beta = least_squares(&rows, &[0, 1])?;
    let (ln_a, b) = (beta[0], -beta[1]);
    (b > 0.0 && ln_a.is_finite()).then(|| (ln_a.exp(), b))
}

/// The epoch at which the curve `(a, b)` reaches `gap`.
pub fn power_law_epochs(a: f64, b: f64, gap: f64) -> Option<f64> {
    let e = (a / gap).powf(1.0 / b);
    (gap > 0.0 && e.is_finite() && e > 0.0).then_some(e)
}
