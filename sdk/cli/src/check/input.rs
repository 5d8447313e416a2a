//! Reading the data (CSV, Parquet or JSONL) and the pred_probs CSV, with errors that name the file,
//! line (row, for Parquet) and column.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, bail};
use trustmesh_quality::automl::{Column, ReadError, Table, read_jsonl_lines, read_parquet};
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

/// The formats of a data file, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// `.parquet` / `.pq` (uncompressed or Snappy).
    Parquet,
    /// `.jsonl` / `.ndjson`: one JSON object per line.
    Jsonl,
    /// Anything else: CSV with a header row.
    Csv,
}

impl Format {
    /// The format of `path`, by its extension (case-insensitive).
    pub(super) fn of(path: &Path) -> Self {
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match extension.as_deref() {
            Some("parquet" | "pq") => Self::Parquet,
            Some("jsonl" | "ndjson") => Self::Jsonl,
            _ => Self::Csv,
        }
    }
}

/// Where each row of a table sits in its file, for errors to name it.
enum Origin {
    /// The 1-based line of each row (CSV, JSONL).
    Lines(Vec<usize>),
    /// Rows counted from 1 (Parquet has no lines).
    Rows,
}

impl Origin {
    fn at(&self, i: usize) -> String {
        match self {
            Self::Lines(lines) => format!("line {}", lines[i]),
            Self::Rows => format!("row {}", i + 1),
        }
    }
}

/// Reads the data file (CSV, Parquet or JSONL, by extension): the label column, the optional id
/// column, and every numeric column as a feature. A column is numeric when its first non-empty
/// value parses as a number; a later value that does not is an error naming its line (row, for
/// Parquet) and column. Other columns (text, categories, dates, images) are no features of the
/// checks; every column is also kept ([`Data::table`]) for the models.
pub(super) fn read_data(path: &Path, label: &str, id_column: Option<&str>) -> anyhow::Result<Data> {
    let (table, origin) = read_any(path)?;
    data_from_table(path, table, &origin, label, id_column)
}

/// Reads a CSV, Parquet or JSONL file (by extension) as a table.
///
/// # Errors
/// An unreadable or malformed file, named.
pub(super) fn read_table(path: &Path) -> anyhow::Result<Table> {
    read_any(path).map(|(table, _)| table)
}

/// Reads a CSV, Parquet or JSONL file (by extension) as a table, with where each row sits.
fn read_any(path: &Path) -> anyhow::Result<(Table, Origin)> {
    Ok(match Format::of(path) {
        Format::Csv => read_csv_table(path)?,
        Format::Parquet => (
            read_parquet(path).map_err(|e| read_error(path, &e))?,
            Origin::Rows,
        ),
        Format::Jsonl => {
            let (table, lines) = read_jsonl_lines(path).map_err(|e| read_error(path, &e))?;
            (table, Origin::Lines(lines))
        }
    })
}

/// A Parquet or JSONL reading error, naming the file.
fn read_error(path: &Path, err: &ReadError) -> anyhow::Error {
    if let ReadError::Table(QualityError::Empty) = err {
        anyhow::anyhow!("{} has no data rows", path.display())
    } else {
        anyhow::anyhow!("{}: {err}", path.display())
    }
}

/// Reads a CSV file with a header row as a table of text cells, with each row's line.
fn read_csv_table(path: &Path) -> anyhow::Result<(Table, Origin)> {
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
    let mut text: Vec<Vec<String>> = vec![Vec::new(); header.len()];
    let mut lines = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| anyhow::anyhow!(csv_error(path, &e)))?;
        lines.push(record.position().map_or(0, csv::Position::line) as usize);
        for (c, cell) in record.iter().enumerate() {
            text[c].push(cell.to_owned());
        }
    }
    if lines.is_empty() {
        bail!("{} has a header but no data rows", path.display());
    }
    let table = Table::new(
        header
            .iter()
            .zip(text)
            .map(|(name, cells)| Column::new(name, cells))
            .collect(),
    )
    .with_context(|| format!("{}", path.display()))?;
    Ok((table, Origin::Lines(lines)))
}

/// The label, ids and numeric features of `table`.
fn data_from_table(
    path: &Path,
    table: Table,
    origin: &Origin,
    label: &str,
    id_column: Option<&str>,
) -> anyhow::Result<Data> {
    let columns = table.columns();
    let position = |name: &str, what: &str| {
        columns
            .iter()
            .position(|c| c.name() == name)
            .with_context(|| {
                let names: Vec<&str> = columns.iter().map(Column::name).collect();
                format!(
                    "{}: no {what} column {name:?} (columns: {})",
                    path.display(),
                    names.join(", ")
                )
            })
    };
    let label_col = position(label, "label")?;
    let id_col = id_column.map(|name| position(name, "id")).transpose()?;
    if columns[label_col].is_binary() {
        bail!(
            "{}: the label column {label:?} holds binary values, not labels",
            path.display()
        );
    }
    let n = table.n();
    let mut raw_labels = Vec::with_capacity(n);
    for i in 0..n {
        let Some(value) = columns[label_col].get(i) else {
            bail!(
                "{}: {}, column {label:?}: the label is empty",
                path.display(),
                origin.at(i)
            );
        };
        raw_labels.push(value.to_owned());
    }
    let ids = id_col.map(|c| {
        let column = &columns[c];
        let values = (0..n).map(|i| column.get(i).unwrap_or("").to_owned());
        (column.name().to_owned(), values.collect::<Vec<_>>())
    });

    // Per column, its values when numeric (empty cells are missing values).
    let mut numeric: Vec<(usize, Vec<f32>)> = Vec::new();
    for (c, column) in columns.iter().enumerate() {
        if c == label_col || Some(c) == id_col || column.is_binary() {
            continue;
        }
        let mut values = Vec::with_capacity(n);
        let mut is_numeric = false;
        for i in 0..n {
            let Some(cell) = column.get(i) else {
                values.push(f32::NAN);
                continue;
            };
            match cell.parse::<f32>() {
                Ok(v) => {
                    is_numeric = true;
                    values.push(v);
                }
                Err(_) if !is_numeric => break,
                Err(_) => bail!(
                    "{}: {}, column {:?}: {cell:?} is not a number (the column's earlier values are)",
                    path.display(),
                    origin.at(i),
                    column.name()
                ),
            }
        }
        if is_numeric && values.len() == n {
            numeric.push((c, values));
        }
    }
    let (classes, labels) = encode_labels(&raw_labels);
    let features = if numeric.is_empty() {
        None
    } else {
        let data: Vec<f32> = (0..n)
            .flat_map(|i| numeric.iter().map(move |(_, values)| values[i]))
            .collect();
        Some(
            Features::with_missing(data, numeric.len())
                .with_context(|| format!("{}", path.display()))?,
        )
    };
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
