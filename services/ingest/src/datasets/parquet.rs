//! Parquet validation and parsing into columns of strings, like a CSV file's: each value as the
//! text a CSV file would hold (numbers, booleans, strings, decimals, dates and timestamps in ISO
//! 8601), a null an empty cell; binary columns (encoded images, see `schema.rs`) keep their bytes. A row's "line" is its 1-based row number. Every rejection names its
//! column, never a value.

// NOTE: values go to text rather than keeping their Parquet types: the schema inference of
// `schema.rs` runs on text cells for every format, so a Parquet upload and the equivalent CSV one
// get the same schema and rows.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::PageType;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::serialized_reader::SerializedPageReader;

use super::csv::{Cells, Rejection, Table};

/// Parses `bytes` as a Parquet file into a [`Table`]: flat columns of supported types with unique,
/// non-empty names, at most `max_rows` rows and `max_columns` columns. Compression: none or Snappy.
pub(crate) fn parse(bytes: Bytes, max_rows: u64, max_columns: usize) -> Result<Table, Rejection> {
    // NOTE: the parquet crate asserts on some corrupt metadata (a negative column offset, found by
    // fuzz/ingest_parquet) instead of returning an error; such a file is as corrupt as one it
    // refuses, and must not take the upload's task down.
    std::panic::catch_unwind(AssertUnwindSafe(|| read(bytes, max_rows, max_columns)))
        .unwrap_or_else(|_| {
            Err(Rejection::new(
                "PARQUET_CORRUPT",
                "the file is not a readable Parquet file: its metadata is inconsistent",
            ))
        })
}

/// [`parse`], without its guard against the reader's panics.
fn read(bytes: Bytes, max_rows: u64, max_columns: usize) -> Result<Table, Rejection> {
    if bytes.is_empty() {
        return Err(Rejection::new("EMPTY_FILE", "the file is empty"));
    }
    let bytes_len = bytes.len();
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(corrupt)?;
    let schema = builder.schema().clone();
    let fields = schema.fields();
    if fields.len() > max_columns {
        return Err(Rejection::new(
            "TOO_MANY_COLUMNS",
            format!(
                "the file has {} columns; at most {max_columns} are allowed",
                fields.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (index, field) in fields.iter().enumerate() {
        let name = field.name();
        if name.trim().is_empty() {
            return Err(Rejection::new(
                "PARQUET_EMPTY_COLUMN_NAME",
                format!("column {} has no name", index + 1),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(Rejection::new(
                "PARQUET_DUPLICATE_COLUMN",
                format!("column \"{name}\" appears twice"),
            )
            .at(None, Some(name)));
        }
        if !supported(field.data_type()) {
            return Err(Rejection::new(
                "PARQUET_UNSUPPORTED_TYPE",
                format!(
                    "column \"{name}\" has type {}; only numbers, booleans, strings, decimals, \
                     dates, timestamps and binary (encoded images) are supported (no nested \
                     columns)",
                    field.data_type()
                ),
            )
            .at(None, Some(name)));
        }
    }
    let rows = builder.metadata().file_metadata().num_rows();
    if u64::try_from(rows).unwrap_or(u64::MAX) > max_rows {
        return Err(Rejection::new(
            "TOO_MANY_ROWS",
            format!("the file has {rows} rows; at most {max_rows} are allowed"),
        ));
    }
    // Parquet compresses runs (all-null columns, one repeated dictionary value) to almost nothing,
    // so a small file can claim billions of cells: the text it decodes to is budgeted by the
    // file's size, before decoding (the rows it claims) and while decoding (what it holds).
    let budget = decode_budget(bytes_len);
    let claimed = usize::try_from(rows)
        .unwrap_or(usize::MAX)
        .saturating_mul(fields.len())
        .saturating_mul(CELL_OVERHEAD);
    if claimed > budget {
        return Err(too_large(budget));
    }
    check_layout(&bytes, builder.metadata(), budget)?;
    let options = FormatOptions::default().with_null("");
    let mut table = Table {
        names: fields.iter().map(|f| f.name().clone()).collect(),
        columns: vec![Cells::default(); fields.len()],
        lines: Vec::new(),
        binary: std::collections::BTreeMap::new(),
    };
    let mut decoded = 0_usize;
    let mut text = String::new();
    // One batch at a time: the decoded arrays of the whole file are never held at once.
    for batch in builder.build().map_err(corrupt)? {
        let batch = batch.map_err(|e| corrupt(ParquetError::from(e)))?;
        for (index, ((array, values), name)) in batch
            .columns()
            .iter()
            .zip(&mut table.columns)
            .zip(&table.names)
            .enumerate()
        {
            if let Some(bytes) = binary_values(array.as_ref()) {
                let column = table.binary.entry(index).or_default();
                for value in bytes {
                    let value = value.unwrap_or_default();
                    decoded = decoded.saturating_add(CELL_OVERHEAD + value.len());
                    if decoded > budget {
                        return Err(too_large(budget));
                    }
                    column.push(value.to_vec());
                    values.push("").map_err(|e| e.at(None, Some(name)))?;
                }
                continue;
            }
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options).map_err(|e| {
                Rejection::new(
                    "PARQUET_UNSUPPORTED_TYPE",
                    format!("column \"{name}\" cannot be read as text: {e}"),
                )
                .at(None, Some(name))
            })?;
            for i in 0..array.len() {
                text.clear();
                write!(text, "{}", formatter.value(i)).map_err(|_| {
                    Rejection::new(
                        "PARQUET_UNSUPPORTED_TYPE",
                        format!("column \"{name}\" cannot be read as text"),
                    )
                    .at(None, Some(name))
                })?;
                decoded = decoded.saturating_add(CELL_OVERHEAD + text.len());
                if decoded > budget {
                    return Err(too_large(budget));
                }
                values.push(&text).map_err(|e| e.at(None, Some(name)))?;
            }
        }
        if table.columns.first().map_or(0, Cells::len) as u64 > max_rows {
            return Err(Rejection::new(
                "TOO_MANY_ROWS",
                format!("the file has more than {max_rows} rows, the most allowed"),
            ));
        }
    }
    let count = table.columns.first().map_or(0, Cells::len);
    table.lines = (1..=count as u64).collect();
    if count == 0 {
        return Err(Rejection::new("NO_ROWS", "the file has no rows"));
    }
    Ok(table)
}

/// What one cell is counted for besides its text: what a `String` of its own would cost (the
/// table's compact cells cost less, so the budget errs on the safe side).
const CELL_OVERHEAD: usize = std::mem::size_of::<String>();
/// Every file may decode to this much, however small.
const MIN_DECODE_BUDGET: usize = 64 << 20;
/// And a larger file to this many times its size (text of well-compressed real data stays far below).
const MAX_EXPANSION: usize = 64;

/// How much a file of `len` bytes may decode to.
fn decode_budget(len: usize) -> usize {
    len.saturating_mul(MAX_EXPANSION).max(MIN_DECODE_BUDGET)
}

fn too_large(budget: usize) -> Rejection {
    Rejection::new(
        "PARQUET_TOO_LARGE",
        format!(
            "the file decodes to more than {} MiB of values ({MAX_EXPANSION} times its size, at \
             least {} MiB); split it or upload it as CSV",
            budget >> 20,
            MIN_DECODE_BUDGET >> 20
        ),
    )
}

/// Refuses a file whose metadata claims what its bytes cannot hold, before the reader sizes
/// buffers by those claims (found by fuzz/ingest_parquet: a dictionary page claiming billions of
/// values makes the reader allocate gigabytes for them): row groups whose rows do not add up to
/// the file's, column chunks outside the file or expanding past `budget`, a dictionary page with
/// more values than bytes, data pages with more values than their row group has rows. Reads each
/// page once (one at a time), without decoding its values.
fn check_layout(bytes: &Bytes, metadata: &ParquetMetaData, budget: usize) -> Result<(), Rejection> {
    let len = bytes.len() as u64;
    let budget = budget as u64;
    let mut rows = 0_i64;
    for row_group in metadata.row_groups() {
        let group_rows = row_group.num_rows();
        rows = rows.saturating_add(group_rows);
        if group_rows < 0 {
            return Err(inconsistent("a row group has a negative row count"));
        }
        for column in row_group.columns() {
            let (start, size) = column.byte_range();
            if start.checked_add(size).is_none_or(|end| end > len)
                || u64::try_from(column.uncompressed_size()).map_or(true, |n| n > budget)
                || !(0..=group_rows).contains(&column.num_values())
            {
                return Err(inconsistent(
                    "a column chunk lies outside the file or claims more than it can hold",
                ));
            }
            let total = usize::try_from(group_rows).unwrap_or(usize::MAX);
            let pages = SerializedPageReader::new(Arc::new(bytes.clone()), column, total, None)
                .map_err(corrupt)?;
            let mut values = 0_u64;
            for page in pages {
                let page = page.map_err(corrupt)?;
                let count = u64::from(page.num_values());
                if page.page_type() == PageType::DICTIONARY_PAGE {
                    if count > page.buffer().len() as u64 {
                        return Err(inconsistent(
                            "a dictionary page claims more values than it has bytes",
                        ));
                    }
                } else {
                    values = values.saturating_add(count);
                    if values > group_rows.unsigned_abs() {
                        return Err(inconsistent(
                            "a column's pages claim more values than its row group has rows",
                        ));
                    }
                }
            }
        }
    }
    if rows != metadata.file_metadata().num_rows() {
        return Err(inconsistent(
            "the row groups' rows do not add up to the file's",
        ));
    }
    Ok(())
}

fn inconsistent(what: &str) -> Rejection {
    Rejection::new(
        "PARQUET_CORRUPT",
        format!("the file is not a readable Parquet file: its metadata is inconsistent ({what})"),
    )
}

/// Whether values of `data_type` have a text form that schema inference reads.
/// A binary array's values (`None` for a null), or `None` when `array` is not binary.
fn binary_values(array: &dyn arrow_array::Array) -> Option<Vec<Option<&[u8]>>> {
    use arrow_array::cast::AsArray as _;
    if let Some(binary) = array.as_binary_opt::<i32>() {
        return Some(binary.iter().collect());
    }
    array
        .as_binary_opt::<i64>()
        .map(|binary| binary.iter().collect())
}

fn supported(data_type: &DataType) -> bool {
    if let DataType::Dictionary(_, values) = data_type {
        return supported(values);
    }
    data_type.is_numeric()
        || matches!(
            data_type,
            DataType::Null
                | DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
        )
}

fn corrupt(error: ParquetError) -> Rejection {
    // NOTE: the reader's errors describe the file's structure (footer, pages, codecs), not values.
    Rejection::new(
        "PARQUET_CORRUPT",
        format!("the file is not a readable Parquet file: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;

    use super::*;

    fn file(columns: Vec<(&str, ArrayRef)>) -> Bytes {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        Bytes::from(out)
    }

    #[test]
    fn parses_values_as_csv_text() {
        let bytes = file(vec![
            (
                "n",
                Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            ("x", Arc::new(Float64Array::from(vec![2.5, 1.0]))),
            ("b", Arc::new(BooleanArray::from(vec![true, false]))),
            ("s", Arc::new(StringArray::from(vec!["a", "b c"]))),
        ]);
        let table = parse(bytes, 100, 100).unwrap();
        assert_eq!(table.names, ["n", "x", "b", "s"]);
        assert_eq!(
            table
                .columns
                .iter()
                .map(|c| c.iter().collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            [
                vec!["1", ""],
                vec!["2.5", "1.0"],
                vec!["true", "false"],
                vec!["a", "b c"]
            ]
        );
        assert_eq!(table.lines, [1, 2]);
    }

    #[test]
    fn a_small_file_decoding_to_too_much_is_refused() {
        // 4 M nulls compress to a few KiB but would be 4 M cells in the table.
        let nulls = Int64Array::from(vec![None; 4_000_000]);
        let bytes = file(vec![("n", Arc::new(nulls) as ArrayRef)]);
        assert!(bytes.len() < 1 << 20, "{}", bytes.len());
        let rejection = parse(bytes, 10_000_000, 100).unwrap_err();
        assert_eq!(rejection.code, "PARQUET_TOO_LARGE");
    }

    #[test]
    fn metadata_the_reader_panics_on_is_corrupt() {
        // Found by the fuzzer: a column chunk with a negative offset trips an assert in the reader.
        let bytes =
            include_bytes!("../../../../fuzz/corpus/ingest_parquet/negative-column-offset.parquet");
        let rejection = parse(Bytes::from_static(bytes), 100, 100).unwrap_err();
        assert_eq!(rejection.code, "PARQUET_CORRUPT");
    }

    #[test]
    fn a_dictionary_page_claiming_more_values_than_bytes_is_corrupt() {
        // Found by the fuzzer: the reader sized a buffer by the claim (gigabytes) before decoding.
        let bytes = include_bytes!(
            "../../../../fuzz/corpus/ingest_parquet/dictionary-claims-billions.parquet"
        );
        let rejection = parse(Bytes::from_static(bytes), 1_000_000, 100).unwrap_err();
        assert_eq!(rejection.code, "PARQUET_CORRUPT");
        assert!(rejection.message.contains("inconsistent"), "{rejection}");
    }

    #[test]
    fn a_binary_column_of_encoded_images_is_an_image_column() {
        use trustmesh_proto::v1::column_data::Values;
        use trustmesh_proto::v1::{ColumnType, Modality};

        let images = trustmesh_quality::modality::synth::bench_images(3, 16, 1);
        let cells: Vec<Option<&[u8]>> =
            vec![Some(&images[0]), None, Some(&images[1]), Some(&images[2])];
        let bytes = file(vec![
            (
                "label",
                Arc::new(StringArray::from(vec!["a", "b", "a", "b"])) as ArrayRef,
            ),
            ("photo", Arc::new(arrow_array::BinaryArray::from(cells))),
        ]);
        let table = parse(bytes, 100, 100).unwrap();
        assert_eq!(table.row_count(), 4);
        let inferred = super::super::schema::infer(table, &[], "").unwrap();
        assert_eq!(inferred.modality, Modality::Image);
        let photo = &inferred.schema.columns[1];
        assert_eq!(
            (photo.r#type(), photo.null_count, photo.index),
            (ColumnType::Image, 1, 1)
        );
        assert_eq!(inferred.columns[1].valid, [true, false, true, true]);
        let Some(Values::Images(stored)) = &inferred.columns[1].values else {
            panic!("images are bytes");
        };
        assert_eq!(stored.values[2], images[1]);

        let cells: Vec<Option<&[u8]>> = vec![Some(&images[0]), Some(b"not an image")];
        let bytes = file(vec![(
            "blob",
            Arc::new(arrow_array::BinaryArray::from(cells)) as ArrayRef,
        )]);
        let rejection =
            super::super::schema::infer(parse(bytes, 100, 100).unwrap(), &[], "").unwrap_err();
        assert_eq!(
            (rejection.code, rejection.line, rejection.column.as_deref()),
            ("UNSUPPORTED_BINARY_COLUMN", Some(2), Some("blob"))
        );
    }

    #[test]
    fn rejections_name_the_column() {
        let mut list = ListBuilder::new(StringBuilder::new());
        list.values().append_value("x");
        list.append(true);
        let bytes = file(vec![
            ("ok", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("tags", Arc::new(list.finish())),
        ]);
        let nested = parse(bytes, 100, 100).unwrap_err();
        assert_eq!(nested.code, "PARQUET_UNSUPPORTED_TYPE");
        assert_eq!(nested.column.as_deref(), Some("tags"));
        assert!(nested.message.contains("\"tags\""), "{nested}");

        let bytes = file(vec![(
            "a",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
        )]);
        assert_eq!(
            parse(bytes.clone(), 2, 100).unwrap_err().code,
            "TOO_MANY_ROWS"
        );
        assert_eq!(
            parse(bytes.slice(..bytes.len() - 10), 100, 100)
                .unwrap_err()
                .code,
            "PARQUET_CORRUPT"
        );
        assert_eq!(
            parse(Bytes::from_static(b"a,b\n1,2\n"), 100, 100)
                .unwrap_err()
                .code,
            "PARQUET_CORRUPT"
        );
        assert_eq!(
            parse(Bytes::new(), 100, 100).unwrap_err().code,
            "EMPTY_FILE"
        );
    }
}
