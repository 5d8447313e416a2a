//! Schema inference: each column's physical type (integer, float, boolean, string) and role (numeric,
//! categorical, text, id), with the upload's overrides applied; and the typed column values. A
//! binary column (Parquet) whose values are all encoded images (sniffed by their headers) is an
//! IMAGE column, checked by analysis like an image archive's; any other binary column is refused.

use std::collections::HashSet;

use trustmesh_proto::v1::column_data::Values;
use trustmesh_proto::v1::{
    BoolValues, BytesValues, Column, ColumnData, ColumnOverride, ColumnRole, ColumnType,
    DoubleValues, Int64Values, Modality, Schema, StringValues,
};
use trustmesh_quality::modality::image_dimensions;

use super::csv::{Cells, Rejection, Table};

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
    mut table: Table,
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
    let mut images = false;
    let mut binary = std::mem::take(&mut table.binary);
    for (index, (name, values)) in table.names.iter().zip(table.columns).enumerate() {
        let over = overrides.iter().find(|o| &o.column == name);
        if let Some(bytes) = binary.remove(&index) {
            if over.is_some() {
                return Err(Rejection::new(
                    "UNSUPPORTED_OVERRIDE",
                    format!("column \"{name}\" holds images; it cannot be overridden"),
                )
                .at(None, Some(name)));
            }
            let (meta, data) = image_column(name, bytes, &table.lines)?;
            schema.columns.push(Column {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                ..meta
            });
            columns.push(data);
            images = true;
            continue;
        }
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
        let distinct: HashSet<&str> = values.iter().filter(|v| !is_null(v)).collect();
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
    let modality = if images {
        Modality::Image
    } else if text {
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

/// A binary column as an IMAGE column, when every value is an encoded image (empty values are
/// nulls) within the pixel limit.
fn image_column(
    name: &str,
    bytes: Vec<Vec<u8>>,
    lines: &[u64],
) -> Result<(Column, ColumnData), Rejection> {
    for (row, value) in bytes.iter().enumerate() {
        if value.is_empty() {
            continue;
        }
        let line = lines.get(row).copied();
        if image_dimensions(value).is_none() {
            return Err(Rejection::new(
                "UNSUPPORTED_BINARY_COLUMN",
                format!(
                    "row {}, column \"{name}\" holds bytes that are no image of a known format; a \
                     binary column must hold encoded images",
                    line.unwrap_or_default()
                ),
            )
            .at(line, Some(name)));
        }
        let what = format!("row {}, column \"{name}\"", line.unwrap_or_default());
        super::images::check_pixels(&what, value).map_err(|e| e.at(line, Some(name)))?;
    }
    let valid: Vec<bool> = bytes.iter().map(|b| !b.is_empty()).collect();
    let null_count = valid.iter().filter(|v| !**v).count();
    let distinct = bytes
        .iter()
        .filter(|b| !b.is_empty())
        .collect::<HashSet<_>>()
        .len();
    let meta = Column {
        name: name.to_owned(),
        index: 0,
        r#type: ColumnType::Image.into(),
        role: ColumnRole::Image.into(),
        role_overridden: false,
        null_count: null_count as u64,
        distinct_count: distinct as u64,
        list_length: 0,
    };
    let data = ColumnData {
        name: name.to_owned(),
        valid: if null_count == 0 { Vec::new() } else { valid },
        values: Some(Values::Images(BytesValues { values: bytes })),
    };
    Ok((meta, data))
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

fn infer_type(values: &Cells) -> ColumnType {
    let present = || values.iter().filter(|v| !is_null(v));
    if present().next().is_none() {
        return ColumnType::String;
    }
    if present().all(|v| parse_int(v).is_some()) {
        ColumnType::Integer
    } else if present().all(|v| parse_float(v).is_some()) {
        ColumnType::Float
    } else if present().all(|v| parse_bool(v).is_some()) {
        ColumnType::Boolean
    } else {
        ColumnType::String
    }
}

fn looks_like_id(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(lower.as_str(), "id" | "row_id" | "index" | "uuid") || lower.ends_with("_id")
}

fn is_text(values: &Cells) -> bool {
    let (count, chars) = values
        .iter()
        .filter(|v| !is_null(v))
        .fold((0_usize, 0_usize), |(n, c), v| {
            (n + 1, c + v.chars().count())
        });
    count != 0 && chars / count >= TEXT_MIN_MEAN_CHARS
}

/// The values of one column as `column_type`; a value that does not parse is a rejection naming its
/// line (only possible for a forced type).
fn typed(
    name: &str,
    column_type: ColumnType,
    values: Cells,
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
        values: &Cells,
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
        | ColumnType::StringList => Values::Strings(StringValues {
            values: values.iter().map(str::to_owned).collect(),
        }),
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
