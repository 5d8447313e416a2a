//! [`Deletions`]: the deletion workflow. A request becomes a deletion row plus `deletion.requested`;
//! each receipt is recorded once; the last expected receipt signs the certificate (or, if a service
//! reported residue, fails the deletion); the sweeper re-publishes requests whose receipts are late
//! and fails them, naming the silent services, once the retries are spent. Every state change and
//! its events (outbox) commit in one transaction.
//!
//! A TENANT-scope deletion with all its receipts first purges the tenant's messages from every
//! JetStream stream but `TM_AUDIT` (`streams.rs`) and records that as the deletion service's own
//! receipt (`deletion`: `stream:<NAME>` → messages purged, residue → messages left), which the
//! certificate states next to the other services' receipts.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use trustmesh_bus::Outbox;
use trustmesh_bus::audit::{self, AuditEntry};
use trustmesh_bus::schema::rls::{service_tx, tenant_tx};
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1 as ev;
use trustmesh_proto::v1;
use trustmesh_telemetry::{DeletionMetrics, JobMetrics, JobState, PurgeOutcome};
use uuid::Uuid;

use super::model::{DeletionRow, ReceiptRow, Scope, State, certificate_name, parse_deletion_name};
use super::repo::{self, CertificateRow, NewDeletion, NewReceipt, SigningKeyRow};
use super::streams;
use crate::certificate::{self, CertificateSigner, DeletionFacts};
use crate::error::DeletionError;

/// Due deletions handled per sweep transaction.
const SWEEP_BATCH: i64 = 100;

/// How deletions wait for receipts.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Services whose receipt every deletion waits for.
    pub(crate) expected_services: Vec<String>,
    /// How long to wait for receipts before re-publishing the request.
    pub(crate) receipt_timeout: Duration,
    /// Re-publications before the deletion fails.
    pub(crate) max_retries: u32,
    /// Backup retention the certificate states.
    pub(crate) backup_retention_days: u32,
}

/// Who asked, as the audit log records it.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub(crate) actor_type: ev::ActorType,
    pub(crate) id: String,
}

impl Actor {
    fn service() -> Self {
        Self {
            actor_type: ev::ActorType::Service,
            id: Service::Deletion.as_str().to_owned(),
        }
    }
}

/// A deletion request from the API.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) tenant: TenantId,
    pub(crate) scope: Scope,
    pub(crate) target: String,
    pub(crate) reason: String,
    pub(crate) request_id: Option<String>,
    pub(crate) actor: Actor,
}

/// What recording a receipt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReceiptOutcome {
    /// Recorded; other receipts are still missing.
    Recorded,
    /// The service's receipt was already recorded.
    Duplicate,
    /// The service is not in the deletion's expected set.
    Unexpected,
    /// Recorded after the deletion had ended.
    Late,
    /// The last receipt: the certificate is signed.
    Completed,
    /// The last receipt, but some service reported residue: the deletion failed.
    Failed,
}

/// The deletion workflow; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Deletions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    jetstream: jetstream::Context,
    outbox: Outbox,
    signer: CertificateSigner,
    policy: Policy,
    jobs: JobMetrics,
}

/// Now, at the microsecond precision Postgres keeps, so stored and signed times agree.
fn now() -> OffsetDateTime {
    truncate(OffsetDateTime::now_utc())
}

fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    let micros = t.nanosecond() / 1000 * 1000;
    t.replace_nanosecond(micros).unwrap_or(t)
}

fn meta(tenant: &str, request_id: Option<&str>) -> (Uuid, ev::EventMeta) {
    let event_id = Uuid::now_v7();
    let meta = ev::EventMeta {
        event_id: event_id.to_string(),
        tenant: tenant.to_owned(),
        occurred_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        producer: Service::Deletion.as_str().to_owned(),
        request_id: request_id.unwrap_or_default().to_owned(),
    };
    (event_id, meta)
}

/// Whether `receipt` counts for `row`'s outcome and certificate: an expected service's, or the
/// deletion service's own (the stream purge of a TENANT-scope deletion). Receipts from elsewhere are
/// refused as unexpected before they are stored, so `deletion` is only ever this service's.
fn counts(row: &DeletionRow, receipt: &ReceiptRow) -> bool {
    row.expected_services.contains(&receipt.service)
        || receipt.service == Service::Deletion.as_str()
}

fn tenant_of(row: &DeletionRow) -> Result<TenantId, DeletionError> {
    TenantId::parse(row.tenant.as_str()).map_err(|_| DeletionError::Corrupt("tenant id"))
}

impl Deletions {
    pub(crate) fn new(
        pool: PgPool,
        jetstream: jetstream::Context,
        outbox: Outbox,
        signer: CertificateSigner,
        policy: Policy,
        jobs: JobMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                jetstream,
                outbox,
                signer,
                policy,
                jobs,
            }),
        }
    }

    /// Starts a deletion, or returns the one this request already started (same `request_id`, or
    /// an in-progress deletion of the same target).
    pub(crate) async fn request(
        &self,
        request: Request,
    ) -> Result<(DeletionRow, Vec<ReceiptRow>), DeletionError> {
        let tenant = request.tenant.as_str();
        let mut tx = tenant_tx(&self.inner.pool, tenant).await?;
        repo::lock_target(&mut tx, tenant, &request.target).await?;
        let existing = match &request.request_id {
            Some(id) => repo::find_by_request_id(&mut tx, tenant, id).await?,
            None => None,
        };
        let existing = match existing {
            Some(row) if row.target != request.target || row.scope() != request.scope => {
                return Err(DeletionError::RequestIdReused);
            }
            Some(row) => Some(row),
            None => repo::find_in_progress(&mut tx, tenant, &request.target).await?,
        };
        let action = match request.scope {
            Scope::Dataset => "deletion.datasets.delete",
            Scope::Tenant => "deletion.tenants.delete",
        };
        if let Some(row) = existing {
            // A repeated request: audited like the first, answered with the same operation.
            let receipts = repo::receipts(&mut tx, row.id).await?;
            self.enqueue_audit(
                &mut tx,
                &row,
                &request.actor,
                action,
                row.target.clone(),
                None,
            )
            .await?;
            tx.commit().await?;
            return Ok((row, receipts));
        }

        let now = now();
        let row = repo::insert(
            &mut tx,
            &NewDeletion {
                id: Uuid::now_v7(),
                tenant,
                scope: request.scope,
                target: &request.target,
                reason: &request.reason,
                requested_by: &request.actor.id,
                request_id: request.request_id.as_deref(),
                expected_services: &self.inner.policy.expected_services,
                now,
                next_check_at: now + self.inner.policy.receipt_timeout,
            },
        )
        .await?;
        self.enqueue_requested(&mut tx, &row).await?;
        self.enqueue_job_updated(&mut tx, &row, &[]).await?;
        self.enqueue_audit(
            &mut tx,
            &row,
            &request.actor,
            action,
            row.target.clone(),
            None,
        )
        .await?;
        tx.commit().await?;
        self.inner.jobs.entered(JobState::Running);
        tracing::info!(
            tenant.id = tenant,
            deletion.id = %row.id,
            deletion.scope = request.scope.as_str(),
            "Deletion requested."
        );
        Ok((row, Vec::new()))
    }

    /// The deletion `id` of `tenant` with its receipts.
    pub(crate) async fn get(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<(DeletionRow, Vec<ReceiptRow>), DeletionError> {
        let mut tx = tenant_tx(&self.inner.pool, tenant.as_str()).await?;
        let row = repo::get(&mut tx, tenant.as_str(), id)
            .await?
            .ok_or(DeletionError::NotFound)?;
        let receipts = repo::receipts(&mut tx, id).await?;
        tx.commit().await?;
        Ok((row, receipts))
    }

    /// The signed certificate of the completed deletion `id` of `tenant`.
    pub(crate) async fn certificate(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<CertificateRow, DeletionError> {
        let mut tx = tenant_tx(&self.inner.pool, tenant.as_str()).await?;
        let row = repo::get(&mut tx, tenant.as_str(), id)
            .await?
            .ok_or(DeletionError::NotFound)?;
        match row.state() {
            State::Completed => {
                let certificate = repo::certificate(&mut tx, id).await?;
                tx.commit().await?;
                certificate.ok_or(DeletionError::Corrupt(
                    "completed deletion without certificate",
                ))
            }
            State::InProgress => Err(DeletionError::FailedPrecondition(
                "the deletion is still waiting for receipts; no certificate yet",
            )),
            State::Failed => Err(DeletionError::FailedPrecondition(
                "the deletion failed; no certificate was issued",
            )),
        }
    }

    /// Every signing key, newest first.
    pub(crate) async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>, DeletionError> {
        Ok(repo::signing_keys(&self.inner.pool).await?)
    }

    /// Records an audit event of an access: allowed, or failed or denied with `error`.
    pub(crate) async fn audit(
        &self,
        tenant: &TenantId,
        actor: &Actor,
        action: &str,
        resource: String,
        error: Option<&DeletionError>,
    ) -> Result<(), DeletionError> {
        let mut tx = self.inner.pool.begin().await?;
        let mut entry = AuditEntry::new(Service::Deletion, tenant.clone(), action, resource);
        entry.actor_type = actor.actor_type;
        entry.actor_id.clone_from(&actor.id);
        if let Some(error) = error {
            entry.outcome = match error {
                DeletionError::Denied(_) => ev::Outcome::Denied,
                DeletionError::InvalidArgument(_)
                | DeletionError::RequestIdReused
                | DeletionError::NotFound
                | DeletionError::FailedPrecondition(_)
                | DeletionError::Database(_)
                | DeletionError::Outbox(_)
                | DeletionError::Purge(_)
                | DeletionError::Corrupt(_) => ev::Outcome::Error,
            };
            entry.grpc_code = error.code() as i32;
            error.reason().clone_into(&mut entry.reason);
        }
        audit::enqueue(&self.inner.outbox, &mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records `receipt`, published on `tenant`'s subject, once; signs the certificate when it is
    /// the last one expected.
    pub(crate) async fn record_receipt(
        &self,
        tenant: &TenantId,
        receipt: ev::DeletionReceipt,
    ) -> Result<ReceiptOutcome, DeletionError> {
        let Some((named_tenant, id)) = parse_deletion_name(&receipt.deletion, false) else {
            return Err(DeletionError::InvalidArgument(
                "the receipt's deletion is not a deletion name".to_owned(),
            ));
        };
        if &named_tenant != tenant {
            return Err(DeletionError::InvalidArgument(
                "the receipt names another tenant's deletion".to_owned(),
            ));
        }
        let mut tx = tenant_tx(&self.inner.pool, tenant.as_str()).await?;
        let row = repo::lock(&mut tx, tenant.as_str(), id)
            .await?
            .ok_or(DeletionError::NotFound)?;
        if !row.expected_services.contains(&receipt.service) {
            return Ok(ReceiptOutcome::Unexpected);
        }
        if receipt.scope() != row.scope().event() {
            return Err(DeletionError::InvalidArgument(
                "the receipt's scope differs from the deletion's".to_owned(),
            ));
        }
        let complete_time = receipt
            .meta
            .as_ref()
            .and_then(|m| m.occurred_at)
            .and_then(|t| {
                OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
                )
                .ok()
            })
            .map_or_else(now, truncate);
        let inserted = repo::insert_receipt(
            &mut tx,
            id,
            NewReceipt {
                service: &receipt.service,
                deleted: receipt.deleted.into_iter().collect(),
                residue: receipt.residue.into_iter().collect(),
                residue_found: receipt.residue_found,
                deks_destroyed: receipt.deks_destroyed,
                complete_time,
            },
        )
        .await?;
        if !inserted {
            return Ok(ReceiptOutcome::Duplicate);
        }
        DeletionMetrics::receipt(if receipt.residue_found {
            PurgeOutcome::ResidueFound
        } else {
            PurgeOutcome::Purged
        });
        if row.state() != State::InProgress {
            tx.commit().await?;
            return Ok(ReceiptOutcome::Late);
        }
        let mut receipts = repo::receipts(&mut tx, id).await?;
        if !row.missing(&receipts).is_empty() {
            tx.commit().await?;
            return Ok(ReceiptOutcome::Recorded);
        }
        if row.scope() == Scope::Tenant {
            self.purge_streams(&mut tx, &row, tenant).await?;
            receipts = repo::receipts(&mut tx, id).await?;
        }
        let with_residue: Vec<&str> = receipts
            .iter()
            .filter(|r| r.residue_found && counts(&row, r))
            .map(|r| r.service.as_str())
            .collect();
        let (outcome, job_state) = if with_residue.is_empty() {
            self.complete(&mut tx, &row, &receipts).await?;
            (ReceiptOutcome::Completed, JobState::Succeeded)
        } else {
            let message = format!(
                "residue remained after deletion in: {}",
                with_residue.join(", ")
            );
            self.fail(&mut tx, &row, &receipts, "RESIDUE_FOUND", &message)
                .await?;
            (ReceiptOutcome::Failed, JobState::Failed)
        };
        tx.commit().await?;
        self.inner.jobs.entered(job_state);
        Ok(outcome)
    }

    /// Re-publishes the requests of deletions whose receipts are late, and fails those whose retries
    /// are spent; returns how many deletions it handled.
    pub(crate) async fn sweep(&self) -> Result<usize, DeletionError> {
        // Service-wide: the sweeper looks at every tenant's late deletions.
        let mut tx = service_tx(&self.inner.pool).await?;
        let now = now();
        let due = repo::lock_due(&mut tx, now, SWEEP_BATCH).await?;
        let mut failed = 0;
        for row in &due {
            let receipts = repo::receipts(&mut tx, row.id).await?;
            let missing = row.missing(&receipts);
            let retries = i64::from(row.attempts) - 1;
            if retries < i64::from(self.inner.policy.max_retries) {
                tracing::warn!(
                    tenant.id = row.tenant,
                    deletion.id = %row.id,
                    deletion.attempt = row.attempts + 1,
                    deletion.missing = missing.join(","),
                    "Receipts are late; publishing the deletion request again."
                );
                self.enqueue_requested(&mut tx, row).await?;
                repo::record_retry(
                    &mut tx,
                    row.id,
                    now,
                    now + self.inner.policy.receipt_timeout,
                )
                .await?;
            } else {
                let message = format!(
                    "no receipt after {} attempts from: {}",
                    row.attempts,
                    missing.join(", ")
                );
                tracing::error!(
                    tenant.id = row.tenant,
                    deletion.id = %row.id,
                    deletion.missing = missing.join(","),
                    "A deletion failed: services did not answer."
                );
                self.fail(&mut tx, row, &receipts, "RECEIPTS_MISSING", &message)
                    .await?;
                failed += 1;
            }
        }
        tx.commit().await?;
        for _ in 0..failed {
            self.inner.jobs.entered(JobState::Failed);
        }
        Ok(due.len())
    }

    /// Purges `tenant`'s messages from every stream but `TM_AUDIT` and records the counts as the
    /// deletion service's own receipt (once: a retry after a failed commit purges again, finding
    /// what an earlier attempt left, and records that).
    async fn purge_streams(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        row: &DeletionRow,
        tenant: &TenantId,
    ) -> Result<(), DeletionError> {
        let purged = streams::purge_tenant(&self.inner.jetstream, tenant).await?;
        tracing::info!(
            tenant.id = row.tenant,
            deletion.id = %row.id,
            deletion.purged = ?purged.purged,
            deletion.residue = ?purged.residue,
            "The tenant's stream messages were purged."
        );
        repo::insert_receipt(
            tx,
            row.id,
            NewReceipt {
                service: Service::Deletion.as_str(),
                residue_found: !purged.residue.is_empty(),
                deleted: purged.purged,
                residue: purged.residue,
                deks_destroyed: 0,
                complete_time: now(),
            },
        )
        .await?;
        Ok(())
    }

    async fn complete(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        row: &DeletionRow,
        receipts: &[ReceiptRow],
    ) -> Result<(), DeletionError> {
        let now = now();
        let facts: Vec<_> = receipts
            .iter()
            .filter(|r| counts(row, r))
            .map(ReceiptRow::facts)
            .collect();
        let name = row.name();
        let signer = &self.inner.signer;
        let document = certificate::document(&DeletionFacts {
            deletion: &name,
            tenant: &row.tenant,
            scope: row.scope().as_str(),
            target: &row.target,
            reason: &row.reason,
            requested_by: &row.requested_by,
            request_id: row.request_id.as_deref(),
            requested_at: row.create_time,
            completed_at: now,
            issued_at: now,
            receipts: &facts,
            backup_retention_days: self.inner.policy.backup_retention_days,
            key_id: signer.key_id(),
        });
        let signature = signer.sign(&document).to_vec();
        repo::insert_certificate(
            tx,
            row.id,
            &CertificateRow {
                document,
                signature,
                key_id: signer.key_id().to_owned(),
                issue_time: now,
            },
        )
        .await?;
        let row = repo::finish(tx, row.id, State::Completed, None, now).await?;
        let tenant = tenant_of(&row)?;
        let certificate = certificate_name(&row.tenant, row.id);
        let subject = Subject::deletion_completed(&tenant);
        let (event_id, meta) = meta(&row.tenant, row.request_id.as_deref());
        let completed = ev::DeletionCompleted {
            meta: Some(meta),
            deletion: row.name(),
            scope: row.scope().event().into(),
            target: row.target.clone(),
            certificate: certificate.clone(),
        };
        self.inner
            .outbox
            .enqueue(tx, &subject, &completed, &msg_id(&subject, event_id))
            .await?;
        self.enqueue_job_updated(tx, &row, receipts).await?;
        self.enqueue_audit(
            tx,
            &row,
            &Actor::service(),
            "deletion.certificates.issue",
            certificate,
            None,
        )
        .await?;
        tracing::info!(tenant.id = row.tenant, deletion.id = %row.id, "Deletion completed; certificate signed.");
        Ok(())
    }

    async fn fail(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        row: &DeletionRow,
        receipts: &[ReceiptRow],
        code: &str,
        message: &str,
    ) -> Result<(), DeletionError> {
        let row = repo::finish(tx, row.id, State::Failed, Some((code, message)), now()).await?;
        self.enqueue_job_updated(tx, &row, receipts).await?;
        self.enqueue_audit(
            tx,
            &row,
            &Actor::service(),
            "deletion.fail",
            row.name(),
            Some(code),
        )
        .await
    }

    async fn enqueue_requested(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        row: &DeletionRow,
    ) -> Result<(), DeletionError> {
        let tenant = tenant_of(row)?;
        let subject = Subject::deletion_requested(&tenant);
        let (event_id, meta) = meta(&row.tenant, row.request_id.as_deref());
        let requested = ev::DeletionRequested {
            meta: Some(meta),
            deletion: row.name(),
            scope: row.scope().event().into(),
            target: row.target.clone(),
        };
        self.inner
            .outbox
            .enqueue(tx, &subject, &requested, &msg_id(&subject, event_id))
            .await?;
        Ok(())
    }

    async fn enqueue_job_updated(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        row: &DeletionRow,
        receipts: &[ReceiptRow],
    ) -> Result<(), DeletionError> {
        // NOTE: a TENANT-scope deletion's job updates would only become deliveries to the tenant's
        // webhooks (the notifier is their one consumer), which the deletion removes: published,
        // they would leave records of the deleted tenant behind (the notifier may record one after
        // its own deletion ran). Only a failure, which leaves the tenant in place, is published.
        if row.scope() == Scope::Tenant && row.state() != State::Failed {
            return Ok(());
        }
        let tenant = tenant_of(row)?;
        let job = row.job(receipts);
        let subject = Subject::job_updated(&tenant);
        let (event_id, meta) = meta(&row.tenant, row.request_id.as_deref());
        let updated = ev::JobUpdated {
            meta: Some(meta),
            job: job.name,
            kind: v1::JobKind::Deletion.into(),
            state: job.state,
            progress: job.progress,
            step: job.step,
            error_code: row.error_code.clone().unwrap_or_default(),
            target: row.target.clone(),
            output: row.name(),
            version: u64::try_from(row.job_version).unwrap_or(0),
        };
        self.inner
            .outbox
            .enqueue(tx, &subject, &updated, &msg_id(&subject, event_id))
            .await?;
        Ok(())
    }

    async fn enqueue_audit(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        row: &DeletionRow,
        actor: &Actor,
        action: &str,
        resource: String,
        error_code: Option<&str>,
    ) -> Result<(), DeletionError> {
        let mut entry = AuditEntry::new(Service::Deletion, tenant_of(row)?, action, resource);
        entry.actor_type = actor.actor_type;
        entry.actor_id.clone_from(&actor.id);
        entry.request_id = row.request_id.clone().unwrap_or_default();
        if let Some(code) = error_code {
            entry.outcome = ev::Outcome::Error;
            code.clone_into(&mut entry.reason);
        }
        audit::enqueue(&self.inner.outbox, tx, entry).await?;
        Ok(())
    }
}
