//! Columnar input: Arrow record batches, Parquet files and JSONL files as an AutoML [`Table`].
//!
//! Every Arrow value becomes the cell the CSV path would have given for it, so schema inference and
//! featurization see one kind of input: numbers, booleans, strings, decimals and dictionary-encoded
//! strings as their text; dates and timestamps as ISO 8601 (the datetime role's input); lists of
//! numbers as `[x, y, ...]` (the embedding role's input); binary values as binary cells (images).
//! A null is a missing cell. Any other type (structs, maps, lists of strings, times of day,
//! durations, ...) is an error naming the column.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchReader};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_json::reader::{ReaderBuilder, infer_json_schema_from_iterator};
use arrow_schema::{ArrowError, DataType, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::error::Category;
use serde_json::{Map, Value};

use super::table::{Column, Table};
use crate::QualityError;
use crate::modality::{decode_image_uri, holds_image_uris};

/// Why a Parquet or JSONL file could not be read as a [`Table`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("could not read the file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a readable Parquet file (or uses a compression codec other than Snappy).
    #[error("not a readable Parquet file: {0}")]
    Parquet(String),
    /// A JSONL line is not a JSON object.
    #[error("line {line}: {reason}")]
    InvalidLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A JSONL field holds values of two kinds (say a number and a string).
    #[error(
        "line {line}, field {field:?}: {found} value, but line {first_line} has a {first} value"
    )]
    MixedTypes {
        /// 1-based line number of the first value of another kind.
        line: usize,
        /// The field's name.
        field: String,
        /// The kind of that value.
        found: &'static str,
        /// 1-based line of the field's first non-null value.
        first_line: usize,
        /// The kind of that value.
        first: &'static str,
    },
    /// The rows do not make a table (an unsupported column type, no rows, ...).
    #[error(transparent)]
    Table(#[from] QualityError),
    /// Arrow could not decode the values.
    #[error("could not decode the values: {0}")]
    Arrow(#[from] ArrowError),
}

/// Reads a Parquet file (uncompressed or Snappy-compressed) as a [`Table`].
///
/// # Errors
/// [`ReadError::Io`] when the file cannot be opened, [`ReadError::Parquet`] when it is not valid
/// Parquet, [`ReadError::Table`] for an unsupported column type or a file without rows.
pub fn read_parquet(path: impl AsRef<Path>) -> Result<Table, ReadError> {
    let file = fs::File::open(path)?;
    let parquet = |e: parquet::errors::ParquetError| ReadError::Parquet(e.to_string());
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet)?
        .build()
        .map_err(parquet)?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ReadError::Parquet(e.to_string()))?;
    Ok(table_from_batches(&schema, &batches)?)
}

/// Reads a JSONL file (one JSON object per line; blank lines are skipped) as a [`Table`]: columns
/// in the order their fields first appear, a field missing from a line is a missing cell, and the
/// column types are Arrow's JSON schema inference (integers and floats mixed make floats; arrays
/// of numbers make lists, hence embeddings).
///
/// # Errors
/// [`ReadError::InvalidLine`] for a line that is not a JSON object, [`ReadError::MixedTypes`] for
/// a field holding, say, numbers on some lines and strings on others (no silent coercion to text),
/// [`ReadError::Table`] for a nested object field or a file without rows.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Table, ReadError> {
    read_jsonl_lines(path).map(|(table, _)| table)
}

/// [`read_jsonl`], with each row's 1-based line number in the file (blank lines are no rows), for
/// errors found later in a row's values to name its line.
///
/// # Errors
/// As [`read_jsonl`].
pub fn read_jsonl_lines(path: impl AsRef<Path>) -> Result<(Table, Vec<usize>), ReadError> {
    let text = fs::read_to_string(path)?;
    let mut rows: Vec<Value> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    // Field -> kind and line of its first non-null value; `order` keeps first appearance.
    let mut kinds: HashMap<String, Option<(&'static str, usize)>> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line).map_err(|e| ReadError::InvalidLine {
            line: line_no,
            reason: match e.classify() {
                Category::Data => "not a JSON object".into(),
                Category::Eof => "not valid JSON: it ends too soon".into(),
                Category::Syntax | Category::Io => {
                    format!("not valid JSON: unexpected input at column {}", e.column())
                }
            },
        })?;
        for (field, value) in &row.0 {
            let known = kinds.entry(field.clone()).or_insert_with(|| {
                order.push(field.clone());
                None
            });
            let Some(found) = kind(value) else { continue };
            match *known {
                Some((first, first_line)) if first != found => {
                    return Err(ReadError::MixedTypes {
                        line: line_no,
                        field: field.clone(),
                        found,
                        first_line,
                        first,
                    });
                }
                Some(_) => {}
                None => *known = Some((found, line_no)),
            }
        }
        rows.push(Value::Object(row.0.into_iter().collect::<Map<_, _>>()));
        lines.push(line_no);
    }
    if rows.is_empty() {
        return Err(QualityError::Empty.into());
    }
    let inferred = infer_json_schema_from_iterator(rows.iter().map(Ok::<_, ArrowError>))?;
    // Arrow's inference does not keep the fields' order; the file's order is the table's.
    let fields = order
        .iter()
        .map(|name| inferred.field_with_name(name).cloned())
        .collect::<Result<Vec<_>, _>>()?;
    let schema = Arc::new(Schema::new(fields));
    let mut decoder = ReaderBuilder::new(schema.clone()).build_decoder()?;
    decoder.serialize(&rows)?;
    let batches: Vec<RecordBatch> = decoder.flush()?.into_iter().collect();
    let table = decode_image_uris(&table_from_batches(&schema, &batches)?, &lines)?;
    Ok((table, lines))
}

/// `table` with every text column holding image data URIs as a binary column of the decoded images
/// (as ingest reads a JSONL upload); a URI whose payload is not base64 is an error naming its line.
fn decode_image_uris(table: &Table, lines: &[usize]) -> Result<Table, ReadError> {
    let columns = table
        .columns()
        .iter()
        .map(|column| {
            if column.is_binary() {
                return Ok(column.clone());
            }
            let cells: Vec<&str> = (0..column.len())
                .map(|i| column.get(i).unwrap_or_default())
                .collect();
            if !holds_image_uris(cells.iter().copied()) {
                return Ok(column.clone());
            }
            let bytes = cells
                .iter()
                .zip(lines)
                .map(|(cell, &line)| {
                    decode_image_uri(cell).ok_or_else(|| ReadError::InvalidLine {
                        line,
                        reason: format!(
                            "field {:?} is an image data URI whose payload is not valid base64",
                            column.name()
                        ),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Column::binary(column.name(), bytes))
        })
        .collect::<Result<Vec<_>, ReadError>>()?;
    Ok(Table::new(columns)?)
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

/// The kind of a JSON value, `None` for null: integers and floats are one kind.
fn kind(value: &Value) -> Option<&'static str> {
    match value {
        Value::Null => None,
        Value::Bool(_) => Some("boolean"),
        Value::Number(_) => Some("number"),
        Value::String(_) => Some("string"),
        Value::Array(_) => Some("array"),
        Value::Object(_) => Some("object"),
    }
}

/// Builds a [`Table`] from `batches` of `schema`, one column per field, rows in batch order.
///
/// # Errors
/// [`QualityError::InvalidColumn`] naming the first column of an unsupported type (or a batch of
/// another schema); [`QualityError::Empty`] without columns or rows.
pub fn table_from_batches(schema: &Schema, batches: &[RecordBatch]) -> Result<Table, QualityError> {
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let name = field.name();
            let arrays = batches
                .iter()
                .map(|batch| {
                    batch
                        .columns()
                        .get(index)
                        .filter(|a| a.data_type() == field.data_type())
                        .ok_or_else(|| invalid(name, "a record batch does not match the schema"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            column(name, field.data_type(), &arrays)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Table::new(columns)
}

fn invalid(column: &str, reason: impl Into<String>) -> QualityError {
    QualityError::InvalidColumn {
        column: column.to_owned(),
        row: None,
        reason: reason.into(),
    }
}

/// One column from its arrays of type `data_type`.
fn column(name: &str, data_type: &DataType, arrays: &[&ArrayRef]) -> Result<Column, QualityError> {
    if let Some(cells) = arrays
        .iter()
        .map(|a| binary_cells(a.as_ref()))
        .collect::<Option<Vec<_>>>()
    {
        return Ok(Column::binary(name, cells.concat()));
    }
    if !is_text(data_type) {
        return Err(invalid(
            name,
            format!(
                "Arrow type {data_type} is not supported (numbers, booleans, strings, dates, \
                 timestamps, lists of numbers and binary images are)"
            ),
        ));
    }
    let options = FormatOptions::default().with_null("");
    let mut cells = Vec::new();
    for array in arrays {
        let formatter = ArrayFormatter::try_new(array.as_ref(), &options)
            .map_err(|e| invalid(name, e.to_string()))?;
        cells.extend((0..array.len()).map(|i| formatter.value(i).to_string()));
    }
    Ok(Column::new(name, cells))
}

/// Whether values of `data_type` become text cells.
fn is_text(data_type: &DataType) -> bool {
    if let DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) =
        data_type
    {
        return item.data_type().is_numeric();
    }
    if let DataType::Dictionary(_, values) = data_type {
        return !values.is_nested() && is_text(values);
    }
    data_type.is_numeric()
        || matches!(
            data_type,
            DataType::Null
                | DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
        )
}

/// The cells of a binary `array` (a null is an empty, that is missing, cell); `None` for an
/// array of another type.
fn binary_cells(array: &dyn Array) -> Option<Vec<Vec<u8>>> {
    let owned = |v: Option<&[u8]>| v.map(<[u8]>::to_vec).unwrap_or_default();
    if let Some(a) = array.as_binary_opt::<i32>() {
        return Some(a.iter().map(owned).collect());
    }
    if let Some(a) = array.as_binary_opt::<i64>() {
        return Some(a.iter().map(owned).collect());
    }
    if let Some(a) = array.as_binary_view_opt() {
        return Some(a.iter().map(owned).collect());
    }
    array
        .as_fixed_size_binary_opt()
        .map(|a| a.iter().map(owned).collect())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::types::Int32Type;
    use arrow_array::{
        BinaryArray, BooleanArray, Date32Array, DictionaryArray, Float64Array, Int64Array,
        StringArray, StructArray, TimestampSecondArray,
    };
    use arrow_schema::Field;
    use parquet::arrow::ArrowWriter;

    use super::*;
    use crate::automl::{ColumnRole, infer_schema};

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn texts(table: &Table, name: &str) -> Vec<Option<String>> {
        let column = table.column(name).unwrap();
        (0..column.len())
            .map(|i| column.get(i).map(str::to_owned))
            .collect()
    }

    fn embeddings() -> ArrayRef {
        let mut list = FixedSizeListBuilder::new(Float32Builder::new(), 2);
        for (x, y) in [(0.5, 1.0), (-1.0, 2.0), (0.0, 0.25)] {
            list.values().append_value(x);
            list.values().append_value(y);
            list.append(true);
        }
        Arc::new(list.finish())
    }

    fn typed_batch() -> RecordBatch {
        batch(vec![
            (
                "n",
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
            ),
            ("x", Arc::new(Float64Array::from(vec![1.0, 2.5, -0.125]))),
            (
                "flag",
                Arc::new(BooleanArray::from(vec![true, false, true])),
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), Some("b c"), None])),
            ),
            (
                "cat",
                Arc::new(DictionaryArray::<Int32Type>::from_iter(["u", "v", "u"])),
            ),
            ("day", Arc::new(Date32Array::from(vec![0, 19_786, 1]))),
            (
                "at",
                Arc::new(
                    TimestampSecondArray::from(vec![0, 1_709_530_200, 60]).with_timezone("+00:00"),
                ),
            ),
            ("emb", embeddings()),
        ])
    }

    #[test]
    fn batches_become_text_cells_of_the_csv_path() {
        let b = typed_batch();
        let table = table_from_batches(&b.schema(), &[b.clone(), b.clone()]).unwrap();
        assert_eq!(table.n(), 6);
        let names: Vec<&str> = table.columns().iter().map(Column::name).collect();
        assert_eq!(names, ["n", "x", "flag", "s", "cat", "day", "at", "emb"]);
        let some = |v: &[&str]| v.iter().map(|s| Some((*s).to_owned())).collect::<Vec<_>>();
        assert_eq!(
            texts(&table, "n")[..3],
            [Some("1".into()), None, Some("3".into())]
        );
        assert_eq!(texts(&table, "x")[..3], some(&["1.0", "2.5", "-0.125"]));
        assert_eq!(texts(&table, "flag")[..3], some(&["true", "false", "true"]));
        assert_eq!(texts(&table, "s")[2], None);
        assert_eq!(texts(&table, "cat")[..3], some(&["u", "v", "u"]));
        assert_eq!(
            texts(&table, "day")[..2],
            some(&["1970-01-01", "2024-03-04"])
        );
        assert_eq!(texts(&table, "emb")[..1], some(&["[0.5, 1.0]"]));

        // The text is what the datetime and embedding roles recognise.
        let plans = infer_schema(&table, "flag", &[], &Default::default()).unwrap();
        let role = |name: &str| plans.iter().find(|p| p.name == name).unwrap().role;
        assert_eq!(role("at"), ColumnRole::Datetime);
        assert_eq!(role("day"), ColumnRole::Datetime);
        assert_eq!(role("emb"), ColumnRole::Embedding);
        assert_eq!(role("x"), ColumnRole::Numeric);
    }

    #[test]
    fn binary_columns_are_binary_cells() {
        let bytes = BinaryArray::from_opt_vec(vec![Some(b"\x89PNG".as_slice()), None]);
        let b = batch(vec![("img", Arc::new(bytes) as ArrayRef)]);
        let table = table_from_batches(&b.schema(), &[b]).unwrap();
        let img = table.column("img").unwrap();
        assert!(img.is_binary());
        assert_eq!(img.bytes(0), Some(b"\x89PNG".as_slice()));
        assert_eq!(img.bytes(1), None);
    }

    #[test]
    fn unsupported_types_name_the_column() {
        let inner = StructArray::from(vec![(
            Arc::new(Field::new("a", DataType::Int64, false)),
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        )]);
        let b = batch(vec![
            ("ok", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("nested", Arc::new(inner)),
        ]);
        let error = table_from_batches(&b.schema(), &[b]).unwrap_err();
        let QualityError::InvalidColumn { column, reason, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(column, "nested");
        assert!(reason.contains("Struct"), "{reason}");
    }

    #[test]
    fn parquet_files_round_trip() {
        let b = typed_batch();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let mut writer = ArrowWriter::try_new(file.as_file_mut(), b.schema(), None).unwrap();
        writer.write(&b).unwrap();
        writer.close().unwrap();
        let table = read_parquet(file.path()).unwrap();
        assert_eq!(table, table_from_batches(&b.schema(), &[b]).unwrap());

        file.as_file_mut().set_len(20).unwrap();
        let error = read_parquet(file.path()).unwrap_err();
        assert!(matches!(error, ReadError::Parquet(_)), "{error}");
    }

    fn jsonl(text: &str) -> Result<Table, ReadError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        read_jsonl(file.path())
    }

    #[test]
    fn jsonl_files_keep_field_order_and_types() {
        let table = jsonl(
            "{\"z\": 1, \"a\": \"x\", \"e\": [0.5, 1]}\n\n{\"a\": null, \"z\": 2.5, \"b\": true}\n",
        )
        .unwrap();
        let names: Vec<&str> = table.columns().iter().map(Column::name).collect();
        assert_eq!(names, ["z", "a", "e", "b"]);
        assert_eq!(texts(&table, "z"), [Some("1.0".into()), Some("2.5".into())]);
        assert_eq!(texts(&table, "a"), [Some("x".into()), None]);
        assert_eq!(texts(&table, "e"), [Some("[0.5, 1.0]".into()), None]);
        assert_eq!(texts(&table, "b"), [None, Some("true".into())]);

        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"\n{\"a\": 1}\n\n\n{\"a\": 2}\n").unwrap();
        let (table, lines) = read_jsonl_lines(file.path()).unwrap();
        assert_eq!(table.n(), 2);
        assert_eq!(lines, [2, 5]);
    }

    #[test]
    fn jsonl_image_data_uris_are_binary_cells() {
        use base64::Engine as _;
        let png = b"\x89PNG\r\n\x1a\n";
        let uri = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png)
        );
        let table = jsonl(&format!(
            "{{\"img\": \"{uri}\", \"n\": \"{uri}\"}}\n{{\"img\": null, \"n\": \"text\"}}\n"
        ))
        .unwrap();
        let img = table.column("img").unwrap();
        assert!(img.is_binary());
        assert_eq!((img.bytes(0), img.bytes(1)), (Some(png.as_slice()), None));
        assert!(!table.column("n").unwrap().is_binary());

        let error = jsonl("{\"a\": 1}\n{\"img\": \"data:image/png;base64,@@\"}\n").unwrap_err();
        assert!(
            matches!(error, ReadError::InvalidLine { line: 2, .. }),
            "{error}"
        );
    }

    #[test]
    fn jsonl_errors_name_line_and_field() {
        let error = jsonl("{\"a\": 1}\n{\"a\": 2\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 2: not valid JSON: it ends too soon"
        );
        let error = jsonl("{\"a\": 1}\n\n[1]\n").unwrap_err();
        assert!(
            matches!(error, ReadError::InvalidLine { line: 3, .. }),
            "{error}"
        );

        let error = jsonl("{\"a\": 1}\n{\"a\": null}\n{\"a\": \"one\"}\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 3, field \"a\": string value, but line 1 has a number value"
        );

        let error = jsonl("{\"a\": 1, \"o\": {\"k\": 1}}\n").unwrap_err();
        let ReadError::Table(QualityError::InvalidColumn { column, .. }) = &error else {
            panic!("{error}");
        };
        assert_eq!(column, "o");
        assert!(matches!(
            jsonl("\n\n").unwrap_err(),
            ReadError::Table(QualityError::Empty)
        ));
    }
}
