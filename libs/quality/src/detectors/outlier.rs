//! `outlier` (reference §9.2): mean kNN distance with a Tukey fence (features path), or adjusted
//! pred_probs entropy (pred_probs path).

use super::{CheckOutput, IssueType, stats};
use crate::knn::{KnnGraph, Metric};
use crate::{PredProbs, QualityError};

/// Features path: `score = exp(−t·d/median d)` of the mean kNN distance `d`, flags
/// `d > Q3 + (1/threshold − 1)·IQR`. Returns the check and the mean distances.
pub(crate) fn from_knn(graph: &KnnGraph, t: f64, threshold: f64) -> CheckOutput {
    let avg: Vec<f64> = graph
        .all_distances()
        .chunks_exact(graph.k())
        .map(|d| d.iter().sum::<f64>() / d.len() as f64)
        .collect();
    let scale = stats::median(&avg).max(100.0 * f64::EPSILON);
    // Distances below this are floating-point noise around 0 (the reference's precision fix).
    let tolerance = match graph.metric() {
        Metric::Cosine => 100.0 * f64::EPSILON / 2.0,
        Metric::Euclidean => (100.0 * f64::EPSILON).sqrt(),
    };
    let score: Vec<f64> = avg
        .iter()
        .map(|d| {
            if *d < tolerance {
                1.0
            } else {
                (-t * d / scale).exp()
            }
        })
        .collect();
    let (q1, q3) = (stats::percentile(&avg, 25.0), stats::percentile(&avg, 75.0));
    let fence = if threshold > 0.0 {
        q3 + (1.0 / threshold - 1.0) * (q3 - q1)
    } else {
        f64::INFINITY
    };
    let is_issue = avg.iter().map(|d| *d > fence).collect();
    let summary = stats::mean(&score);
    CheckOutput::new(IssueType::Outlier, is_issue, score, summary)
}

/// pred_probs path: `1 − H(p')/log K` with `p'` the pred_probs shifted by the confident thresholds
/// (`p − t + max t`, renormalised); flags `score < threshold · median(score)`.
///
/// # Errors
/// [`QualityError`] if `labels` does not match `pred_probs`.
pub(crate) fn from_pred_probs(
    labels: &[usize],
    pred_probs: &PredProbs,
    threshold: f64,
) -> Result<CheckOutput, QualityError> {
    let t = crate::label::confident_thresholds(labels, pred_probs)?;
    let t_max = t.iter().copied().fold(f64::MIN, f64::max);
    let log_k = (pred_probs.k() as f64).ln();
    let score: Vec<f64> = (0..pred_probs.n())
        .map(|i| {
            let adjusted: Vec<f64> = pred_probs
                .row(i)
                .iter()
                .zip(&t)
                .map(|(p, tk)| p - tk + t_max)
                .collect();
            let total: f64 = adjusted.iter().sum();
            let entropy: f64 = adjusted
                .iter()
                .map(|p| p / total)
                .filter(|p| *p > 0.0)
                .map(|p| -p * p.ln())
                .sum();
            (1.0 - entropy / log_k).clamp(0.0, 1.0)
        })
        .collect();
    let cut = threshold * stats::median(&score);
    let is_issue = score.iter().map(|s| *s < cut).collect();
    let summary = stats::mean(&score);
    Ok(CheckOutput::new(
        IssueType::Outlier,
        is_issue,
        score,
        summary,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Features;

    #[test]
    fn far_point_is_flagged_and_scores_lowest() {
        let mut data: Vec<f32> = (0..40).map(|i| (i % 8) as f32 * 0.1).collect();
        data.push(50.0);
        let f = Features::new(data, 1).unwrap();
        let g = KnnGraph::build(&f, 3, Metric::Euclidean).unwrap();
        let out = from_knn(&g, 1.0, 0.37037);
        assert!(out.column.is_issue[40]);
        assert_eq!(out.column.is_issue.iter().filter(|f| **f).count(), 1);
        let min = out.column.score.iter().copied().fold(f64::MAX, f64::min);
        assert_eq!(out.column.score[40], min);
        assert!(out.column.score.iter().all(|s| (0.0..=1.0).contains(s)));
    }
}
