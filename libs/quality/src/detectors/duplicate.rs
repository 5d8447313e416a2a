//! `near_duplicate` (reference §9.3) with duplicate-set ids, and `exact_duplicate`.

use super::{CheckOutput, IssueType, stats};
use crate::Features;
use crate::knn::KnnGraph;

/// Near duplicates: row `i`'s set holds the neighbours closer than `threshold · median(d₁)`
/// (symmetrised); flagged when non-empty. Score `1 − exp(−d₁/median d₁)`, 0 for `d₁ ≈ 0`.
/// Also returns each flagged row's set id: the connected component of the near-duplicate links,
/// numbered by first row.
pub(crate) fn near(graph: &KnnGraph, threshold: f64) -> (CheckOutput, Vec<Option<u32>>) {
    let n = graph.n();
    let nearest: Vec<f64> = (0..n).map(|i| graph.distances(i)[0]).collect();
    let m = stats::median(&nearest).max(1e-6);
    let radius = threshold.max(0.0) * m;
    let mut components = UnionFind::new(n);
    let mut linked = vec![false; n];
    for i in 0..n {
        for (j, d) in graph.neighbors(i).iter().zip(graph.distances(i)) {
            if *d < radius {
                linked[i] = true;
                linked[*j as usize] = true;
                components.union(i, *j as usize);
            }
        }
    }
    let score = nearest
        .iter()
        .map(|d| {
            if d.abs() <= 1e-8 {
                0.0
            } else {
                1.0 - (-d / m).exp()
            }
        })
        .collect::<Vec<f64>>();
    let mut ids = vec![None; n];
    let mut next = 0u32;
    let mut root_id = vec![u32::MAX; n];
    for i in (0..n).filter(|i| linked[*i]) {
        let root = components.find(i);
        if root_id[root] == u32::MAX {
            root_id[root] = next;
            next += 1;
        }
        ids[i] = Some(root_id[root]);
    }
    let summary = stats::mean(&score);
    (
        CheckOutput::new(IssueType::NearDuplicate, linked, score, summary),
        ids,
    )
}

/// Exact duplicates: rows identical to at least one other row; score `1/|group|` (1 if unique).
pub(crate) fn exact(features: &Features) -> CheckOutput {
    let n = features.n();
    let mut is_issue = vec![false; n];
    let mut score = vec![1.0; n];
    for group in crate::knn::duplicate_groups(features) {
        for i in &group {
            is_issue[*i] = true;
            score[*i] = 1.0 / group.len() as f64;
        }
    }
    let summary = stats::mean(&score);
    CheckOutput::new(IssueType::ExactDuplicate, is_issue, score, summary)
}

/// Disjoint sets with path halving.
struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        Self((0..n).collect())
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knn::Metric;

    #[test]
    fn close_pairs_share_a_set_and_exact_twins_score_zero() {
        let data = vec![0.0, 0.001, 10.0, 20.0, 20.0, 30.0, 40.0, 50.0];
        let f = Features::new(data, 1).unwrap();
        let g = KnnGraph::build(&f, 2, Metric::Euclidean).unwrap();
        let (out, ids) = near(&g, 0.13);
        assert_eq!(
            out.column.is_issue,
            vec![true, true, false, true, true, false, false, false]
        );
        assert_eq!(ids[0], ids[1]);
        assert_eq!(ids[3], ids[4]);
        assert_ne!(ids[0], ids[3]);
        assert_eq!(ids[2], None);
        assert_eq!(out.column.score[3], 0.0);
        assert!(out.column.score[0] > 0.0 && out.column.score[0] < out.column.score[2]);
        let ex = exact(&f);
        assert_eq!(
            ex.column.is_issue,
            vec![false, false, false, true, true, false, false, false]
        );
        assert_eq!(ex.column.score[3], 0.5);
    }
}
