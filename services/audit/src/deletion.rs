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
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{DeletionReceipt, DeletionRequested, DeletionScope, EventMeta};
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

/// Checks that the request concerns the subject's `tenant` only, as every deletion consumer does.
fn validate(tenant: &TenantId, request: &DeletionRequested) -> Result<DeletionScope, HandlerError> {
    let scope = request.scope();
    match scope {
        DeletionScope::Dataset => {
            let dataset = request
                .target
                .strip_prefix(&format!("tenants/{tenant}/datasets/"))
                .ok_or_else(|| {
                    HandlerError::poison("the target is not a dataset of the subject's tenant")
                })?;
            if dataset.is_empty() || dataset.contains('/') {
                return Err(HandlerError::poison("the target is not a dataset name"));
            }
        }
        DeletionScope::Tenant if request.target == format!("tenants/{tenant}") => {}
        DeletionScope::Tenant => {
            return Err(HandlerError::poison(
                "the target is not the subject's tenant",
            ));
        }
        DeletionScope::Unspecified => {
            return Err(HandlerError::poison("the deletion scope is unspecified"));
        }
    }
    let id = request
        .deletion
        .strip_prefix(&format!("tenants/{tenant}/deletions/"))
        .ok_or_else(|| HandlerError::poison("the deletion name is not of the subject's tenant"))?;
    if id.is_empty() || id.contains('/') {
        return Err(HandlerError::poison("the deletion name is invalid"));
    }
    Ok(scope)
}

/// The audit service's receipt for `request`: nothing deleted, no residue, no DEK destroyed.
fn receipt(
    tenant: &TenantId,
    request: &DeletionRequested,
    scope: DeletionScope,
) -> (Uuid, DeletionReceipt) {
    let event_id = receipt_event_id(&request.deletion);
    let meta = EventMeta {
        event_id: event_id.to_string(),
        tenant: tenant.as_str().to_owned(),
        occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        producer: Service::Audit.as_str().to_owned(),
        request_id: request
            .meta
            .as_ref()
            .map(|m| m.request_id.clone())
            .unwrap_or_default(),
    };
    let receipt = DeletionReceipt {
        meta: Some(meta),
        deletion: request.deletion.clone(),
        service: Service::Audit.as_str().to_owned(),
        scope: scope.into(),
        // Audit events are retained, not shredded: see the module documentation.
        deleted: std::collections::HashMap::new(),
        residue_found: false,
        residue: std::collections::HashMap::new(),
        deks_destroyed: 0,
    };
    (event_id, receipt)
}

impl DeletionResponder {
    async fn answer(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let request: DeletionRequested = delivery.decode()?;
        let tenant = delivery
            .tenant()
            .ok_or_else(|| HandlerError::poison("the subject carries no valid tenant"))?;
        let scope = validate(&tenant, &request)?;
        let (event_id, receipt) = receipt(&tenant, &request, scope);
        let subject = Subject::deletion_receipt(&tenant);
        let ack = self
            .publisher
            .publish(&subject, &receipt, &msg_id(&subject, event_id))
            .await
            .map_err(|e| HandlerError::retryable(format!("publishing the receipt failed: {e}")))?;
        tracing::info!(
            tenant.id = %tenant,
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
    use super::*;

    fn request(scope: DeletionScope, target: &str, deletion: &str) -> DeletionRequested {
        DeletionRequested {
            deletion: deletion.to_owned(),
            scope: scope.into(),
            target: target.to_owned(),
            ..DeletionRequested::default()
        }
    }

    #[test]
    fn the_receipt_id_is_stable_per_deletion() {
        let a = receipt_event_id("tenants/acme/deletions/1");
        assert_eq!(a, receipt_event_id("tenants/acme/deletions/1"));
        assert_ne!(a, receipt_event_id("tenants/acme/deletions/2"));
        assert_ne!(a, receipt_event_id("tenants/other/deletions/1"));
    }

    #[test]
    fn only_requests_of_the_subjects_tenant_are_answered() {
        let acme = TenantId::parse("acme").unwrap();
        let ok = [
            request(
                DeletionScope::Dataset,
                "tenants/acme/datasets/d1",
                "tenants/acme/deletions/x",
            ),
            request(
                DeletionScope::Tenant,
                "tenants/acme",
                "tenants/acme/deletions/x",
            ),
        ];
        for r in &ok {
            assert_eq!(validate(&acme, r).unwrap(), r.scope());
        }
        let refused = [
            request(
                DeletionScope::Dataset,
                "tenants/other/datasets/d1",
                "tenants/acme/deletions/x",
            ),
            request(
                DeletionScope::Dataset,
                "tenants/acme/datasets/",
                "tenants/acme/deletions/x",
            ),
            request(
                DeletionScope::Tenant,
                "tenants/other",
                "tenants/acme/deletions/x",
            ),
            request(
                DeletionScope::Tenant,
                "tenants/acme",
                "tenants/other/deletions/x",
            ),
            request(
                DeletionScope::Unspecified,
                "tenants/acme",
                "tenants/acme/deletions/x",
            ),
        ];
        for r in &refused {
            assert!(
                matches!(validate(&acme, r), Err(HandlerError::Poison { .. })),
                "{r:?}"
            );
        }
    }

    #[test]
    fn the_receipt_deletes_nothing() {
        let acme = TenantId::parse("acme").unwrap();
        let r = request(
            DeletionScope::Tenant,
            "tenants/acme",
            "tenants/acme/deletions/x",
        );
        let (id, receipt) = receipt(&acme, &r, DeletionScope::Tenant);
        assert_eq!(receipt.service, "audit");
        assert!(receipt.deleted.is_empty() && receipt.residue.is_empty());
        assert!(!receipt.residue_found);
        assert_eq!(receipt.deks_destroyed, 0);
        let meta = receipt.meta.unwrap();
        assert_eq!(meta.event_id, id.to_string());
        assert!(meta.occurred_at.is_some());
    }
}
