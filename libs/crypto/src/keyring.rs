//! [`Keyring`]: one service's view of its tenants' DEKs, and the seal/open entry points.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use ring::rand::{SecureRandom, SystemRandom};

use crate::chunked::{Decryptor, Encryptor, ObjectCipher};
use crate::envelope::{
    DEFAULT_CHUNK_SIZE, HEADER_LEN, Header, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, NONCE_PREFIX_LEN,
    SALT_LEN, body_layout, sealed_len,
};
use crate::error::{Error, Result};
use crate::key::{DataKey, WrapContext, push_field};
use crate::provider::KeyProvider;
use crate::store::{DekRecord, DekStore};

/// The longest accepted tenant id, in bytes.
pub const MAX_TENANT_LEN: usize = 255;
/// The longest accepted object id, in bytes.
pub const MAX_OBJECT_LEN: usize = 1024;

/// What a ciphertext is bound to, besides the [`Keyring`]'s service: authenticated as AAD and mixed
/// into the per-object key, so a ciphertext opened as another tenant, object or version fails.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ObjectRef<'a> {
    /// The tenant id (validated by the caller, e.g. `trustmesh-events`' tenant id type).
    pub tenant: &'a str,
    /// The object's id within the service (e.g. `datasets/<uuid>/raw` or a row key).
    pub object: &'a str,
    /// The object's version (a new version of an object is sealed anew).
    pub version: u64,
}

impl ObjectRef<'_> {
    fn validate(&self) -> Result<()> {
        if self.tenant.is_empty() || self.tenant.len() > MAX_TENANT_LEN {
            return Err(Error::InvalidArgument("tenant must be 1 to 255 bytes"));
        }
        if self.object.is_empty() || self.object.len() > MAX_OBJECT_LEN {
            return Err(Error::InvalidArgument("object id must be 1 to 1024 bytes"));
        }
        Ok(())
    }

    /// Canonical, length-prefixed encoding of (service, tenant, object, version).
    fn binding(&self, service: &str) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(48 + service.len() + self.tenant.len() + self.object.len());
        push_field(&mut out, b"trustmesh/object/v1");
        push_field(&mut out, service.as_bytes());
        push_field(&mut out, self.tenant.as_bytes());
        push_field(&mut out, self.object.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out
    }
}

/// What [`Keyring::rotate_kek`] and [`Keyring::rewrap`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RewrapReport {
    /// The KEK version every DEK of the service is now wrapped under.
    pub kek_version: u32,
    /// How many wrapped DEKs were rewrapped.
    pub rewrapped: u64,
}

#[derive(Default)]
struct TenantKeys {
    current: Option<u32>,
    keys: BTreeMap<u32, Arc<DataKey>>,
}

/// One service's envelope encryption: seals and opens its tenants' objects with per-(service, tenant)
/// DEKs that are created on first use, stored only wrapped (in the [`DekStore`], by the
/// [`KeyProvider`]'s KEK) and cached unwrapped in memory (zeroized when evicted or dropped).
///
/// Another process destroying a tenant's DEKs does not reach this cache: call
/// [`Keyring::evict_tenant`] on a tenant-deletion event.
pub struct Keyring {
    service: String,
    provider: Arc<dyn KeyProvider>,
    store: Arc<dyn DekStore>,
    chunk_size: u32,
    rng: SystemRandom,
    cache: Mutex<HashMap<String, TenantKeys>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("service", &self.service)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring for `service`, with KEKs from `provider` and wrapped DEKs in `store`; chunks of
    /// [`DEFAULT_CHUNK_SIZE`] (64 KiB).
    pub fn new(
        service: impl Into<String>,
        provider: Arc<dyn KeyProvider>,
        store: Arc<dyn DekStore>,
    ) -> Self {
        Self {
            service: service.into(),
            provider,
            store,
            chunk_size: DEFAULT_CHUNK_SIZE,
            rng: SystemRandom::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the plaintext chunk size of objects sealed from now on (opening reads it from each envelope).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] outside [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`].
    pub fn with_chunk_size(mut self, chunk_size: u32) -> Result<Self> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(Error::InvalidArgument("chunk size must be 64 B to 16 MiB"));
        }
        self.chunk_size = chunk_size;
        Ok(self)
    }

    /// The service this keyring belongs to.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Seals `plaintext` as `obj` under the tenant's current DEK (created on first use).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad [`ObjectRef`]; key provider and store errors.
    pub async fn seal(&self, obj: &ObjectRef<'_>, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut encryptor = self.encryptor(obj).await?;
        let capacity = usize::try_from(sealed_len(plaintext.len() as u64, self.chunk_size))
            .map_err(|_| Error::TooLarge)?;
        let mut out = Vec::with_capacity(capacity);
        encryptor.update(plaintext, &mut out)?;
        encryptor.finish(&mut out)?;
        Ok(out)
    }

    /// Opens a ciphertext sealed as `obj` by this service.
    ///
    /// # Errors
    /// [`Error::Envelope`] for bytes that are not an envelope, [`Error::DekNotFound`] if the DEK was
    /// destroyed, [`Error::Decrypt`] if anything was altered, truncated, reordered or moved.
    pub async fn open(&self, obj: &ObjectRef<'_>, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let header = Header::parse(ciphertext)?;
        let body = ciphertext.get(HEADER_LEN..).ok_or(Error::Decrypt)?;
        let (_, plaintext_len) = body_layout(body.len() as u64, header.chunk_size())?;
        let mut decryptor = self.decryptor_for(obj, &header).await?;
        let mut out =
            Vec::with_capacity(usize::try_from(plaintext_len).map_err(|_| Error::TooLarge)?);
        decryptor.update(body, &mut out)?;
        decryptor.finish(&mut out)?;
        Ok(out)
    }

    /// An incremental sealer for `obj` (for objects streamed in pieces, e.g. uploads).
    ///
    /// # Errors
    /// As [`Keyring::seal`].
    pub async fn encryptor(&self, obj: &ObjectRef<'_>) -> Result<Encryptor> {
        obj.validate()?;
        let (dek_version, dek) = self.current_dek(obj.tenant).await?;
        let mut salt = [0u8; SALT_LEN];
        let mut prefix = [0u8; NONCE_PREFIX_LEN];
        self.rng.fill(&mut salt).map_err(|_| Error::Rng)?;
        self.rng.fill(&mut prefix).map_err(|_| Error::Rng)?;
        let header = Header::new(dek_version, self.chunk_size, salt, prefix);
        let cipher = ObjectCipher::new(&dek, &header, &obj.binding(&self.service))?;
        Ok(Encryptor::new(cipher, &header))
    }

    /// An incremental opener for `obj`, given the envelope's first [`HEADER_LEN`] bytes; feed it the
    /// bytes after them.
    ///
    /// # Errors
    /// As [`Keyring::open`].
    pub async fn decryptor(&self, obj: &ObjectRef<'_>, header: &[u8]) -> Result<Decryptor> {
        let header = Header::parse(header)?;
        self.decryptor_for(obj, &header).await
    }

    async fn decryptor_for(&self, obj: &ObjectRef<'_>, header: &Header) -> Result<Decryptor> {
        obj.validate()?;
        let dek = self.dek(obj.tenant, header.dek_version()).await?;
        Ok(Decryptor::new(ObjectCipher::new(
            &dek,
            header,
            &obj.binding(&self.service),
        )?))
    }

    /// Makes a new DEK current for `tenant`: later seals use it, earlier ciphertexts stay readable.
    /// Returns the new DEK version.
    ///
    /// # Errors
    /// Key provider and store errors; [`Error::DekConflict`] if another replica rotated concurrently.
    pub async fn rotate_dek(&self, tenant: &str) -> Result<u32> {
        let latest = self
            .store
            .current(&self.service, tenant)
            .await?
            .map_or(0, |r| r.dek_version);
        let next = latest.checked_add(1).ok_or(Error::TooLarge)?;
        self.create_dek(tenant, next).await?;
        Ok(next)
    }

    /// Rotates the provider's KEK and rewraps every DEK of this service under the new version
    /// (old ciphertexts stay readable: DEKs do not change, only their wrapping).
    ///
    /// # Errors
    /// Key provider and store errors; rerun [`Keyring::rewrap`] to resume after a failure.
    pub async fn rotate_kek(&self) -> Result<RewrapReport> {
        self.provider.rotate().await?;
        self.rewrap().await
    }

    /// Rewraps every DEK of this service that is behind the provider's current KEK version
    /// (resumable; compare-and-set per DEK, so concurrent rewrappers are harmless).
    ///
    /// # Errors
    /// Key provider and store errors.
    pub async fn rewrap(&self) -> Result<RewrapReport> {
        const BATCH: usize = 256;
        let kek_version = self.provider.current_kek_version().await?;
        let mut rewrapped = 0;
        loop {
            let behind = self
                .store
                .list_behind(&self.service, kek_version, BATCH)
                .await?;
            if behind.is_empty() {
                return Ok(RewrapReport {
                    kek_version,
                    rewrapped,
                });
            }
            for record in behind {
                let ctx = WrapContext {
                    service: &self.service,
                    tenant: &record.tenant,
                    dek_version: record.dek_version,
                };
                let dek = self.provider.unwrap(&ctx, &record.wrapped).await?;
                let wrapped = self.provider.wrap(&ctx, &dek).await?;
                if wrapped.kek_version < kek_version {
                    // The provider went backwards: stop rather than loop forever.
                    return Err(Error::UnknownKekVersion(kek_version));
                }
                let replaced = self
                    .store
                    .rewrap(
                        &self.service,
                        &record.tenant,
                        record.dek_version,
                        record.wrapped.kek_version,
                        &wrapped,
                    )
                    .await?;
                rewrapped += u64::from(replaced);
            }
        }
    }

    /// Crypto-shreds `tenant` for this service: deletes every one of its DEKs from the store and
    /// this cache, after which none of its ciphertexts (in any copy or backup) can be opened.
    /// Returns how many DEKs were destroyed.
    ///
    /// # Errors
    /// Store errors (the cache is evicted regardless).
    pub async fn destroy_tenant(&self, tenant: &str) -> Result<u64> {
        self.evict_tenant(tenant);
        self.store.delete_tenant(&self.service, tenant).await
    }

    /// Drops the cached plaintext DEKs of `tenant` (zeroizing them once no operation holds them).
    pub fn evict_tenant(&self, tenant: &str) {
        self.lock().remove(tenant);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TenantKeys>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn current_dek(&self, tenant: &str) -> Result<(u32, Arc<DataKey>)> {
        let cached = self.lock().get(tenant).and_then(|t| {
            let version = t.current?;
            Some((version, Arc::clone(t.keys.get(&version)?)))
        });
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let record = match self.store.current(&self.service, tenant).await? {
            Some(record) => record,
            None => match self.create_dek(tenant, 1).await {
                Ok(record) => record,
                // Another replica created it first: use theirs.
                Err(Error::DekConflict) => self
                    .store
                    .current(&self.service, tenant)
                    .await?
                    .ok_or(Error::DekNotFound { dek_version: 1 })?,
                Err(e) => return Err(e),
            },
        };
        let dek = self.unwrap_record(&record).await?;
        let mut cache = self.lock();
        let entry = cache.entry(tenant.to_owned()).or_default();
        entry.current = Some(
            entry
                .current
                .map_or(record.dek_version, |c| c.max(record.dek_version)),
        );
        entry.keys.insert(record.dek_version, Arc::clone(&dek));
        Ok((record.dek_version, dek))
    }

    async fn dek(&self, tenant: &str, dek_version: u32) -> Result<Arc<DataKey>> {
        let cached = self
            .lock()
            .get(tenant)
            .and_then(|t| t.keys.get(&dek_version).cloned());
        if let Some(dek) = cached {
            return Ok(dek);
        }
        let record = self
            .store
            .get(&self.service, tenant, dek_version)
            .await?
            .ok_or(Error::DekNotFound { dek_version })?;
        let dek = self.unwrap_record(&record).await?;
        self.lock()
            .entry(tenant.to_owned())
            .or_default()
            .keys
            .insert(dek_version, Arc::clone(&dek));
        Ok(dek)
    }

    async fn unwrap_record(&self, record: &DekRecord) -> Result<Arc<DataKey>> {
        let ctx = WrapContext {
            service: &self.service,
            tenant: &record.tenant,
            dek_version: record.dek_version,
        };
        Ok(Arc::new(self.provider.unwrap(&ctx, &record.wrapped).await?))
    }

    async fn create_dek(&self, tenant: &str, dek_version: u32) -> Result<DekRecord> {
        let dek = DataKey::generate()?;
        let ctx = WrapContext {
            service: &self.service,
            tenant,
            dek_version,
        };
        let wrapped = self.provider.wrap(&ctx, &dek).await?;
        let record = DekRecord {
            service: self.service.clone(),
            tenant: tenant.to_owned(),
            dek_version,
            wrapped,
        };
        self.store.insert(&record).await?;
        let mut cache = self.lock();
        let entry = cache.entry(tenant.to_owned()).or_default();
        entry.current = Some(entry.current.map_or(dek_version, |c| c.max(dek_version)));
        entry.keys.insert(dek_version, Arc::new(dek));
        Ok(record)
    }
}
