//! The `analysis-requested` consumer: runs a job (read rows from ingest, train AutoML's K-fold
//! cross-validated models on them, store encrypted outputs with the model summary), then writes `analysis.completed` with the job's change. A job whose
//! outputs are stored, or that ended, is not run again, so redeliveries are harmless; a delivery
//! cut off mid-job (a crash) is redelivered and reruns the job from the start.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use tonic::Code;
use trustmesh_bus::audit::AuditEntry;
use trustmesh_bus::{Delivery, Handler, HandlerError};
use trustmesh_events::{Service, Subject, TenantId};
use trustmesh_proto::events::v1::{
    ActorType, AnalysisCompleted, AnalysisFailed, AnalysisRequested, Outcome,
};
use trustmesh_proto::v1::column_data::Values;
use trustmesh_proto::v1::{ColumnData, DatasetState, JobState, ReadRowsRequest};
use trustmesh_store::{EncryptedObjects, TenantScope};

use super::folds::FoldRepo;
use super::repo::{ACTIVE, Change, Guard, JobRepo, JobRow, Pending, event_meta};
use super::{JobSpec, ResourceName, Step, is_terminal, steps};
use crate::error::AnalysisError;
use crate::fairness::TenantGate;
use crate::ingest::IngestClient;
use crate::outputs::{StoredOutputs, outputs_key};
use crate::placement::Placement;
use crate::training::{self, JobFailure, Plan};

/// Rows per `ReadRows` message.
const READ_BATCH_ROWS: u32 = 16384;

/// Why a run stopped early.
pub(super) enum Stop {
    /// The job cannot succeed: it becomes FAILED.
    Failed(JobFailure),
    /// Try again later.
    Retry(HandlerError),
    /// The job was cancelled (or finished elsewhere) meanwhile.
    Cancelled,
}

impl From<JobFailure> for Stop {
    fn from(failure: JobFailure) -> Self {
        Self::Failed(failure)
    }
}

impl From<AnalysisError> for Stop {
    fn from(error: AnalysisError) -> Self {
        Self::Retry(HandlerError::retryable(trustmesh_runtime::cause_chain(
            &error,
        )))
    }
}

/// What a failed call to ingest means for the job.
fn ingest_failure(status: &tonic::Status) -> Stop {
    let failed = |code, message: &str| Stop::Failed(JobFailure::new(code, message));
    match status.code() {
        Code::NotFound => failed("DATASET_NOT_FOUND", "the dataset does not exist"),
        Code::FailedPrecondition => {
            failed("DATASET_NOT_READY", "the dataset is not ready for analysis")
        }
        Code::InvalidArgument | Code::OutOfRange => failed(
            "DATASET_UNREADABLE",
            "the dataset could not be read for analysis",
        ),
        Code::PermissionDenied | Code::Unauthenticated => failed(
            "DATASET_ACCESS_DENIED",
            "the analysis service may not read the dataset",
        ),
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::AlreadyExists
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => Stop::Retry(HandlerError::retryable(format!(
            "ingest answered {:?}",
            status.code()
        ))),
    }
}

/// How often a long step tells the server the delivery is still being worked on (well within the
/// consumer's 30 s ack wait).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Awaits `work`, sending a progress ack every [`HEARTBEAT`] so the delivery is not redelivered
/// while a long step (featurizing, training) runs.
pub(super) async fn with_heartbeat<T>(delivery: &Delivery, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticker.tick() => {
                if let Err(error) = delivery.in_progress().await {
                    tracing::warn!(error = %error, "Could not extend the delivery's ack wait.");
                }
            }
        }
    }
}

/// Appends `batch`'s values of one column to `into` (same column, same type).
fn append(into: &mut ColumnData, batch: ColumnData, rows: usize) -> Result<(), Stop> {
    let mismatch = || {
        Stop::Failed(JobFailure::new(
            "DATASET_UNREADABLE",
            "a column changed type between batches",
        ))
    };
    if batch.valid.is_empty() {
        into.valid.extend(std::iter::repeat_n(true, rows));
    } else {
        into.valid.extend(batch.valid);
    }
    match (&mut into.values, batch.values) {
        (slot @ None, values) => *slot = values,
        (Some(Values::Floats(a)), Some(Values::Floats(b))) => a.values.extend(b.values),
        (Some(Values::Integers(a)), Some(Values::Integers(b))) => a.values.extend(b.values),
        (Some(Values::Strings(a)), Some(Values::Strings(b))) => a.values.extend(b.values),
        (Some(Values::Booleans(a)), Some(Values::Booleans(b))) => a.values.extend(b.values),
        (Some(Values::DatetimesMicros(a)), Some(Values::DatetimesMicros(b))) => {
            a.values.extend(b.values);
        }
        (Some(Values::Images(a)), Some(Values::Images(b))) => a.values.extend(b.values),
        (Some(Values::FloatLists(a)), Some(Values::FloatLists(b)))
            if a.list_length == b.list_length =>
        {
            a.values.extend(b.values);
        }
        (Some(Values::StringLists(a)), Some(Values::StringLists(b))) => a.values.extend(b.values),
        (Some(_), _) => return Err(mismatch()),
    }
    Ok(())
}

/// The `analysis-requested` handler.
#[derive(Debug, Clone)]
pub(crate) struct AnalysisWorker {
    pub(crate) repo: JobRepo,
    pub(crate) objects: EncryptedObjects,
    /// Ingest, called with the mesh's service credential.
    pub(crate) ingest: IngestClient,
    /// This replica's training slots, shared by tenants in turn.
    pub(crate) gate: TenantGate,
    /// Fold work items and results of large jobs.
    pub(crate) folds: FoldRepo,
    /// Jobs with at least this many rows fan their folds out (`0`: never).
    pub(crate) fold_fanout_min_rows: usize,
    /// Tenants whose work dedicated replicas take: left to them.
    pub(crate) placement: Placement,
}

/// A dataset read for a job: the plan of its columns, the columns, its rows and name.
pub(super) struct Loaded {
    pub(super) plan: Plan,
    pub(super) columns: Vec<ColumnData>,
    pub(super) rows: usize,
    pub(super) dataset: String,
    /// The image and text checks' results (unreadable images are marked missing in `columns`).
    pub(super) modality: crate::modality::ModalityResults,
}

impl AnalysisWorker {
    /// Moves the job to `step` (RUNNING); `Cancelled` if it is no longer active.
    async fn advance(&self, scope: &TenantScope, row: &JobRow, step: Step) -> Result<(), Stop> {
        let change = Change {
            state: Some(JobState::Running),
            step: Some(step),
            ..Change::default()
        };
        let guard = Guard {
            from: ACTIVE,
            outputs_ready: Some(false),
        };
        match self
            .repo
            .transition(scope, row.id, guard, change, &[], None)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(Stop::Cancelled),
        }
    }

    /// The job's dataset (checked ready) and its planned columns, read whole from ingest.
    pub(super) async fn load(
        &self,
        delivery: &Delivery,
        scope: &TenantScope,
        row: &JobRow,
        spec: &JobSpec,
    ) -> Result<Loaded, Stop> {
        let dataset_name = ResourceName::dataset_string(scope.tenant(), row.dataset);
        let dataset = self
            .ingest
            .get_dataset(&dataset_name)
            .await
            .map_err(|s| ingest_failure(&s))?;
        if dataset.state() != DatasetState::Ready {
            return Err(JobFailure::new(
                "DATASET_NOT_READY",
                "the dataset is not ready for analysis",
            )
            .into());
        }
        let schema = dataset.schema.unwrap_or_default();
        let plan = training::plan(&schema, spec)?;
        let columns = self.read(&dataset_name, &plan, delivery).await?;
        let rows = usize::try_from(dataset.row_count).unwrap_or(usize::MAX);
        let label = plan.label.clone();
        let checks = move || crate::modality::run(&schema, &label, columns, rows);
        let (columns, modality) = with_heartbeat(delivery, tokio::task::spawn_blocking(checks))
            .await
            .map_err(|e| Stop::Retry(HandlerError::retryable(e)))?;
        Ok(Loaded {
            plan,
            columns,
            rows,
            dataset: dataset_name,
            modality,
        })
    }

    /// Whether `tenant`'s work is left to its dedicated replicas.
    pub(super) fn left_to_dedicated(&self, tenant: &TenantId) -> bool {
        self.placement.left_to_dedicated(tenant)
    }

    /// Reads the planned columns of the dataset, whole.
    async fn read(
        &self,
        dataset: &str,
        plan: &Plan,
        delivery: &Delivery,
    ) -> Result<Vec<ColumnData>, Stop> {
        let request = ReadRowsRequest {
            name: dataset.to_owned(),
            columns: plan.columns.clone(),
            batch_rows: READ_BATCH_ROWS,
            ..ReadRowsRequest::default()
        };
        let mut stream = self
            .ingest
            .read_rows(request)
            .await
            .map_err(|s| ingest_failure(&s))?;
        let mut columns: Vec<ColumnData> = plan
            .columns
            .iter()
            .map(|name| ColumnData {
                name: name.clone(),
                ..ColumnData::default()
            })
            .collect();
        while let Some(message) = stream.next().await {
            let batch = message
                .map_err(|s| ingest_failure(&s))?
                .batch
                .unwrap_or_default();
            let rows = usize::try_from(batch.row_count).unwrap_or_default();
            if batch.columns.len() != columns.len() {
                return Err(Stop::Failed(JobFailure::new(
                    "DATASET_UNREADABLE",
                    "a batch of rows is missing columns",
                )));
            }
            for (into, column) in columns.iter_mut().zip(batch.columns) {
                append(into, column, rows)?;
            }
            if let Err(error) = delivery.in_progress().await {
                tracing::warn!(error = %error, "Could not extend the delivery's ack wait.");
            }
        }
        Ok(columns)
    }

    async fn run(
        &self,
        delivery: &Delivery,
        scope: &TenantScope,
        row: &JobRow,
    ) -> Result<u64, Stop> {
        let tenant = scope.tenant();
        // The job stays QUEUED until its tenant's turn for a training slot of this replica.
        let slot = with_heartbeat(delivery, self.gate.acquire(scope.as_str())).await;
        self.advance(scope, row, steps::READ_ROWS).await?;
        let spec = self.repo.open_spec(scope, row).await?;
        let Loaded {
            plan,
            columns,
            rows,
            dataset: dataset_name,
            modality,
        } = self.load(delivery, scope, row, &spec).await?;

        self.advance(scope, row, steps::FEATURIZE).await?;
        let prepared = with_heartbeat(
            delivery,
            tokio::task::spawn_blocking(move || training::prepare(plan, &columns, rows)),
        )
        .await
        .map_err(|e| Stop::Retry(HandlerError::retryable(e)))??;

        self.advance(scope, row, steps::TRAIN_FOLDS).await?;
        let started = std::time::Instant::now();
        let spread = self.fold_fanout_min_rows > 0 && rows >= self.fold_fanout_min_rows;
        let (prepared, trained) = if spread {
            self.train_spread(delivery, scope, row, prepared, slot)
                .await?
        } else {
            let trained = with_heartbeat(
                delivery,
                tokio::task::spawn_blocking(move || {
                    training::train(&prepared).map(|trained| (prepared, trained))
                }),
            )
            .await
            .map_err(|e| Stop::Retry(HandlerError::retryable(e)))??;
            drop(slot);
            trained
        };
        tracing::info!(
            rows,
            models = trained.summary.models.len(),
            seconds = started.elapsed().as_secs_f64(),
            "The models are trained."
        );

        self.advance(scope, row, steps::STORE_OUTPUTS).await?;
        let stored = StoredOutputs {
            row_count: rows as u64,
            labels: trained.labels,
            pred_probs: trained.pred_probs,
            embedding_dim: trained.embedding_dim,
            embeddings: trained.embeddings,
            class_names: trained.class_names,
            row_ids: prepared.row_ids,
            metrics: Some(trained.metrics),
            model_summary: Some(trained.summary),
            issue_types: spec.issue_types,
            task_type: i32::from(row.task_type),
            ..modality.into_stored(rows)
        };
        let key = outputs_key(row.id)?;
        self.objects
            .put(
                scope,
                &key,
                "model outputs",
                Bytes::from(stored.encode_to_vec()),
            )
            .await
            .map_err(AnalysisError::from)?;

        let job_name = ResourceName::job_string(tenant, row.id);
        let (event_id, meta) = event_meta(tenant, &row.request_id_string());
        let completed = AnalysisCompleted {
            meta: Some(meta),
            job: job_name.clone(),
            dataset: dataset_name,
            row_count: stored.row_count,
        };
        let pending = Pending::new(Subject::analysis_completed(tenant), event_id, &completed);
        let mut entry =
            AuditEntry::new(Service::Analysis, tenant.clone(), "analysis.run", job_name);
        entry.actor_type = ActorType::Service;
        Service::Analysis.as_str().clone_into(&mut entry.actor_id);
        entry.request_id = row.request_id_string();
        entry.records_affected = stored.row_count;
        let change = Change {
            state: Some(JobState::Running),
            step: Some(steps::DETECT_ISSUES),
            outputs_ready: true,
            row_count: Some(stored.row_count),
            ..Change::default()
        };
        let guard = Guard {
            from: ACTIVE,
            outputs_ready: Some(false),
        };
        match self
            .repo
            .transition(scope, row.id, guard, change, &[pending], Some(entry))
            .await?
        {
            Some(_) => {
                if spread {
                    self.forget_folds(scope, row.id).await;
                }
                Ok(stored.row_count)
            }
            None => {
                self.objects
                    .delete(scope, &key)
                    .await
                    .map_err(AnalysisError::from)?;
                Err(Stop::Cancelled)
            }
        }
    }

    /// Marks the job FAILED with `failure`, writing `analysis.failed` and the audit event with it.
    pub(super) async fn fail(
        &self,
        scope: &TenantScope,
        row: &JobRow,
        failure: JobFailure,
    ) -> Result<(), HandlerError> {
        let tenant = scope.tenant();
        let job_name = ResourceName::job_string(tenant, row.id);
        let (event_id, meta) = event_meta(tenant, &row.request_id_string());
        let failed = AnalysisFailed {
            meta: Some(meta),
            job: job_name.clone(),
            dataset: ResourceName::dataset_string(tenant, row.dataset),
            error_code: failure.code.to_owned(),
        };
        let pending = Pending::new(Subject::analysis_failed(tenant), event_id, &failed);
        let mut entry =
            AuditEntry::new(Service::Analysis, tenant.clone(), "analysis.run", job_name);
        entry.actor_type = ActorType::Service;
        Service::Analysis.as_str().clone_into(&mut entry.actor_id);
        entry.request_id = row.request_id_string();
        entry.outcome = Outcome::Error;
        failure.code.clone_into(&mut entry.reason);
        tracing::info!(job.error_code = failure.code, "The analysis job failed.");
        let change = Change {
            state: Some(JobState::Failed),
            error: Some((failure.code, failure.message)),
            ..Change::default()
        };
        let guard = Guard {
            from: ACTIVE,
            outputs_ready: None,
        };
        self.repo
            .transition(scope, row.id, guard, change, &[pending], Some(entry))
            .await
            .map_err(|e| HandlerError::retryable(trustmesh_runtime::cause_chain(&e)))?;
        Ok(())
    }

    async fn apply(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let event: AnalysisRequested = delivery.decode()?;
        let tenant = delivery
            .tenant()
            .ok_or_else(|| HandlerError::poison("the subject carries no valid tenant"))?;
        if self.left_to_dedicated(&tenant) {
            tracing::debug!("The tenant's jobs run on its dedicated replicas.");
            return Ok(());
        }
        let name = ResourceName::job(&event.job)
            .map_err(|_| HandlerError::poison("the job is not a job name"))?;
        if name.tenant != tenant {
            return Err(HandlerError::poison("the job belongs to another tenant"));
        }
        let scope = TenantScope::new(tenant);
        let row = self
            .repo
            .get(&scope, name.id)
            .await
            .map_err(|e| HandlerError::retryable(trustmesh_runtime::cause_chain(&e)))?;
        let Some(row) = row else {
            tracing::info!("The requested job no longer exists; nothing to do.");
            return Ok(());
        };
        if is_terminal(row.state) || row.outputs_ready {
            tracing::info!("The requested job already ran; nothing to do.");
            return Ok(());
        }
        match self.run(&delivery, &scope, &row).await {
            Ok(rows) => {
                tracing::info!(rows, "The analysis job stored its model outputs.");
                Ok(())
            }
            Err(Stop::Cancelled) => {
                tracing::info!("The analysis job stopped: it is no longer active.");
                Ok(())
            }
            Err(Stop::Failed(failure)) => self.fail(&scope, &row, failure).await,
            Err(Stop::Retry(error)) => Err(error),
        }
    }
}

impl Handler for AnalysisWorker {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.apply(delivery).await
    }
}
