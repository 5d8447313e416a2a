//! The `audit-deletion` consumer: answers every `deletion.requested` (dataset or tenant scope) with
//! the audit service's `deletion.receipt`, and deletes nothing.
//!
//! Why nothing: audit events carry ids and outcomes (who did what to which resource, when, with
//! which result), never tenant payload, and the audit log is retained under its documented
//! retention on a legal-obligation basis (the record that data was accessed, and deleted, must
//! outlive the data). So a deletion does not shred the tenant's audit events, not even a tenant
//! deletion: the receipt says so explicitly, with `deleted` empty, `residue_found: false` and
//! `deks_destroyed: 0` (the audit log is not encrypted with tenant DEKs), and its `occurred_at` as
//! the completion time. The deleted tenant's events stay readable by the operator, and `VerifyLog`
//! keeps verifying their chain.
//!
//! Retention-bounded expiry of a deleted tenant's audit events (dropping the chain once the
//! retention period has passed) is a later issue; until then they are kept.
//!
//! Idempotence: the audit service has no outbox, so the receipt is published directly and the
//! delivery is acked only after the stream acked it (a failed publish is retried). Its event id
//! is derived from the deletion name, and so its `Nats-Msg-Id`: however often the request is
//! delivered or republished (a redelivery, the deletion service's retry under another message
//! id), JetStream keeps one receipt within the stream's duplicate window, and the deletion service
//! records one receipt per service beyond it.

use sha2::{Digest as _, Sha256};
use trustmesh_bus::{Delivery, Handler, HandlerError, Publisher};
use trustmesh_events::{Service, Subject, msg_id};
use trustmesh_service_kit::{Answer, CheckedDeletion};
use uuid::Uuid;

/// The `audit-deletion` handler.
#[derive(Debug, Clone)]
pub(crate) struct DeletionResponder {
    pub(crate) publisher: Publisher,
}

/// The event id of the audit service's receipt for `deletion`: the same for every delivery of the
/// request, different for every deletion (a UUIDv8 of SHA-256 of the name).
fn receipt_event_id(deletion: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"audit:receipt:")
        .chain_update(deletion.as_bytes())
        .finalize();
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

impl DeletionResponder {
    async fn answer(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let checked = CheckedDeletion::from_delivery(&delivery)?;
        let event_id = receipt_event_id(&checked.request.deletion);
        let scope = checked.request.scope();
        let subject = Subject::deletion_receipt(&checked.tenant);
        // Audit events are retained, not shredded (see the module documentation): nothing
        // deleted, no residue, no DEK destroyed.
        let receipt = checked.receipt(Service::Audit, event_id, Answer::default());
        let ack = self
            .publisher
            .publish(&subject, &receipt, &msg_id(&subject, event_id))
            .await
            .map_err(|e| HandlerError::retryable(format!("publishing the receipt failed: {e}")))?;
        tracing::info!(
            tenant.id = %checked.tenant,
            deletion.scope = ?scope,
            deletion.receipt_duplicate = ack.duplicate,
            "Deletion answered: audit events are retained, the receipt is published."
        );
        Ok(())
    }
}

impl Handler for DeletionResponder {
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.answer(delivery)
    }
}

#[cfg(test)]
mod tests {
    use trustmesh_events::TenantId;
    use trustmesh_proto::events::v1::{DeletionRequested, DeletionScope};

    use super::*;

    #[test]
    fn the_receipt_id_is_stable_per_deletion() {
        let a = receipt_event_id("tenants/acme/deletions/1");
        assert_eq!(a, receipt_event_id("tenants/acme/deletions/1"));
        assert_ne!(a, receipt_event_id("tenants/acme/deletions/2"));
        assert_ne!(a, receipt_event_id("tenants/other/deletions/1"));
    }

    #[test]
    fn the_receipt_deletes_nothing() {
        let acme = TenantId::parse("acme").unwrap();
        let r = DeletionRequested {
            deletion: "tenants/acme/deletions/x".to_owned(),
            scope: DeletionScope::Tenant.into(),
            target: "tenants/acme".to_owned(),
            ..DeletionRequested::default()
        };
        let checked = CheckedDeletion::new(acme, r).unwrap();
        let id = receipt_event_id(&checked.request.deletion);
        let receipt = checked.receipt(Service::Audit, id, Answer::default());
        assert_eq!(receipt.service, "audit");
        assert!(receipt.deleted.is_empty() && receipt.residue.is_empty());
        assert!(!receipt.residue_found);
        assert_eq!(receipt.deks_destroyed, 0);
        let meta = receipt.meta.unwrap();
        assert_eq!(meta.event_id, id.to_string());
        assert!(meta.occurred_at.is_some());
    }
}
