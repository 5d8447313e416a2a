//! The notifier's consumers (`notifier-job`, `notifier-scores`, `notifier-dataset`,
//! `notifier-deletion`): each deliverable event becomes one queued delivery per subscribed
//! endpoint, however often it arrives; `deletion.requested` deletes the target's deliveries (and,
//! for a tenant, its endpoints and DEKs) and answers with a receipt. A deleted dataset stays
//! recorded as such, so an event about it that arrives later (or while the deletion runs) queues
//! nothing.

use std::collections::HashMap;
use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;
use trustmesh_bus::schema::rls::{set_tenant, tenant_tx};
use trustmesh_bus::{Delivery, Handler, HandlerError, Outbox, ProcessedMessages};
use trustmesh_events::{EventKind, Service, TenantId};
use trustmesh_proto::events::v1 as ev;
use trustmesh_proto::v1::{JobKind, JobState};
use trustmesh_service_kit::{Answer, CheckedDeletion, log_outcome};
use uuid::Uuid;

use crate::webhooks::deliveries::{Deliveries, NewDelivery};
use crate::webhooks::endpoints::Endpoints;

/// Handles every event the notifier consumes.
#[derive(Debug, Clone)]
pub(crate) struct NotifierHandler {
    pub(crate) endpoints: Endpoints,
    /// Wakes the dispatcher when deliveries were queued.
    pub(crate) wake: Arc<Notify>,
    pub(crate) outbox: Outbox,
    /// Deletions already answered (`notifier-deletion`), keyed by deletion name.
    pub(crate) deletions: ProcessedMessages,
}

/// `Some(target)` if it names a dataset of `tenant`.
fn dataset_of(tenant: &TenantId, target: &str) -> Option<String> {
    let rest = target.strip_prefix(&format!("tenants/{tenant}/datasets/"))?;
    (!rest.is_empty() && !rest.contains('/')).then(|| target.to_owned())
}

fn occurred_at(meta: &ev::EventMeta) -> OffsetDateTime {
    meta.occurred_at
        .and_then(|t| {
            OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
            )
            .ok()
        })
        .unwrap_or_else(OffsetDateTime::now_utc)
}

/// What an event is about, for its webhook: its Standard Webhooks `type`, resources and dataset.
struct Deliverable {
    event_type: &'static str,
    /// `data` of the payload: resource names only.
    data: serde_json::Value,
    resource: String,
    dataset: Option<String>,
}

impl NotifierHandler {
    /// Queues one delivery of the event per subscribed endpoint of `tenant`, in one transaction.
    async fn record(
        &self,
        tenant: TenantId,
        meta: Option<ev::EventMeta>,
        event: Deliverable,
    ) -> Result<(), HandlerError> {
        let meta = meta.ok_or_else(|| HandlerError::poison("the event has no metadata"))?;
        let event_id = Uuid::parse_str(&meta.event_id)
            .map_err(|_| HandlerError::poison("the event id is not a UUID"))?;
        if !event.resource.starts_with(&format!("tenants/{tenant}/")) {
            return Err(HandlerError::poison(
                "the event's resource is not of the subject's tenant",
            ));
        }
        let timestamp = occurred_at(&meta)
            .format(&Rfc3339)
            .map_err(|_| HandlerError::poison("the event time cannot be formatted"))?;
        let payload = serde_json::json!({
            "type": event.event_type,
            "timestamp": timestamp,
            "data": event.data,
        })
        .to_string();
        let mut tx = tenant_tx(self.endpoints.pool(), tenant.as_str()).await?;
        Deliveries::lock_tenant(&mut tx, &tenant, false).await?;
        if let Some(dataset) = event.dataset.as_deref()
            && Deliveries::dataset_deleted(&mut tx, &tenant, dataset).await?
        {
            // A late event (a redelivery, a consumer catching up) about a deleted dataset.
            tracing::info!(event.type = event.event_type, "The event's dataset is deleted; no webhook is queued for it.");
            return Ok(());
        }
        let endpoints = self
            .endpoints
            .subscribed(&mut tx, &tenant, event.event_type)
            .await
            .map_err(|e| HandlerError::retryable(e.to_string()))?;
        let mut queued = 0_usize;
        for endpoint in &endpoints {
            let new = NewDelivery {
                tenant: &tenant,
                endpoint: endpoint.id,
                event_id,
                event_type: event.event_type,
                dataset: event.dataset.as_deref(),
                payload: &payload,
            };
            if Deliveries::enqueue(&mut tx, &new).await? {
                queued += 1;
            }
        }
        tx.commit().await?;
        if queued > 0 {
            self.wake.notify_one();
        }
        tracing::debug!(event.type = event.event_type, deliveries = queued, "Webhook deliveries queued.");
        Ok(())
    }

    /// Deletes the target's records, scans for residue and queues the receipt, once per deletion.
    async fn delete(&self, checked: CheckedDeletion) -> Result<(), HandlerError> {
        let tenant = checked.tenant.clone();
        // The deliveries' `dataset` column holds the dataset's name.
        let dataset = checked.dataset.map(|_| checked.request.target.clone());
        // Crypto-shredding first: once the tenant's DEKs are gone, no copy of its sealed secrets
        // (rows, backups) opens. Destroying again on a redelivery is harmless.
        let deks_destroyed = if dataset.is_none() {
            self.endpoints
                .destroy_keys(&tenant)
                .await
                .map_err(|e| HandlerError::retryable(e.to_string()))?
        } else {
            0
        };
        let outbox = self.outbox.clone();
        let deletion = checked.request.deletion.clone();
        // NOTE: keyed on the deletion, not the message: a re-published request for the same
        // deletion has one effect and one receipt, which the outbox delivers durably.
        let outcome = self
            .deletions
            .process_once(&deletion, move |tx| {
                Box::pin(async move {
                    // Only this tenant's rows, whether one dataset's or the whole tenant's go.
                    set_tenant(tx, tenant.as_str()).await?;
                    // Deliveries being queued commit first (and are deleted), later ones see the
                    // dataset deleted (`record`): the count below finds only what this missed.
                    Deliveries::lock_tenant(tx, &tenant, true).await?;
                    if let Some(dataset) = dataset.as_deref() {
                        Deliveries::mark_dataset_deleted(tx, &tenant, dataset).await?;
                    }
                    let rows = Deliveries::delete(tx, &tenant, dataset.as_deref()).await?;
                    let mut answer = Answer {
                        deleted: HashMap::from([("rows:webhook_deliveries".to_owned(), rows)]),
                        deks_destroyed,
                        ..Answer::default()
                    };
                    let left = Deliveries::count_in(tx, &tenant, dataset.as_deref()).await?;
                    if left > 0 {
                        answer
                            .residue
                            .insert("rows:webhook_deliveries".to_owned(), left);
                    }
                    if dataset.is_none() {
                        let forgotten = Deliveries::forget_deleted_datasets(tx, &tenant).await?;
                        answer
                            .deleted
                            .insert("rows:deleted_datasets".to_owned(), forgotten);
                        let endpoints = Endpoints::delete_tenant(tx, &tenant).await?;
                        answer
                            .deleted
                            .insert("rows:webhook_endpoints".to_owned(), endpoints);
                        let left = Endpoints::count_tenant(tx, &tenant).await?;
                        if left > 0 {
                            answer
                                .residue
                                .insert("rows:webhook_endpoints".to_owned(), left);
                        }
                    }
                    let action = "webhookDeliveries.delete";
                    checked
                        .answer(&outbox, tx, Service::Notifier, action, rows, answer)
                        .await
                })
            })
            .await?;
        log_outcome(&outcome);
        Ok(())
    }
}

impl Handler for NotifierHandler {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let subject = delivery
            .parsed_subject()
            .map_err(|e| HandlerError::poison(format!("unexpected subject: {e}")))?;
        let tenant = subject.tenant().clone();
        let kind = subject.kind();
        match kind {
            EventKind::JobUpdated => {
                let event: ev::JobUpdated = delivery.decode()?;
                let event_type = match event.state() {
                    JobState::Succeeded => "job.succeeded",
                    JobState::Failed => "job.failed",
                    JobState::Cancelled => "job.cancelled",
                    // Progress and intermediate states are not webhooks.
                    JobState::Unspecified | JobState::Queued | JobState::Running => return Ok(()),
                };
                // A deletion job's deliveries are about the deletion, not the dataset's data.
                let dataset = if event.kind() == JobKind::Deletion {
                    None
                } else {
                    dataset_of(&tenant, &event.target)
                };
                let data = serde_json::json!({
                    "job": event.job,
                    "kind": event.kind().as_str_name(),
                    "target": event.target,
                    "output": event.output,
                    "error_code": event.error_code,
                });
                let deliverable = Deliverable {
                    event_type,
                    data,
                    resource: event.job,
                    dataset,
                };
                self.record(tenant, event.meta, deliverable).await
            }
            // Reports are announced by the analysis job's `job.succeeded`.
            EventKind::ScoresReady => Ok(()),
            EventKind::DatasetIngested => {
                let event: ev::DatasetIngested = delivery.decode()?;
                let data = serde_json::json!({
                    "dataset": event.dataset,
                    "row_count": event.row_count,
                    "column_count": event.column_count,
                });
                let deliverable = Deliverable {
                    event_type: "dataset.ingested",
                    data,
                    dataset: dataset_of(&tenant, &event.dataset),
                    resource: event.dataset,
                };
                self.record(tenant, event.meta, deliverable).await
            }
            EventKind::DatasetFailed => {
                let event: ev::DatasetFailed = delivery.decode()?;
                let data = serde_json::json!({
                    "dataset": event.dataset,
                    "error_code": event.error_code,
                });
                let deliverable = Deliverable {
                    event_type: "dataset.failed",
                    data,
                    dataset: dataset_of(&tenant, &event.dataset),
                    resource: event.dataset,
                };
                self.record(tenant, event.meta, deliverable).await
            }
            EventKind::DeletionRequested => {
                self.delete(CheckedDeletion::new(tenant, delivery.decode()?)?)
                    .await
            }
            EventKind::DeletionCompleted => {
                let event: ev::DeletionCompleted = delivery.decode()?;
                match event.scope() {
                    ev::DeletionScope::Dataset => {
                        let data = serde_json::json!({
                            "deletion": event.deletion,
                            "target": event.target,
                        });
                        let deliverable = Deliverable {
                            event_type: "deletion.completed",
                            data,
                            resource: event.deletion,
                            dataset: None,
                        };
                        self.record(tenant, event.meta, deliverable).await
                    }
                    // The tenant and its webhook endpoints are gone: nothing to deliver to.
                    ev::DeletionScope::Tenant | ev::DeletionScope::Unspecified => Ok(()),
                }
            }
            // Other services' answers to a deletion: nothing to deliver.
            EventKind::DeletionReceipt => Ok(()),
            EventKind::AnalysisRequested
            | EventKind::AnalysisFoldRequested
            | EventKind::AnalysisCompleted
            | EventKind::AnalysisFailed
            | EventKind::Audit(_)
            | EventKind::DeadLetter(_) => Err(HandlerError::poison(format!(
                "{kind} is not an event the notifier consumes"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tenants_own_dataset_names_count_as_datasets() {
        let acme = TenantId::parse("acme").unwrap();
        assert_eq!(
            dataset_of(&acme, "tenants/acme/datasets/x").as_deref(),
            Some("tenants/acme/datasets/x")
        );
        for other in [
            "tenants/other/datasets/x",
            "tenants/acme/datasets/",
            "tenants/acme/datasets/x/rows",
            "tenants/acme",
        ] {
            assert_eq!(dataset_of(&acme, other), None, "{other}");
        }
    }
}
