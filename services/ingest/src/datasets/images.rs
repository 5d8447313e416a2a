//! `DATASET_FORMAT_IMAGE_ZIP` uploads, read by the quality engine's [`read_archive`] (the one
//! `trustmesh check` uses) in either of its layouts, told apart by the archive's root:
//!
//! - One folder per class (no table at the root): one row per file, `path` (its path in the
//!   archive, the dataset's id column), `label` (its folder's name) and `image` (its bytes).
//! - One table at the root (`*.csv`, `*.jsonl` or `*.parquet`, e.g. `metadata.csv`), one row per
//!   table row: the table's column naming files of the archive (see
//!   [`TableArchive::path_column`]) holds each row's image path; it becomes the IMAGE column (its
//!   bytes; named `image` when the column was `path`), preceded by `path` (the paths, the id
//!   column), and the table's other columns are inferred as any table's are (the label, features,
//!   text). A path that names no file of the archive (empty, missing, or escaping it with `..` or
//!   an absolute path) keeps its row with a missing image, which analysis reports as not analyzed,
//!   naming the row and path; the upload is not refused for it.
//!
//! The images are stored in the encrypted `rows` object like every other cell, so a dataset's and
//! a tenant's deletion remove them with the rows.
//!
//! Limits against decompression bombs, each refusing the upload with the file it stopped at: at
//! most `max_rows` files (and table rows), expanding to at most `max_upload_bytes` in all (images
//! barely compress, so an honest archive expands to about its own size), and no image declaring
//! more than [`MAX_IMAGE_PIXELS`] pixels in its header. A file that is no image, or a corrupt one,
//! keeps its row: analysis reports it as not analyzed, with the reason.

use bytes::Bytes;
use trustmesh_proto::v1::column_data::Values;
use trustmesh_proto::v1::{
    BytesValues, Column, ColumnData, ColumnOverride, ColumnRole, ColumnType, Modality, Schema,
    StringValues,
};
use trustmesh_quality::modality::{
    ArchiveError, ArchiveFile, ArchiveLimits, ImageArchive, TableArchive, TableFormat,
    image_dimensions, read_archive,
};

use super::csv::{CsvOptions, Rejection, Table};
use super::schema::{self, Inferred};

/// Largest image an upload may hold, in pixels by its header (8,000 × 8,000): a few hundred
/// megabytes once decoded, the most analysis decodes at once per thread.
pub(crate) const MAX_IMAGE_PIXELS: u64 = 64_000_000;

/// The id column of an image archive's rows: each image's path in the archive.
const PATH_COLUMN: &str = "path";

/// The rejection of an archive error, with a stable code.
fn rejection(error: &ArchiveError) -> Rejection {
    let code = match error {
        ArchiveError::TooManyFiles { .. } => "ARCHIVE_TOO_MANY_FILES",
        ArchiveError::TooManyBytes { .. } => "ARCHIVE_TOO_LARGE",
        ArchiveError::NotZip(_)
        | ArchiveError::Unreadable { .. }
        | ArchiveError::Extract { .. } => "ARCHIVE_UNREADABLE",
        ArchiveError::UnsafePath(_) => "ARCHIVE_UNSAFE_PATH",
        ArchiveError::NotInFolder(_) => "ARCHIVE_NOT_FOLDER_PER_CLASS",
        ArchiveError::TwoTables(..) => "ARCHIVE_TWO_TABLES",
        ArchiveError::Empty => "EMPTY_FILE",
    };
    Rejection::new(code, format!("image archive: {error}"))
}

/// Refuses an image declaring more than [`MAX_IMAGE_PIXELS`] pixels, naming it as `what`.
pub(crate) fn check_pixels(what: &str, bytes: &[u8]) -> Result<(), Rejection> {
    if let Some((w, h)) = image_dimensions(bytes) {
        let pixels = u64::from(w) * u64::from(h);
        if pixels > MAX_IMAGE_PIXELS {
            return Err(Rejection::new(
                "IMAGE_TOO_LARGE",
                format!(
                    "{what} declares {w}×{h} = {pixels} pixels, over the limit of \
                     {MAX_IMAGE_PIXELS}"
                ),
            ));
        }
    }
    Ok(())
}

/// The schema entry of an image archive's column.
fn column(name: &str, t: ColumnType, role: ColumnRole, distinct: u64) -> Column {
    Column {
        name: name.to_owned(),
        index: 0,
        r#type: t.into(),
        role: role.into(),
        role_overridden: false,
        null_count: 0,
        distinct_count: distinct,
        list_length: 0,
    }
}

/// A column's values, all present.
fn data(name: &str, values: Values) -> ColumnData {
    ColumnData {
        name: name.to_owned(),
        valid: Vec::new(),
        values: Some(values),
    }
}

/// Reads an image archive (either layout, see the module's documentation) into its columns.
/// `id_column` must be empty or `path`; `overrides` must be empty for a folder-per-class archive
/// and may name the table's columns (but its path column) for a table archive.
///
/// # Errors
/// A rejection naming the limit and the file for an archive over the limits
/// (`ARCHIVE_TOO_MANY_FILES`, `ARCHIVE_TOO_LARGE`, `IMAGE_TOO_LARGE`, `TOO_MANY_ROWS`), or why it
/// cannot be read (its table's rejection naming the table).
pub(crate) fn parse(
    bytes: &[u8],
    max_files: u64,
    max_columns: usize,
    max_bytes: u64,
    overrides: &[ColumnOverride],
    id_column: &str,
) -> Result<Inferred, Rejection> {
    if !(id_column.is_empty() || id_column == PATH_COLUMN) {
        return Err(Rejection::new(
            "UNSUPPORTED_OVERRIDE",
            "an image archive's id column is `path`, each image's path in the archive",
        ));
    }
    let limits = ArchiveLimits {
        max_files: usize::try_from(max_files).unwrap_or(usize::MAX),
        max_bytes,
    };
    match read_archive(std::io::Cursor::new(bytes), limits).map_err(|e| rejection(&e))? {
        ImageArchive::Folders(files) => folders(files, overrides),
        ImageArchive::Table(archive) => table(&archive, max_files, max_columns, overrides),
    }
}

/// The `path`, `label` and `image` columns of a folder-per-class archive.
fn folders(files: Vec<ArchiveFile>, overrides: &[ColumnOverride]) -> Result<Inferred, Rejection> {
    if !overrides.is_empty() {
        return Err(Rejection::new(
            "UNSUPPORTED_OVERRIDE",
            "a folder-per-class archive's columns (path, label, image) cannot be overridden",
        ));
    }
    for file in &files {
        check_pixels(&format!("image archive: {:?}", file.path), &file.bytes)?;
    }
    let rows = files.len() as u64;
    let distinct_labels = files
        .iter()
        .map(|f| f.label.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let mut paths = Vec::with_capacity(files.len());
    let mut labels = Vec::with_capacity(files.len());
    let mut images = Vec::with_capacity(files.len());
    for file in files {
        paths.push(file.path);
        labels.push(file.label);
        images.push(file.bytes);
    }
    let mut schema = Schema {
        columns: vec![
            column(PATH_COLUMN, ColumnType::String, ColumnRole::Id, rows),
            column(
                "label",
                ColumnType::String,
                ColumnRole::Label,
                distinct_labels,
            ),
            column("image", ColumnType::Image, ColumnRole::Image, rows),
        ],
        id_column: PATH_COLUMN.to_owned(),
    };
    number(&mut schema);
    Ok(Inferred {
        schema,
        columns: vec![
            data(PATH_COLUMN, Values::Strings(StringValues { values: paths })),
            data("label", Values::Strings(StringValues { values: labels })),
            data("image", Values::Images(BytesValues { values: images })),
        ],
        modality: Modality::Image,
    })
}

/// Sets each schema column's index to its position.
fn number(schema: &mut Schema) {
    for (index, column) in schema.columns.iter_mut().enumerate() {
        column.index = u32::try_from(index).unwrap_or(u32::MAX);
    }
}

/// Parses a table archive's table with the reader of its format, naming the table in rejections.
fn parse_table(
    archive: &TableArchive,
    max_rows: u64,
    max_columns: usize,
) -> Result<Table, Rejection> {
    let bytes = archive.table.as_slice();
    match archive.format {
        TableFormat::Csv => {
            let options = CsvOptions {
                delimiter: b',',
                has_header: true,
            };
            super::csv::parse(bytes, options, max_rows, max_columns)
        }
        TableFormat::Jsonl => super::jsonl::parse(bytes, max_rows, max_columns),
        TableFormat::Parquet => {
            super::parquet::parse(Bytes::copy_from_slice(bytes), max_rows, max_columns)
        }
    }
    .map_err(|r| Rejection {
        message: format!("image archive: {}: {}", archive.table_path, r.message),
        ..r
    })
}

/// The columns of a table archive: `path` (the id), then the table's columns, its path column
/// holding the images' bytes (missing where the path names no file of the archive).
fn table(
    archive: &TableArchive,
    max_rows: u64,
    max_columns: usize,
    overrides: &[ColumnOverride],
) -> Result<Inferred, Rejection> {
    let table = parse_table(archive, max_rows, max_columns.saturating_sub(1))?;
    let cells = table
        .columns
        .iter()
        .map(|c| c.iter().map(|v| Some(v).filter(|v| !v.trim().is_empty())));
    let Some(at) = archive.path_column(cells) else {
        return Err(Rejection::new(
            "ARCHIVE_NO_PATH_COLUMN",
            format!(
                "image archive: no column of {} names files of the archive (at least half of a \
                 column's values must be paths of files in the archive)",
                archive.table_path
            ),
        ));
    };
    let source = table.names[at].clone();
    let image_name = if source == PATH_COLUMN {
        "image"
    } else {
        source.as_str()
    }
    .to_owned();
    if let Some(taken) = table
        .names
        .iter()
        .find(|n| **n != source && (**n == PATH_COLUMN || **n == image_name))
    {
        return Err(Rejection::new(
            "ARCHIVE_COLUMN_CONFLICT",
            format!(
                "image archive: {} has a column {taken:?} besides its path column {source:?}; \
                 the dataset's `{PATH_COLUMN}` (the paths) and {image_name:?} (the images) \
                 columns need those names",
                archive.table_path
            ),
        )
        .at(None, Some(taken)));
    }
    if overrides.iter().any(|o| o.column == source) {
        return Err(Rejection::new(
            "UNSUPPORTED_OVERRIDE",
            format!("column {source:?} holds the image paths; it cannot be overridden"),
        )
        .at(None, Some(&source)));
    }
    let paths: Vec<String> = table.columns[at].iter().map(str::to_owned).collect();
    let mut images = Vec::with_capacity(paths.len());
    let mut valid = Vec::with_capacity(paths.len());
    for path in &paths {
        match archive.resolve(path) {
            Ok(bytes) => {
                check_pixels(&format!("image archive: {path:?}"), bytes)?;
                images.push(bytes.to_vec());
                valid.push(true);
            }
            Err(_) => {
                images.push(Vec::new());
                valid.push(false);
            }
        }
    }
    let rows = paths.len() as u64;
    let missing = valid.iter().filter(|v| !**v).count() as u64;
    let distinct_paths = paths
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let mut inferred = schema::infer(table, overrides, "")?;
    let meta = &mut inferred.schema.columns[at];
    *meta = Column {
        null_count: missing,
        distinct_count: rows - missing,
        ..column(&image_name, ColumnType::Image, ColumnRole::Image, 0)
    };
    inferred.columns[at] = ColumnData {
        name: image_name,
        valid: if missing == 0 { Vec::new() } else { valid },
        values: Some(Values::Images(BytesValues { values: images })),
    };
    inferred.schema.columns.insert(
        0,
        column(
            PATH_COLUMN,
            ColumnType::String,
            ColumnRole::Id,
            distinct_paths,
        ),
    );
    inferred.schema.id_column = PATH_COLUMN.to_owned();
    number(&mut inferred.schema);
    inferred.columns.insert(
        0,
        data(PATH_COLUMN, Values::Strings(StringValues { values: paths })),
    );
    inferred.modality = Modality::Image;
    Ok(inferred)
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use zip::write::SimpleFileOptions;

    use super::*;

    fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            writer
                .start_file(*name, SimpleFileOptions::default())
                .unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    /// A PNG declaring `w`×`h` grey pixels: its signature, header, an empty data chunk and its end.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut header = w.to_be_bytes().to_vec();
        header.extend(h.to_be_bytes());
        header.extend([8, 0, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [
            (b"IHDR", header),
            (b"IDAT", Vec::new()),
            (b"IEND", Vec::new()),
        ] {
            png.extend(u32::try_from(data.len()).unwrap().to_be_bytes());
            let mut chunk = kind.to_vec();
            chunk.extend(data);
            png.extend(&chunk);
            png.extend(crc32(&chunk).to_be_bytes());
        }
        png
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn one_row_per_file_labelled_by_its_folder() {
        let zip = zip_of(&[
            ("dog/b.png", png_header(2, 2)),
            ("cat/a.png", png_header(2, 2)),
            ("cat/notes.txt", b"not an image".to_vec()),
        ]);
        let inferred = parse(&zip, 10, 100, 1 << 20, &[], "").unwrap();
        assert_eq!(inferred.modality, Modality::Image);
        assert_eq!(inferred.schema.id_column, "path");
        let Some(Values::Strings(paths)) = &inferred.columns[0].values else {
            panic!("paths are strings");
        };
        assert_eq!(paths.values, ["cat/a.png", "cat/notes.txt", "dog/b.png"]);
        let Some(Values::Strings(labels)) = &inferred.columns[1].values else {
            panic!("labels are strings");
        };
        assert_eq!(labels.values, ["cat", "cat", "dog"]);
        let Some(Values::Images(images)) = &inferred.columns[2].values else {
            panic!("images are bytes");
        };
        assert_eq!(images.values[1], b"not an image");
    }

    #[test]
    fn bombs_are_refused_naming_the_limit_and_file() {
        let huge = zip_of(&[("cat/huge.png", png_header(100_000, 100_000))]);
        let err = parse(&huge, 10, 100, 1 << 20, &[], "").unwrap_err();
        assert_eq!(err.code, "IMAGE_TOO_LARGE");
        assert!(err.message.contains("cat/huge.png"), "{}", err.message);
        let zeros = zip_of(&[("cat/zeros.png", vec![0; 10_000])]);
        let err = parse(&zeros, 10, 100, 1000, &[], "").unwrap_err();
        assert_eq!(err.code, "ARCHIVE_TOO_LARGE");
        assert!(err.message.contains("cat/zeros.png"), "{}", err.message);
        let two = zip_of(&[("a/1.png", vec![1]), ("a/2.png", vec![2])]);
        let err = parse(&two, 1, 100, 1 << 20, &[], "").unwrap_err();
        assert_eq!(err.code, "ARCHIVE_TOO_MANY_FILES");
        let err = parse(&two, 10, 100, 1 << 20, &[], "label").unwrap_err();
        assert_eq!(err.code, "UNSUPPORTED_OVERRIDE");
    }

    fn column_names(inferred: &Inferred) -> Vec<&str> {
        inferred
            .schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect()
    }

    fn strings(inferred: &Inferred, name: &str) -> Vec<String> {
        let column = inferred.columns.iter().find(|c| c.name == name).unwrap();
        let Some(Values::Strings(values)) = &column.values else {
            panic!("{name} holds strings");
        };
        values.values.clone()
    }

    #[test]
    fn a_root_table_names_each_rows_image_and_bad_paths_keep_their_rows() {
        let csv = "image,label,note\n\
                   img/a.png,cat,first\n\
                   img/b.png,dog,second\n\
                   img/gone.png,cat,third\n\
                   ../outside.png,dog,fourth\n\
                   /etc/passwd,cat,fifth\n\
                   img/a.png,dog,sixth\n";
        let zip = zip_of(&[
            ("metadata.csv", csv.as_bytes().to_vec()),
            ("img/a.png", png_header(2, 2)),
            ("img/b.png", png_header(3, 2)),
        ]);
        let inferred = parse(&zip, 10, 100, 1 << 20, &[], "").unwrap();
        assert_eq!(inferred.modality, Modality::Image);
        assert_eq!(inferred.schema.id_column, "path");
        let names: Vec<(&str, ColumnType)> = inferred
            .schema
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.r#type()))
            .collect();
        assert_eq!(
            names,
            [
                ("path", ColumnType::String),
                ("image", ColumnType::Image),
                ("label", ColumnType::String),
                ("note", ColumnType::String),
            ]
        );
        assert!(
            inferred
                .schema
                .columns
                .iter()
                .enumerate()
                .all(|(i, c)| c.index as usize == i)
        );
        assert_eq!(inferred.schema.columns[1].null_count, 3);
        assert_eq!(strings(&inferred, "path")[3], "../outside.png");
        assert_eq!(
            strings(&inferred, "label"),
            ["cat", "dog", "cat", "dog", "cat", "dog"]
        );
        let image = &inferred.columns[1];
        assert_eq!(image.valid, [true, true, false, false, false, true]);
        let Some(Values::Images(images)) = &image.values else {
            panic!("images are bytes");
        };
        assert_eq!(images.values[1], png_header(3, 2));
        assert_eq!(images.values[5], images.values[0]);
        assert!(images.values[3].is_empty());
    }

    #[test]
    fn jsonl_and_parquet_tables_and_a_path_column_named_path() {
        let jsonl = "{\"path\": \"a.png\", \"label\": \"cat\"}\n{\"path\": \"b.png\", \"label\": \"dog\"}\n";
        let zip = zip_of(&[
            ("rows.jsonl", jsonl.as_bytes().to_vec()),
            ("a.png", png_header(2, 2)),
            ("b.png", png_header(2, 2)),
        ]);
        let inferred = parse(&zip, 10, 100, 1 << 20, &[], "path").unwrap();
        assert_eq!(column_names(&inferred), ["path", "image", "label"]);
        assert_eq!(strings(&inferred, "path"), ["a.png", "b.png"]);

        let batch = arrow_array::RecordBatch::try_from_iter([
            (
                "file",
                std::sync::Arc::new(arrow_array::StringArray::from(vec!["a.png", "b.png"]))
                    as arrow_array::ArrayRef,
            ),
            (
                "y",
                std::sync::Arc::new(arrow_array::StringArray::from(vec!["cat", "dog"])),
            ),
        ])
        .unwrap();
        let mut parquet = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut parquet, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let zip = zip_of(&[
            ("t.parquet", parquet),
            ("a.png", png_header(2, 2)),
            ("b.png", png_header(2, 2)),
        ]);
        let inferred = parse(&zip, 10, 100, 1 << 20, &[], "").unwrap();
        assert_eq!(column_names(&inferred), ["path", "file", "y"]);
        assert_eq!(inferred.schema.columns[1].r#type(), ColumnType::Image);
    }

    #[test]
    fn table_archives_keep_the_limits_and_refuse_what_they_cannot_map() {
        let manifest = |rows: &str| format!("image,label\n{rows}").into_bytes();
        let huge = zip_of(&[
            ("m.csv", manifest("big.png,cat\n")),
            ("big.png", png_header(100_000, 100_000)),
        ]);
        let err = parse(&huge, 10, 100, 1 << 20, &[], "").unwrap_err();
        assert_eq!(err.code, "IMAGE_TOO_LARGE");
        assert!(err.message.contains("big.png"), "{}", err.message);
        let many = zip_of(&[
            ("m.csv", manifest("a.png,cat\nb.png,dog\n")),
            ("a.png", png_header(2, 2)),
            ("b.png", png_header(2, 2)),
        ]);
        assert_eq!(
            parse(&many, 2, 100, 1 << 20, &[], "").unwrap_err().code,
            "ARCHIVE_TOO_MANY_FILES"
        );
        assert_eq!(
            parse(&many, 3, 100, 10, &[], "").unwrap_err().code,
            "ARCHIVE_TOO_LARGE"
        );
        let rows = zip_of(&[
            ("m.csv", manifest("a.png,cat\na.png,dog\na.png,cat\n")),
            ("a.png", png_header(2, 2)),
        ]);
        assert_eq!(
            parse(&rows, 2, 100, 1 << 20, &[], "").unwrap_err().code,
            "TOO_MANY_ROWS"
        );
        let nowhere = zip_of(&[
            ("m.csv", manifest("x.png,cat\n")),
            ("a.png", png_header(2, 2)),
        ]);
        let err = parse(&nowhere, 10, 100, 1 << 20, &[], "").unwrap_err();
        assert_eq!(err.code, "ARCHIVE_NO_PATH_COLUMN");
        assert!(err.message.contains("m.csv"), "{}", err.message);
        let conflict = zip_of(&[
            ("m.csv", b"image,path\na.png,x\n".to_vec()),
            ("a.png", png_header(2, 2)),
        ]);
        assert_eq!(
            parse(&conflict, 10, 100, 1 << 20, &[], "")
                .unwrap_err()
                .code,
            "ARCHIVE_COLUMN_CONFLICT"
        );
        let ragged = zip_of(&[
            ("m.csv", b"image,label\na.png\n".to_vec()),
            ("a.png", vec![1]),
        ]);
        let err = parse(&ragged, 10, 100, 1 << 20, &[], "").unwrap_err();
        assert!(
            err.message.starts_with("image archive: m.csv: "),
            "{}",
            err.message
        );
        let two = zip_of(&[("a.csv", vec![1]), ("b.csv", vec![2])]);
        assert_eq!(
            parse(&two, 10, 100, 1 << 20, &[], "").unwrap_err().code,
            "ARCHIVE_TWO_TABLES"
        );
    }
}
