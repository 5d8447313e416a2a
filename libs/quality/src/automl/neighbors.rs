//! Out-of-sample k-nearest-neighbour predictions from one graph over all rows: a row's model is
//! its fold's training rows, so its neighbours are its nearest rows in *other* folds. One kNN graph
//! (exact or approximate, [`crate::knn`]) with enough neighbours per row serves every fold.

use super::gbt::Target;
use crate::knn::{KnnGraph, Metric};
use crate::{Features, QualityError};

/// Pseudo-count of the class prior mixed into each row's neighbour vote, so no class gets
/// probability 0.
const PRIOR_WEIGHT: f64 = 1.0;

/// Out-of-sample predictions for `rows` (in that order) from each one's `k` nearest rows in other
/// folds (Euclidean): class probabilities (`rows.len() × k_classes`, the vote smoothed by the
/// training fold's class prior) or the neighbours' mean value.
///
/// # Errors
/// [`QualityError`] if the graph cannot be built (fewer than two rows).
pub(super) fn predict(
    features: &Features,
    target: &Target<'_>,
    fold_of_row: &[usize],
    folds: usize,
    k: usize,
    rows: &[usize],
) -> Result<Vec<f64>, QualityError> {
    let n = features.n();
    // Expected share of other-fold neighbours is (F−1)/F; ask for enough plus a margin.
    let want = (k * folds).div_ceil(folds - 1) + 10;
    let graph = KnnGraph::build(features, want.min(n - 1), Metric::Euclidean)?;
    let others = |i: usize| {
        graph
            .neighbors(i)
            .iter()
            .map(|&j| j as usize)
            .filter(move |&j| fold_of_row[j] != fold_of_row[i])
            .take(k)
    };
    Ok(match target {
        Target::Classes(labels, classes) => {
            let classes = *classes;
            // Class counts of each fold's training rows: all rows minus the fold's.
            let mut total = vec![0.0; classes];
            let mut per_fold = vec![vec![0.0; classes]; folds];
            for (i, &l) in labels.iter().enumerate() {
                total[l] += 1.0;
                per_fold[fold_of_row[i]][l] += 1.0;
            }
            let mut out = vec![0.0; rows.len() * classes];
            for (&i, p) in rows.iter().zip(out.chunks_exact_mut(classes)) {
                let train: Vec<f64> = total
                    .iter()
                    .zip(&per_fold[fold_of_row[i]])
                    .map(|(t, f)| t - f)
                    .collect();
                let train_n: f64 = train.iter().sum();
                let mut votes = 0.0;
                for j in others(i) {
                    p[labels[j]] += 1.0;
                    votes += 1.0;
                }
                for (p, t) in p.iter_mut().zip(&train) {
                    *p = (*p + PRIOR_WEIGHT * t / train_n.max(1.0)) / (votes + PRIOR_WEIGHT);
                }
            }
            out
        }
        Target::Values(y) => {
            let mean = y.iter().sum::<f64>() / n as f64;
            rows.iter()
                .map(|&i| {
                    let (sum, count) = others(i).fold((0.0, 0usize), |(s, c), j| (s + y[j], c + 1));
                    if count == 0 { mean } else { sum / count as f64 }
                })
                .collect()
        }
    })
}
