//! The `webhook_deliveries` table: one row per (endpoint, event), its attempts and outcome, and the
//! trace context of the event it was queued for.
//!
//! The table is under row-level security (`trustmesh_bus::schema::rls`): a tenant's paths open
//! `tenant_tx`, the dispatcher (every tenant's due deliveries) `service_tx`; the functions taking a
//! connection run in the caller's transaction, which has named the tenant already.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use trustmesh_bus::schema::rls::{service_tx, tenant_tx};
use trustmesh_bus::schema::xact_lock;
use trustmesh_events::TenantId;
use trustmesh_telemetry::{TRACEPARENT, TRACESTATE, WebhookOutcome};
use uuid::Uuid;

/// A row of `webhook_deliveries`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    pub(crate) id: Uuid,
    pub(crate) tenant: String,
    pub(crate) endpoint: Uuid,
    pub(crate) event_id: Uuid,
    pub(crate) event_type: String,
    pub(crate) payload: String,
    pub(crate) state: String,
    pub(crate) attempt_count: i32,
    pub(crate) last_http_status: i32,
    pub(crate) last_error: String,
    pub(crate) create_time: OffsetDateTime,
    pub(crate) last_attempt_time: Option<OffsetDateTime>,
    pub(crate) next_attempt_time: OffsetDateTime,
    /// The W3C `traceparent` of the event's handling, if it was traced.
    pub(crate) traceparent: Option<String>,
    /// Its `tracestate`, if any.
    pub(crate) tracestate: Option<String>,
}

impl DeliveryRow {
    /// The `webhook-id` of every attempt: the event's id.
    pub(crate) fn webhook_id(&self) -> String {
        format!("msg_{}", self.event_id.simple())
    }

    /// The trace context the delivery was queued in, as headers to continue it from.
    pub(crate) fn trace_context(&self) -> HashMap<String, String> {
        [
            (TRACEPARENT, &self.traceparent),
            (TRACESTATE, &self.tracestate),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value.clone()?)))
        .collect()
    }
}

const COLUMNS: &str = "id, tenant, endpoint, event_id, event_type, payload, state, attempt_count, \
                       last_http_status, last_error, create_time, last_attempt_time, next_attempt_time, \
                       traceparent, tracestate";

/// A delivery to queue.
#[derive(Debug)]
pub(crate) struct NewDelivery<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) endpoint: Uuid,
    pub(crate) event_id: Uuid,
    pub(crate) event_type: &'a str,
    pub(crate) dataset: Option<&'a str>,
    pub(crate) payload: &'a str,
}

/// How an attempt ended, as recorded.
#[derive(Debug)]
pub(crate) struct AttemptOutcome {
    pub(crate) state: &'static str,
    pub(crate) http_status: u16,
    pub(crate) error: String,
    /// When to try again, if `state` is `pending`.
    pub(crate) next_attempt: Option<OffsetDateTime>,
    /// How it counts in the webhook deliveries metric.
    pub(crate) metric: WebhookOutcome,
}

/// The deliveries; cheap to clone.
#[derive(Debug, Clone)]
pub struct Deliveries {
    pool: PgPool,
}

impl Deliveries {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Queues a delivery, in the current span's trace (the handling of the event, which continues
    /// its publisher's); `false` if this event was already queued for this endpoint.
    pub(crate) async fn enqueue(
        conn: &mut PgConnection,
        new: &NewDelivery<'_>,
    ) -> Result<bool, sqlx::Error> {
        let mut trace: HashMap<String, String> = HashMap::new();
        trustmesh_telemetry::inject_current(&mut trace);
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries
               (id, tenant, endpoint, event_id, event_type, dataset, payload, traceparent, tracestate)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (endpoint, event_id) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(new.tenant.as_str())
        .bind(new.endpoint)
        .bind(new.event_id)
        .bind(new.event_type)
        .bind(new.dataset)
        .bind(new.payload)
        .bind(trace.remove(TRACEPARENT))
        .bind(trace.remove(TRACESTATE))
        .execute(conn)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Leases up to `limit` due deliveries for `lease` seconds (other replicas skip them).
    pub(crate) async fn claim_due(
        &self,
        limit: i64,
        lease_secs: f64,
    ) -> Result<Vec<DeliveryRow>, sqlx::Error> {
        // The dispatcher serves every tenant: the service-wide escape.
        let mut tx = service_tx(&self.pool).await?;
        let due = sqlx::query_as(&format!(
            "UPDATE webhook_deliveries SET lease_until = now() + make_interval(secs => $2)
             WHERE id IN (
               SELECT id FROM webhook_deliveries
               WHERE state = 'pending' AND next_attempt_time <= now()
                 AND (lease_until IS NULL OR lease_until < now())
               ORDER BY next_attempt_time LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS}"
        ))
        .bind(limit)
        .bind(lease_secs)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(due)
    }

    /// When the next pending delivery is due, if any.
    pub(crate) async fn next_due(&self) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        let mut tx = service_tx(&self.pool).await?;
        let next = sqlx::query_scalar(
            "SELECT min(next_attempt_time) FROM webhook_deliveries WHERE state = 'pending'",
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(next)
    }

    /// Records attempt number `attempt` of delivery `id` and releases its lease.
    pub(crate) async fn record_attempt(
        &self,
        id: Uuid,
        attempt: i32,
        outcome: &AttemptOutcome,
    ) -> Result<(), sqlx::Error> {
        let mut tx = service_tx(&self.pool).await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $2, attempt_count = $3, last_http_status = $4,
               last_error = $5, last_attempt_time = now(),
               next_attempt_time = COALESCE($6, next_attempt_time), lease_until = NULL
             WHERE id = $1",
        )
        .bind(id)
        .bind(outcome.state)
        .bind(attempt)
        .bind(i32::from(outcome.http_status))
        .bind(&outcome.error)
        .bind(outcome.next_attempt)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` deliveries to endpoint `endpoint` of `tenant`, newest first, before cursor
    /// `before`, in `state` if given.
    pub(crate) async fn list(
        &self,
        tenant: &TenantId,
        endpoint: Uuid,
        state: Option<&str>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, sqlx::Error> {
        let mut tx = tenant_tx(&self.pool, tenant.as_str()).await?;
        let rows = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_deliveries
             WHERE tenant = $1 AND endpoint = $2 AND ($3::text IS NULL OR state = $3)
               AND ($4::uuid IS NULL OR id < $4)
             ORDER BY id DESC LIMIT $5"
        ))
        .bind(tenant.as_str())
        .bind(endpoint)
        .bind(state)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// How many deliveries `tenant` has (for tests and operators).
    ///
    /// # Errors
    /// A database error.
    pub async fn count(&self, tenant: &TenantId) -> Result<u64, sqlx::Error> {
        let mut tx = tenant_tx(&self.pool, tenant.as_str()).await?;
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE tenant = $1")
                .bind(tenant.as_str())
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Takes `tenant`'s deliveries lock for the rest of the transaction: shared to queue deliveries,
    /// exclusive to delete them. A deletion so waits for the deliveries being queued to commit (and
    /// then deletes them), and a delivery queued after it starts waits for its commit (and then sees
    /// [`Deliveries::dataset_deleted`]): none slips in between the deletion and its residue count.
    pub(crate) async fn lock_tenant(
        conn: &mut PgConnection,
        tenant: &TenantId,
        exclusive: bool,
    ) -> Result<(), sqlx::Error> {
        let key = format!("notifier.webhook_deliveries/{}", tenant.as_str());
        xact_lock(conn, &key, !exclusive).await
    }

    /// Whether a deletion of `dataset` of `tenant` has run: no delivery about it is queued again.
    pub(crate) async fn dataset_deleted(
        conn: &mut PgConnection,
        tenant: &TenantId,
        dataset: &str,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM deleted_datasets WHERE tenant = $1 AND dataset = $2)",
        )
        .bind(tenant.as_str())
        .bind(dataset)
        .fetch_one(conn)
        .await
    }

    /// Records that `dataset` of `tenant` is deleted (see [`Deliveries::dataset_deleted`]).
    pub(crate) async fn mark_dataset_deleted(
        conn: &mut PgConnection,
        tenant: &TenantId,
        dataset: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO deleted_datasets (tenant, dataset) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(dataset)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Forgets `tenant`'s deleted datasets (its own deletion: nothing can be queued for it any more,
    /// its endpoints are gone); returns how many.
    pub(crate) async fn forget_deleted_datasets(
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM deleted_datasets WHERE tenant = $1")
                .bind(tenant.as_str())
                .execute(conn)
                .await?
                .rows_affected(),
        )
    }

    /// Deletes the deliveries of `tenant` (or of one `dataset` of it) and returns how many.
    pub(crate) async fn delete(
        conn: &mut PgConnection,
        tenant: &TenantId,
        dataset: Option<&str>,
    ) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "DELETE FROM webhook_deliveries WHERE tenant = $1 AND ($2::text IS NULL OR dataset = $2)",
        )
        .bind(tenant.as_str())
        .bind(dataset)
        .execute(conn)
        .await?
        .rows_affected())
    }

    /// Counts the deliveries of `tenant` (or of one `dataset` of it): the residue scan.
    pub(crate) async fn count_in(
        conn: &mut PgConnection,
        tenant: &TenantId,
        dataset: Option<&str>,
    ) -> Result<u64, sqlx::Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_deliveries WHERE tenant = $1 AND ($2::text IS NULL OR dataset = $2)",
        )
        .bind(tenant.as_str())
        .bind(dataset)
        .fetch_one(conn)
        .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }
}
