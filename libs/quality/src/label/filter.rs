//! `find_label_issues` and its `filter_by` methods (§3 of the reference).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use super::joint::{Analysis, RowFacts, given_is_argmax, round_preserving_sum};
use super::scores::scores_unchecked;
use super::{ClassMatrix, FilterBy, LabelIssueOptions, ScoreMethod, class_counts_two_classes};
use crate::{PredProbs, QualityError};

/// Flags the rows whose given label is likely wrong: `true` = label issue.
///
/// Every method except the two `Low*` ones never flags a row whose given label is (within 1e-6) the
/// argmax of its predicted probabilities. Classes with at most `min_examples_per_class` rows, and
/// classes with a single row, are never pruned by the `PruneBy*`/`Both` methods.
///
/// # Errors
/// [`QualityError`] if `labels` does not match `pred_probs` (length, a label outside `0..K`, naming the
/// first bad row), has fewer than two distinct classes, `frac_noise` is not in (0, 1], or
/// `num_to_remove_per_class` is given with the wrong length or a method other than `PruneBy*`/`Both`.
pub fn find_label_issues(
    labels: &[usize],
    pred_probs: &PredProbs,
    opts: &LabelIssueOptions,
) -> Result<Vec<bool>, QualityError> {
    if !(opts.frac_noise > 0.0 && opts.frac_noise <= 1.0) {
        return Err(QualityError::InvalidOption {
            option: "frac_noise",
            reason: format!("{} is not in (0, 1]", opts.frac_noise),
        });
    }
    if let Some(requested) = &opts.num_to_remove_per_class {
        if requested.len() != pred_probs.k() {
            return Err(QualityError::InvalidOption {
                option: "num_to_remove_per_class",
                reason: format!(
                    "has {} entries, expected one per class ({})",
                    requested.len(),
                    pred_probs.k()
                ),
            });
        }
        if !matches!(
            opts.filter_by,
            FilterBy::PruneByNoiseRate | FilterBy::PruneByClass | FilterBy::Both
        ) {
            return Err(QualityError::InvalidOption {
                option: "num_to_remove_per_class",
                reason: format!("not defined for {:?}", opts.filter_by),
            });
        }
    }
    let counts = class_counts_two_classes(labels, pred_probs)?;
    Ok(find_issues_unchecked(labels, pred_probs, counts, opts))
}

/// [`find_label_issues`] on validated input (one class allowed, for one-vs-rest multi-label).
pub(crate) fn find_issues_unchecked(
    labels: &[usize],
    pred_probs: &PredProbs,
    counts: Vec<usize>,
    opts: &LabelIssueOptions,
) -> Vec<bool> {
    match opts.filter_by {
        FilterBy::PredictedNeqGiven => labels
            .par_iter()
            .enumerate()
            .map(|(i, &y)| !given_is_argmax(pred_probs.row(i), y))
            .collect(),
        FilterBy::ConfidentLearning => Analysis::run(labels, pred_probs, counts, opts.collision)
            .scan
            .off_diagonal_mask(),
        FilterBy::LowSelfConfidence | FilterBy::LowNormalizedMargin => {
            let method = if opts.filter_by == FilterBy::LowSelfConfidence {
                ScoreMethod::SelfConfidence
            } else {
                ScoreMethod::NormalizedMargin
            };
            let scores = scores_unchecked(labels, pred_probs, method, None);
            let analysis = Analysis::run(labels, pred_probs, counts, opts.collision);
            let issues = analysis.scan.num_off_diagonal();
            let mut mask = vec![false; labels.len()];
            for row in lowest(
                scores
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| (s, i))
                    .collect(),
                issues,
            ) {
                mask[row] = true;
            }
            mask
        }
        FilterBy::PruneByNoiseRate | FilterBy::PruneByClass | FilterBy::Both => {
            prune(labels, pred_probs, counts, opts)
        }
    }
}

/// What to remove from one given class.
struct ClassPlan {
    /// `(true class j, m)`: flag the `m` rows with the largest `p[j] - p[k]` (m > 0).
    by_noise_rate: Vec<(usize, usize)>,
    /// Flag this many rows with the lowest `p[k]`.
    by_class: usize,
}

/// The prune-count plan per given class from the calibrated confident joint `[given][true]`: every
/// class keeps at least `min_examples` rows (the shortfall is taken evenly from the non-zero
/// off-diagonals), then only `frac_noise` of the off-diagonal mass is removed (§3.3).
fn plan(
    calibrated: &ClassMatrix<u64>,
    counts: &[usize],
    opts: &LabelIssueOptions,
) -> Vec<ClassPlan> {
    let k = calibrated.k();
    (0..k)
        .map(|given| {
            let row = calibrated.row(given);
            let diag = to_f64(row[given]);
            let new_diag = diag.max(to_f64(opts.min_examples_per_class as u64));
            let nonzero = row
                .iter()
                .enumerate()
                .filter(|&(j, &v)| j != given && v != 0)
                .count();
            let shave = (new_diag - diag) / to_f64(nonzero.max(1) as u64);
            let mut removed = 0.0;
            let mut by_noise_rate = Vec::new();
            for (j, &v) in row.iter().enumerate() {
                if j == given {
                    continue;
                }
                let kept = (to_f64(v) - shave).max(0.0);
                removed += kept * (1.0 - opts.frac_noise);
                let m = truncate(kept * opts.frac_noise);
                if m > 0 {
                    by_noise_rate.push((j, m));
                }
            }
            let keep = truncate(new_diag + removed);
            ClassPlan {
                by_noise_rate,
                by_class: counts[given].saturating_sub(keep),
            }
        })
        .collect()
}

/// The prune-count plan for a requested number of removals per given class: class k's off-diagonal
/// noise rates (its calibrated confident-joint row without the diagonal, normalised) times its
/// request, with `n_k - request` kept; each true class's counts are then rounded preserving their
/// total, as cleanlab rounds its prune-count matrix (§3.3).
fn plan_requested(
    calibrated: &ClassMatrix<u64>,
    counts: &[usize],
    requested: &[usize],
) -> Vec<ClassPlan> {
    let k = calibrated.k();
    // `[true][given]`, as cleanlab's prune-count matrix.
    let mut prune = vec![0.0; k * k];
    for (given, (&n, &r)) in counts.iter().zip(requested).enumerate() {
        let row = calibrated.row(given);
        let r = r.min(n);
        let off: u64 = row
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != given)
            .map(|(_, &v)| v)
            .sum();
        for (j, &v) in row.iter().enumerate() {
            prune[j * k + given] = if j == given {
                to_f64((n - r) as u64)
            } else if off > 0 {
                to_f64(v) / to_f64(off) * to_f64(r as u64)
            } else {
                0.0
            };
        }
    }
    let rounded: Vec<u64> = prune
        .chunks_exact(k)
        .flat_map(round_preserving_sum)
        .collect();
    (0..k)
        .map(|given| ClassPlan {
            by_noise_rate: (0..k)
                .filter(|&j| j != given && rounded[j * k + given] > 0)
                .map(|j| {
                    (
                        j,
                        usize::try_from(rounded[j * k + given]).unwrap_or(usize::MAX),
                    )
                })
                .collect(),
            by_class: requested[given],
        })
        .collect()
}

/// `v` as `f64` (counts stay far below 2^53).
#[allow(clippy::cast_precision_loss)]
fn to_f64(v: u64) -> f64 {
    v as f64
}

/// Truncates a non-negative count toward zero (numpy's `astype(int)`).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn truncate(v: f64) -> usize {
    v.max(0.0) as usize
}

/// The `PruneByNoiseRate`, `PruneByClass` and `Both` methods: per given class in parallel.
fn prune(
    labels: &[usize],
    pred_probs: &PredProbs,
    counts: Vec<usize>,
    opts: &LabelIssueOptions,
) -> Vec<bool> {
    let analysis = Analysis::run(labels, pred_probs, counts, opts.collision);
    let calibrated = analysis.calibrated();
    let plans = match &opts.num_to_remove_per_class {
        Some(requested) => plan_requested(&calibrated, &analysis.counts, requested),
        None => plan(&calibrated, &analysis.counts, opts),
    };
    let (offsets, order) = rows_by_class(labels, &analysis.counts);
    let min_rows = opts.min_examples_per_class.max(1);
    let facts = &analysis.scan.facts;
    let flagged: Vec<Vec<usize>> = plans
        .par_iter()
        .enumerate()
        .map(|(class, plan)| {
            let rows = &order[offsets[class]..offsets[class + 1]];
            if rows.len() <= min_rows {
                return Vec::new();
            }
            let mut out = match opts.filter_by {
                FilterBy::PruneByClass => lowest_in_class(facts, rows, plan.by_class),
                FilterBy::Both => {
                    let by_class = lowest_in_class(facts, rows, plan.by_class);
                    let by_noise =
                        largest_margins(pred_probs, class, rows, facts, &plan.by_noise_rate);
                    by_class
                        .into_iter()
                        .filter(|r| by_noise.binary_search(r).is_ok())
                        .collect()
                }
                FilterBy::PruneByNoiseRate
                | FilterBy::ConfidentLearning
                | FilterBy::PredictedNeqGiven
                | FilterBy::LowSelfConfidence
                | FilterBy::LowNormalizedMargin => {
                    largest_margins(pred_probs, class, rows, facts, &plan.by_noise_rate)
                }
            };
            out.retain(|&r| !facts[r].label_is_argmax);
            out
        })
        .collect();
    let mut mask = vec![false; labels.len()];
    for row in flagged.into_iter().flatten() {
        mask[row] = true;
    }
    mask
}

/// Row indices grouped by given label (counting sort): class `c`'s rows, ascending, are
/// `order[offsets[c]..offsets[c + 1]]`.
fn rows_by_class(labels: &[usize], counts: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut offsets = Vec::with_capacity(counts.len() + 1);
    offsets.push(0);
    for &c in counts {
        offsets.push(offsets[offsets.len() - 1] + c);
    }
    let mut next = offsets.clone();
    let mut order = vec![0usize; labels.len()];
    for (i, &y) in labels.iter().enumerate() {
        order[next[y]] = i;
        next[y] += 1;
    }
    (offsets, order)
}

/// The `m` rows of `rows` (one class) with the lowest self-confidence, ascending by row index.
fn lowest_in_class(facts: &[RowFacts], rows: &[usize], m: usize) -> Vec<usize> {
    let mut out = lowest(rows.iter().map(|&r| (facts[r].own, r)).collect(), m);
    out.sort_unstable();
    out
}

/// The rows of the `m` lowest `(score, row)` pairs (ties go to the lower row), in no particular order.
pub(crate) fn lowest(mut scored: Vec<(f64, usize)>, m: usize) -> Vec<usize> {
    let by_score = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if m == 0 {
        return Vec::new();
    }
    if m < scored.len() {
        scored.select_nth_unstable_by(m - 1, by_score);
        scored.truncate(m);
    }
    scored.into_iter().map(|(_, r)| r).collect()
}

/// A candidate row in a top-m margin selection; the heap's greatest element is the worst kept one.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    margin: f64,
    row: usize,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Smaller margin is worse; on equal margins the later row is worse.
        other
            .margin
            .total_cmp(&self.margin)
            .then(self.row.cmp(&other.row))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// For each `(j, m)` target, the `m` rows of `rows` (all of class `class`) with the largest
/// `p[j] - p[class]` (ties go to the lower row); the union, sorted.
///
/// No margin of a row exceeds its `max_margin` (from the confident-joint pass), so rows are visited in
/// rounds of decreasing `max_margin` (partial selection, no sort): a bounded heap per target keeps the
/// best `m` seen, and once every heap is full with a worst kept margin above the largest `max_margin`
/// left, no remaining row can enter and the rest of the class is never read. The first round takes as
/// many rows as there are to flag, the second an eighth of that, then rounds double; each round's
/// rows are first copied out together so that their cache misses overlap.
fn largest_margins(
    pred_probs: &PredProbs,
    class: usize,
    rows: &[usize],
    facts: &[RowFacts],
    targets: &[(usize, usize)],
) -> Vec<usize> {
    const MIN_ROUND: usize = 64;
    if targets.is_empty() {
        return Vec::new();
    }
    let k = pred_probs.k();
    let mut heaps: Vec<BinaryHeap<Candidate>> = targets
        .iter()
        .map(|&(_, m)| BinaryHeap::with_capacity(m.min(rows.len())))
        .collect();
    let mut floors = vec![f64::NEG_INFINITY; targets.len()];
    let mut pending: Vec<(f64, usize)> = rows.iter().map(|&r| (facts[r].max_margin, r)).collect();
    let first = targets
        .iter()
        .map(|&(_, m)| m)
        .sum::<usize>()
        .max(MIN_ROUND);
    let mut round = first;
    let mut second = true;
    let mut block: Vec<f64> = Vec::new();
    let descending = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0);
    loop {
        let take = round.min(pending.len());
        let rest_max = if take < pending.len() {
            pending.select_nth_unstable_by(take, descending);
            pending[take].0
        } else {
            f64::NEG_INFINITY
        };
        let batch = &mut pending[..take];
        batch.sort_unstable_by_key(|&(_, row)| row);
        block.clear();
        for &(_, row) in batch.iter() {
            block.extend_from_slice(pred_probs.row(row));
        }
        for (&(_, row), probs) in batch.iter().zip(block.chunks_exact(k)) {
            let own = probs[class];
            for ((&(j, m), heap), floor) in targets.iter().zip(&mut heaps).zip(&mut floors) {
                let margin = probs[j] - own;
                // Cheap reject against the cached worst kept margin; ties take the full comparison.
                if margin < *floor {
                    continue;
                }
                let candidate = Candidate { margin, row };
                if heap.len() < m {
                    heap.push(candidate);
                } else if heap.peek().is_some_and(|worst| candidate < *worst) {
                    heap.pop();
                    heap.push(candidate);
                }
                if heap.len() == m {
                    *floor = heap.peek().map_or(f64::NEG_INFINITY, |worst| worst.margin);
                }
            }
        }
        pending.drain(..take);
        let settled = targets
            .iter()
            .zip(&heaps)
            .zip(&floors)
            .all(|((&(_, m), heap), &floor)| heap.len() == m && floor > rest_max);
        if pending.is_empty() || settled {
            break;
        }
        round = if second {
            (first / 8).max(MIN_ROUND)
        } else {
            round.saturating_mul(2)
        };
        second = false;
    }
    let mut out: Vec<usize> = heaps
        .into_iter()
        .flat_map(|h| h.into_iter().map(|c| c.row))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
