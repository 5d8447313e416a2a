//! The `reports` and `corrections` tables, always filtered by tenant, with their sealed parts; a
//! new report writes `scores.ready` and its audit event in the same transaction.

use std::sync::Arc;

use prost::Message;
use sqlx::PgPool;
use time::OffsetDateTime;
use trustmesh_bus::Outbox;
use trustmesh_bus::audit::{self, AuditEntry};
use trustmesh_bus::schema::rls::tenant_tx;
use trustmesh_crypto::{Keyring, ObjectRef};
use trustmesh_events::{Subject, msg_id};
use trustmesh_proto::events::v1::ScoresReady;
use trustmesh_proto::v1::{Correction, CorrectionAction, Report};
use trustmesh_store::TenantScope;
use uuid::Uuid;

use super::ResourceName;
use crate::error::TrustError;

/// One row of `reports`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ReportRow {
    pub(crate) id: Uuid,
    pub(crate) row_count: i64,
    pub(crate) report_sealed: Vec<u8>,
    pub(crate) created_at: OffsetDateTime,
}

const COLUMNS: &str = "id, row_count, report_sealed, created_at";

/// A report about to be stored.
#[derive(Debug)]
pub(crate) struct NewReport {
    pub(crate) id: Uuid,
    pub(crate) dataset: Uuid,
    pub(crate) report: Report,
    pub(crate) flagged_row_count: u64,
    pub(crate) event_id: Uuid,
    pub(crate) scores_ready: ScoresReady,
    pub(crate) audit: AuditEntry,
}

fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or_default(),
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The report repository.
#[derive(Debug, Clone)]
pub(crate) struct ReportRepo {
    pool: PgPool,
    keyring: Arc<Keyring>,
    outbox: Outbox,
}

impl ReportRepo {
    pub(crate) fn new(pool: PgPool, keyring: Arc<Keyring>, outbox: Outbox) -> Self {
        Self {
            pool,
            keyring,
            outbox,
        }
    }

    async fn seal(
        &self,
        scope: &TenantScope,
        object: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, TrustError> {
        let obj = ObjectRef {
            tenant: scope.as_str(),
            object,
            version: 1,
        };
        Ok(self.keyring.seal(&obj, plaintext).await?)
    }

    async fn open(
        &self,
        scope: &TenantScope,
        object: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, TrustError> {
        let obj = ObjectRef {
            tenant: scope.as_str(),
            object,
            version: 1,
        };
        Ok(self
            .keyring
            .open(&obj, sealed)
            .await
            .inspect_err(|_| trustmesh_telemetry::DecryptMetrics::failed())?)
    }

    /// Whether the tenant has report `id`.
    pub(crate) async fn exists(&self, scope: &TenantScope, id: Uuid) -> Result<bool, TrustError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let exists = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM reports WHERE tenant = $1 AND id = $2)",
        )
        .bind(scope.as_str())
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(exists)
    }

    /// Stores the report with `scores.ready` and its audit event; `false` (nothing written) if the
    /// report already exists.
    pub(crate) async fn create(
        &self,
        scope: &TenantScope,
        new: NewReport,
    ) -> Result<bool, TrustError> {
        let sealed = self
            .seal(
                scope,
                &format!("reports/{}/report", new.id),
                &new.report.encode_to_vec(),
            )
            .await?;
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let inserted = sqlx::query(
            "INSERT INTO reports (tenant, id, dataset, row_count, flagged_row_count, health_score, report_sealed)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(scope.as_str())
        .bind(new.id)
        .bind(new.dataset)
        .bind(to_i64(new.report.row_count))
        .bind(to_i64(new.flagged_row_count))
        .bind(new.report.health_score)
        .bind(&sealed)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let subject = Subject::scores_ready(scope.tenant());
        self.outbox
            .enqueue(
                &mut tx,
                &subject,
                &new.scores_ready,
                &msg_id(&subject, new.event_id),
            )
            .await?;
        audit::enqueue(&self.outbox, &mut tx, new.audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The tenant's report `id`, if any.
    pub(crate) async fn get(
        &self,
        scope: &TenantScope,
        id: Uuid,
    ) -> Result<Option<ReportRow>, TrustError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let row = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM reports WHERE tenant = $1 AND id = $2"
        ))
        .bind(scope.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The report as the API shows it.
    pub(crate) async fn open_report(
        &self,
        scope: &TenantScope,
        row: &ReportRow,
    ) -> Result<Report, TrustError> {
        let plaintext = self
            .open(
                scope,
                &format!("reports/{}/report", row.id),
                &row.report_sealed,
            )
            .await?;
        let mut report = Report::decode(plaintext.as_slice())
            .map_err(|_| TrustError::Corrupt("sealed report"))?;
        report.name = ResourceName::format(scope.tenant(), "reports", row.id);
        report.create_time = Some(timestamp(row.created_at));
        Ok(report)
    }

    /// Up to `limit` of the tenant's reports older than `before`, newest first, only those of
    /// `dataset` if given.
    pub(crate) async fn list(
        &self,
        scope: &TenantScope,
        dataset: Option<Uuid>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<ReportRow>, TrustError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let rows = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM reports
             WHERE tenant = $1 AND ($2::uuid IS NULL OR dataset = $2) AND ($3::uuid IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(scope.as_str())
        .bind(dataset)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// The corrections recorded on report `id`, by row.
    pub(crate) async fn corrections(
        &self,
        scope: &TenantScope,
        id: Uuid,
    ) -> Result<Vec<Correction>, TrustError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let rows: Vec<(i64, i16, Option<Vec<u8>>, OffsetDateTime)> = sqlx::query_as(
            "SELECT row_index, action, label_sealed, updated_at FROM corrections
             WHERE tenant = $1 AND report = $2 ORDER BY row_index",
        )
        .bind(scope.as_str())
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut corrections = Vec::with_capacity(rows.len());
        for (row_index, action, sealed, updated_at) in rows {
            let corrected_label = match sealed {
                Some(sealed) => {
                    let plaintext = self
                        .open(
                            scope,
                            &format!("reports/{id}/corrections/{row_index}"),
                            &sealed,
                        )
                        .await?;
                    String::from_utf8(plaintext)
                        .map_err(|_| TrustError::Corrupt("sealed correction"))?
                }
                None => String::new(),
            };
            corrections.push(Correction {
                row_index: u64::try_from(row_index).unwrap_or_default(),
                action: i32::from(action),
                corrected_label,
                update_time: Some(timestamp(updated_at)),
            });
        }
        Ok(corrections)
    }

    /// Records `corrections` on report `id` (UNSPECIFIED clears a row's); returns how many.
    pub(crate) async fn set_corrections(
        &self,
        scope: &TenantScope,
        id: Uuid,
        corrections: &[Correction],
    ) -> Result<u64, TrustError> {
        let mut sealed = Vec::with_capacity(corrections.len());
        for c in corrections {
            sealed.push(match c.action() {
                CorrectionAction::Relabel => Some(
                    self.seal(
                        scope,
                        &format!("reports/{id}/corrections/{}", c.row_index),
                        c.corrected_label.as_bytes(),
                    )
                    .await?,
                ),
                CorrectionAction::Unspecified
                | CorrectionAction::Keep
                | CorrectionAction::Exclude
                | CorrectionAction::NeedsReview => None,
            });
        }
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        for (c, label) in corrections.iter().zip(sealed) {
            let row_index = to_i64(c.row_index);
            if c.action() == CorrectionAction::Unspecified {
                sqlx::query(
                    "DELETE FROM corrections WHERE tenant = $1 AND report = $2 AND row_index = $3",
                )
                .bind(scope.as_str())
                .bind(id)
                .bind(row_index)
                .execute(&mut *tx)
                .await?;
            } else {
                sqlx::query(
                    "INSERT INTO corrections (tenant, report, row_index, action, label_sealed)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant, report, row_index)
                     DO UPDATE SET action = $4, label_sealed = $5, updated_at = now()",
                )
                .bind(scope.as_str())
                .bind(id)
                .bind(row_index)
                .bind(i16::try_from(c.action).unwrap_or_default())
                .bind(label)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(corrections.len() as u64)
    }

    /// Records an audit event on its own (committed before the caller answers).
    pub(crate) async fn audit(&self, entry: AuditEntry) -> Result<(), TrustError> {
        let mut tx = self.pool.begin().await?;
        audit::enqueue(&self.outbox, &mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}
