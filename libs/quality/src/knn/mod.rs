//! The shared k-nearest-neighbour graph (reference §8.3).
//!
//! [`KnnGraph::build`] gives, for every row, its `k` nearest *other* rows and their distances, sorted
//! ascending. Up to [`KnnOptions::exact_max_rows`] rows the search is exact (f32 SIMD tiles of the
//! symmetric distance matrix, rayon-parallel, a few spare candidates per row re-ranked in f64);
//! above it, neighbours come from a random-projection forest refined by NN-descent. Either way the
//! kept neighbours' distances are recomputed exactly in f64, and identical rows are made mutual
//! neighbours at distance 0, as Datalab's exact-duplicate correction does.
//!
//! Layout: `exact.rs` (brute force), `descent.rs` (approximate), `duplicates.rs` (the correction).
//!
//! NOTE: the approximate search is NN-descent rather than an HNSW crate: on this 2-core machine
//! `hnsw_rs` 0.3.5 (M = 16, ef = 64/48) needed about 1 ms of CPU per insert and per query at 20k × 32
//! rows, and `instant-distance` 0.6 was slower still, an order of magnitude over the scan's budget.

mod descent;
mod duplicates;
mod exact;

pub use duplicates::duplicate_groups;

use rayon::prelude::*;

use crate::{Features, QualityError};

/// The distance between feature rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `1 − cos(a, b)`; a zero row is at distance 1 from everything (as scikit-learn computes it).
    Cosine,
    /// `‖a − b‖₂`.
    Euclidean,
}

impl Metric {
    /// Datalab's default (reference §8.3): cosine when rows have more than 3 columns, else Euclidean.
    pub fn datalab_default(d: usize) -> Self {
        if d > 3 { Self::Cosine } else { Self::Euclidean }
    }

    /// The metric's name as Datalab reports it (`"cosine"`, `"euclidean"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cosine => "cosine",
            Self::Euclidean => "euclidean",
        }
    }
}

/// How the graph is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// Exact up to [`KnnOptions::exact_max_rows`] rows, approximate above.
    Auto,
    /// Always exact (O(N²·d) time, O(N·k) memory).
    Exact,
    /// Always approximate (random-projection forest + NN-descent).
    Approximate,
}

/// Tuning of [`KnnGraph::build_with`]; [`Default`] is what [`KnnGraph::build`] uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnOptions {
    /// Exact or approximate search.
    pub search: Search,
    /// Largest row count searched exactly under [`Search::Auto`].
    pub exact_max_rows: usize,
    /// Approximate: neighbours kept per row while searching (at least `k`).
    pub candidates: usize,
    /// Approximate: random-projection trees for the initial lists.
    pub trees: usize,
    /// Approximate: largest leaf of a random-projection tree.
    pub leaf_size: usize,
    /// Approximate: most NN-descent rounds.
    pub max_rounds: usize,
    /// Approximate: stop when fewer than `delta · n · candidates` entries change in a round.
    pub delta: f64,
    /// Approximate: seed of the random projections.
    pub seed: u64,
}

impl Default for KnnOptions {
    fn default() -> Self {
        Self {
            search: Search::Auto,
            // NOTE: exact at 100k × 32 (cosine, k = 10) builds in about 2.7 s wall on 2 cores with
            // recall 1.0, where NN-descent took 20-47 s for recall 0.74; the approximate search is
            // kept for much larger inputs, where the exact search's O(N²·d) grows out of reach.
            exact_max_rows: 300_000,
            candidates: 20,
            trees: 4,
            leaf_size: 32,
            max_rounds: 12,
            delta: 0.002,
            seed: 0,
        }
    }
}

/// Each row's `k` nearest other rows, sorted by ascending distance.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnGraph {
    n: usize,
    k: usize,
    metric: Metric,
    indices: Vec<u32>,
    distances: Vec<f64>,
}

impl KnnGraph {
    /// Builds the graph with [`KnnOptions::default`].
    ///
    /// # Errors
    /// [`QualityError::InvalidValue`] if `k` is 0 or not below the number of rows.
    pub fn build(features: &Features, k: usize, metric: Metric) -> Result<Self, QualityError> {
        Self::build_with(features, k, metric, &KnnOptions::default())
    }

    /// Builds the graph with explicit search options.
    ///
    /// # Errors
    /// [`QualityError::InvalidValue`] if `k` is 0 or not below the number of rows.
    pub fn build_with(
        features: &Features,
        k: usize,
        metric: Metric,
        options: &KnnOptions,
    ) -> Result<Self, QualityError> {
        let n = features.n();
        if k == 0 || k >= n {
            return Err(QualityError::InvalidValue {
                what: "k (number of neighbours)",
                row: 0,
                reason: format!("k = {k} must be at least 1 and below the number of rows ({n})"),
            });
        }
        if u32::try_from(n).is_err() {
            return Err(QualityError::InvalidValue {
                what: "features",
                row: u32::MAX as usize,
                reason: "more than 2^32 rows".to_owned(),
            });
        }
        let points = Points::new(features, metric);
        let exact = match options.search {
            Search::Exact => true,
            Search::Approximate => false,
            Search::Auto => n <= options.exact_max_rows,
        };
        let (indices, distances) = if exact {
            exact::search(&points, k)
        } else {
            descent::search(&points, k, options)
        };
        let mut graph = Self {
            n,
            k,
            metric,
            indices,
            distances,
        };
        duplicates::correct(&mut graph, features);
        Ok(graph)
    }

    /// Number of rows.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Neighbours per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The metric the distances are in.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Row `i`'s neighbours, nearest first.
    pub fn neighbors(&self, i: usize) -> &[u32] {
        &self.indices[i * self.k..(i + 1) * self.k]
    }

    /// Row `i`'s distances to [`Self::neighbors`], ascending.
    pub fn distances(&self, i: usize) -> &[f64] {
        &self.distances[i * self.k..(i + 1) * self.k]
    }

    /// All neighbour indices, row-major (`n × k`).
    pub fn all_neighbors(&self) -> &[u32] {
        &self.indices
    }

    /// All distances, row-major (`n × k`).
    pub fn all_distances(&self) -> &[f64] {
        &self.distances
    }

    /// Recall@k of this graph on the given `rows`: the share of each row's exact `k` nearest
    /// neighbours (by brute force over `features`, which must be the rows the graph was built on)
    /// that the graph lists. Exact duplicates count as found when a twin is listed at distance 0.
    ///
    /// # Errors
    /// [`QualityError::LengthMismatch`] if `features` has a different row count, and
    /// [`QualityError::InvalidValue`] for a row out of range.
    pub fn recall_on(&self, features: &Features, rows: &[usize]) -> Result<f64, QualityError> {
        if features.n() != self.n {
            return Err(QualityError::LengthMismatch {
                what: "features",
                got: features.n(),
                expected: self.n,
            });
        }
        if let Some(bad) = rows.iter().find(|r| **r >= self.n) {
            return Err(QualityError::InvalidValue {
                what: "rows",
                row: *bad,
                reason: format!("row {bad} is out of range (n = {})", self.n),
            });
        }
        let points = Points::new(features, self.metric);
        let hits: usize = rows
            .par_iter()
            .map(|&i| {
                let exact = finalize(&points, i, &[], self.k);
                // Compare by distance rank: a listed neighbour at the exact k-th distance or closer counts.
                let kth = exact.last().map_or(0.0, |e| e.0);
                let found = self
                    .distances(i)
                    .iter()
                    .filter(|d| **d <= kth + 1e-12)
                    .count();
                found.min(self.k)
            })
            .sum();
        Ok(hits as f64 / (rows.len() * self.k) as f64)
    }
}

/// Rows prepared for a metric: f64, unit-normalised for cosine, with squared norms.
pub(crate) struct Points {
    n: usize,
    d: usize,
    metric: Metric,
    data: Vec<f64>,
    sq_norms: Vec<f64>,
}

impl Points {
    fn new(features: &Features, metric: Metric) -> Self {
        let (n, d) = (features.n(), features.d());
        let mut data: Vec<f64> = features.as_slice().iter().map(|v| f64::from(*v)).collect();
        if metric == Metric::Cosine {
            for row in data.chunks_exact_mut(d) {
                let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
                if norm > 0.0 {
                    row.iter_mut().for_each(|v| *v /= norm);
                }
            }
        }
        let sq_norms = data
            .chunks_exact(d)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect();
        Self {
            n,
            d,
            metric,
            data,
            sq_norms,
        }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// Cosine distance from the dot product of two (normalised) rows.
    #[inline]
    fn cosine_from_dot(&self, i: usize, j: usize, dot: f64) -> f64 {
        if self.sq_norms[i] == 0.0 || self.sq_norms[j] == 0.0 {
            1.0
        } else {
            (1.0 - dot).max(0.0)
        }
    }

    /// Exact distance between rows `i` and `j`.
    fn distance(&self, i: usize, j: usize) -> f64 {
        match self.metric {
            Metric::Cosine => self.cosine_from_dot(i, j, exact::dot(self.row(i), self.row(j))),
            Metric::Euclidean => self
                .row(i)
                .iter()
                .zip(self.row(j))
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt(),
        }
    }
}

/// Row `i`'s final neighbour list from search candidates (self excluded): exact distances, sorted by
/// (distance, index), `k` long. Too few candidates are completed by a scan.
fn finalize(points: &Points, i: usize, candidates: &[u32], k: usize) -> Vec<(f64, u32)> {
    let mut top = TopK::new(k);
    for j in candidates {
        top.push(points.distance(i, *j as usize), *j);
    }
    if candidates.len() < k {
        for j in (0..points.n).filter(|j| *j != i) {
            if !candidates.contains(&(j as u32)) {
                top.push(points.distance(i, j), j as u32);
            }
        }
    }
    top.into_sorted()
}

/// A bounded list of the `k` best (smallest-distance) candidates, kept sorted.
pub(crate) struct TopK {
    k: usize,
    items: Vec<(f64, u32)>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    /// The distance a candidate must beat to enter (infinite until full).
    #[inline]
    pub(crate) fn bound(&self) -> f64 {
        if self.items.len() < self.k {
            f64::INFINITY
        } else {
            self.items[self.k - 1].0
        }
    }

    /// Offers a candidate; ties keep the earlier index first.
    #[inline]
    pub(crate) fn push(&mut self, dist: f64, idx: u32) {
        if dist >= self.bound() {
            return;
        }
        let pos = self
            .items
            .partition_point(|(d, i)| *d < dist || (*d == dist && *i < idx));
        self.items.insert(pos, (dist, idx));
        self.items.truncate(self.k);
    }

    pub(crate) fn contains(&self, idx: u32) -> bool {
        self.items.iter().any(|(_, i)| *i == idx)
    }

    pub(crate) fn into_sorted(self) -> Vec<(f64, u32)> {
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(rows: &[&[f32]]) -> Features {
        let d = rows[0].len();
        Features::new(rows.iter().flat_map(|r| r.iter().copied()).collect(), d).unwrap()
    }

    #[test]
    fn exact_graph_excludes_self_and_sorts_ascending() {
        let f = features(&[&[0.0], &[1.0], &[3.0], &[6.0]]);
        let g = KnnGraph::build(&f, 2, Metric::Euclidean).unwrap();
        assert_eq!(g.neighbors(0), &[1, 2]);
        assert_eq!(g.distances(0), &[1.0, 3.0]);
        assert_eq!(g.neighbors(2), &[1, 0]);
        assert_eq!(g.neighbors(3), &[2, 1]);
    }

    #[test]
    fn cosine_distance_ignores_scale_and_zero_rows_are_far() {
        let f = features(&[&[1.0, 0.0], &[5.0, 0.0], &[0.0, 1.0], &[0.0, 0.0]]);
        let g = KnnGraph::build(&f, 1, Metric::Cosine).unwrap();
        assert_eq!(g.neighbors(0), &[1]);
        assert!(g.distances(0)[0].abs() < 1e-12);
        assert!((g.distances(3)[0] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn k_must_be_below_row_count() {
        let f = features(&[&[0.0], &[1.0]]);
        assert!(KnnGraph::build(&f, 2, Metric::Euclidean).is_err());
        assert!(KnnGraph::build(&f, 0, Metric::Euclidean).is_err());
    }

    #[test]
    fn exact_search_matches_brute_force_across_tiles() {
        // More rows than one tile (1,024) and not a whole number of panels, with exact duplicates.
        let (n, d) = (2_100, 5);
        let mut state = 12_345u64;
        let mut data: Vec<f32> = (0..n * d)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 + 100.0
            })
            .collect();
        data.copy_within(0..d, 7 * d);
        let f = Features::new(data, d).unwrap();
        let rows: Vec<usize> = (0..n).step_by(7).collect();
        for metric in [Metric::Cosine, Metric::Euclidean] {
            let g = KnnGraph::build(&f, 10, metric).unwrap();
            assert_eq!(g.recall_on(&f, &rows).unwrap(), 1.0, "{metric:?}");
            for i in 0..n {
                assert!(!g.neighbors(i).contains(&(i as u32)));
                assert!(g.distances(i).windows(2).all(|w| w[0] <= w[1]));
            }
        }
    }

    #[test]
    fn datalab_metric_rule() {
        assert_eq!(Metric::datalab_default(3), Metric::Euclidean);
        assert_eq!(Metric::datalab_default(4), Metric::Cosine);
    }
}
