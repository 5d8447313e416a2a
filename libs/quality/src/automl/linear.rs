//! Multinomial logistic regression over sparse rows (text TF-IDF beside the standardized dense
//! columns): the objective of [`crate::model::LogisticModel`] (L2, `1/n`-scaled, unpenalized
//! intercepts), fitted with the same L-BFGS, with the loss and gradient summed over fixed row blocks
//! in parallel.

use rayon::prelude::*;

use super::featurize::{Csr, Design};
use crate::model::lbfgs::{LbfgsOptions, minimize};

/// Rows per parallel block (fixed, so sums do not depend on the thread count).
const BLOCK: usize = 4096;

/// The design as one sparse matrix: the dense columns (without the projection of the text block)
/// followed by the sparse block's columns.
pub(super) fn design_csr(design: &Design) -> Csr {
    let (dense, d) = design.dense_without_projection();
    let sparse = design.sparse();
    let mut csr = Csr {
        cols: d + sparse.map_or(0, |s| s.cols),
        indptr: vec![0],
        indices: Vec::new(),
        values: Vec::new(),
    };
    for i in 0..design.n() {
        for (j, v) in dense[i * d..(i + 1) * d].iter().enumerate() {
            if *v != 0.0 {
                csr.indices.push(j as u32);
                csr.values.push(*v);
            }
        }
        if let Some(s) = sparse {
            let (cols, vals) = s.row(i);
            csr.indices.extend(cols.iter().map(|c| c + d as u32));
            csr.values.extend_from_slice(vals);
        }
        csr.indptr.push(csr.indices.len());
    }
    csr
}

/// A fitted sparse softmax regression.
pub(super) struct SparseLogistic {
    k: usize,
    /// `(cols + 1) × k`: feature weights, then the intercepts.
    params: Vec<f64>,
    /// Whether L-BFGS met its tolerance.
    pub(super) converged: bool,
}

fn logits(x: &Csr, i: usize, params: &[f64], k: usize, out: &mut [f64]) {
    out.copy_from_slice(&params[x.cols * k..]);
    let (cols, vals) = x.row(i);
    for (c, v) in cols.iter().zip(vals) {
        let w = &params[*c as usize * k..(*c as usize + 1) * k];
        let v = f64::from(*v);
        out.iter_mut().zip(w).for_each(|(o, w)| *o += v * w);
    }
}

fn softmax(z: &mut [f64]) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    z.iter_mut().for_each(|v| {
        *v = (*v - max).exp();
        sum += *v;
    });
    z.iter_mut().for_each(|v| *v /= sum);
    max + sum.ln()
}

impl SparseLogistic {
    /// Fits on `rows` of `x` with inverse regularization `c`.
    pub(super) fn fit(
        x: &Csr,
        labels: &[usize],
        k: usize,
        rows: &[usize],
        c: f64,
        max_iter: usize,
    ) -> Self {
        let d = x.cols;
        let n = rows.len() as f64;
        let penalty = 1.0 / (c * n);
        let objective = |w: &[f64], grad: &mut [f64]| {
            let blocks: Vec<(f64, Vec<f64>)> = rows
                .par_chunks(BLOCK)
                .map(|block| {
                    let mut g = vec![0.0; (d + 1) * k];
                    let mut z = vec![0.0; k];
                    let mut loss = 0.0;
                    for &i in block {
                        logits(x, i, w, k, &mut z);
                        let label = labels[i];
                        let true_logit = z[label];
                        loss += softmax(&mut z) - true_logit;
                        z[label] -= 1.0;
                        let (cols, vals) = x.row(i);
                        for (c, v) in cols.iter().zip(vals) {
                            let v = f64::from(*v);
                            let gc = &mut g[*c as usize * k..(*c as usize + 1) * k];
                            gc.iter_mut().zip(&z).for_each(|(g, r)| *g += v * r);
                        }
                        g[d * k..].iter_mut().zip(&z).for_each(|(g, r)| *g += r);
                    }
                    (loss, g)
                })
                .collect();
            grad.iter_mut().for_each(|g| *g = 0.0);
            let mut loss = 0.0;
            for (l, g) in blocks {
                loss += l;
                grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b / n);
            }
            let mut l2 = 0.0;
            for (g, w) in grad[..d * k].iter_mut().zip(&w[..d * k]) {
                *g += penalty * w;
                l2 += w * w;
            }
            loss / n + 0.5 * penalty * l2
        };
        let opts = LbfgsOptions {
            max_iter,
            gtol: 1e-4,
            ftol: 64.0 * f64::EPSILON,
            memory: 10,
        };
        let min = minimize(objective, vec![0.0; (d + 1) * k], &opts);
        Self {
            k,
            params: min.x,
            converged: min.converged,
        }
    }

    /// Class probabilities of `rows`, row-major.
    pub(super) fn predict_proba(&self, x: &Csr, rows: &[usize]) -> Vec<f64> {
        let k = self.k;
        let mut out = vec![0.0; rows.len() * k];
        out.par_chunks_mut(k).zip(rows).for_each(|(p, &i)| {
            logits(x, i, &self.params, k, p);
            softmax(p);
        });
        out
    }
}

/// Ridge regression (`½Σ(xᵢ·w + b − yᵢ)² + ½·alpha·‖w‖²`, intercept unpenalized) on `train` rows of
/// `x`, fitted with L-BFGS; returns the predictions for `test` rows.
pub(super) fn ridge_fit_predict(
    x: &Csr,
    y: &[f64],
    train: &[usize],
    test: &[usize],
    alpha: f64,
) -> Vec<f64> {
    let d = x.cols;
    let n = train.len() as f64;
    let predict = |w: &[f64], i: usize| {
        let (cols, vals) = x.row(i);
        w[d] + cols
            .iter()
            .zip(vals)
            .map(|(c, v)| w[*c as usize] * f64::from(*v))
            .sum::<f64>()
    };
    let objective = |w: &[f64], grad: &mut [f64]| {
        let blocks: Vec<(f64, Vec<f64>)> = train
            .par_chunks(BLOCK)
            .map(|block| {
                let mut g = vec![0.0; d + 1];
                let mut loss = 0.0;
                for &i in block {
                    let r = predict(w, i) - y[i];
                    loss += 0.5 * r * r;
                    let (cols, vals) = x.row(i);
                    for (c, v) in cols.iter().zip(vals) {
                        g[*c as usize] += r * f64::from(*v);
                    }
                    g[d] += r;
                }
                (loss, g)
            })
            .collect();
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        for (l, g) in blocks {
            loss += l;
            grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b / n);
        }
        let mut l2 = 0.0;
        for (g, w) in grad[..d].iter_mut().zip(&w[..d]) {
            *g += alpha * w / n;
            l2 += w * w;
        }
        loss / n + 0.5 * alpha * l2 / n
    };
    let opts = LbfgsOptions {
        max_iter: 500,
        gtol: 1e-6,
        ftol: 64.0 * f64::EPSILON,
        memory: 10,
    };
    let mut start = vec![0.0; d + 1];
    start[d] = train.iter().map(|&i| y[i]).sum::<f64>() / n.max(1.0);
    let w = minimize(objective, start, &opts).x;
    test.iter().map(|&i| predict(&w, i)).collect()
}
