//! What `tm_auth` holds per key, and the bucket itself.
//!
//! Entries are `keys.<key id>` → a JSON [`KeyRecord`]: the digest of the secret (never the secret),
//! the tenant, the scopes, the expiry and the revocation flag; `grants.<grant id>` → a JSON
//! [`GrantRecord`] (a tenant's support grant to the operator); `operator` → the digest of the
//! operator credential, so every service recognizes the operator (who reads no tenant data without a
//! grant); `limits` → the deployment's per-tenant [`RateLimit`]; `quotas.<tenant>` → a tenant's
//! [`TenantQuota`] overrides and `quota_defaults` → the deployment's [`QuotaDefaults`]
//! ([`crate::quota`]). `tenancy` writes them; every service's [`crate::KeyCache`] reads them.

use std::collections::BTreeSet;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use trustmesh_events::{AUTH_KV_BUCKET, TenantId};

use crate::error::KeyStoreError;
use crate::key::{KeyId, SecretDigest};
use crate::limit::RateLimit;
use crate::quota::{QuotaDefaults, TenantQuota};
use crate::scope::Scope;

/// Prefix of key records in the bucket.
pub(crate) const KEYS_PREFIX: &str = "keys.";
/// Prefix of support-grant records in the bucket.
pub(crate) const GRANTS_PREFIX: &str = "grants.";
/// Bucket key of the operator credential's digest.
pub(crate) const OPERATOR_KEY: &str = "operator";
/// Bucket key of the per-tenant request-rate limit.
pub(crate) const LIMITS_KEY: &str = "limits";
/// Prefix of tenants' quota overrides in the bucket.
pub(crate) const QUOTAS_PREFIX: &str = "quotas.";
/// Bucket key of the deployment's default quotas.
pub(crate) const QUOTA_DEFAULTS_KEY: &str = "quota_defaults";

/// The bucket key of `tenant`'s quota overrides: `quotas.<tenant>` (purged when the tenant is
/// deleted: every service then applies the defaults).
#[must_use]
pub fn quota_bucket_key(tenant: &TenantId) -> String {
    format!("{QUOTAS_PREFIX}{tenant}")
}

/// Values kept per bucket key: the last few, so a revocation's history is visible to operators.
const HISTORY: i64 = 5;

/// One API key as replicated to every service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key id.
    pub key_id: KeyId,
    /// The tenant the key belongs to.
    pub tenant: String,
    /// What the key may do.
    pub scopes: BTreeSet<Scope>,
    /// When the key stops working, in Unix seconds (UTC).
    pub expires_at: i64,
    /// Whether the key was revoked.
    pub revoked: bool,
    /// SHA-256 of the key's secret.
    pub digest: SecretDigest,
}

impl KeyRecord {
    /// The bucket key of this record: `keys.<key id>`.
    #[must_use]
    pub fn bucket_key(&self) -> String {
        format!("{KEYS_PREFIX}{}", self.key_id)
    }

    /// The tenant, validated.
    ///
    /// # Errors
    /// The validation error if the record holds an invalid tenant id.
    pub fn tenant_id(&self) -> Result<TenantId, trustmesh_events::TenantIdError> {
        TenantId::parse(self.tenant.as_str())
    }

    /// Whether the key has expired at `now`.
    #[must_use]
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now.unix_timestamp() >= self.expires_at
    }

    pub(crate) fn encode(&self) -> Bytes {
        // NOTE: serializing plain strings, integers and a set cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// One support grant as replicated to every service: the operator may use `scopes` on `resources`
/// (every resource of the tenant if empty) of `tenant` until `expires_at`, unless revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// The grant id (a UUID).
    pub grant_id: uuid::Uuid,
    /// The tenant that granted it.
    pub tenant: String,
    /// What the operator may do (never `admin`).
    pub scopes: BTreeSet<Scope>,
    /// The resource names (and their sub-resources) it is restricted to; empty: the whole tenant.
    pub resources: Vec<String>,
    /// When the grant ends, in Unix seconds (UTC).
    pub expires_at: i64,
    /// Whether the grant was revoked.
    pub revoked: bool,
}

impl GrantRecord {
    /// The bucket key of this record: `grants.<grant id>`.
    #[must_use]
    pub fn bucket_key(&self) -> String {
        format!("{GRANTS_PREFIX}{}", self.grant_id)
    }

    /// Whether the grant has expired at `now`.
    #[must_use]
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now.unix_timestamp() >= self.expires_at
    }
}

/// Opens the key-value bucket `config` names, creating it from `config` (on file storage, at least
/// one replica) if it is missing.
pub(crate) async fn open_bucket(
    jetstream: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, async_nats::Error> {
    if let Ok(store) = jetstream.get_key_value(&config.bucket).await {
        return Ok(store);
    }
    let config = kv::Config {
        storage: jetstream::stream::StorageType::File,
        num_replicas: config.num_replicas.max(1),
        ..config
    };
    Ok(jetstream.create_or_update_key_value(config).await?)
}

/// The `tm_auth` key-value bucket.
#[derive(Debug, Clone)]
pub struct AuthBucket {
    store: kv::Store,
}

impl AuthBucket {
    /// Opens `tm_auth`, creating it (file storage, `replicas` replicas) if it is missing.
    ///
    /// # Errors
    /// [`KeyStoreError::Bucket`] if the server refuses or cannot be reached.
    pub async fn open(
        jetstream: &jetstream::Context,
        replicas: usize,
    ) -> Result<Self, KeyStoreError> {
        let store = open_bucket(
            jetstream,
            kv::Config {
                bucket: AUTH_KV_BUCKET.to_owned(),
                description: "API-key digests, tenants, scopes, expiry and revocation, support grants and rate limits, replicated to every service.".to_owned(),
                history: HISTORY,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await
        .map_err(KeyStoreError::Bucket)?;
        Ok(Self { store })
    }

    /// Writes `record` (a new key, or a revocation) and returns its revision.
    ///
    /// # Errors
    /// [`KeyStoreError::Put`] if the server does not accept it.
    pub async fn put(&self, record: &KeyRecord) -> Result<u64, KeyStoreError> {
        let key = record.bucket_key();
        self.store
            .put(&key, record.encode())
            .await
            .map_err(|source| KeyStoreError::Put {
                key,
                source: source.into(),
            })
    }

    /// The record of `key_id` as stored, if any.
    ///
    /// # Errors
    /// [`KeyStoreError::Bucket`] if the server cannot be reached or the value does not decode.
    pub async fn get(&self, key_id: &KeyId) -> Result<Option<KeyRecord>, KeyStoreError> {
        let value = self
            .store
            .get(format!("{KEYS_PREFIX}{key_id}"))
            .await
            .map_err(|e| KeyStoreError::Bucket(e.into()))?;
        value
            .map(|v| KeyRecord::decode(&v).map_err(|e| KeyStoreError::Bucket(e.into())))
            .transpose()
    }

    /// Writes a support grant (a new one, or its revocation) and returns its revision.
    ///
    /// # Errors
    /// [`KeyStoreError::Put`] if the server does not accept it.
    pub async fn put_grant(&self, record: &GrantRecord) -> Result<u64, KeyStoreError> {
        self.put_json(record.bucket_key(), record).await
    }

    /// The grant `grant_id` as stored, if any.
    ///
    /// # Errors
    /// [`KeyStoreError::Bucket`] if the server cannot be reached or the value does not decode.
    pub async fn get_grant(
        &self,
        grant_id: &uuid::Uuid,
    ) -> Result<Option<GrantRecord>, KeyStoreError> {
        let value = self
            .store
            .get(format!("{GRANTS_PREFIX}{grant_id}"))
            .await
            .map_err(|e| KeyStoreError::Bucket(e.into()))?;
        value
            .map(|v| serde_json::from_slice(&v).map_err(|e| KeyStoreError::Bucket(e.into())))
            .transpose()
    }

    /// Publishes the operator credential's digest, so every service recognizes the operator.
    ///
    /// # Errors
    /// [`KeyStoreError::Put`] if the server does not accept it.
    pub async fn put_operator(&self, digest: &SecretDigest) -> Result<u64, KeyStoreError> {
        self.put_json(OPERATOR_KEY.to_owned(), digest).await
    }

    /// Publishes the deployment's per-tenant request-rate limit to every service.
    ///
    /// # Errors
    /// [`KeyStoreError::Put`] if the server does not accept it.
    pub async fn put_limits(&self, limit: &RateLimit) -> Result<u64, KeyStoreError> {
        self.put_json(LIMITS_KEY.to_owned(), limit).await
    }

    /// Publishes `tenant`'s quota overrides to every service.
    ///
    /// # Errors
    /// [`KeyStoreError::Put`] if the server does not accept it.
    pub async fn put_quota(
        &self,
        tenant: &TenantId,
        quota: &TenantQuota,
    ) -> Result<u64, KeyStoreError> {
        self.put_json(quota_bucket_key(tenant), quota).await
    }

    /// Publishes the deployment's default quotas to every service.
    ///
    /// # Errors
    /// [`KeyStoreError::Put`] if the server does not accept it.
    pub async fn put_quota_defaults(&self, defaults: &QuotaDefaults) -> Result<u64, KeyStoreError> {
        self.put_json(QUOTA_DEFAULTS_KEY.to_owned(), defaults).await
    }

    async fn put_json(&self, key: String, value: &impl Serialize) -> Result<u64, KeyStoreError> {
        // NOTE: serializing plain strings, integers and sets cannot fail.
        let bytes = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
        self.store
            .put(&key, bytes)
            .await
            .map_err(|source| KeyStoreError::Put {
                key,
                source: source.into(),
            })
    }

    pub(crate) fn store(&self) -> &kv::Store {
        &self.store
    }
}
