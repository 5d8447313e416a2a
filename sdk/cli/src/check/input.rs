//! Reading the data CSV and the pred_probs CSV, with errors that name the file, row and column.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, bail};
use trustmesh_quality::automl::{Column, Table};
use trustmesh_quality::{Features, PredProbs, QualityError};

/// The data as the engine needs it.
pub(super) struct Data {
    /// The id column's values, if one was named.
    pub(super) ids: Option<(String, Vec<String>)>,
    /// Class names in sorted order (numeric order when every label is a number); class `c` is
    /// `classes[c]`.
    pub(super) classes: Vec<String>,
    /// Given labels as class indices.
    pub(super) labels: Vec<usize>,
    /// The numeric columns other than the label and id (empty cells are missing values), if any.
    pub(super) features: Option<Features>,
    /// Every column as text, for the models trained when no pred_probs are given.
    pub(super) table: Table,
}

/// Opens a CSV reader on `path`.
fn reader(path: &Path, has_headers: bool) -> anyhow::Result<csv::Reader<std::fs::File>> {
    csv::ReaderBuilder::new()
        .has_headers(has_headers)
        .from_path(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// Describes a CSV error, naming the line for ragged rows.
fn csv_error(path: &Path, err: &csv::Error) -> String {
    if let csv::ErrorKind::UnequalLengths {
        pos,
        expected_len,
        len,
    } = err.kind()
    {
        format!(
            "{}: line {} has {len} fields, expected {expected_len} like the first row",
            path.display(),
            pos.as_ref().map_or(0, csv::Position::line)
        )
    } else {
        format!("{}: {err}", path.display())
    }
}

/// Reads the data file: the label column, the optional id column, and every numeric column as a
/// feature. A column is numeric when its first non-empty value parses as a number; a later value that
/// does not is an error naming its line and column. Other columns (text, categories, dates) are no
/// features of the checks; every column is also kept as text ([`Data::table`]) for the models.
pub(super) fn read_data(path: &Path, label: &str, id_column: Option<&str>) -> anyhow::Result<Data> {
    let mut reader = reader(path, true)?;
    let header = reader
        .headers()
        .map_err(|e| anyhow::anyhow!(csv_error(path, &e)))?
        .clone();
    if header.is_empty() {
        bail!(
            "{} is empty: expected a header row and at least one data row",
            path.display()
        );
    }
    let position = |name: &str, what: &str| {
        header.iter().position(|h| h == name).with_context(|| {
            let columns: Vec<&str> = header.iter().collect();
            format!(
                "{}: no {what} column {name:?} (columns: {})",
                path.display(),
                columns.join(", ")
            )
        })
    };
    let label_col = position(label, "label")?;
    let id_col = id_column.map(|name| position(name, "id")).transpose()?;

    let mut raw_labels = Vec::new();
    let mut ids = Vec::new();
    // Per column: None = undecided, Some(true) = numeric feature, Some(false) = text, ignored.
    let mut numeric: Vec<Option<bool>> = vec![None; header.len()];
    numeric[label_col] = Some(false);
    if let Some(c) = id_col {
        numeric[c] = Some(false);
    }
    let mut cells: Vec<Vec<f32>> = vec![Vec::new(); header.len()];
    let mut text: Vec<Vec<String>> = vec![Vec::new(); header.len()];
    for record in reader.records() {
        let record = record.map_err(|e| anyhow::anyhow!(csv_error(path, &e)))?;
        let line = record.position().map_or(0, csv::Position::line);
        let value = record[label_col].trim();
        if value.is_empty() {
            bail!(
                "{}: line {line}, column {label:?}: the label is empty",
                path.display()
            );
        }
        raw_labels.push(value.to_owned());
        if let Some(c) = id_col {
            ids.push(record[c].to_owned());
        }
        for (c, cell) in record.iter().enumerate() {
            text[c].push(cell.to_owned());
            let cell = cell.trim();
            match (numeric[c], cell.is_empty()) {
                (Some(false), _) => {}
                (None, true) => cells[c].push(f32::NAN),
                (Some(true), true) => cells[c].push(f32::NAN),
                (None | Some(true), false) => match cell.parse::<f32>() {
                    Ok(v) => {
                        numeric[c] = Some(true);
                        cells[c].push(v);
                    }
                    Err(_) if numeric[c].is_none() => numeric[c] = Some(false),
                    Err(_) => bail!(
                        "{}: line {line}, column {:?}: {cell:?} is not a number (the column's earlier values are)",
                        path.display(),
                        &header[c]
                    ),
                },
            }
        }
    }
    if raw_labels.is_empty() {
        bail!("{} has a header but no data rows", path.display());
    }
    let (classes, labels) = encode_labels(&raw_labels);
    let feature_cols: Vec<usize> = (0..header.len())
        .filter(|&c| numeric[c] == Some(true))
        .collect();
    let features = if feature_cols.is_empty() {
        None
    } else {
        let n = raw_labels.len();
        let values = (0..n).flat_map(|i| feature_cols.iter().map(move |&c| (i, c)));
        let data: Vec<f32> = values.map(|(i, c)| cells[c][i]).collect();
        Some(
            Features::with_missing(data, feature_cols.len())
                .with_context(|| format!("{}", path.display()))?,
        )
    };
    let ids = id_col.map(|c| (header[c].to_owned(), ids));
    let table = Table::new(
        header
            .iter()
            .zip(text)
            .map(|(name, cells)| Column::new(name, cells))
            .collect(),
    )
    .with_context(|| format!("{}", path.display()))?;
    Ok(Data {
        ids,
        classes,
        labels,
        features,
        table,
    })
}

/// Sorted class names (numerically if every label is a number) and each row's class index.
fn encode_labels(raw: &[String]) -> (Vec<String>, Vec<usize>) {
    let distinct: BTreeSet<&str> = raw.iter().map(String::as_str).collect();
    let mut classes: Vec<String> = distinct.into_iter().map(str::to_owned).collect();
    let numbers: Option<Vec<f64>> = classes.iter().map(|c| c.parse::<f64>().ok()).collect();
    if let Some(numbers) = numbers {
        let mut order: Vec<usize> = (0..classes.len()).collect();
        order.sort_by(|&a, &b| numbers[a].total_cmp(&numbers[b]));
        classes = order.into_iter().map(|i| classes[i].clone()).collect();
    }
    let index: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let labels = raw.iter().map(|l| index[l.as_str()]).collect();
    (classes, labels)
}

/// Reads `n` rows of `k` probabilities (no header).
pub(super) fn read_pred_probs(path: &Path, n: usize, k: usize) -> anyhow::Result<PredProbs> {
    let mut values = Vec::with_capacity(n * k);
    let mut rows = 0;
    for record in reader(path, false)?.records() {
        let record = record.map_err(|e| anyhow::anyhow!(csv_error(path, &e)))?;
        let line = record.position().map_or(0, csv::Position::line);
        if record.len() != k {
            bail!(
                "{}: line {line} has {} columns, expected one per class ({k}: the data's label column has {k} classes)",
                path.display(),
                record.len()
            );
        }
        for (c, cell) in record.iter().enumerate() {
            let v: f64 = cell.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}: line {line}, column {}: {cell:?} is not a number",
                    path.display(),
                    c + 1
                )
            })?;
            values.push(v);
        }
        rows += 1;
    }
    if rows != n {
        bail!(
            "{} has {rows} rows, expected one per data row ({n})",
            path.display()
        );
    }
    PredProbs::new(values, k).map_err(|err| {
        // The file has no header: row i is on line i + 1.
        if let QualityError::InvalidValue { row, reason, .. } = &err {
            anyhow::anyhow!("{}: line {}: {reason}", path.display(), row + 1)
        } else {
            anyhow::anyhow!("{}: {err}", path.display())
        }
    })
}
