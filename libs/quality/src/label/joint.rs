//! Per-class confident thresholds, the confident joint and its calibration, and what is estimated
//! from it (§2 of the reference).

use rayon::prelude::*;

use super::{ClassMatrix, CollisionRule, NumIssuesMethod, class_counts, class_counts_two_classes};
use crate::{PredProbs, QualityError};

/// Tolerance of the confident-bin test and of the "given label is the argmax" test (cleanlab's
/// `FLOATING_POINT_COMPARISON`).
pub(crate) const FLOATING_POINT_COMPARISON: f64 = 1e-6;
/// Lower bound of a confident threshold.
const CONFIDENT_THRESHOLDS_LOWER_BOUND: f64 = 2e-6;
/// Threshold of a class absent from the labels: no probability reaches it.
const ABSENT_CLASS_THRESHOLD: f64 = 2.0;
/// Guard against division by zero.
const TINY_VALUE: f64 = 1e-100;
/// Rows per parallel task.
pub(crate) const ROWS_PER_TASK: usize = 4096;

/// Per-class confident thresholds `t_k`: the mean of `p[i][k]` over the rows labelled `k`, at least
/// 2e-6; 2 for a class absent from the labels (so nothing is ever counted as truly that class).
///
/// # Errors
/// [`QualityError`] if `labels` does not match `pred_probs` (naming the first bad row).
pub fn confident_thresholds(
    labels: &[usize],
    pred_probs: &PredProbs,
) -> Result<Vec<f64>, QualityError> {
    let counts = class_counts(labels, pred_probs)?;
    Ok(thresholds_unchecked(labels, pred_probs, &counts))
}

/// [`confident_thresholds`] on validated input with its class counts.
pub(crate) fn thresholds_unchecked(
    labels: &[usize],
    pred_probs: &PredProbs,
    counts: &[usize],
) -> Vec<f64> {
    let k = pred_probs.k();
    let sums = labels
        .par_chunks(ROWS_PER_TASK)
        .enumerate()
        .fold(
            || vec![0.0; k],
            |mut acc, (chunk, ys)| {
                let first = chunk * ROWS_PER_TASK;
                for (offset, &y) in ys.iter().enumerate() {
                    acc[y] += pred_probs.row(first + offset)[y];
                }
                acc
            },
        )
        .reduce(|| vec![0.0; k], add_into);
    sums.iter()
        .zip(counts)
        .map(|(&sum, &n)| {
            if n == 0 {
                ABSENT_CLASS_THRESHOLD
            } else {
                (sum / as_f64(n)).max(CONFIDENT_THRESHOLDS_LOWER_BOUND)
            }
        })
        .collect()
}

/// Whether the given label `y` is the argmax of `row` after adding 1e-6 to `row[y]` (ties go to the
/// first index, as numpy's argmax). Such rows are never label issues in the confident-learning methods.
pub(crate) fn given_is_argmax(row: &[f64], y: usize) -> bool {
    let boosted = row[y] + FLOATING_POINT_COMPARISON;
    row[..y].iter().all(|&p| p < boosted) && row[y + 1..].iter().all(|&p| p <= boosted)
}

/// The index of the first maximum of `row`.
pub(crate) fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (j, &p) in row.iter().enumerate().skip(1) {
        if p > row[best] {
            best = j;
        }
    }
    best
}

/// What the confident-joint pass learns about one row.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RowFacts {
    /// `p[y]`, the self-confidence.
    pub(crate) own: f64,
    /// `max_{j != y} p[j] - p[y]`: no margin `p[j] - p[y]` exceeds it.
    pub(crate) max_margin: f64,
    /// Whether the given label is (within 1e-6) the argmax: never a confident-learning issue.
    pub(crate) label_is_argmax: bool,
    /// Confident in some class other than the given one, and not `label_is_argmax`: cleanlab's
    /// `confident_learning` issue.
    pub(crate) off_diagonal: bool,
}

/// Scans one row with given label `y`; `bins` holds `t_k - 1e-6`. Returns the class the row is
/// confidently counted as, if any.
fn scan_row(
    row: &[f64],
    y: usize,
    bins: &[f64],
    rule: CollisionRule,
    facts: &mut RowFacts,
) -> Option<usize> {
    // Simple branch-free passes over a row already in L1 (they vectorize); most rows are confident
    // in at most one class.
    let confident = row.iter().zip(bins).filter(|(p, bin)| p >= bin).count();
    let guess = match (confident, rule) {
        (0, CollisionRule::Paper | CollisionRule::Cleanlab) => None,
        (1, CollisionRule::Paper | CollisionRule::Cleanlab) | (_, CollisionRule::Paper) => {
            let mut best = None;
            for (j, (&p, &bin)) in row.iter().zip(bins).enumerate() {
                if p >= bin && best.is_none_or(|b: usize| p > row[b]) {
                    best = Some(j);
                }
            }
            best
        }
        (_, CollisionRule::Cleanlab) => Some(argmax(row)),
    };
    let max_before = row[..y].iter().fold(f64::NEG_INFINITY, |m, &p| m.max(p));
    let max_other = row[y + 1..].iter().fold(max_before, |m, &p| m.max(p));
    let own = row[y];
    // NOTE: rounding is monotone, so max_j fl(p_j - p_y) == fl(max_j p_j - p_y) exactly.
    let max_margin = max_other - own;
    // Only near-ties need the exact index-aware test.
    let label_is_argmax = max_margin < -2.0 * FLOATING_POINT_COMPARISON
        || (max_margin <= 2.0 * FLOATING_POINT_COMPARISON && given_is_argmax(row, y));
    *facts = RowFacts {
        own,
        max_margin,
        label_is_argmax,
        off_diagonal: guess.is_some_and(|g| g != y) && !label_is_argmax,
    };
    guess
}

/// One pass over the rows: the raw confident joint and what each row needs later.
pub(crate) struct Scan {
    /// Raw confident joint counts, `[given][true]`, diagonal not yet clipped to 1.
    pub(crate) counts: ClassMatrix<u64>,
    /// Per row.
    pub(crate) facts: Vec<RowFacts>,
}

impl Scan {
    /// Number of off-diagonal issues (`num_label_issues` with [`NumIssuesMethod::OffDiagonal`]).
    pub(crate) fn num_off_diagonal(&self) -> usize {
        self.facts.par_iter().filter(|f| f.off_diagonal).count()
    }

    /// The off-diagonal mask (`filter_by = confident_learning`).
    pub(crate) fn off_diagonal_mask(&self) -> Vec<bool> {
        self.facts.par_iter().map(|f| f.off_diagonal).collect()
    }
}

/// The confident-joint pass over all rows.
pub(crate) fn scan(
    labels: &[usize],
    pred_probs: &PredProbs,
    thresholds: &[f64],
    rule: CollisionRule,
) -> Scan {
    let k = pred_probs.k();
    let bins: Vec<f64> = thresholds
        .iter()
        .map(|t| t - FLOATING_POINT_COMPARISON)
        .collect();
    let mut facts = vec![RowFacts::default(); labels.len()];
    let counts = pred_probs
        .as_slice()
        .par_chunks(ROWS_PER_TASK * k)
        .zip(labels.par_chunks(ROWS_PER_TASK))
        .zip(facts.par_chunks_mut(ROWS_PER_TASK))
        .fold(
            || vec![0u64; k * k],
            |mut acc, ((rows, ys), facts)| {
                for ((row, &y), facts) in rows.chunks_exact(k).zip(ys).zip(facts) {
                    if let Some(guess) = scan_row(row, y, &bins, rule, facts) {
                        acc[y * k + guess] += 1;
                    }
                }
                acc
            },
        )
        .reduce(|| vec![0u64; k * k], add_into);
    Scan {
        counts: ClassMatrix::from_vec(k, counts),
        facts,
    }
}

/// Element-wise `a += b`, returning `a`.
fn add_into<T: Copy + std::ops::AddAssign>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
    a
}

/// Everything the confident-learning methods derive from one pass over the data.
pub(crate) struct Analysis {
    /// Rows per given label.
    pub(crate) counts: Vec<usize>,
    /// The pass's outputs.
    pub(crate) scan: Scan,
    /// Confident joint with the diagonal clipped to at least 1 (uncalibrated).
    pub(crate) joint: ClassMatrix<u64>,
}

impl Analysis {
    /// Runs the thresholds and the confident-joint pass on validated input.
    pub(crate) fn run(
        labels: &[usize],
        pred_probs: &PredProbs,
        counts: Vec<usize>,
        rule: CollisionRule,
    ) -> Self {
        let thresholds = thresholds_unchecked(labels, pred_probs, &counts);
        let scan = scan(labels, pred_probs, &thresholds, rule);
        let mut joint = scan.counts.clone();
        for c in 0..joint.k() {
            let cell = &mut joint.row_mut(c)[c];
            *cell = (*cell).max(1);
        }
        Self {
            counts,
            scan,
            joint,
        }
    }

    /// The calibrated confident joint: each row rescaled to its class count, rounded preserving row
    /// totals.
    pub(crate) fn calibrated(&self) -> ClassMatrix<u64> {
        calibrate(&self.joint, &self.counts)
    }
}

/// Calibrates a confident joint `[given][true]` so that row `i` sums to `counts[i]` (§2.3).
fn calibrate(joint: &ClassMatrix<u64>, counts: &[usize]) -> ClassMatrix<u64> {
    let k = joint.k();
    let mut scaled: Vec<f64> = Vec::with_capacity(k * k);
    for (i, &n) in counts.iter().enumerate() {
        let row_sum = as_f64_u64(joint.row(i).iter().sum()).max(TINY_VALUE);
        scaled.extend(
            joint
                .row(i)
                .iter()
                .map(|&v| as_f64_u64(v) / row_sum * as_f64(n)),
        );
    }
    let total = numpy_sum(&scaled);
    let n_total = as_f64(counts.iter().sum());
    for v in &mut scaled {
        *v = *v / total * n_total;
    }
    let data = scaled
        .chunks_exact(k)
        .flat_map(round_preserving_sum)
        .collect();
    ClassMatrix::from_vec(k, data)
}

/// Rounds `values` (half to even) so that the integers sum to the rounded sum of the floats: the
/// entries with the largest fractional remainders go up (or the smallest go down) by one.
pub(crate) fn round_preserving_sum(values: &[f64]) -> Vec<u64> {
    let mut ints: Vec<f64> = values.iter().map(|v| v.round_ties_even()).collect();
    let target = numpy_sum(values).round_ties_even();
    loop {
        let diff = target - numpy_sum(&ints);
        if diff.abs() <= FLOATING_POINT_COMPARISON {
            break;
        }
        let step = diff.signum();
        // Ascending by (remainder, index); going up takes the end of that order (as numpy's reversed
        // argsort: largest remainder first, ties to the later entry), going down its start.
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| {
            (values[a] - ints[a])
                .total_cmp(&(values[b] - ints[b]))
                .then(a.cmp(&b))
        });
        if step > 0.0 {
            order.reverse();
        }
        // NOTE: |diff| is a small whole number here (at most the number of entries).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let changes = (diff.abs().round() as usize).min(values.len());
        for &i in &order[..changes] {
            ints[i] += step;
        }
    }
    // NOTE: calibrated counts are non-negative whole numbers far below 2^53.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    ints.into_iter().map(|v| v.max(0.0) as u64).collect()
}

/// numpy's pairwise summation (blocks of 8 accumulators up to 128 values, halves above), so that sums
/// of the small matrices round exactly as cleanlab's do.
pub(crate) fn numpy_sum(values: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = values.len();
    if n < 8 {
        values.iter().fold(0.0, |acc, v| acc + v)
    } else if n <= BLOCK {
        let mut r = [0.0; 8];
        r.copy_from_slice(&values[..8]);
        let whole = n - n % 8;
        for block in values[8..whole].chunks_exact(8) {
            for (acc, v) in r.iter_mut().zip(block) {
                *acc += v;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &values[whole..] {
            res += v;
        }
        res
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_sum(&values[..half]) + numpy_sum(&values[half..])
    }
}

/// `n` as `f64` (row counts stay far below 2^53).
#[allow(clippy::cast_precision_loss)]
pub(crate) fn as_f64(n: usize) -> f64 {
    n as f64
}

/// `n` as `f64` (counts stay far below 2^53).
#[allow(clippy::cast_precision_loss)]
fn as_f64_u64(n: u64) -> f64 {
    n as f64
}

/// The confident joint `C[given][true]`: how many rows with each given label are confidently of each
/// true class. The diagonal is at least 1; `calibrate` rescales each row to its class count (§2.2–2.3).
///
/// # Errors
/// [`QualityError`] if `labels` does not match `pred_probs` or has fewer than two distinct classes.
pub fn confident_joint(
    labels: &[usize],
    pred_probs: &PredProbs,
    collision: CollisionRule,
    calibrate: bool,
) -> Result<ClassMatrix<u64>, QualityError> {
    let counts = class_counts_two_classes(labels, pred_probs)?;
    let analysis = Analysis::run(labels, pred_probs, counts, collision);
    Ok(if calibrate {
        analysis.calibrated()
    } else {
        analysis.joint
    })
}

/// The estimated joint distribution `P(given = i, true = j)`: the calibrated confident joint divided by
/// its total.
///
/// # Errors
/// As [`confident_joint`].
pub fn estimate_joint(
    labels: &[usize],
    pred_probs: &PredProbs,
    collision: CollisionRule,
) -> Result<ClassMatrix<f64>, QualityError> {
    let calibrated = confident_joint(labels, pred_probs, collision, true)?;
    Ok(joint_from_counts(&calibrated))
}

/// Normalises confident-joint counts to a joint distribution.
pub(crate) fn joint_from_counts(counts: &ClassMatrix<u64>) -> ClassMatrix<f64> {
    let counts = counts.to_f64();
    let total = numpy_sum(counts.as_slice());
    ClassMatrix::from_vec(
        counts.k(),
        counts.as_slice().iter().map(|v| v / total).collect(),
    )
}

/// The estimated number of label issues.
///
/// # Errors
/// As [`confident_joint`].
pub fn num_label_issues(
    labels: &[usize],
    pred_probs: &PredProbs,
    method: NumIssuesMethod,
    collision: CollisionRule,
) -> Result<usize, QualityError> {
    let counts = class_counts_two_classes(labels, pred_probs)?;
    let analysis = Analysis::run(labels, pred_probs, counts, collision);
    Ok(match method {
        NumIssuesMethod::OffDiagonal => analysis.scan.num_off_diagonal(),
        NumIssuesMethod::OffDiagonalCalibrated => {
            calibrated_num_issues(&joint_from_counts(&analysis.calibrated()), labels.len())
        }
    })
}

/// `round(n * (1 - trace(joint)))`.
pub(crate) fn calibrated_num_issues(joint: &ClassMatrix<f64>, n: usize) -> usize {
    let trace = numpy_sum(&joint.diagonal());
    // NOTE: 0 <= 1 - trace <= 1, so the product is a small non-negative count.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let issues = (as_f64(n) * (1.0 - trace)).round_ties_even().max(0.0) as usize;
    issues
}

/// How [`estimate_latent`] estimates the prior of the true labels `py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PyMethod {
    /// `py_k = inv[k][k] / noise[k][k] * ps_k` (cleanlab's default `"cnt"`).
    #[default]
    Cnt,
    /// Column sums of the confident joint over its total (`"marginal"`).
    Marginal,
    /// `inverse_noise_matrix · ps` (`"marginal_ps"`).
    MarginalPs,
}

/// Latent noise estimates derived from a confident joint (§2.4).
#[derive(Debug, Clone, PartialEq)]
pub struct LatentEstimates {
    /// Prior of the true labels, clipped to [1e-6, 1] and summing to 1.
    pub py: Vec<f64>,
    /// `P(given = i | true = j)` at `[i][j]`; columns sum to 1, off-diagonals clipped to [0, 0.9999].
    pub noise_matrix: ClassMatrix<f64>,
    /// `P(true = i | given = j)` at `[i][j]`; columns sum to 1, off-diagonals clipped to [0, 0.9999].
    pub inverse_noise_matrix: ClassMatrix<f64>,
    /// The (calibrated) confident joint they were computed from, `[given][true]`.
    pub confident_joint: ClassMatrix<u64>,
}

/// Estimates `py`, the noise matrix and its inverse from a confident joint `[given][true]` and the
/// given labels (cleanlab's `estimate_latent` with `converge_latent_estimates=False`).
///
/// # Errors
/// [`QualityError`] if a label is outside `0..K` or `labels` is empty.
pub fn estimate_latent(
    confident_joint: &ClassMatrix<u64>,
    labels: &[usize],
    py_method: PyMethod,
) -> Result<LatentEstimates, QualityError> {
    if labels.is_empty() {
        return Err(QualityError::Empty);
    }
    let k = confident_joint.k();
    let counts = super::count_labels(labels, labels.len(), k)?;
    let n = as_f64(labels.len());
    let ps: Vec<f64> = counts.iter().map(|&c| as_f64(c) / n).collect();
    let cj = confident_joint.to_f64();
    let col_sums = cj.col_sums();
    let row_sums = cj.row_sums();
    let noise: Vec<f64> = (0..k * k)
        .map(|idx| cj.get(idx / k, idx % k) / col_sums[idx % k].max(TINY_VALUE))
        .collect();
    let inverse: Vec<f64> = (0..k * k)
        .map(|idx| cj.get(idx % k, idx / k) / row_sums[idx % k].max(TINY_VALUE))
        .collect();
    let noise = ClassMatrix::from_vec(k, noise);
    let inverse = ClassMatrix::from_vec(k, inverse);
    let py: Vec<f64> = match py_method {
        PyMethod::Cnt => (0..k)
            .map(|c| inverse.get(c, c) / noise.get(c, c).max(TINY_VALUE) * ps[c])
            .collect(),
        PyMethod::Marginal => {
            let total = numpy_sum(cj.as_slice());
            col_sums.iter().map(|s| s / total).collect()
        }
        PyMethod::MarginalPs => (0..k)
            .map(|t| inverse.row(t).iter().zip(&ps).map(|(a, b)| a * b).sum())
            .collect(),
    };
    Ok(LatentEstimates {
        py: clip_to_distribution(&py, 1e-6),
        noise_matrix: clip_noise_rates(&noise),
        inverse_noise_matrix: clip_noise_rates(&inverse),
        confident_joint: confident_joint.clone(),
    })
}

/// Clips to `[low, 1]` and rescales to sum to 1.
fn clip_to_distribution(values: &[f64], low: f64) -> Vec<f64> {
    let clipped: Vec<f64> = values.iter().map(|v| v.clamp(low, 1.0)).collect();
    let total = numpy_sum(&clipped);
    clipped.iter().map(|v| v / total).collect()
}

/// Clips off-diagonal noise rates to [0, 0.9999], keeps the diagonal, renormalises columns to 1.
fn clip_noise_rates(matrix: &ClassMatrix<f64>) -> ClassMatrix<f64> {
    let k = matrix.k();
    let data: Vec<f64> = (0..k * k)
        .map(|idx| {
            let v = matrix.as_slice()[idx];
            if idx / k == idx % k {
                v
            } else {
                v.clamp(0.0, 0.9999)
            }
        })
        .collect();
    let clipped = ClassMatrix::from_vec(k, data);
    let col_sums = clipped.col_sums();
    let data = clipped
        .as_slice()
        .iter()
        .enumerate()
        .map(|(idx, v)| v / col_sums[idx % k].max(TINY_VALUE))
        .collect();
    ClassMatrix::from_vec(k, data)
}

/// `py`, the noise matrix and its inverse estimated from labels and pred_probs via the calibrated
/// confident joint (cleanlab's `estimate_py_and_noise_matrices_from_probabilities` without
/// `converge_latent_estimates`).
///
/// # Errors
/// As [`confident_joint`].
pub fn estimate_py_and_noise_matrices(
    labels: &[usize],
    pred_probs: &PredProbs,
    collision: CollisionRule,
    py_method: PyMethod,
) -> Result<LatentEstimates, QualityError> {
    let calibrated = confident_joint(labels, pred_probs, collision, true)?;
    estimate_latent(&calibrated, labels, py_method)
}
