//! JSONL validation and parsing into columns of strings, like a CSV file's: one JSON object per
//! line, columns in the order their fields first appear, a missing field or `null` an empty cell.
//! Every rejection names its line (and field), never a value.

// NOTE: values go straight to text, not through Arrow's JSON schema inference: the schema inference
// of `schema.rs` runs on text cells for every format, so a JSONL upload and the equivalent CSV one
// get the same schema and rows.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::io::{BufRead, BufReader, Read};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::error::Category;

use super::csv::{Cells, Rejection, Table, skip_bom_unless_blank, unreadable};

/// Parses the JSONL file `reader` yields (read once, line by line, never held whole) into a
/// [`Table`]: valid UTF-8, each non-blank line a JSON object of strings, numbers, booleans and
/// nulls, a field's values of one kind (integers and floats are one), at most `max_rows` rows and
/// `max_columns` fields in all.
pub(crate) fn parse<R: Read>(
    reader: R,
    max_rows: u64,
    max_columns: usize,
) -> Result<Table, Rejection> {
    let Some(reader) = skip_bom_unless_blank(reader).map_err(unreadable)? else {
        return Err(Rejection::new("EMPTY_FILE", "the file is empty"));
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut table = Table {
        names: Vec::new(),
        columns: Vec::new(),
        lines: Vec::new(),
        binary: std::collections::BTreeMap::new(),
    };
    let mut fields: HashMap<String, Field> = HashMap::new();
    let mut buffer = Vec::new();
    let mut line = 0_u64;
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer).map_err(unreadable)? == 0 {
            break;
        }
        line += 1;
        // As `str::lines`: without its `\n` or `\r\n`.
        let mut bytes = buffer.strip_suffix(b"\n").unwrap_or(&buffer);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let raw = std::str::from_utf8(bytes).map_err(|_| {
            Rejection::new(
                "UNSUPPORTED_ENCODING",
                format!("line {line} is not valid UTF-8"),
            )
            .at(Some(line), None)
        })?;
        if raw.trim().is_empty() {
            continue;
        }
        if table.lines.len() as u64 >= max_rows {
            return Err(Rejection::new(
                "TOO_MANY_ROWS",
                format!("line {line} exceeds the limit of {max_rows} rows"),
            )
            .at(Some(line), None));
        }
        let row = object(raw, line)?;
        let rows_before = table.lines.len();
        for (field, value) in row.0 {
            let next = table.names.len();
            let column = match fields.entry(field) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    if next >= max_columns {
                        let field = entry.key();
                        return Err(Rejection::new(
                            "TOO_MANY_COLUMNS",
                            format!(
                                "line {line}, field \"{field}\" makes more than \
                                 {max_columns} columns"
                            ),
                        )
                        .at(Some(line), Some(field)));
                    }
                    table.names.push(entry.key().clone());
                    let mut cells = Cells::default();
                    cells.fill_to(rows_before);
                    table.columns.push(cells);
                    entry.insert(Field {
                        column: next,
                        first: None,
                    })
                }
            };
            let field = table.names[column.column].as_str();
            let values = &mut table.columns[column.column];
            if values.len() > rows_before {
                return Err(Rejection::new(
                    "JSONL_INVALID_LINE",
                    format!("line {line} has field \"{field}\" twice"),
                )
                .at(Some(line), Some(field)));
            }
            let (cell, found) = cell(value).ok_or_else(|| {
                Rejection::new(
                    "JSONL_UNSUPPORTED_TYPE",
                    format!(
                        "line {line}, field \"{field}\" holds an array or object; only strings, \
                         numbers, booleans and null are supported"
                    ),
                )
                .at(Some(line), Some(field))
            })?;
            if let Some(found) = found {
                match column.first {
                    Some((first, first_line)) if first != found => {
                        return Err(Rejection::new(
                            "JSONL_MIXED_TYPES",
                            format!(
                                "line {line}, field \"{field}\" holds a {found}, but line \
                                 {first_line} holds a {first}"
                            ),
                        )
                        .at(Some(line), Some(field)));
                    }
                    Some(_) => {}
                    None => column.first = Some((found, line)),
                }
            }
            values
                .push(&cell)
                .map_err(|e| e.at(Some(line), Some(field)))?;
        }
        table.lines.push(line);
        // A field this line lacks is an empty cell.
        for values in &mut table.columns {
            values.fill_to(table.lines.len());
        }
    }
    if table.row_count() == 0 {
        return Err(Rejection::new("NO_ROWS", "the file has no JSON objects"));
    }
    if table.names.is_empty() {
        return Err(Rejection::new(
            "NO_COLUMNS",
            "the file's JSON objects have no fields",
        ));
    }
    Ok(table)
}

/// A field seen so far.
struct Field {
    /// Its column's index.
    column: usize,
    /// The kind and line of its first non-null value.
    first: Option<(&'static str, u64)>,
}

fn object(raw: &str, line: u64) -> Result<Row, Rejection> {
    serde_json::from_str::<Row>(raw).map_err(|e| {
        // NOTE: serde_json's data errors (a line that is a number or a string, not an object) echo
        // the value, so only the category and column are shown.
        let message = match e.classify() {
            Category::Data => format!("line {line} is not a JSON object"),
            Category::Eof => format!("line {line} is not valid JSON: it ends too soon"),
            Category::Syntax | Category::Io => format!(
                "line {line} is not valid JSON: unexpected input at column {}",
                e.column()
            ),
        };
        Rejection::new("JSONL_INVALID_LINE", message).at(Some(line), None)
    })
}

/// A JSON object's fields in the file's order (serde_json's own map sorts them).
struct Row(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Row;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                Ok(Row(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A value's text cell and kind (`None` for null); `None` for an array or object.
fn cell(value: Value) -> Option<(String, Option<&'static str>)> {
    Some(match value {
        Value::Null => (String::new(), None),
        Value::Bool(b) => (b.to_string(), Some("boolean")),
        Value::Number(n) => (n.to_string(), Some("number")),
        Value::String(s) => (s, Some("string")),
        Value::Array(_) | Value::Object(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(text: &str) -> Rejection {
        parse(text.as_bytes(), 100, 100).unwrap_err()
    }

    #[test]
    fn parses_columns_in_first_appearance_order() {
        let table = parse(
            b"{\"b\": 1, \"a\": \"x\"}\n\n{\"a\": null, \"c\": true, \"b\": 2.5}\n".as_slice(),
            100,
            100,
        )
        .unwrap();
        assert_eq!(table.names, ["b", "a", "c"]);
        assert_eq!(
            table
                .columns
                .iter()
                .map(|c| c.iter().collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            [vec!["1", "2.5"], vec!["x", ""], vec!["", "true"]]
        );
        assert_eq!(table.lines, [1, 3]);
    }

    #[test]
    fn rejections_name_line_and_field() {
        let broken = reject("{\"a\": 1}\n{\"a\": 2\n");
        assert_eq!(broken.code, "JSONL_INVALID_LINE");
        assert_eq!(broken.line, Some(2));
        assert_eq!(broken.message, "line 2 is not valid JSON: it ends too soon");
        let syntax = reject("{\"a\": 1}\n{\"a\" 2}\n");
        assert_eq!(
            syntax.message,
            "line 2 is not valid JSON: unexpected input at column 6"
        );
        assert_eq!(reject("{\"a\": 1}\n[1]\n").line, Some(2));
        let scalar = reject("\"secret\"\n");
        assert_eq!(scalar.message, "line 1 is not a JSON object");
        let twice = reject("{\"a\": 1, \"a\": 2}\n");
        assert_eq!(
            (twice.code, twice.column.as_deref()),
            ("JSONL_INVALID_LINE", Some("a"))
        );

        let mixed = reject("{\"a\": 1}\n{\"a\": null}\n{\"a\": \"one\"}\n");
        assert_eq!(mixed.code, "JSONL_MIXED_TYPES");
        assert_eq!((mixed.line, mixed.column.as_deref()), (Some(3), Some("a")));
        assert!(!mixed.message.contains("one"), "{mixed}");

        let nested = reject("{\"a\": 1, \"o\": {\"k\": 1}}\n");
        assert_eq!(nested.code, "JSONL_UNSUPPORTED_TYPE");
        assert_eq!(nested.column.as_deref(), Some("o"));

        let utf8 = parse(b"{\"a\": 1}\n{\"a\": \"\xff\"}\n".as_slice(), 100, 100).unwrap_err();
        assert_eq!((utf8.code, utf8.line), ("UNSUPPORTED_ENCODING", Some(2)));
        assert_eq!(reject(" \n").code, "EMPTY_FILE");
        assert_eq!(reject("{}\n{}\n").code, "NO_COLUMNS");
        let rows = parse(b"{\"a\": 1}\n{\"a\": 2}\n{\"a\": 3}\n".as_slice(), 2, 100).unwrap_err();
        assert_eq!((rows.code, rows.line), ("TOO_MANY_ROWS", Some(3)));
        let columns = parse(b"{\"a\": 1}\n{\"b\": 2, \"c\": 3}\n".as_slice(), 100, 2).unwrap_err();
        assert_eq!(
            (columns.code, columns.column.as_deref()),
            ("TOO_MANY_COLUMNS", Some("c"))
        );
    }
}
