//! AutoML: out-of-sample predictions from a table of raw columns, for label-issue detection.
//!
//! A table's columns get roles (inferred, or given), are featurized, and a suite of models (a
//! multinomial logistic regression on dense and sparse input, histogram gradient-boosted trees and
//! k-nearest neighbours) is cross-validated on seeded stratified folds, models and folds in parallel
//! (rayon). Their out-of-sample probabilities are mixed with the weights that minimize the
//! cross-validated log loss. A numeric label gets out-of-sample regression predictions instead.
//!
//! Layout:
//! - `table.rs`: [`Table`], named columns of text or binary cells (our own small columnar type).
//! - `arrow.rs`: [`Table`]s from Arrow record batches, Parquet and JSONL files.
//! - `parse.rs`: numbers, booleans, dates and float lists in cells.
//! - `schema.rs`: [`infer_schema`], each column's [`ColumnRole`] and why.
//! - `featurize.rs`: [`featurize`] into a [`Design`] (dense standardized block, sparse text block).
//! - `text.rs`: hashed TF-IDF of word 1–2-grams and char 3–5-grams.
//! - `image.rs`: colour and gradient-orientation histograms and a thumbnail of encoded images.
//! - `linear.rs`: logistic regression over sparse rows, and ridge regression.
//! - `gbt.rs`: histogram gradient-boosted trees ([`GbtOptions`]).
//! - `neighbors.rs`: out-of-sample kNN from one graph over all rows.
//! - `metrics.rs`: [`ModelMetrics`] (accuracy, log loss, per-class precision/recall/F1; RMSE, R²).
//! - `suite.rs`: [`train`], folds, models, ensemble and [`ModelSummary`]; the same run fold by fold
//!   ([`plan_folds`], [`train_fold`] on any process, [`combine`]) for jobs spread over workers.

mod arrow;
mod featurize;
mod gbt;
mod image;
mod linear;
mod metrics;
mod neighbors;
mod parse;
mod schema;
mod suite;
mod table;
mod text;

pub use arrow::{ReadError, read_jsonl, read_jsonl_lines, read_parquet, table_from_batches};
pub use featurize::{Csr, Design, ONE_HOT_MAX, featurize};
pub use gbt::{EARLY_STOP_MIN_ROWS, GbtOptions};
pub use metrics::{ClassMetrics, ModelMetrics};
pub use schema::{ColumnPlan, ColumnRole, infer_schema};
pub use suite::{
    AutoMlOptions, AutoMlResult, FoldModel, FoldOutput, FoldPlan, GBT_MAX_COLUMNS, ModelKind,
    ModelSummary, Task, combine, plan_folds, train, train_fold,
};
pub use table::{Column, Table};
