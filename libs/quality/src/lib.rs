//! The quality engine: confident learning, dataset issue detectors and per-row trust scores.
//!
//! A pure library: no I/O, no async; rayon for parallelism. Implemented from the math in
//! `shared/reference/cleanlab-algorithms.md` (never from cleanlab's AGPL source).
//!
//! Layout:
//! - [`matrix`]: the dense row-major inputs ([`PredProbs`], [`Features`]) and their validation.
//! - [`error`]: the one error type, naming the problem and the first offending row.
//! - [`label`]: confident learning (§2–§7): thresholds, confident joint, `filter_by` methods,
//!   label quality scores, noise matrices, dataset health; multi-label and regression.
//! - [`knn`]: the shared k-nearest-neighbour graph (exact below a size threshold, approximate above).
//! - [`detectors`]: Datalab's issue types over the kNN graph and pred_probs, and the per-row
//!   trust score.
//! - [`model`]: out-of-sample predicted probabilities from features (standardized multinomial
//!   logistic regression, L-BFGS, stratified K-fold).
//! - [`modality`]: image checks (CleanVision semantics) and text checks (PII, language, length,
//!   near duplicates) on raw cells.
//! - [`automl`]: from a table of raw columns to out-of-sample predictions: schema inference,
//!   featurization, a suite of models (logistic regression, gradient-boosted trees, kNN), their
//!   ensemble and its summary.

pub mod automl;
pub mod detectors;
pub mod error;
pub mod knn;
pub mod label;
pub mod matrix;
pub mod modality;
pub mod model;

pub use error::QualityError;
pub use matrix::{Features, PredProbs};
