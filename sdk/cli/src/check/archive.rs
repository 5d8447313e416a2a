//! Reading a folder-per-class image archive (zip): one image per file, its label the name of the
//! folder holding it, within limits against decompression bombs.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};

/// Limits on what an archive may expand to.
#[derive(Debug, Clone, Copy)]
pub(super) struct ArchiveLimits {
    /// Most files (entries other than folders).
    pub(super) max_files: usize,
    /// Most bytes all files expand to.
    pub(super) max_bytes: u64,
}

/// One file of the archive.
pub(super) struct ArchiveFile {
    /// Its path inside the archive.
    pub(super) path: String,
    /// The name of the folder holding it: its class.
    pub(super) label: String,
    /// Its contents.
    pub(super) bytes: Vec<u8>,
}

/// Whether an entry is operating-system clutter rather than data (macOS resource forks, hidden
/// files such as `.DS_Store`).
fn is_clutter(path: &Path) -> bool {
    path.components().any(|c| {
        let name = c.as_os_str().to_string_lossy();
        name == "__MACOSX" || name.starts_with('.')
    })
}

/// Reads every file of the archive at `path`, sorted by path. The uncompressed sizes are counted as
/// the files are read (not taken from the headers, which a crafted archive can falsify).
///
/// # Errors
/// An unreadable archive, an entry with an unsafe path or outside any folder, or an archive over
/// `limits`, each named with the limit's option.
pub(super) fn read_archive(path: &Path, limits: ArchiveLimits) -> anyhow::Result<Vec<ArchiveFile>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{}: not a readable zip archive", path.display()))?;
    let mut files = Vec::new();
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .with_context(|| format!("{}: entry {i} is unreadable", path.display()))?;
        if entry.is_dir() {
            continue;
        }
        let Some(inner) = entry.enclosed_name() else {
            bail!(
                "{}: entry {:?} has an unsafe path (absolute or with `..`)",
                path.display(),
                entry.name()
            );
        };
        if is_clutter(&inner) {
            continue;
        }
        if files.len() == limits.max_files {
            bail!(
                "{}: more than {} files, over the limit (--max-archive-files)",
                path.display(),
                limits.max_files
            );
        }
        let name = inner.to_string_lossy().into_owned();
        let label = inner
            .parent()
            .and_then(Path::file_name)
            .map(|l| l.to_string_lossy().into_owned())
            .with_context(|| {
                format!(
                    "{}: {name:?} is not in a folder; expected one folder per class",
                    path.display()
                )
            })?;
        let room = limits.max_bytes - total;
        let mut bytes = Vec::new();
        (&mut entry)
            .take(room + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: cannot extract {name:?}", path.display()))?;
        if bytes.len() as u64 > room {
            bail!(
                "{}: the files expand to more than {} bytes, over the limit (--max-archive-bytes)",
                path.display(),
                limits.max_bytes
            );
        }
        total += bytes.len() as u64;
        files.push(ArchiveFile {
            path: name,
            label,
            bytes,
        });
    }
    if files.is_empty() {
        bail!("{}: the archive holds no files", path.display());
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}
