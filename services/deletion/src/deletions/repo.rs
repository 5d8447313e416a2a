//! The `deletions`, `receipts`, `certificates` and `signing_keys` tables.

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use trustmesh_bus::schema::xact_lock;
use uuid::Uuid;

use super::model::{DeletionRow, ReceiptRow, Scope, State};

const DELETION_COLUMNS: &str = "id, tenant, scope, target, reason, requested_by, request_id, \
    expected_services, state, attempts, job_version, error_code, error_message, create_time, \
    update_time, complete_time";

/// A deletion to insert.
#[derive(Debug)]
pub(crate) struct NewDeletion<'a> {
    pub(crate) id: Uuid,
    pub(crate) tenant: &'a str,
    pub(crate) scope: Scope,
    pub(crate) target: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) requested_by: &'a str,
    pub(crate) request_id: Option<&'a str>,
    pub(crate) expected_services: &'a [String],
    pub(crate) now: OffsetDateTime,
    pub(crate) next_check_at: OffsetDateTime,
}

/// A receipt to insert.
#[derive(Debug)]
pub(crate) struct NewReceipt<'a> {
    pub(crate) service: &'a str,
    pub(crate) deleted: BTreeMap<String, u64>,
    pub(crate) residue: BTreeMap<String, u64>,
    pub(crate) residue_found: bool,
    pub(crate) deks_destroyed: u32,
    pub(crate) complete_time: OffsetDateTime,
}

/// A stored certificate.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct CertificateRow {
    pub(crate) document: Vec<u8>,
    pub(crate) signature: Vec<u8>,
    pub(crate) key_id: String,
    pub(crate) issue_time: OffsetDateTime,
}

/// A stored signing key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct SigningKeyRow {
    pub(crate) key_id: String,
    pub(crate) public_key: Vec<u8>,
    pub(crate) create_time: OffsetDateTime,
    pub(crate) retire_time: Option<OffsetDateTime>,
}

/// Serializes deletions of one (tenant, target) for the rest of the transaction.
pub(crate) async fn lock_target(
    conn: &mut PgConnection,
    tenant: &str,
    target: &str,
) -> Result<(), sqlx::Error> {
    xact_lock(
        conn,
        &format!("deletion.deletions/{tenant}/{target}"),
        false,
    )
    .await
}

pub(crate) async fn find_by_request_id(
    conn: &mut PgConnection,
    tenant: &str,
    request_id: &str,
) -> Result<Option<DeletionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELETION_COLUMNS} FROM deletions WHERE tenant = $1 AND request_id = $2"
    ))
    .bind(tenant)
    .bind(request_id)
    .fetch_optional(conn)
    .await
}

pub(crate) async fn find_in_progress(
    conn: &mut PgConnection,
    tenant: &str,
    target: &str,
) -> Result<Option<DeletionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELETION_COLUMNS} FROM deletions
         WHERE tenant = $1 AND target = $2 AND state = 'in_progress'
         ORDER BY create_time LIMIT 1"
    ))
    .bind(tenant)
    .bind(target)
    .fetch_optional(conn)
    .await
}

pub(crate) async fn insert(
    conn: &mut PgConnection,
    new: &NewDeletion<'_>,
) -> Result<DeletionRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO deletions (id, tenant, scope, target, reason, requested_by, request_id,
             expected_services, state, next_check_at, create_time, update_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'in_progress', $9, $10, $10)
         RETURNING {DELETION_COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.tenant)
    .bind(new.scope.as_str())
    .bind(new.target)
    .bind(new.reason)
    .bind(new.requested_by)
    .bind(new.request_id)
    .bind(new.expected_services)
    .bind(new.next_check_at)
    .bind(new.now)
    .fetch_one(conn)
    .await
}

pub(crate) async fn get(
    conn: &mut PgConnection,
    tenant: &str,
    id: Uuid,
) -> Result<Option<DeletionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELETION_COLUMNS} FROM deletions WHERE tenant = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The deletion, locked for the rest of the transaction.
pub(crate) async fn lock(
    conn: &mut PgConnection,
    tenant: &str,
    id: Uuid,
) -> Result<Option<DeletionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELETION_COLUMNS} FROM deletions WHERE tenant = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// In-progress deletions whose check time has come, locked (skipping those another replica holds).
pub(crate) async fn lock_due(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    limit: i64,
) -> Result<Vec<DeletionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELETION_COLUMNS} FROM deletions
         WHERE state = 'in_progress' AND next_check_at <= $1
         ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub(crate) async fn receipts(
    conn: &mut PgConnection,
    deletion: Uuid,
) -> Result<Vec<ReceiptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT service, deleted, residue, residue_found, deks_destroyed, complete_time
         FROM receipts WHERE deletion_id = $1 ORDER BY service",
    )
    .bind(deletion)
    .fetch_all(conn)
    .await
}

/// Records a receipt; `false` if the service's receipt was already recorded.
pub(crate) async fn insert_receipt(
    conn: &mut PgConnection,
    deletion: Uuid,
    receipt: NewReceipt<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO receipts (deletion_id, service, deleted, residue, residue_found,
             deks_destroyed, complete_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(deletion)
    .bind(receipt.service)
    .bind(sqlx::types::Json(receipt.deleted))
    .bind(sqlx::types::Json(receipt.residue))
    .bind(receipt.residue_found)
    .bind(i64::from(receipt.deks_destroyed))
    .bind(receipt.complete_time)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Moves the deletion to a terminal `state` (with an error for FAILED), bumping the job version.
pub(crate) async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    state: State,
    error: Option<(&str, &str)>,
    now: OffsetDateTime,
) -> Result<DeletionRow, sqlx::Error> {
    let complete_time = (state == State::Completed).then_some(now);
    sqlx::query_as(&format!(
        "UPDATE deletions SET state = $2, error_code = $3, error_message = $4, update_time = $5,
             complete_time = $6, job_version = job_version + 1
         WHERE id = $1 RETURNING {DELETION_COLUMNS}"
    ))
    .bind(id)
    .bind(state.as_str())
    .bind(error.map(|e| e.0))
    .bind(error.map(|e| e.1))
    .bind(now)
    .bind(complete_time)
    .fetch_one(conn)
    .await
}

/// Counts a re-publication of the request and sets the next check time.
pub(crate) async fn record_retry(
    conn: &mut PgConnection,
    id: Uuid,
    now: OffsetDateTime,
    next_check_at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deletions SET attempts = attempts + 1, next_check_at = $3, update_time = $2
         WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .bind(next_check_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn insert_certificate(
    conn: &mut PgConnection,
    deletion: Uuid,
    certificate: &CertificateRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO certificates (deletion_id, document, signature, key_id, issue_time)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(deletion)
    .bind(&certificate.document)
    .bind(&certificate.signature)
    .bind(&certificate.key_id)
    .bind(certificate.issue_time)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn certificate(
    conn: &mut PgConnection,
    deletion: Uuid,
) -> Result<Option<CertificateRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT document, signature, key_id, issue_time FROM certificates WHERE deletion_id = $1",
    )
    .bind(deletion)
    .fetch_optional(conn)
    .await
}

/// Records `key_id` as the current signing key and retires every other one.
pub(crate) async fn register_signing_key(
    pool: &PgPool,
    key_id: &str,
    public_key: &[u8],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO signing_keys (key_id, public_key) VALUES ($1, $2)
         ON CONFLICT (key_id) DO UPDATE SET retire_time = NULL",
    )
    .bind(key_id)
    .bind(public_key)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE signing_keys SET retire_time = now() WHERE key_id <> $1 AND retire_time IS NULL",
    )
    .bind(key_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Every signing key, newest first.
pub(crate) async fn signing_keys(pool: &PgPool) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, public_key, create_time, retire_time FROM signing_keys
         ORDER BY create_time DESC, key_id",
    )
    .fetch_all(pool)
    .await
}
