//! Object storage: the [`ObjectStore`] trait and its two backends, a local directory
//! ([`LocalDirStore`]) and S3 ([`S3Store`]). Neither encrypts: they are only ever given ciphertext by
//! [`crate::EncryptedObjects`].

mod local;
mod s3;

use std::fmt;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

pub use local::LocalDirStore;
pub use s3::{DEFAULT_PART_SIZE, S3Settings, S3Store};

/// A boxed error from a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An object's bytes as a stream of pieces.
pub type BodyStream = BoxStream<'static, Result<Bytes, ObjectError>>;

/// The longest object key, in bytes (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

/// What went wrong in an object store.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// No object has that key.
    #[error("object not found")]
    NotFound,
    /// The key or prefix is not valid.
    #[error("invalid object key: {0}")]
    InvalidKey(&'static str),
    /// The settings are not valid.
    #[error("invalid object store settings: {0}")]
    InvalidSettings(String),
    /// The local directory failed.
    #[error("object store I/O failed")]
    Io(#[from] std::io::Error),
    /// An S3 request failed.
    #[error("S3 {operation} failed")]
    S3 {
        /// The S3 operation.
        operation: &'static str,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
    /// The body stream given to a put failed.
    #[error("object body stream failed")]
    Body(#[source] BoxError),
}

/// A validated object key: `/`-separated segments of `[A-Za-z0-9._=-]`, none empty, none starting with
/// `.` (so no `..` and no collision with temporary files), at most [`MAX_KEY_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Validates `key`.
    ///
    /// # Errors
    ///
    /// [`ObjectError::InvalidKey`] naming the broken rule.
    pub fn new(key: impl Into<String>) -> Result<Self, ObjectError> {
        let key = key.into();
        validate_path(&key)?;
        Ok(Self(key))
    }

    /// The key.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ObjectKey").field(&self.0).finish()
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated key prefix: like an [`ObjectKey`], but it may be empty and may end with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectPrefix(String);

impl ObjectPrefix {
    /// Validates `prefix`.
    ///
    /// # Errors
    ///
    /// [`ObjectError::InvalidKey`] naming the broken rule.
    pub fn new(prefix: impl Into<String>) -> Result<Self, ObjectError> {
        let prefix = prefix.into();
        if !prefix.is_empty() {
            validate_path(prefix.strip_suffix('/').unwrap_or(&prefix))?;
        }
        Ok(Self(prefix))
    }

    /// The prefix.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `key` starts with this prefix.
    #[must_use]
    pub fn matches(&self, key: &str) -> bool {
        key.starts_with(&self.0)
    }
}

fn validate_path(path: &str) -> Result<(), ObjectError> {
    if path.is_empty() {
        return Err(ObjectError::InvalidKey("empty"));
    }
    if path.len() > MAX_KEY_LEN {
        return Err(ObjectError::InvalidKey("longer than 1024 bytes"));
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err(ObjectError::InvalidKey("empty segment"));
        }
        if segment.starts_with('.') {
            return Err(ObjectError::InvalidKey("segment starts with '.'"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'=' | b'-'))
        {
            return Err(ObjectError::InvalidKey(
                "character outside [A-Za-z0-9._=-/]",
            ));
        }
    }
    Ok(())
}

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its key.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
}

/// Where objects (always ciphertext) are kept.
///
/// Puts are atomic: a reader sees the old object or the whole new one. Deletes are idempotent.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Stores `body` under `key`, replacing any object there, and returns its size. Large bodies are
    /// written without holding them whole in memory (S3: multipart upload).
    ///
    /// # Errors
    ///
    /// [`ObjectError::Body`] if `body` fails, backend errors otherwise; nothing is stored then.
    async fn put_stream(&self, key: &ObjectKey, body: BodyStream) -> Result<u64, ObjectError>;

    /// Stores `bytes` under `key`, replacing any object there.
    ///
    /// # Errors
    ///
    /// Backend errors.
    async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), ObjectError> {
        let body = futures::stream::once(async move { Ok(bytes) }).boxed();
        self.put_stream(key, body).await.map(|_| ())
    }

    /// The object's bytes as a stream.
    ///
    /// # Errors
    ///
    /// [`ObjectError::NotFound`], backend errors.
    async fn get_stream(&self, key: &ObjectKey) -> Result<BodyStream, ObjectError>;

    /// The object's bytes.
    ///
    /// # Errors
    ///
    /// [`ObjectError::NotFound`], backend errors.
    async fn get(&self, key: &ObjectKey) -> Result<Bytes, ObjectError> {
        let mut body = self.get_stream(key).await?;
        let mut out = BytesMut::new();
        while let Some(piece) = body.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out.freeze())
    }

    /// Deletes the object (every version of it, where the backend keeps versions). Deleting a missing
    /// object succeeds.
    ///
    /// # Errors
    ///
    /// Backend errors.
    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError>;

    /// Every object whose key starts with `prefix`, ordered by key.
    ///
    /// # Errors
    ///
    /// Backend errors.
    async fn list(&self, prefix: &ObjectPrefix) -> Result<Vec<ObjectMeta>, ObjectError>;

    /// Deletes every object (and every version and delete marker, where the backend keeps versions)
    /// whose key starts with `prefix`, and whatever else the backend stores there (a local store's
    /// temporary file of a put a crash cut off): exactly what [`ObjectStore::count_versions`]
    /// counts, so a deletion's residue scan finds nothing after it. Returns how many it deleted.
    ///
    /// # Errors
    ///
    /// Backend errors; what was deleted before the error stays deleted, and a retry finishes the job.
    async fn delete_prefix(&self, prefix: &ObjectPrefix) -> Result<u64, ObjectError>;

    /// How many objects, object versions and delete markers have a key starting with `prefix`: what a
    /// deletion's residue scan counts, with anything else stored under it (see
    /// [`ObjectStore::delete_prefix`]). [`ObjectStore::list`] shows only current objects, and on a
    /// versioned bucket an object it no longer lists may still have readable older versions.
    /// Backends without versions count their objects.
    ///
    /// # Errors
    ///
    /// Backend errors.
    async fn count_versions(&self, prefix: &ObjectPrefix) -> Result<u64, ObjectError> {
        Ok(self.list(prefix).await?.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_reject_traversal_and_odd_characters() {
        assert!(ObjectKey::new("ingest/acme/datasets/0190-ab/v1").is_ok());
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/../b", "a/.tmp", "a b", "a\\b", "a#b", "é",
        ] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?}");
        }
        assert!(ObjectKey::new("a".repeat(1025)).is_err());
        assert!(ObjectPrefix::new("").is_ok());
        assert!(ObjectPrefix::new("ingest/acme/").is_ok());
        assert!(ObjectPrefix::new("ingest//").is_err());
        assert!(ObjectPrefix::new("../").is_err());
    }
}
