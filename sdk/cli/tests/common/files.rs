//! Files the `trustmesh check` tests write and read: Parquet inputs and the `--out` rows CSV.
//! Included with `#[path]` by the tests that need only this (`check.rs`, `check_image_table.rs`) and
//! as `common::files` by the others.
#![allow(dead_code)]

use std::path::Path;

/// Writes `columns` as a Parquet file at `to`.
pub(crate) fn write_parquet(to: &Path, columns: Vec<(&str, arrow_array::ArrayRef)>) {
    let batch = arrow_array::RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(to).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// The header and records of the CSV file at `path`.
pub(crate) fn read_rows(path: &Path) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    (header, reader.records().map(Result::unwrap).collect())
}
