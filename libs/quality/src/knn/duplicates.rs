//! Datalab's exact-duplicate correction (reference §8.3): identical rows become mutual neighbours at
//! distance 0, however the search happened to order them.

use rayon::prelude::*;

use super::KnnGraph;
use crate::Features;

/// Groups of identical feature rows, each sorted by row index and with at least two members.
pub fn duplicate_groups(features: &Features) -> Vec<Vec<usize>> {
    let cmp = |a: &usize, b: &usize| {
        features
            .row(*a)
            .iter()
            .zip(features.row(*b))
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    let mut order: Vec<usize> = (0..features.n()).collect();
    order.par_sort_by(|a, b| cmp(a, b).then(a.cmp(b)));
    let mut groups = Vec::new();
    let mut start = 0;
    for end in 1..=order.len() {
        if end == order.len() || cmp(&order[start], &order[end]).is_ne() {
            if end - start > 1 {
                groups.push(order[start..end].to_vec());
            }
            start = end;
        }
    }
    groups
}

/// Rewrites the neighbour lists of every duplicate group.
///
/// A group of `m ≤ k` rows: each member's `m − 1` twins move to the front at distance 0 and its other
/// neighbours shift back. A group of `m > k` rows: the first `k + 1` members point at each other in a
/// circulant pattern, the rest at the first `k` members, all at distance 0.
pub(super) fn correct(graph: &mut KnnGraph, features: &Features) {
    let k = graph.k;
    for group in duplicate_groups(features) {
        for (t, &i) in group.iter().enumerate() {
            let new: Vec<(u32, f64)> = if group.len() > k {
                let twins: Vec<usize> = if t <= k {
                    (1..=k).map(|s| group[(t + s) % (k + 1)]).collect()
                } else {
                    group[..k].to_vec()
                };
                twins.into_iter().map(|j| (j as u32, 0.0)).collect()
            } else {
                let twins = group.iter().filter(|j| **j != i).map(|j| (*j as u32, 0.0));
                let others = graph
                    .neighbors(i)
                    .iter()
                    .zip(graph.distances(i))
                    .filter(|(j, _)| !group.contains(&(**j as usize)))
                    .map(|(j, d)| (*j, *d));
                twins.chain(others).take(k).collect()
            };
            for (slot, (j, d)) in new.into_iter().enumerate() {
                graph.indices[i * k + slot] = j;
                graph.distances[i * k + slot] = d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knn::Metric;

    #[test]
    fn duplicates_become_mutual_neighbours_at_distance_zero() {
        let f = Features::new(vec![0.0, 5.0, 1.0, 5.0, 9.0, 5.0], 1).unwrap();
        let g = KnnGraph::build(&f, 2, Metric::Euclidean).unwrap();
        for i in [1usize, 3, 5] {
            let twins: Vec<u32> = [1u32, 3, 5]
                .into_iter()
                .filter(|j| *j as usize != i)
                .collect();
            let mut got = g.neighbors(i).to_vec();
            got.sort_unstable();
            assert_eq!(got, twins, "row {i}");
            assert_eq!(g.distances(i), &[0.0, 0.0]);
        }
    }

    #[test]
    fn small_group_keeps_real_neighbours_after_twins() {
        let f = Features::new(vec![0.0, 5.0, 5.0, 6.0], 1).unwrap();
        let g = KnnGraph::build(&f, 2, Metric::Euclidean).unwrap();
        assert_eq!(g.neighbors(1), &[2, 3]);
        assert_eq!(g.distances(1), &[0.0, 1.0]);
        assert_eq!(duplicate_groups(&f), vec![vec![1, 2]]);
    }
}
