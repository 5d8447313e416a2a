//! Reading an image archive (zip) from a file: the quality engine's [`read_archive`], with errors
//! naming the file and the option that sets an exceeded limit, in either layout: one folder per
//! class (one row per file, labelled by its folder), or a table at the root (one row per table row,
//! its image found by the path in the table's path column, its label in the `--label` column).

use std::path::Path;

use anyhow::{Context, bail};
use trustmesh_quality::automl::Column;
use trustmesh_quality::modality::{
    ArchiveError, ArchiveFile, ArchiveLimits, ImageArchive, TableArchive, read_archive,
};

use super::input;

/// An archive's rows, each an image with its path and label.
pub(super) struct ImageRows {
    /// One per row: its path in the archive, its label and its bytes (empty when `unresolved`).
    pub(super) files: Vec<ArchiveFile>,
    /// Per row of a table archive, why its path names no image (naming the row and path).
    pub(super) unresolved: Vec<Option<String>>,
}

/// Reads every row of the archive at `path`: its files sorted by path (folder per class), or its
/// table's rows with their images and the labels of the `label` column (`label` when `None`).
///
/// # Errors
/// An unreadable archive, an entry with an unsafe path or outside any folder (without a table),
/// an archive over `limits` (each named with the limit's option), or a table that cannot be read
/// or has no path or label column.
pub(super) fn read_file(
    path: &Path,
    limits: ArchiveLimits,
    label: Option<&str>,
) -> anyhow::Result<ImageRows> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let archive = read_archive(std::io::BufReader::new(file), limits).map_err(|e| {
        let option = match e {
            ArchiveError::TooManyFiles { .. } => " (--max-archive-files)",
            ArchiveError::TooManyBytes { .. } => " (--max-archive-bytes)",
            ArchiveError::NotZip(_)
            | ArchiveError::Unreadable { .. }
            | ArchiveError::UnsafePath(_)
            | ArchiveError::NotInFolder(_)
            | ArchiveError::TwoTables(..)
            | ArchiveError::Extract { .. }
            | ArchiveError::Empty => "",
        };
        anyhow::anyhow!("{}: {e}{option}", path.display())
    })?;
    match archive {
        ImageArchive::Folders(files) => Ok(ImageRows {
            unresolved: vec![None; files.len()],
            files,
        }),
        ImageArchive::Table(archive) => table_rows(path, &archive, label.unwrap_or("label")),
    }
}

/// The rows of a table archive.
fn table_rows(path: &Path, archive: &TableArchive, label: &str) -> anyhow::Result<ImageRows> {
    // The table readers read files: the table goes to a temporary one of the same name.
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let copy = dir.path().join(&archive.table_path);
    std::fs::write(&copy, &archive.table)
        .with_context(|| format!("cannot write {}", copy.display()))?;
    let named = format!("{}: {}", path.display(), archive.table_path);
    let table = input::read_table(&copy).with_context(|| named.clone())?;
    let columns = table.columns();
    let n = table.n();
    let cells = columns.iter().map(|c| (0..n).map(move |i| c.get(i)));
    let Some(at) = archive.path_column(cells) else {
        bail!("{named}: no column names files of the archive (at least half of its values must)");
    };
    let Some(labels) = columns.iter().find(|c| c.name() == label) else {
        let names: Vec<&str> = columns.iter().map(Column::name).collect();
        bail!(
            "{named}: no label column {label:?} (--label; columns: {})",
            names.join(", ")
        );
    };
    let mut rows = ImageRows {
        files: Vec::with_capacity(table.n()),
        unresolved: Vec::with_capacity(table.n()),
    };
    for i in 0..table.n() {
        let image_path = columns[at].get(i).unwrap_or_default();
        let (bytes, unresolved) = match archive.resolve(image_path) {
            Ok(bytes) => (bytes.to_vec(), None),
            Err(why) => (
                Vec::new(),
                Some(format!("row {i}: path {image_path:?} {why}")),
            ),
        };
        rows.files.push(ArchiveFile {
            path: image_path.to_owned(),
            label: labels.get(i).unwrap_or_default().to_owned(),
            bytes,
        });
        rows.unresolved.push(unresolved);
    }
    Ok(rows)
}
