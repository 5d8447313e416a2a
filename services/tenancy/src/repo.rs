//! The `tenancy` schema: tenants, API keys (digests only) and support grants.
//!
//! `api_keys`, `support_grants` and `quotas` are tenant tables under row-level security
//! (`trustmesh_bus::schema::rls`): every function here acting for one tenant runs in a transaction
//! marked for it (opened with `tenant_tx`, or a caller's transaction marked with `set_tenant`), and
//! only start-up reconciliation reads every tenant's rows (`service_tx`). `tenants` itself is the
//! operator's registry (created by the operator, read by id to authorize), not a tenant's data: it
//! has no tenant policy, and the role owning the schema is its only reader.

use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use trustmesh_auth::{GrantRecord, KeyId, KeyRecord, Scope, SecretDigest, TenantQuota};
use trustmesh_bus::schema::rls::{service_tx, set_tenant, tenant_tx};
use uuid::Uuid;

/// A row of `tenants`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct TenantRow {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) state: String,
    pub(crate) disable_reason: String,
    pub(crate) request_id: Option<String>,
    pub(crate) create_time: OffsetDateTime,
    pub(crate) update_time: OffsetDateTime,
}

/// A row of `api_keys`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct KeyRow {
    pub(crate) key_id: String,
    pub(crate) tenant: String,
    pub(crate) display_name: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) secret_digest: Vec<u8>,
    pub(crate) create_time: OffsetDateTime,
    pub(crate) expire_time: OffsetDateTime,
    pub(crate) revoke_time: Option<OffsetDateTime>,
}

impl KeyRow {
    /// The record replicated to `tm_auth`; `None` if the row is corrupt (then nothing is replicated,
    /// so the key authenticates nothing).
    pub(crate) fn to_record(&self) -> Option<KeyRecord> {
        Some(KeyRecord {
            key_id: KeyId::parse(&self.key_id).ok()?,
            tenant: self.tenant.clone(),
            scopes: self
                .scopes
                .iter()
                .filter_map(|s| Scope::from_name(s))
                .collect(),
            expires_at: self.expire_time.unix_timestamp(),
            revoked: self.revoke_time.is_some(),
            digest: SecretDigest::from_slice(&self.secret_digest).ok()?,
        })
    }
}

/// A row of `support_grants`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct GrantRow {
    pub(crate) grant_id: Uuid,
    pub(crate) tenant: String,
    pub(crate) grantee: String,
    pub(crate) reason: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) create_time: OffsetDateTime,
    pub(crate) expire_time: OffsetDateTime,
    pub(crate) revoke_time: Option<OffsetDateTime>,
}

impl GrantRow {
    /// The record replicated to `tm_auth`.
    pub(crate) fn to_record(&self) -> GrantRecord {
        GrantRecord {
            grant_id: self.grant_id,
            tenant: self.tenant.clone(),
            scopes: self
                .scopes
                .iter()
                .filter_map(|s| Scope::from_name(s))
                .collect(),
            resources: self.resources.clone(),
            expires_at: self.expire_time.unix_timestamp(),
            revoked: self.revoke_time.is_some(),
        }
    }
}

const GRANT_COLUMNS: &str = "grant_id, tenant, grantee, reason, scopes, resources, create_time, \
     expire_time, revoke_time";

const TENANT_COLUMNS: &str =
    "id, display_name, state, disable_reason, request_id, create_time, update_time";
const KEY_COLUMNS: &str =
    "key_id, tenant, display_name, scopes, secret_digest, create_time, expire_time, revoke_time";

/// Inserts a tenant; `None` if the id is taken.
pub(crate) async fn insert_tenant(
    tx: &mut Transaction<'static, Postgres>,
    id: &str,
    display_name: &str,
    request_id: Option<&str>,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO tenants (id, display_name, request_id) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING RETURNING {TENANT_COLUMNS}"
    ))
    .bind(id)
    .bind(display_name)
    .bind(request_id)
    .fetch_optional(&mut **tx)
    .await
}

/// The tenant `id`, if it exists.
pub(crate) async fn get_tenant(pool: &PgPool, id: &str) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A new key's row.
pub(crate) struct NewKey<'a> {
    pub(crate) key_id: &'a str,
    pub(crate) tenant: &'a str,
    pub(crate) display_name: &'a str,
    pub(crate) scopes: Vec<String>,
    pub(crate) digest: &'a [u8],
    pub(crate) expire_time: OffsetDateTime,
    pub(crate) request_id: Option<&'a str>,
}

/// Inserts a key (its digest only).
pub(crate) async fn insert_key(
    tx: &mut Transaction<'static, Postgres>,
    key: NewKey<'_>,
) -> Result<KeyRow, sqlx::Error> {
    set_tenant(tx, key.tenant).await?;
    sqlx::query_as(&format!(
        "INSERT INTO api_keys (key_id, tenant, display_name, scopes, secret_digest, expire_time, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}"
    ))
    .bind(key.key_id)
    .bind(key.tenant)
    .bind(key.display_name)
    .bind(&key.scopes)
    .bind(key.digest)
    .bind(key.expire_time)
    .bind(key.request_id)
    .fetch_one(&mut **tx)
    .await
}

/// The key a `CreateApiKey` with `request_id` created in `tenant`, if any.
pub(crate) async fn key_by_request(
    pool: &PgPool,
    tenant: &str,
    request_id: &str,
) -> Result<Option<KeyRow>, sqlx::Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant = $1 AND request_id = $2"
    ))
    .bind(tenant)
    .bind(request_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Up to `limit` keys of `tenant`, newest first, after cursor `before` (a key id).
pub(crate) async fn list_keys(
    pool: &PgPool,
    tenant: &str,
    show_inactive: bool,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys
         WHERE tenant = $1
           AND ($2 OR (revoke_time IS NULL AND expire_time > now()))
           AND ($3::text IS NULL OR key_id < $3)
         ORDER BY key_id DESC LIMIT $4"
    ))
    .bind(tenant)
    .bind(show_inactive)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Marks key `key_id` of `tenant` revoked (keeping the first revocation time); `None` if there is
/// no such key.
pub(crate) async fn revoke_key(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    key_id: &str,
) -> Result<Option<KeyRow>, sqlx::Error> {
    set_tenant(tx, tenant).await?;
    sqlx::query_as(&format!(
        "UPDATE api_keys SET revoke_time = COALESCE(revoke_time, now())
         WHERE tenant = $1 AND key_id = $2 RETURNING {KEY_COLUMNS}"
    ))
    .bind(tenant)
    .bind(key_id)
    .fetch_optional(&mut **tx)
    .await
}

/// A new support grant's row.
pub(crate) struct NewGrant<'a> {
    pub(crate) grant_id: Uuid,
    pub(crate) tenant: &'a str,
    pub(crate) grantee: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) scopes: Vec<String>,
    pub(crate) resources: &'a [String],
    pub(crate) expire_time: OffsetDateTime,
    pub(crate) request_id: Option<&'a str>,
}

/// Inserts a support grant.
pub(crate) async fn insert_grant(
    tx: &mut Transaction<'static, Postgres>,
    grant: NewGrant<'_>,
) -> Result<GrantRow, sqlx::Error> {
    set_tenant(tx, grant.tenant).await?;
    sqlx::query_as(&format!(
        "INSERT INTO support_grants
           (grant_id, tenant, grantee, reason, scopes, resources, expire_time, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {GRANT_COLUMNS}"
    ))
    .bind(grant.grant_id)
    .bind(grant.tenant)
    .bind(grant.grantee)
    .bind(grant.reason)
    .bind(&grant.scopes)
    .bind(grant.resources)
    .bind(grant.expire_time)
    .bind(grant.request_id)
    .fetch_one(&mut **tx)
    .await
}

/// The grant a `CreateSupportAccessGrant` with `request_id` created in `tenant`, if any.
pub(crate) async fn grant_by_request(
    pool: &PgPool,
    tenant: &str,
    request_id: &str,
) -> Result<Option<GrantRow>, sqlx::Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {GRANT_COLUMNS} FROM support_grants WHERE tenant = $1 AND request_id = $2"
    ))
    .bind(tenant)
    .bind(request_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Up to `limit` grants of `tenant`, newest first, after cursor `before` (a grant id).
pub(crate) async fn list_grants(
    pool: &PgPool,
    tenant: &str,
    show_inactive: bool,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<GrantRow>, sqlx::Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {GRANT_COLUMNS} FROM support_grants
         WHERE tenant = $1
           AND ($2 OR (revoke_time IS NULL AND expire_time > now()))
           AND ($3::uuid IS NULL OR grant_id < $3)
         ORDER BY grant_id DESC LIMIT $4"
    ))
    .bind(tenant)
    .bind(show_inactive)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Marks grant `grant_id` of `tenant` revoked (keeping the first revocation time); `None` if there
/// is no such grant.
pub(crate) async fn revoke_grant(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    grant_id: Uuid,
) -> Result<Option<GrantRow>, sqlx::Error> {
    set_tenant(tx, tenant).await?;
    sqlx::query_as(&format!(
        "UPDATE support_grants SET revoke_time = COALESCE(revoke_time, now())
         WHERE tenant = $1 AND grant_id = $2 RETURNING {GRANT_COLUMNS}"
    ))
    .bind(tenant)
    .bind(grant_id)
    .fetch_optional(&mut **tx)
    .await
}

/// Every grant not yet expired, for reconciling `tm_auth` at start.
pub(crate) async fn live_grants(pool: &PgPool) -> Result<Vec<GrantRow>, sqlx::Error> {
    let mut tx = service_tx(pool).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {GRANT_COLUMNS} FROM support_grants WHERE expire_time > now() ORDER BY grant_id"
    ))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Every key, for reconciling `tm_auth` at start.
pub(crate) async fn all_keys(pool: &PgPool) -> Result<Vec<KeyRow>, sqlx::Error> {
    let mut tx = service_tx(pool).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY key_id"
    ))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// Starts deleting `tenant`: marks it `deleting` (so no key or grant is created for it any more)
/// and revokes every key and support grant it has, committed before `tm_auth` is touched, so a
/// restart's reconciliation can only republish them as revoked. Returns the tenant's keys and grants.
pub(crate) async fn begin_tenant_deletion(
    pool: &PgPool,
    tenant: &str,
) -> Result<(Vec<KeyRow>, Vec<GrantRow>), sqlx::Error> {
    // NOTE: one tenant's rows, so its own setting suffices: no service-wide escape needed.
    let mut tx = tenant_tx(pool, tenant).await?;
    sqlx::query("UPDATE tenants SET state = 'deleting', update_time = now() WHERE id = $1")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    let keys = sqlx::query_as(&format!(
        "UPDATE api_keys SET revoke_time = COALESCE(revoke_time, now())
         WHERE tenant = $1 RETURNING {KEY_COLUMNS}"
    ))
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let grants = sqlx::query_as(&format!(
        "UPDATE support_grants SET revoke_time = COALESCE(revoke_time, now())
         WHERE tenant = $1 RETURNING {GRANT_COLUMNS}"
    ))
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((keys, grants))
}

/// Locks the tenant's row (a concurrent key insert waits on it) and returns its keys' ids.
pub(crate) async fn lock_tenant_keys(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
) -> Result<Vec<String>, sqlx::Error> {
    set_tenant(tx, tenant).await?;
    sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant)
        .execute(&mut **tx)
        .await?;
    sqlx::query_scalar("SELECT key_id FROM api_keys WHERE tenant = $1 ORDER BY key_id")
        .bind(tenant)
        .fetch_all(&mut **tx)
        .await
}

/// Deletes the tenant's keys, then the tenant; returns `(keys, tenants)` deleted.
pub(crate) async fn delete_tenant(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
) -> Result<(u64, u64), sqlx::Error> {
    set_tenant(tx, tenant).await?;
    let keys = sqlx::query("DELETE FROM api_keys WHERE tenant = $1")
        .bind(tenant)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    let tenants = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(tenant)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok((keys, tenants))
}

/// The tenant's rows left: `(keys, tenants)`.
pub(crate) async fn count_tenant_rows(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
) -> Result<(u64, u64), sqlx::Error> {
    set_tenant(tx, tenant).await?;
    let (keys, tenants): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM api_keys WHERE tenant = $1),
                (SELECT count(*) FROM tenants WHERE id = $1)",
    )
    .bind(tenant)
    .fetch_one(&mut **tx)
    .await?;
    Ok((
        u64::try_from(keys).unwrap_or_default(),
        u64::try_from(tenants).unwrap_or_default(),
    ))
}

/// A row of `quotas`: a tenant's overrides, 0 meaning the deployment's default.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub(crate) struct QuotaRow {
    pub(crate) max_requests_per_minute: i64,
    pub(crate) max_concurrent_jobs: i64,
    pub(crate) max_storage_bytes: i64,
}

impl QuotaRow {
    /// The record replicated to `tm_auth` (the table's checks keep every value in range).
    pub(crate) fn to_record(self) -> TenantQuota {
        TenantQuota {
            max_requests_per_minute: u32::try_from(self.max_requests_per_minute)
                .unwrap_or_default(),
            max_concurrent_jobs: u32::try_from(self.max_concurrent_jobs).unwrap_or_default(),
            max_storage_bytes: u64::try_from(self.max_storage_bytes).unwrap_or_default(),
        }
    }
}

const QUOTA_COLUMNS: &str = "max_requests_per_minute, max_concurrent_jobs, max_storage_bytes";

/// `tenant`'s quota overrides; all defaults if it has none.
pub(crate) async fn get_quota(pool: &PgPool, tenant: &str) -> Result<QuotaRow, sqlx::Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let row: Option<QuotaRow> = sqlx::query_as(&format!(
        "SELECT {QUOTA_COLUMNS} FROM quotas WHERE tenant = $1"
    ))
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.unwrap_or_default())
}

/// Writes `tenant`'s quota overrides.
pub(crate) async fn put_quota(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    quota: QuotaRow,
) -> Result<QuotaRow, sqlx::Error> {
    set_tenant(tx, tenant).await?;
    sqlx::query_as(&format!(
        "INSERT INTO quotas (tenant, {QUOTA_COLUMNS}) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant) DO UPDATE SET
           max_requests_per_minute = EXCLUDED.max_requests_per_minute,
           max_concurrent_jobs = EXCLUDED.max_concurrent_jobs,
           max_storage_bytes = EXCLUDED.max_storage_bytes,
           update_time = now()
         RETURNING {QUOTA_COLUMNS}"
    ))
    .bind(tenant)
    .bind(quota.max_requests_per_minute)
    .bind(quota.max_concurrent_jobs)
    .bind(quota.max_storage_bytes)
    .fetch_one(&mut **tx)
    .await
}

/// Every tenant's quota overrides, for reconciling `tm_auth` at start.
pub(crate) async fn all_quotas(pool: &PgPool) -> Result<Vec<(String, QuotaRow)>, sqlx::Error> {
    let mut tx = service_tx(pool).await?;
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT tenant, {QUOTA_COLUMNS} FROM quotas ORDER BY tenant"
    ))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, rpm, jobs, bytes)| {
            (
                tenant,
                QuotaRow {
                    max_requests_per_minute: rpm,
                    max_concurrent_jobs: jobs,
                    max_storage_bytes: bytes,
                },
            )
        })
        .collect())
}
