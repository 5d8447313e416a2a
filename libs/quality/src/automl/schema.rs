//! Schema inference: the role each column plays (id, numeric, categorical, boolean, datetime, text,
//! embedding, or ignored), decided from its name and values, with user overrides.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::parse;
use super::table::{Column, Table};
use crate::QualityError;

/// At least this fraction of a column's present values must parse for it to be numeric, datetime or
/// an embedding; the rest are then reported as garbage rather than silently dropped.
const PARSE_MAJORITY: f64 = 0.95;
/// A string column whose values average at least this many words is free text.
const TEXT_MIN_WORDS: f64 = 3.0;
/// Below this many rows, "every value distinct" says nothing about a column being an id.
const ID_MIN_ROWS: usize = 20;

/// What a column is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnRole {
    /// Identifies rows; never a feature.
    Id,
    /// Numbers: median-imputed with a missing indicator, standardized.
    Numeric,
    /// A few distinct strings: one-hot (low cardinality) or hashed (high).
    Categorical,
    /// true/false, yes/no, t/f, y/n.
    Boolean,
    /// Dates or date-times (ISO 8601 / RFC 3339): year, month, day, weekday, hour, days since epoch.
    Datetime,
    /// Free text: TF-IDF over word 1–2-grams and char 3–5-grams.
    Text,
    /// A list of floats per row (`[0.1, 0.2, ...]`), used as given.
    Embedding,
    /// Encoded images (a binary column): colour histograms, gradient orientation histograms and
    /// a small thumbnail.
    Image,
    /// Not used (all missing, constant, or excluded by the user).
    Ignored,
}

impl ColumnRole {
    /// Every role.
    pub const ALL: [Self; 9] = [
        Self::Id,
        Self::Numeric,
        Self::Categorical,
        Self::Boolean,
        Self::Datetime,
        Self::Text,
        Self::Embedding,
        Self::Image,
        Self::Ignored,
    ];

    /// The role's name (`id`, `numeric`, `categorical`, `boolean`, `datetime`, `text`, `embedding`,
    /// `image`, `ignored`), as serialized.
    pub fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Numeric => "numeric",
            Self::Categorical => "categorical",
            Self::Boolean => "boolean",
            Self::Datetime => "datetime",
            Self::Text => "text",
            Self::Embedding => "embedding",
            Self::Image => "image",
            Self::Ignored => "ignored",
        }
    }

    /// Parses a role's [name](Self::name).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == name)
    }
}

/// A column's role and why it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnPlan {
    /// The column's name.
    pub name: String,
    /// Its role.
    pub role: ColumnRole,
    /// Why (inferred from what, or given by the user).
    pub reason: String,
}

/// Infers every column's role but the label's. `roles` overrides inference for the columns it
/// names; `id_columns` are ids whatever their values.
///
/// # Errors
/// [`QualityError::InvalidColumn`] for an override or id naming no column, or a column that is mostly
/// numbers (dates, lists) with a value that is not one, naming that row: override its role
/// (`categorical` or `text`) to use it as strings.
pub fn infer_schema(
    table: &Table,
    label: &str,
    id_columns: &[String],
    roles: &BTreeMap<String, ColumnRole>,
) -> Result<Vec<ColumnPlan>, QualityError> {
    for name in roles.keys().chain(id_columns).chain([&label.to_owned()]) {
        if table.column(name).is_none() {
            return Err(QualityError::InvalidColumn {
                column: name.clone(),
                row: None,
                reason: "no such column".into(),
            });
        }
    }
    table
        .columns()
        .iter()
        .filter(|c| c.name() != label)
        .map(|column| {
            let name = column.name().to_owned();
            if let Some(&role) = roles.get(&name) {
                return Ok(ColumnPlan {
                    name,
                    role,
                    reason: "given".into(),
                });
            }
            if id_columns.contains(&name) {
                return Ok(ColumnPlan {
                    name,
                    role: ColumnRole::Id,
                    reason: "given as an id column".into(),
                });
            }
            let (role, reason) = infer(column)?;
            Ok(ColumnPlan {
                name,
                role,
                reason: reason.into(),
            })
        })
        .collect()
}

/// Whether a column's name says it identifies rows: `id`, `uuid`, `*_id`, `*-id`, `userId`, ...
fn id_like_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "id" | "uuid" | "guid" | "index" | "key" | "rowid"
    ) || lower.ends_with("_id")
        || lower.ends_with("-id")
        || lower.ends_with(" id")
        || lower.ends_with("_uuid")
        || name.ends_with("Id") && name.len() > 2
}

/// The first present value that `ok` rejects, if at least [`PARSE_MAJORITY`] of them pass;
/// `Ok(None)` if all pass; `Err(())` if the column is not of this kind.
fn majority(column: &Column, ok: impl Fn(&str) -> bool) -> Result<Option<(usize, String)>, ()> {
    let (mut present, mut bad, mut first) = (0usize, 0usize, None);
    for (row, v) in column.present() {
        present += 1;
        if !ok(v) {
            bad += 1;
            first.get_or_insert((row, v.to_owned()));
        }
    }
    if present == 0 || (present - bad) as f64 / (present as f64) < PARSE_MAJORITY {
        Err(())
    } else {
        Ok(first)
    }
}

fn garbage(column: &Column, (row, value): (usize, String), kind: &str) -> QualityError {
    QualityError::InvalidColumn {
        column: column.name().to_owned(),
        row: Some(row),
        reason: format!(
            "{value:?} is not {kind}, unlike the rest of the column; fix the value, or give the column \
             the role categorical or text to use it as strings"
        ),
    }
}

/// Infers one column's role from its name and values.
fn infer(column: &Column) -> Result<(ColumnRole, &'static str), QualityError> {
    if column.is_binary() {
        let present: Vec<&[u8]> = (0..column.len()).filter_map(|i| column.bytes(i)).collect();
        return Ok(if present.is_empty() {
            (ColumnRole::Ignored, "every value is missing")
        } else if present.iter().all(|b| image::guess_format(b).is_ok()) {
            (ColumnRole::Image, "encoded images")
        } else {
            (ColumnRole::Ignored, "binary values that are not all images")
        });
    }
    let mut distinct = HashSet::new();
    let mut present = 0usize;
    for (_, v) in column.present() {
        present += 1;
        distinct.insert(v);
    }
    if present == 0 {
        return Ok((ColumnRole::Ignored, "every value is missing"));
    }
    if distinct.len() == 1 {
        return Ok((ColumnRole::Ignored, "constant"));
    }
    if id_like_name(column.name()) {
        return Ok((ColumnRole::Id, "the name says it is an id"));
    }
    if distinct.iter().all(|v| parse::boolean(v).is_some()) {
        return Ok((ColumnRole::Boolean, "true/false values"));
    }
    if let Ok(first_bad) = majority(column, |v| parse::number(v).is_some()) {
        if let Some(bad) = first_bad {
            return Err(garbage(column, bad, "a number"));
        }
        let all_unique = distinct.len() == column.len() && column.len() >= ID_MIN_ROWS;
        if all_unique && consecutive_integers(&distinct) {
            return Ok((ColumnRole::Id, "unique consecutive integers"));
        }
        return Ok((ColumnRole::Numeric, "numbers"));
    }
    if let Ok(first_bad) = majority(column, |v| parse::embedding(v).is_some()) {
        if let Some(bad) = first_bad {
            return Err(garbage(column, bad, "a list of numbers"));
        }
        return Ok((ColumnRole::Embedding, "lists of numbers"));
    }
    if let Ok(first_bad) = majority(column, |v| parse::datetime(v).is_some()) {
        if let Some(bad) = first_bad {
            return Err(garbage(column, bad, "a date"));
        }
        return Ok((ColumnRole::Datetime, "dates"));
    }
    let words: usize = column
        .present()
        .map(|(_, v)| v.split_whitespace().count())
        .sum();
    if words as f64 / present as f64 >= TEXT_MIN_WORDS {
        return Ok((ColumnRole::Text, "free text"));
    }
    let unique_tokens = distinct.len() == column.len()
        && column.len() >= ID_MIN_ROWS
        && distinct.iter().all(|v| !v.contains(char::is_whitespace));
    if unique_tokens {
        return Ok((ColumnRole::Id, "a distinct token per row"));
    }
    Ok((ColumnRole::Categorical, "strings"))
}

/// Whether the values are integers `m, m+1, ..., m+len-1` in some order.
fn consecutive_integers(values: &HashSet<&str>) -> bool {
    let ints: Option<Vec<i64>> = values.iter().map(|v| v.parse::<i64>().ok()).collect();
    ints.is_some_and(|ints| {
        let (min, max) = (ints.iter().min(), ints.iter().max());
        matches!((min, max), (Some(a), Some(b)) if usize::try_from(b - a).ok() == Some(ints.len() - 1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, cells: &[&str]) -> Column {
        Column::new(name, cells.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn roles_are_inferred_from_names_and_values() {
        let n = 30;
        let seq: Vec<String> = (0..n).map(|i| (i + 100).to_string()).collect();
        let seq: Vec<&str> = seq.iter().map(String::as_str).collect();
        let floats: Vec<String> = (0..n).map(|i| format!("{}.5", i % 7)).collect();
        let floats: Vec<&str> = floats.iter().map(String::as_str).collect();
        let cyc = |vals: &[&'static str]| -> Vec<&'static str> {
            (0..n).map(|i| vals[i % vals.len()]).collect()
        };
        let uuids: Vec<String> = (0..n).map(|i| format!("u-{i:04x}")).collect();
        let uuids: Vec<&str> = uuids.iter().map(String::as_str).collect();
        let table = Table::new(vec![
            col("row_id", &cyc(&["a", "b"])),
            col("seq", &seq),
            col("x", &floats),
            col("flag", &cyc(&["yes", "no", ""])),
            col("colour", &cyc(&["red", "green", "blue"])),
            col("when", &cyc(&["2024-01-02", "2023-12-31T10:00:00Z", ""])),
            col(
                "note",
                &cyc(&["a long free text note", "another note with words"]),
            ),
            col("emb", &cyc(&["[0.1, 0.2]", "[0.3,0.4]"])),
            col("empty", &cyc(&[""])),
            col("same", &cyc(&["7"])),
            col("token", &uuids),
            col("label", &cyc(&["a", "b"])),
        ])
        .unwrap();
        let mut roles = BTreeMap::new();
        roles.insert("x".to_owned(), ColumnRole::Categorical);
        let plans = infer_schema(&table, "label", &[], &roles).unwrap();
        let got: Vec<(&str, ColumnRole)> =
            plans.iter().map(|p| (p.name.as_str(), p.role)).collect();
        assert_eq!(
            got,
            [
                ("row_id", ColumnRole::Id),
                ("seq", ColumnRole::Id),
                ("x", ColumnRole::Categorical),
                ("flag", ColumnRole::Boolean),
                ("colour", ColumnRole::Categorical),
                ("when", ColumnRole::Datetime),
                ("note", ColumnRole::Text),
                ("emb", ColumnRole::Embedding),
                ("empty", ColumnRole::Ignored),
                ("same", ColumnRole::Ignored),
                ("token", ColumnRole::Id),
            ]
        );
        let plans = infer_schema(&table, "label", &[], &BTreeMap::new()).unwrap();
        assert_eq!(plans[2].role, ColumnRole::Numeric);
        for role in ColumnRole::ALL {
            assert_eq!(ColumnRole::from_name(role.name()), Some(role));
            let serialized = serde_json::to_value(role).unwrap();
            assert_eq!(
                serialized.as_str(),
                Some(role.name()),
                "the serialized name"
            );
        }
    }

    #[test]
    fn garbage_in_a_numeric_column_names_the_row_and_column() {
        let mut cells: Vec<String> = (0..40).map(|i| (i % 9).to_string()).collect();
        cells[17] = "n/a?".into();
        let table = Table::new(vec![
            Column::new("age", cells),
            Column::new("label", (0..40).map(|i| (i % 2).to_string()).collect()),
        ])
        .unwrap();
        let err = infer_schema(&table, "label", &[], &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column \"age\", row 17: \"n/a?\" is not a number, unlike the rest of the column; fix the \
             value, or give the column the role categorical or text to use it as strings"
        );
        let err = infer_schema(&table, "nope", &[], &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, QualityError::InvalidColumn { ref column, .. } if column == "nope"));
    }
}
