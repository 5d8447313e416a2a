//! Reading an image archive (zip) within limits against decompression bombs, in either layout:
//! one folder per class (each file an image, its label the name of the folder holding it), or a
//! table at the archive's root (`*.csv`, `*.jsonl` or `*.parquet`) with one row per image, one of
//! whose columns holds each image's path inside the archive ([`TableArchive`]). Shared by
//! `trustmesh check` and ingest's `DATASET_FORMAT_IMAGE_ZIP` uploads, which parse the table each
//! with its own reader and resolve its paths here.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Seek};
use std::path::{Component, Path};

/// Limits on what an archive may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Most files (entries other than folders).
    pub max_files: usize,
    /// Most bytes all files expand to.
    pub max_bytes: u64,
}

/// One file of a folder-per-class archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFile {
    /// Its path inside the archive.
    pub path: String,
    /// The name of the folder holding it: its class.
    pub label: String,
    /// Its contents.
    pub bytes: Vec<u8>,
}

/// Why an archive cannot be read; each names what and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    /// Not a zip archive, or its directory is damaged.
    #[error("not a readable zip archive: {0}")]
    NotZip(String),
    /// An entry's header cannot be read.
    #[error("entry {index} is unreadable: {reason}")]
    Unreadable {
        /// 0-based entry index.
        index: usize,
        /// The zip reader's error.
        reason: String,
    },
    /// An absolute path or one with `..`.
    #[error("entry {0:?} has an unsafe path (absolute or with `..`)")]
    UnsafePath(String),
    /// A file at the archive's top level.
    #[error(
        "{0:?} is not in a folder; expected one folder per class, or one table (.csv, .jsonl, \
         .parquet) at the archive's root naming the images"
    )]
    NotInFolder(String),
    /// More than one table at the archive's root.
    #[error("{0:?} and {1:?} are both tables at the archive's root; expected one")]
    TwoTables(String, String),
    /// More files than [`ArchiveLimits::max_files`].
    #[error("more than {limit} files ({path:?} is one too many), over the limit")]
    TooManyFiles {
        /// The limit.
        limit: usize,
        /// The first file over it.
        path: String,
    },
    /// The files expand to more than [`ArchiveLimits::max_bytes`].
    #[error("the files expand to more than {limit} bytes (by {path:?}), over the limit")]
    TooManyBytes {
        /// The limit.
        limit: u64,
        /// The file that crossed it.
        path: String,
    },
    /// A file's data cannot be inflated.
    #[error("cannot extract {path:?}: {reason}")]
    Extract {
        /// The file.
        path: String,
        /// The zip reader's error.
        reason: String,
    },
    /// No files (after leaving out folders and clutter).
    #[error("the archive holds no files")]
    Empty,
}

/// An image archive, in one of its two layouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageArchive {
    /// One folder per class: every file, sorted by path.
    Folders(Vec<ArchiveFile>),
    /// A table at the root naming the images.
    Table(TableArchive),
}

/// The format of an archive's table, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// `.csv`, with a header row.
    Csv,
    /// `.jsonl` / `.ndjson`: one JSON object per line.
    Jsonl,
    /// `.parquet` / `.pq`.
    Parquet,
}

impl TableFormat {
    /// The format of a file named `path`, if it is a table.
    fn of(path: &str) -> Option<Self> {
        let extension = Path::new(path).extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" => Some(Self::Jsonl),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }
}

/// An archive holding one table at its root (its manifest) and the files its rows name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableArchive {
    /// The table's file name.
    pub table_path: String,
    /// Its format.
    pub format: TableFormat,
    /// Its contents.
    pub table: Vec<u8>,
    /// Every other file, by path.
    files: BTreeMap<String, Vec<u8>>,
}

/// Why a table row's path names no file of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// The cell is empty.
    Empty,
    /// Absolute, or climbing out with `..`.
    Escapes,
    /// No such file in the archive.
    Missing,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "is empty",
            Self::Escapes => "escapes the archive (absolute or with `..`)",
            Self::Missing => "is not in the archive",
        })
    }
}

impl TableArchive {
    /// The bytes of the file at `path` (relative to the archive's root; a leading `./` and
    /// backslashes as separators are accepted).
    ///
    /// # Errors
    /// Why `path` names no file: empty, escaping the archive, or missing.
    pub fn resolve(&self, path: &str) -> Result<&[u8], Unresolved> {
        let path = path.trim().replace('\\', "/");
        if path.is_empty() {
            return Err(Unresolved::Empty);
        }
        let mut parts = Vec::new();
        for component in Path::new(&path).components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy()),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(Unresolved::Escapes);
                }
            }
        }
        self.files
            .get(&parts.join("/"))
            .map(Vec::as_slice)
            .ok_or(Unresolved::Missing)
    }

    /// The index of the column holding the images' paths: the first of `columns` (each its cells,
    /// `None` for a null) with a value naming a file of the archive, and at least half of its
    /// non-empty values doing so (so a few missing or unsafe paths still leave it the path column).
    pub fn path_column<'a, C, V>(&self, columns: C) -> Option<usize>
    where
        C: IntoIterator<Item = V>,
        V: IntoIterator<Item = Option<&'a str>>,
    {
        columns.into_iter().position(|cells| {
            let (mut named, mut found) = (0usize, 0usize);
            for cell in cells.into_iter().flatten() {
                if cell.trim().is_empty() {
                    continue;
                }
                named += 1;
                found += usize::from(self.resolve(cell).is_ok());
            }
            found > 0 && found * 2 >= named
        })
    }
}

/// The width and height an encoded image declares in its header, without decoding its pixels;
/// `None` when the bytes are no image of a known format or the header is unreadable.
pub fn image_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .filter(|r| r.format().is_some())?;
    // Reading the header allocates nothing for the pixels: no limit on what it may declare.
    reader.no_limits();
    reader.into_dimensions().ok()
}

/// Whether an entry is operating-system clutter rather than data (macOS resource forks, hidden
/// files such as `.DS_Store`).
fn is_clutter(path: &Path) -> bool {
    path.components().any(|c| {
        let name = c.as_os_str().to_string_lossy();
        name == "__MACOSX" || name.starts_with('.')
    })
}

/// Reads every file of the zip archive `reader`, sorted by path, leaving out folders and clutter;
/// a table at the root makes it a [`TableArchive`], else it must have one folder per class.
/// The uncompressed sizes are counted as the files are read (not taken from the headers, which a
/// crafted archive can falsify), so no more than `limits.max_bytes + 1` bytes are ever inflated.
///
/// # Errors
/// An unreadable archive or entry, an entry with an unsafe path, two tables at the root, a file
/// outside any folder (without a table), an archive over `limits`, or one without files.
pub fn read_archive<R: Read + Seek>(
    reader: R,
    limits: ArchiveLimits,
) -> Result<ImageArchive, ArchiveError> {
    let mut files = read_files(reader, limits)?;
    let mut tables = files
        .keys()
        .filter(|path| !path.contains('/'))
        .filter_map(|path| Some((path.clone(), TableFormat::of(path)?)));
    if let Some((table_path, format)) = tables.next() {
        if let Some((other, _)) = tables.next() {
            return Err(ArchiveError::TwoTables(table_path, other));
        }
        let table = files.remove(&table_path).unwrap_or_default();
        return Ok(ImageArchive::Table(TableArchive {
            table_path,
            format,
            table,
            files,
        }));
    }
    files
        .into_iter()
        .map(|(path, bytes)| {
            let Some(label) = Path::new(&path)
                .parent()
                .and_then(Path::file_name)
                .map(|l| l.to_string_lossy().into_owned())
            else {
                return Err(ArchiveError::NotInFolder(path));
            };
            Ok(ArchiveFile { path, label, bytes })
        })
        .collect::<Result<_, _>>()
        .map(ImageArchive::Folders)
}

/// Every file of the archive by its path (with `/` separators), within `limits`.
fn read_files<R: Read + Seek>(
    reader: R,
    limits: ArchiveLimits,
) -> Result<BTreeMap<String, Vec<u8>>, ArchiveError> {
    let mut archive =
        zip::ZipArchive::new(reader).map_err(|e| ArchiveError::NotZip(e.to_string()))?;
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| ArchiveError::Unreadable {
                index,
                reason: e.to_string(),
            })?;
        if entry.is_dir() {
            continue;
        }
        let Some(inner) = entry.enclosed_name() else {
            let name = entry
                .name()
                .map_or_else(|_| format!("entry {index}"), |n| n.into_owned());
            return Err(ArchiveError::UnsafePath(name));
        };
        if is_clutter(&inner) {
            continue;
        }
        let path = inner
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if files.len() == limits.max_files {
            return Err(ArchiveError::TooManyFiles {
                limit: limits.max_files,
                path,
            });
        }
        let room = limits.max_bytes.saturating_sub(total);
        let mut bytes = Vec::new();
        (&mut entry)
            .take(room.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| ArchiveError::Extract {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if bytes.len() as u64 > room {
            return Err(ArchiveError::TooManyBytes {
                limit: limits.max_bytes,
                path,
            });
        }
        total += bytes.len() as u64;
        files.insert(path, bytes);
    }
    if files.is_empty() {
        return Err(ArchiveError::Empty);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use zip::write::SimpleFileOptions;

    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            writer
                .start_file(*name, SimpleFileOptions::default())
                .unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    const ROOMY: ArchiveLimits = ArchiveLimits {
        max_files: 10,
        max_bytes: 1 << 20,
    };

    fn folders(zip: Vec<u8>, limits: ArchiveLimits) -> Result<Vec<ArchiveFile>, ArchiveError> {
        match read_archive(Cursor::new(zip), limits)? {
            ImageArchive::Folders(files) => Ok(files),
            ImageArchive::Table(table) => panic!("a table archive: {}", table.table_path),
        }
    }

    #[test]
    fn files_are_read_sorted_with_their_folder_as_label() {
        let zip = zip_of(&[
            ("dog/b.png", b"2"),
            ("cat/a.png", b"1"),
            ("__MACOSX/cat/._a.png", b"fork"),
            ("cat/.DS_Store", b"x"),
        ]);
        let files = folders(zip, ROOMY).unwrap();
        let got: Vec<(&str, &str)> = files
            .iter()
            .map(|f| (f.path.as_str(), f.label.as_str()))
            .collect();
        assert_eq!(got, [("cat/a.png", "cat"), ("dog/b.png", "dog")]);
    }

    #[test]
    fn limits_and_layout_errors_name_the_file() {
        let zip = zip_of(&[("cat/a.png", b"1"), ("cat/b.png", b"2")]);
        let one = ArchiveLimits {
            max_files: 1,
            ..ROOMY
        };
        assert_eq!(
            folders(zip.clone(), one),
            Err(ArchiveError::TooManyFiles {
                limit: 1,
                path: "cat/b.png".into()
            })
        );
        let zeros = zip_of(&[("cat/zeros.bin", &[0u8; 4096])]);
        let small = ArchiveLimits {
            max_bytes: 1000,
            ..ROOMY
        };
        assert_eq!(
            folders(zeros, small),
            Err(ArchiveError::TooManyBytes {
                limit: 1000,
                path: "cat/zeros.bin".into()
            })
        );
        let flat = zip_of(&[("a.png", b"1")]);
        assert_eq!(
            folders(flat, ROOMY),
            Err(ArchiveError::NotInFolder("a.png".into()))
        );
        assert!(matches!(
            folders(b"not a zip".to_vec(), ROOMY),
            Err(ArchiveError::NotZip(_))
        ));
        assert_eq!(folders(zip_of(&[]), ROOMY), Err(ArchiveError::Empty));
        let two = zip_of(&[("a.csv", b"x"), ("b.jsonl", b"y")]);
        assert_eq!(
            folders(two, ROOMY),
            Err(ArchiveError::TwoTables("a.csv".into(), "b.jsonl".into()))
        );
    }

    #[test]
    fn a_root_table_makes_a_table_archive_whose_paths_resolve_inside_it() {
        let zip = zip_of(&[
            ("metadata.csv", b"image,label\n"),
            ("img/a.png", b"1"),
            ("b.png", b"2"),
            ("nested/c.csv", b"not the table"),
        ]);
        let ImageArchive::Table(archive) = read_archive(Cursor::new(zip), ROOMY).unwrap() else {
            panic!("a folder archive");
        };
        assert_eq!(
            (archive.table_path.as_str(), archive.format),
            ("metadata.csv", TableFormat::Csv)
        );
        assert_eq!(archive.table, b"image,label\n");
        assert_eq!(archive.resolve("img/a.png"), Ok(&b"1"[..]));
        assert_eq!(archive.resolve("./img\\a.png"), Ok(&b"1"[..]));
        assert_eq!(archive.resolve(" b.png "), Ok(&b"2"[..]));
        assert_eq!(archive.resolve("img/../b.png"), Err(Unresolved::Escapes));
        assert_eq!(archive.resolve("/b.png"), Err(Unresolved::Escapes));
        assert_eq!(archive.resolve("img/z.png"), Err(Unresolved::Missing));
        assert_eq!(archive.resolve("metadata.csv"), Err(Unresolved::Missing));
        assert_eq!(archive.resolve(""), Err(Unresolved::Empty));
        let labels = [Some("cat"), Some("dog"), Some("cat")];
        let paths = [Some("img/a.png"), Some("../x.png"), None];
        let mostly_missing = [Some("b.png"), Some("x.png"), Some("y.png")];
        assert_eq!(archive.path_column([labels, paths]), Some(1));
        assert_eq!(archive.path_column([labels, mostly_missing]), None);
    }
}
