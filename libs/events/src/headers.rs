//! Message headers every publish sets, and the deterministic `Nats-Msg-Id`.

use uuid::Uuid;

use crate::subject::Subject;

/// JetStream dedupe header; its value comes from [`msg_id`].
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
/// W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state header.
pub const TRACESTATE: &str = "tracestate";

/// The `Nats-Msg-Id` of the event `event_id` published on `subject`.
///
/// Deterministic, so a republish of the same event (outbox relay after a crash, a retried publish)
/// carries the same id and JetStream drops it within the stream's duplicate window. Shape:
/// `<tenant>.<domain>.<event>:<uuid>`; two different events never share an id.
#[must_use]
pub fn msg_id(subject: &Subject, event_id: Uuid) -> String {
    let tail = subject
        .as_str()
        .strip_prefix("tm.")
        .unwrap_or(subject.as_str());
    format!("{tail}:{}", event_id.as_hyphenated())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantId;

    #[test]
    fn msg_id_is_deterministic_and_distinguishes_events() {
        let t = TenantId::parse("acme").unwrap();
        let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        let s = Subject::dataset_ingested(&t);
        assert_eq!(
            msg_id(&s, id),
            "acme.dataset.ingested:01900000-0000-7000-8000-000000000001"
        );
        assert_eq!(msg_id(&s, id), msg_id(&s.clone(), id));
        assert_ne!(msg_id(&s, id), msg_id(&Subject::dataset_failed(&t), id));
        assert_ne!(msg_id(&s, id), msg_id(&s, Uuid::from_u128(2)));
        let other = TenantId::parse("other").unwrap();
        assert_ne!(
            msg_id(&s, id),
            msg_id(&Subject::dataset_ingested(&other), id)
        );
    }
}
