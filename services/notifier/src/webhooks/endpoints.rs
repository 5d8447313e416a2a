//! The `webhook_endpoints` table. Signing secrets are sealed with the tenant's DEK (the object
//! `webhookEndpoints/{id}/secret`, its version bumped by each rotation) and opened only to sign.
//!
//! The table is under row-level security (`trustmesh_bus::schema::rls`): the API's paths open
//! `tenant_tx`, the dispatcher's (an endpoint whatever its tenant) `service_tx`; the functions taking
//! a connection run in the caller's transaction, which has named the tenant already.

use std::sync::Arc;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use trustmesh_bus::schema::rls::{service_tx, tenant_tx};
use trustmesh_crypto::{Keyring, ObjectRef};
use trustmesh_events::TenantId;
use trustmesh_webhooks::SigningSecret;
use uuid::Uuid;

use super::error::NotifierError;

/// A row of `webhook_endpoints`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct EndpointRow {
    pub(crate) id: Uuid,
    pub(crate) tenant: String,
    pub(crate) url: String,
    pub(crate) event_types: Vec<String>,
    pub(crate) description: String,
    pub(crate) disabled: bool,
    pub(crate) secret_sealed: Vec<u8>,
    pub(crate) secret_version: i64,
    pub(crate) create_time: OffsetDateTime,
    pub(crate) update_time: OffsetDateTime,
}

impl EndpointRow {
    /// Whether the endpoint takes events of `event_type` (no types: every type).
    pub(crate) fn subscribes_to(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

const COLUMNS: &str = "id, tenant, url, event_types, description, disabled, secret_sealed, \
                       secret_version, create_time, update_time";

/// What a new endpoint is.
#[derive(Debug)]
pub(crate) struct NewEndpoint<'a> {
    pub(crate) url: &'a str,
    pub(crate) event_types: Vec<String>,
    pub(crate) description: &'a str,
    pub(crate) disabled: bool,
    pub(crate) request_id: Option<&'a str>,
}

/// The fields an update sets (`None`: unchanged).
#[derive(Debug, Default)]
pub(crate) struct EndpointChange {
    pub(crate) url: Option<String>,
    pub(crate) event_types: Option<Vec<String>>,
    pub(crate) description: Option<String>,
    pub(crate) disabled: Option<bool>,
}

/// The endpoints and their sealed secrets; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pool: PgPool,
    keyring: Arc<Keyring>,
}

fn secret_object(id: Uuid) -> String {
    format!("webhookEndpoints/{id}/secret")
}

impl Endpoints {
    pub(crate) fn new(pool: PgPool, keyring: Arc<Keyring>) -> Self {
        Self { pool, keyring }
    }

    /// The pool, for the consumer's transaction.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn seal(
        &self,
        tenant: &str,
        id: Uuid,
        version: i64,
        secret: &SigningSecret,
    ) -> Result<Vec<u8>, NotifierError> {
        let object = secret_object(id);
        let obj = ObjectRef {
            tenant,
            object: &object,
            version: u64::try_from(version).unwrap_or_default(),
        };
        Ok(self.keyring.seal(&obj, secret.as_bytes()).await?)
    }

    /// Opens the endpoint's signing secret.
    pub(crate) async fn secret(&self, row: &EndpointRow) -> Result<SigningSecret, NotifierError> {
        let object = secret_object(row.id);
        let obj = ObjectRef {
            tenant: &row.tenant,
            object: &object,
            version: u64::try_from(row.secret_version).unwrap_or_default(),
        };
        let bytes = self.keyring.open(&obj, &row.secret_sealed).await?;
        SigningSecret::from_bytes(bytes).map_err(|_| NotifierError::Corrupt("sealed secret"))
    }

    /// Creates an endpoint with a fresh secret; or, for a retried `request_id`, returns the
    /// endpoint created earlier without its secret (shown once only).
    pub(crate) async fn create(
        &self,
        tenant: &TenantId,
        new: NewEndpoint<'_>,
    ) -> Result<(EndpointRow, Option<SigningSecret>), NotifierError> {
        let mut tx = tenant_tx(&self.pool, tenant.as_str()).await?;
        if let Some(request_id) = new.request_id
            && let Some(row) = sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM webhook_endpoints WHERE tenant = $1 AND request_id = $2"
            ))
            .bind(tenant.as_str())
            .bind(request_id)
            .fetch_optional(&mut *tx)
            .await?
        {
            return Ok((row, None));
        }
        let id = Uuid::now_v7();
        let secret = SigningSecret::generate();
        let sealed = self.seal(tenant.as_str(), id, 1, &secret).await?;
        let row = sqlx::query_as(&format!(
            "INSERT INTO webhook_endpoints
               (id, tenant, url, event_types, description, disabled, disabled_by, secret_sealed, request_id)
             VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 THEN 'tenant' END, $7, $8)
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(tenant.as_str())
        .bind(new.url)
        .bind(&new.event_types)
        .bind(new.description)
        .bind(new.disabled)
        .bind(&sealed)
        .bind(new.request_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((row, Some(secret)))
    }

    /// The endpoint `id` of `tenant`.
    pub(crate) async fn get(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Option<EndpointRow>, NotifierError> {
        let mut tx = tenant_tx(&self.pool, tenant.as_str()).await?;
        let row = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_endpoints WHERE tenant = $1 AND id = $2"
        ))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The endpoint `id`, whichever its tenant (for the dispatcher, which holds the delivery's).
    pub(crate) async fn by_id(&self, id: Uuid) -> Result<Option<EndpointRow>, NotifierError> {
        let mut tx = service_tx(&self.pool).await?;
        let row = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Up to `limit` endpoints of `tenant`, oldest first, after cursor `after`.
    pub(crate) async fn list(
        &self,
        tenant: &TenantId,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<EndpointRow>, NotifierError> {
        let mut tx = tenant_tx(&self.pool, tenant.as_str()).await?;
        let rows = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_endpoints
             WHERE tenant = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// The enabled endpoints of `tenant` subscribed to `event_type`.
    pub(crate) async fn subscribed(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        event_type: &str,
    ) -> Result<Vec<EndpointRow>, NotifierError> {
        let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_endpoints WHERE tenant = $1 AND NOT disabled ORDER BY id"
        ))
        .bind(tenant.as_str())
        .fetch_all(conn)
        .await?;
        Ok(rows
            .into_iter()
            .filter(|row| row.subscribes_to(event_type))
            .collect())
    }

    /// Applies `change` to endpoint `id` of `tenant`.
    pub(crate) async fn update(
        &self,
        tenant: &TenantId,
        id: Uuid,
        change: EndpointChange,
    ) -> Result<Option<EndpointRow>, NotifierError> {
        let mut tx = tenant_tx(&self.pool, tenant.as_str()).await?;
        let row = sqlx::query_as(&format!(
            "UPDATE webhook_endpoints SET
               url = COALESCE($3, url),
               event_types = COALESCE($4, event_types),
               description = COALESCE($5, description),
               disabled = COALESCE($6, disabled),
               disabled_by = CASE WHEN $6 IS NULL THEN disabled_by WHEN $6 THEN 'tenant' END,
               update_time = now()
             WHERE tenant = $1 AND id = $2 RETURNING {COLUMNS}"
        ))
        .bind(tenant.as_str())
        .bind(id)
        .bind(change.url)
        .bind(change.event_types)
        .bind(change.description)
        .bind(change.disabled)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Deletes endpoint `id` of `tenant` with its deliveries; `false` if there was none.
    pub(crate) async fn delete(&self, tenant: &TenantId, id: Uuid) -> Result<bool, NotifierError> {
        let mut tx = tenant_tx(&self.pool, tenant.as_str()).await?;
        let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted == 1)
    }

    /// Seals a fresh secret for endpoint `id` of `tenant` under the next version and returns it.
    pub(crate) async fn rotate(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Option<SigningSecret>, NotifierError> {
        let mut tx = tenant_tx(&self.pool, tenant.as_str()).await?;
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT secret_version FROM webhook_endpoints WHERE tenant = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(version) = version else {
            return Ok(None);
        };
        let secret = SigningSecret::generate();
        let sealed = self.seal(tenant.as_str(), id, version + 1, &secret).await?;
        sqlx::query(
            "UPDATE webhook_endpoints SET secret_sealed = $3, secret_version = $4, update_time = now()
             WHERE tenant = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(&sealed)
        .bind(version + 1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(secret))
    }

    /// Disables endpoint `id` because it answered HTTP 410 Gone.
    pub(crate) async fn disable_gone(&self, id: Uuid) -> Result<(), NotifierError> {
        let mut tx = service_tx(&self.pool).await?;
        sqlx::query(
            "UPDATE webhook_endpoints SET disabled = true, disabled_by = 'gone', update_time = now()
             WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes every endpoint of `tenant` (their deliveries with them); returns how many.
    pub(crate) async fn delete_tenant(
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM webhook_endpoints WHERE tenant = $1")
                .bind(tenant.as_str())
                .execute(conn)
                .await?
                .rows_affected(),
        )
    }

    /// Counts the endpoints of `tenant`: the residue scan.
    pub(crate) async fn count_tenant(
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<u64, sqlx::Error> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE tenant = $1")
            .bind(tenant.as_str())
            .fetch_one(conn)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Destroys the tenant's DEKs (crypto-shredding every sealed secret it had); returns how many.
    pub(crate) async fn destroy_keys(&self, tenant: &TenantId) -> Result<u64, NotifierError> {
        Ok(self.keyring.destroy_tenant(tenant.as_str()).await?)
    }
}
