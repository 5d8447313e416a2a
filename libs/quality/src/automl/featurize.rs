//! From a table and its column plan to a design matrix: a dense block (numeric, boolean, datetime,
//! categorical, embedding and image columns, each standardized; constant results dropped) and a sparse block
//! (text TF-IDF), plus a dense random projection of the sparse block for the models that need dense
//! input (gradient-boosted trees, kNN).
//!
//! Featurization is unsupervised (it never looks at the label), so it is fitted on all rows: what a
//! fold's model learns from its held-out rows' features is their distribution, not their labels.

use std::collections::HashMap;

use super::image;
use super::parse;
use super::schema::{ColumnPlan, ColumnRole};
use super::table::{Column, Table};
use super::text::{self, SparseBlock};
use crate::{Features, QualityError};

/// Categorical columns with at most this many distinct values are one-hot encoded; above it,
/// values are hashed into this many buckets.
pub const ONE_HOT_MAX: usize = 32;
/// Dimensions of the dense projection of the sparse (text) block.
const PROJECTION_DIMS: usize = 64;

/// A compressed sparse row matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    /// Number of columns.
    pub cols: usize,
    /// Row `i`'s entries are `indptr[i]..indptr[i + 1]`.
    pub indptr: Vec<usize>,
    /// Column of each entry.
    pub indices: Vec<u32>,
    /// Value of each entry.
    pub values: Vec<f32>,
}

impl Csr {
    /// Row `i`'s columns and values.
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let span = self.indptr[i]..self.indptr[i + 1];
        (&self.indices[span.clone()], &self.values[span])
    }
}

/// The featurized table.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    n: usize,
    /// Row-major `n × names.len()`, standardized.
    dense: Vec<f32>,
    names: Vec<String>,
    /// The trailing dense columns that project the sparse block.
    projected: usize,
    sparse: Option<Csr>,
}

impl Design {
    /// Number of rows.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Names of the dense columns (`column`, `column=value`, `column.missing`, `column[3]`, ...).
    pub fn dense_names(&self) -> &[String] {
        &self.names
    }

    /// The sparse (text) block, if any column is text.
    pub fn sparse(&self) -> Option<&Csr> {
        self.sparse.as_ref()
    }

    /// Every dense column, the projection of the sparse block included: the input of the models
    /// that need dense rows. `None` when there is no column at all.
    pub fn dense_features(&self) -> Option<Features> {
        Features::new(self.dense.clone(), self.names.len()).ok()
    }

    /// The dense columns without the projection of the sparse block (which the sparse block itself
    /// replaces for a linear model), and their number.
    pub fn dense_without_projection(&self) -> (Vec<f32>, usize) {
        let d = self.names.len();
        let keep = d - self.projected;
        if self.projected == 0 {
            return (self.dense.clone(), d);
        }
        let data = self
            .dense
            .chunks_exact(d.max(1))
            .flat_map(|row| row[..keep].iter().copied())
            .collect();
        (data, keep)
    }
}

/// A dense column under construction: NaN marks a missing value.
struct DenseColumn {
    name: String,
    values: Vec<f32>,
}

/// Numbers with NaN for missing: median-imputed, plus a missing indicator if any is missing.
fn numeric(name: &str, mut values: Vec<f32>, out: &mut Vec<DenseColumn>) {
    let mut present: Vec<f32> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if present.is_empty() {
        return;
    }
    let mid = present.len() / 2;
    let median = *present.select_nth_unstable_by(mid, f32::total_cmp).1;
    let missing: Vec<f32> = values
        .iter()
        .map(|v| f32::from(u8::from(v.is_nan())))
        .collect();
    let any_missing = missing.iter().any(|&m| m > 0.0);
    values
        .iter_mut()
        .filter(|v| v.is_nan())
        .for_each(|v| *v = median);
    out.push(DenseColumn {
        name: name.to_owned(),
        values,
    });
    if any_missing {
        out.push(DenseColumn {
            name: format!("{name}.missing"),
            values: missing,
        });
    }
}

/// Parses every present value with `parse`, or names the first row that does not parse.
fn parsed<T>(
    column: &Column,
    kind: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<Option<T>>, QualityError> {
    (0..column.len())
        .map(|i| match column.get(i) {
            None => Ok(None),
            Some(v) => parse(v)
                .map(Some)
                .ok_or_else(|| QualityError::InvalidColumn {
                    column: column.name().to_owned(),
                    row: Some(i),
                    reason: format!("{v:?} is not {kind}"),
                }),
        })
        .collect()
}

fn categorical(column: &Column, out: &mut Vec<DenseColumn>) {
    let n = column.len();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, v) in column.present() {
        *counts.entry(v).or_insert(0) += 1;
    }
    let name = column.name();
    let mut slots: Vec<Vec<f32>>;
    let mut names: Vec<String>;
    if counts.len() <= ONE_HOT_MAX {
        let mut categories: Vec<&str> = counts.keys().copied().collect();
        categories.sort_unstable();
        names = categories.iter().map(|c| format!("{name}={c}")).collect();
        slots = vec![vec![0.0; n]; categories.len()];
        for (i, v) in column.present() {
            let slot = categories.binary_search(&v).unwrap_or_default();
            slots[slot][i] = 1.0;
        }
    } else {
        names = (0..ONE_HOT_MAX).map(|b| format!("{name}#{b}")).collect();
        slots = vec![vec![0.0; n]; ONE_HOT_MAX];
        for (i, v) in column.present() {
            let bucket = (text::fnv1a(0, v.as_bytes()) % ONE_HOT_MAX as u64) as usize;
            slots[bucket][i] = 1.0;
        }
    }
    if column.present().count() < n {
        names.push(format!("{name}.missing"));
        slots.push(
            (0..n)
                .map(|i| f32::from(u8::from(column.get(i).is_none())))
                .collect(),
        );
    }
    out.extend(
        names
            .into_iter()
            .zip(slots)
            .map(|(name, values)| DenseColumn { name, values }),
    );
}

fn embedding(column: &Column, out: &mut Vec<DenseColumn>) -> Result<(), QualityError> {
    let rows = parsed(column, "a list of numbers", parse::embedding)?;
    let dims = rows.iter().flatten().map(Vec::len).next().unwrap_or(0);
    if let Some(row) = rows
        .iter()
        .position(|r| r.as_ref().is_some_and(|r| r.len() != dims))
    {
        return Err(QualityError::InvalidColumn {
            column: column.name().to_owned(),
            row: Some(row),
            reason: format!(
                "{} numbers, but earlier rows have {dims}",
                rows[row].as_ref().map_or(0, Vec::len)
            ),
        });
    }
    let name = column.name();
    for j in 0..dims {
        let values = rows
            .iter()
            .map(|r| r.as_ref().map_or(0.0, |r| r[j]))
            .collect();
        out.push(DenseColumn {
            name: format!("{name}[{j}]"),
            values,
        });
    }
    if rows.iter().any(Option::is_none) {
        out.push(DenseColumn {
            name: format!("{name}.missing"),
            values: rows
                .iter()
                .map(|r| f32::from(u8::from(r.is_none())))
                .collect(),
        });
    }
    Ok(())
}

/// Standardizes a column in place (population std); `false` if it is constant.
fn standardize(values: &mut [f32]) -> bool {
    let n = values.len() as f64;
    let mean = values.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|v| (f64::from(*v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    if std <= 1e-6 * mean.abs().max(1e-6) {
        return false;
    }
    values
        .iter_mut()
        .for_each(|v| *v = ((f64::from(*v) - mean) / std) as f32);
    true
}

/// A dense random projection (signs from a hash of the column, scaled by `1/√dims`) of `csr`.
fn project(csr: &Csr, n: usize) -> Vec<DenseColumn> {
    let scale = 1.0 / (PROJECTION_DIMS as f32).sqrt();
    let mut columns: Vec<DenseColumn> = (0..PROJECTION_DIMS)
        .map(|p| DenseColumn {
            name: format!("text.projection[{p}]"),
            values: vec![0.0; n],
        })
        .collect();
    for i in 0..n {
        let (cols, vals) = csr.row(i);
        for (c, v) in cols.iter().zip(vals) {
            let signs = text::fnv1a(7, &c.to_le_bytes());
            for (p, column) in columns.iter_mut().enumerate() {
                let sign = if signs >> p & 1 == 1 { scale } else { -scale };
                column.values[i] += sign * v;
            }
        }
    }
    columns
}

/// Featurizes `table` by `plans` (one per featurized column; others are skipped).
///
/// # Errors
/// [`QualityError::InvalidColumn`] naming the column and row of a value that does not fit the
/// column's role (a given `numeric` role over a word, an embedding of another length, ...), or
/// [`QualityError::Empty`] if no column yields a feature.
pub fn featurize(table: &Table, plans: &[ColumnPlan]) -> Result<Design, QualityError> {
    let n = table.n();
    let mut dense: Vec<DenseColumn> = Vec::new();
    let mut blocks: Vec<SparseBlock> = Vec::new();
    for plan in plans {
        let Some(column) = table.column(&plan.name) else {
            return Err(QualityError::InvalidColumn {
                column: plan.name.clone(),
                row: None,
                reason: "no such column".into(),
            });
        };
        let name = column.name();
        match plan.role {
            ColumnRole::Id | ColumnRole::Ignored => {}
            ColumnRole::Numeric => {
                let values = parsed(column, "a number", parse::number)?;
                let values = values
                    .iter()
                    .map(|v| v.map_or(f32::NAN, |v| v as f32))
                    .collect();
                numeric(name, values, &mut dense);
            }
            ColumnRole::Boolean => {
                let values = parsed(column, "true or false", parse::boolean)?;
                let values = values
                    .iter()
                    .map(|v| v.map_or(f32::NAN, |b| f32::from(u8::from(b))))
                    .collect();
                numeric(name, values, &mut dense);
            }
            ColumnRole::Datetime => {
                let values = parsed(column, "a date", parse::datetime)?;
                let parts: Vec<Option<[f64; 6]>> = values
                    .into_iter()
                    .map(|t| t.map(parse::datetime_parts))
                    .collect();
                for (j, part) in parse::DATETIME_PARTS.iter().enumerate() {
                    let values = parts
                        .iter()
                        .map(|p| p.map_or(f32::NAN, |p| p[j] as f32))
                        .collect();
                    numeric(&format!("{name}.{part}"), values, &mut dense);
                }
            }
            ColumnRole::Categorical => categorical(column, &mut dense),
            ColumnRole::Embedding => embedding(column, &mut dense)?,
            ColumnRole::Text => blocks.push(text::featurize(column)),
            ColumnRole::Image => {
                let rows = image::featurize(column)?;
                for (j, feature) in image::names(name).into_iter().enumerate() {
                    let values = rows
                        .iter()
                        .map(|r| r.as_ref().map_or(f32::NAN, |r| r[j]))
                        .collect();
                    numeric(&feature, values, &mut dense);
                }
            }
        }
    }
    let sparse = (!blocks.is_empty() && blocks.iter().any(|b| b.cols > 0)).then(|| {
        let mut csr = Csr {
            cols: blocks.iter().map(|b| b.cols).sum(),
            indptr: vec![0],
            indices: Vec::new(),
            values: Vec::new(),
        };
        for i in 0..n {
            let mut offset = 0u32;
            for block in &blocks {
                for &(c, v) in &block.rows[i] {
                    csr.indices.push(c + offset);
                    csr.values.push(v);
                }
                offset += block.cols as u32;
            }
            csr.indptr.push(csr.indices.len());
        }
        csr
    });
    dense.retain_mut(|c| standardize(&mut c.values));
    let mut projected = 0;
    if let Some(csr) = &sparse {
        let mut projection = project(csr, n);
        projection.retain_mut(|c| standardize(&mut c.values));
        projected = projection.len();
        dense.extend(projection);
    }
    if dense.is_empty() && sparse.is_none() {
        return Err(QualityError::Empty);
    }
    let d = dense.len();
    let mut data = vec![0.0f32; n * d];
    for (j, column) in dense.iter().enumerate() {
        for (i, v) in column.values.iter().enumerate() {
            data[i * d + j] = *v;
        }
    }
    Ok(Design {
        n,
        dense: data,
        names: dense.into_iter().map(|c| c.name).collect(),
        projected,
        sparse,
    })
}
