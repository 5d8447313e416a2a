//! Large jobs' folds as work items shared by every replica.
//!
//! A job with at least `work.fold_fanout_min_rows` rows is planned by the replica that took its
//! `analysis.requested` (the coordinator): it reads and featurizes the dataset (so a dataset that
//! cannot be trained fails the job up front), records the fan-out and writes one
//! `analysis.fold.requested` per fold to the outbox in the same transaction, frees its training
//! slot and waits, keeping its delivery alive, until every fold is stored.
//!
//! Any replica's `analysis-folds` consumer trains a fold: it waits for its tenant's turn for a
//! training slot, reads the dataset from ingest, plans the cross-validation as the coordinator did
//! (`automl::plan_folds` is a function of the data and the spec), trains that fold's models on the
//! other folds' rows (`automl::train_fold`), stores the held-out rows' predictions encrypted
//! (`jobs/<job>/folds/<fold>`) and records the fold with its audit event. A fold cut off by a crash
//! is redelivered after the ack wait; a recorded fold is not trained again. The coordinator (or, if
//! it died, the replica its redelivered request lands on) ensembles the folds (`automl::combine`),
//! stores the outputs as a small job does, and deletes the fold objects.

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use sqlx::PgPool;
use trustmesh_bus::audit::{self, AuditEntry};
use trustmesh_bus::schema::rls::tenant_tx;
use trustmesh_bus::{Delivery, Handler, HandlerError, Outbox};
use trustmesh_events::{Service, Subject};
use trustmesh_proto::events::v1::{ActorType, AnalysisFoldRequested};
use trustmesh_quality::automl::{FoldModel, FoldOutput, FoldPlan, ModelKind};
use trustmesh_store::{EncryptedError, ObjectKey, TenantScope};
use uuid::Uuid;

use super::repo::{JobRow, Pending, event_meta};
use super::worker::{AnalysisWorker, Loaded, Stop, with_heartbeat};
use super::{ResourceName, is_terminal};
use crate::error::AnalysisError;
use crate::fairness::Slot;
use crate::training::{self, Prepared, Trained};

/// How often the coordinator looks for stored folds.
const POLL: Duration = Duration::from_millis(250);

/// One model's predictions of a fold's held-out rows.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredFoldModel {
    /// `trustmesh_quality::automl::ModelKind`: 1 linear, 2 trees, 3 kNN.
    #[prost(uint32, tag = "1")]
    kind: u32,
    /// Held-out rows × classes, row-major.
    #[prost(double, repeated, tag = "2")]
    values: Vec<f64>,
    #[prost(double, tag = "3")]
    seconds: f64,
    #[prost(bool, tag = "4")]
    converged: bool,
}

/// A fold's out-of-sample predictions, stored encrypted (they are derived from customer rows).
#[derive(Clone, PartialEq, prost::Message)]
struct StoredFold {
    #[prost(uint32, tag = "1")]
    fold: u32,
    /// Held-out rows, ascending.
    #[prost(uint64, repeated, tag = "2")]
    rows: Vec<u64>,
    #[prost(message, repeated, tag = "3")]
    models: Vec<StoredFoldModel>,
}

fn kind_code(kind: ModelKind) -> u32 {
    match kind {
        ModelKind::Linear => 1,
        ModelKind::GradientBoostedTrees => 2,
        ModelKind::Knn => 3,
    }
}

fn kind_of(code: u32) -> Option<ModelKind> {
    ModelKind::ALL.into_iter().find(|k| kind_code(*k) == code)
}

impl StoredFold {
    fn of(output: &FoldOutput) -> Self {
        Self {
            fold: u32::try_from(output.fold).unwrap_or(u32::MAX),
            rows: output.rows.iter().map(|&r| r as u64).collect(),
            models: output
                .models
                .iter()
                .map(|m| StoredFoldModel {
                    kind: kind_code(m.kind),
                    values: m.values.clone(),
                    seconds: m.seconds,
                    converged: m.converged,
                })
                .collect(),
        }
    }

    fn into_output(self) -> Result<FoldOutput, AnalysisError> {
        let corrupt = || AnalysisError::Corrupt("stored fold");
        Ok(FoldOutput {
            fold: usize::try_from(self.fold).map_err(|_| corrupt())?,
            rows: self
                .rows
                .into_iter()
                .map(|r| usize::try_from(r).map_err(|_| corrupt()))
                .collect::<Result<_, _>>()?,
            models: self
                .models
                .into_iter()
                .map(|m| {
                    Ok(FoldModel {
                        kind: kind_of(m.kind).ok_or_else(corrupt)?,
                        values: m.values,
                        seconds: m.seconds,
                        converged: m.converged,
                    })
                })
                .collect::<Result<_, AnalysisError>>()?,
        })
    }
}

/// The object key of fold `fold` of job `id`.
fn fold_key(id: Uuid, fold: u32) -> Result<ObjectKey, AnalysisError> {
    ObjectKey::new(format!("jobs/{id}/folds/{fold}"))
        .map_err(|e| AnalysisError::Objects(EncryptedError::InvalidObjectId(e)))
}

/// `job_fold_plans` and `job_folds`: which jobs fanned out, and which folds are stored.
#[derive(Debug, Clone)]
pub(crate) struct FoldRepo {
    pool: PgPool,
    outbox: Outbox,
}

impl FoldRepo {
    pub(crate) fn new(pool: PgPool, outbox: Outbox) -> Self {
        Self { pool, outbox }
    }

    /// Records that job `id` trains `folds` folds as work items and writes `items` to the outbox in
    /// the same transaction, once: `false` (nothing written) if the fan-out was recorded before.
    async fn fan_out(
        &self,
        scope: &TenantScope,
        id: Uuid,
        folds: u32,
        items: &[Pending],
    ) -> Result<bool, AnalysisError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let inserted = sqlx::query(
            "INSERT INTO job_fold_plans (tenant, job, fold_count) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(scope.as_str())
        .bind(id)
        .bind(i32::try_from(folds).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            for item in items {
                item.enqueue(&self.outbox, &mut tx).await?;
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Records fold `fold` of job `id` as stored, with `entry` in the audit log, once: `false`
    /// (nothing written) if it was recorded before.
    async fn record(
        &self,
        scope: &TenantScope,
        id: Uuid,
        fold: u32,
        entry: AuditEntry,
    ) -> Result<bool, AnalysisError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let inserted = sqlx::query(
            "INSERT INTO job_folds (tenant, job, fold) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(scope.as_str())
        .bind(id)
        .bind(i32::try_from(fold).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            audit::enqueue(&self.outbox, &mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// The stored folds of job `id`, ascending.
    async fn done(&self, scope: &TenantScope, id: Uuid) -> Result<Vec<u32>, AnalysisError> {
        let mut tx = tenant_tx(&self.pool, scope.as_str()).await?;
        let folds: Vec<i32> = sqlx::query_scalar(
            "SELECT fold FROM job_folds WHERE tenant = $1 AND job = $2 ORDER BY fold",
        )
        .bind(scope.as_str())
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(folds
            .into_iter()
            .filter_map(|f| u32::try_from(f).ok())
            .collect())
    }
}

impl AnalysisWorker {
    /// Trains `prepared`'s folds as work items of any replica (see the module docs) and ensembles
    /// them; `slot` is freed once the folds are written.
    pub(super) async fn train_spread(
        &self,
        delivery: &Delivery,
        scope: &TenantScope,
        row: &JobRow,
        prepared: Prepared,
        slot: Slot,
    ) -> Result<(Prepared, Trained), Stop> {
        let tenant = scope.tenant();
        let (prepared, plan) = with_heartbeat(
            delivery,
            tokio::task::spawn_blocking(move || {
                training::plan_folds(&prepared).map(|plan| (prepared, plan))
            }),
        )
        .await
        .map_err(|e| Stop::Retry(HandlerError::retryable(e)))??;
        let folds = u32::try_from(plan.folds()).unwrap_or(u32::MAX);
        let job = ResourceName::job_string(tenant, row.id);
        let items: Vec<Pending> = (0..folds)
            .map(|fold| {
                let (event_id, meta) = event_meta(tenant, &row.request_id_string());
                let item = AnalysisFoldRequested {
                    meta: Some(meta),
                    job: job.clone(),
                    fold_index: fold,
                    fold_count: folds,
                    plan_id: ResourceName::dataset_string(tenant, row.dataset),
                };
                Pending::new(Subject::analysis_fold_requested(tenant), event_id, &item)
            })
            .collect();
        if self.folds.fan_out(scope, row.id, folds, &items).await? {
            tracing::info!(folds, "The job's folds are out as work items.");
        }
        drop(slot);
        let outputs = with_heartbeat(delivery, self.collect_folds(scope, row, folds)).await?;
        with_heartbeat(
            delivery,
            tokio::task::spawn_blocking(move || {
                training::combine(&prepared, plan, outputs).map(|trained| (prepared, trained))
            }),
        )
        .await
        .map_err(|e| Stop::Retry(HandlerError::retryable(e)))?
        .map_err(Stop::from)
    }

    /// Waits until every fold of job `row` is stored, then reads them; `Cancelled` if the job ends
    /// meanwhile (cancelled, or failed by a fold).
    async fn collect_folds(
        &self,
        scope: &TenantScope,
        row: &JobRow,
        folds: u32,
    ) -> Result<Vec<FoldOutput>, Stop> {
        loop {
            if self.folds.done(scope, row.id).await?.len() >= folds as usize {
                break;
            }
            match self.repo.get(scope, row.id).await? {
                Some(now) if !is_terminal(now.state) => {}
                _ => return Err(Stop::Cancelled),
            }
            tokio::time::sleep(POLL).await;
        }
        let mut outputs = Vec::new();
        for fold in 0..folds {
            let bytes = self
                .objects
                .get(scope, &fold_key(row.id, fold)?)
                .await
                .map_err(AnalysisError::from)?;
            let stored = StoredFold::decode(bytes.as_ref())
                .map_err(|_| AnalysisError::Corrupt("stored fold"))?;
            outputs.push(stored.into_output()?);
        }
        Ok(outputs)
    }

    /// Deletes job `id`'s fold objects once its outputs are stored (logged, not fatal: a tenant's
    /// or dataset's deletion removes what is left).
    pub(super) async fn forget_folds(&self, scope: &TenantScope, id: Uuid) {
        let Ok(done) = self.folds.done(scope, id).await else {
            return;
        };
        for fold in done {
            let deleted = match fold_key(id, fold) {
                Ok(key) => self
                    .objects
                    .delete(scope, &key)
                    .await
                    .map_err(AnalysisError::from),
                Err(e) => Err(e),
            };
            if let Err(error) = deleted {
                tracing::warn!(error = %error, fold, "Could not delete a stored fold.");
            }
        }
    }

    /// Trains fold `event.fold_index` of its job and stores it (see the module docs).
    async fn train_one_fold(
        &self,
        delivery: &Delivery,
        scope: &TenantScope,
        row: &JobRow,
        fold: u32,
    ) -> Result<(), Stop> {
        let _slot = with_heartbeat(delivery, self.gate.acquire(scope.as_str())).await;
        let spec = self.repo.open_spec(scope, row).await?;
        let Loaded {
            plan,
            columns,
            rows,
            ..
        } = self.load(delivery, scope, row, &spec).await?;
        let index = fold as usize;
        let output = with_heartbeat(
            delivery,
            tokio::task::spawn_blocking(move || {
                let prepared = training::prepare(plan, &columns, rows)?;
                let plan: FoldPlan = training::plan_folds(&prepared)?;
                training::train_fold(&prepared, &plan, index)
            }),
        )
        .await
        .map_err(|e| Stop::Retry(HandlerError::retryable(e)))??;
        self.objects
            .put(
                scope,
                &fold_key(row.id, fold)?,
                "fold predictions",
                Bytes::from(StoredFold::of(&output).encode_to_vec()),
            )
            .await
            .map_err(AnalysisError::from)?;
        let tenant = scope.tenant();
        let job = ResourceName::job_string(tenant, row.id);
        let mut entry = AuditEntry::new(Service::Analysis, tenant.clone(), "analysis.fold", job);
        entry.actor_type = ActorType::Service;
        Service::Analysis.as_str().clone_into(&mut entry.actor_id);
        entry.request_id = row.request_id_string();
        entry.records_affected = output.rows.len() as u64;
        self.folds.record(scope, row.id, fold, entry).await?;
        Ok(())
    }
}

/// The `analysis-folds` handler: one fold of a large job.
#[derive(Debug, Clone)]
pub(crate) struct FoldWorker(pub(crate) AnalysisWorker);

impl FoldWorker {
    async fn apply(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let worker = &self.0;
        let event: AnalysisFoldRequested = delivery.decode()?;
        let tenant = delivery
            .tenant()
            .ok_or_else(|| HandlerError::poison("the subject carries no valid tenant"))?;
        if worker.left_to_dedicated(&tenant) {
            return Ok(());
        }
        let name = ResourceName::job(&event.job)
            .map_err(|_| HandlerError::poison("the job is not a job name"))?;
        if name.tenant != tenant {
            return Err(HandlerError::poison("the job belongs to another tenant"));
        }
        if event.fold_index >= event.fold_count {
            return Err(HandlerError::poison("the fold is not a fold of the job"));
        }
        let retry = |e: AnalysisError| HandlerError::retryable(trustmesh_runtime::cause_chain(&e));
        let scope = TenantScope::new(tenant);
        let Some(row) = worker.repo.get(&scope, name.id).await.map_err(retry)? else {
            return Ok(());
        };
        if is_terminal(row.state) || row.outputs_ready {
            return Ok(());
        }
        let done = worker.folds.done(&scope, row.id).await.map_err(retry)?;
        if done.contains(&event.fold_index) {
            tracing::info!("The fold is already stored; nothing to do.");
            return Ok(());
        }
        match worker
            .train_one_fold(&delivery, &scope, &row, event.fold_index)
            .await
        {
            Ok(()) => {
                tracing::info!(fold = event.fold_index, "The fold is trained and stored.");
                Ok(())
            }
            Err(Stop::Cancelled) => Ok(()),
            Err(Stop::Failed(failure)) => worker.fail(&scope, &row, failure).await,
            Err(Stop::Retry(error)) => Err(error),
        }
    }
}

impl Handler for FoldWorker {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.apply(delivery).await
    }
}
