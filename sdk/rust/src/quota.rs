//! The tenant's quota: requests per minute, concurrent jobs and stored bytes. Reading it needs the
//! tenant's `admin` scope (or the operator credential); changing it, the operator credential.

use prost_types::FieldMask;
use trustmesh_proto::v1::{GetQuotaRequest, Quota, UpdateQuotaRequest};

use crate::client::{Client, Idempotence};
use crate::error::Error;

/// The quota values to change; `None` leaves one as it is, `Some(0)` returns it to the
/// deployment's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaChange {
    /// Requests per minute the tenant's keys may make to each service.
    pub max_requests_per_minute: Option<u32>,
    /// Jobs QUEUED or RUNNING at once.
    pub max_concurrent_jobs: Option<u32>,
    /// Bytes stored across the tenant's datasets.
    pub max_storage_bytes: Option<u64>,
}

impl QuotaChange {
    /// Whether it changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Client {
    /// This client's tenant's quota as it applies (overrides over the deployment's defaults).
    ///
    /// # Errors
    ///
    /// The service's refusal (the caller needs the `admin` scope or to be the operator).
    pub async fn get_quota(&self) -> Result<Quota, Error> {
        let name = format!("{}/quota", self.parent()?);
        self.call(Idempotence::Safe, || {
            let mut service = self.tenancy();
            let name = name.clone();
            async move { service.get_quota(GetQuotaRequest { name }).await }
        })
        .await
    }

    /// As the operator: changes this client's tenant's quota as `change` says; returns the quota
    /// as it now applies.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] for an empty change, or the service's refusal.
    pub async fn update_quota(&self, change: QuotaChange) -> Result<Quota, Error> {
        if change.is_empty() {
            return Err(Error::Usage("no quota value to change".to_owned()));
        }
        let mut paths = Vec::new();
        let mut quota = Quota {
            name: format!("{}/quota", self.parent()?),
            ..Quota::default()
        };
        if let Some(value) = change.max_requests_per_minute {
            quota.max_requests_per_minute = value;
            paths.push("max_requests_per_minute".to_owned());
        }
        if let Some(value) = change.max_concurrent_jobs {
            quota.max_concurrent_jobs = value;
            paths.push("max_concurrent_jobs".to_owned());
        }
        if let Some(value) = change.max_storage_bytes {
            quota.max_storage_bytes = value;
            paths.push("max_storage_bytes".to_owned());
        }
        let request = UpdateQuotaRequest {
            quota: Some(quota),
            update_mask: Some(FieldMask { paths }),
        };
        // Setting the same values again has the same effect: safe to retry.
        self.call(Idempotence::Safe, || {
            let mut service = self.tenancy();
            let request = request.clone();
            async move { service.update_quota(request).await }
        })
        .await
    }
}
