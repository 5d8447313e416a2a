//! From a dataset's schema and columns to the quality engine's inputs, and the one training call.
//!
//! Features are the numeric columns (INTEGER, FLOAT) that are neither the label nor the id column
//! nor ignored; a missing value is NaN (the engine imputes it and counts it for the `null` check).
//! Labels are the label column's values as text, classes in sorted order. Row ids are the id
//! column's values as text (empty where missing), or the 0-based row index without an id column.

use std::collections::BTreeMap;

use trustmesh_proto::v1::column_data::Values;
use trustmesh_proto::v1::{ColumnData, ColumnRole, ColumnType, ModelMetrics, Schema};
use trustmesh_quality::model::{CvOptions, cross_val_pred_probs};
use trustmesh_quality::{Features, PredProbs};

use crate::jobs::JobSpec;

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

/// The columns a job reads: the features, then the label, then the id column (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) features: Vec<String>,
    pub(crate) label: String,
    /// The dataset's id column, if it has one; rows are otherwise named by their index.
    pub(crate) id: Option<String>,
}

impl Plan {
    /// Every column to read, features first (the id column last, unless it is the label).
    pub(crate) fn columns(&self) -> Vec<String> {
        let mut columns = self.features.clone();
        columns.push(self.label.clone());
        if let Some(id) = self.id.as_ref().filter(|id| **id != self.label) {
            columns.push(id.clone());
        }
        columns
    }
}

/// Chooses the feature columns and checks the label column against the schema.
pub(crate) fn plan(schema: &Schema, spec: &JobSpec) -> Result<Plan, JobFailure> {
    if !schema.columns.iter().any(|c| c.name == spec.label_column) {
        return Err(JobFailure::new(
            "LABEL_COLUMN_NOT_FOUND",
            "the label column is not a column of the dataset",
        ));
    }
    let role_of = |name: &str, inferred: i32| {
        spec.column_overrides
            .iter()
            .find(|o| o.column == name && o.role != 0)
            .map_or(inferred, |o| o.role)
    };
    let features: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| c.name != spec.label_column && c.name != schema.id_column)
        .filter(|c| matches!(c.r#type(), ColumnType::Integer | ColumnType::Float))
        .filter(|c| {
            let role = ColumnRole::try_from(role_of(&c.name, c.role)).unwrap_or_default();
            matches!(role, ColumnRole::Numeric | ColumnRole::Unspecified)
        })
        .map(|c| c.name.clone())
        .collect();
    if features.is_empty() {
        return Err(JobFailure::new(
            "NO_FEATURES",
            "the dataset has no numeric feature column besides the label and id columns",
        ));
    }
    let id = Some(schema.id_column.clone())
        .filter(|id| !id.is_empty() && schema.columns.iter().any(|c| c.name == *id));
    Ok(Plan {
        features,
        label: spec.label_column.clone(),
        id,
    })
}

/// The engine's inputs for one job.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// Row-major values, NaN where missing.
    pub(crate) raw: Vec<f32>,
    pub(crate) features: Features,
    pub(crate) labels: Vec<usize>,
    pub(crate) class_names: Vec<String>,
    /// One id per row: the id column's value as text, or the row index.
    pub(crate) row_ids: Vec<String>,
}

fn value_at(column: &ColumnData, row: usize) -> Option<f64> {
    if column.valid.get(row) == Some(&false) {
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

fn label_at(column: &ColumnData, row: usize) -> Option<String> {
    if column.valid.get(row) == Some(&false) {
        return None;
    }
    match &column.values {
        Some(Values::Strings(v)) => v.values.get(row).cloned(),
        Some(Values::Integers(v)) => v.values.get(row).map(ToString::to_string),
        Some(Values::Booleans(v)) => v.values.get(row).map(ToString::to_string),
        Some(
            Values::Floats(_)
            | Values::DatetimesMicros(_)
            | Values::Images(_)
            | Values::FloatLists(_)
            | Values::StringLists(_),
        )
        | None => None,
    }
}

fn id_at(column: &ColumnData, row: usize) -> String {
    if column.valid.get(row) == Some(&false) {
        return String::new();
    }
    let text = match &column.values {
        Some(Values::Strings(v)) => v.values.get(row).cloned(),
        Some(Values::Integers(v) | Values::DatetimesMicros(v)) => {
            v.values.get(row).map(ToString::to_string)
        }
        Some(Values::Floats(v)) => v.values.get(row).map(ToString::to_string),
        Some(Values::Booleans(v)) => v.values.get(row).map(ToString::to_string),
        Some(Values::Images(_) | Values::FloatLists(_) | Values::StringLists(_)) | None => None,
    };
    text.unwrap_or_default()
}

/// Builds features and labels from `columns` (in [`Plan::columns`] order, `rows` values each).
pub(crate) fn prepare(
    plan: &Plan,
    columns: &[ColumnData],
    rows: usize,
) -> Result<Prepared, JobFailure> {
    let d = plan.features.len();
    let id_column = match &plan.id {
        None => None,
        Some(id) if *id == plan.label => columns.get(d),
        Some(_) => columns.get(d + 1),
    };
    let expected = plan.columns().len();
    let (Some(label_column), true) = (columns.get(d), columns.len() == expected) else {
        return Err(JobFailure::new(
            "DATASET_CHANGED",
            "the dataset's columns do not match its schema",
        ));
    };
    let mut raw = Vec::with_capacity(rows * d);
    for row in 0..rows {
        raw.extend(
            columns[..d]
                .iter()
                .map(|c| value_at(c, row).map_or(f32::NAN, |v| v as f32)),
        );
    }
    let mut texts = Vec::with_capacity(rows);
    for row in 0..rows {
        let Some(text) = label_at(label_column, row) else {
            return Err(JobFailure::new(
                "LABEL_MISSING",
                format!(
                    "row {row} has no label; every row needs one (or the label column is not categorical)"
                ),
            ));
        };
        texts.push(text);
    }
    let mut classes: BTreeMap<String, usize> = texts.iter().map(|t| (t.clone(), 0)).collect();
    for (index, value) in classes.values_mut().enumerate() {
        *value = index;
    }
    let labels = texts.iter().map(|t| classes[t]).collect();
    let row_ids = (0..rows)
        .map(|row| id_column.map_or_else(|| row.to_string(), |c| id_at(c, row)))
        .collect();
    let class_names = classes.into_keys().collect();
    let features = Features::with_missing(raw.clone(), d).map_err(|_| {
        JobFailure::new(
            "INVALID_FEATURES",
            "a feature column holds an infinite value",
        )
    })?;
    Ok(Prepared {
        raw,
        features,
        labels,
        class_names,
        row_ids,
    })
}

/// Out-of-sample predicted probabilities by K-fold cross-validation, and the models' quality.
pub(crate) fn train(
    prepared: &Prepared,
    folds: u32,
    seed: u64,
) -> Result<(PredProbs, ModelMetrics), JobFailure> {
    let k = prepared.class_names.len();
    if k < 2 {
        return Err(JobFailure::new(
            "TOO_FEW_CLASSES",
            "the label column needs at least two distinct values",
        ));
    }
    let folds_usize = usize::try_from(folds).unwrap_or(usize::MAX);
    if prepared.labels.len() < folds_usize {
        return Err(JobFailure::new(
            "TOO_FEW_ROWS",
            format!("the dataset has fewer rows than the {folds} cross-validation folds"),
        ));
    }
    let options = CvOptions {
        folds: folds_usize,
        seed,
        ..CvOptions::default()
    };
    let result = cross_val_pred_probs(&prepared.features, &prepared.labels, k, &options).map_err(
        |error| {
            tracing::warn!(error = %error, "Cross-validated training failed.");
            JobFailure::new(
                "TRAINING_FAILED",
                "the models could not be trained on this data",
            )
        },
    )?;
    let metrics = ModelMetrics {
        model_family: "logistic-regression".to_owned(),
        cv_folds: folds,
        accuracy: Some(result.accuracy),
        macro_f1: Some(macro_f1(&result.pred_probs, &prepared.labels)),
        log_loss: Some(result.log_loss),
        rmse: None,
        r2: None,
    };
    Ok((result.pred_probs, metrics))
}

/// Macro-averaged F1 of the argmax predictions against the given labels.
fn macro_f1(pred_probs: &PredProbs, labels: &[usize]) -> f64 {
    let k = pred_probs.k();
    let (mut tp, mut predicted, mut actual) = (vec![0_u64; k], vec![0_u64; k], vec![0_u64; k]);
    for (row, &label) in labels.iter().enumerate() {
        let probs = pred_probs.row(row);
        let guess = (0..k)
            .max_by(|a, b| probs[*a].total_cmp(&probs[*b]))
            .unwrap_or_default();
        predicted[guess] += 1;
        actual[label] += 1;
        if guess == label {
            tp[label] += 1;
        }
    }
    let f1 = (0..k).map(|c| {
        let denominator = predicted[c] + actual[c];
        if denominator == 0 {
            0.0
        } else {
            2.0 * tp[c] as f64 / denominator as f64
        }
    });
    f1.sum::<f64>() / k as f64
}

#[cfg(test)]
mod tests {
    use trustmesh_proto::v1::{Column, DoubleValues, Int64Values, StringValues};

    use super::*;

    fn column(name: &str, kind: ColumnType, role: ColumnRole) -> Column {
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
                column("row_id", ColumnType::Integer, ColumnRole::Id),
                column("f0", ColumnType::Float, ColumnRole::Numeric),
                column("note", ColumnType::String, ColumnRole::Text),
                column("label", ColumnType::String, ColumnRole::Categorical),
            ],
            id_column: "row_id".to_owned(),
        }
    }

    fn spec(label: &str) -> JobSpec {
        JobSpec {
            label_column: label.to_owned(),
            ..JobSpec::default()
        }
    }

    #[test]
    fn plans_numeric_features_without_label_and_id() {
        let plan = plan(&schema(), &spec("label")).unwrap();
        assert_eq!(plan.columns(), ["f0", "label", "row_id"]);
        let missing = super::plan(&schema(), &spec("nope")).unwrap_err();
        assert_eq!(missing.code, "LABEL_COLUMN_NOT_FOUND");
        assert!(!missing.message.contains("nope"), "never quotes the data");
        assert_eq!(
            super::plan(&schema(), &spec("f0")).unwrap_err().code,
            "NO_FEATURES"
        );
    }

    #[test]
    fn prepares_nan_for_missing_values_and_sorted_classes() {
        let plan = plan(&schema(), &spec("label")).unwrap();
        let columns = [
            ColumnData {
                name: "f0".to_owned(),
                valid: vec![true, false, true],
                values: Some(Values::Floats(DoubleValues {
                    values: vec![1.0, 0.0, 3.0],
                })),
            },
            ColumnData {
                name: "label".to_owned(),
                valid: Vec::new(),
                values: Some(Values::Strings(StringValues {
                    values: vec!["b".into(), "a".into(), "b".into()],
                })),
            },
            ColumnData {
                name: "row_id".to_owned(),
                valid: vec![true, true, false],
                values: Some(Values::Integers(Int64Values {
                    values: vec![10, 11, 0],
                })),
            },
        ];
        let prepared = prepare(&plan, &columns, 3).unwrap();
        assert_eq!(prepared.row_ids, ["10", "11", ""]);
        let without_ids = prepare(&plan, &columns[..2], 3).unwrap_err();
        assert_eq!(without_ids.code, "DATASET_CHANGED");
        let mut no_id_schema = schema();
        no_id_schema.id_column.clear();
        let no_id_plan = super::plan(&no_id_schema, &spec("label")).unwrap();
        assert_eq!(no_id_plan.columns(), ["f0", "label"]);
        let by_index = prepare(&no_id_plan, &columns[..2], 3).unwrap();
        assert_eq!(
            by_index.row_ids,
            ["0", "1", "2"],
            "rows are named by their index"
        );
        assert_eq!(prepared.class_names, ["a", "b"]);
        assert_eq!(prepared.labels, [1, 0, 1]);
        assert!(prepared.raw[1].is_nan());
        assert_eq!(prepared.features.null_counts(), Some(&[0, 1, 0][..]));
        let too_few = train(&prepared, 5, 0).unwrap_err();
        assert_eq!(too_few.code, "TOO_FEW_ROWS");
    }
}
