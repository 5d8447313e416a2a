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
/// fsyncs the directory, so a crash leaves the old object or the whole new one.
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
        let root = self.root.clone();
        let prefix = prefix.clone();
        let listed = tokio::task::spawn_blocking(move || walk(&root, &prefix))
            .await
            .map_err(|e| ObjectError::Io(io::Error::other(e)))??;
        Ok(listed)
    }

    async fn delete_prefix(&self, prefix: &ObjectPrefix) -> Result<u64, ObjectError> {
        let mut deleted = 0;
        for meta in self.list(prefix).await? {
            self.delete(&meta.key).await?;
            deleted += 1;
        }
        let root = self.root.clone();
        // Empty directories carry no data, only tenant and object ids; remove them anyway.
        tokio::task::spawn_blocking(move || prune_empty_dirs(&root))
            .await
            .map_err(|e| ObjectError::Io(io::Error::other(e)))?;
        Ok(deleted)
    }
}

fn not_found(e: io::Error) -> ObjectError {
    if e.kind() == io::ErrorKind::NotFound {
        ObjectError::NotFound
    } else {
        ObjectError::Io(e)
    }
}

/// Every object file under `root` whose key matches `prefix`, ordered by key.
fn walk(root: &Path, prefix: &ObjectPrefix) -> io::Result<Vec<ObjectMeta>> {
    let mut out = Vec::new();
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
                if prefix.matches(&as_dir) || prefix.as_str().starts_with(&as_dir) {
                    pending.push(path);
                }
                continue;
            }
            if !file_type.is_file() || !prefix.matches(rel) {
                continue;
            }
            // Temporary files (".tmp-*") and anything else that is not a valid key are not objects.
            if let Ok(key) = ObjectKey::new(rel) {
                out.push(ObjectMeta {
                    key,
                    size: entry.metadata()?.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Removes every empty directory under `root` (not `root` itself); best effort.
fn prune_empty_dirs(root: &Path) {
    fn prune(dir: &Path) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        let mut empty = true;
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) && prune(&path) {
                let _ = std::fs::remove_dir(&path);
            } else {
                empty = false;
            }
        }
        empty
    }
    prune(root);
}
