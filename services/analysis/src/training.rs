//! From a dataset's schema and columns to AutoML's table, the one training call, and what
//! trust-scoring's detectors need from it.
//!
//! Training is [`trustmesh_quality::automl::train`], the featurization and models of
//! `trustmesh check`: every column but the label gets a role (inferred from its values; a role given
//! at upload or in the request wins; the dataset's id column is never a feature), is featurized by
//! it, and the models are cross-validated on seeded stratified folds and ensembled by their
//! cross-validated log loss. Which models: see [`models_for`].
//!
//! The detectors' features (the stored "embeddings") are, as in `trustmesh check`, the columns the
//! models use as numbers, as given (NaN where missing, so the `null` check counts them); a dataset
//! without any gets the models' dense features (text projection included) instead.
//!
//! Labels are the label column's values as text, classes in AutoML's order (numeric when every
//! class is a number, else as strings). Row ids are the id column's values as text (empty where
//! missing), or the 0-based row index without an id column.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use trustmesh_proto::v1::column_data::Values;
use trustmesh_proto::v1::{
    self as api, AnalysisPreset, ColumnData, ColumnRole as ApiRole, ModelMetrics, Schema,
};
use trustmesh_quality::QualityError;
use trustmesh_quality::automl::{
    self, AutoMlOptions, AutoMlResult, ColumnRole, FoldOutput, FoldPlan, ModelKind, Table, Task,
};

use crate::jobs::JobSpec;

/// Up to this many rows an analysis trains the whole suite (logistic regression, gradient-boosted
/// trees and kNN, ensembled); above it, logistic regression alone.
// NOTE: the trees and kNN grow faster with the rows (and the trees with the classes) than the
// linear model. On 2 cores a debug-built mesh analysis (read, train, store) of 3,000 rows × 21
// features, 4 classes, takes 1.6 s, of 20,000 rows 3.5 s; the suite on 100,000 × 20, 10 classes,
// takes about a minute, logistic regression alone 2–4 s (README, Performance).
pub(crate) const FULL_SUITE_MAX_ROWS: usize = 20_000;

/// Why a job cannot go on: a stable code and a message that never quotes the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobFailure {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl JobFailure {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The columns a job reads (every column of the dataset) and how the models see them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Every column, in schema order (the label and id columns among them).
    pub(crate) columns: Vec<String>,
    pub(crate) label: String,
    /// The dataset's id column, if it has one; rows are otherwise named by their index.
    pub(crate) id: Option<String>,
    /// Roles given at upload or in the request (the request's win).
    roles: BTreeMap<String, ColumnRole>,
    /// Cross-validation folds and their seed.
    folds: u32,
    seed: u64,
    preset: AnalysisPreset,
}

/// AutoML's role for a role of the API; `None` leaves the column's role to inference.
fn role_of(role: ApiRole) -> Option<ColumnRole> {
    match role {
        ApiRole::Unspecified => None,
        ApiRole::Numeric => Some(ColumnRole::Numeric),
        ApiRole::Categorical => Some(ColumnRole::Categorical),
        ApiRole::Text => Some(ColumnRole::Text),
        ApiRole::Image => Some(ColumnRole::Image),
        ApiRole::Datetime => Some(ColumnRole::Datetime),
        ApiRole::Id => Some(ColumnRole::Id),
        ApiRole::Embedding => Some(ColumnRole::Embedding),
        // Another label, or given probabilities, must not be learned from: the models would just
        // copy them.
        ApiRole::Label | ApiRole::PredProbs | ApiRole::Ignored => Some(ColumnRole::Ignored),
    }
}

/// Checks the label column against the schema and collects the roles given for the columns.
pub(crate) fn plan(schema: &Schema, spec: &JobSpec) -> Result<Plan, JobFailure> {
    if !schema.columns.iter().any(|c| c.name == spec.label_column) {
        return Err(JobFailure::new(
            "LABEL_COLUMN_NOT_FOUND",
            "the label column is not a column of the dataset",
        ));
    }
    let given = schema
        .columns
        .iter()
        .filter(|c| c.role_overridden)
        .map(|c| (c.name.clone(), c.role()))
        .chain(
            spec.column_overrides
                .iter()
                .map(|o| (o.column.clone(), o.role())),
        );
    let mut roles = BTreeMap::new();
    for (column, role) in given {
        if let Some(role) = role_of(role) {
            roles.insert(column, role);
        }
    }
    let id = Some(schema.id_column.clone())
        .filter(|id| !id.is_empty() && schema.columns.iter().any(|c| c.name == *id));
    Ok(Plan {
        columns: schema.columns.iter().map(|c| c.name.clone()).collect(),
        label: spec.label_column.clone(),
        id,
        roles,
        folds: spec.cv_folds,
        seed: spec.seed,
        preset: AnalysisPreset::try_from(spec.preset).unwrap_or_default(),
    })
}

/// The models an analysis trains: the whole suite, unless the dataset has more than
/// [`FULL_SUITE_MAX_ROWS`] rows or the FAST preset asks for lighter models (then logistic
/// regression alone).
pub(crate) fn models_for(rows: usize, preset: AnalysisPreset) -> Vec<ModelKind> {
    if rows > FULL_SUITE_MAX_ROWS || preset == AnalysisPreset::Fast {
        vec![ModelKind::Linear]
    } else {
        ModelKind::ALL.to_vec()
    }
}

/// One job's input to the models.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    plan: Plan,
    /// Every column as AutoML's text (or image) cells.
    table: Table,
    /// The numeric (INTEGER, FLOAT) columns as given, NaN where missing: the detectors' features
    /// when the models use them as numbers.
    numbers: Vec<(String, Vec<f32>)>,
    /// One id per row: the id column's value as text, or the row index.
    pub(crate) row_ids: Vec<String>,
}

fn present(column: &ColumnData, row: usize) -> bool {
    column.valid.get(row) != Some(&false)
}

fn number_at(column: &ColumnData, row: usize) -> Option<f64> {
    if !present(column, row) {
        return None;
    }
    match &column.values {
        Some(Values::Floats(v)) => v.values.get(row).copied(),
        Some(Values::Integers(v)) => v.values.get(row).map(|x| *x as f64),
        Some(
            Values::Strings(_)
            | Values::Booleans(_)
            | Values::DatetimesMicros(_)
            | Values::Images(_)
            | Values::FloatLists(_)
            | Values::StringLists(_),
        )
        | None => None,
    }
}

/// Row `row`'s value as AutoML's text cell (empty when missing): numbers and booleans as written,
/// datetimes in RFC 3339, float lists as `[a, b, ...]`, string lists joined by `, `.
fn text_at(column: &ColumnData, row: usize) -> String {
    if !present(column, row) {
        return String::new();
    }
    match &column.values {
        Some(Values::Strings(v)) => v.values.get(row).cloned(),
        Some(Values::Integers(v)) => v.values.get(row).map(ToString::to_string),
        Some(Values::Floats(v)) => v
            .values
            .get(row)
            .filter(|x| x.is_finite())
            .map(ToString::to_string),
        Some(Values::Booleans(v)) => v.values.get(row).map(ToString::to_string),
        Some(Values::DatetimesMicros(v)) => v.values.get(row).and_then(|micros| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(*micros) * 1000)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
        }),
        Some(Values::FloatLists(v)) => {
            let width = usize::try_from(v.list_length).unwrap_or_default();
            v.values.get(row * width..(row + 1) * width).map(|list| {
                let items: Vec<String> = list.iter().map(ToString::to_string).collect();
                format!("[{}]", items.join(", "))
            })
        }
        Some(Values::StringLists(v)) => v.values.get(row).map(|list| list.values.join(", ")),
        Some(Values::Images(_)) | None => None,
    }
    .unwrap_or_default()
}

/// AutoML's column of `column`'s `rows` values: encoded images as binary cells, the rest as text.
fn table_column(column: &ColumnData, rows: usize) -> automl::Column {
    match &column.values {
        Some(Values::Images(images)) => automl::Column::binary(
            &column.name,
            (0..rows)
                .map(|row| {
                    images
                        .values
                        .get(row)
                        .filter(|_| present(column, row))
                        .cloned()
                        .unwrap_or_default()
                })
                .collect(),
        ),
        _ => automl::Column::new(
            &column.name,
            (0..rows).map(|row| text_at(column, row)).collect(),
        ),
    }
}

/// Builds the models' table from `columns` (in [`Plan::columns`] order, `rows` values each).
pub(crate) fn prepare(
    plan: Plan,
    columns: &[ColumnData],
    rows: usize,
) -> Result<Prepared, JobFailure> {
    let changed = || {
        JobFailure::new(
            "DATASET_CHANGED",
            "the dataset's columns do not match its schema",
        )
    };
    if columns.len() != plan.columns.len()
        || columns.iter().zip(&plan.columns).any(|(c, n)| c.name != *n)
    {
        return Err(changed());
    }
    if rows == 0 {
        return Err(JobFailure::new("TOO_FEW_ROWS", "the dataset has no rows"));
    }
    let numbers = columns
        .iter()
        .filter(|c| matches!(c.values, Some(Values::Floats(_) | Values::Integers(_))))
        .map(|c| {
            let values = (0..rows)
                .map(|row| number_at(c, row).map_or(f32::NAN, |v| v as f32))
                .collect();
            (c.name.clone(), values)
        })
        .collect();
    let table = Table::new(columns.iter().map(|c| table_column(c, rows)).collect())
        .map_err(|_| changed())?;
    let row_ids = match plan.id.as_deref().and_then(|id| table.column(id)) {
        Some(ids) => (0..rows)
            .map(|row| ids.get(row).unwrap_or_default().to_owned())
            .collect(),
        None => (0..rows).map(|row| row.to_string()).collect(),
    };
    Ok(Prepared {
        plan,
        table,
        numbers,
        row_ids,
    })
}

/// What training produced, for the stored outputs.
#[derive(Debug, Clone)]
pub(crate) struct Trained {
    /// Class names by class index.
    pub(crate) class_names: Vec<String>,
    /// Given labels as class indices.
    pub(crate) labels: Vec<i32>,
    /// The ensemble's out-of-sample probabilities, row-major.
    pub(crate) pred_probs: Vec<f32>,
    /// The detectors' features: `embedding_dim` per row, NaN where missing.
    pub(crate) embedding_dim: u32,
    pub(crate) embeddings: Vec<f32>,
    /// The ensemble's quality.
    pub(crate) metrics: ModelMetrics,
    /// Every model's quality and weight.
    pub(crate) summary: api::ModelSummary,
}

/// Why AutoML refused the data, without quoting it (its messages name columns and values).
fn failure(error: QualityError, prepared: &Prepared) -> JobFailure {
    match error {
        QualityError::InvalidColumn { column, row, .. } if column == prepared.plan.label => {
            match row {
                Some(row) => JobFailure::new(
                    "LABEL_MISSING",
                    format!("row {row} has no label; every row needs one"),
                ),
                None => JobFailure::new(
                    "TOO_FEW_CLASSES",
                    "the label column needs at least two distinct values",
                ),
            }
        }
        QualityError::InvalidColumn { column, row, .. } => {
            let index = prepared
                .plan
                .columns
                .iter()
                .position(|c| *c == column)
                .unwrap_or_default();
            let at = row.map(|r| format!(", row {r}")).unwrap_or_default();
            JobFailure::new(
                "INVALID_COLUMN_VALUE",
                format!(
                    "column {index} (0-based){at}: a value does not fit the column's role; fix it, \
                     or override the column's role (categorical or text) to use its values as strings"
                ),
            )
        }
        QualityError::Empty => JobFailure::new(
            "NO_FEATURES",
            "no column besides the label and id columns can be a feature",
        ),
        other @ (QualityError::LengthMismatch { .. }
        | QualityError::InvalidValue { .. }
        | QualityError::TooFewClasses(_)
        | QualityError::InvalidOption { .. }) => {
            tracing::warn!(error = %other, "Cross-validated training failed.");
            JobFailure::new(
                "TRAINING_FAILED",
                "the models could not be trained on this data",
            )
        }
    }
}

fn evaluation(m: &automl::ModelMetrics) -> api::ModelEvaluation {
    api::ModelEvaluation {
        model: m.model.clone(),
        weight: m.weight,
        seconds: m.seconds,
        accuracy: m.accuracy,
        log_loss: m.log_loss,
        per_class: m
            .per_class
            .iter()
            .map(|c| api::ClassMetrics {
                class_name: c.class.clone(),
                support: c.support as u64,
                precision: c.precision,
                recall: c.recall,
                f1: c.f1,
            })
            .collect(),
    }
}

/// The API's model summary of AutoML's.
fn summary_of(s: &automl::ModelSummary) -> api::ModelSummary {
    api::ModelSummary {
        cv_folds: u32::try_from(s.folds).unwrap_or(u32::MAX),
        seed: s.seed,
        row_count: s.rows as u64,
        columns: s
            .columns
            .iter()
            .map(|c| api::ModelColumn {
                column: c.name.clone(),
                role: c.role.name().to_owned(),
                reason: c.reason.clone(),
            })
            .collect(),
        dense_features: u32::try_from(s.dense_features).unwrap_or(u32::MAX),
        sparse_features: u32::try_from(s.sparse_features).unwrap_or(u32::MAX),
        models: s.models.iter().map(evaluation).collect(),
        ensemble: Some(evaluation(&s.ensemble)),
        warnings: s.warnings.clone(),
    }
}

/// The ensemble's quality in the report's headline terms.
fn metrics_of(s: &automl::ModelSummary) -> ModelMetrics {
    let family = match s.models.as_slice() {
        [one] => one.model.replace('_', "-"),
        _ => "ensemble".to_owned(),
    };
    let per_class = &s.ensemble.per_class;
    ModelMetrics {
        model_family: family,
        cv_folds: u32::try_from(s.folds).unwrap_or(u32::MAX),
        accuracy: s.ensemble.accuracy,
        macro_f1: Some(per_class.iter().map(|c| c.f1).sum::<f64>() / per_class.len().max(1) as f64),
        log_loss: s.ensemble.log_loss,
        rmse: None,
        r2: None,
    }
}

/// AutoML's options for `prepared`: the folds asked for (refused above the rows), the seed, roles
/// and models of [`models_for`].
fn options(prepared: &Prepared) -> Result<AutoMlOptions, JobFailure> {
    let plan = &prepared.plan;
    let rows = prepared.table.n();
    let folds = usize::try_from(plan.folds).unwrap_or(usize::MAX);
    // NOTE: AutoML would lower the folds to the rows; the API promises the folds asked for.
    if rows < folds {
        return Err(JobFailure::new(
            "TOO_FEW_ROWS",
            format!(
                "the dataset has fewer rows than the {} cross-validation folds",
                plan.folds
            ),
        ));
    }
    let mut options = AutoMlOptions::new(&plan.label);
    options.task = Some(Task::Classification);
    options.id_columns = plan.id.iter().cloned().collect();
    options.roles.clone_from(&plan.roles);
    options.folds = folds;
    options.seed = plan.seed;
    options.models = models_for(rows, plan.preset);
    Ok(options)
}

/// Out-of-sample predicted probabilities by K-fold cross-validation of AutoML's models, with their
/// summary and the detectors' features, every fold in this process.
pub(crate) fn train(prepared: &Prepared) -> Result<Trained, JobFailure> {
    let options = options(prepared)?;
    let result = automl::train(&prepared.table, &options).map_err(|e| failure(e, prepared))?;
    finish(prepared, &result)
}

/// The cross-validation of `prepared` planned (featurized, folds drawn) for training fold by fold,
/// on any replica: the same dataset and spec give the same plan.
pub(crate) fn plan_folds(prepared: &Prepared) -> Result<FoldPlan, JobFailure> {
    let options = options(prepared)?;
    automl::plan_folds(&prepared.table, &options).map_err(|e| failure(e, prepared))
}

/// Trains fold `fold` of `plan` (every model on the other folds' rows, predicting this one's).
pub(crate) fn train_fold(
    prepared: &Prepared,
    plan: &FoldPlan,
    fold: usize,
) -> Result<FoldOutput, JobFailure> {
    automl::train_fold(plan, fold).map_err(|e| failure(e, prepared))
}

/// Ensembles every fold's predictions into the job's outputs.
pub(crate) fn combine(
    prepared: &Prepared,
    plan: FoldPlan,
    folds: Vec<FoldOutput>,
) -> Result<Trained, JobFailure> {
    let result = automl::combine(plan, folds).map_err(|e| failure(e, prepared))?;
    finish(prepared, &result)
}

/// What the stored outputs need from AutoML's result.
fn finish(prepared: &Prepared, result: &AutoMlResult) -> Result<Trained, JobFailure> {
    let rows = prepared.table.n();
    let Some(pred_probs) = &result.pred_probs else {
        return Err(JobFailure::new(
            "TRAINING_FAILED",
            "the models gave no class probabilities",
        ));
    };
    let numeric: Vec<&Vec<f32>> = prepared
        .numbers
        .iter()
        .filter(|(name, _)| {
            result
                .summary
                .columns
                .iter()
                .any(|c| c.name == *name && c.role == ColumnRole::Numeric)
        })
        .map(|(_, values)| values)
        .collect();
    let (embeddings, dim) = if numeric.is_empty() {
        result
            .design
            .dense_features()
            .map_or_else(|| (Vec::new(), 0), |f| (f.as_slice().to_vec(), f.d()))
    } else {
        let values = (0..rows)
            .flat_map(|row| numeric.iter().map(move |column| column[row]))
            .collect();
        (values, numeric.len())
    };
    Ok(Trained {
        labels: result
            .labels
            .iter()
            .map(|l| i32::try_from(*l).unwrap_or(-1))
            .collect(),
        pred_probs: pred_probs.as_slice().iter().map(|p| *p as f32).collect(),
        embedding_dim: u32::try_from(dim).unwrap_or_default(),
        embeddings,
        metrics: metrics_of(&result.summary),
        summary: summary_of(&result.summary),
        class_names: result.classes.clone(),
    })
}

#[cfg(test)]
mod tests {
    use trustmesh_proto::v1::{
        BoolValues, Column, ColumnOverride, ColumnType, DoubleValues, Int64Values, StringValues,
    };

    use super::*;

    fn column(name: &str, kind: ColumnType, role: ApiRole) -> Column {
        Column {
            name: name.to_owned(),
            r#type: kind.into(),
            role: role.into(),
            ..Column::default()
        }
    }

    fn schema() -> Schema {
        Schema {
            columns: vec![
                column("row_id", ColumnType::Integer, ApiRole::Id),
                column("f0", ColumnType::Float, ApiRole::Numeric),
                column("flag", ColumnType::Boolean, ApiRole::Categorical),
                column("label", ColumnType::String, ApiRole::Categorical),
            ],
            id_column: "row_id".to_owned(),
        }
    }

    fn spec(label: &str) -> JobSpec {
        JobSpec {
            label_column: label.to_owned(),
            cv_folds: 3,
            ..JobSpec::default()
        }
    }

    /// `n` rows: `f0` separates the classes (one value missing), `flag` is noise, ids from 10.
    fn columns(n: usize) -> Vec<ColumnData> {
        let label = |i: usize| if i.is_multiple_of(2) { "a" } else { "b" };
        vec![
            ColumnData {
                name: "row_id".to_owned(),
                valid: (0..n).map(|i| i != 2).collect(),
                values: Some(Values::Integers(Int64Values {
                    values: (0..n).map(|i| i as i64 + 10).collect(),
                })),
            },
            ColumnData {
                name: "f0".to_owned(),
                valid: (0..n).map(|i| i != 1).collect(),
                values: Some(Values::Floats(DoubleValues {
                    values: (0..n)
                        .map(|i| (i % 2) as f64 * 4.0 + (i % 5) as f64 * 0.1)
                        .collect(),
                })),
            },
            ColumnData {
                name: "flag".to_owned(),
                valid: Vec::new(),
                values: Some(Values::Booleans(BoolValues {
                    values: (0..n).map(|i| i.is_multiple_of(3)).collect(),
                })),
            },
            ColumnData {
                name: "label".to_owned(),
                valid: Vec::new(),
                values: Some(Values::Strings(StringValues {
                    values: (0..n).map(|i| label(i).to_owned()).collect(),
                })),
            },
        ]
    }

    #[test]
    fn plans_every_column_with_the_given_roles() {
        let mut job = spec("label");
        job.column_overrides = vec![ColumnOverride {
            column: "flag".to_owned(),
            role: ApiRole::Ignored.into(),
            ..ColumnOverride::default()
        }];
        let plan = plan(&schema(), &job).unwrap();
        assert_eq!(plan.columns, ["row_id", "f0", "flag", "label"]);
        assert_eq!(plan.id.as_deref(), Some("row_id"));
        assert_eq!(plan.roles.get("flag"), Some(&ColumnRole::Ignored));
        assert_eq!(plan.roles.len(), 1, "inferred roles are AutoML's to infer");
        let missing = super::plan(&schema(), &spec("nope")).unwrap_err();
        assert_eq!(missing.code, "LABEL_COLUMN_NOT_FOUND");
        assert!(!missing.message.contains("nope"), "never quotes the data");
    }

    #[test]
    fn the_suite_runs_below_the_row_limit_and_logistic_regression_alone_above_or_when_fast() {
        let regular = AnalysisPreset::Unspecified;
        assert_eq!(models_for(FULL_SUITE_MAX_ROWS, regular), ModelKind::ALL);
        assert_eq!(
            models_for(FULL_SUITE_MAX_ROWS + 1, regular),
            [ModelKind::Linear]
        );
        assert_eq!(models_for(100, AnalysisPreset::Fast), [ModelKind::Linear]);
    }

    #[test]
    fn trains_the_suite_with_numeric_features_for_the_detectors_and_a_summary() {
        let n = 40;
        let plan = plan(&schema(), &spec("label")).unwrap();
        let prepared = prepare(plan.clone(), &columns(n), n).unwrap();
        assert_eq!(prepared.row_ids[..4], ["10", "11", "", "13"]);
        let trained = train(&prepared).unwrap();
        assert_eq!(trained.class_names, ["a", "b"]);
        assert_eq!(trained.labels[..3], [0, 1, 0]);
        assert_eq!(trained.pred_probs.len(), 2 * n);
        assert_eq!(trained.embedding_dim, 1, "f0 only: the flag is no number");
        assert!(trained.embeddings[1].is_nan(), "missing values stay NaN");
        assert_eq!(trained.metrics.model_family, "ensemble");
        assert_eq!(trained.metrics.cv_folds, 3);
        assert!(
            trained.metrics.accuracy.unwrap() > 0.9,
            "{:?}",
            trained.metrics
        );
        let summary = &trained.summary;
        let models: Vec<&str> = summary.models.iter().map(|m| m.model.as_str()).collect();
        assert_eq!(
            models,
            ["logistic_regression", "gradient_boosted_trees", "knn"]
        );
        let weights: f64 = summary.models.iter().map(|m| m.weight).sum();
        assert!((weights - 1.0).abs() < 1e-6, "{weights}");
        let ensemble = summary.ensemble.as_ref().unwrap();
        assert_eq!(ensemble.per_class.len(), 2);
        assert_eq!(ensemble.per_class[0].support, 20);
        let roles: Vec<(&str, &str)> = summary
            .columns
            .iter()
            .map(|c| (c.column.as_str(), c.role.as_str()))
            .collect();
        assert_eq!(
            roles,
            [("row_id", "id"), ("f0", "numeric"), ("flag", "boolean")]
        );
    }

    #[test]
    fn bad_data_fails_with_a_code_and_without_quoting_it() {
        let plan = plan(&schema(), &spec("label")).unwrap();
        let mut one_class = columns(40);
        one_class[3].values = Some(Values::Strings(StringValues {
            values: vec!["secret".to_owned(); 40],
        }));
        let prepared = prepare(plan.clone(), &one_class, 40).unwrap();
        let failure = train(&prepared).unwrap_err();
        assert_eq!(failure.code, "TOO_FEW_CLASSES");
        let mut unlabeled = columns(40);
        unlabeled[3].valid = (0..40).map(|i| i != 7).collect();
        let failure = train(&prepare(plan.clone(), &unlabeled, 40).unwrap()).unwrap_err();
        assert_eq!(
            (failure.code, failure.message.as_str()),
            ("LABEL_MISSING", "row 7 has no label; every row needs one")
        );
        let too_few = train(&prepare(plan.clone(), &columns(2), 2).unwrap()).unwrap_err();
        assert_eq!(too_few.code, "TOO_FEW_ROWS");
        let changed = prepare(plan.clone(), &columns(40)[..3], 40).unwrap_err();
        assert_eq!(changed.code, "DATASET_CHANGED");
        // Numbers in a string column, but one: the column and row are named by position.
        let mut garbage = columns(40);
        let mut numbers: Vec<String> = (0..40).map(|i| (i % 7).to_string()).collect();
        numbers[5] = "n/a?".to_owned();
        garbage[2].values = Some(Values::Strings(StringValues { values: numbers }));
        let failure = train(&prepare(plan, &garbage, 40).unwrap()).unwrap_err();
        assert_eq!(failure.code, "INVALID_COLUMN_VALUE");
        assert!(
            failure.message.starts_with("column 2 (0-based), row 5:"),
            "{failure:?}"
        );
        assert!(!failure.message.contains("n/a?") && !failure.message.contains("flag"));
    }
}
