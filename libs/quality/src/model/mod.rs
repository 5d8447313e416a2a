//! Models that produce out-of-sample predicted probabilities from features (the first slice of
//! AutoML): a standardized multinomial logistic regression under stratified K-fold.
//!
//! Layout:
//! - `standardize.rs`: [`Standardizer`], column mean/scale fitted on a training fold only.
//! - `lbfgs.rs`: a compact L-BFGS with a strong-Wolfe line search.
//! - `logistic.rs`: [`LogisticModel`], softmax regression with an L2 penalty (scikit-learn's `C`),
//!   loss and gradient in parallel over row blocks.
//! - `folds.rs`: seeded stratified fold assignment.
//! - `cv.rs`: [`cross_val_pred_probs`], folds fitted in parallel, with per-fold and overall metrics.

mod cv;
pub(crate) mod folds;
pub(crate) mod lbfgs;
mod logistic;
mod standardize;

pub use cv::{CvOptions, CvResult, CvWarning, FoldMetrics, cross_val_pred_probs};
pub use logistic::{LogisticModel, LogisticOptions};
pub use standardize::Standardizer;
