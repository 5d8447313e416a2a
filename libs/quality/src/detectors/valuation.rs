//! `data_valuation` (reference §9.8): kNN-Shapley with every row as its own test point, accumulated
//! sparsely (each row only touches its `k` neighbours: O(N·k) memory instead of cleanlab's N×N).

use super::{CheckOutput, IssueType, stats};
use crate::knn::KnnGraph;

/// `score_i = (1 + (1/N) Σ_α s_α[i] / k) / 2`; flags `score < threshold`.
pub(crate) fn check(graph: &KnnGraph, labels: &[usize], threshold: f64) -> CheckOutput {
    let (n, k) = (graph.n(), graph.k());
    let mut raw = vec![0.0f64; n];
    let mut s = vec![0.0f64; k];
    for alpha in 0..n {
        let idx = graph.neighbors(alpha);
        let matches = |j: usize| f64::from(u8::from(labels[idx[j] as usize] == labels[alpha]));
        s[k - 1] = 0.0;
        for j in (0..k - 1).rev() {
            s[j] = s[j + 1] + matches(j) - matches(j + 1);
        }
        for (j, v) in idx.iter().zip(&s) {
            raw[*j as usize] += v / k as f64;
        }
    }
    let score: Vec<f64> = raw
        .iter()
        .map(|r| (0.5 * (r / n as f64 + 1.0)).clamp(0.0, 1.0))
        .collect();
    let is_issue = score.iter().map(|v| *v < threshold).collect();
    let summary = stats::mean(&score);
    CheckOutput::new(IssueType::DataValuation, is_issue, score, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Features;
    use crate::knn::Metric;

    #[test]
    fn a_mislabelled_point_inside_a_class_is_valued_below_its_neighbours() {
        let data: Vec<f32> = (0..30)
            .map(|i| if i < 15 { i as f32 } else { 100.0 + i as f32 })
            .collect();
        let mut labels: Vec<usize> = (0..30).map(|i| usize::from(i >= 15)).collect();
        labels[7] = 1;
        let g = KnnGraph::build(&Features::new(data, 1).unwrap(), 4, Metric::Euclidean).unwrap();
        let out = check(&g, &labels, 0.5);
        assert!(out.column.score[7] < out.column.score[6]);
        assert!(out.column.score[7] < 0.5);
        assert!(out.column.is_issue[7]);
        assert!(out.column.score.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
