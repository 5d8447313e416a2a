//! `label` (reference §9.1): confident learning via [`crate::label`], and the kNN vote pred_probs used
//! when only features are given.

use super::{CheckOutput, Compat, IssueType};
use crate::knn::KnnGraph;
use crate::label::{
    CollisionRule, HealthSummary, LabelIssueOptions, ScoreMethod, find_label_issues,
    health_summary, label_quality_scores,
};
use crate::{PredProbs, QualityError};

/// The label check's output, with the health summary behind its summary score.
pub(crate) struct LabelOutcome {
    pub(crate) output: CheckOutput,
    pub(crate) health: HealthSummary,
}

/// The label-issue options for a compatibility mode: Datalab's (`CleanLearning` defaults, cleanlab's
/// collision rule) or trustmesh's (the paper's collision rule, no per-class minimum).
pub(crate) fn options(compat: Compat) -> LabelIssueOptions {
    match compat {
        Compat::Cleanlab => LabelIssueOptions::datalab(CollisionRule::Cleanlab),
        Compat::Trustmesh => LabelIssueOptions::default(),
    }
}

/// Flags with [`find_label_issues`], scores by self-confidence; summary = overall label health
/// (`1 − num_label_issues / N`).
///
/// # Errors
/// [`QualityError`] from the label API (mismatched labels, fewer than two classes, ...).
pub(crate) fn check(
    labels: &[usize],
    pred_probs: &PredProbs,
    compat: Compat,
) -> Result<LabelOutcome, QualityError> {
    let opts = options(compat);
    let is_issue = find_label_issues(labels, pred_probs, &opts)?;
    let score = label_quality_scores(labels, pred_probs, ScoreMethod::SelfConfidence, false)?;
    let health = health_summary(labels, pred_probs, opts.collision)?;
    let output = CheckOutput::new(
        IssueType::Label,
        is_issue,
        score,
        health.overall_label_health_score,
    );
    Ok(LabelOutcome { output, health })
}

/// Leave-one-out kNN vote fractions as pred_probs (Datalab's features-only label path): row `i`'s
/// probability of class `c` is the share of its neighbours labelled `c`.
///
/// # Errors
/// [`QualityError`] if fewer than two classes appear or `labels` has the wrong length.
pub(crate) fn knn_pred_probs(
    graph: &KnnGraph,
    labels: &[usize],
) -> Result<PredProbs, QualityError> {
    if labels.len() != graph.n() {
        return Err(QualityError::LengthMismatch {
            what: "labels",
            got: labels.len(),
            expected: graph.n(),
        });
    }
    let k_classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut data = vec![0.0f64; graph.n() * k_classes];
    for i in 0..graph.n() {
        for j in graph.neighbors(i) {
            data[i * k_classes + labels[*j as usize]] += 1.0 / graph.k() as f64;
        }
    }
    PredProbs::new(data, k_classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Features;
    use crate::knn::Metric;

    #[test]
    fn knn_votes_are_neighbour_label_shares() {
        let f = Features::new(vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0], 1).unwrap();
        let g = KnnGraph::build(&f, 2, Metric::Euclidean).unwrap();
        let pp = knn_pred_probs(&g, &[0, 0, 1, 1, 1, 1]).unwrap();
        assert_eq!(pp.row(0), &[0.5, 0.5]);
        assert_eq!(pp.row(4), &[0.0, 1.0]);
    }
}
