//! Regression label quality (§11.3 of the reference): residual-based, and OUTRE-style kNN over the
//! standardized label and residual.
//!
//! cleanlab's OUTRE uses `k = ceil(N / 2)` neighbours, which is O(N²). Our default uses a fixed small
//! `k` and an exact 2-D grid search, O(N·k) for reasonably spread points;
//! [`RegressionMethod::OutreCleanlab`] keeps cleanlab's `k` (and its cost).
// NOTE: the 2-D neighbour search lives here rather than in `crate::knn`: that graph targets
// high-dimensional f32 features (blocked brute force or HNSW), while a uniform grid is exact and
// linear-time in two dimensions.

use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::QualityError;

/// Default neighbour count of [`RegressionMethod::Outre`].
pub const DEFAULT_OUTRE_NEIGHBOURS: usize = 20;
/// Scale of the standardized residual relative to the standardized label (cleanlab's 5).
const RESIDUAL_SCALE: f64 = 5.0;
/// Average kNN distances below this count as exact duplicates (score 1): `sqrt(100 * eps)`.
const PRECISION_TOLERANCE: f64 = 1.490_116_119_384_765_6e-7;
/// Target mean number of points per grid cell.
const POINTS_PER_CELL: f64 = 2.0;

/// How [`regression_label_quality`] scores a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegressionMethod {
    /// OUTRE over `(standardized label, 5 × standardized residual)` with this many neighbours:
    /// `score = exp(-d / median(d))`, `d` = mean distance to the neighbours.
    Outre {
        /// Neighbours per row (capped at `N - 1`).
        neighbours: usize,
    },
    /// OUTRE with cleanlab's `ceil(N / 2)` neighbours (O(N²); for comparison on small data).
    OutreCleanlab,
    /// `exp(-|prediction - label|)`.
    Residual,
}

impl Default for RegressionMethod {
    fn default() -> Self {
        Self::Outre {
            neighbours: DEFAULT_OUTRE_NEIGHBOURS,
        }
    }
}

/// Per-row regression label quality in [0, 1]; lower = more likely a wrong label.
///
/// # Errors
/// [`QualityError`] on a length mismatch, fewer than two rows for OUTRE, no rows, or a non-finite
/// label or prediction (naming the first such row).
pub fn regression_label_quality(
    labels: &[f64],
    predictions: &[f64],
    method: RegressionMethod,
) -> Result<Vec<f64>, QualityError> {
    if labels.len() != predictions.len() {
        return Err(QualityError::LengthMismatch {
            what: "predictions",
            got: predictions.len(),
            expected: labels.len(),
        });
    }
    if labels.is_empty() {
        return Err(QualityError::Empty);
    }
    for (what, values) in [("labels", labels), ("predictions", predictions)] {
        if let Some(row) = values.iter().position(|v| !v.is_finite()) {
            return Err(QualityError::InvalidValue {
                what,
                row,
                reason: format!("{} is not a finite number", values[row]),
            });
        }
    }
    let n = labels.len();
    let neighbours = match method {
        RegressionMethod::Residual => {
            return Ok(labels
                .iter()
                .zip(predictions)
                .map(|(y, p)| (-(p - y).abs()).exp())
                .collect());
        }
        RegressionMethod::Outre { neighbours } => neighbours,
        RegressionMethod::OutreCleanlab => n.div_ceil(2),
    };
    if n < 2 || neighbours == 0 {
        return Err(QualityError::InvalidOption {
            option: "neighbours",
            reason: format!(
                "OUTRE needs at least one neighbour and two rows, got {neighbours} and {n}"
            ),
        });
    }
    let residuals: Vec<f64> = predictions.iter().zip(labels).map(|(p, y)| p - y).collect();
    let xs = standardize(labels, 1.0);
    let ys = standardize(&residuals, RESIDUAL_SCALE);
    let distances = Grid::new(&xs, &ys).mean_knn_distances(neighbours.min(n - 1));
    let scale = median(&distances).max(100.0 * f64::EPSILON);
    Ok(distances
        .iter()
        .map(|&d| {
            if d < PRECISION_TOLERANCE {
                1.0
            } else {
                (-d / scale).exp()
            }
        })
        .collect())
}

/// `scale * (v - mean) / std` (population std; a constant column maps to 0).
fn standardize(values: &[f64], scale: f64) -> Vec<f64> {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let std = if std > 0.0 { std } else { 1.0 };
    values.iter().map(|v| scale * (v - mean) / std).collect()
}

/// The median (mean of the two middle values for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    let mid = sorted.len() / 2;
    let (lower, upper, _) = sorted.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if values.len() % 2 == 1 {
        upper
    } else {
        let lower = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

/// Points bucketed into a uniform grid of square cells, for exact 2-D k-nearest-neighbour search.
struct Grid<'a> {
    xs: &'a [f64],
    ys: &'a [f64],
    min: (f64, f64),
    cell: f64,
    cols: usize,
    rows: usize,
    /// Point indices ordered by cell; cell `c` holds `order[starts[c]..starts[c + 1]]`.
    starts: Vec<usize>,
    order: Vec<usize>,
}

impl<'a> Grid<'a> {
    /// Buckets the points `(xs[i], ys[i])`.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    fn new(xs: &'a [f64], ys: &'a [f64]) -> Self {
        let bounds = |v: &[f64]| {
            v.iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
        };
        let ((x0, x1), (y0, y1)) = (bounds(xs), bounds(ys));
        let (width, height) = (
            (x1 - x0).max(f64::MIN_POSITIVE),
            (y1 - y0).max(f64::MIN_POSITIVE),
        );
        let n = xs.len() as f64;
        // Square cells holding about POINTS_PER_CELL points on average, at most ~n cells per axis.
        let cell = (width * height * POINTS_PER_CELL / n)
            .sqrt()
            .max(width.max(height) / n);
        let cols = ((width / cell) as usize + 1).min(xs.len());
        let rows = ((height / cell) as usize + 1).min(xs.len());
        let mut grid = Self {
            xs,
            ys,
            min: (x0, y0),
            cell,
            cols,
            rows,
            starts: Vec::new(),
            order: Vec::new(),
        };
        let cells: Vec<usize> = (0..xs.len())
            .map(|i| grid.cell_of(i).1 * cols + grid.cell_of(i).0)
            .collect();
        let mut starts = vec![0usize; cols * rows + 1];
        for &c in &cells {
            starts[c + 1] += 1;
        }
        for c in 0..cols * rows {
            starts[c + 1] += starts[c];
        }
        let mut next = starts.clone();
        let mut order = vec![0usize; xs.len()];
        for (i, &c) in cells.iter().enumerate() {
            order[next[c]] = i;
            next[c] += 1;
        }
        grid.starts = starts;
        grid.order = order;
        grid
    }

    /// The (column, row) cell of point `i`.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn cell_of(&self, i: usize) -> (usize, usize) {
        let col = ((self.xs[i] - self.min.0) / self.cell) as usize;
        let row = ((self.ys[i] - self.min.1) / self.cell) as usize;
        (col.min(self.cols - 1), row.min(self.rows - 1))
    }

    /// For every point, the mean Euclidean distance to its `k` nearest other points (exact): rings of
    /// cells around the point's cell are visited until the ring is farther than the k-th best distance.
    fn mean_knn_distances(&self, k: usize) -> Vec<f64> {
        (0..self.xs.len())
            .into_par_iter()
            .map_init(
                || BinaryHeap::<OrdDistance>::with_capacity(k + 1),
                |heap, i| {
                    heap.clear();
                    let (cx, cy) = self.cell_of(i);
                    let max_ring = self.cols.max(self.rows);
                    for ring in 0..=max_ring {
                        self.visit_ring(i, (cx, cy), ring, k, heap);
                        // Any point outside rings 0..=ring is at least `ring * cell` away.
                        let reach = ring as f64 * self.cell;
                        if heap.len() == k && heap.peek().is_some_and(|d| d.0 <= reach * reach) {
                            break;
                        }
                    }
                    heap.iter().map(|d| d.0.sqrt()).sum::<f64>() / k as f64
                },
            )
            .collect()
    }

    /// Offers every point of the cells at Chebyshev distance `ring` from `center` to the `k`-best heap
    /// of squared distances to point `i`.
    fn visit_ring(
        &self,
        i: usize,
        center: (usize, usize),
        ring: usize,
        k: usize,
        heap: &mut BinaryHeap<OrdDistance>,
    ) {
        let (cx, cy) = (center.0 as isize, center.1 as isize);
        let r = ring as isize;
        let mut visit = |col: isize, row: isize| {
            if col < 0 || row < 0 || col >= self.cols as isize || row >= self.rows as isize {
                return;
            }
            let c = row as usize * self.cols + col as usize;
            for &j in &self.order[self.starts[c]..self.starts[c + 1]] {
                if j == i {
                    continue;
                }
                let (dx, dy) = (self.xs[j] - self.xs[i], self.ys[j] - self.ys[i]);
                let d = dx * dx + dy * dy;
                if heap.len() < k {
                    heap.push(OrdDistance(d));
                } else if heap.peek().is_some_and(|worst| d < worst.0) {
                    heap.pop();
                    heap.push(OrdDistance(d));
                }
            }
        };
        if r == 0 {
            visit(cx, cy);
            return;
        }
        for col in cx - r..=cx + r {
            visit(col, cy - r);
            visit(col, cy + r);
        }
        for row in cy - r + 1..cy + r {
            visit(cx - r, row);
            visit(cx + r, row);
        }
    }
}

/// A squared distance ordered by `total_cmp`, for the k-best heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdDistance(f64);

impl Eq for OrdDistance {}

impl PartialOrd for OrdDistance {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdDistance {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean distance to the k nearest other points, by brute force.
    fn brute_force(xs: &[f64], ys: &[f64], k: usize) -> Vec<f64> {
        (0..xs.len())
            .map(|i| {
                let mut d: Vec<f64> = (0..xs.len())
                    .filter(|&j| j != i)
                    .map(|j| ((xs[i] - xs[j]).powi(2) + (ys[i] - ys[j]).powi(2)).sqrt())
                    .collect();
                d.sort_by(f64::total_cmp);
                d[..k].iter().sum::<f64>() / k as f64
            })
            .collect()
    }

    #[test]
    fn grid_search_is_exact() {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        // A dense cluster, a sparse spread, exact duplicates and a far point.
        let mut xs: Vec<f64> = (0..300)
            .map(|i| if i < 200 { next() * 0.1 } else { next() * 30.0 })
            .collect();
        let mut ys: Vec<f64> = (0..300)
            .map(|i| {
                if i < 200 {
                    next() * 0.1
                } else {
                    next() * 5.0 - 40.0
                }
            })
            .collect();
        xs.extend([1.0, 1.0, 1.0, 500.0]);
        ys.extend([2.0, 2.0, 2.0, -500.0]);
        for k in [1, 5, 20, 303] {
            let grid = Grid::new(&xs, &ys).mean_knn_distances(k);
            for (i, (a, b)) in grid.iter().zip(brute_force(&xs, &ys, k)).enumerate() {
                assert!((a - b).abs() < 1e-9, "k {k} point {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn median_averages_the_middle_pair() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
