//! Confident learning: thresholds, confident joint, label issues and label quality scores.
//!
//! Implemented from §2–§7 and §11.2–§11.3 of `shared/reference/cleanlab-algorithms.md`.
//! Labels are class indices `0..K` where `K = pred_probs.k()`; classes may be absent from the labels.
//!
//! Layout:
//! - [`ClassMatrix`] (`class_matrix.rs`): the small K×K matrices (confident joint, joint, noise matrices).
//! - `joint.rs`: per-class confident thresholds, the confident joint and its calibration,
//!   `num_label_issues`, the joint / noise matrix / inverse / `py` estimates.
//! - `filter.rs`: [`find_label_issues`] with every [`FilterBy`] method.
//! - `scores.rs`: [`label_quality_scores`] (self-confidence, normalized margin, confidence-weighted entropy).
//! - `health.rs`: the dataset health summary (per-class label quality, overlapping classes, overall score).
//! - `multilabel.rs`: one-vs-rest multi-label issues and scores.
//! - `regression.rs`: regression label quality (residual and OUTRE-style kNN in O(N·k)).
//!
//! Differences from cleanlab 2.9:
//! - [`CollisionRule`]: a row confident in several classes is counted as the most probable *confident*
//!   class (the paper's rule, default); [`CollisionRule::Cleanlab`] takes the argmax over all classes.
//!   [`LabelIssueOptions::cleanlab`] selects it along with cleanlab's other defaults.
//! - Exact ties are broken deterministically where cleanlab uses numpy's unstable argsort: by row
//!   index in every top-m / bottom-m selection, and in the calibrated joint's rounding the largest
//!   remainder goes up first (ties to the later class) and the smallest goes down first (ties to the
//!   earlier class). On the reference fixtures this changes one row (digits row 1657).
//! - Input is validated more strictly (rows summing to 1, no NaN) and errors name the first bad row.
//! - Multi-label `Low*` methods rank within each one-vs-rest class (cleanlab ranks by the aggregated
//!   score); regression OUTRE uses a fixed `k` (see [`RegressionMethod`]).
//! - Not implemented: `converge_latent_estimates`, `py_method="eqn"`, ensemble scores, ranked index
//!   output (sort the flagged rows by [`label_quality_scores`]), and regression `CleanLearning` (it
//!   fits models).

mod class_matrix;
mod filter;
mod health;
mod joint;
mod multilabel;
mod regression;
mod scores;

pub use class_matrix::ClassMatrix;
pub use filter::find_label_issues;
pub use health::{ClassLabelQuality, HealthSummary, OverlappingClasses, health_summary};
pub use joint::{
    LatentEstimates, PyMethod, confident_joint, confident_thresholds, estimate_joint,
    estimate_latent, estimate_py_and_noise_matrices, num_label_issues,
};
pub use multilabel::{MultiLabelProbs, find_multilabel_issues, multilabel_quality_scores};
pub use regression::{DEFAULT_OUTRE_NEIGHBOURS, RegressionMethod, regression_label_quality};
pub use scores::label_quality_scores;

use crate::{PredProbs, QualityError};

/// How [`find_label_issues`] decides which rows are label issues (cleanlab's `filter_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterBy {
    /// For every off-diagonal cell (given k, true j) of the calibrated confident joint with count m, flag
    /// the m rows of class k with the largest margin `p[j] - p[k]` (cleanlab's default).
    #[default]
    PruneByNoiseRate,
    /// For every class k, flag the `n_k - C[k][k]` rows of class k with the lowest `p[k]`.
    PruneByClass,
    /// Rows flagged by both [`Self::PruneByNoiseRate`] and [`Self::PruneByClass`].
    Both,
    /// The off-diagonal rows of the (uncalibrated) confident joint.
    ConfidentLearning,
    /// Rows whose argmax prediction differs from the given label (baseline).
    PredictedNeqGiven,
    /// The `num_label_issues` rows with the lowest self-confidence.
    LowSelfConfidence,
    /// The `num_label_issues` rows with the lowest normalized margin.
    LowNormalizedMargin,
}

/// How the confident joint counts a row that is confident (`p[i][j] >= t_j`) in several classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CollisionRule {
    /// The confident-learning paper's rule: the argmax over the confident classes only.
    #[default]
    Paper,
    /// cleanlab 2.x's rule: the argmax over all classes (cleanlab issues #1248, #823, #737).
    Cleanlab,
}

/// Which per-row label quality score to compute (cleanlab's `rank.get_label_quality_scores` methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoreMethod {
    /// `p[i][y_i]`.
    #[default]
    SelfConfidence,
    /// `(p[i][y_i] - max_{k != y_i} p[i][k] + 1) / 2`.
    NormalizedMargin,
    /// `log(x + 1) / max(x, 1e-6)` with `x = normalized entropy / max(p[i][y_i], 1e-6)`.
    ConfidenceWeightedEntropy,
}

/// How [`num_label_issues`] estimates the number of label issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NumIssuesMethod {
    /// Off-diagonal rows of the uncalibrated confident joint whose given label is not the argmax.
    #[default]
    OffDiagonal,
    /// `round(N * (1 - trace(joint)))` from the calibrated confident joint (never below `OffDiagonal`
    /// in practice; recommended for fewer than four classes).
    OffDiagonalCalibrated,
}

/// Options of [`find_label_issues`]; [`Default`] is our recommended setting, [`Self::cleanlab`]
/// reproduces `cleanlab.filter.find_label_issues` defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelIssueOptions {
    /// The filtering method.
    pub filter_by: FilterBy,
    /// The confident-joint collision rule.
    pub collision: CollisionRule,
    /// Fraction of the estimated noise to flag, in (0, 1]; used by the `PruneBy*` and `Both` methods.
    pub frac_noise: f64,
    /// Classes with at most this many rows are never pruned, and every class keeps at least this many
    /// rows (cleanlab: 1 in `filter.find_label_issues`, 10 in `CleanLearning` and Datalab).
    pub min_examples_per_class: usize,
    /// Exactly how many rows to remove per given class (length K), instead of the confident joint's
    /// estimate: `PruneByClass` flags that many (minus rows whose label is the argmax);
    /// `PruneByNoiseRate` spreads each class's count over its off-diagonal noise rates, rounded so
    /// that a class may lose one row more or less. Only for the `PruneBy*` and `Both` methods.
    pub num_to_remove_per_class: Option<Vec<usize>>,
}

impl Default for LabelIssueOptions {
    fn default() -> Self {
        Self {
            filter_by: FilterBy::default(),
            collision: CollisionRule::default(),
            frac_noise: 1.0,
            min_examples_per_class: 1,
            num_to_remove_per_class: None,
        }
    }
}

impl LabelIssueOptions {
    /// cleanlab 2.9's `filter.find_label_issues` defaults, including its collision rule.
    pub fn cleanlab() -> Self {
        Self {
            collision: CollisionRule::Cleanlab,
            ..Self::default()
        }
    }

    /// The settings Datalab's label check uses (`CleanLearning` defaults: `min_examples_per_class = 10`)
    /// with the given collision rule.
    pub fn datalab(collision: CollisionRule) -> Self {
        Self {
            collision,
            min_examples_per_class: 10,
            ..Self::default()
        }
    }
}

/// Checks `labels` against `pred_probs` and returns the number of rows per given label.
///
/// # Errors
/// [`QualityError::LengthMismatch`] or [`QualityError::InvalidValue`] naming the first label outside
/// `0..K`.
fn class_counts(labels: &[usize], pred_probs: &PredProbs) -> Result<Vec<usize>, QualityError> {
    count_labels(labels, pred_probs.n(), pred_probs.k())
}

/// Checks `labels` has `n` entries in `0..k` and returns the number of rows per label.
///
/// # Errors
/// As [`class_counts`].
fn count_labels(labels: &[usize], n: usize, k: usize) -> Result<Vec<usize>, QualityError> {
    if labels.len() != n {
        return Err(QualityError::LengthMismatch {
            what: "labels",
            got: labels.len(),
            expected: n,
        });
    }
    let mut counts = vec![0usize; k];
    for (row, &y) in labels.iter().enumerate() {
        match counts.get_mut(y) {
            Some(c) => *c += 1,
            None => {
                return Err(QualityError::InvalidValue {
                    what: "labels",
                    row,
                    reason: format!("label {y} is outside the class range 0..{k}"),
                });
            }
        }
    }
    Ok(counts)
}

/// [`class_counts`], also requiring at least two distinct given labels.
///
/// # Errors
/// As [`class_counts`], and [`QualityError::TooFewClasses`].
fn class_counts_two_classes(
    labels: &[usize],
    pred_probs: &PredProbs,
) -> Result<Vec<usize>, QualityError> {
    let counts = class_counts(labels, pred_probs)?;
    let present = counts.iter().filter(|&&c| c > 0).count();
    if present < 2 {
        return Err(QualityError::TooFewClasses(present));
    }
    Ok(counts)
}
