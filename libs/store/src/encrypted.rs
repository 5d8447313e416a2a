//! [`EncryptedObjects`]: tenant-scoped, encrypted objects over any [`ObjectStore`].
//!
//! An object `o` of tenant `t` in service `s` at version `v` is sealed by the service's [`Keyring`]
//! bound to (s, t, o, v) and stored at key `s/t/o/v<v>`; its metadata (sizes, the sealed name, the
//! current version) is a row of the tenant-scoped `objects` table. The store and Postgres only ever
//! see ciphertext. A new version is written first and recorded second, so a reader never sees a
//! version whose bytes are missing; the replaced version's bytes are deleted afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use time::OffsetDateTime;
use trustmesh_crypto::envelope::HEADER_LEN;
use trustmesh_crypto::{Decryptor, Encryptor, Keyring, ObjectRef};

use crate::objects::{BoxError, ObjectError, ObjectKey, ObjectPrefix, ObjectStore};
use crate::repo::{NewObjectVersion, ObjectRow, ObjectsRepo};
use crate::tenant::TenantScope;

/// How much plaintext is sealed per step of a streamed put.
const SEAL_PIECE: usize = 1024 * 1024;

/// What went wrong with an encrypted object.
#[derive(Debug, thiserror::Error)]
pub enum EncryptedError {
    /// The tenant has no such object (or it belongs to another tenant: the two are not told apart).
    #[error("object not found")]
    NotFound,
    /// The object id is not valid (see [`ObjectKey`]).
    #[error("invalid object id")]
    InvalidObjectId(#[source] ObjectError),
    /// Sealing or opening failed; [`trustmesh_crypto::Error::Decrypt`] means the bytes were altered,
    /// moved to another tenant or object, or the tenant's keys were destroyed.
    #[error("encryption failed")]
    Crypto(#[from] trustmesh_crypto::Error),
    /// The object store failed.
    #[error("object store failed")]
    Store(#[source] ObjectError),
    /// The metadata database failed.
    #[error("object metadata query failed")]
    Database(#[from] sqlx::Error),
    /// The plaintext stream given to a put failed.
    #[error("plaintext stream failed")]
    Body(#[source] BoxError),
}

impl From<ObjectError> for EncryptedError {
    fn from(e: ObjectError) -> Self {
        match e {
            ObjectError::NotFound => Self::NotFound,
            other @ (ObjectError::InvalidKey(_)
            | ObjectError::InvalidSettings(_)
            | ObjectError::Io(_)
            | ObjectError::S3 { .. }
            | ObjectError::Body(_)) => Self::Store(other),
        }
    }
}

/// An encrypted object's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's id within the tenant.
    pub object: String,
    /// Its name (decrypted).
    pub name: String,
    /// Its current version.
    pub version: u64,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Stored (sealed) size in bytes.
    pub sealed_size: u64,
    /// When it was first stored.
    pub created_at: OffsetDateTime,
    /// When its current version was stored.
    pub updated_at: OffsetDateTime,
}

/// What [`EncryptedObjects::delete_tenant`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantPurge {
    /// Data-encryption keys destroyed (crypto-shredding).
    pub deks_destroyed: u64,
    /// Stored objects (and versions) deleted.
    pub objects_deleted: u64,
    /// Metadata rows deleted.
    pub rows_deleted: u64,
}

/// A stream of decrypted pieces of an object.
///
/// Every piece is authenticated as a chunk of this object at its position, but only the stream's end
/// without error proves the object was not truncated: act on the plaintext only after that.
pub type PlaintextStream = BoxStream<'static, Result<Bytes, EncryptedError>>;

/// Tenant-scoped put/get/list/delete of encrypted objects.
#[derive(Debug, Clone)]
pub struct EncryptedObjects {
    store: Arc<dyn ObjectStore>,
    keyring: Arc<Keyring>,
    repo: ObjectsRepo,
}

impl EncryptedObjects {
    /// Encrypted objects of `keyring`'s service in `store`, with metadata in `repo`.
    #[must_use]
    pub fn new(store: Arc<dyn ObjectStore>, keyring: Arc<Keyring>, repo: ObjectsRepo) -> Self {
        Self {
            store,
            keyring,
            repo,
        }
    }

    fn tenant_prefix(&self, scope: &TenantScope) -> String {
        format!("{}/{}/", self.keyring.service(), scope.as_str())
    }

    fn key(
        &self,
        scope: &TenantScope,
        object: &ObjectKey,
        version: u64,
    ) -> Result<ObjectKey, EncryptedError> {
        ObjectKey::new(format!("{}{object}/v{version}", self.tenant_prefix(scope)))
            .map_err(EncryptedError::InvalidObjectId)
    }

    /// Seals and stores `plaintext` as a new version of the tenant's `object`, named `name`.
    ///
    /// # Errors
    ///
    /// Crypto, store and database errors.
    pub async fn put(
        &self,
        scope: &TenantScope,
        object: &ObjectKey,
        name: &str,
        plaintext: Bytes,
    ) -> Result<ObjectInfo, EncryptedError> {
        let body = futures::stream::once(async move { Ok::<_, std::io::Error>(plaintext) });
        self.put_stream(scope, object, name, body).await
    }

    /// Seals and stores a streamed plaintext as a new version of the tenant's `object`, named `name`,
    /// without holding it whole in memory (large objects go to S3 as a multipart upload).
    ///
    /// # Errors
    ///
    /// [`EncryptedError::Body`] if `body` fails; crypto, store and database errors.
    pub async fn put_stream<S, E>(
        &self,
        scope: &TenantScope,
        object: &ObjectKey,
        name: &str,
        body: S,
    ) -> Result<ObjectInfo, EncryptedError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let version = new_version();
        let obj = ObjectRef {
            tenant: scope.as_str(),
            object: object.as_str(),
            version,
        };
        let encryptor = self.keyring.encryptor(&obj).await?;
        let name_id = name_id(object);
        let name_obj = ObjectRef {
            tenant: scope.as_str(),
            object: &name_id,
            version,
        };
        let name_sealed = self.keyring.seal(&name_obj, name.as_bytes()).await?;
        let key = self.key(scope, object, version)?;

        let size = Arc::new(AtomicU64::new(0));
        let sealed = seal_stream(body.boxed(), encryptor, Arc::clone(&size));
        let sealed_size = self
            .store
            .put_stream(&key, sealed)
            .await
            .map_err(|e| match e {
                // The sealing stream reports crypto failures as body errors; give them back their type.
                ObjectError::Body(source) => match source.downcast::<trustmesh_crypto::Error>() {
                    Ok(crypto) => EncryptedError::Crypto(*crypto),
                    Err(source) => EncryptedError::Body(source),
                },
                other @ (ObjectError::NotFound
                | ObjectError::InvalidKey(_)
                | ObjectError::InvalidSettings(_)
                | ObjectError::Io(_)
                | ObjectError::S3 { .. }) => EncryptedError::Store(other),
            })?;
        let size = size.load(Ordering::Relaxed);

        let new = NewObjectVersion {
            object: object.as_str(),
            version: to_i64(version),
            size: to_i64(size),
            sealed_size: to_i64(sealed_size),
            name_sealed: &name_sealed,
        };
        match self.repo.upsert(scope, &new).await {
            Ok(Some(previous)) => {
                if let Some(previous) = previous.and_then(|p| u64::try_from(p).ok()) {
                    let old = self.key(scope, object, previous)?;
                    if let Err(e) = self.store.delete(&old).await {
                        tracing::warn!(error = %e, "Could not delete a replaced object version; it stays in storage as unreferenced ciphertext until the tenant is purged.");
                    }
                }
            }
            Ok(None) => {
                // A newer version was recorded concurrently: ours is already obsolete.
                self.store.delete(&key).await?;
            }
            Err(e) => {
                let _ = self.store.delete(&key).await;
                return Err(e.into());
            }
        }
        let now = OffsetDateTime::now_utc();
        Ok(ObjectInfo {
            object: object.as_str().to_owned(),
            name: name.to_owned(),
            version,
            size,
            sealed_size,
            created_at: now,
            updated_at: now,
        })
    }

    /// The tenant's `object`, decrypted.
    ///
    /// # Errors
    ///
    /// [`EncryptedError::NotFound`] if the tenant has no such object; crypto, store and database errors.
    pub async fn get(
        &self,
        scope: &TenantScope,
        object: &ObjectKey,
    ) -> Result<Bytes, EncryptedError> {
        let row = self
            .repo
            .get(scope, object.as_str())
            .await?
            .ok_or(EncryptedError::NotFound)?;
        let version = from_i64(row.version);
        let sealed = self.store.get(&self.key(scope, object, version)?).await?;
        let obj = ObjectRef {
            tenant: scope.as_str(),
            object: object.as_str(),
            version,
        };
        Ok(Bytes::from(self.keyring.open(&obj, &sealed).await?))
    }

    /// The tenant's `object`, decrypted piece by piece (see [`PlaintextStream`]).
    ///
    /// # Errors
    ///
    /// As [`EncryptedObjects::get`]; the stream yields the errors met while reading.
    pub async fn get_stream(
        &self,
        scope: &TenantScope,
        object: &ObjectKey,
    ) -> Result<PlaintextStream, EncryptedError> {
        let row = self
            .repo
            .get(scope, object.as_str())
            .await?
            .ok_or(EncryptedError::NotFound)?;
        let version = from_i64(row.version);
        let mut body = self
            .store
            .get_stream(&self.key(scope, object, version)?)
            .await?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        while header.len() < HEADER_LEN {
            match body.next().await {
                Some(piece) => header.extend_from_slice(&piece?),
                None => return Err(trustmesh_crypto::Error::Decrypt.into()),
            }
        }
        let rest = header.split_off(HEADER_LEN);
        let obj = ObjectRef {
            tenant: scope.as_str(),
            object: object.as_str(),
            version,
        };
        let decryptor = self.keyring.decryptor(&obj, &header).await?;
        Ok(open_stream(Bytes::from(rest), body, decryptor))
    }

    /// The tenant's `object`'s metadata, with its name decrypted.
    ///
    /// # Errors
    ///
    /// [`EncryptedError::NotFound`]; crypto and database errors.
    pub async fn info(
        &self,
        scope: &TenantScope,
        object: &ObjectKey,
    ) -> Result<ObjectInfo, EncryptedError> {
        let row = self
            .repo
            .get(scope, object.as_str())
            .await?
            .ok_or(EncryptedError::NotFound)?;
        self.info_of(scope, row).await
    }

    /// The tenant's objects whose id starts with `prefix`, ordered by id.
    ///
    /// # Errors
    ///
    /// Crypto and database errors.
    pub async fn list(
        &self,
        scope: &TenantScope,
        prefix: &str,
    ) -> Result<Vec<ObjectInfo>, EncryptedError> {
        let mut out = Vec::new();
        for row in self.repo.list(scope, prefix).await? {
            out.push(self.info_of(scope, row).await?);
        }
        Ok(out)
    }

    async fn info_of(
        &self,
        scope: &TenantScope,
        row: ObjectRow,
    ) -> Result<ObjectInfo, EncryptedError> {
        let version = from_i64(row.version);
        let object = ObjectKey::new(row.object).map_err(EncryptedError::InvalidObjectId)?;
        let name_id = name_id(&object);
        let name_obj = ObjectRef {
            tenant: scope.as_str(),
            object: &name_id,
            version,
        };
        let name = self.keyring.open(&name_obj, &row.name_sealed).await?;
        Ok(ObjectInfo {
            object: object.as_str().to_owned(),
            name: String::from_utf8_lossy(&name).into_owned(),
            version,
            size: from_i64(row.size),
            sealed_size: from_i64(row.sealed_size),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }

    /// Deletes the tenant's `object` (its row and its stored bytes); returns whether it existed.
    ///
    /// # Errors
    ///
    /// Store and database errors.
    pub async fn delete(
        &self,
        scope: &TenantScope,
        object: &ObjectKey,
    ) -> Result<bool, EncryptedError> {
        let Some(row) = self.repo.delete(scope, object.as_str()).await? else {
            return Ok(false);
        };
        let key = self.key(scope, object, from_i64(row.version))?;
        self.store.delete(&key).await?;
        Ok(true)
    }

    /// Deletes every object of the tenant whose id starts with `prefix` (a folder of object ids,
    /// ending with `/`: `datasets/<id>/`), each with every stored version; returns how many recorded
    /// objects it deleted.
    ///
    /// Every version means more than the ones the rows record: a crash between writing a version and
    /// recording it, or between recording a new version and deleting the one it replaced, leaves a
    /// version no row names, which [`EncryptedObjects::delete`] would leave behind. So the rows go
    /// first and then everything stored under the prefix, whether a row names it or not: a rerun
    /// after a crash (rows already gone) still deletes the bytes. Use this where a deletion must
    /// leave no residue.
    ///
    /// # Errors
    ///
    /// [`EncryptedError::InvalidObjectId`] if `prefix` does not end with `/` or is not a valid
    /// prefix; store and database errors (what was deleted stays deleted: rerun it).
    pub async fn delete_prefix(
        &self,
        scope: &TenantScope,
        prefix: &str,
    ) -> Result<u64, EncryptedError> {
        if prefix.len() < 2 || !prefix.ends_with('/') {
            return Err(EncryptedError::InvalidObjectId(ObjectError::InvalidKey(
                "an object id prefix must be a folder ending with '/'",
            )));
        }
        let stored = ObjectPrefix::new(format!("{}{prefix}", self.tenant_prefix(scope)))
            .map_err(EncryptedError::InvalidObjectId)?;
        let mut deleted = 0;
        for row in self.repo.list(scope, prefix).await? {
            deleted += u64::from(self.repo.delete(scope, &row.object).await?.is_some());
        }
        self.store.delete_prefix(&stored).await?;
        Ok(deleted)
    }

    /// Purges the tenant from this service: destroys its DEKs first (so every remaining copy, backups
    /// included, is unreadable), then deletes every stored object and version under its prefix and its
    /// metadata rows. Idempotent: rerun it after a failure.
    ///
    /// # Errors
    ///
    /// Crypto, store and database errors.
    pub async fn delete_tenant(&self, scope: &TenantScope) -> Result<TenantPurge, EncryptedError> {
        let deks_destroyed = self.keyring.destroy_tenant(scope.as_str()).await?;
        let prefix = ObjectPrefix::new(self.tenant_prefix(scope))
            .map_err(EncryptedError::InvalidObjectId)?;
        let objects_deleted = self.store.delete_prefix(&prefix).await?;
        let rows_deleted = self.repo.delete_all(scope).await?;
        Ok(TenantPurge {
            deks_destroyed,
            objects_deleted,
            rows_deleted,
        })
    }
}

/// The id an object's sealed name is bound to: distinct from every object id (`#` cannot occur in one).
fn name_id(object: &ObjectKey) -> String {
    format!("{object}#name")
}

/// A fresh version: nanoseconds since the Unix epoch, so versions grow and concurrent writers differ.
fn new_version() -> u64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    u64::try_from(nanos).unwrap_or(1).max(1)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

fn seal_stream<E: Into<BoxError> + Send + 'static>(
    body: BoxStream<'static, Result<Bytes, E>>,
    encryptor: Encryptor,
    size: Arc<AtomicU64>,
) -> crate::objects::BodyStream {
    // A large piece is sealed and handed on a SEAL_PIECE at a time (the rest waits in `pending`), so
    // its ciphertext is never held whole beside it.
    futures::stream::try_unfold(
        (body, Some(encryptor), size, Bytes::new()),
        |(mut body, encryptor, size, mut pending)| async move {
            let Some(mut encryptor) = encryptor else {
                return Ok(None);
            };
            loop {
                let mut out = Vec::new();
                if pending.is_empty() {
                    match body.next().await {
                        Some(Ok(piece)) => pending = piece,
                        Some(Err(e)) => return Err(ObjectError::Body(e.into())),
                        None => {
                            encryptor.finish(&mut out).map_err(crypto_body)?;
                            return Ok(Some((Bytes::from(out), (body, None, size, pending))));
                        }
                    }
                }
                let part = pending.split_to(pending.len().min(SEAL_PIECE));
                size.fetch_add(part.len() as u64, Ordering::Relaxed);
                encryptor.update(&part, &mut out).map_err(crypto_body)?;
                if !out.is_empty() {
                    return Ok(Some((
                        Bytes::from(out),
                        (body, Some(encryptor), size, pending),
                    )));
                }
            }
        },
    )
    .boxed()
}

fn crypto_body(e: trustmesh_crypto::Error) -> ObjectError {
    ObjectError::Body(Box::new(e))
}

fn open_stream(
    first: Bytes,
    body: crate::objects::BodyStream,
    decryptor: Decryptor,
) -> PlaintextStream {
    futures::stream::try_unfold(
        (Some(first), body, Some(decryptor)),
        |(mut first, mut body, decryptor)| async move {
            let Some(mut decryptor) = decryptor else {
                return Ok(None);
            };
            loop {
                let piece = match first.take() {
                    Some(piece) => Some(piece),
                    None => body.next().await.transpose()?,
                };
                let mut out = Vec::new();
                match piece {
                    Some(piece) => {
                        decryptor.update(&piece, &mut out)?;
                        if !out.is_empty() {
                            return Ok(Some((Bytes::from(out), (None, body, Some(decryptor)))));
                        }
                    }
                    None => {
                        decryptor.finish(&mut out)?;
                        return Ok(Some((Bytes::from(out), (None, body, None))));
                    }
                }
            }
        },
    )
    .boxed()
}
