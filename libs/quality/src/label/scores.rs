//! Per-row label quality scores (§4 of the reference).

use rayon::prelude::*;

use super::joint::{as_f64, numpy_sum, thresholds_unchecked};
use super::{ScoreMethod, class_counts};
use crate::{PredProbs, QualityError};

/// Lower bound of the self-confidence in the confidence-weighted entropy, and of its `x`.
const EPSILON: f64 = 1e-6;

/// Per-row label quality in [0, 1]; lower = more likely mislabeled.
///
/// With `adjust_pred_probs`, each row becomes `p - t + max(t)` renormalised (t = per-class confident
/// thresholds), which compensates for class imbalance. A single class in `labels` is allowed.
///
/// # Errors
/// [`QualityError`] if `labels` does not match `pred_probs` (naming the first bad row), or
/// `adjust_pred_probs` is combined with [`ScoreMethod::ConfidenceWeightedEntropy`].
pub fn label_quality_scores(
    labels: &[usize],
    pred_probs: &PredProbs,
    method: ScoreMethod,
    adjust_pred_probs: bool,
) -> Result<Vec<f64>, QualityError> {
    let counts = class_counts(labels, pred_probs)?;
    if adjust_pred_probs && method == ScoreMethod::ConfidenceWeightedEntropy {
        return Err(QualityError::InvalidOption {
            option: "adjust_pred_probs",
            reason: "not defined for the confidence-weighted entropy score".to_owned(),
        });
    }
    let thresholds = adjust_pred_probs.then(|| thresholds_unchecked(labels, pred_probs, &counts));
    Ok(scores_unchecked(
        labels,
        pred_probs,
        method,
        thresholds.as_deref(),
    ))
}

/// [`label_quality_scores`] on validated input; `thresholds` given = adjust the pred_probs.
pub(crate) fn scores_unchecked(
    labels: &[usize],
    pred_probs: &PredProbs,
    method: ScoreMethod,
    thresholds: Option<&[f64]>,
) -> Vec<f64> {
    let k = pred_probs.k();
    let max_threshold = thresholds.map_or(0.0, |t| t.iter().copied().fold(f64::MIN, f64::max));
    labels
        .par_iter()
        .enumerate()
        .map_init(
            || Vec::with_capacity(k),
            |adjusted, (i, &y)| {
                let row = pred_probs.row(i);
                let row = match thresholds {
                    Some(t) => {
                        adjusted.clear();
                        adjusted.extend(row.iter().zip(t).map(|(p, t)| p - t + max_threshold));
                        let total = numpy_sum(adjusted);
                        adjusted.iter_mut().for_each(|v| *v /= total);
                        adjusted.as_slice()
                    }
                    None => row,
                };
                score(row, y, method)
            },
        )
        .collect()
}

/// One row's score.
fn score(row: &[f64], y: usize, method: ScoreMethod) -> f64 {
    let own = row[y];
    match method {
        ScoreMethod::SelfConfidence => own,
        ScoreMethod::NormalizedMargin => {
            let other = row
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != y)
                .fold(f64::NEG_INFINITY, |m, (_, &p)| m.max(p));
            (own - other + 1.0) / 2.0
        }
        ScoreMethod::ConfidenceWeightedEntropy => {
            let entropy: f64 = -row
                .iter()
                .map(|&p| if p > 0.0 { p * p.ln() } else { 0.0 })
                .sum::<f64>();
            let x = entropy / as_f64(row.len()).ln() / own.max(EPSILON);
            (x + 1.0).ln() / x.max(EPSILON)
        }
    }
}
