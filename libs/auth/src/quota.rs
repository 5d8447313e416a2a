//! Per-tenant quotas: requests per minute, concurrent jobs and stored bytes.
//!
//! `tenancy` owns them (table `tenancy.quotas`, RPCs GetQuota/UpdateQuota) and publishes them in
//! `tm_auth` like API keys: `quotas.<tenant>` → a JSON [`TenantQuota`] (the tenant's overrides, 0
//! meaning the deployment's default) and `quota_defaults` → a JSON [`QuotaDefaults`]. Every
//! service's [`crate::KeyCache`] follows them with the same watch, so a changed quota applies
//! everywhere within the revocation bound of [`crate::cache`].
//!
//! Where each quota is enforced:
//! - requests per minute: by the auth layer of every service, before the handler runs (one token
//!   bucket per tenant per service instance, [`crate::limit`]);
//! - concurrent jobs: by `analysis` when a job is started (jobs QUEUED or RUNNING);
//! - stored bytes: by `ingest` when an upload would take the tenant's datasets past the limit.
//!
//! The interceptor puts the caller's tenant's [`EffectiveQuota`] in each request's extensions, so a
//! handler checks the last two with [`EffectiveQuota::of`] without another lookup. Over a quota the
//! answer is RESOURCE_EXHAUSTED with a `google.rpc.QuotaFailure` naming the quota and, when waiting
//! helps (rates, jobs), a `google.rpc.RetryInfo`.
//!
//! What a tenant uses is counted where it is: `ingest` counts its datasets and stored bytes,
//! `analysis` its jobs QUEUED or RUNNING. Each reports its count to the `tm_usage` bucket
//! ([`UsageBucket`], one key per tenant and service) whenever it changes, recounted under a
//! per-tenant lock so a later report never carries an older count; `tenancy` reads it for
//! GetQuota's `usage`, as last reported (eventually consistent).

use std::num::NonZeroU32;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use trustmesh_events::permissions::USAGE_KV_BUCKET;
use trustmesh_events::{Service, TenantId};

use crate::error::{AuthError, KeyStoreError};
use crate::limit::RateLimit;
use crate::record::open_bucket;

/// How long a client refused for concurrent jobs is told to wait: about the time a small job takes.
pub const JOBS_RETRY_AFTER: Duration = Duration::from_secs(10);

/// One tenant's quota overrides, as `tenancy` stores and publishes them; 0 means the deployment's
/// default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantQuota {
    /// Requests per minute the tenant's keys may make to each service instance.
    pub max_requests_per_minute: u32,
    /// Jobs QUEUED or RUNNING at once.
    pub max_concurrent_jobs: u32,
    /// Bytes stored across the tenant's datasets.
    pub max_storage_bytes: u64,
}

/// The deployment's default concurrent jobs and stored bytes (its default request rate is the
/// [`RateLimit`] under `limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaDefaults {
    /// Jobs QUEUED or RUNNING at once per tenant.
    pub max_concurrent_jobs: NonZeroU32,
    /// Bytes stored per tenant.
    pub max_storage_bytes: u64,
}

impl Default for QuotaDefaults {
    /// 20 concurrent jobs, 100 GiB.
    fn default() -> Self {
        Self {
            max_concurrent_jobs: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            max_storage_bytes: 100 << 30,
        }
    }
}

/// The quota that applies to one tenant: its overrides over the deployment's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveQuota {
    /// The tenant.
    pub tenant: TenantId,
    /// Requests per minute per service instance.
    pub max_requests_per_minute: u32,
    /// Jobs QUEUED or RUNNING at once.
    pub max_concurrent_jobs: u32,
    /// Bytes stored across the tenant's datasets.
    pub max_storage_bytes: u64,
}

impl EffectiveQuota {
    /// `tenant`'s quota: `overrides` where set, else the defaults.
    #[must_use]
    pub fn resolve(
        tenant: TenantId,
        overrides: TenantQuota,
        defaults: QuotaDefaults,
        rate: RateLimit,
    ) -> Self {
        let or = |value: u64, default: u64| if value == 0 { default } else { value };
        Self {
            tenant,
            max_requests_per_minute: if overrides.max_requests_per_minute == 0 {
                rate.requests_per_second.get().saturating_mul(60)
            } else {
                overrides.max_requests_per_minute
            },
            max_concurrent_jobs: if overrides.max_concurrent_jobs == 0 {
                defaults.max_concurrent_jobs.get()
            } else {
                overrides.max_concurrent_jobs
            },
            max_storage_bytes: or(overrides.max_storage_bytes, defaults.max_storage_bytes),
        }
    }

    /// The quota the auth layer attached to `request`, if it has one (an API key's or a support
    /// grant's tenant; none for the operator or the mesh's services).
    #[must_use]
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Self> {
        request.extensions().get::<Self>()
    }

    /// Checks that one more job may start while `active` are QUEUED or RUNNING.
    ///
    /// # Errors
    /// [`AuthError::QuotaExceeded`] when `active` already reaches the limit.
    pub fn admit_job(&self, active: u64) -> Result<(), AuthError> {
        let limit = u64::from(self.max_concurrent_jobs);
        if active < limit {
            return Ok(());
        }
        Err(AuthError::QuotaExceeded {
            tenant: self.tenant.as_str().to_owned(),
            quota: QuotaKind::ConcurrentJobs,
            limit,
            used: active,
        })
    }

    /// Checks that `adding` more bytes fit beside the `stored` ones.
    ///
    /// # Errors
    /// [`AuthError::QuotaExceeded`] when they would exceed the limit.
    pub fn admit_bytes(&self, stored: u64, adding: u64) -> Result<(), AuthError> {
        if stored.saturating_add(adding) <= self.max_storage_bytes {
            return Ok(());
        }
        Err(AuthError::QuotaExceeded {
            tenant: self.tenant.as_str().to_owned(),
            quota: QuotaKind::StorageBytes,
            limit: self.max_storage_bytes,
            used: stored,
        })
    }
}

/// Which quota a request exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// Jobs QUEUED or RUNNING at once.
    ConcurrentJobs,
    /// Bytes stored.
    StorageBytes,
}

impl QuotaKind {
    /// The quota's field name in `trustmesh.v1.Quota`.
    #[must_use]
    pub const fn field(self) -> &'static str {
        match self {
            Self::ConcurrentJobs => "max_concurrent_jobs",
            Self::StorageBytes => "max_storage_bytes",
        }
    }

    /// How long to wait before retrying, when waiting helps: jobs end, stored bytes stay until
    /// deleted.
    #[must_use]
    pub const fn retry_after(self) -> Option<Duration> {
        match self {
            Self::ConcurrentJobs => Some(JOBS_RETRY_AFTER),
            Self::StorageBytes => None,
        }
    }
}

/// What one tenant uses, as reported by the services that count it (each reports its own fields and
/// leaves the others 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantUsage {
    /// Datasets the tenant has, in any state (ingest).
    pub datasets: u64,
    /// Bytes its datasets' uploads hold (ingest).
    pub storage_bytes: u64,
    /// Its jobs QUEUED or RUNNING (analysis).
    pub concurrent_jobs: u32,
}

/// The `tm_usage` key-value bucket: `<tenant>.<service>` → the JSON [`TenantUsage`] `service`
/// (ingest or analysis) last reported for `tenant`. Holds counts only, never names or secrets.
#[derive(Debug, Clone)]
pub struct UsageBucket {
    store: kv::Store,
}

/// The services that report usage.
const USAGE_REPORTERS: [Service; 2] = [Service::Ingest, Service::Analysis];

impl UsageBucket {
    /// Opens `tm_usage`, creating it (file storage, `replicas` replicas, one revision per key) if it
    /// is missing.
    ///
    /// # Errors
    /// [`KeyStoreError::Usage`] if the server refuses or cannot be reached.
    pub async fn open(
        jetstream: &jetstream::Context,
        replicas: usize,
    ) -> Result<Self, KeyStoreError> {
        let store = open_bucket(
            jetstream,
            kv::Config {
                bucket: USAGE_KV_BUCKET.to_owned(),
                description: "Tenants' usage (datasets, stored bytes, active jobs) as ingest and analysis last counted it, read by tenancy's GetQuota.".to_owned(),
                history: 1,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await
        .map_err(KeyStoreError::Usage)?;
        Ok(Self { store })
    }

    /// The bucket key of what `service` reports for `tenant`: `<tenant>.<service>`.
    #[must_use]
    pub fn key(tenant: &TenantId, service: Service) -> String {
        format!("{tenant}.{}", service.as_str())
    }

    /// Records `usage` as what `service` counts for `tenant` now.
    ///
    /// # Errors
    /// [`KeyStoreError::Usage`] if the server does not accept it.
    pub async fn report(
        &self,
        tenant: &TenantId,
        service: Service,
        usage: &TenantUsage,
    ) -> Result<(), KeyStoreError> {
        let value = serde_json::to_vec(usage).map_err(|e| KeyStoreError::Usage(e.into()))?;
        self.store
            .put(Self::key(tenant, service), value.into())
            .await
            .map_err(|e| KeyStoreError::Usage(e.into()))?;
        Ok(())
    }

    /// Removes what `service` reported for `tenant` (a purge: no earlier revision is kept), once the
    /// whole tenant is deleted, so the bucket keeps nothing of a deleted tenant but the purge
    /// marker.
    ///
    /// # Errors
    /// [`KeyStoreError::Usage`] if the server does not accept it.
    pub async fn forget(&self, tenant: &TenantId, service: Service) -> Result<(), KeyStoreError> {
        self.store
            .purge(Self::key(tenant, service))
            .await
            .map_err(|e| KeyStoreError::Usage(e.into()))
    }

    /// `tenant`'s usage: what ingest and analysis last reported for it, together (zero for a
    /// service that has reported nothing for it).
    ///
    /// # Errors
    /// [`KeyStoreError::Usage`] if the server cannot be reached or a value does not decode.
    pub async fn read(&self, tenant: &TenantId) -> Result<TenantUsage, KeyStoreError> {
        let mut total = TenantUsage::default();
        for service in USAGE_REPORTERS {
            let Some(value) = self
                .store
                .get(Self::key(tenant, service))
                .await
                .map_err(|e| KeyStoreError::Usage(e.into()))?
            else {
                continue;
            };
            let usage: TenantUsage =
                serde_json::from_slice(&value).map_err(|e| KeyStoreError::Usage(e.into()))?;
            total.datasets = total.datasets.saturating_add(usage.datasets);
            total.storage_bytes = total.storage_bytes.saturating_add(usage.storage_bytes);
            total.concurrent_jobs = total.concurrent_jobs.saturating_add(usage.concurrent_jobs);
        }
        Ok(total)
    }
}

/// The request-rate bucket of a tenant allowed `per_minute` requests a minute: refilled evenly, two
/// seconds' worth of burst (as the default 100/s with bursts of 200).
pub(crate) fn per_minute_bucket(per_minute: NonZeroU32) -> governor::Quota {
    let period = Duration::from_secs(60) / per_minute.get();
    let burst = NonZeroU32::new(per_minute.get() / 30).unwrap_or(NonZeroU32::MIN);
    governor::Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| governor::Quota::per_minute(per_minute))
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::StatusExt as _;

    use super::*;

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[test]
    fn zero_means_the_deployment_default() {
        let quota = EffectiveQuota::resolve(
            acme(),
            TenantQuota::default(),
            QuotaDefaults::default(),
            RateLimit::default(),
        );
        assert_eq!(quota.max_requests_per_minute, 6000);
        assert_eq!(quota.max_concurrent_jobs, 20);
        assert_eq!(quota.max_storage_bytes, 100 << 30);
        let quota = EffectiveQuota::resolve(
            acme(),
            TenantQuota {
                max_requests_per_minute: 60,
                max_concurrent_jobs: 2,
                max_storage_bytes: 10,
            },
            QuotaDefaults::default(),
            RateLimit::default(),
        );
        assert_eq!(
            (
                quota.max_requests_per_minute,
                quota.max_concurrent_jobs,
                quota.max_storage_bytes
            ),
            (60, 2, 10)
        );
    }

    #[test]
    fn over_a_quota_is_resource_exhausted_naming_it() {
        let quota = EffectiveQuota::resolve(
            acme(),
            TenantQuota {
                max_concurrent_jobs: 2,
                max_storage_bytes: 100,
                ..TenantQuota::default()
            },
            QuotaDefaults::default(),
            RateLimit::default(),
        );
        assert!(quota.admit_job(1).is_ok());
        let status = tonic::Status::from(quota.admit_job(2).unwrap_err());
        assert_eq!(status.code(), Code::ResourceExhausted);
        let failure = status.get_details_quota_failure().expect("a QuotaFailure");
        assert_eq!(failure.violations[0].subject, "tenants/acme");
        assert!(
            failure.violations[0]
                .description
                .contains("max_concurrent_jobs")
        );
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(JOBS_RETRY_AFTER)
        );

        assert!(quota.admit_bytes(60, 40).is_ok());
        let status = tonic::Status::from(quota.admit_bytes(60, 41).unwrap_err());
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.get_details_quota_failure().unwrap().violations[0]
                .description
                .contains("max_storage_bytes")
        );
        // Waiting does not free stored bytes: no RetryInfo.
        assert!(status.get_details_retry_info().is_none());
    }
}
