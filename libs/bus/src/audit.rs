//! Audit emission every service shares: build an `AuditEvent` for one data access (allowed, denied or
//! failed) and send it to `tm.<tenant>.audit.<service>`, through the outbox (in the caller's
//! transaction) or straight through a [`Publisher`].
//!
//! [`event_meta`] builds the `EventMeta` of any event.
//!
//! An audit event says who did what to which resource with what outcome; it never carries content,
//! secrets or tokens, so an [`AuditEntry`] has no field that could hold them.

use std::time::SystemTime;

use sqlx::{Postgres, Transaction};
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{ActorType, AuditEvent, EventMeta, Outcome};
use trustmesh_telemetry::CallOrigin;
use uuid::Uuid;

use crate::outbox::{Outbox, OutboxError};
use crate::publisher::{PublishError, Publisher};

/// One audited action, before it becomes an `AuditEvent`.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// The recording service (the `<service>` of the subject and the event's producer).
    pub service: Service,
    /// The tenant whose resource was touched.
    pub tenant: TenantId,
    /// Kind of actor.
    pub actor_type: ActorType,
    /// Actor id: API key name, operator identity, service name.
    pub actor_id: String,
    /// Action, e.g. `datasets.upload`.
    pub action: String,
    /// Resource name, e.g. `tenants/acme/datasets/0190...`.
    pub resource: String,
    /// Result.
    pub outcome: Outcome,
    /// gRPC status code number (0 for OK), when it was an RPC.
    pub grpc_code: i32,
    /// Short machine-readable reason for DENIED or ERROR; empty when allowed.
    pub reason: String,
    /// Request id, for correlation.
    pub request_id: String,
    /// Rows or objects affected, when known.
    pub records_affected: u64,
    /// The client address of the call this was recorded in (empty outside one).
    pub source_ip: String,
    /// The client's user agent in that call (empty outside one).
    pub user_agent: String,
}

impl AuditEntry {
    /// An entry for `action` on `resource` of `tenant` by `service`, allowed, with no actor, request
    /// id or count yet (set the public fields for those); recorded within a gRPC call, it carries the
    /// call's client address and user agent ([`CallOrigin`]).
    #[must_use]
    pub fn new(
        service: Service,
        tenant: TenantId,
        action: impl Into<String>,
        resource: impl Into<String>,
    ) -> Self {
        let origin = CallOrigin::current().unwrap_or_default();
        Self {
            service,
            tenant,
            actor_type: ActorType::Unspecified,
            actor_id: String::new(),
            action: action.into(),
            resource: resource.into(),
            outcome: Outcome::Allowed,
            grpc_code: 0,
            reason: String::new(),
            request_id: String::new(),
            records_affected: 0,
            source_ip: origin
                .source_ip
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            user_agent: origin.user_agent,
        }
    }

    /// The subject, the `AuditEvent` (with a fresh UUIDv7 event id and the current time) and its
    /// `Nats-Msg-Id`.
    #[must_use]
    pub fn into_event(self) -> (Subject, AuditEvent, String) {
        let (event_id, meta) = event_meta(self.service, &self.tenant, &self.request_id);
        let subject = Subject::audit(&self.tenant, self.service);
        let id = msg_id(&subject, event_id);
        let event = AuditEvent {
            meta: Some(meta),
            actor_type: self.actor_type.into(),
            actor_id: self.actor_id,
            on_behalf_of: String::new(),
            action: self.action,
            resource: self.resource,
            outcome: self.outcome.into(),
            grpc_code: self.grpc_code,
            reason: self.reason,
            request_id: self.request_id,
            trace_id: current_trace_id(),
            source_ip: self.source_ip,
            user_agent: self.user_agent,
            records_affected: self.records_affected,
        };
        (subject, event, id)
    }
}

/// A fresh event id (UUIDv7) and the `EventMeta` of an event `service` publishes for `tenant` now,
/// caused by request `request_id` (may be empty); any event, not only audit ones.
#[must_use]
pub fn event_meta(service: Service, tenant: &TenantId, request_id: &str) -> (Uuid, EventMeta) {
    let event_id = Uuid::now_v7();
    let meta = EventMeta {
        event_id: event_id.to_string(),
        tenant: tenant.as_str().to_owned(),
        occurred_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        producer: service.as_str().to_owned(),
        request_id: request_id.to_owned(),
    };
    (event_id, meta)
}

/// The trace id of the current span's `traceparent`, or empty.
fn current_trace_id() -> String {
    crate::trace::current_trace_headers()
        .into_iter()
        .find(|(name, _)| *name == trustmesh_events::headers::TRACEPARENT)
        .and_then(|(_, value)| value.split('-').nth(1).map(str::to_owned))
        .unwrap_or_default()
}

/// Writes `entry` as an audit event into the outbox within the caller's transaction, so it is
/// published if and only if the transaction commits.
///
/// # Errors
///
/// As [`Outbox::enqueue`].
pub async fn enqueue(
    outbox: &Outbox,
    tx: &mut Transaction<'_, Postgres>,
    entry: AuditEntry,
) -> Result<(), OutboxError> {
    let (subject, event, id) = entry.into_event();
    outbox.enqueue(tx, &subject, &event, &id).await
}

/// Publishes `entry` as an audit event and awaits the stream's ack (for services without an outbox).
///
/// # Errors
///
/// As [`Publisher::publish`].
pub async fn publish(publisher: &Publisher, entry: AuditEntry) -> Result<(), PublishError> {
    let (subject, event, id) = entry.into_event();
    publisher.publish(&subject, &event, &id).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_entry_and_a_fresh_id_on_the_service_audit_subject() {
        let tenant = TenantId::parse("acme").unwrap();
        let mut entry = AuditEntry::new(
            Service::Ingest,
            tenant,
            "datasets.get",
            "tenants/acme/datasets/x",
        );
        entry.outcome = Outcome::Error;
        entry.grpc_code = 5;
        entry.request_id = "req-1".into();
        let (subject, event, id) = entry.clone().into_event();
        assert_eq!(subject.as_str(), "tm.acme.audit.ingest");
        let meta = event.meta.clone().unwrap();
        assert_eq!(meta.tenant, "acme");
        assert_eq!(meta.producer, "ingest");
        assert_eq!(meta.request_id, "req-1");
        assert!(id.ends_with(&meta.event_id), "{id}");
        assert_eq!(event.action, "datasets.get");
        assert_eq!(event.outcome(), Outcome::Error);
        assert_eq!(event.grpc_code, 5);
        assert_eq!(event.trace_id.len(), 32);
        assert_ne!(entry.into_event().2, id, "every event gets its own id");
    }

    #[tokio::test]
    async fn entries_recorded_in_a_call_carry_its_client_address_and_user_agent() {
        let tenant = TenantId::parse("acme").unwrap();
        let outside = AuditEntry::new(Service::Ingest, tenant.clone(), "datasets.get", "r");
        assert_eq!(
            (outside.source_ip.as_str(), outside.user_agent.as_str()),
            ("", "")
        );
        let origin = CallOrigin::new(Some([192, 0, 2, 9].into()), Some(b"trustmesh-cli/0.1"));
        let inside = origin
            .scope(async { AuditEntry::new(Service::Ingest, tenant, "datasets.get", "r") })
            .await;
        let (_, event, _) = inside.into_event();
        assert_eq!(event.source_ip, "192.0.2.9");
        assert_eq!(event.user_agent, "trustmesh-cli/0.1");
    }
}
