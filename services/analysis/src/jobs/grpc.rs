//! `AnalysisService`: StartAnalysis, Get/List/Cancel/WatchJob and GetModelOutputs (for services).
//!
//! Every call comes through `trustmesh_auth::Authenticator` (no valid API key: UNAUTHENTICATED) and
//! is checked with [`Principal::require`] before anything is read:
//! - `analysis:run` for StartAnalysis and CancelJob, and also for GetJob, ListJobs and WatchJob:
//!   following the scope's definition in `libs/auth` ("start, cancel and watch analyses"), a job's
//!   progress belongs to whoever runs analyses; `reports:read` is for the results.
//! - `reports:read` for GetModelOutputs: the per-row model outputs are analysis results, read by
//!   trust-scoring to build the report.
//!
//! A key of another tenant gets NOT_FOUND, word for word what a missing job gets.
//!
//! StartAnalysis, once the caller is authorized and the arguments are well-formed, asks ingest for
//! the dataset (`GetDataset` with the mesh's service credential, audited by ingest as actor
//! SERVICE): a missing dataset is NOT_FOUND, one not READY FAILED_PRECONDITION, a `label_column` or
//! `column_overrides` column the dataset lacks INVALID_ARGUMENT naming it, and ingest unreachable
//! UNAVAILABLE; nothing is stored for a refused request (no job, no `analysis.requested`). A
//! tenant that already has its quota of jobs QUEUED or RUNNING (`max_concurrent_jobs`,
//! `trustmesh_auth::quota`) gets RESOURCE_EXHAUSTED with a `QuotaFailure` and a `RetryInfo`,
//! audited as DENIED with reason `QUOTA_EXCEEDED`; the count is taken as the job is inserted, under
//! a per-tenant lock, so starts racing each other cannot exceed the quota together.
//!
//! Every call is audited (allowed, denied or failed) through the outbox on
//! `tm.<tenant>.audit.analysis` of the tenant the resource name names, that is the owner's log even
//! when another tenant's key is refused; the actor is the calling key.
//!
//! Dedicated profile: a call on a tenant this replica does not serve (a dedicated tenant's on a
//! shared replica, another tenant's on a dedicated one) is FAILED_PRECONDITION, checked once the
//! caller is authorized and before anything is read or stored ([`Placement::check`]).
//!
//! GetModelOutputs is also a service-to-service call: trust-scoring presents the mesh's service
//! credential (its `mesh.service_credential`) and reads on the tenant's behalf, which
//! [`Principal::require_or_service`] allows on this method only; the read is audited in the
//! tenant's log with actor type SERVICE.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use prost::Message as _;
use tonic::{Request, Response, Status};
use trustmesh_auth::{EffectiveQuota, PageToken, Principal, Scope, page_size};
use trustmesh_bus::audit::AuditEntry;
use trustmesh_events::{Service, TenantId};
use trustmesh_proto::v1::analysis_service_server::AnalysisService;
use trustmesh_proto::v1::{
    CancelJobRequest, Dataset, DatasetState, GetJobRequest, GetModelOutputsRequest,
    GetModelOutputsResponse, Job, JobState, ListJobsRequest, ListJobsResponse,
    StartAnalysisRequest, TaskType, WatchJobRequest,
};
use trustmesh_service_kit::{call_entry_for, request_id, settle};
use trustmesh_store::{EncryptedObjects, TenantScope};
use uuid::Uuid;

use super::changes::{JobChangeReceiver, JobChanges};
use super::repo::{ACTIVE, Change, Guard, JobRepo, JobRow};
use super::{JobSpec, ResourceName, is_terminal, parse_parent};
use crate::error::AnalysisError;
use crate::ingest::IngestClient;
use crate::outputs::{self, StoredOutputs};
use crate::placement::Placement;

/// Default and largest `ListJobs` page.
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 1000;
/// Default cross-validation folds, and the allowed range.
const FOLDS_DEFAULT: u32 = 5;
const FOLDS_RANGE: std::ops::RangeInclusive<u32> = 2..=20;
/// Default kNN neighbours.
const KNN_K_DEFAULT: u32 = 10;
/// How often `WatchJob` looks for changes it was not told of (the job-change listener down).
const WATCH_FALLBACK: Duration = Duration::from_secs(1);
/// Most column names listed when a requested column is not one of the dataset's.
const COLUMNS_LISTED_MAX: usize = 20;
/// Longest client-supplied column name echoed in an error.
const COLUMN_ECHO_MAX: usize = 128;

/// The `AnalysisService` handler.
#[derive(Debug, Clone)]
pub(crate) struct JobsHandler {
    repo: JobRepo,
    objects: EncryptedObjects,
    /// Ingest, asked with the mesh's service credential whether a dataset can be analysed.
    ingest: IngestClient,
    /// The tenants whose calls this replica answers (dedicated profile).
    placement: Placement,
    /// Wakes `WatchJob` streams when their job changes.
    changes: JobChanges,
}

type JobStream = Pin<Box<dyn Stream<Item = Result<Job, Status>> + Send>>;
type OutputsStream = Pin<Box<dyn Stream<Item = Result<GetModelOutputsResponse, Status>> + Send>>;

impl JobsHandler {
    pub(crate) fn new(
        repo: JobRepo,
        objects: EncryptedObjects,
        ingest: IngestClient,
        placement: Placement,
        changes: JobChanges,
    ) -> Self {
        Self {
            repo,
            objects,
            ingest,
            placement,
            changes,
        }
    }

    /// The dataset `name`, from ingest, if it can be analysed: READY. Asked with the mesh's service
    /// credential on the tenant's behalf (the caller was authorized on the tenant before).
    async fn ready_dataset(&self, name: &str) -> Result<Dataset, AnalysisError> {
        let dataset =
            self.ingest
                .get_dataset(name)
                .await
                .map_err(|status| match status.code() {
                    tonic::Code::NotFound => AnalysisError::DatasetNotFound {
                        dataset: name.to_owned(),
                    },
                    code @ (tonic::Code::Ok
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
                    | tonic::Code::InvalidArgument
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::AlreadyExists
                    | tonic::Code::PermissionDenied
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::Aborted
                    | tonic::Code::OutOfRange
                    | tonic::Code::Unimplemented
                    | tonic::Code::Internal
                    | tonic::Code::Unavailable
                    | tonic::Code::DataLoss
                    | tonic::Code::Unauthenticated) => AnalysisError::IngestUnavailable(code),
                })?;
        match dataset.state() {
            DatasetState::Ready => Ok(dataset),
            state @ (DatasetState::Unspecified
            | DatasetState::AwaitingUpload
            | DatasetState::Processing
            | DatasetState::Failed
            | DatasetState::Deleting) => Err(AnalysisError::DatasetNotReady {
                dataset: name.to_owned(),
                state: state.as_str_name(),
            }),
        }
    }

    /// Audits the call and turns the result into the RPC's answer ([`settle`]).
    async fn settle<T>(
        &self,
        entry: Option<AuditEntry>,
        result: Result<(T, u64), AnalysisError>,
    ) -> Result<T, Status> {
        settle(entry, result, |entry| self.repo.audit(entry)).await
    }

    async fn start(
        &self,
        req: StartAnalysisRequest,
        quota: Option<&EffectiveQuota>,
    ) -> Result<Job, AnalysisError> {
        let dataset = ResourceName::parse("dataset", "datasets", &req.dataset)?;
        self.placement.check(&dataset.tenant)?;
        match req.task_type() {
            TaskType::Classification => {}
            TaskType::Unspecified => {
                return Err(AnalysisError::InvalidArgument(
                    "task_type is required".to_owned(),
                ));
            }
            other @ (TaskType::Multilabel | TaskType::Regression | TaskType::Unsupervised) => {
                return Err(AnalysisError::InvalidArgument(format!(
                    "task_type {} is not supported yet; use TASK_TYPE_CLASSIFICATION",
                    other.as_str_name()
                )));
            }
        }
        if req.label_column.is_empty() {
            return Err(AnalysisError::InvalidArgument(
                "label_column is required for classification".to_owned(),
            ));
        }
        let options = req.options.unwrap_or_default();
        let cv_folds = match options.cv_folds {
            0 => FOLDS_DEFAULT,
            n if FOLDS_RANGE.contains(&n) => n,
            _ => {
                return Err(AnalysisError::InvalidArgument(
                    "options.cv_folds must be between 2 and 20".to_owned(),
                ));
            }
        };
        let request_id = match req.request_id.as_str() {
            "" => None,
            id => Some(Uuid::try_parse(id).map_err(|_| {
                AnalysisError::InvalidArgument("request_id must be a UUID".to_owned())
            })?),
        };
        let found = self.ready_dataset(&req.dataset).await?;
        let schema = found.schema.unwrap_or_default();
        let columns: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        check_column("label_column", &req.label_column, &req.dataset, &columns)?;
        for o in &req.column_overrides {
            check_column("column_overrides", &o.column, &req.dataset, &columns)?;
        }
        let spec = JobSpec {
            label_column: req.label_column,
            issue_types: req.issue_types,
            column_overrides: req.column_overrides,
            cv_folds,
            knn_k: match options.knn_k {
                0 => KNN_K_DEFAULT,
                n => n,
            },
            seed: options.seed.unwrap_or_default(),
            preset: options.preset,
        };
        let scope = TenantScope::new(dataset.tenant.clone());
        let task_type = i16::try_from(i32::from(TaskType::Classification)).unwrap_or_default();
        let row = self
            .repo
            .create(&scope, request_id, dataset.id, task_type, &spec, quota)
            .await?;
        Ok(row.to_proto(&dataset.tenant))
    }

    async fn row(&self, name: &ResourceName) -> Result<JobRow, AnalysisError> {
        self.placement.check(&name.tenant)?;
        self.repo
            .get(&TenantScope::new(name.tenant.clone()), name.id)
            .await?
            .ok_or_else(|| AnalysisError::NotFound {
                resource: ResourceName::job_string(&name.tenant, name.id),
            })
    }

    async fn list(
        &self,
        tenant: &TenantId,
        req: &ListJobsRequest,
    ) -> Result<ListJobsResponse, AnalysisError> {
        self.placement.check(tenant)?;
        let size = page_size(req.page_size, PAGE_DEFAULT, PAGE_MAX)?;
        let dataset = match req.dataset.as_str() {
            "" => None,
            name => {
                let dataset = ResourceName::parse("dataset", "datasets", name)?;
                if &dataset.tenant != tenant {
                    return Err(AnalysisError::InvalidArgument(
                        "dataset must be of the parent tenant".to_owned(),
                    ));
                }
                Some(dataset.id)
            }
        };
        let states: Vec<i16> = req
            .states
            .iter()
            .map(|s| i16::try_from(*s).unwrap_or(-1))
            .collect();
        let query = format!("dataset={}&states={states:?}", req.dataset);
        let before = PageToken::decode(&req.page_token, tenant, &query)?
            .map(|cursor| Uuid::try_parse(&cursor))
            .transpose()
            .map_err(|_| AnalysisError::from(trustmesh_auth::PageError::InvalidToken))?;
        let scope = TenantScope::new(tenant.clone());
        let limit = i64::try_from(size + 1).unwrap_or(i64::MAX);
        let mut rows = self
            .repo
            .list(&scope, dataset, &states, before, limit)
            .await?;
        let more = rows.len() > size;
        rows.truncate(size);
        let next_page_token = match rows.last() {
            Some(last) if more => PageToken::encode(tenant, &query, &last.id.to_string()),
            Some(_) | None => String::new(),
        };
        Ok(ListJobsResponse {
            jobs: rows.iter().map(|r| r.to_proto(tenant)).collect(),
            next_page_token,
        })
    }

    async fn cancel(&self, name: &ResourceName) -> Result<Job, AnalysisError> {
        self.placement.check(&name.tenant)?;
        let scope = TenantScope::new(name.tenant.clone());
        let change = Change {
            state: Some(JobState::Cancelled),
            ..Change::default()
        };
        let guard = Guard {
            from: ACTIVE,
            outputs_ready: None,
        };
        match self
            .repo
            .transition(&scope, name.id, guard, change, &[], None)
            .await?
        {
            Some(row) => Ok(row.to_proto(&name.tenant)),
            None => {
                self.row(name).await?;
                Err(AnalysisError::FailedPrecondition(
                    "the job has already finished",
                ))
            }
        }
    }

    async fn outputs(
        &self,
        name: &ResourceName,
        req: &GetModelOutputsRequest,
    ) -> Result<(Vec<GetModelOutputsResponse>, u64), AnalysisError> {
        let row = self.row(name).await?;
        if !row.outputs_ready {
            return Err(AnalysisError::FailedPrecondition(
                "the job has not produced model outputs",
            ));
        }
        let scope = TenantScope::new(name.tenant.clone());
        let plaintext = self
            .objects
            .get(&scope, &outputs::outputs_key(row.id)?)
            .await?;
        let stored = StoredOutputs::decode(plaintext)
            .map_err(|_| AnalysisError::Corrupt("stored model outputs"))?;
        let dataset = ResourceName::dataset_string(&name.tenant, row.dataset);
        let responses = outputs::responses(&stored, dataset, req)?;
        Ok((responses, stored.row_count))
    }
}

/// `column` (named by the request's `field`) if it is one of `dataset`'s `columns`; otherwise
/// INVALID_ARGUMENT naming it and listing the dataset's columns (the first
/// [`COLUMNS_LISTED_MAX`]). The caller may run analyses on the dataset, so may see its columns.
fn check_column(
    field: &str,
    column: &str,
    dataset: &str,
    columns: &[&str],
) -> Result<(), AnalysisError> {
    if columns.contains(&column) {
        return Ok(());
    }
    let mut shown: String = column.chars().take(COLUMN_ECHO_MAX).collect();
    if shown.len() < column.len() {
        shown.push('…');
    }
    let mut listed = columns
        .iter()
        .take(COLUMNS_LISTED_MAX)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if columns.len() > COLUMNS_LISTED_MAX {
        listed.push_str(", …");
    }
    if columns.is_empty() {
        listed.push_str("(none)");
    }
    Err(AnalysisError::InvalidArgument(format!(
        "{field} \"{shown}\" is not a column of {dataset}; its columns are: {listed}"
    )))
}

/// Streams `name`'s job: now, then on every change, until a terminal state.
fn watch(
    repo: JobRepo,
    name: ResourceName,
    first: JobRow,
    changes: JobChangeReceiver,
) -> JobStream {
    let tenant = name.tenant.clone();
    let scope = TenantScope::new(name.tenant);
    let id = name.id;
    let start = (Some(first), None::<i64>, false, changes);
    Box::pin(futures::stream::unfold(
        start,
        move |(mut next, last_version, done, mut changes)| {
            let (repo, scope, tenant) = (repo.clone(), scope.clone(), tenant.clone());
            async move {
                if done {
                    return None;
                }
                loop {
                    let row = match next.take() {
                        Some(row) => row,
                        None => {
                            tokio::select! {
                                () = changes.changed(id) => {}
                                () = tokio::time::sleep(WATCH_FALLBACK) => {}
                            }
                            match repo.get(&scope, id).await {
                                Ok(Some(row)) => row,
                                Ok(None) => {
                                    return Some((
                                        Err(AnalysisError::NotFound {
                                            resource: ResourceName::job_string(&tenant, id),
                                        }
                                        .into()),
                                        (None, last_version, true, changes),
                                    ));
                                }
                                Err(error) => {
                                    return Some((
                                        Err(error.into()),
                                        (None, last_version, true, changes),
                                    ));
                                }
                            }
                        }
                    };
                    if Some(row.version) != last_version {
                        let terminal = is_terminal(row.state);
                        let version = Some(row.version);
                        return Some((
                            Ok(row.to_proto(&tenant)),
                            (None, version, terminal, changes),
                        ));
                    }
                }
            }
        },
    ))
}

#[tonic::async_trait]
impl AnalysisService for JobsHandler {
    async fn start_analysis(
        &self,
        request: Request<StartAnalysisRequest>,
    ) -> Result<Response<Job>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let quota = EffectiveQuota::of(&request).cloned();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::Analysis,
            &principal,
            "analysis.start",
            &req.dataset,
            &request_id,
        );
        let result = async {
            principal.require(Scope::AnalysisRun, "dataset", &req.dataset)?;
            self.start(req, quota.as_ref()).await.map(|job| (job, 1))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::Analysis,
            &principal,
            "jobs.get",
            &req.name,
            &request_id,
        );
        let result = async {
            principal.require(Scope::AnalysisRun, "name", &req.name)?;
            let name = ResourceName::job(&req.name)?;
            let row = self.row(&name).await?;
            Ok((row.to_proto(&name.tenant), 1))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::Analysis,
            &principal,
            "jobs.list",
            &req.parent,
            &request_id,
        );
        let result = async {
            principal.require(Scope::AnalysisRun, "parent", &req.parent)?;
            let tenant = parse_parent(&req.parent)?;
            let listed = self.list(&tenant, &req).await?;
            let n = listed.jobs.len() as u64;
            Ok((listed, n))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<Job>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::Analysis,
            &principal,
            "jobs.cancel",
            &req.name,
            &request_id,
        );
        let result = async {
            principal.require(Scope::AnalysisRun, "name", &req.name)?;
            let name = ResourceName::job(&req.name)?;
            self.cancel(&name).await.map(|job| (job, 1))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::Analysis,
            &principal,
            "jobs.watch",
            &req.name,
            &request_id,
        );
        // Subscribed before the first read, so no change after it is missed.
        let changes = self.changes.subscribe();
        let result = async {
            principal.require(Scope::AnalysisRun, "name", &req.name)?;
            let name = ResourceName::job(&req.name)?;
            let row = self.row(&name).await?;
            Ok(((name, row), 1))
        }
        .await;
        let (name, first) = self.settle(entry, result).await?;
        Ok(Response::new(watch(
            self.repo.clone(),
            name,
            first,
            changes,
        )))
    }

    type GetModelOutputsStream = OutputsStream;

    async fn get_model_outputs(
        &self,
        request: Request<GetModelOutputsRequest>,
    ) -> Result<Response<Self::GetModelOutputsStream>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::Analysis,
            &principal,
            "jobs.outputs.read",
            &req.name,
            &request_id,
        );
        let result = async {
            principal.require_or_service(Scope::ReportsRead, "name", &req.name)?;
            let name = ResourceName::job(&req.name)?;
            self.outputs(&name, &req).await
        }
        .await;
        let responses = self.settle(entry, result).await?;
        let stream: OutputsStream = Box::pin(futures::stream::iter(responses.into_iter().map(Ok)));
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use trustmesh_service_kit::CallError as _;

    use super::*;

    #[test]
    fn an_unknown_column_is_named_with_the_datasets_columns() {
        let columns = ["row_id", "a", "label"];
        assert!(check_column("label_column", "label", "tenants/acme/datasets/x", &columns).is_ok());
        let error =
            check_column("label_column", "lable", "tenants/acme/datasets/x", &columns).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            error.to_string(),
            "label_column \"lable\" is not a column of tenants/acme/datasets/x; its columns are: row_id, a, label"
        );
    }

    #[test]
    fn long_column_lists_and_names_are_cut_short() {
        let names: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
        let columns: Vec<&str> = names.iter().map(String::as_str).collect();
        let long = "x".repeat(1000);
        let message = check_column("label_column", &long, "d", &columns)
            .unwrap_err()
            .to_string();
        assert!(message.contains("c19, …"), "{message}");
        assert!(!message.contains("c20"), "{message}");
        assert!(message.len() < 400, "{message}");
    }
}
