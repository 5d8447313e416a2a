//! `non_iid` (reference §9.4): are rows that are close in feature space also close in dataset order?
//!
//! Dataset level: a Kolmogorov–Smirnov statistic between the index gaps `|i − j|` of all kNN pairs and
//! the gap distribution of uniformly random pairs, compared with the same statistic under random
//! permutations of the row order (p-value from a Gaussian KDE of the permuted statistics). Row level:
//! the area between the row's own gap CDF and the random-pair gap CDF at its position.

use rayon::prelude::*;

use super::{CheckOutput, IssueType, stats};
use crate::knn::KnnGraph;

/// The check and its p-value. Only the least-IID row is flagged, and only when `p < significance`.
pub(crate) fn check(
    graph: &KnnGraph,
    permutations: usize,
    significance: f64,
    seed: u64,
) -> (CheckOutput, f64) {
    let n = graph.n();
    let observed = ks_statistic(graph, None);
    let mut rng = stats::SplitMix64::new(seed);
    let orders: Vec<Vec<usize>> = (0..permutations).map(|_| rng.permutation(n)).collect();
    let permuted: Vec<f64> = orders
        .par_iter()
        .map(|p| ks_statistic(graph, Some(p)))
        .collect();
    let p_value = kde_tail(&permuted, observed);
    let score: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut gaps: Vec<f64> = graph
                .neighbors(i)
                .iter()
                .map(|j| (*j as f64 - i as f64).abs())
                .collect();
            gaps.sort_unstable_by(f64::total_cmp);
            let x = cdf_area(i, n, &gaps) / (i.max(n - i) as f64);
            1.0 - x.tanh()
        })
        .collect();
    let worst = score
        .iter()
        .enumerate()
        .fold(0, |b, (i, s)| if *s < score[b] { i } else { b });
    let is_issue = (0..n)
        .map(|i| i == worst && p_value < significance)
        .collect();
    (
        CheckOutput::new(IssueType::NonIid, is_issue, score, p_value),
        p_value,
    )
}

/// KS distance between the kNN pairs' gap ECDF and the uniform random pair's gap CDF, with rows
/// relabelled by `order` (position of row `i` = `order[i]`) if given.
fn ks_statistic(graph: &KnnGraph, order: Option<&[usize]>) -> f64 {
    let n = graph.n();
    let pos = |i: usize| order.map_or(i, |o| o[i]);
    let mut counts = vec![0u64; n];
    for i in 0..n {
        for j in graph.neighbors(i) {
            counts[pos(i).abs_diff(pos(*j as usize))] += 1;
        }
    }
    let total = (n * graph.k()) as f64;
    let pairs = (n * (n - 1)) as f64 / 2.0;
    let (mut fg, mut bg, mut ks) = (0.0f64, 0.0f64, 0.0f64);
    for (g, c) in counts.iter().enumerate().skip(1) {
        fg += *c as f64 / total;
        bg += (n - g) as f64 / pairs;
        ks = ks.max((fg - bg).abs());
    }
    ks
}

/// `P(X ≥ x)` under a Gaussian KDE (Scott's bandwidth) of `samples`, integrated up to 100; the
/// empirical tail if the samples have no spread.
fn kde_tail(samples: &[f64], x: f64) -> f64 {
    let m = samples.len() as f64;
    let mean = stats::mean(samples);
    let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (m - 1.0);
    let bw = m.powf(-0.2) * var.sqrt();
    if bw.is_nan() || bw <= 0.0 {
        return samples.iter().filter(|s| **s >= x).count() as f64 / m;
    }
    samples
        .iter()
        .map(|s| stats::normal_cdf((100.0 - s) / bw) - stats::normal_cdf((x - s) / bw))
        .sum::<f64>()
        / m
}

/// `Σ_intervals |∫ (F(g) − B(g)) dg|` for row `i` over `[0, dmax]` cut at its sorted neighbour `gaps`:
/// `F` the step CDF of the gaps, `B` the CDF of the gap to a uniformly random other row (slope
/// 2/(n−1) up to `dmin = min(i, n−1−i)`, then 1/(n−1) up to `dmax = max(i, n−1−i)`). The absolute
/// value is taken per interval, as the reference does.
fn cdf_area(i: usize, n: usize, gaps: &[f64]) -> f64 {
    let denom = (n - 1) as f64;
    let dmin = i.min(n - 1 - i) as f64;
    let dmax = i.max(n - 1 - i) as f64;
    let k = gaps.len() as f64;
    // ∫₀^g B.
    let integral = |g: f64| {
        if g <= dmin {
            g * g / denom
        } else {
            (dmin * dmin + ((dmin + g).powi(2) - 4.0 * dmin * dmin) / 2.0) / denom
        }
    };
    let mut area = 0.0;
    let (mut start, mut below) = (0.0f64, 0usize);
    for end in gaps.iter().copied().filter(|g| *g < dmax).chain([dmax]) {
        let f = below as f64 / k;
        area += (f * (end - start) - (integral(end) - integral(start))).abs();
        start = end;
        below += 1;
    }
    area
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Features;
    use crate::knn::Metric;

    #[test]
    fn sorted_data_is_not_iid_and_shuffled_data_is() {
        let n = 400;
        // Values increase with the row index: neighbours in feature space are neighbours in order.
        let sorted: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let g = KnnGraph::build(&Features::new(sorted, 1).unwrap(), 10, Metric::Euclidean).unwrap();
        let (out, p) = check(&g, 25, 0.05, 0);
        assert!(p < 0.05, "p = {p}");
        assert_eq!(out.column.is_issue.iter().filter(|f| **f).count(), 1);
        let order = stats::SplitMix64::new(3).permutation(n);
        let shuffled: Vec<f32> = order.iter().map(|i| *i as f32).collect();
        let g =
            KnnGraph::build(&Features::new(shuffled, 1).unwrap(), 10, Metric::Euclidean).unwrap();
        let (out, p) = check(&g, 25, 0.05, 0);
        assert!(p > 0.05, "p = {p}");
        assert!(out.column.is_issue.iter().all(|f| !f));
        assert!(out.column.score.iter().all(|s| (0.0..=1.0).contains(s)));
    }

    #[test]
    fn kde_tail_is_a_probability() {
        let s = [0.1, 0.12, 0.11, 0.13, 0.09];
        assert!(kde_tail(&s, 0.5) < 1e-6);
        assert!(kde_tail(&s, 0.0) > 0.999);
        assert_eq!(kde_tail(&[0.2, 0.2], 0.1), 1.0);
    }
}
