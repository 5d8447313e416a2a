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
#[derive(Debug, Clone)]
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

/// One model's out-of-sample predictions, every row.
struct Run {
    kind: ModelKind,
    /// `n × k` probabilities, or `n` values.
    out: Vec<f64>,
    seconds: f64,
    warnings: Vec<String>,
}

/// A planned cross-validation: the label, the featurized table, the seeded folds and the models
/// that can run on these features. [`train_fold`] trains one fold from it (on any process: a plan
/// is a function of the table and the options), [`combine`] ensembles every fold's predictions.
#[derive(Debug, Clone)]
pub struct FoldPlan {
    label: Label,
    columns: Vec<ColumnPlan>,
    design: Design,
    fold_of_row: Vec<usize>,
    folds: usize,
    models: Vec<ModelKind>,
    warnings: Vec<String>,
    opts: AutoMlOptions,
}

impl FoldPlan {
    /// Folds.
    #[must_use]
    pub fn folds(&self) -> usize {
        self.folds
    }

    /// Rows.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.fold_of_row.len()
    }

    /// The fold each row is held out in.
    #[must_use]
    pub fn fold_of_row(&self) -> &[usize] {
        &self.fold_of_row
    }

    /// The models each fold trains (those that can run on these features), in the options' order.
    #[must_use]
    pub fn models(&self) -> &[ModelKind] {
        &self.models
    }

    /// Predictions per row: the number of classes, or 1 (regression).
    #[must_use]
    pub fn width(&self) -> usize {
        match &self.label {
            Label::Classes(classes, _) => classes.len(),
            Label::Values(_) => 1,
        }
    }

    fn target(&self) -> Target<'_> {
        match &self.label {
            Label::Classes(classes, labels) => Target::Classes(labels, classes.len()),
            Label::Values(y) => Target::Values(y),
        }
    }
}

/// One model's predictions for one fold's held-out rows.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldModel {
    /// The model.
    pub kind: ModelKind,
    /// `rows × width` probabilities (classification) or `rows` values, in [`FoldOutput::rows`]
    /// order.
    pub values: Vec<f64>,
    /// Seconds it took.
    pub seconds: f64,
    /// Whether the model converged (logistic regression; always true otherwise).
    pub converged: bool,
}

/// What [`train_fold`] produced: every planned model's out-of-sample predictions for the fold's
/// held-out rows.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldOutput {
    /// The fold, 0-based.
    pub fold: usize,
    /// Its held-out rows, ascending.
    pub rows: Vec<usize>,
    /// One entry per model of [`FoldPlan::models`], in that order.
    pub models: Vec<FoldModel>,
}

/// The folds' (held-out rows, training rows).
fn split(fold_of_row: &[usize], fold: usize) -> (Vec<usize>, Vec<usize>) {
    (0..fold_of_row.len()).partition(|&r| fold_of_row[r] == fold)
}

/// Whether `kind` can run on `design`: `Err` with the reason to warn about when it cannot.
fn runnable(kind: ModelKind, design: &Design) -> Result<bool, String> {
    match kind {
        ModelKind::Linear => Ok(true),
        ModelKind::Knn => Ok(!design.dense_names().is_empty()),
        ModelKind::GradientBoostedTrees => {
            let d = design.dense_names().len();
            if d > GBT_MAX_COLUMNS {
                Err(format!(
                    "gradient-boosted trees skipped: {d} feature columns, more than {GBT_MAX_COLUMNS}"
                ))
            } else {
                Ok(d > 0)
            }
        }
    }
}

/// `kind`'s out-of-sample predictions for the held-out rows of each fold of `which`, with whether
/// the model converged there.
fn run_model(
    kind: ModelKind,
    plan: &FoldPlan,
    which: &[usize],
) -> Result<Vec<(Vec<f64>, bool)>, QualityError> {
    let design = &plan.design;
    let target = plan.target();
    let splits: Vec<(Vec<usize>, Vec<usize>)> =
        which.iter().map(|&f| split(&plan.fold_of_row, f)).collect();
    let opts = &plan.opts;
    Ok(match kind {
        ModelKind::Linear => match target {
            Target::Classes(labels, k) if design.sparse().is_none() => {
                let (dense, d) = design.dense_without_projection();
                let features = Features::new(dense, d)?;
                let logistic = LogisticOptions {
                    c: opts.c,
                    ..LogisticOptions::default()
                };
                splits
                    .par_iter()
                    .map(|(test, train)| {
                        let model = LogisticModel::fit(&features, labels, k, train, &logistic)?;
                        Ok((model.predict_proba(&features, test)?, model.converged()))
                    })
                    .collect::<Result<Vec<_>, QualityError>>()?
            }
            Target::Classes(labels, k) => {
                let x = linear::design_csr(design);
                splits
                    .par_iter()
                    .map(|(test, train)| {
                        let model = SparseLogistic::fit(&x, labels, k, train, opts.c, 1000);
                        (model.predict_proba(&x, test), model.converged)
                    })
                    .collect()
            }
            Target::Values(y) => {
                let x = linear::design_csr(design);
                splits
                    .par_iter()
                    .map(|(test, train)| (linear::ridge_fit_predict(&x, y, train, test, 1.0), true))
                    .collect()
            }
        },
        ModelKind::GradientBoostedTrees => {
            let features = design.dense_features().ok_or(QualityError::Empty)?;
            let binned = Binned::new(&features);
            splits
                .par_iter()
                .map(|(test, train)| {
                    (
                        gbt::fit_predict(&binned, &target, train, test, &opts.gbt),
                        true,
                    )
                })
                .collect()
        }
        ModelKind::Knn => {
            let features = design.dense_features().ok_or(QualityError::Empty)?;
            let rows: Vec<usize> = splits.iter().flat_map(|(test, _)| test.clone()).collect();
            let all = neighbors::predict(
                &features,
                &target,
                &plan.fold_of_row,
                plan.folds,
                opts.neighbors,
                &rows,
            )?;
            let width = plan.width();
            let mut at = 0;
            splits
                .iter()
                .map(|(test, _)| {
                    let part = all[at * width..(at + test.len()) * width].to_vec();
                    at += test.len();
                    (part, true)
                })
                .collect()
        }
    })
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

/// Reads the label, infers the columns' roles, featurizes `table` and draws the seeded folds: what
/// every fold of [`train_fold`] and [`combine`] share. Deterministic: the same table and options
/// give the same plan on any process.
///
/// Fallbacks and errors: as [`train`].
///
/// # Errors
/// As [`train`].
pub fn plan_folds(table: &Table, opts: &AutoMlOptions) -> Result<FoldPlan, QualityError> {
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
    if let Label::Classes(classes, labels) = &label {
        let mut counts = vec![0usize; classes.len()];
        labels.iter().for_each(|&l| counts[l] += 1);
        for (class, &rows) in counts.iter().enumerate() {
            if rows < folds {
                let warning = CvWarning::SmallClass { class, rows, folds };
                warnings.push(format!("{warning} ({:?})", classes[class]));
            }
        }
    }
    let mut models = Vec::new();
    for &kind in &opts.models {
        match runnable(kind, &design) {
            Ok(true) => models.push(kind),
            Ok(false) => {}
            Err(reason) => warnings.push(reason),
        }
    }
    if models.is_empty() {
        return Err(QualityError::Empty);
    }
    Ok(FoldPlan {
        label,
        columns,
        design,
        fold_of_row,
        folds,
        models,
        warnings,
        opts: opts.clone(),
    })
}

/// Trains every model of `plan` on the rows outside fold `fold` and predicts the fold's held-out
/// rows (models in parallel).
///
/// # Errors
/// [`QualityError::InvalidOption`] if `fold` is not a fold of the plan; a model's error.
pub fn train_fold(plan: &FoldPlan, fold: usize) -> Result<FoldOutput, QualityError> {
    if fold >= plan.folds {
        return Err(QualityError::InvalidOption {
            option: "fold",
            reason: format!("fold {fold} of {}", plan.folds),
        });
    }
    let models = plan
        .models
        .par_iter()
        .map(|&kind| {
            let start = Instant::now();
            let (values, converged) = run_model(kind, plan, &[fold])?
                .pop()
                .ok_or(QualityError::Empty)?;
            Ok(FoldModel {
                kind,
                values,
                seconds: start.elapsed().as_secs_f64(),
                converged,
            })
        })
        .collect::<Result<Vec<_>, QualityError>>()?;
    Ok(FoldOutput {
        fold,
        rows: split(&plan.fold_of_row, fold).0,
        models,
    })
}

/// Ensembles the folds' out-of-sample predictions (one [`FoldOutput`] per fold of `plan`, any
/// order) into [`train`]'s result: every model's predictions in row order, the weights minimizing
/// the cross-validated loss, the metrics and summary. A model's seconds are its slowest fold's.
///
/// # Errors
/// [`QualityError::InvalidOption`] if a fold is missing, repeated, or does not match the plan
/// (rows, models, value counts).
pub fn combine(plan: FoldPlan, mut outputs: Vec<FoldOutput>) -> Result<AutoMlResult, QualityError> {
    let mismatch = |reason: String| QualityError::InvalidOption {
        option: "folds",
        reason,
    };
    outputs.sort_by_key(|o| o.fold);
    if outputs.len() != plan.folds || outputs.iter().enumerate().any(|(f, o)| o.fold != f) {
        return Err(mismatch(format!(
            "{} fold outputs for {} folds, or a fold repeated",
            outputs.len(),
            plan.folds
        )));
    }
    let n = plan.rows();
    let width = plan.width();
    let mut runs: Vec<Run> = plan
        .models
        .iter()
        .map(|&kind| Run {
            kind,
            out: vec![0.0; n * width],
            seconds: 0.0,
            warnings: Vec::new(),
        })
        .collect();
    for output in &outputs {
        if output.rows != split(&plan.fold_of_row, output.fold).0
            || output.models.len() != runs.len()
        {
            return Err(mismatch(format!(
                "fold {} does not match the plan",
                output.fold
            )));
        }
        for (run, model) in runs.iter_mut().zip(&output.models) {
            if model.kind != run.kind || model.values.len() != output.rows.len() * width {
                return Err(mismatch(format!(
                    "fold {}'s predictions do not match the plan",
                    output.fold
                )));
            }
            for (&r, v) in output.rows.iter().zip(model.values.chunks_exact(width)) {
                run.out[r * width..(r + 1) * width].copy_from_slice(v);
            }
            run.seconds = run.seconds.max(model.seconds);
            if !model.converged {
                run.warnings.push(format!(
                    "logistic regression did not converge on fold {}",
                    output.fold
                ));
            }
        }
    }
    let FoldPlan {
        label,
        columns,
        design,
        fold_of_row,
        folds,
        mut warnings,
        opts,
        ..
    } = plan;
    runs.iter_mut()
        .for_each(|r| warnings.append(&mut r.warnings));
    let task = match label {
        Label::Classes(..) => Task::Classification,
        Label::Values(_) => Task::Regression,
    };
    let seconds: f64 = runs.iter().map(|r| r.seconds).fold(0.0, f64::max);
    let (classes, labels, targets) = match label {
        Label::Classes(c, l) => (c, l, Vec::new()),
        Label::Values(y) => (Vec::new(), Vec::new(), y),
    };
    let weights = match task {
        Task::Classification => classification_weights(&runs, &labels, classes.len()),
        Task::Regression => regression_weights(&runs, &targets),
    };
    let mut ensemble = vec![0.0; n * width];
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
            for row in ensemble.chunks_exact_mut(width) {
                let s: f64 = row.iter().sum();
                row.iter_mut().for_each(|v| *v /= s);
            }
            (Some(PredProbs::new(ensemble, width)?), Vec::new())
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

/// Trains the suite on `table` and returns every row's out-of-sample ensemble prediction, the
/// featurized table and the summary: [`plan_folds`], every model over every fold (models and folds
/// in parallel) and [`combine`].
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
    let plan = plan_folds(table, opts)?;
    let all: Vec<usize> = (0..plan.folds).collect();
    let per_model = plan
        .models
        .par_iter()
        .map(|&kind| {
            let start = Instant::now();
            let parts = run_model(kind, &plan, &all)?;
            Ok((kind, parts, start.elapsed().as_secs_f64()))
        })
        .collect::<Result<Vec<_>, QualityError>>()?;
    let mut outputs: Vec<FoldOutput> = all
        .iter()
        .map(|&fold| FoldOutput {
            fold,
            rows: split(&plan.fold_of_row, fold).0,
            models: Vec::with_capacity(plan.models.len()),
        })
        .collect();
    for (kind, parts, seconds) in per_model {
        for (output, (values, converged)) in outputs.iter_mut().zip(parts) {
            output.models.push(FoldModel {
                kind,
                values,
                seconds,
                converged,
            });
        }
    }
    combine(plan, outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::automl::Column;

    /// `n` rows of three classes: two noisy numbers that separate them, a colour, a note.
    fn table(n: usize) -> Table {
        let noise = |i: usize, k: usize| ((i * 7919 + k * 104_729) % 1000) as f64 / 1000.0;
        let cells = |f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>();
        Table::new(vec![
            Column::new("x", cells(&|i| format!("{}", (i % 3) as f64 + noise(i, 1)))),
            Column::new("y", cells(&|i| format!("{}", noise(i, 2) - (i % 3) as f64))),
            Column::new("colour", cells(&|i| ["red", "blue"][i % 2].to_owned())),
            Column::new("label", cells(&|i| format!("c{}", i % 3))),
        ])
        .unwrap()
    }

    #[test]
    fn folds_trained_one_by_one_in_any_order_ensemble_as_the_whole_run() {
        let table = table(120);
        let mut opts = AutoMlOptions::new("label");
        opts.seed = 7;
        let whole = train(&table, &opts).unwrap();

        let plan = plan_folds(&table, &opts).unwrap();
        assert_eq!((plan.folds(), plan.rows(), plan.width()), (5, 120, 3));
        assert_eq!(plan.models(), ModelKind::ALL);
        let mut outputs: Vec<FoldOutput> = (0..plan.folds())
            .rev()
            .map(|fold| train_fold(&plan, fold).unwrap())
            .collect();
        for output in &outputs {
            assert!(
                output
                    .rows
                    .iter()
                    .all(|&r| plan.fold_of_row()[r] == output.fold)
            );
        }
        let missing = combine(plan.clone(), outputs[1..].to_vec());
        assert!(
            matches!(missing, Err(QualityError::InvalidOption { .. })),
            "{missing:?}"
        );
        outputs.swap(0, 2);
        let spread = combine(plan, outputs).unwrap();
        assert_eq!(spread.pred_probs, whole.pred_probs);
        assert_eq!(spread.fold_of_row, whole.fold_of_row);
        let weights =
            |r: &AutoMlResult| -> Vec<f64> { r.summary.models.iter().map(|m| m.weight).collect() };
        assert_eq!(weights(&spread), weights(&whole));
        assert_eq!(spread.summary.warnings, whole.summary.warnings);
        assert!(train_fold(&plan_folds(&table, &opts).unwrap(), 5).is_err());
    }
}
