//! The `analysis-scores` consumer: on `scores.ready`, the job whose outputs were scored becomes
//! SUCCEEDED with the report as its output. Only a RUNNING job with stored outputs changes, so a
//! redelivery (or a cancelled job) has no effect. A dedicated tenant's jobs are in its replica's
//! database: the shared replicas leave its messages to that replica's `analysis-scores-<tenant>`.

use trustmesh_bus::{Delivery, Handler, HandlerError};
use trustmesh_proto::events::v1::ScoresReady;
use trustmesh_proto::v1::JobState;
use trustmesh_store::TenantScope;

use super::ResourceName;
use super::repo::{Change, Guard, JobRepo};
use crate::placement::Placement;

/// The `analysis-scores` handler.
#[derive(Debug, Clone)]
pub(crate) struct ScoresHandler {
    pub(crate) repo: JobRepo,
    /// Tenants whose jobs dedicated replicas keep: left to them.
    pub(crate) placement: Placement,
}

impl ScoresHandler {
    async fn apply(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let event: ScoresReady = delivery.decode()?;
        let tenant = delivery
            .tenant()
            .ok_or_else(|| HandlerError::poison("the subject carries no valid tenant"))?;
        if self.placement.left_to_dedicated(&tenant) {
            tracing::debug!("The tenant's jobs are completed by its dedicated replicas.");
            return Ok(());
        }
        let job = ResourceName::job(&event.job)
            .map_err(|_| HandlerError::poison("the job is not a job name"))?;
        let report = ResourceName::parse("report", "reports", &event.report)
            .map_err(|_| HandlerError::poison("the report is not a report name"))?;
        if job.tenant != tenant || report.tenant != tenant {
            return Err(HandlerError::poison(
                "the event names another tenant's resources",
            ));
        }
        let change = Change {
            state: Some(JobState::Succeeded),
            progress: Some(1.0),
            output: Some(event.report),
            ..Change::default()
        };
        let guard = Guard {
            from: &[JobState::Running],
            outputs_ready: Some(true),
        };
        let changed = self
            .repo
            .transition(&TenantScope::new(tenant), job.id, guard, change, &[], None)
            .await
            .map_err(|e| HandlerError::retryable(trustmesh_runtime::cause_chain(&e)))?;
        match changed {
            Some(_) => tracing::info!("The analysis job succeeded."),
            None => tracing::info!("The scored job is not awaiting its scores; nothing to do."),
        }
        Ok(())
    }
}

impl Handler for ScoresHandler {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.apply(delivery).await
    }
}
