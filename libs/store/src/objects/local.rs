//! [`LocalDirStore`]: objects as files under one directory.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BodyStream, ObjectError, ObjectKey, ObjectMeta, ObjectPrefix, ObjectStore};

/// How much a read of a local object returns at a time.
const READ_PIECE: usize = 1024 * 1024;

/// An [`ObjectStore`] in a local directory: each object is a file at its key's path (mode 0600).
///
/// A put writes a temporary file next to the target, fsyncs it, renames it over the target and
/// fsyncs the directory, so a crash leaves the old object or the whole new one (and, at worst, the
/// temporary file, which is no object but which a prefix deletion removes and its scan counts).
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    /// A store rooted at `root`, created (mode 0700) if missing.
    ///
    /// # Errors
    ///
    /// [`ObjectError::Io`] if the directory cannot be created.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, ObjectError> {
        let root = root.into();
        let mut builder = tokio::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(&root).await?;
        Ok(Self { root })
    }

    /// The directory the objects live in.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        // Keys are validated: relative, no empty or dot-led segments, so this stays under the root.
        self.root.join(key.as_str())
    }
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn put_stream(&self, key: &ObjectKey, mut body: BodyStream) -> Result<u64, ObjectError> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let mut builder = tokio::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(&dir).await?;
        let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .await?;
            let mut size = 0u64;
            while let Some(piece) = body.next().await {
                let piece = piece?;
                file.write_all(&piece).await?;
                size += piece.len() as u64;
            }
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&tmp, &path).await?;
            tokio::fs::File::open(&dir).await?.sync_all().await?;
            Ok::<_, ObjectError>(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn get_stream(&self, key: &ObjectKey) -> Result<BodyStream, ObjectError> {
        let file = tokio::fs::File::open(self.path(key))
            .await
            .map_err(not_found)?;
        let stream = futures::stream::try_unfold(file, |mut file| async move {
            let mut buf = vec![0u8; READ_PIECE];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), file)))
        });
        Ok(stream.boxed())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, ObjectError> {
        let bytes = tokio::fs::read(self.path(key)).await.map_err(not_found)?;
        Ok(Bytes::from(bytes))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self, prefix: &ObjectPrefix) -> Result<Vec<ObjectMeta>, ObjectError> {
        Ok(self.found(prefix).await?.objects)
    }

    async fn delete_prefix(&self, prefix: &ObjectPrefix) -> Result<u64, ObjectError> {
        let found = self.found(prefix).await?;
        let deleted = (found.objects.len() + found.debris.len()) as u64;
        let paths = found
            .objects
            .iter()
            .map(|meta| self.path(&meta.key))
            .chain(found.debris);
        for path in paths {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Empty directories carry no data, only tenant and object ids; remove them anyway, but only
        // those inside the prefix: a directory outside it may be one a concurrent put (another
        // tenant's, another service's) has just created for its file.
        tokio::task::spawn_blocking(move || prune_empty_dirs(found.dirs))
            .await
            .map_err(|e| ObjectError::Io(io::Error::other(e)))?;
        Ok(deleted)
    }

    async fn count_versions(&self, prefix: &ObjectPrefix) -> Result<u64, ObjectError> {
        let found = self.found(prefix).await?;
        Ok((found.objects.len() + found.debris.len()) as u64)
    }
}

impl LocalDirStore {
    async fn found(&self, prefix: &ObjectPrefix) -> Result<Found, ObjectError> {
        let root = self.root.clone();
        let prefix = prefix.clone();
        let found = tokio::task::spawn_blocking(move || walk(&root, &prefix))
            .await
            .map_err(|e| ObjectError::Io(io::Error::other(e)))??;
        Ok(found)
    }
}

fn not_found(e: io::Error) -> ObjectError {
    if e.kind() == io::ErrorKind::NotFound {
        ObjectError::NotFound
    } else {
        ObjectError::Io(e)
    }
}

/// What lies under a prefix.
#[derive(Debug, Default)]
struct Found {
    /// The objects, ordered by key.
    objects: Vec<ObjectMeta>,
    /// Files under the prefix that are not objects: the `.tmp-*` file of a put a crash cut off (or
    /// of one in flight). Not listed, but ciphertext of keys under the prefix all the same, so the
    /// residue scan counts them and a prefix deletion removes them.
    debris: Vec<PathBuf>,
    /// Directories wholly inside the prefix, deepest first.
    dirs: Vec<PathBuf>,
}

/// Every file under `root` whose key matches `prefix`, and the directories inside it.
fn walk(root: &Path, prefix: &ObjectPrefix) -> io::Result<Found> {
    let mut found = Found::default();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let file_type = entry.file_type()?;
            let Some(rel) = path.strip_prefix(root).ok().and_then(Path::to_str) else {
                continue;
            };
            if file_type.is_dir() {
                // Only descend where matching keys can be.
                let as_dir = format!("{rel}/");
                if prefix.matches(&as_dir) {
                    found.dirs.push(path.clone());
                    pending.push(path);
                } else if prefix.as_str().starts_with(&as_dir) {
                    pending.push(path);
                }
                continue;
            }
            if !file_type.is_file() || !prefix.matches(rel) {
                continue;
            }
            match ObjectKey::new(rel) {
                Ok(key) => found.objects.push(ObjectMeta {
                    key,
                    size: entry.metadata()?.len(),
                }),
                // Not a valid key: a temporary file (".tmp-*"), or something this store never wrote.
                Err(_) => found.debris.push(path),
            }
        }
    }
    found.objects.sort_by(|a, b| a.key.cmp(&b.key));
    // A directory's path is longer than its parent's: deepest first.
    found
        .dirs
        .sort_by_key(|dir| std::cmp::Reverse(dir.as_os_str().len()));
    Ok(found)
}

/// Removes those of `dirs` (deepest first) that are empty; best effort.
fn prune_empty_dirs(dirs: Vec<PathBuf>) {
    for dir in dirs {
        // A directory that is not empty (or already gone) stays as it is.
        let _ = std::fs::remove_dir(&dir);
    }
}
