//! The `deliveries` table: what the notifier would deliver, one row per event.

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use trustmesh_events::TenantId;
use uuid::Uuid;

/// One event the notifier would deliver to the tenant's webhooks.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryRecord {
    /// The event's id (`meta.event_id`).
    pub event_id: Uuid,
    /// The event type, e.g. `job.updated`.
    pub event_type: String,
    /// The resource the event is about, e.g. `tenants/acme/jobs/0190...`.
    pub resource: String,
    /// The dataset the event concerns, if any.
    pub dataset: Option<String>,
    /// When the event happened.
    pub occurred_at: OffsetDateTime,
}

/// A record to add.
#[derive(Debug, Clone)]
pub(crate) struct NewDelivery {
    pub(crate) event_id: Uuid,
    pub(crate) tenant: TenantId,
    pub(crate) event_type: String,
    pub(crate) resource: String,
    pub(crate) dataset: Option<String>,
    pub(crate) occurred_at: OffsetDateTime,
}

/// The delivery log; cheap to clone.
#[derive(Debug, Clone)]
pub struct DeliveryLog {
    pool: PgPool,
}

impl DeliveryLog {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Every record of `tenant`, oldest first.
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<DeliveryRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT event_id, event_type, resource, dataset, occurred_at FROM deliveries
             WHERE tenant = $1 ORDER BY occurred_at, event_id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
    }

    /// Records `delivery`; `false` if its event was already recorded (a redelivery).
    pub(crate) async fn record(&self, delivery: &NewDelivery) -> Result<bool, sqlx::Error> {
        let inserted = sqlx::query(
            "INSERT INTO deliveries (event_id, tenant, event_type, resource, dataset, occurred_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(delivery.event_id)
        .bind(delivery.tenant.as_str())
        .bind(&delivery.event_type)
        .bind(&delivery.resource)
        .bind(&delivery.dataset)
        .bind(delivery.occurred_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Deletes the records of `tenant` (or of one `dataset` of it) and returns how many.
    pub(crate) async fn delete(
        conn: &mut PgConnection,
        tenant: &TenantId,
        dataset: Option<&str>,
    ) -> Result<u64, sqlx::Error> {
        let result = sqlx::query(
            "DELETE FROM deliveries WHERE tenant = $1 AND ($2::text IS NULL OR dataset = $2)",
        )
        .bind(tenant.as_str())
        .bind(dataset)
        .execute(conn)
        .await?;
        Ok(result.rows_affected())
    }

    /// Counts the records of `tenant` (or of one `dataset` of it): the residue scan.
    pub(crate) async fn count(
        conn: &mut PgConnection,
        tenant: &TenantId,
        dataset: Option<&str>,
    ) -> Result<u64, sqlx::Error> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM deliveries WHERE tenant = $1 AND ($2::text IS NULL OR dataset = $2)",
        )
        .bind(tenant.as_str())
        .bind(dataset)
        .fetch_one(conn)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
