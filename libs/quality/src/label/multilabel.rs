//! Multi-label label issues and scores, one-vs-rest per class (§11.2 of the reference).

use super::filter::find_issues_unchecked;
use super::joint::thresholds_unchecked;
use super::scores::scores_unchecked;
use super::{LabelIssueOptions, ScoreMethod, class_counts};
use crate::{PredProbs, QualityError};

/// Weight of each newer (smaller) score in the exponential moving average over a row's class scores.
const EMA_ALPHA: f64 = 0.8;

/// Independent per-class probabilities (e.g. sigmoids): `n` rows × `k` classes, each in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct MultiLabelProbs {
    k: usize,
    data: Vec<f64>,
}

impl MultiLabelProbs {
    /// Wraps `data` (row-major, `k` columns) after checking every value is in [0, 1].
    ///
    /// # Errors
    /// [`QualityError`] naming the first row with a value outside [0, 1] or not a number.
    pub fn new(data: Vec<f64>, k: usize) -> Result<Self, QualityError> {
        if k < 2 {
            return Err(QualityError::TooFewClasses(k));
        }
        if data.is_empty() {
            return Err(QualityError::Empty);
        }
        if !data.len().is_multiple_of(k) {
            return Err(QualityError::LengthMismatch {
                what: "multi-label probability values",
                got: data.len(),
                expected: data.len().div_ceil(k) * k,
            });
        }
        if let Some(i) = data.iter().position(|p| !(0.0..=1.0).contains(p)) {
            return Err(QualityError::InvalidValue {
                what: "multi-label probabilities",
                row: i / k,
                reason: format!("class {} probability {} is not in [0, 1]", i % k, data[i]),
            });
        }
        Ok(Self { k, data })
    }

    /// Number of rows.
    pub fn n(&self) -> usize {
        self.data.len() / self.k
    }

    /// Number of classes.
    pub fn k(&self) -> usize {
        self.k
    }

    /// One-vs-rest binary problem of `class`: labels (1 = the row has the class) and `[1 - p, p]`.
    fn one_vs_rest(&self, labels: &[Vec<usize>], class: usize) -> (Vec<usize>, PredProbs) {
        let binary: Vec<usize> = labels
            .iter()
            .map(|l| usize::from(l.contains(&class)))
            .collect();
        let probs = self
            .data
            .chunks_exact(self.k)
            .flat_map(|r| [1.0 - r[class], r[class]])
            .collect();
        // NOTE: `[1 - p, p]` with p in [0, 1] is always a valid distribution.
        let probs = PredProbs::new(probs, 2).expect("one-vs-rest probabilities are valid");
        (binary, probs)
    }
}

/// Checks multi-label `labels` against `probs`.
fn validate(labels: &[Vec<usize>], probs: &MultiLabelProbs) -> Result<(), QualityError> {
    if labels.len() != probs.n() {
        return Err(QualityError::LengthMismatch {
            what: "labels",
            got: labels.len(),
            expected: probs.n(),
        });
    }
    if let Some((row, bad)) = labels
        .iter()
        .enumerate()
        .find_map(|(row, l)| l.iter().find(|&&c| c >= probs.k()).map(|&c| (row, c)))
    {
        return Err(QualityError::InvalidValue {
            what: "labels",
            row,
            reason: format!("label {bad} is outside the class range 0..{}", probs.k()),
        });
    }
    Ok(())
}

/// Flags rows with a label issue in any class, each class treated as a binary problem with
/// [`super::find_label_issues`]'s method. `Low*` methods rank within each class (cleanlab ranks by the
/// aggregated multi-label score instead).
///
/// # Errors
/// [`QualityError`] naming the first row with a class outside `0..K`, on a length mismatch, or with
/// `num_to_remove_per_class`.
pub fn find_multilabel_issues(
    labels: &[Vec<usize>],
    probs: &MultiLabelProbs,
    opts: &LabelIssueOptions,
) -> Result<Vec<bool>, QualityError> {
    validate(labels, probs)?;
    if opts.num_to_remove_per_class.is_some() {
        return Err(QualityError::InvalidOption {
            option: "num_to_remove_per_class",
            reason: "not defined for multi-label data".to_owned(),
        });
    }
    let mut mask = vec![false; labels.len()];
    for class in 0..probs.k() {
        let (binary, pred_probs) = probs.one_vs_rest(labels, class);
        let counts = class_counts(&binary, &pred_probs)?;
        for (m, flagged) in
            mask.iter_mut()
                .zip(find_issues_unchecked(&binary, &pred_probs, counts, opts))
        {
            *m |= flagged;
        }
    }
    Ok(mask)
}

/// Per-row multi-label quality in [0, 1]: the per-class one-vs-rest scores, sorted descending and
/// folded with an exponential moving average (alpha 0.8), which weighs the worst class most.
///
/// # Errors
/// As [`find_multilabel_issues`], and [`QualityError::InvalidOption`] for adjusted
/// confidence-weighted entropy.
pub fn multilabel_quality_scores(
    labels: &[Vec<usize>],
    probs: &MultiLabelProbs,
    method: ScoreMethod,
    adjust_pred_probs: bool,
) -> Result<Vec<f64>, QualityError> {
    validate(labels, probs)?;
    if adjust_pred_probs && method == ScoreMethod::ConfidenceWeightedEntropy {
        return Err(QualityError::InvalidOption {
            option: "adjust_pred_probs",
            reason: "not defined for the confidence-weighted entropy score".to_owned(),
        });
    }
    let (n, k) = (labels.len(), probs.k());
    let mut per_class = vec![0.0; n * k];
    for class in 0..k {
        let (binary, pred_probs) = probs.one_vs_rest(labels, class);
        let thresholds = if adjust_pred_probs {
            Some(thresholds_unchecked(
                &binary,
                &pred_probs,
                &class_counts(&binary, &pred_probs)?,
            ))
        } else {
            None
        };
        let scores = scores_unchecked(&binary, &pred_probs, method, thresholds.as_deref());
        for (row, s) in scores.into_iter().enumerate() {
            per_class[row * k + class] = s;
        }
    }
    Ok(per_class
        .chunks_exact_mut(k)
        .map(|scores| {
            scores.sort_unstable_by(|a, b| b.total_cmp(a));
            scores[1..]
                .iter()
                .fold(scores[0], |ema, &s| EMA_ALPHA * s + (1.0 - EMA_ALPHA) * ema)
        })
        .collect())
}
