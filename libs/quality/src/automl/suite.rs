//! The AutoML run: schema, featurization, the label's task, seeded stratified folds, every model's
//! out-of-sample predictions (models and folds in parallel), the ensemble and the summary.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::featurize::{Design, featurize};
use super::gbt::{self, Binned, GbtOptions, Target};
use super::linear::{self, SparseLogistic};
use super::metrics::{self, ModelMetrics};
use super::neighbors;
use super::parse;
use super::schema::{ColumnPlan, ColumnRole, infer_schema};
use super::table::Table;
use crate::model::folds::stratified_folds;
use crate::model::{CvWarning, LogisticModel, LogisticOptions};
use crate::{Features, PredProbs, QualityError};

/// Gradient-boosted trees are skipped above this many dense columns (their histograms grow with
/// the column count); the linear model and kNN still run.
pub const GBT_MAX_COLUMNS: usize = 1024;
/// A numeric label with more distinct values than this (or any fraction) is a regression target.
const CLASSIFICATION_MAX_NUMERIC_CLASSES: usize = 20;

/// A model of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Multinomial logistic regression (classification) or ridge regression (regression).
    Linear,
    /// Histogram gradient-boosted trees.
    GradientBoostedTrees,
    /// k-nearest neighbours.
    Knn,
}

impl ModelKind {
    /// Every model.
    pub const ALL: [Self; 3] = [Self::Linear, Self::GradientBoostedTrees, Self::Knn];

    fn name(self, task: Task) -> &'static str {
        match (self, task) {
            (Self::Linear, Task::Classification) => "logistic_regression",
            (Self::Linear, Task::Regression) => "ridge",
            (Self::GradientBoostedTrees, _) => "gradient_boosted_trees",
            (Self::Knn, _) => "knn",
        }
    }
}

/// Classification or regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Predicted probabilities of the label's classes.
    Classification,
    /// Predicted values of a numeric label.
    Regression,
}

/// Options of [`train`].
#[derive(Debug, Clone, PartialEq)]
pub struct AutoMlOptions {
    /// The label column.
    pub label: String,
    /// Columns that identify rows (never features), besides those inferred.
    pub id_columns: Vec<String>,
    /// Roles given by the user, overriding inference.
    pub roles: BTreeMap<String, ColumnRole>,
    /// The task; `None` infers it (a numeric label with fractions or more than 20 distinct values is
    /// regression).
    pub task: Option<Task>,
    /// Folds (at least 2; lowered to the number of rows if there are fewer).
    pub folds: usize,
    /// Seed of the folds; the result is a function of the inputs and this seed.
    pub seed: u64,
    /// The models to train.
    pub models: Vec<ModelKind>,
    /// The logistic regression's inverse L2 strength.
    pub c: f64,
    /// The boosted trees' hyperparameters.
    pub gbt: GbtOptions,
    /// Neighbours of the kNN model.
    pub neighbors: usize,
}

impl AutoMlOptions {
    /// Defaults for `label`: 5 folds, seed 0, every model.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            id_columns: Vec::new(),
            roles: BTreeMap::new(),
            task: None,
            folds: 5,
            seed: 0,
            models: ModelKind::ALL.to_vec(),
            c: 1.0,
            gbt: GbtOptions::default(),
            neighbors: 15,
        }
    }
}

/// What the models saw and how well they did, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSummary {
    /// Classification or regression.
    pub task: Task,
    /// Rows.
    pub rows: usize,
    /// Folds.
    pub folds: usize,
    /// Seed of the folds.
    pub seed: u64,
    /// Every column's role and why.
    pub columns: Vec<ColumnPlan>,
    /// Dense feature columns (text projection included).
    pub dense_features: usize,
    /// Sparse (text) feature columns.
    pub sparse_features: usize,
    /// Per-model cross-validated metrics, with their ensemble weights.
    pub models: Vec<ModelMetrics>,
    /// The ensemble's cross-validated metrics.
    pub ensemble: ModelMetrics,
    /// What the user should know (small classes, skipped models, unconverged fits).
    pub warnings: Vec<String>,
}

/// The result of [`train`].
#[derive(Debug, Clone, PartialEq)]
pub struct AutoMlResult {
    /// Class names in order (classification): class `c` is `classes[c]`; sorted numerically when
    /// every label is a number, else as strings.
    pub classes: Vec<String>,
    /// Given labels as class indices (classification).
    pub labels: Vec<usize>,
    /// The ensemble's out-of-sample probabilities (classification).
    pub pred_probs: Option<PredProbs>,
    /// The numeric label (regression).
    pub targets: Vec<f64>,
    /// The ensemble's out-of-sample predictions (regression).
    pub predictions: Vec<f64>,
    /// The fold each row was held out in.
    pub fold_of_row: Vec<usize>,
    /// The featurized table.
    pub design: Design,
    /// Metrics and column roles.
    pub summary: ModelSummary,
}

/// The label column, encoded.
enum Label {
    Classes(Vec<String>, Vec<usize>),
    Values(Vec<f64>),
}

fn read_label(table: &Table, opts: &AutoMlOptions) -> Result<Label, QualityError> {
    let column = table
        .column(&opts.label)
        .ok_or_else(|| QualityError::InvalidColumn {
            column: opts.label.clone(),
            row: None,
            reason: "no such column (the label)".into(),
        })?;
    let raw: Vec<&str> = (0..column.len())
        .map(|i| {
            column.get(i).ok_or_else(|| QualityError::InvalidColumn {
                column: opts.label.clone(),
                row: Some(i),
                reason: "the label is missing".into(),
            })
        })
        .collect::<Result<_, _>>()?;
    let numbers: Option<Vec<f64>> = raw.iter().map(|v| parse::number(v)).collect();
    let task = opts.task.unwrap_or_else(|| match &numbers {
        Some(v) if v.iter().any(|x| x.fract() != 0.0) => Task::Regression,
        Some(v) => {
            let distinct: BTreeSet<i64> = v.iter().map(|x| *x as i64).collect();
            if distinct.len() > CLASSIFICATION_MAX_NUMERIC_CLASSES {
                Task::Regression
            } else {
                Task::Classification
            }
        }
        None => Task::Classification,
    });
    match task {
        Task::Regression => {
            let Some(values) = numbers else {
                let row = raw
                    .iter()
                    .position(|v| parse::number(v).is_none())
                    .unwrap_or(0);
                return Err(QualityError::InvalidColumn {
                    column: opts.label.clone(),
                    row: Some(row),
                    reason: format!(
                        "{:?} is not a number (regression needs numeric labels)",
                        raw[row]
                    ),
                });
            };
            Ok(Label::Values(values))
        }
        Task::Classification => {
            let distinct: BTreeSet<&str> = raw.iter().copied().collect();
            let mut classes: Vec<String> = distinct.into_iter().map(str::to_owned).collect();
            if let Some(numbers) = classes
                .iter()
                .map(|c| parse::number(c))
                .collect::<Option<Vec<f64>>>()
            {
                let mut order: Vec<usize> = (0..classes.len()).collect();
                order.sort_by(|&a, &b| numbers[a].total_cmp(&numbers[b]));
                classes = order.into_iter().map(|i| classes[i].clone()).collect();
            }
            if classes.len() < 2 {
                return Err(QualityError::InvalidColumn {
                    column: opts.label.clone(),
                    row: None,
                    reason: format!(
                        "every row has the class {:?}: a model (and label issues) need at least two classes",
                        classes.first().map_or("", String::as_str)
                    ),
                });
            }
            let index: BTreeMap<&str, usize> = classes
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str(), i))
                .collect();
            let labels = raw.iter().map(|v| index[v]).collect();
            Ok(Label::Classes(classes, labels))
        }
    }
}

/// Seeded folds: stratified by class, or (regression) by the label's quantile decile.
fn folds_of(label: &Label, folds: usize, seed: u64) -> Vec<usize> {
    match label {
        Label::Classes(classes, labels) => stratified_folds(labels, classes.len(), folds, seed),
        Label::Values(y) => {
            let mut order: Vec<usize> = (0..y.len()).collect();
            order.sort_by(|&a, &b| y[a].total_cmp(&y[b]));
            let mut strata = vec![0; y.len()];
            for (rank, &i) in order.iter().enumerate() {
                strata[i] = rank * 10 / y.len();
            }
            stratified_folds(&strata, 10, folds, seed)
        }
    }
}

/// One model's out-of-sample predictions.
struct Run {
    kind: ModelKind,
    /// `n × k` probabilities, or `n` values.
    out: Vec<f64>,
    seconds: f64,
    warnings: Vec<String>,
}

/// The folds' (held-out rows, training rows).
fn splits(fold_of_row: &[usize], folds: usize) -> Vec<(Vec<usize>, Vec<usize>)> {
    (0..folds)
        .map(|f| (0..fold_of_row.len()).partition(|&r| fold_of_row[r] == f))
        .collect()
}

/// Scatters per-fold predictions (`width` per row) back to row order.
fn scatter(n: usize, width: usize, parts: Vec<(Vec<usize>, Vec<f64>)>) -> Vec<f64> {
    let mut out = vec![0.0; n * width];
    for (rows, values) in parts {
        for (&r, v) in rows.iter().zip(values.chunks_exact(width)) {
            out[r * width..(r + 1) * width].copy_from_slice(v);
        }
    }
    out
}

fn run_model(
    kind: ModelKind,
    design: &Design,
    target: &Target<'_>,
    fold_of_row: &[usize],
    opts: &AutoMlOptions,
    folds: usize,
) -> Result<Option<Run>, QualityError> {
    let start = Instant::now();
    let n = design.n();
    let split = splits(fold_of_row, folds);
    let width = match target {
        Target::Classes(_, k) => *k,
        Target::Values(_) => 1,
    };
    let mut warnings = Vec::new();
    let out = match kind {
        ModelKind::Linear => match target {
            Target::Classes(labels, k) if design.sparse().is_none() => {
                let (dense, d) = design.dense_without_projection();
                let features = Features::new(dense, d)?;
                let logistic = LogisticOptions {
                    c: opts.c,
                    ..LogisticOptions::default()
                };
                let parts = split
                    .par_iter()
                    .map(|(test, train)| {
                        let model = LogisticModel::fit(&features, labels, *k, train, &logistic)?;
                        Ok((
                            test.clone(),
                            model.predict_proba(&features, test)?,
                            model.converged(),
                        ))
                    })
                    .collect::<Result<Vec<_>, QualityError>>()?;
                for (fold, part) in parts.iter().enumerate() {
                    if !part.2 {
                        warnings.push(format!(
                            "logistic regression did not converge on fold {fold}"
                        ));
                    }
                }
                scatter(
                    n,
                    width,
                    parts.into_iter().map(|(r, p, _)| (r, p)).collect(),
                )
            }
            Target::Classes(labels, k) => {
                let x = linear::design_csr(design);
                let parts: Vec<(Vec<usize>, Vec<f64>, bool)> = split
                    .par_iter()
                    .map(|(test, train)| {
                        let model = SparseLogistic::fit(&x, labels, *k, train, opts.c, 1000);
                        (test.clone(), model.predict_proba(&x, test), model.converged)
                    })
                    .collect();
                for (fold, part) in parts.iter().enumerate() {
                    if !part.2 {
                        warnings.push(format!(
                            "logistic regression did not converge on fold {fold}"
                        ));
                    }
                }
                scatter(
                    n,
                    width,
                    parts.into_iter().map(|(r, p, _)| (r, p)).collect(),
                )
            }
            Target::Values(y) => {
                let x = linear::design_csr(design);
                let parts = split
                    .par_iter()
                    .map(|(test, train)| {
                        (
                            test.clone(),
                            linear::ridge_fit_predict(&x, y, train, test, 1.0),
                        )
                    })
                    .collect();
                scatter(n, width, parts)
            }
        },
        ModelKind::GradientBoostedTrees => {
            let Some(features) = design.dense_features() else {
                return Ok(None);
            };
            if features.d() > GBT_MAX_COLUMNS {
                return Err(QualityError::InvalidOption {
                    option: "models",
                    reason: format!(
                        "gradient-boosted trees skipped: {} feature columns, more than {GBT_MAX_COLUMNS}",
                        features.d()
                    ),
                });
            }
            let binned = Binned::new(&features);
            let parts = split
                .par_iter()
                .map(|(test, train)| {
                    (
                        test.clone(),
                        gbt::fit_predict(&binned, target, train, test, &opts.gbt),
                    )
                })
                .collect();
            scatter(n, width, parts)
        }
        ModelKind::Knn => {
            let Some(features) = design.dense_features() else {
                return Ok(None);
            };
            neighbors::predict(&features, target, fold_of_row, folds, opts.neighbors)?
        }
    };
    Ok(Some(Run {
        kind,
        out,
        seconds: start.elapsed().as_secs_f64(),
        warnings,
    }))
}

/// Mixture weights that maximize the likelihood of the given labels under `Σ w_m p_m` (EM on the
/// simplex: `w_m ← mean_i w_m·p_m(yᵢ)/Σ_m' w_m'·p_m'(yᵢ)`), i.e. the weights minimizing the
/// ensemble's cross-validated log loss.
fn classification_weights(runs: &[Run], labels: &[usize], k: usize) -> Vec<f64> {
    let m = runs.len();
    let mut w = vec![1.0 / m as f64; m];
    let p: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            labels
                .iter()
                .enumerate()
                .map(|(i, &l)| r.out[i * k + l].max(1e-15))
                .collect()
        })
        .collect();
    for _ in 0..200 {
        let mut next = vec![0.0; m];
        for i in 0..labels.len() {
            let mix: f64 = w.iter().zip(&p).map(|(w, p)| w * p[i]).sum();
            for ((next, w), p) in next.iter_mut().zip(&w).zip(&p) {
                *next += w * p[i] / mix;
            }
        }
        next.iter_mut().for_each(|v| *v /= labels.len() as f64);
        let change: f64 = next.iter().zip(&w).map(|(a, b)| (a - b).abs()).sum();
        w = next;
        if change < 1e-9 {
            break;
        }
    }
    w
}

/// Regression weights inversely proportional to each model's cross-validated mean squared error.
fn regression_weights(runs: &[Run], y: &[f64]) -> Vec<f64> {
    let inv: Vec<f64> = runs
        .iter()
        .map(|r| {
            let mse = r
                .out
                .iter()
                .zip(y)
                .map(|(p, t)| (p - t).powi(2))
                .sum::<f64>()
                / y.len() as f64;
            1.0 / mse.max(1e-12)
        })
        .collect();
    let total: f64 = inv.iter().sum();
    inv.iter().map(|v| v / total).collect()
}

/// Trains the suite on `table` and returns every row's out-of-sample ensemble prediction, the
/// featurized table and the summary.
///
/// Fallbacks: with fewer rows than folds, there are as many folds as rows; a class with fewer rows
/// than folds has its rows in distinct folds (each predicted by a model that saw the class's other
/// rows, none for a single row, so its probability is pessimistic) and is warned about; a model
/// that cannot run on these features (trees over more than [`GBT_MAX_COLUMNS`] columns) is skipped
/// with a warning.
///
/// # Errors
/// [`QualityError::InvalidColumn`] for a missing or one-class label, or a value that does not fit
/// its column's role (naming the row and column); [`QualityError::Empty`] if no column yields a
/// feature or the table has fewer than two rows; [`QualityError::InvalidOption`] for fewer than two
/// folds or no model.
pub fn train(table: &Table, opts: &AutoMlOptions) -> Result<AutoMlResult, QualityError> {
    if opts.folds < 2 {
        return Err(QualityError::InvalidOption {
            option: "folds",
            reason: format!("{} folds; at least 2 are needed", opts.folds),
        });
    }
    if opts.models.is_empty() {
        return Err(QualityError::InvalidOption {
            option: "models",
            reason: "no model to train".into(),
        });
    }
    let n = table.n();
    if n < 2 {
        return Err(QualityError::Empty);
    }
    let label = read_label(table, opts)?;
    let columns = infer_schema(table, &opts.label, &opts.id_columns, &opts.roles)?;
    let design = featurize(table, &columns)?;
    let folds = opts.folds.min(n);
    let fold_of_row = folds_of(&label, folds, opts.seed);
    let mut warnings = Vec::new();
    if folds < opts.folds {
        warnings.push(format!("{n} rows: {folds} folds instead of {}", opts.folds));
    }
    let target = match &label {
        Label::Classes(classes, labels) => {
            let mut counts = vec![0usize; classes.len()];
            labels.iter().for_each(|&l| counts[l] += 1);
            for (class, &rows) in counts.iter().enumerate() {
                if rows < folds {
                    let warning = CvWarning::SmallClass { class, rows, folds };
                    warnings.push(format!("{warning} ({:?})", classes[class]));
                }
            }
            Target::Classes(labels, classes.len())
        }
        Label::Values(y) => Target::Values(y),
    };
    let task = match target {
        Target::Classes(..) => Task::Classification,
        Target::Values(_) => Task::Regression,
    };
    let results: Vec<Result<Option<Run>, QualityError>> = opts
        .models
        .par_iter()
        .map(|&kind| run_model(kind, &design, &target, &fold_of_row, opts, folds))
        .collect();
    let mut runs = Vec::new();
    for result in results {
        match result {
            Ok(Some(run)) => runs.push(run),
            Ok(None) => {}
            Err(QualityError::InvalidOption { reason, .. }) => warnings.push(reason),
            Err(other) => return Err(other),
        }
    }
    if runs.is_empty() {
        return Err(QualityError::Empty);
    }
    runs.iter_mut()
        .for_each(|r| warnings.append(&mut r.warnings));
    let seconds: f64 = runs.iter().map(|r| r.seconds).fold(0.0, f64::max);
    let (classes, labels, targets) = match label {
        Label::Classes(c, l) => (c, l, Vec::new()),
        Label::Values(y) => (Vec::new(), Vec::new(), y),
    };
    let (weights, mixed) = match task {
        Task::Classification => {
            let w = classification_weights(&runs, &labels, classes.len());
            (w, classes.len())
        }
        Task::Regression => (regression_weights(&runs, &targets), 1),
    };
    let mut ensemble = vec![0.0; n * mixed];
    for (run, w) in runs.iter().zip(&weights) {
        ensemble
            .iter_mut()
            .zip(&run.out)
            .for_each(|(e, p)| *e += w * p);
    }
    let metrics_of = |name: &str, out: &[f64], weight: f64, seconds: f64| match task {
        Task::Classification => {
            metrics::classification(name, out, &labels, &classes, weight, seconds)
        }
        Task::Regression => metrics::regression(name, out, &targets, weight, seconds),
    };
    let models = runs
        .iter()
        .zip(&weights)
        .map(|(r, &w)| metrics_of(r.kind.name(task), &r.out, w, r.seconds))
        .collect();
    let summary = ModelSummary {
        task,
        rows: n,
        folds,
        seed: opts.seed,
        columns,
        dense_features: design.dense_names().len(),
        sparse_features: design.sparse().map_or(0, |s| s.cols),
        models,
        ensemble: metrics_of("ensemble", &ensemble, 1.0, seconds),
        warnings,
    };
    let (pred_probs, predictions) = match task {
        Task::Classification => {
            // Renormalize: the mixture of normalized rows sums to 1 up to rounding.
            for row in ensemble.chunks_exact_mut(mixed) {
                let s: f64 = row.iter().sum();
                row.iter_mut().for_each(|v| *v /= s);
            }
            (Some(PredProbs::new(ensemble, mixed)?), Vec::new())
        }
        Task::Regression => (None, ensemble),
    };
    Ok(AutoMlResult {
        classes,
        labels,
        pred_probs,
        targets,
        predictions,
        fold_of_row,
        design,
        summary,
    })
}
