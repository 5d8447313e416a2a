//! The `audit-events` consumer: appends every `AuditEvent` on `tm.*.audit.>` to its tenant's chain,
//! once per event id, and acks only after the append committed.

use sqlx::PgPool;
use trustmesh_bus::{Delivery, Handler, HandlerError};
use trustmesh_proto::events::v1::AuditEvent;

use crate::chain::EventFields;
use crate::repo::{self, Appended, Checkpointer};

/// Appends delivered audit events to the per-tenant chains.
#[derive(Debug, Clone)]
pub(crate) struct AuditWriter {
    pub(crate) pool: PgPool,
    pub(crate) checkpointer: Checkpointer,
}

impl AuditWriter {
    async fn write(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let subject = delivery
            .parsed_subject()
            .map_err(|e| HandlerError::poison(format!("not an audit subject: {e}")))?;
        let event: AuditEvent = delivery.decode()?;
        let tenant = subject.tenant().as_str();
        let meta_tenant = event.meta.as_ref().map(|m| m.tenant.as_str());
        // An event lands in the chain of the tenant its subject names, and only if it agrees.
        if meta_tenant != Some(tenant) {
            return Err(HandlerError::poison(
                "the event's tenant differs from its subject's",
            ));
        }
        let fields = EventFields::from_event(&event).map_err(HandlerError::poison)?;
        match repo::append(&self.pool, &self.checkpointer, tenant, &fields).await? {
            Appended::At(sequence) => tracing::debug!(
                tenant.id = tenant,
                audit.sequence = sequence,
                "Audit event appended."
            ),
            Appended::AlreadyStored => tracing::debug!(
                tenant.id = tenant,
                "Audit event already in the chain; redelivery ignored."
            ),
        }
        Ok(())
    }
}

impl Handler for AuditWriter {
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.write(delivery)
    }
}
