//! Multinomial (softmax) logistic regression with an L2 penalty, fitted with L-BFGS.
//!
//! Objective, as scikit-learn's `LogisticRegression(C)` scaled by `1/n`:
//! `(1/n)·Σᵢ −log softmax(Wᵀxᵢ + b)[yᵢ] + ‖W‖²/(2·C·n)`, the intercept `b` unpenalized. The loss and
//! gradient are summed over row blocks in parallel (rayon).

use rayon::prelude::*;

use super::lbfgs::{LbfgsOptions, minimize};
use super::standardize::Standardizer;
use crate::{Features, QualityError};

/// Rows per parallel block of the loss and gradient.
const BLOCK: usize = 2048;

/// Hyperparameters of [`LogisticModel::fit`]; [`Default`] matches scikit-learn's defaults with
/// `max_iter = 1000`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogisticOptions {
    /// Inverse L2 regularization strength (> 0).
    pub c: f64,
    /// L-BFGS iterations allowed.
    pub max_iter: usize,
    /// Converged when every gradient entry of the `1/n`-scaled objective is at most this in
    /// absolute value.
    pub tol: f64,
}

impl Default for LogisticOptions {
    fn default() -> Self {
        Self {
            c: 1.0,
            max_iter: 1000,
            tol: 1e-4,
        }
    }
}

impl LogisticOptions {
    /// Checks the options are in range.
    ///
    /// # Errors
    /// [`QualityError::InvalidOption`] naming the bad option.
    pub fn validate(&self) -> Result<(), QualityError> {
        if !(self.c.is_finite() && self.c > 0.0) {
            return Err(QualityError::InvalidOption {
                option: "c",
                reason: format!("{} is not a positive number", self.c),
            });
        }
        if self.max_iter == 0 {
            return Err(QualityError::InvalidOption {
                option: "max_iter",
                reason: "must be at least 1".into(),
            });
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(QualityError::InvalidOption {
                option: "tol",
                reason: format!("{} is not a non-negative number", self.tol),
            });
        }
        Ok(())
    }
}

/// A fitted standardizer + softmax regression over `k` classes.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticModel {
    standardizer: Standardizer,
    k: usize,
    /// `(d + 1) × k`, row-major: row `j < d` holds feature `j`'s weights, row `d` the intercepts.
    params: Vec<f64>,
    iterations: usize,
    converged: bool,
}

impl LogisticModel {
    /// Fits the standardizer and the regression on `rows` of `features`, with `labels[r] < k` for
    /// every `r` in `rows` (`labels` is indexed by row of `features`).
    ///
    /// # Errors
    /// [`QualityError`] on bad options, a length mismatch, a label outside `0..k`, `k < 2` or no rows.
    pub fn fit(
        features: &Features,
        labels: &[usize],
        k: usize,
        rows: &[usize],
        opts: &LogisticOptions,
    ) -> Result<Self, QualityError> {
        opts.validate()?;
        if k < 2 {
            return Err(QualityError::TooFewClasses(k));
        }
        if labels.len() != features.n() {
            return Err(QualityError::LengthMismatch {
                what: "labels",
                got: labels.len(),
                expected: features.n(),
            });
        }
        if rows.is_empty() {
            return Err(QualityError::Empty);
        }
        check_rows(features, rows)?;
        if let Some(&row) = rows.iter().find(|&&r| labels[r] >= k) {
            return Err(QualityError::InvalidValue {
                what: "labels",
                row,
                reason: format!("label {} is not in 0..{k}", labels[row]),
            });
        }
        let standardizer = Standardizer::fit(features, rows);
        let x = standardizer.transform(features, rows);
        let y: Vec<usize> = rows.iter().map(|&r| labels[r]).collect();
        let d = features.d();
        let n = rows.len() as f64;
        let penalty = 1.0 / (opts.c * n);
        let objective = |w: &[f64], grad: &mut [f64]| {
            let loss = loss_and_gradient(&x, &y, d, k, w, grad);
            grad.iter_mut().for_each(|g| *g /= n);
            let mut l2 = 0.0;
            for (g, w) in grad[..d * k].iter_mut().zip(&w[..d * k]) {
                *g += penalty * w;
                l2 += w * w;
            }
            loss / n + 0.5 * penalty * l2
        };
        let lbfgs = LbfgsOptions {
            max_iter: opts.max_iter,
            gtol: opts.tol,
            ftol: 64.0 * f64::EPSILON,
            memory: 10,
        };
        let min = minimize(objective, vec![0.0; (d + 1) * k], &lbfgs);
        Ok(Self {
            standardizer,
            k,
            params: min.x,
            iterations: min.iterations,
            converged: min.converged,
        })
    }

    /// Number of classes.
    pub fn k(&self) -> usize {
        self.k
    }

    /// L-BFGS iterations the fit took.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// Whether the fit met its tolerance within `max_iter`.
    pub fn converged(&self) -> bool {
        self.converged
    }

    /// Class probabilities of `rows` of `features` (same columns as at fit), row-major `rows.len() × k`.
    ///
    /// # Errors
    /// [`QualityError`] if `features` has a different number of columns, or a row is out of range.
    pub fn predict_proba(
        &self,
        features: &Features,
        rows: &[usize],
    ) -> Result<Vec<f64>, QualityError> {
        let d = self.standardizer.d();
        if features.d() != d {
            return Err(QualityError::LengthMismatch {
                what: "feature columns",
                got: features.d(),
                expected: d,
            });
        }
        check_rows(features, rows)?;
        let k = self.k;
        let mut out = vec![0.0; rows.len() * k];
        out.par_chunks_mut(BLOCK * k)
            .zip(rows.par_chunks(BLOCK))
            .for_each(|(out, rows)| {
                let mut x = vec![0.0f32; d];
                for (p, &r) in out.chunks_exact_mut(k).zip(rows) {
                    self.standardizer.transform_into(features.row(r), &mut x);
                    logits(&x, &self.params, k, p);
                    softmax_in_place(p);
                }
            });
        Ok(out)
    }
}

/// Checks every index in `rows` is a row of `features`.
fn check_rows(features: &Features, rows: &[usize]) -> Result<(), QualityError> {
    match rows.iter().find(|&&r| r >= features.n()) {
        Some(&row) => Err(QualityError::InvalidValue {
            what: "rows",
            row,
            reason: format!("row index beyond the {} rows", features.n()),
        }),
        None => Ok(()),
    }
}

/// `out = Wᵀx + b` for parameters laid out `(d + 1) × k`.
fn logits(x: &[f32], params: &[f64], k: usize, out: &mut [f64]) {
    let d = x.len();
    out.copy_from_slice(&params[d * k..]);
    for (xj, wj) in x.iter().zip(params.chunks_exact(k)) {
        let xj = f64::from(*xj);
        for (o, w) in out.iter_mut().zip(wj) {
            *o += xj * w;
        }
    }
}

/// Turns logits into probabilities; returns `log Σ exp(logits)`.
fn softmax_in_place(z: &mut [f64]) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    z.iter_mut().for_each(|v| *v /= sum);
    max + sum.ln()
}

/// Sum over rows of the cross-entropy, and its gradient (summed, unscaled) written into `grad`.
fn loss_and_gradient(
    x: &[f32],
    y: &[usize],
    d: usize,
    k: usize,
    params: &[f64],
    grad: &mut [f64],
) -> f64 {
    let blocks = x
        .par_chunks(BLOCK * d)
        .zip(y.par_chunks(BLOCK))
        .map(|(x, y)| {
            let mut g = vec![0.0; (d + 1) * k];
            let mut z = vec![0.0; k];
            let mut loss = 0.0;
            for (row, &label) in x.chunks_exact(d).zip(y) {
                logits(row, params, k, &mut z);
                let true_logit = z[label];
                loss += softmax_in_place(&mut z) - true_logit;
                z[label] -= 1.0;
                for (xj, gj) in row.iter().zip(g.chunks_exact_mut(k)) {
                    let xj = f64::from(*xj);
                    for (g, r) in gj.iter_mut().zip(&z) {
                        *g += xj * r;
                    }
                }
                for (g, r) in g[d * k..].iter_mut().zip(&z) {
                    *g += r;
                }
            }
            (loss, g)
        })
        .collect::<Vec<_>>();
    // Summed in block order, so the result does not depend on how rayon split the work.
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut loss = 0.0;
    for (block_loss, block_grad) in blocks {
        loss += block_loss;
        grad.iter_mut().zip(&block_grad).for_each(|(a, b)| *a += b);
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_and_predict_reject_rows_and_columns_that_do_not_fit() {
        let features = Features::new(vec![0.0, 1.0, 2.0, 3.0], 1).unwrap();
        let labels = [0, 0, 1, 1];
        let opts = LogisticOptions::default();
        assert!(matches!(
            LogisticModel::fit(&features, &labels, 2, &[0, 4], &opts),
            Err(QualityError::InvalidValue {
                what: "rows",
                row: 4,
                ..
            })
        ));
        assert!(matches!(
            LogisticModel::fit(&features, &[0, 2, 1, 1], 2, &[0, 1], &opts),
            Err(QualityError::InvalidValue {
                what: "labels",
                row: 1,
                ..
            })
        ));
        let model = LogisticModel::fit(&features, &labels, 2, &[0, 1, 2, 3], &opts).unwrap();
        assert!(model.converged());
        let p = model.predict_proba(&features, &[0, 3]).unwrap();
        assert!(p[0] > 0.5 && p[3] > 0.5, "{p:?}");
        let wider = Features::new(vec![0.0; 4], 2).unwrap();
        assert!(matches!(
            model.predict_proba(&wider, &[0]),
            Err(QualityError::LengthMismatch {
                what: "feature columns",
                got: 2,
                expected: 1
            })
        ));
    }

    /// Finite differences agree with the analytic gradient of the penalized objective.
    #[test]
    fn gradient_matches_finite_differences() {
        let (d, k) = (3, 4);
        let x: Vec<f32> = (0..30).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let y: Vec<usize> = (0..10).map(|i| i % k).collect();
        let params: Vec<f64> = (0..(d + 1) * k)
            .map(|i| ((i * 5 % 7) as f64 - 3.0) / 4.0)
            .collect();
        let mut grad = vec![0.0; params.len()];
        loss_and_gradient(&x, &y, d, k, &params, &mut grad);
        let h = 1e-6;
        for i in 0..params.len() {
            let (mut plus, mut minus) = (params.clone(), params.clone());
            plus[i] += h;
            minus[i] -= h;
            let mut scratch = vec![0.0; params.len()];
            let numeric = (loss_and_gradient(&x, &y, d, k, &plus, &mut scratch)
                - loss_and_gradient(&x, &y, d, k, &minus, &mut scratch))
                / (2.0 * h);
            assert!(
                (numeric - grad[i]).abs() < 1e-5,
                "param {i}: numeric {numeric}, analytic {}",
                grad[i]
            );
        }
    }
}
