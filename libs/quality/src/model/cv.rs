//! Stratified K-fold cross-validation producing out-of-sample predicted probabilities.

use std::fmt;

use rayon::prelude::*;

use super::folds::stratified_folds;
use super::logistic::{LogisticModel, LogisticOptions};
use crate::{Features, PredProbs, QualityError};

/// Probabilities are clipped to `[EPS, 1]` in the log loss, as scikit-learn's `log_loss` does.
const LOG_LOSS_EPS: f64 = 1e-15;

/// Options of [`cross_val_pred_probs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CvOptions {
    /// Number of folds (at least 2, at most the number of rows).
    pub folds: usize,
    /// Seed of the fold assignment; the result is a function of the inputs and this seed.
    pub seed: u64,
    /// The model fitted on each fold.
    pub logistic: LogisticOptions,
}

impl Default for CvOptions {
    fn default() -> Self {
        Self {
            folds: 5,
            seed: 0,
            logistic: LogisticOptions::default(),
        }
    }
}

/// Held-out metrics of one fold's model, against the given labels.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldMetrics {
    /// Held-out rows.
    pub rows: usize,
    /// Fraction of held-out rows whose argmax is their given label.
    pub accuracy: f64,
    /// Mean negative log probability of the given label on the held-out rows.
    pub log_loss: f64,
    /// L-BFGS iterations of the fold's fit.
    pub iterations: usize,
}

/// Something the caller should know about a cross-validation run that still produced a result.
#[derive(Debug, Clone, PartialEq)]
pub enum CvWarning {
    /// A class has fewer rows than folds: its rows sit in distinct folds, so each is predicted by a
    /// model that saw `rows - 1` examples of its class (none for a single row), and its predicted
    /// probability of its own label is pessimistic.
    SmallClass {
        /// The class.
        class: usize,
        /// Its rows.
        rows: usize,
        /// The number of folds.
        folds: usize,
    },
    /// A class in `0..k_classes` has no rows; every model gives it a near-zero probability.
    AbsentClass {
        /// The class.
        class: usize,
    },
    /// A fold's fit stopped at `max_iter` (or a failed line search) before meeting its tolerance.
    NotConverged {
        /// The fold.
        fold: usize,
        /// Iterations taken.
        iterations: usize,
    },
}

impl fmt::Display for CvWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SmallClass { class, rows, folds } => write!(
                f,
                "class {class} has {rows} rows, fewer than the {folds} folds: each row is predicted by a model trained on the other {} rows of its class",
                rows - 1
            ),
            Self::AbsentClass { class } => write!(f, "class {class} has no rows"),
            Self::NotConverged { fold, iterations } => {
                write!(
                    f,
                    "fold {fold}'s model did not converge in {iterations} iterations"
                )
            }
        }
    }
}

/// The result of [`cross_val_pred_probs`].
#[derive(Debug, Clone, PartialEq)]
pub struct CvResult {
    /// Out-of-sample predicted probabilities of every row, from the model that did not see it.
    pub pred_probs: PredProbs,
    /// The fold each row was held out in.
    pub fold_of_row: Vec<usize>,
    /// Per-fold held-out metrics, indexed by fold.
    pub folds: Vec<FoldMetrics>,
    /// Accuracy over all rows' out-of-sample predictions.
    pub accuracy: f64,
    /// Log loss over all rows' out-of-sample predictions.
    pub log_loss: f64,
    /// What the caller should know (small or absent classes, unconverged fits).
    pub warnings: Vec<CvWarning>,
}

/// Out-of-sample predicted probabilities of a standardized multinomial logistic regression under
/// seeded stratified K-fold cross-validation, the folds fitted in parallel. The standardizer of each
/// fold is fitted on its training rows only.
///
/// # Errors
/// [`QualityError`] if `labels` and `features` differ in length, a label is not in `0..k_classes`,
/// fewer than two classes have rows ([`QualityError::TooFewClasses`]), there are fewer rows than
/// folds, or an option is out of range.
pub fn cross_val_pred_probs(
    features: &Features,
    labels: &[usize],
    k_classes: usize,
    opts: &CvOptions,
) -> Result<CvResult, QualityError> {
    let counts = validate(features, labels, k_classes, opts)?;
    let mut warnings = Vec::new();
    for (class, &rows) in counts.iter().enumerate() {
        if rows == 0 {
            warnings.push(CvWarning::AbsentClass { class });
        } else if rows < opts.folds {
            warnings.push(CvWarning::SmallClass {
                class,
                rows,
                folds: opts.folds,
            });
        }
    }
    let fold_of_row = stratified_folds(labels, k_classes, opts.folds, opts.seed);
    let fits = (0..opts.folds)
        .into_par_iter()
        .map(|fold| {
            let (held_out, train): (Vec<usize>, Vec<usize>) =
                (0..labels.len()).partition(|&r| fold_of_row[r] == fold);
            let model = LogisticModel::fit(features, labels, k_classes, &train, &opts.logistic)?;
            let probs = model.predict_proba(features, &held_out)?;
            Ok((held_out, probs, model.iterations(), model.converged()))
        })
        .collect::<Result<Vec<_>, QualityError>>()?;
    let mut data = vec![0.0; labels.len() * k_classes];
    let mut folds = Vec::with_capacity(opts.folds);
    for (fold, (held_out, probs, iterations, converged)) in fits.into_iter().enumerate() {
        for (&row, p) in held_out.iter().zip(probs.chunks_exact(k_classes)) {
            data[row * k_classes..(row + 1) * k_classes].copy_from_slice(p);
        }
        let held_labels: Vec<usize> = held_out.iter().map(|&r| labels[r]).collect();
        let (accuracy, log_loss) = metrics(&probs, &held_labels, k_classes);
        folds.push(FoldMetrics {
            rows: held_out.len(),
            accuracy,
            log_loss,
            iterations,
        });
        if !converged {
            warnings.push(CvWarning::NotConverged { fold, iterations });
        }
    }
    let (accuracy, log_loss) = metrics(&data, labels, k_classes);
    let pred_probs = PredProbs::new(data, k_classes)?;
    Ok(CvResult {
        pred_probs,
        fold_of_row,
        folds,
        accuracy,
        log_loss,
        warnings,
    })
}

/// Checks the inputs; returns the rows per class.
fn validate(
    features: &Features,
    labels: &[usize],
    k_classes: usize,
    opts: &CvOptions,
) -> Result<Vec<usize>, QualityError> {
    opts.logistic.validate()?;
    if opts.folds < 2 {
        return Err(QualityError::InvalidOption {
            option: "folds",
            reason: format!("{} folds; at least 2 are needed", opts.folds),
        });
    }
    if labels.len() != features.n() {
        return Err(QualityError::LengthMismatch {
            what: "labels",
            got: labels.len(),
            expected: features.n(),
        });
    }
    if k_classes < 2 {
        return Err(QualityError::TooFewClasses(k_classes));
    }
    if labels.len() < opts.folds {
        return Err(QualityError::InvalidOption {
            option: "folds",
            reason: format!("{} folds but only {} rows", opts.folds, labels.len()),
        });
    }
    let mut counts = vec![0usize; k_classes];
    for (row, &label) in labels.iter().enumerate() {
        let Some(count) = counts.get_mut(label) else {
            return Err(QualityError::InvalidValue {
                what: "labels",
                row,
                reason: format!("label {label} is not in 0..{k_classes}"),
            });
        };
        *count += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count();
    if present < 2 {
        return Err(QualityError::TooFewClasses(present));
    }
    Ok(counts)
}

/// Accuracy (argmax, first on ties) and log loss of row-major `probs` against `labels`.
fn metrics(probs: &[f64], labels: &[usize], k: usize) -> (f64, f64) {
    let n = labels.len().max(1) as f64;
    let (mut correct, mut loss) = (0usize, 0.0);
    for (p, &label) in probs.chunks_exact(k).zip(labels) {
        let argmax = p
            .iter()
            .enumerate()
            .fold(0, |best, (c, v)| if *v > p[best] { c } else { best });
        correct += usize::from(argmax == label);
        loss -= p[label].clamp(LOG_LOSS_EPS, 1.0).ln();
    }
    (correct as f64 / n, loss / n)
}
