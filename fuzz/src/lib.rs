//! What the fuzz targets call. The upload parsers are ingest's own source files, compiled here as
//! they are (they depend on nothing but std and their parsing crates), so the fuzz build does not
//! pull ingest's service stack (tonic, sqlx, S3) and no parser is copied.
// NOTE: ingest uses every item of these modules; here only the entry points are.
#![allow(dead_code)]

#[path = "../../services/ingest/src/datasets/csv.rs"]
mod csv;
#[path = "../../services/ingest/src/datasets/jsonl.rs"]
mod jsonl;
#[path = "../../services/ingest/src/datasets/parquet.rs"]
mod parquet;

/// Ingest's default limits.
const MAX_ROWS: u64 = 1_000_000;
const MAX_COLUMNS: usize = 2048;

/// The invariants ingest relies on when it stores a parsed table.
fn check(table: &csv::Table) {
    assert_eq!(table.names.len(), table.columns.len());
    assert!(table.columns.iter().all(|c| c.len() == table.row_count()));
}

/// Ingest's CSV parser on `data`, with the option bits the first byte picks (delimiter, header)
/// and ingest's default limits; any outcome but a panic is fine. So for the others.
pub fn ingest_csv(data: &[u8]) {
    let Some((&options, bytes)) = data.split_first() else {
        return;
    };
    let delimiter = [b',', b';', b'\t', b'|'][usize::from(options & 3)];
    let options = csv::CsvOptions {
        delimiter,
        has_header: options & 4 == 0,
    };
    if let Ok(table) = csv::parse(bytes, options, MAX_ROWS, MAX_COLUMNS) {
        check(&table);
    }
}

/// Ingest's JSONL parser on `data`.
pub fn ingest_jsonl(data: &[u8]) {
    if let Ok(table) = jsonl::parse(data, MAX_ROWS, MAX_COLUMNS) {
        check(&table);
    }
}

/// Ingest's Parquet reader on `data`.
pub fn ingest_parquet(data: &[u8]) {
    if let Ok(table) = parquet::parse(bytes::Bytes::copy_from_slice(data), MAX_ROWS, MAX_COLUMNS) {
        check(&table);
    }
}
