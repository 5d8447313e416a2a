//! Where wrapped DEKs live: the [`DekStore`] trait and an in-memory implementation.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::key::WrappedKey;

/// One wrapped data-encryption key of a (service, tenant).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DekRecord {
    /// The service that owns the key.
    pub service: String,
    /// The tenant the key belongs to.
    pub tenant: String,
    /// The DEK version within (service, tenant), starting at 1; the highest is current.
    pub dek_version: u32,
    /// The DEK wrapped by the service's KEK (its `kek_version` says which).
    pub wrapped: WrappedKey,
}

/// Persistence of wrapped DEKs (never plaintext ones), keyed by (service, tenant, dek_version).
///
/// `libs/store` implements it on Postgres (one row per record, with `kek_version` as a column so a
/// rewrap can find the rows behind); [`MemoryDekStore`] is the in-process implementation.
/// Implementations map their backend failures to [`Error::DekStore`].
#[async_trait]
pub trait DekStore: Send + Sync {
    /// Inserts a new record.
    ///
    /// # Errors
    /// [`Error::DekConflict`] if (service, tenant, dek_version) already exists (another replica won
    /// the race: the caller re-reads); [`Error::DekStore`] on backend failure.
    async fn insert(&self, record: &DekRecord) -> Result<()>;

    /// The record with the highest `dek_version` of (service, tenant), if any.
    ///
    /// # Errors
    /// [`Error::DekStore`] on backend failure.
    async fn current(&self, service: &str, tenant: &str) -> Result<Option<DekRecord>>;

    /// The record (service, tenant, dek_version), if it exists.
    ///
    /// # Errors
    /// [`Error::DekStore`] on backend failure.
    async fn get(&self, service: &str, tenant: &str, dek_version: u32)
    -> Result<Option<DekRecord>>;

    /// Up to `limit` records of `service` (any tenant) whose `wrapped.kek_version` is below
    /// `kek_version`, for a rewrap job.
    ///
    /// # Errors
    /// [`Error::DekStore`] on backend failure.
    async fn list_behind(
        &self,
        service: &str,
        kek_version: u32,
        limit: usize,
    ) -> Result<Vec<DekRecord>>;

    /// Replaces the wrapped key of (service, tenant, dek_version) with `wrapped`, only if the stored
    /// one still has KEK version `expected_kek_version` (compare-and-set). Returns whether it replaced.
    ///
    /// # Errors
    /// [`Error::DekStore`] on backend failure.
    async fn rewrap(
        &self,
        service: &str,
        tenant: &str,
        dek_version: u32,
        expected_kek_version: u32,
        wrapped: &WrappedKey,
    ) -> Result<bool>;

    /// Deletes every record of (service, tenant) — crypto-shredding — and returns how many it deleted.
    ///
    /// # Errors
    /// [`Error::DekStore`] on backend failure.
    async fn delete_tenant(&self, service: &str, tenant: &str) -> Result<u64>;
}

type Key = (String, String, u32);

/// A [`DekStore`] in process memory: for tests and single-process tools (keys do not survive a restart).
#[derive(Debug, Default)]
pub struct MemoryDekStore {
    records: Mutex<BTreeMap<Key, WrappedKey>>,
}

impl MemoryDekStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, WrappedKey>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn record((service, tenant, dek_version): &Key, wrapped: &WrappedKey) -> DekRecord {
    DekRecord {
        service: service.clone(),
        tenant: tenant.clone(),
        dek_version: *dek_version,
        wrapped: wrapped.clone(),
    }
}

#[async_trait]
impl DekStore for MemoryDekStore {
    async fn insert(&self, rec: &DekRecord) -> Result<()> {
        let key = (rec.service.clone(), rec.tenant.clone(), rec.dek_version);
        let mut records = self.lock();
        if records.contains_key(&key) {
            return Err(Error::DekConflict);
        }
        records.insert(key, rec.wrapped.clone());
        Ok(())
    }

    async fn current(&self, service: &str, tenant: &str) -> Result<Option<DekRecord>> {
        let records = self.lock();
        let lo = (service.to_owned(), tenant.to_owned(), 0);
        let hi = (service.to_owned(), tenant.to_owned(), u32::MAX);
        Ok(records
            .range(lo..=hi)
            .next_back()
            .map(|(k, w)| record(k, w)))
    }

    async fn get(
        &self,
        service: &str,
        tenant: &str,
        dek_version: u32,
    ) -> Result<Option<DekRecord>> {
        let key = (service.to_owned(), tenant.to_owned(), dek_version);
        Ok(self.lock().get(&key).map(|w| record(&key, w)))
    }

    async fn list_behind(
        &self,
        service: &str,
        kek_version: u32,
        limit: usize,
    ) -> Result<Vec<DekRecord>> {
        Ok(self
            .lock()
            .iter()
            .filter(|((s, _, _), w)| s == service && w.kek_version < kek_version)
            .take(limit)
            .map(|(k, w)| record(k, w))
            .collect())
    }

    async fn rewrap(
        &self,
        service: &str,
        tenant: &str,
        dek_version: u32,
        expected_kek_version: u32,
        wrapped: &WrappedKey,
    ) -> Result<bool> {
        let key = (service.to_owned(), tenant.to_owned(), dek_version);
        match self.lock().get_mut(&key) {
            Some(stored) if stored.kek_version == expected_kek_version => {
                *stored = wrapped.clone();
                Ok(true)
            }
            Some(_) | None => Ok(false),
        }
    }

    async fn delete_tenant(&self, service: &str, tenant: &str) -> Result<u64> {
        let mut records = self.lock();
        let before = records.len();
        records.retain(|(s, t, _), _| !(s == service && t == tenant));
        Ok(u64::try_from(before - records.len()).unwrap_or(u64::MAX))
    }
}
