//! The `jobs` table, always filtered by tenant, with its sealed spec; every change of a job writes
//! `job.updated` (and whatever else goes with it) to the outbox in the same transaction.

use std::sync::Arc;

use prost::Message;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use trustmesh_auth::{EffectiveQuota, TenantUsage};
use trustmesh_bus::Outbox;
use trustmesh_bus::audit::{self, AuditEntry};
use trustmesh_bus::schema::rls::tenant_tx;
use trustmesh_bus::schema::xact_lock;
use trustmesh_crypto::{Keyring, ObjectRef};
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{AnalysisRequested, EventMeta, JobUpdated};
use trustmesh_proto::v1::{Job, JobError, JobKind, JobState};
use trustmesh_service_kit::CountUsage;
use trustmesh_store::TenantScope;
use trustmesh_telemetry::{
    DecryptMetrics, JobKind as MetricKind, JobMetrics, JobState as MetricState,
};
use uuid::Uuid;

use super::{JobSpec, ResourceName, Step, state_code, steps};
use crate::error::AnalysisError;

/// One row of `jobs`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct JobRow {
    pub(crate) id: Uuid,
    pub(crate) dataset: Uuid,
    pub(crate) task_type: i16,
    pub(crate) spec_sealed: Vec<u8>,
    pub(crate) state: i16,
    pub(crate) progress: f64,
    pub(crate) step: String,
    pub(crate) step_index: i32,
    pub(crate) step_count: i32,
    pub(crate) error_code: String,
    pub(crate) error_message: String,
    pub(crate) output: String,
    pub(crate) outputs_ready: bool,
    pub(crate) version: i64,
    pub(crate) request_id: Option<Uuid>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
    pub(crate) started_at: Option<OffsetDateTime>,
    pub(crate) ended_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, dataset, task_type, spec_sealed, state, progress, step, step_index, \
                       step_count, error_code, error_message, output, outputs_ready, version, \
                       request_id, created_at, updated_at, started_at, ended_at";

fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or_default(),
    }
}

impl JobRow {
    /// The job's state.
    pub(crate) fn state(&self) -> JobState {
        JobState::try_from(i32::from(self.state)).unwrap_or(JobState::Unspecified)
    }

    /// The job as the API shows it.
    pub(crate) fn to_proto(&self, tenant: &TenantId) -> Job {
        let state = self.state();
        Job {
            name: ResourceName::job_string(tenant, self.id),
            kind: JobKind::Analysis.into(),
            state: state.into(),
            progress: self.progress,
            step: self.step.clone(),
            step_index: u32::try_from(self.step_index).unwrap_or_default(),
            step_count: u32::try_from(self.step_count).unwrap_or_default(),
            error: (state == JobState::Failed).then(|| JobError {
                code: self.error_code.clone(),
                message: self.error_message.clone(),
            }),
            target: ResourceName::dataset_string(tenant, self.dataset),
            output: self.output.clone(),
            create_time: Some(timestamp(self.created_at)),
            update_time: Some(timestamp(self.updated_at)),
            start_time: self.started_at.map(timestamp),
            end_time: self.ended_at.map(timestamp),
            request_id: self.request_id.map(|id| id.to_string()).unwrap_or_default(),
        }
    }

    pub(crate) fn request_id_string(&self) -> String {
        self.request_id.map(|id| id.to_string()).unwrap_or_default()
    }
}

/// An event to write to the outbox with a job change.
#[derive(Debug)]
pub(crate) struct Pending {
    subject: Subject,
    payload: Vec<u8>,
    msg_id: String,
}

impl Pending {
    /// `message` on `subject`, deduplicated by `event_id`.
    pub(crate) fn new(subject: Subject, event_id: Uuid, message: &impl Message) -> Self {
        let msg_id = msg_id(&subject, event_id);
        Self {
            subject,
            payload: message.encode_to_vec(),
            msg_id,
        }
    }
}

impl Pending {
    /// Writes the event to `outbox` within `tx`.
    pub(crate) async fn enqueue(
        &self,
        outbox: &Outbox,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ) -> Result<(), AnalysisError> {
        outbox
            .enqueue_bytes(tx, &self.subject, &self.payload, &self.msg_id)
            .await?;
        Ok(())
    }
}

/// A fresh event id and the metadata of an event of `tenant` produced by analysis.
pub(crate) fn event_meta(tenant: &TenantId, request_id: &str) -> (Uuid, EventMeta) {
    let event_id = Uuid::now_v7();
    let meta = EventMeta {
        event_id: event_id.to_string(),
        tenant: tenant.to_string(),
        occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        producer: Service::Analysis.as_str().to_owned(),
        request_id: request_id.to_owned(),
    };
    (event_id, meta)
}

/// A change of a job; `None` keeps the stored value.
#[derive(Debug, Default)]
pub(crate) struct Change {
    pub(crate) state: Option<JobState>,
    pub(crate) step: Option<Step>,
    pub(crate) progress: Option<f64>,
    pub(crate) error: Option<(&'static str, String)>,
    pub(crate) output: Option<String>,
    pub(crate) outputs_ready: bool,
    pub(crate) row_count: Option<u64>,
}

/// Which jobs a change applies to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guard {
    /// The states it may leave.
    pub(crate) from: &'static [JobState],
    /// Whether the model outputs must (`Some(true)`) or must not (`Some(false)`) be stored.
    pub(crate) outputs_ready: Option<bool>,
}

/// The states a job is active in.
pub(crate) const ACTIVE: &[JobState] = &[JobState::Queued, JobState::Running];

/// Counts `row` entering `state` in the job metrics (with its duration when `state` ends it).
fn record_transition(row: &JobRow, state: JobState) {
    let jobs = JobMetrics::of(MetricKind::Analysis);
    let elapsed = || (OffsetDateTime::now_utc() - row.created_at).unsigned_abs();
    match state {
        JobState::Queued => jobs.entered(MetricState::Queued),
        JobState::Running => jobs.entered(MetricState::Running),
        JobState::Succeeded => jobs.finished(MetricState::Succeeded, elapsed()),
        JobState::Failed => jobs.finished(MetricState::Failed, elapsed()),
        JobState::Cancelled => jobs.finished(MetricState::Cancelled, elapsed()),
        JobState::Unspecified => {}
    }
}

/// The job repository: rows, their sealed specs and the events written with them.
#[derive(Debug, Clone)]
pub(crate) struct JobRepo {
    pool: PgPool,
    keyring: Arc<Keyring>,
    outbox: Outbox,
    usage: UsageReporter,
}

/// Reports a tenant's jobs QUEUED or RUNNING to `tm_usage` (tenancy's GetQuota reads them); a
/// dedicated replica reports its tenant's, the only ones in its database.
pub(crate) type UsageReporter = trustmesh_service_kit::UsageReporter<ActiveJobs>;

/// Counts a tenant's jobs QUEUED or RUNNING.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActiveJobs;

impl CountUsage for ActiveJobs {
    const TENANTS_TABLE: &'static str = "jobs";

    async fn count(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<TenantUsage, sqlx::Error> {
        let active: Vec<i16> = ACTIVE.iter().map(|s| state_code(*s)).collect();
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE tenant = $1 AND state = ANY($2)")
                .bind(tenant.as_str())
                .bind(&active)
                .fetch_one(conn)
                .await?;
        Ok(TenantUsage {
            concurrent_jobs: u32::try_from(count).unwrap_or(u32::MAX),
            ..TenantUsage::default()
        })
    }
}

impl JobRepo {
    pub(crate) fn new(
        pool: PgPool,
        keyring: Arc<Keyring>,
        outbox: Outbox,
        usage: UsageReporter,
    ) -> Self {
        Self {
            pool,
            keyring,
            outbox,
            usage,
        }
    }

    fn spec_ref<'a>(scope: &'a TenantScope, object: &'a str) -> ObjectRef<'a> {
        ObjectRef {
            tenant: scope.as_str(),
            object,
            version: 1,
        }
    }

    /// The job's spec, opened.
    pub(crate) async fn open_spec(
        &self,
        scope: &TenantScope,
        row: &JobRow,
    ) -> Result<JobSpec, AnalysisError> {
        let object = format!("jobs/{}/spec", row.id);
        let plaintext = self
            .keyring
            .open(&Self::spec_ref(scope, &object), &row.spec_sealed)
            .await
            .inspect_err(|_| DecryptMetrics::failed())?;
        JobSpec::decode(plaintext.as_slice()).map_err(|_| AnalysisError::Corrupt("sealed job spec"))
    }

    /// Creates a QUEUED job and writes `analysis.requested` and `job.updated` with it, or returns
    /// the job created earlier with `request_id`.
    pub(crate) async fn create(
        &self,
        scope: &TenantScope,
        request_id: Option<Uuid>,
        dataset: Uuid,
        task_type: i16,
        spec: &JobSpec,
        quota: Option<&EffectiveQuota>,
    ) -> Result<JobRow, AnalysisError> {
        let id = Uuid::now_v7();
        let object = format!("jobs/{id}/spec");
        let sealed = self
            .keyring
            .seal(&Self::spec_ref(scope, &object), &spec.encode_to_vec())
            .await?;
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        // The tenant's quota of concurrent jobs: fewer than `max_concurrent_jobs` QUEUED or RUNNING,
        // counted under a per-tenant lock held until this insert commits, so starts racing each
        // other cannot exceed it between them.
        if let Some(quota) = quota {
            let key = format!("analysis.jobs/{}/active", scope.as_str());
            xact_lock(&mut tx, &key, false).await?;
            let active = ActiveJobs.count(&mut tx, scope.tenant()).await?;
            quota.admit_job(u64::from(active.concurrent_jobs))?;
        }
        let inserted: Option<JobRow> = sqlx::query_as(&format!(
            "INSERT INTO jobs (tenant, id, dataset, task_type, spec_sealed, state, step_count, request_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant, request_id) WHERE request_id IS NOT NULL DO NOTHING
             RETURNING {COLUMNS}"
        ))
        .bind(scope.as_str())
        .bind(id)
        .bind(dataset)
        .bind(task_type)
        .bind(&sealed)
        .bind(state_code(JobState::Queued))
        .bind(i32::try_from(steps::COUNT).unwrap_or_default())
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = inserted else {
            tx.rollback().await?;
            let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
            let earlier: Option<JobRow> = sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE tenant = $1 AND request_id = $2"
            ))
            .bind(scope.as_str())
            .bind(request_id)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            return earlier.ok_or_else(|| AnalysisError::NotFound {
                resource: format!("tenants/{}/jobs", scope.as_str()),
            });
        };
        let tenant = scope.tenant();
        let (event_id, meta) = event_meta(tenant, &row.request_id_string());
        let requested = AnalysisRequested {
            meta: Some(meta),
            job: ResourceName::job_string(tenant, row.id),
            dataset: ResourceName::dataset_string(tenant, row.dataset),
        };
        let pending = Pending::new(Subject::analysis_requested(tenant), event_id, &requested);
        self.write(&mut tx, scope, &row, &[pending], None).await?;
        tx.commit().await?;
        JobMetrics::of(MetricKind::Analysis).entered(MetricState::Queued);
        self.usage.report(tenant).await;
        Ok(row)
    }

    /// Writes `job.updated` for `row`, the `extra` events and the audit entry, in `tx`.
    async fn write(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        scope: &TenantScope,
        row: &JobRow,
        extra: &[Pending],
        audit_entry: Option<AuditEntry>,
    ) -> Result<(), AnalysisError> {
        let tenant = scope.tenant();
        let (event_id, meta) = event_meta(tenant, &row.request_id_string());
        let job = row.to_proto(tenant);
        let updated = JobUpdated {
            meta: Some(meta),
            job: job.name,
            kind: job.kind,
            state: job.state,
            progress: job.progress,
            step: job.step,
            error_code: job.error.map(|e| e.code).unwrap_or_default(),
            target: job.target,
            output: job.output,
            version: u64::try_from(row.version).unwrap_or_default(),
        };
        let subject = Subject::job_updated(tenant);
        self.outbox
            .enqueue(tx, &subject, &updated, &msg_id(&subject, event_id))
            .await?;
        for pending in extra {
            self.outbox
                .enqueue_bytes(tx, &pending.subject, &pending.payload, &pending.msg_id)
                .await?;
        }
        if let Some(entry) = audit_entry {
            audit::enqueue(&self.outbox, tx, entry).await?;
        }
        Ok(())
    }

    /// Applies `change` to the tenant's job `id` if `guard` allows it, writing `job.updated`, the
    /// `extra` events and the audit entry in the same transaction; `None` (and nothing written) if
    /// the job is not in a state the guard allows, or does not exist.
    pub(crate) async fn transition(
        &self,
        scope: &TenantScope,
        id: Uuid,
        guard: Guard,
        change: Change,
        extra: &[Pending],
        audit_entry: Option<AuditEntry>,
    ) -> Result<Option<JobRow>, AnalysisError> {
        let from: Vec<i16> = guard.from.iter().map(|s| state_code(*s)).collect();
        let (error_code, error_message) = match change.error {
            Some((code, message)) => (Some(code), Some(message)),
            None => (None, None),
        };
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "UPDATE jobs SET
                state = COALESCE($3, state),
                step = COALESCE($4, step),
                step_index = COALESCE($5, step_index),
                progress = COALESCE($6, progress),
                error_code = COALESCE($7, error_code),
                error_message = COALESCE($8, error_message),
                output = COALESCE($9, output),
                outputs_ready = outputs_ready OR $10,
                row_count = COALESCE($11, row_count),
                version = version + 1,
                updated_at = now(),
                started_at = CASE WHEN $3 = $14 THEN COALESCE(started_at, now()) ELSE started_at END,
                ended_at = CASE WHEN $3 = ANY($15) THEN now() ELSE ended_at END
             WHERE tenant = $1 AND id = $2 AND state = ANY($12)
               AND ($13::boolean IS NULL OR outputs_ready = $13)
             RETURNING {COLUMNS}"
        ))
        .bind(scope.as_str())
        .bind(id)
        .bind(change.state.map(state_code))
        .bind(change.step.map(|s| s.name))
        .bind(change.step.map(|s| i32::try_from(s.index).unwrap_or_default()))
        .bind(change.progress.or(change.step.map(|s| s.progress)))
        .bind(error_code)
        .bind(error_message)
        .bind(change.output)
        .bind(change.outputs_ready)
        .bind(change.row_count.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
        .bind(&from)
        .bind(guard.outputs_ready)
        .bind(state_code(JobState::Running))
        .bind(
            [JobState::Succeeded, JobState::Failed, JobState::Cancelled]
                .map(state_code)
                .to_vec(),
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        self.write(&mut tx, scope, &row, extra, audit_entry).await?;
        tx.commit().await?;
        if let Some(state) = change.state {
            record_transition(&row, state);
            self.usage.report(scope.tenant()).await;
        }
        Ok(Some(row))
    }

    /// The tenant's job `id`, if any.
    pub(crate) async fn get(
        &self,
        scope: &TenantScope,
        id: Uuid,
    ) -> Result<Option<JobRow>, AnalysisError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let row = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE tenant = $1 AND id = $2"
        ))
        .bind(scope.as_str())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Up to `limit` of the tenant's jobs older than `before` (ids are UUIDv7), newest first, only
    /// those of `dataset` and in `states` if given.
    pub(crate) async fn list(
        &self,
        scope: &TenantScope,
        dataset: Option<Uuid>,
        states: &[i16],
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<JobRow>, AnalysisError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let rows = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM jobs
             WHERE tenant = $1 AND ($2::uuid IS NULL OR dataset = $2)
               AND (cardinality($3::smallint[]) = 0 OR state = ANY($3))
               AND ($4::uuid IS NULL OR id < $4)
             ORDER BY id DESC LIMIT $5"
        ))
        .bind(scope.as_str())
        .bind(dataset)
        .bind(states)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Records an audit event on its own (committed before the caller answers).
    pub(crate) async fn audit(&self, entry: AuditEntry) -> Result<(), AnalysisError> {
        let mut tx = self.pool.begin().await?;
        audit::enqueue(&self.outbox, &mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}
