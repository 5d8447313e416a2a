//! What the fuzz targets call. The upload parsers are ingest's own source files, compiled here as
//! they are (they depend on nothing but std and their parsing crates), so the fuzz build does not
//! pull ingest's service stack (tonic, sqlx, S3) and no parser is copied.
// NOTE: ingest uses every item of these modules; here only the entry points are.
#![allow(dead_code)]

#[path = "../../services/ingest/src/datasets/csv.rs"]
mod csv;

/// Ingest's CSV parser on `data`, with the option bits the first byte picks (delimiter, header)
/// and ingest's default limits; any outcome but a panic is fine.
pub fn ingest_csv(data: &[u8]) {
    let Some((&options, bytes)) = data.split_first() else {
        return;
    };
    let delimiter = [b',', b';', b'\t', b'|'][usize::from(options & 3)];
    let options = csv::CsvOptions {
        delimiter,
        has_header: options & 4 == 0,
    };
    if let Ok(table) = csv::parse(bytes, options, 1_000_000, 2048) {
        // The invariants ingest relies on when it stores the table.
        assert_eq!(table.names.len(), table.columns.len());
        assert!(table.columns.iter().all(|c| c.len() == table.row_count()));
    }
}
