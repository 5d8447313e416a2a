//! Schema inference: each column's physical type (integer, float, boolean, string) and role (numeric,
//! categorical, text, id), with the upload's overrides applied; and the typed column values.

use std::collections::HashSet;

use trustmesh_proto::v1::column_data::Values;
use trustmesh_proto::v1::{
    BoolValues, Column, ColumnData, ColumnOverride, ColumnRole, ColumnType, DoubleValues,
    Int64Values, Modality, Schema, StringValues,
};

use super::csv::{Rejection, Table};

/// A string column whose values average at least this many characters is free text.
const TEXT_MIN_MEAN_CHARS: usize = 40;

/// The inferred schema, the typed columns and the modality of a parsed table.
#[derive(Debug)]
pub(crate) struct Inferred {
    /// The schema.
    pub(crate) schema: Schema,
    /// One typed column per schema column.
    pub(crate) columns: Vec<ColumnData>,
    /// Tabular or text.
    pub(crate) modality: Modality,
}

/// Infers the schema of `table`, applying `overrides` and `id_column` (empty: inferred).
pub(crate) fn infer(
    table: Table,
    overrides: &[ColumnOverride],
    id_column: &str,
) -> Result<Inferred, Rejection> {
    for name in overrides
        .iter()
        .map(|o| o.column.as_str())
        .chain((!id_column.is_empty()).then_some(id_column))
    {
        if !table.names.iter().any(|n| n == name) {
            return Err(Rejection::new(
                "COLUMN_NOT_FOUND",
                format!("column \"{name}\" named in the upload metadata is not in the file"),
            )
            .at(None, Some(name)));
        }
    }
    let rows = table.row_count();
    let mut schema = Schema::default();
    let mut columns = Vec::with_capacity(table.names.len());
    let mut text = false;
    for (index, (name, values)) in table.names.iter().zip(table.columns).enumerate() {
        let over = overrides.iter().find(|o| &o.column == name);
        let forced = over.map_or(ColumnType::Unspecified, ColumnOverride::r#type);
        let column_type = match forced {
            ColumnType::Unspecified => infer_type(&values),
            ColumnType::String | ColumnType::Integer | ColumnType::Float | ColumnType::Boolean => {
                forced
            }
            ColumnType::Datetime
            | ColumnType::Image
            | ColumnType::FloatList
            | ColumnType::StringList => {
                return Err(Rejection::new(
                    "UNSUPPORTED_OVERRIDE",
                    format!("column \"{name}\": columns can be overridden to STRING, INTEGER, FLOAT or BOOLEAN only"),
                )
                .at(None, Some(name)));
            }
        };
        let null_count = values.iter().filter(|v| is_null(v)).count();
        let distinct: HashSet<&str> = values
            .iter()
            .filter(|v| !is_null(v))
            .map(String::as_str)
            .collect();
        let distinct_count = distinct.len();
        let inferred_role = if name == id_column
            || (id_column.is_empty() && looks_like_id(name) && distinct_count == rows)
        {
            ColumnRole::Id
        } else {
            match column_type {
                ColumnType::Integer | ColumnType::Float => ColumnRole::Numeric,
                ColumnType::String if is_text(&values) => ColumnRole::Text,
                ColumnType::String
                | ColumnType::Boolean
                | ColumnType::Unspecified
                | ColumnType::Datetime
                | ColumnType::Image
                | ColumnType::FloatList
                | ColumnType::StringList => ColumnRole::Categorical,
            }
        };
        let role = over
            .map(ColumnOverride::role)
            .filter(|r| *r != ColumnRole::Unspecified)
            .unwrap_or(inferred_role);
        text |= role == ColumnRole::Text;
        if role == ColumnRole::Id && schema.id_column.is_empty() {
            schema.id_column.clone_from(name);
        }
        columns.push(typed(name, column_type, values, &table.lines)?);
        schema.columns.push(Column {
            name: name.clone(),
            index: u32::try_from(index).unwrap_or(u32::MAX),
            r#type: column_type.into(),
            role: role.into(),
            role_overridden: over.is_some_and(|o| o.role() != ColumnRole::Unspecified),
            null_count: null_count as u64,
            distinct_count: distinct_count as u64,
            list_length: 0,
        });
    }
    let modality = if text {
        Modality::Text
    } else {
        Modality::Tabular
    };
    Ok(Inferred {
        schema,
        columns,
        modality,
    })
}

fn is_null(value: &str) -> bool {
    value.trim().is_empty()
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn parse_int(value: &str) -> Option<i64> {
    value.trim().parse().ok()
}

fn parse_float(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

fn infer_type(values: &[String]) -> ColumnType {
    let mut present = values.iter().filter(|v| !is_null(v)).peekable();
    if present.peek().is_none() {
        return ColumnType::String;
    }
    let present: Vec<&String> = present.collect();
    if present.iter().all(|v| parse_int(v).is_some()) {
        ColumnType::Integer
    } else if present.iter().all(|v| parse_float(v).is_some()) {
        ColumnType::Float
    } else if present.iter().all(|v| parse_bool(v).is_some()) {
        ColumnType::Boolean
    } else {
        ColumnType::String
    }
}

fn looks_like_id(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(lower.as_str(), "id" | "row_id" | "index" | "uuid") || lower.ends_with("_id")
}

fn is_text(values: &[String]) -> bool {
    let present: Vec<&String> = values.iter().filter(|v| !is_null(v)).collect();
    !present.is_empty()
        && present.iter().map(|v| v.chars().count()).sum::<usize>() / present.len()
            >= TEXT_MIN_MEAN_CHARS
}

/// The values of one column as `column_type`; a value that does not parse is a rejection naming its
/// line (only possible for a forced type).
fn typed(
    name: &str,
    column_type: ColumnType,
    values: Vec<String>,
    lines: &[u64],
) -> Result<ColumnData, Rejection> {
    let valid: Vec<bool> = values.iter().map(|v| !is_null(v)).collect();
    let bad = |row: usize| {
        let line = lines.get(row).copied();
        Rejection::new(
            "INVALID_VALUE",
            format!(
                "line {}, column \"{name}\" is not a valid {}",
                line.unwrap_or_default(),
                column_type.as_str_name()
            ),
        )
        .at(line, Some(name))
    };
    fn convert<T: Default>(
        values: &[String],
        parse: impl Fn(&str) -> Option<T>,
        bad: impl Fn(usize) -> Rejection,
    ) -> Result<Vec<T>, Rejection> {
        values
            .iter()
            .enumerate()
            .map(|(row, v)| {
                if is_null(v) {
                    Ok(T::default())
                } else {
                    parse(v).ok_or_else(|| bad(row))
                }
            })
            .collect()
    }
    let values = match column_type {
        ColumnType::Integer => Values::Integers(Int64Values {
            values: convert(&values, parse_int, bad)?,
        }),
        ColumnType::Float => Values::Floats(DoubleValues {
            values: convert(&values, parse_float, bad)?,
        }),
        ColumnType::Boolean => Values::Booleans(BoolValues {
            values: convert(&values, parse_bool, bad)?,
        }),
        ColumnType::String
        | ColumnType::Unspecified
        | ColumnType::Datetime
        | ColumnType::Image
        | ColumnType::FloatList
        | ColumnType::StringList => Values::Strings(StringValues { values }),
    };
    let all_valid = valid.iter().all(|v| *v);
    Ok(ColumnData {
        name: name.to_owned(),
        valid: if all_valid { Vec::new() } else { valid },
        values: Some(values),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::csv::{CsvOptions, parse};

    fn table(csv: &str) -> Table {
        let options = CsvOptions {
            delimiter: b',',
            has_header: true,
        };
        parse(csv.as_bytes(), options, 100, 100).unwrap()
    }

    #[test]
    fn infers_types_roles_and_nulls() {
        let long = "a long free text value that goes on for quite a few words";
        let csv =
            format!("row_id,x,y,flag,label,note\n0,1,1.5,true,cat,{long}\n1,2,,false,dog,{long}\n");
        let inferred = infer(table(&csv), &[], "").unwrap();
        let kinds: Vec<(ColumnType, ColumnRole)> = inferred
            .schema
            .columns
            .iter()
            .map(|c| (c.r#type(), c.role()))
            .collect();
        assert_eq!(
            kinds,
            [
                (ColumnType::Integer, ColumnRole::Id),
                (ColumnType::Integer, ColumnRole::Numeric),
                (ColumnType::Float, ColumnRole::Numeric),
                (ColumnType::Boolean, ColumnRole::Categorical),
                (ColumnType::String, ColumnRole::Categorical),
                (ColumnType::String, ColumnRole::Text),
            ]
        );
        assert_eq!(inferred.schema.id_column, "row_id");
        assert_eq!(inferred.schema.columns[2].null_count, 1);
        assert_eq!(inferred.columns[2].valid, [true, false]);
        assert_eq!(inferred.modality, Modality::Text);
    }

    #[test]
    fn overrides_apply_and_bad_forced_values_name_their_line() {
        let over = ColumnOverride {
            column: "x".into(),
            role: ColumnRole::Label.into(),
            r#type: ColumnType::String.into(),
        };
        let inferred = infer(table("x\n1\n2\n"), &[over], "").unwrap();
        let column = &inferred.schema.columns[0];
        assert_eq!(
            (column.r#type(), column.role()),
            (ColumnType::String, ColumnRole::Label)
        );
        assert!(column.role_overridden);

        let force_int = ColumnOverride {
            column: "x".into(),
            role: ColumnRole::Unspecified.into(),
            r#type: ColumnType::Integer.into(),
        };
        let error = infer(table("x\n1\nfoo\n"), &[force_int], "").unwrap_err();
        assert_eq!((error.code, error.line), ("INVALID_VALUE", Some(3)));
        assert!(!error.message.contains("foo"), "{error}");

        let missing = ColumnOverride {
            column: "nope".into(),
            ..ColumnOverride::default()
        };
        assert_eq!(
            infer(table("x\n1\n"), &[missing], "").unwrap_err().code,
            "COLUMN_NOT_FOUND"
        );
    }
}
