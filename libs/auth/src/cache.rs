//! [`KeyCache`]: every service's local replica of `tm_auth`, so keys resolve without a round trip.
//!
//! # Revocation bound
//!
//! The cache follows the bucket with a KV watch (an ordered push consumer): a revocation written by
//! `tenancy` reaches every connected cache as soon as the server pushes it, typically within a few
//! milliseconds (one server hop; the tests assert well under two seconds). A cache cut off from the
//! bucket (connection lost, watch broken) keeps its last state for at most
//! [`CacheOptions::max_staleness`] (default 10 s) and then refuses every key until it is connected
//! and watching again (fail closed). So a revoked key stops working everywhere within
//! `max_staleness` + one health tick (1 s) in the worst case, and within milliseconds normally.
//! Support grants replicate through the same bucket and watch, so a revoked grant stops working
//! within the same bound.
//!
//! The cache also holds what the rest of `tm_auth` says: the operator credential's digest, the
//! per-tenant request-rate limit with its buckets ([`KeyCache::admit`]), and the tenants' quotas
//! ([`KeyCache::quota`], [`crate::quota`]); quota changes reach every service within the same bound
//! as revocations.
//!
//! With [`CacheOptions::audit_denials_as`] set, it also audits the auth layer's refusals
//! ([`crate::denials`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use trustmesh_events::{Service, TenantId};

use crate::denials::{Denial, DenialAudit};
use crate::error::{AuthError, KeyStoreError};
use crate::grant::SupportPrincipal;
use crate::key::{KeyId, PresentedKey, SecretDigest};
use crate::limit::{RateLimit, TenantLimiter};
use crate::principal::KeyPrincipal;
use crate::quota::{EffectiveQuota, QuotaDefaults, TenantQuota};
use crate::record::{
    AuthBucket, GRANTS_PREFIX, GrantRecord, KEYS_PREFIX, KeyRecord, LIMITS_KEY, OPERATOR_KEY,
    QUOTA_DEFAULTS_KEY, QUOTAS_PREFIX,
};

/// How often the cache checks that it is still connected.
const HEALTH_TICK: Duration = Duration::from_secs(1);

/// How a [`KeyCache`] loads and how stale it may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// How long [`KeyCache::start`] waits for the bucket's current contents.
    pub load_timeout: Duration,
    /// How long the cache may be cut off from the bucket before it refuses every key.
    pub max_staleness: Duration,
    /// Replicas of the bucket if the cache has to create it.
    pub replicas: usize,
    /// The service whose audit log (`tm.<tenant>.audit.<service>`) records the auth layer's
    /// refusals; `None` logs them only.
    pub audit_denials_as: Option<Service>,
}

impl Default for CacheOptions {
    /// 30 s to load, 10 s of staleness, one replica, refusals logged only.
    fn default() -> Self {
        Self {
            load_timeout: Duration::from_secs(30),
            max_staleness: Duration::from_secs(10),
            replicas: 1,
            audit_denials_as: None,
        }
    }
}

/// A local, continuously updated replica of the key records in `tm_auth`; cheap to clone.
#[derive(Debug, Clone)]
pub struct KeyCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    keys: RwLock<HashMap<KeyId, KeyRecord>>,
    grants: RwLock<HashMap<uuid::Uuid, GrantRecord>>,
    /// The operator credential's digest, once `tenancy` has published it.
    operator: RwLock<Option<SecretDigest>>,
    limiter: RwLock<TenantLimiter>,
    /// Tenants' quota overrides, and the defaults.
    quotas: RwLock<HashMap<TenantId, TenantQuota>>,
    quota_defaults: RwLock<QuotaDefaults>,
    /// Where the auth layer's refusals are audited, if anywhere.
    denials: Option<Arc<DenialAudit>>,
    /// When the cache lost the bucket, if it has.
    cut_off_since: Mutex<Option<Instant>>,
    max_staleness: Duration,
}

impl KeyCache {
    /// Opens `tm_auth` (creating it if missing), loads its current contents and keeps following it
    /// until `shutdown` is cancelled.
    ///
    /// # Errors
    /// [`KeyStoreError`] if the bucket cannot be opened or watched, or is not loaded within
    /// [`CacheOptions::load_timeout`].
    pub async fn start(
        jetstream: &jetstream::Context,
        options: CacheOptions,
        shutdown: CancellationToken,
    ) -> Result<Self, KeyStoreError> {
        let bucket = AuthBucket::open(jetstream, options.replicas).await?;
        let inner = Arc::new(Inner {
            keys: RwLock::new(HashMap::new()),
            grants: RwLock::new(HashMap::new()),
            operator: RwLock::new(None),
            limiter: RwLock::new(TenantLimiter::new(RateLimit::default())),
            quotas: RwLock::new(HashMap::new()),
            quota_defaults: RwLock::new(QuotaDefaults::default()),
            denials: options
                .audit_denials_as
                .map(|service| DenialAudit::new(service, jetstream.clone())),
            cut_off_since: Mutex::new(None),
            max_staleness: options.max_staleness,
        });
        if let Some(denials) = &inner.denials {
            tokio::spawn(Arc::clone(denials).run(shutdown.clone()));
        }
        let empty = bucket
            .store()
            .status()
            .await
            .map_err(|e| KeyStoreError::Watch(e.into()))?
            .values()
            == 0;
        let watch = bucket
            .store()
            .watch_with_history(">")
            .await
            .map_err(|e| KeyStoreError::Watch(e.into()))?;
        let (loaded_tx, loaded_rx) = oneshot::channel();
        let loaded = if empty {
            let _ = loaded_tx.send(());
            None
        } else {
            Some(loaded_tx)
        };
        tokio::spawn(follow(
            bucket,
            jetstream.client(),
            watch,
            Arc::clone(&inner),
            loaded,
            shutdown,
        ));
        tokio::time::timeout(options.load_timeout, loaded_rx)
            .await
            .map_err(|_| KeyStoreError::LoadTimeout(options.load_timeout))?
            .map_err(|_| KeyStoreError::LoadTimeout(options.load_timeout))?;
        tracing::info!(
            keys = inner.len(),
            "The API-key cache is loaded from tm_auth."
        );
        Ok(Self { inner })
    }

    /// Resolves a presented key at `now`: known, secret matching (constant time), not revoked, not
    /// expired, and the cache not cut off for longer than allowed.
    ///
    /// # Errors
    /// [`AuthError::UnknownKey`], [`AuthError::WrongSecret`], [`AuthError::Revoked`],
    /// [`AuthError::Expired`] or [`AuthError::CacheStale`].
    pub fn authenticate(
        &self,
        presented: &PresentedKey,
        now: OffsetDateTime,
    ) -> Result<KeyPrincipal, AuthError> {
        if self.inner.is_stale() {
            return Err(AuthError::CacheStale);
        }
        let keys = self
            .inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let record = keys.get(presented.key_id()).ok_or(AuthError::UnknownKey)?;
        if !record.digest.matches(presented.digest()) {
            return Err(AuthError::WrongSecret);
        }
        if record.revoked {
            return Err(AuthError::Revoked);
        }
        if record.is_expired(now) {
            return Err(AuthError::Expired);
        }
        let tenant = record.tenant_id().map_err(|_| AuthError::UnknownKey)?;
        Ok(KeyPrincipal {
            tenant,
            key_id: record.key_id.clone(),
            scopes: record.scopes.clone(),
        })
    }

    /// The operator acting under grant `grant_id` at `now`: the grant known, not revoked, not
    /// expired, and the cache not cut off for longer than allowed.
    ///
    /// # Errors
    /// [`AuthError::UnknownGrant`], [`AuthError::Revoked`], [`AuthError::Expired`] or
    /// [`AuthError::CacheStale`].
    pub fn grant(
        &self,
        grant_id: &uuid::Uuid,
        now: OffsetDateTime,
    ) -> Result<SupportPrincipal, AuthError> {
        if self.inner.is_stale() {
            return Err(AuthError::CacheStale);
        }
        let grants = self
            .inner
            .grants
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let record = grants.get(grant_id).ok_or(AuthError::UnknownGrant)?;
        if record.is_expired(now) {
            return Err(AuthError::Expired);
        }
        SupportPrincipal::of(record).ok_or(AuthError::Revoked)
    }

    /// Whether `digest` is the operator credential's, as `tenancy` published it.
    #[must_use]
    pub fn is_operator(&self, digest: &SecretDigest) -> bool {
        self.inner
            .operator
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|operator| operator.matches(digest))
    }

    /// Takes one request from `tenant`'s rate bucket, or says how long until the next is allowed.
    ///
    /// # Errors
    /// The wait, when the tenant is over its rate.
    pub fn admit(&self, tenant: &TenantId) -> Result<(), std::time::Duration> {
        self.inner
            .limiter
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(tenant)
    }

    /// The quota that applies to `tenant` now: its overrides over the deployment's defaults.
    #[must_use]
    pub fn quota(&self, tenant: &TenantId) -> EffectiveQuota {
        let overrides = self
            .inner
            .quotas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .copied()
            .unwrap_or_default();
        let defaults = *self
            .inner
            .quota_defaults
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let rate = self
            .inner
            .limiter
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .limit();
        EffectiveQuota::resolve(tenant.clone(), overrides, defaults, rate)
    }

    /// Audits a refusal of the auth layer, if the cache audits them ([`crate::denials`]).
    pub(crate) fn record_denial(&self, denial: Denial) {
        if let Some(denials) = &self.inner.denials {
            denials.record(denial);
        }
    }

    /// The record of `key_id` as the cache holds it.
    #[must_use]
    pub fn get(&self, key_id: &KeyId) -> Option<KeyRecord> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
            .cloned()
    }
}

impl Inner {
    fn len(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn is_stale(&self) -> bool {
        self.cut_off_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|since| since.elapsed() > self.max_staleness)
    }

    fn set_connected(&self, connected: bool) {
        let mut since = self
            .cut_off_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (connected, *since) {
            (true, Some(_)) => {
                tracing::info!("The API-key cache is connected to tm_auth again.");
                *since = None;
            }
            (false, None) => {
                tracing::warn!(
                    "The API-key cache lost tm_auth; keys are refused if it stays cut off."
                );
                *since = Some(Instant::now());
            }
            (true, None) | (false, Some(_)) => {}
        }
    }

    fn apply(&self, entry: &kv::Entry) {
        let put = matches!(entry.operation, kv::Operation::Put);
        if let Some(id) = entry.key.strip_prefix(GRANTS_PREFIX) {
            self.apply_grant(id, put.then_some(&entry.value[..]));
        } else if entry.key == OPERATOR_KEY {
            // Fail closed: an undecodable digest recognizes nobody.
            let digest = put
                .then(|| serde_json::from_slice(&entry.value).ok())
                .flatten();
            *self
                .operator
                .write()
                .unwrap_or_else(PoisonError::into_inner) = digest;
        } else if entry.key == LIMITS_KEY {
            let limit = put
                .then(|| serde_json::from_slice(&entry.value).ok())
                .flatten()
                .unwrap_or_default();
            let mut limiter = self.limiter.write().unwrap_or_else(PoisonError::into_inner);
            if limiter.limit() != limit {
                tracing::info!(
                    rate_limit.requests_per_second = limit.requests_per_second.get(),
                    rate_limit.burst = limit.burst.get(),
                    "The per-tenant request-rate limit changed."
                );
                limiter.set_default(limit);
            }
        } else if entry.key == QUOTA_DEFAULTS_KEY {
            let defaults = put
                .then(|| serde_json::from_slice(&entry.value).ok())
                .flatten()
                .unwrap_or_default();
            *self
                .quota_defaults
                .write()
                .unwrap_or_else(PoisonError::into_inner) = defaults;
        } else if let Some(id) = entry.key.strip_prefix(QUOTAS_PREFIX) {
            self.apply_quota(id, put.then_some(&entry.value[..]));
        } else if let Some(id) = entry.key.strip_prefix(KEYS_PREFIX) {
            self.apply_key(id, entry);
        }
    }

    /// A tenant's quota overrides changed (or were deleted, `value` `None`): the tenant's rate
    /// bucket follows. An undecodable record leaves the defaults.
    fn apply_quota(&self, id: &str, value: Option<&[u8]>) {
        let Ok(tenant) = TenantId::parse(id) else {
            tracing::warn!(kv.key = %id, "Ignoring a tm_auth quota with an invalid tenant id.");
            return;
        };
        let quota: TenantQuota = match value.map(serde_json::from_slice) {
            Some(Ok(quota)) => quota,
            Some(Err(_)) => {
                tracing::warn!(tenant.id = %tenant, "Dropping an undecodable tm_auth quota.");
                TenantQuota::default()
            }
            None => TenantQuota::default(),
        };
        self.limiter
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .set_tenant(
                &tenant,
                std::num::NonZeroU32::new(quota.max_requests_per_minute),
            );
        let mut quotas = self.quotas.write().unwrap_or_else(PoisonError::into_inner);
        if quota == TenantQuota::default() {
            quotas.remove(&tenant);
        } else {
            quotas.insert(tenant, quota);
        }
    }

    fn apply_grant(&self, id: &str, value: Option<&[u8]>) {
        let Ok(grant_id) = uuid::Uuid::parse_str(id) else {
            tracing::warn!(grant.id = %id, "Ignoring a tm_auth entry with an invalid grant id.");
            return;
        };
        let mut grants = self.grants.write().unwrap_or_else(PoisonError::into_inner);
        match value.map(serde_json::from_slice::<GrantRecord>) {
            Some(Ok(record)) if record.grant_id == grant_id => {
                grants.insert(grant_id, record);
            }
            Some(Ok(_) | Err(_)) => {
                // Fail closed: a record that cannot be trusted grants nothing.
                tracing::warn!(grant.id = %grant_id, "Dropping an undecodable tm_auth grant.");
                grants.remove(&grant_id);
            }
            None => {
                grants.remove(&grant_id);
            }
        }
    }

    fn apply_key(&self, id: &str, entry: &kv::Entry) {
        let Ok(key_id) = KeyId::parse(id) else {
            tracing::warn!(kv.key = %entry.key, "Ignoring a tm_auth entry with an invalid key id.");
            return;
        };
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        match entry.operation {
            kv::Operation::Put => match KeyRecord::decode(&entry.value) {
                Ok(record) if record.key_id == key_id => {
                    keys.insert(key_id, record);
                }
                Ok(_) | Err(_) => {
                    // Fail closed: a record that cannot be trusted authenticates nothing.
                    tracing::warn!(key.id = %key_id, "Dropping an undecodable tm_auth record.");
                    keys.remove(&key_id);
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                keys.remove(&key_id);
            }
        }
    }
}

/// Applies every change of the bucket to `inner` until `shutdown`; re-watches after a broken watch.
async fn follow(
    bucket: AuthBucket,
    client: async_nats::Client,
    mut watch: kv::Watch,
    inner: Arc<Inner>,
    mut loaded: Option<oneshot::Sender<()>>,
    shutdown: CancellationToken,
) {
    let mut health = tokio::time::interval(HEALTH_TICK);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = health.tick() => inner.set_connected(client.connection_state() == State::Connected),
            entry = watch.next() => match entry {
                Some(Ok(entry)) => {
                    inner.apply(&entry);
                    if entry.seen_current
                        && let Some(loaded) = loaded.take()
                    {
                        let _ = loaded.send(());
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(error = %error, "The tm_auth watch failed; watching again.");
                    let Some(again) = rewatch(&bucket, &inner, &shutdown).await else { return };
                    watch = again;
                }
                None => {
                    tracing::warn!("The tm_auth watch ended; watching again.");
                    let Some(again) = rewatch(&bucket, &inner, &shutdown).await else { return };
                    watch = again;
                }
            },
        }
    }
}

/// Starts a new watch (with history, so the cache converges to the bucket), retrying every second
/// until it works (`None` once `shutdown` is cancelled); the cache counts as cut off meanwhile.
async fn rewatch(
    bucket: &AuthBucket,
    inner: &Inner,
    shutdown: &CancellationToken,
) -> Option<kv::Watch> {
    inner.set_connected(false);
    loop {
        match bucket.store().watch_with_history(">").await {
            Ok(watch) => return Some(watch),
            Err(error) => {
                tracing::warn!(error = %error, "Cannot watch tm_auth yet; retrying.");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(HEALTH_TICK) => {}
                }
            }
        }
    }
}
