//! `underperforming_group` (reference §9.7): DBSCAN clusters on the kNN graph, and the cluster whose
//! mean self-confidence is furthest below the clustered rows' mean.

use super::{CheckOutput, Compat, IssueType};
use crate::knn::KnnGraph;

/// DBSCAN over the kNN graph as scikit-learn runs it on a precomputed sparse graph: a row's
/// neighbourhood is itself plus its stored neighbours within `eps`; a row is core with at least
/// `min_samples` of them. Returns a cluster id per row, `None` for noise.
pub(crate) fn dbscan(graph: &KnnGraph, eps: f64, min_samples: usize) -> Vec<Option<u32>> {
    let n = graph.n();
    let within = |i: usize| {
        graph
            .neighbors(i)
            .iter()
            .zip(graph.distances(i))
            .filter(|(_, d)| **d <= eps)
            .map(|(j, _)| *j as usize)
    };
    let core: Vec<bool> = (0..n)
        .map(|i| 1 + within(i).count() >= min_samples)
        .collect();
    let mut labels: Vec<Option<u32>> = vec![None; n];
    let mut next = 0u32;
    let mut stack = Vec::new();
    for start in 0..n {
        if labels[start].is_some() || !core[start] {
            continue;
        }
        stack.push(start);
        while let Some(i) = stack.pop() {
            if labels[i].is_some() {
                continue;
            }
            labels[i] = Some(next);
            if core[i] {
                stack.extend(within(i).filter(|j| labels[*j].is_none()));
            }
        }
        next += 1;
    }
    labels
}

/// Scores rows by their cluster's confidence ratio `q_c / r` when `q_c < r` (else 1); flags the worst
/// cluster when its ratio is below `threshold`. `None` when no cluster has `min_cluster` rows.
pub(crate) fn check(
    clusters: &[Option<u32>],
    self_confidence: &[f64],
    min_cluster: usize,
    threshold: f64,
    compat: Compat,
) -> Option<CheckOutput> {
    let n_clusters = clusters
        .iter()
        .flatten()
        .max()
        .map_or(0, |m| *m as usize + 1);
    let mut sums = vec![0.0f64; n_clusters];
    let mut sizes = vec![0usize; n_clusters];
    for (c, s) in clusters.iter().zip(self_confidence) {
        if let Some(c) = c {
            sums[*c as usize] += s;
            sizes[*c as usize] += 1;
        }
    }
    let kept: Vec<usize> = (0..n_clusters)
        .filter(|c| sizes[*c] >= min_cluster)
        .collect();
    if kept.is_empty() {
        return None;
    }
    let r = kept.iter().map(|c| sums[*c]).sum::<f64>()
        / kept.iter().map(|c| sizes[*c]).sum::<usize>() as f64;
    let mut ratio = vec![1.0f64; n_clusters];
    let (mut worst, mut worst_ratio) = (None, 1.0f64);
    for &c in &kept {
        let q = sums[c] / sizes[c] as f64;
        if q < r {
            ratio[c] = q / r;
            // cleanlab compares the cluster's raw mean against the running worst ratio.
            let key = match compat {
                Compat::Cleanlab => q,
                Compat::Trustmesh => ratio[c],
            };
            if key < worst_ratio {
                worst_ratio = ratio[c];
                worst = Some(c);
            }
        }
    }
    let flagged = worst.filter(|_| worst_ratio < threshold);
    let score = clusters
        .iter()
        .map(|c| c.map_or(1.0, |c| ratio[c as usize]))
        .collect();
    let is_issue = clusters
        .iter()
        .map(|c| c.is_some_and(|c| Some(c as usize) == flagged))
        .collect();
    Some(CheckOutput::new(
        IssueType::UnderperformingGroup,
        is_issue,
        score,
        worst_ratio,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Features;
    use crate::knn::Metric;

    #[test]
    fn two_blobs_make_two_clusters_and_the_bad_one_is_flagged() {
        let mut data: Vec<f32> = (0..20).map(|i| i as f32 * 0.01).collect();
        data.extend((0..20).map(|i| 100.0 + i as f32 * 0.01));
        let f = Features::new(data, 1).unwrap();
        let g = KnnGraph::build(&f, 5, Metric::Euclidean).unwrap();
        let clusters = dbscan(&g, 0.5, 5);
        assert!(clusters[..20].iter().all(|c| *c == Some(0)));
        assert!(clusters[20..].iter().all(|c| *c == Some(1)));
        let mut conf = vec![0.9; 20];
        conf.extend([0.01; 20]);
        let out = check(&clusters, &conf, 5, 0.1, Compat::Trustmesh).unwrap();
        assert!(out.column.is_issue[20..].iter().all(|f| *f));
        assert!(out.column.is_issue[..20].iter().all(|f| !f));
        assert!((out.summary_score - 0.01 / 0.455).abs() < 1e-12);
        assert_eq!(out.column.score[0], 1.0);
    }
}
