//! The `trust-scoring-analysis` consumer: on `analysis.completed`, reads the job's model outputs
//! from analysis, runs the quality engine's detectors, stores the per-row results (encrypted) and
//! the report, and writes `scores.ready` with it. The report of a job has the job's id, so a
//! redelivery finds it and does nothing.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use trustmesh_bus::audit::AuditEntry;
use trustmesh_bus::{Delivery, Handler, HandlerError};
use trustmesh_events::{Service, TenantId};
use trustmesh_proto::events::v1::{ActorType, AnalysisCompleted, EventMeta, ScoresReady};
use trustmesh_proto::v1::analysis_service_client::AnalysisServiceClient;
use trustmesh_proto::v1::get_model_outputs_response::Payload;
use trustmesh_proto::v1::{
    ClassHealth, GetModelOutputsRequest, IssueSummary, ModelOutputsHeader, Report, RowIssue,
    RowResult,
};
use trustmesh_quality::detectors::{
    DetectorConfig, DetectorInput, IssueReport, IssueType as Check, find_issues,
};
use trustmesh_quality::{Features, PredProbs, QualityError};
use trustmesh_service_kit::calls::mesh_request;
use trustmesh_store::{EncryptedObjects, TenantScope};
use uuid::Uuid;

use super::repo::{NewReport, ReportRepo};
use super::{ResourceName, StoredRows, api_issue_type, checks_for, modality, rows_key};
use crate::error::TrustError;

/// An analysis' model outputs, gathered from its stream.
#[derive(Debug, Default)]
struct Outputs {
    header: ModelOutputsHeader,
    labels: Vec<i32>,
    pred_probs: Vec<f32>,
    embeddings: Vec<f32>,
    /// Row ids (the dataset's id column, or the row index); empty from an older analysis.
    row_ids: Vec<String>,
    /// The modality checks' flags and scores, row-major over `header.modality_checks`.
    modality_flags: Vec<bool>,
    modality_scores: Vec<f64>,
}

fn retry(error: &TrustError) -> HandlerError {
    HandlerError::retryable(trustmesh_runtime::cause_chain(error))
}

/// What a failed call to analysis means for the message.
fn analysis_failure(status: &tonic::Status) -> HandlerError {
    match status.code() {
        Code::NotFound
        | Code::FailedPrecondition
        | Code::InvalidArgument
        | Code::PermissionDenied => HandlerError::poison(format!(
            "analysis refused the model outputs: {:?}",
            status.code()
        )),
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::AlreadyExists
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unauthenticated => {
            HandlerError::retryable(format!("analysis answered {:?}", status.code()))
        }
    }
}

/// The scored rows and the report of one analysis.
struct Scored {
    rows: Vec<RowResult>,
    report: Report,
    flagged: u64,
}

/// Runs the detectors on `outputs` and shapes their results for the API.
fn score(outputs: &Outputs) -> Result<Scored, QualityError> {
    let header = &outputs.header;
    let k = header.class_names.len();
    let labels: Vec<usize> = outputs
        .labels
        .iter()
        .enumerate()
        .map(|(row, l)| {
            usize::try_from(*l).map_err(|_| QualityError::InvalidValue {
                what: "labels",
                row,
                reason: "the row has no label".to_owned(),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut probs: Vec<f64> = outputs.pred_probs.iter().map(|p| f64::from(*p)).collect();
    for row in probs.chunks_mut(k.max(1)) {
        let sum: f64 = row.iter().sum();
        if sum > 0.0 {
            row.iter_mut().for_each(|p| *p /= sum);
        }
    }
    let pred_probs = PredProbs::new(probs, k)?;
    let dim = usize::try_from(header.embedding_dim).unwrap_or_default();
    let features = match dim {
        0 => None,
        d => Some(Features::with_missing(outputs.embeddings.clone(), d)?),
    };
    let config = DetectorConfig {
        issue_types: checks_for(&header.issue_types),
        ..DetectorConfig::default()
    };
    let input = DetectorInput {
        labels: Some(&labels),
        pred_probs: Some(&pred_probs),
        features: features.as_ref(),
    };
    let found = find_issues(&input, &config)?;
    let mut rows = row_results(&found, &labels, &header.class_names, &outputs.row_ids);
    modality::add_to_rows(
        &mut rows,
        header,
        &outputs.modality_flags,
        &outputs.modality_scores,
    );
    let flagged = rows
        .iter()
        .filter(|r| r.issues.iter().any(|i| i.flagged))
        .count() as u64;
    let mut report = report(header, &found, &labels);
    report
        .issue_summaries
        .extend(modality::summaries(header, found.n));
    report.analyzed_row_count = report
        .analyzed_row_count
        .saturating_sub(header.not_analyzed_rows.len() as u64);
    Ok(Scored {
        rows,
        report,
        flagged,
    })
}

fn row_results(
    found: &IssueReport,
    labels: &[usize],
    class_names: &[String],
    row_ids: &[String],
) -> Vec<RowResult> {
    let name = |class: usize| class_names.get(class).cloned().unwrap_or_default();
    (0..found.n)
        .map(|row| RowResult {
            row_index: row as u64,
            row_id: row_ids.get(row).cloned().unwrap_or_default(),
            trust_score: found.trust_score[row],
            issues: found
                .columns
                .iter()
                .filter_map(|c| {
                    api_issue_type(c.issue_type).map(|t| RowIssue {
                        issue_type: t.into(),
                        flagged: c.is_issue[row],
                        quality_score: c.score[row],
                        column: String::new(),
                    })
                })
                .collect(),
            given_label: name(labels[row]),
            suggested_label: found
                .suggested_label
                .as_ref()
                .map(|s| name(s[row]))
                .unwrap_or_default(),
            suggested_label_confidence: found
                .suggested_label_confidence
                .as_ref()
                .map_or(0.0, |c| c[row]),
            near_duplicate_cluster_id: found
                .near_duplicate_set
                .as_ref()
                .and_then(|s| s[row])
                .map_or(0, |id| u64::from(id) + 1),
            correction: None,
            not_analyzed_reason: String::new(),
        })
        .collect()
}

fn report(header: &ModelOutputsHeader, found: &IssueReport, labels: &[usize]) -> Report {
    let n = found.n as f64;
    let label_flags = found.column(Check::Label).map(|c| &c.is_issue);
    let class_health = header
        .class_names
        .iter()
        .enumerate()
        .map(|(class, class_name)| ClassHealth {
            class_name: class_name.clone(),
            row_count: labels.iter().filter(|l| **l == class).count() as u64,
            label_issue_count: label_flags.map_or(0, |flags| {
                labels
                    .iter()
                    .zip(flags)
                    .filter(|(l, f)| **l == class && **f)
                    .count() as u64
            }),
            estimated_noise_rate: found
                .label_health
                .as_ref()
                .and_then(|h| h.classes_by_label_quality.iter().find(|c| c.class == class))
                .map_or(0.0, |c| c.inverse_label_noise),
        })
        .collect();
    Report {
        dataset: header.dataset.clone(),
        task_type: header.task_type,
        row_count: header.row_count,
        analyzed_row_count: found.n as u64,
        health_score: found.health_score,
        issue_summaries: found
            .summary
            .iter()
            .filter_map(|s| {
                api_issue_type(s.issue_type).map(|t| IssueSummary {
                    issue_type: t.into(),
                    flagged_rows: s.num_issues as u64,
                    flagged_fraction: s.num_issues as f64 / n,
                    quality_score: s.score,
                    column: String::new(),
                })
            })
            .collect(),
        model_metrics: header.metrics.clone(),
        model_summary: header.model_summary.clone(),
        class_health,
        ..Report::default()
    }
}

/// The `trust-scoring-analysis` handler.
#[derive(Debug, Clone)]
pub(crate) struct ScoringHandler {
    pub(crate) repo: ReportRepo,
    pub(crate) objects: EncryptedObjects,
    pub(crate) analysis: AnalysisClients,
    /// `Bearer <credential>` for analysis, if configured (its `mesh.service_credential`).
    pub(crate) analysis_bearer: Option<MetadataValue<Ascii>>,
}

/// The analysis endpoints model outputs are read from: the shared Service, and the dedicated
/// Deployment of each tenant that has one (`dedicated.analysis`), since only that Deployment can
/// open the tenant's objects.
#[derive(Debug, Clone)]
pub(crate) struct AnalysisClients {
    pub(crate) shared: AnalysisServiceClient<Channel>,
    pub(crate) dedicated: BTreeMap<String, AnalysisServiceClient<Channel>>,
}

impl AnalysisClients {
    fn for_tenant(&self, tenant: &TenantId) -> AnalysisServiceClient<Channel> {
        self.dedicated
            .get(tenant.as_str())
            .unwrap_or(&self.shared)
            .clone()
    }
}

impl ScoringHandler {
    async fn outputs(&self, tenant: &TenantId, job: String) -> Result<Outputs, HandlerError> {
        let request = mesh_request(
            GetModelOutputsRequest {
                name: job,
                ..GetModelOutputsRequest::default()
            },
            self.analysis_bearer.as_ref(),
        );
        let mut stream = self
            .analysis
            .for_tenant(tenant)
            .get_model_outputs(request)
            .await
            .map_err(|s| analysis_failure(&s))?
            .into_inner();
        let mut outputs = Outputs::default();
        while let Some(message) = stream.next().await {
            match message.map_err(|s| analysis_failure(&s))?.payload {
                Some(Payload::Header(header)) => outputs.header = header,
                Some(Payload::Batch(batch)) => {
                    outputs.labels.extend(batch.labels);
                    outputs.pred_probs.extend(batch.pred_probs);
                    outputs.embeddings.extend(batch.embeddings);
                    outputs.row_ids.extend(batch.row_ids);
                    outputs.modality_flags.extend(batch.modality_flags);
                    outputs.modality_scores.extend(batch.modality_scores);
                }
                None => return Err(HandlerError::poison("analysis sent an empty message")),
            }
        }
        Ok(outputs)
    }

    async fn apply(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let event: AnalysisCompleted = delivery.decode()?;
        let tenant = delivery
            .tenant()
            .ok_or_else(|| HandlerError::poison("the subject carries no valid tenant"))?;
        let job = ResourceName::parse("job", "jobs", &event.job)
            .map_err(|_| HandlerError::poison("the job is not a job name"))?;
        let dataset = ResourceName::parse("dataset", "datasets", &event.dataset)
            .map_err(|_| HandlerError::poison("the dataset is not a dataset name"))?;
        if job.tenant != tenant || dataset.tenant != tenant {
            return Err(HandlerError::poison(
                "the event names another tenant's resources",
            ));
        }
        let scope = TenantScope::new(tenant.clone());
        // NOTE: a job's report has the job's id, so each analysis has one report.
        let report_id = job.id;
        if self
            .repo
            .exists(&scope, report_id)
            .await
            .map_err(|e| retry(&e))?
        {
            tracing::info!("The analysis is already scored; nothing to do.");
            return Ok(());
        }
        let outputs = self.outputs(&tenant, event.job.clone()).await?;
        if let Err(error) = delivery.in_progress().await {
            tracing::warn!(error = %error, "Could not extend the delivery's ack wait.");
        }
        let scored = tokio::task::spawn_blocking(move || score(&outputs))
            .await
            .map_err(HandlerError::retryable)?
            .map_err(|error| {
                HandlerError::poison(format!("the detectors refused the model outputs: {error}"))
            })?;

        let key = rows_key(report_id).map_err(|e| retry(&e))?;
        let stored = StoredRows { rows: scored.rows };
        self.objects
            .put(
                &scope,
                &key,
                "report rows",
                Bytes::from(stored.encode_to_vec()),
            )
            .await
            .map_err(|e| retry(&TrustError::from(e)))?;

        let report_name = ResourceName::format(&tenant, "reports", report_id);
        let event_id = Uuid::now_v7();
        let request_id = event.meta.map(|m| m.request_id).unwrap_or_default();
        let scores_ready = ScoresReady {
            meta: Some(EventMeta {
                event_id: event_id.to_string(),
                tenant: tenant.to_string(),
                occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
                producer: Service::TrustScoring.as_str().to_owned(),
                request_id: request_id.clone(),
            }),
            job: event.job.clone(),
            dataset: event.dataset.clone(),
            report: report_name.clone(),
            row_count: scored.report.analyzed_row_count,
            flagged_row_count: scored.flagged,
            health_score: scored.report.health_score,
        };
        let mut audit =
            AuditEntry::new(Service::TrustScoring, tenant, "reports.create", report_name);
        audit.actor_type = ActorType::Service;
        Service::TrustScoring
            .as_str()
            .clone_into(&mut audit.actor_id);
        audit.request_id = request_id;
        audit.records_affected = scored.report.analyzed_row_count;
        let mut report = scored.report;
        report.job = event.job;
        let new = NewReport {
            id: report_id,
            dataset: dataset.id,
            report,
            flagged_row_count: scored.flagged,
            event_id,
            scores_ready,
            audit,
        };
        let created = self.repo.create(&scope, new).await.map_err(|e| retry(&e))?;
        if created {
            tracing::info!("The report is stored and scores.ready queued.");
        } else {
            tracing::info!("The report was stored concurrently; nothing more to do.");
        }
        Ok(())
    }
}

impl Handler for ScoringHandler {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.apply(delivery).await
    }
}
