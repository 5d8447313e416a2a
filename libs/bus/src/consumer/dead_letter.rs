//! Dead letters: a message a consumer gave up on, republished on `tm.<tenant>.dlq.<consumer>` (stream
//! `TM_DLQ`) with its payload and original headers, plus headers saying why and where it came from.

use async_nats::HeaderMap;
use trustmesh_events::headers::NATS_MSG_ID;
use trustmesh_events::{ConsumerSpec, Subject, TenantId};
use trustmesh_proto::events::v1::{ActorType, Outcome};

use crate::audit::{self, AuditEntry};
use crate::publisher::Publisher;

/// The audit action of a dead letter: the consumer's service gave up on one of the tenant's messages.
pub const AUDIT_ACTION: &str = "messages.deadLetter";

/// Why the consumer gave up (poison reason, or the last retryable reason after `max_deliver`).
pub const REASON: &str = "Trustmesh-Dlq-Reason";
/// The subject the message was originally published on.
pub const ORIGINAL_SUBJECT: &str = "Trustmesh-Dlq-Subject";
/// The original `Nats-Msg-Id` (the dead letter gets its own, for dedupe in `TM_DLQ`).
pub const ORIGINAL_MSG_ID: &str = "Trustmesh-Dlq-Msg-Id";
/// The stream the message came from.
pub const STREAM: &str = "Trustmesh-Dlq-Stream";
/// Its sequence in that stream.
pub const SEQUENCE: &str = "Trustmesh-Dlq-Sequence";
/// The durable consumer that gave up.
pub const CONSUMER: &str = "Trustmesh-Dlq-Consumer";
/// How many times it had been delivered.
pub const DELIVERIES: &str = "Trustmesh-Dlq-Deliveries";

/// Tenant token used when the original subject has no valid tenant; it can never be a tenant id
/// (those start with `[a-z0-9]`), so it never mixes with a real tenant's dead letters.
pub const UNKNOWN_TENANT: &str = "_invalid";

/// Longest reason kept in [`REASON`], in bytes.
const MAX_REASON_BYTES: usize = 1024;

/// Where and how a message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    /// The tenant of the original subject, if it names a valid one.
    pub(crate) tenant: Option<TenantId>,
    pub(crate) subject: String,
    pub(crate) msg_id: String,
    pub(crate) headers: HeaderMap,
}

/// What the runner kept of a delivery to dead-letter it after the handler consumed it.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) subject: String,
    pub(crate) headers: Option<HeaderMap>,
    pub(crate) stream: String,
    pub(crate) sequence: u64,
    pub(crate) delivered: i64,
}

impl DeadLetter {
    /// The dead letter of `origin` for `consumer`, with `reason`.
    pub(crate) fn new(origin: &Origin, consumer: &'static ConsumerSpec, reason: &str) -> Self {
        let tenant = origin
            .subject
            .split('.')
            .nth(1)
            .and_then(|t| TenantId::parse(t).ok());
        let subject = match &tenant {
            Some(tenant) => Subject::dead_letter(tenant, consumer).as_str().to_owned(),
            None => format!("tm.{UNKNOWN_TENANT}.dlq.{}", consumer.durable_name),
        };
        let mut headers = origin.headers.clone().unwrap_or_default();
        if let Some(original) = headers
            .get(NATS_MSG_ID)
            .map(|v| header_safe(v.as_str(), MAX_REASON_BYTES))
        {
            headers.insert(ORIGINAL_MSG_ID, original.as_str());
        }
        headers.insert(REASON, header_safe(reason, MAX_REASON_BYTES).as_str());
        headers.insert(
            ORIGINAL_SUBJECT,
            header_safe(&origin.subject, MAX_REASON_BYTES).as_str(),
        );
        headers.insert(STREAM, origin.stream.as_str());
        headers.insert(SEQUENCE, origin.sequence.to_string().as_str());
        headers.insert(CONSUMER, consumer.durable_name);
        headers.insert(DELIVERIES, origin.delivered.to_string().as_str());
        let msg_id = format!(
            "dlq:{}:{}:{}",
            origin.stream, origin.sequence, consumer.durable_name
        );
        Self {
            tenant,
            subject,
            msg_id,
            headers,
        }
    }

    /// Records in the tenant's audit log that `consumer`'s service gave up on the message (the
    /// resource is the dead-letter subject, where it now is). A message of no valid tenant has no
    /// log to go to: the dead letter itself and the log line are its record. Best effort: the dead
    /// letter is already stored, so a failed publish is logged, not retried.
    pub(crate) async fn audit(&self, publisher: &Publisher, consumer: &'static ConsumerSpec) {
        let Some(tenant) = self.tenant.clone() else {
            return;
        };
        let mut entry = AuditEntry::new(consumer.service, tenant, AUDIT_ACTION, &self.subject);
        entry.actor_type = ActorType::Service;
        consumer.service.as_str().clone_into(&mut entry.actor_id);
        entry.outcome = Outcome::Error;
        if let Err(error) = audit::publish(publisher, entry).await {
            tracing::error!(%error, dead_letter.subject = self.subject, "Could not audit a dead letter.");
        }
    }
}

/// `value` as a single-line printable-ASCII header value of at most `max` bytes.
fn header_safe(value: &str, max: usize) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(subject: &str) -> Origin {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MSG_ID, "acme.dataset.ingested:1");
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        Origin {
            subject: subject.to_owned(),
            headers: Some(headers),
            stream: "TM_DATASET".into(),
            sequence: 7,
            delivered: 3,
        }
    }

    #[test]
    fn a_dead_letter_keeps_the_tenant_and_says_why() {
        let dead = DeadLetter::new(
            &origin("tm.acme.dataset.ingested"),
            &trustmesh_events::NOTIFIER_DATASET,
            "bad\r\nX-Injected: 1",
        );
        assert_eq!(dead.subject, "tm.acme.dlq.notifier-dataset");
        assert_eq!(dead.msg_id, "dlq:TM_DATASET:7:notifier-dataset");
        let get = |name: &str| dead.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(get(REASON).as_deref(), Some("bad??X-Injected: 1"));
        assert_eq!(
            get(ORIGINAL_MSG_ID).as_deref(),
            Some("acme.dataset.ingested:1")
        );
        assert_eq!(
            get(ORIGINAL_SUBJECT).as_deref(),
            Some("tm.acme.dataset.ingested")
        );
        assert_eq!(get(SEQUENCE).as_deref(), Some("7"));
        assert_eq!(get(DELIVERIES).as_deref(), Some("3"));
        assert!(get("traceparent").is_some(), "original headers are kept");
    }

    #[test]
    fn a_subject_without_a_valid_tenant_goes_to_the_unknown_tenant() {
        let dead = DeadLetter::new(
            &origin("tm.NOPE.dataset.ingested"),
            &trustmesh_events::NOTIFIER_DATASET,
            "x",
        );
        assert_eq!(dead.subject, "tm._invalid.dlq.notifier-dataset");
        assert!(trustmesh_events::filter_matches(
            trustmesh_events::TM_DLQ.subjects[0],
            &dead.subject
        ));
    }

    #[test]
    fn long_reasons_are_cut() {
        assert_eq!(
            header_safe(&"é".repeat(2000), MAX_REASON_BYTES).len(),
            MAX_REASON_BYTES
        );
    }
}
