//! The quota RPCs: GetQuota (the tenant's admin key or the operator) and UpdateQuota (the operator
//! only). A tenant's quota is three overrides, 0 meaning the deployment's default (settings
//! `auth.tenant_rate_limit` and `auth.default_quota`): requests per minute, concurrent jobs and
//! stored bytes. They replicate to every service through `tm_auth` like keys (written before the row
//! commits), where the auth layer enforces the rate, analysis the jobs and ingest the bytes
//! (`trustmesh_auth::quota`).
//!
//! CreateTenant's `quota` sets the new tenant's overrides the same way, in the same transaction.
//!
//! `max_datasets`, `max_upload_bytes` and `max_rows_per_dataset` are deployment-wide ingest
//! settings, not per-tenant quotas: GetQuota leaves them 0, UpdateQuota and CreateTenant refuse
//! them.
//!
//! GetQuota's `usage` is what ingest (datasets, stored bytes) and analysis (jobs QUEUED or RUNNING)
//! last reported for the tenant to the `tm_usage` bucket (`trustmesh_auth::UsageBucket`): each
//! recounts and reports after every change it commits (dataset created, upload recorded, dataset or
//! tenant deleted, job started or changing state), so it is eventually consistent, a moment behind
//! a change. The limits themselves are enforced on exact counts where the change is made.

use trustmesh_auth::{EffectiveQuota, Principal, Scope, resource_tenant};
use trustmesh_bus::audit;
use trustmesh_events::TenantId;
use trustmesh_proto::v1::{GetQuotaRequest, Quota, QuotaUsage, UpdateQuotaRequest};

use crate::error::TenancyError;
use crate::grpc::{TenancyHandler, entry, tenant_name};
use crate::repo::{self, QuotaRow};

/// Audited action names.
pub(crate) mod action {
    pub(crate) const GET: &str = "quotas.get";
    pub(crate) const UPDATE: &str = "quotas.update";
}

/// The quota fields UpdateQuota changes.
const FIELDS: [&str; 3] = [
    "max_requests_per_minute",
    "max_concurrent_jobs",
    "max_storage_bytes",
];

impl TenancyHandler {
    pub(crate) async fn get_quota_inner(
        &self,
        principal: &Principal,
        request: GetQuotaRequest,
    ) -> Result<Quota, TenancyError> {
        let tenant = principal.require_or_operator(Scope::Admin, "name", &request.name)?;
        exact_quota_name("name", &tenant, &request.name)?;
        self.active_tenant(&tenant, &request.name).await?;
        let row = repo::get_quota(&self.pool, tenant.as_str()).await?;
        let usage = self.usage(&tenant).await?;
        self.record(entry(principal, tenant.clone(), action::GET, &request.name))
            .await?;
        Ok(Quota {
            usage,
            ..self.quota_proto(tenant, row)
        })
    }

    /// What `tenant` uses, as ingest and analysis last reported it to `tm_usage`.
    async fn usage(&self, tenant: &TenantId) -> Result<Option<QuotaUsage>, TenancyError> {
        let Some(bucket) = &self.usage else {
            return Ok(None);
        };
        let usage = bucket.read(tenant).await?;
        Ok(Some(QuotaUsage {
            datasets: usage.datasets,
            storage_bytes: usage.storage_bytes,
            concurrent_jobs: usage.concurrent_jobs,
        }))
    }

    pub(crate) async fn update_quota_inner(
        &self,
        principal: &Principal,
        request: UpdateQuotaRequest,
    ) -> Result<Quota, TenancyError> {
        let quota = request
            .quota
            .ok_or_else(|| TenancyError::invalid("quota", "required"))?;
        let tenant = resource_tenant("quota.name", &quota.name)?;
        principal.require_operator()?;
        exact_quota_name("quota.name", &tenant, &quota.name)?;
        let paths = match request.update_mask {
            Some(mask) if !mask.paths.is_empty() => mask.paths,
            Some(_) | None => FIELDS.iter().map(|f| (*f).to_owned()).collect(),
        };
        self.active_tenant(&tenant, &quota.name).await?;
        let mut row = repo::get_quota(&self.pool, tenant.as_str()).await?;
        apply_fields(&mut row, &quota, &paths)?;
        let mut tx = self.pool.begin().await?;
        let mut audit_entry = entry(principal, tenant.clone(), action::UPDATE, &quota.name);
        audit_entry.records_affected = 1;
        audit::enqueue(&self.outbox, &mut tx, audit_entry).await?;
        let row = self.write_quota(&mut tx, &tenant, row).await?;
        tx.commit().await?;
        // Committed: the answer goes out even if the usage cannot be read.
        let usage = self.usage(&tenant).await.unwrap_or_else(|error| {
            tracing::warn!(
                tenant.id = %tenant,
                error = &error as &dyn std::error::Error,
                "Cannot read the tenant's usage; the quota is answered without it."
            );
            None
        });
        tracing::info!(
            tenant.id = %tenant,
            quota.max_requests_per_minute = row.max_requests_per_minute,
            quota.max_concurrent_jobs = row.max_concurrent_jobs,
            quota.max_storage_bytes = row.max_storage_bytes,
            "Tenant quota updated."
        );
        Ok(Quota {
            usage,
            ..self.quota_proto(tenant, row)
        })
    }

    /// Writes `tenant`'s quota in `tx` and replicates it, before the caller commits: if the bucket
    /// refuses, nothing is recorded and the caller retries.
    pub(crate) async fn write_quota(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        tenant: &TenantId,
        row: QuotaRow,
    ) -> Result<QuotaRow, TenancyError> {
        let row = repo::put_quota(tx, tenant.as_str(), row).await?;
        self.bucket.put_quota(tenant, &row.to_record()).await?;
        Ok(row)
    }

    /// The tenant's quota as it applies: its overrides over the deployment's defaults.
    fn quota_proto(&self, tenant: TenantId, row: QuotaRow) -> Quota {
        let name = format!("{}/quota", tenant_name(&tenant));
        let effective = EffectiveQuota::resolve(
            tenant,
            row.to_record(),
            self.quota_defaults,
            self.rate_limit,
        );
        Quota {
            name,
            max_storage_bytes: effective.max_storage_bytes,
            max_concurrent_jobs: effective.max_concurrent_jobs,
            max_requests_per_minute: effective.max_requests_per_minute,
            ..Quota::default()
        }
    }
}

/// Sets the `paths` of `quota` (per-tenant quota fields only) in `row`.
fn apply_fields(row: &mut QuotaRow, quota: &Quota, paths: &[String]) -> Result<(), TenancyError> {
    for path in paths {
        match path.as_str() {
            "max_requests_per_minute" => {
                row.max_requests_per_minute = i64::from(quota.max_requests_per_minute);
            }
            "max_concurrent_jobs" => {
                row.max_concurrent_jobs = i64::from(quota.max_concurrent_jobs);
            }
            "max_storage_bytes" => {
                row.max_storage_bytes = i64::try_from(quota.max_storage_bytes).map_err(|_| {
                    TenancyError::invalid("quota.max_storage_bytes", "at most 2^63 - 1")
                })?;
            }
            _ => {
                return Err(TenancyError::invalid(
                    "update_mask",
                    format!(
                        "`{path}` is not a per-tenant quota; use {}",
                        FIELDS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The overrides of a new tenant's initial `quota` (CreateTenant): its per-tenant fields; the
/// deployment-wide ones must be 0.
pub(crate) fn initial_quota(quota: &Quota) -> Result<QuotaRow, TenancyError> {
    if quota.max_datasets != 0 || quota.max_upload_bytes != 0 || quota.max_rows_per_dataset != 0 {
        return Err(TenancyError::invalid(
            "quota",
            format!("only {} are per-tenant quotas", FIELDS.join(", ")),
        ));
    }
    let mut row = QuotaRow::default();
    let paths: Vec<String> = FIELDS.iter().map(|f| (*f).to_owned()).collect();
    apply_fields(&mut row, quota, &paths)?;
    Ok(row)
}

/// Checks that `name` is exactly `tenants/{tenant}/quota`.
fn exact_quota_name(
    field: &'static str,
    tenant: &TenantId,
    name: &str,
) -> Result<(), TenancyError> {
    if name == format!("{}/quota", tenant_name(tenant)) {
        Ok(())
    } else {
        Err(TenancyError::invalid(
            field,
            "expected `tenants/{tenant}/quota`",
        ))
    }
}
