//! Studio's per-row extras: `ambiguous`, `well_labeled`, and the suggested label with its confidence.

use super::{CheckOutput, IssueColumn, IssueType, stats};
use crate::PredProbs;

/// Ambiguity: score = margin between the two most probable classes (1 = unambiguous); flagged below
/// `threshold`.
pub(crate) fn ambiguous(pred_probs: &PredProbs, threshold: f64) -> CheckOutput {
    let score: Vec<f64> = (0..pred_probs.n())
        .map(|i| {
            let (mut top, mut second) = (0.0f64, 0.0f64);
            for p in pred_probs.row(i) {
                if *p > top {
                    second = top;
                    top = *p;
                } else if *p > second {
                    second = *p;
                }
            }
            (top - second).clamp(0.0, 1.0)
        })
        .collect();
    let is_issue = score.iter().map(|s| *s < threshold).collect();
    let summary = stats::mean(&score);
    CheckOutput::new(IssueType::Ambiguous, is_issue, score, summary)
}

/// Well-labelled rows: the given label is the model's argmax and reaches its class's confident
/// threshold, and no row-level check that ran flags the row. Score = self-confidence `p[i][y_i]`;
/// summary = the share of well-labelled rows.
pub(crate) fn well_labeled(
    labels: &[usize],
    pred_probs: &PredProbs,
    thresholds: &[f64],
    row_checks: &[IssueColumn],
) -> CheckOutput {
    let flagged_elsewhere = |i: usize| {
        row_checks
            .iter()
            .any(|c| super::trust::is_row_level(c.issue_type) && c.is_issue[i])
    };
    let score: Vec<f64> = (0..pred_probs.n())
        .map(|i| pred_probs.row(i)[labels[i]])
        .collect();
    let is_well: Vec<bool> = (0..pred_probs.n())
        .map(|i| {
            let y = labels[i];
            stats::argmax(pred_probs.row(i)) == y
                && score[i] >= thresholds[y] - 1e-6
                && !flagged_elsewhere(i)
        })
        .collect();
    let share = is_well.iter().filter(|w| **w).count() as f64 / is_well.len() as f64;
    CheckOutput::new(IssueType::WellLabeled, is_well, score, share)
}

/// The suggested label: the given label unless the row is a label issue, then the model's argmax;
/// its confidence is the suggested class's probability.
pub(crate) fn suggested(
    labels: &[usize],
    pred_probs: &PredProbs,
    label_issues: Option<&[bool]>,
) -> (Vec<usize>, Vec<f64>) {
    (0..pred_probs.n())
        .map(|i| {
            let row = pred_probs.row(i);
            let flagged = label_issues.is_some_and(|f| f[i]);
            let s = if flagged {
                stats::argmax(row)
            } else {
                labels[i]
            };
            (s, row[s])
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguity_is_the_top_two_margin() {
        let pp = PredProbs::new(vec![0.5, 0.45, 0.05, 0.9, 0.05, 0.05], 3).unwrap();
        let out = ambiguous(&pp, 0.1);
        assert_eq!(out.column.is_issue, vec![true, false]);
        assert!((out.column.score[1] - 0.85).abs() < 1e-12);
    }

    #[test]
    fn suggestion_keeps_clean_labels_and_fixes_flagged_ones() {
        let pp = PredProbs::new(vec![0.2, 0.8, 0.7, 0.3], 2).unwrap();
        let (s, c) = suggested(&[0, 0], &pp, Some(&[true, false]));
        assert_eq!(s, vec![1, 0]);
        assert_eq!(c, vec![0.8, 0.7]);
    }
}
