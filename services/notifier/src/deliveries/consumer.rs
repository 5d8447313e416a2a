//! The notifier's consumers (`notifier-job`, `notifier-scores`, `notifier-dataset`,
//! `notifier-deletion`): each event becomes one delivery-log record, however often it is
//! delivered; `deletion.requested` deletes the target's records and answers with a receipt.

use std::collections::HashMap;
use std::time::SystemTime;

use time::OffsetDateTime;
use trustmesh_bus::audit::{self, AuditEntry};
use trustmesh_bus::{Delivery, Handler, HandlerError, Outbox, Processed, ProcessedMessages};
use trustmesh_events::{EventKind, Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1 as ev;
use trustmesh_proto::v1::JobKind;
use uuid::Uuid;

use super::{DeliveryLog, NewDelivery};

/// Handles every event the notifier consumes.
#[derive(Debug, Clone)]
pub(crate) struct NotifierHandler {
    pub(crate) log: DeliveryLog,
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

impl NotifierHandler {
    async fn record(
        &self,
        kind: EventKind,
        tenant: TenantId,
        meta: Option<ev::EventMeta>,
        resource: String,
        dataset: Option<String>,
    ) -> Result<(), HandlerError> {
        let meta = meta.ok_or_else(|| HandlerError::poison("the event has no metadata"))?;
        let event_id = Uuid::parse_str(&meta.event_id)
            .map_err(|_| HandlerError::poison("the event id is not a UUID"))?;
        if !resource.starts_with(&format!("tenants/{tenant}/")) {
            return Err(HandlerError::poison(
                "the event's resource is not of the subject's tenant",
            ));
        }
        let recorded = self
            .log
            .record(&NewDelivery {
                event_id,
                tenant,
                event_type: kind.to_string(),
                resource,
                dataset,
                occurred_at: occurred_at(&meta),
            })
            .await?;
        if recorded {
            tracing::debug!(event.type = %kind, "Delivery recorded.");
        } else {
            tracing::debug!(event.type = %kind, "Event already recorded; redelivery ignored.");
        }
        Ok(())
    }

    /// Deletes the target's records, scans for residue and queues the receipt, once per deletion.
    async fn delete(
        &self,
        tenant: TenantId,
        request: ev::DeletionRequested,
    ) -> Result<(), HandlerError> {
        let scope = request.scope();
        let dataset = match scope {
            ev::DeletionScope::Dataset => {
                Some(dataset_of(&tenant, &request.target).ok_or_else(|| {
                    HandlerError::poison("the target is not a dataset of the tenant")
                })?)
            }
            ev::DeletionScope::Tenant if request.target == format!("tenants/{tenant}") => None,
            ev::DeletionScope::Tenant => {
                return Err(HandlerError::poison(
                    "the target is not the subject's tenant",
                ));
            }
            ev::DeletionScope::Unspecified => {
                return Err(HandlerError::poison("the deletion scope is unspecified"));
            }
        };
        if !request
            .deletion
            .starts_with(&format!("tenants/{tenant}/deletions/"))
        {
            return Err(HandlerError::poison(
                "the deletion name is not of the subject's tenant",
            ));
        }
        let outbox = self.outbox.clone();
        let deletion = request.deletion.clone();
        let request_id = request.meta.map(|m| m.request_id).unwrap_or_default();
        // NOTE: keyed on the deletion, not the message: a re-published request for the same
        // deletion has one effect and one receipt, which the outbox delivers durably.
        let outcome = self
            .deletions
            .process_once(&request.deletion, move |tx| {
                Box::pin(async move {
                    let rows = DeliveryLog::delete(tx, &tenant, dataset.as_deref()).await?;
                    let left = DeliveryLog::count(tx, &tenant, dataset.as_deref()).await?;
                    let residue: HashMap<String, u64> = if left > 0 {
                        HashMap::from([("rows:deliveries".to_owned(), left)])
                    } else {
                        HashMap::new()
                    };
                    let event_id = Uuid::now_v7();
                    let subject = Subject::deletion_receipt(&tenant);
                    let receipt = ev::DeletionReceipt {
                        meta: Some(ev::EventMeta {
                            event_id: event_id.to_string(),
                            tenant: tenant.to_string(),
                            occurred_at: Some(prost_types::Timestamp::from(SystemTime::now())),
                            producer: Service::Notifier.as_str().to_owned(),
                            request_id: request_id.clone(),
                        }),
                        deletion,
                        service: Service::Notifier.as_str().to_owned(),
                        scope: scope.into(),
                        deleted: HashMap::from([("rows:deliveries".to_owned(), rows)]),
                        residue_found: !residue.is_empty(),
                        residue,
                        // The notifier holds no encrypted data yet (webhook secrets live in tenancy).
                        deks_destroyed: 0,
                    };
                    outbox
                        .enqueue(tx, &subject, &receipt, &msg_id(&subject, event_id))
                        .await?;
                    let mut entry = AuditEntry::new(
                        Service::Notifier,
                        tenant,
                        "deliveries.delete",
                        request.target,
                    );
                    entry.actor_type = ev::ActorType::Service;
                    Service::Deletion.as_str().clone_into(&mut entry.actor_id);
                    entry.request_id = request_id;
                    entry.records_affected = rows;
                    audit::enqueue(&outbox, tx, entry).await?;
                    Ok::<_, HandlerError>(())
                })
            })
            .await?;
        match outcome {
            Processed::Applied(()) => tracing::info!("Deletion applied and its receipt queued."),
            Processed::AlreadyProcessed => {
                tracing::info!("Deletion already applied; nothing more to do.");
            }
        }
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
                // A deletion job's records are about the deletion, not the dataset's data.
                let dataset = if event.kind() == JobKind::Deletion {
                    None
                } else {
                    dataset_of(&tenant, &event.target)
                };
                self.record(kind, tenant, event.meta, event.job, dataset)
                    .await
            }
            EventKind::ScoresReady => {
                let event: ev::ScoresReady = delivery.decode()?;
                let dataset = dataset_of(&tenant, &event.dataset);
                self.record(kind, tenant, event.meta, event.report, dataset)
                    .await
            }
            EventKind::DatasetIngested => {
                let event: ev::DatasetIngested = delivery.decode()?;
                let dataset = dataset_of(&tenant, &event.dataset);
                self.record(kind, tenant, event.meta, event.dataset, dataset)
                    .await
            }
            EventKind::DatasetFailed => {
                let event: ev::DatasetFailed = delivery.decode()?;
                let dataset = dataset_of(&tenant, &event.dataset);
                self.record(kind, tenant, event.meta, event.dataset, dataset)
                    .await
            }
            EventKind::DeletionRequested => self.delete(tenant, delivery.decode()?).await,
            EventKind::DeletionCompleted => {
                let event: ev::DeletionCompleted = delivery.decode()?;
                match event.scope() {
                    ev::DeletionScope::Dataset => {
                        self.record(kind, tenant, event.meta, event.deletion, None)
                            .await
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
