//! The dataset-level label health summary (§7 of the reference).

use super::joint::{Analysis, as_f64, calibrated_num_issues, joint_from_counts};
use super::{ClassMatrix, CollisionRule, class_counts_two_classes};
use crate::{PredProbs, QualityError};

/// Label quality of one class, from the estimated joint `J[given][true]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassLabelQuality {
    /// The class index.
    pub class: usize,
    /// Estimated rows labelled `class` whose true class differs: `round(N * (rowsum - J[c][c]))`.
    pub label_issues: usize,
    /// Estimated rows truly `class` labelled otherwise: `round(N * (colsum - J[c][c]))`.
    pub inverse_label_issues: usize,
    /// `P(true != class | given = class)`.
    pub label_noise: f64,
    /// `P(given != class | true = class)`.
    pub inverse_label_noise: f64,
    /// `1 - label_noise`.
    pub label_quality_score: f64,
}

/// A pair of classes the labels confuse.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlappingClasses {
    /// The smaller class index.
    pub class_a: usize,
    /// The larger class index.
    pub class_b: usize,
    /// `round(joint_probability * N)`.
    pub num_overlapping_examples: usize,
    /// `J[a][b] + J[b][a]`.
    pub joint_probability: f64,
}

/// cleanlab's `dataset.health_summary`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSummary {
    /// `1 - num_label_issues / N` with the off-diagonal estimate.
    pub overall_label_health_score: f64,
    /// The off-diagonal estimate of the number of label issues.
    pub num_label_issues: usize,
    /// `round(N * (1 - trace(joint)))`, the calibrated estimate.
    pub num_label_issues_calibrated: usize,
    /// The estimated joint `P(given = i, true = j)`.
    pub joint: ClassMatrix<f64>,
    /// Every class, ascending by label quality score (worst first; ties by class index).
    pub classes_by_label_quality: Vec<ClassLabelQuality>,
    /// Every pair with a non-zero joint probability, descending by it (ties by class indices).
    pub overlapping_classes: Vec<OverlappingClasses>,
}

/// Rounds a non-negative fraction of `n` rows to a count.
fn rows(fraction: f64, n: usize) -> usize {
    // NOTE: fractions of the joint are in [0, 1], so the product is a small non-negative count.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = (fraction * as_f64(n)).round_ties_even().max(0.0) as usize;
    count
}

/// The dataset health summary: per-class label quality, overlapping class pairs and the overall score.
///
/// # Errors
/// [`QualityError`] if `labels` does not match `pred_probs` (naming the first bad row) or has fewer than
/// two distinct classes.
pub fn health_summary(
    labels: &[usize],
    pred_probs: &PredProbs,
    collision: CollisionRule,
) -> Result<HealthSummary, QualityError> {
    let counts = class_counts_two_classes(labels, pred_probs)?;
    let n = labels.len();
    let analysis = Analysis::run(labels, pred_probs, counts, collision);
    let joint = joint_from_counts(&analysis.calibrated());
    let num_label_issues = analysis.scan.num_off_diagonal();
    let (row_sums, col_sums) = (joint.row_sums(), joint.col_sums());
    let mut classes: Vec<ClassLabelQuality> = (0..joint.k())
        .map(|c| {
            let diag = joint.get(c, c);
            let (given_noise, true_noise) = (row_sums[c] - diag, col_sums[c] - diag);
            let label_noise = given_noise / row_sums[c].max(1e-6);
            ClassLabelQuality {
                class: c,
                label_issues: rows(given_noise, n),
                inverse_label_issues: rows(true_noise, n),
                label_noise,
                inverse_label_noise: true_noise / col_sums[c].max(1e-6),
                label_quality_score: 1.0 - label_noise,
            }
        })
        .collect();
    classes.sort_by(|a, b| {
        a.label_quality_score
            .total_cmp(&b.label_quality_score)
            .then(a.class.cmp(&b.class))
    });
    let mut overlapping: Vec<OverlappingClasses> = (0..joint.k())
        .flat_map(|a| ((a + 1)..joint.k()).map(move |b| (a, b)))
        .filter_map(|(a, b)| {
            let p = joint.get(a, b) + joint.get(b, a);
            (p > 0.0).then(|| OverlappingClasses {
                class_a: a,
                class_b: b,
                num_overlapping_examples: rows(p, n),
                joint_probability: p,
            })
        })
        .collect();
    overlapping.sort_by(|x, y| {
        y.joint_probability
            .total_cmp(&x.joint_probability)
            .then((x.class_a, x.class_b).cmp(&(y.class_a, y.class_b)))
    });
    Ok(HealthSummary {
        overall_label_health_score: 1.0 - as_f64(num_label_issues) / as_f64(n),
        num_label_issues,
        num_label_issues_calibrated: calibrated_num_issues(&joint, n),
        joint,
        classes_by_label_quality: classes,
        overlapping_classes: overlapping,
    })
}
