//! The `audit` schema: the chain heads, the append-only events table and the checkpoints.
//!
//! All three are per tenant (each tenant has its own chain, verified, checkpointed and exported on
//! its own) and under row-level security (`trustmesh_bus::schema::rls`): every function here runs
//! in a transaction marked for the one tenant it acts for, except the checkpoint timer's search for
//! due chains, which looks at every tenant's head (`service_tx`).

use std::sync::Arc;

use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};
use time::OffsetDateTime;
use trustmesh_bus::schema::rls::{service_tx, tenant_tx};

use crate::chain::{CheckpointRow, EventFields, EventRow, GENESIS, checkpoint_message, to_micros};
use crate::signing::CheckpointSigner;

/// Signs checkpoints: every `every_events` events (in [`append`]) and on a timer ([`checkpoint_due`]).
#[derive(Debug, Clone)]
pub(crate) struct Checkpointer {
    pub(crate) signer: Arc<CheckpointSigner>,
    pub(crate) every_events: i64,
}

impl Checkpointer {
    /// Signs and stores a checkpoint of `tenant` at `sequence` / `hash` within `tx`, and records it
    /// as the chain's last checkpoint (the head row must be locked by `tx`).
    async fn write(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        tenant: &str,
        sequence: i64,
        hash: &[u8],
    ) -> Result<(), sqlx::Error> {
        let signed_at = to_micros(OffsetDateTime::now_utc());
        let signature = self
            .signer
            .sign(&checkpoint_message(tenant, sequence, hash, signed_at));
        sqlx::query(
            "INSERT INTO checkpoints (tenant, sequence, hash, signed_at, key_id, signature)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(sequence)
        .bind(hash)
        .bind(signed_at)
        .bind(self.signer.key_id())
        .bind(signature.as_slice())
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE chain_heads SET checkpointed_sequence = $2, checkpointed_at = $3 WHERE tenant = $1",
        )
        .bind(tenant)
        .bind(sequence)
        .bind(signed_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

const ROW_COLUMNS: &str = "sequence, event_id, occurred_at, producer, meta_request_id, actor_type, actor_id, \
     on_behalf_of, action, resource, outcome, grpc_code, reason, request_id, trace_id, source_ip, \
     user_agent, records_affected, prev_hash, hash";

/// What [`append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Stored at this sequence.
    At(i64),
    /// The event id was already in the tenant's chain (a redelivery or a republish).
    AlreadyStored,
}

/// Appends `fields` to `tenant`'s chain, once per event id: the tenant's head row is locked, so
/// appends to one chain are serialized and the sequence has no gap.
pub(crate) async fn append(
    pool: &PgPool,
    checkpointer: &Checkpointer,
    tenant: &str,
    fields: &EventFields,
) -> Result<Appended, sqlx::Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    sqlx::query(
        "INSERT INTO chain_heads (tenant, sequence, hash) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(GENESIS.as_slice())
    .execute(&mut *tx)
    .await?;
    let (sequence, prev, checkpointed): (i64, Vec<u8>, i64) = sqlx::query_as(
        "SELECT sequence, hash, checkpointed_sequence FROM chain_heads WHERE tenant = $1 FOR UPDATE",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    let stored: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE tenant = $1 AND event_id = $2)",
    )
    .bind(tenant)
    .bind(&fields.event_id)
    .fetch_one(&mut *tx)
    .await?;
    if stored {
        tx.rollback().await?;
        return Ok(Appended::AlreadyStored);
    }
    let next = sequence + 1;
    let hash = fields.chain_hash(tenant, &prev);
    sqlx::query(
        "INSERT INTO events (tenant, sequence, event_id, occurred_at, producer, meta_request_id,
            actor_type, actor_id, on_behalf_of, action, resource, outcome, grpc_code, reason,
            request_id, trace_id, source_ip, user_agent, records_affected, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
            $19, $20, $21)",
    )
    .bind(tenant)
    .bind(next)
    .bind(&fields.event_id)
    .bind(fields.occurred_at)
    .bind(&fields.producer)
    .bind(&fields.meta_request_id)
    .bind(fields.actor_type)
    .bind(&fields.actor_id)
    .bind(&fields.on_behalf_of)
    .bind(&fields.action)
    .bind(&fields.resource)
    .bind(fields.outcome)
    .bind(fields.grpc_code)
    .bind(&fields.reason)
    .bind(&fields.request_id)
    .bind(&fields.trace_id)
    .bind(&fields.source_ip)
    .bind(&fields.user_agent)
    .bind(fields.records_affected)
    .bind(&prev)
    .bind(hash.as_slice())
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE chain_heads SET sequence = $2, hash = $3 WHERE tenant = $1")
        .bind(tenant)
        .bind(next)
        .bind(hash.as_slice())
        .execute(&mut *tx)
        .await?;
    if next - checkpointed >= checkpointer.every_events {
        checkpointer
            .write(&mut tx, tenant, next, hash.as_slice())
            .await?;
    }
    tx.commit().await?;
    trustmesh_telemetry::AuditMetrics::appended(1);
    Ok(Appended::At(next))
}

/// A `ListEvents` filter as query values; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) actor: Option<String>,
    pub(crate) action: Option<Match>,
    pub(crate) resource: Option<Match>,
    pub(crate) outcome: Option<i32>,
    pub(crate) start: Option<OffsetDateTime>,
    pub(crate) end: Option<OffsetDateTime>,
}

/// An exact value or a prefix (`datasets.*`).
#[derive(Debug, Clone)]
pub(crate) enum Match {
    Exact(String),
    Prefix(String),
}

impl Match {
    /// `value` as a match: a trailing `*` makes it a prefix; empty matches everything.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        if value.is_empty() {
            return None;
        }
        Some(match value.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(value.to_owned()),
        })
    }

    fn push(&self, query: &mut QueryBuilder<'_, Postgres>, column: &str) {
        match self {
            Self::Exact(value) => {
                query
                    .push(format!(" AND {column} = "))
                    .push_bind(value.clone());
            }
            Self::Prefix(prefix) => {
                query
                    .push(format!(" AND starts_with({column}, "))
                    .push_bind(prefix.clone())
                    .push(")");
            }
        }
    }
}

/// Up to `limit` events of `tenant` matching `filter` with a sequence above `after`, by sequence.
pub(crate) async fn list(
    pool: &PgPool,
    tenant: &str,
    filter: &Filter,
    after: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut query = QueryBuilder::new(format!("SELECT {ROW_COLUMNS} FROM events WHERE tenant = "));
    query.push_bind(tenant.to_owned());
    query.push(" AND sequence > ").push_bind(after);
    if let Some(actor) = &filter.actor {
        query.push(" AND actor_id = ").push_bind(actor.clone());
    }
    if let Some(action) = &filter.action {
        action.push(&mut query, "action");
    }
    if let Some(resource) = &filter.resource {
        resource.push(&mut query, "resource");
    }
    if let Some(outcome) = filter.outcome {
        query.push(" AND outcome = ").push_bind(outcome);
    }
    if let Some(start) = filter.start {
        query.push(" AND occurred_at >= ").push_bind(start);
    }
    if let Some(end) = filter.end {
        query.push(" AND occurred_at < ").push_bind(end);
    }
    query.push(" ORDER BY sequence LIMIT ").push_bind(limit);
    let mut tx = tenant_tx(pool, tenant).await?;
    let rows = query.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Up to `limit` events of `tenant` with sequences in `from..=to`, by sequence.
pub(crate) async fn range(
    pool: &PgPool,
    tenant: &str,
    from: i64,
    to: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {ROW_COLUMNS} FROM events WHERE tenant = $1 AND sequence BETWEEN $2 AND $3
         ORDER BY sequence LIMIT $4"
    ))
    .bind(tenant)
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// The hash of `tenant`'s event `sequence`, if stored.
pub(crate) async fn hash_at(
    pool: &PgPool,
    tenant: &str,
    sequence: i64,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let hash = sqlx::query_scalar("SELECT hash FROM events WHERE tenant = $1 AND sequence = $2")
        .bind(tenant)
        .bind(sequence)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(hash)
}

/// `tenant`'s chain head (last sequence and hash); `(0, h_0)` for a tenant without events.
pub(crate) async fn head(pool: &PgPool, tenant: &str) -> Result<(i64, Vec<u8>), sqlx::Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT sequence, hash FROM chain_heads WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(head.unwrap_or((0, GENESIS.to_vec())))
}

/// Signs a checkpoint at the head of every chain with events after its last checkpoint that is at
/// least `every_secs` old; returns how many were written.
pub(crate) async fn checkpoint_due(
    pool: &PgPool,
    checkpointer: &Checkpointer,
    every_secs: f64,
) -> Result<usize, sqlx::Error> {
    // Service-wide: the timer looks for due chains among every tenant's heads; each checkpoint is
    // then written under its own tenant's setting.
    let mut tx = service_tx(pool).await?;
    let due: Vec<String> = sqlx::query_scalar(
        "SELECT tenant FROM chain_heads WHERE sequence > checkpointed_sequence
           AND checkpointed_at <= now() - make_interval(secs => $1)",
    )
    .bind(every_secs)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut written = 0;
    for tenant in due {
        let mut tx = tenant_tx(pool, &tenant).await?;
        let (sequence, hash, checkpointed): (i64, Vec<u8>, i64) = sqlx::query_as(
            "SELECT sequence, hash, checkpointed_sequence FROM chain_heads WHERE tenant = $1 FOR UPDATE",
        )
        .bind(&tenant)
        .fetch_one(&mut *tx)
        .await?;
        if sequence > checkpointed {
            checkpointer
                .write(&mut tx, &tenant, sequence, &hash)
                .await?;
            written += 1;
        }
        tx.commit().await?;
    }
    Ok(written)
}

/// `tenant`'s checkpoints with sequences in `from..=to`, by sequence.
pub(crate) async fn checkpoints(
    pool: &PgPool,
    tenant: &str,
    from: i64,
    to: i64,
) -> Result<Vec<CheckpointRow>, sqlx::Error> {
    let mut tx = tenant_tx(pool, tenant).await?;
    let rows = sqlx::query_as(
        "SELECT sequence, hash, signed_at, key_id, signature FROM checkpoints
         WHERE tenant = $1 AND sequence BETWEEN $2 AND $3 ORDER BY sequence",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}
