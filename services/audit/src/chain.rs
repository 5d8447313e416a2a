//! The hash chain: stored rows ↔ `AuditEvent`, canonical bytes, and `h_i = SHA-256(h_{i-1} ||
//! canonical(event_i))` with `h_0` = 32 zero bytes.
//!
//! The canonical bytes are the protobuf encoding of the event rebuilt from the stored columns
//! (prost encodes fields in field-number order and `AuditEvent` has no maps, so the encoding is
//! deterministic). The time is kept to the microsecond, Postgres' precision, before hashing, so
//! the chain recomputes from the table alone and a change to any column breaks it.

use prost::Message as _;
use prost_types::Timestamp;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use trustmesh_proto::events::v1::{ActorType, AuditEvent, EventMeta, Outcome};
use trustmesh_proto::v1::{AuditActor, AuditOutcome, AuditRecord};

/// The hash before a tenant's first event.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

/// An event's fields as stored (everything but tenant, sequence and hashes).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct EventFields {
    pub(crate) event_id: String,
    pub(crate) occurred_at: OffsetDateTime,
    pub(crate) producer: String,
    pub(crate) meta_request_id: String,
    pub(crate) actor_type: i32,
    pub(crate) actor_id: String,
    pub(crate) on_behalf_of: String,
    pub(crate) action: String,
    pub(crate) resource: String,
    pub(crate) outcome: i32,
    pub(crate) grpc_code: i32,
    pub(crate) reason: String,
    pub(crate) request_id: String,
    pub(crate) trace_id: String,
    pub(crate) source_ip: String,
    pub(crate) user_agent: String,
    pub(crate) records_affected: i64,
}

/// A stored event with its place in the chain.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub(crate) sequence: i64,
    #[sqlx(flatten)]
    pub(crate) fields: EventFields,
    pub(crate) prev_hash: Vec<u8>,
    pub(crate) hash: Vec<u8>,
}

/// Why an event cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidEvent {
    /// No `meta`.
    #[error("the event has no meta")]
    NoMeta,
    /// No event id.
    #[error("the event has no event id")]
    NoEventId,
    /// No or an unrepresentable time.
    #[error("the event has no valid occurred_at")]
    BadTime,
    /// `records_affected` does not fit the table.
    #[error("records_affected is out of range")]
    BadCount,
}

impl EventFields {
    /// The fields of `event`, its time truncated to the microsecond.
    pub(crate) fn from_event(event: &AuditEvent) -> Result<Self, InvalidEvent> {
        let meta = event.meta.as_ref().ok_or(InvalidEvent::NoMeta)?;
        if meta.event_id.is_empty() {
            return Err(InvalidEvent::NoEventId);
        }
        let at = meta.occurred_at.as_ref().ok_or(InvalidEvent::BadTime)?;
        let micros = i128::from(at.seconds) * 1_000_000 + i128::from(at.nanos / 1000);
        let occurred_at = OffsetDateTime::from_unix_timestamp_nanos(micros * 1000)
            .map_err(|_| InvalidEvent::BadTime)?;
        Ok(Self {
            event_id: meta.event_id.clone(),
            occurred_at,
            producer: meta.producer.clone(),
            meta_request_id: meta.request_id.clone(),
            actor_type: event.actor_type,
            actor_id: event.actor_id.clone(),
            on_behalf_of: event.on_behalf_of.clone(),
            action: event.action.clone(),
            resource: event.resource.clone(),
            outcome: event.outcome,
            grpc_code: event.grpc_code,
            reason: event.reason.clone(),
            request_id: event.request_id.clone(),
            trace_id: event.trace_id.clone(),
            source_ip: event.source_ip.clone(),
            user_agent: event.user_agent.clone(),
            records_affected: i64::try_from(event.records_affected)
                .map_err(|_| InvalidEvent::BadCount)?,
        })
    }

    /// The event these fields describe, for tenant `tenant`.
    pub(crate) fn to_event(&self, tenant: &str) -> AuditEvent {
        AuditEvent {
            meta: Some(EventMeta {
                event_id: self.event_id.clone(),
                tenant: tenant.to_owned(),
                occurred_at: Some(timestamp(self.occurred_at)),
                producer: self.producer.clone(),
                request_id: self.meta_request_id.clone(),
            }),
            actor_type: self.actor_type,
            actor_id: self.actor_id.clone(),
            on_behalf_of: self.on_behalf_of.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            outcome: self.outcome,
            grpc_code: self.grpc_code,
            reason: self.reason.clone(),
            request_id: self.request_id.clone(),
            trace_id: self.trace_id.clone(),
            source_ip: self.source_ip.clone(),
            user_agent: self.user_agent.clone(),
            records_affected: u64::try_from(self.records_affected).unwrap_or(0),
        }
    }

    /// `SHA-256(prev || canonical(event))` of these fields in `tenant`'s chain.
    pub(crate) fn chain_hash(&self, tenant: &str, prev: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(prev);
        hasher.update(self.to_event(tenant).encode_to_vec());
        hasher.finalize().into()
    }
}

pub(crate) fn timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

pub(crate) fn actor_type_name(value: i32) -> &'static str {
    match ActorType::try_from(value).unwrap_or(ActorType::Unspecified) {
        ActorType::Unspecified => "",
        ActorType::ApiKey => "api_key",
        ActorType::Operator => "operator",
        ActorType::Service => "service",
        ActorType::Support => "support",
        ActorType::Anonymous => "anonymous",
    }
}

/// The API outcome of a stored event outcome.
pub(crate) fn outcome(value: i32) -> AuditOutcome {
    match Outcome::try_from(value).unwrap_or(Outcome::Unspecified) {
        Outcome::Unspecified => AuditOutcome::Unspecified,
        Outcome::Allowed => AuditOutcome::Allowed,
        Outcome::Denied => AuditOutcome::Denied,
        Outcome::Error => AuditOutcome::Error,
    }
}

/// The stored outcome matching an API filter outcome; `None` for UNSPECIFIED (any).
pub(crate) fn outcome_filter(value: i32) -> Option<i32> {
    match AuditOutcome::try_from(value).unwrap_or(AuditOutcome::Unspecified) {
        AuditOutcome::Unspecified => None,
        AuditOutcome::Allowed => Some(Outcome::Allowed as i32),
        AuditOutcome::Denied => Some(Outcome::Denied as i32),
        AuditOutcome::Error => Some(Outcome::Error as i32),
    }
}

impl EventRow {
    /// The API record of this row.
    pub(crate) fn to_record(&self) -> AuditRecord {
        let f = &self.fields;
        AuditRecord {
            sequence: u64::try_from(self.sequence).unwrap_or(0),
            event_id: f.event_id.clone(),
            time: Some(timestamp(f.occurred_at)),
            actor: Some(AuditActor {
                r#type: actor_type_name(f.actor_type).to_owned(),
                id: f.actor_id.clone(),
                on_behalf_of: f.on_behalf_of.clone(),
            }),
            action: f.action.clone(),
            resource: f.resource.clone(),
            outcome: outcome(f.outcome).into(),
            grpc_code: f.grpc_code,
            reason: f.reason.clone(),
            request_id: f.request_id.clone(),
            trace_id: f.trace_id.clone(),
            source_ip: f.source_ip.clone(),
            user_agent: f.user_agent.clone(),
            service: f.producer.clone(),
            records_affected: u64::try_from(f.records_affected).unwrap_or(0),
            prev_hash: hex::encode(&self.prev_hash),
            hash: hex::encode(&self.hash),
        }
    }
}

/// A stored signed checkpoint of a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct CheckpointRow {
    pub(crate) sequence: i64,
    pub(crate) hash: Vec<u8>,
    pub(crate) signed_at: OffsetDateTime,
    pub(crate) key_id: String,
    pub(crate) signature: Vec<u8>,
}

/// The canonical bytes a checkpoint signature covers:
/// `trustmesh.audit.checkpoint.v1\n{tenant}\n{sequence}\n{hex hash}\n{unix micros}\n`.
pub(crate) fn checkpoint_message(
    tenant: &str,
    sequence: i64,
    hash: &[u8],
    signed_at: OffsetDateTime,
) -> Vec<u8> {
    let micros = signed_at.unix_timestamp_nanos() / 1000;
    format!(
        "trustmesh.audit.checkpoint.v1\n{tenant}\n{sequence}\n{}\n{micros}\n",
        hex::encode(hash)
    )
    .into_bytes()
}

/// The failure reason of a log that ends at `last` behind a checkpoint at `checkpoint`.
pub(crate) fn truncated(checkpoint: i64, last: i64) -> String {
    format!("TRUNCATED: checkpoint at {checkpoint} but the log ends at {last}")
}

/// `t` truncated to the microsecond (Postgres' precision), so a stored time signs as it was signed.
pub(crate) fn to_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
        .unwrap_or(t)
}

impl CheckpointRow {
    /// Why this checkpoint of `tenant` is bad, given the chain hash at its sequence (`None` when
    /// that event is missing) and the known public keys `(key id, raw key)`.
    pub(crate) fn fault(
        &self,
        tenant: &str,
        chain_hash: Option<&[u8]>,
        keys: &[(&str, &[u8])],
    ) -> Option<String> {
        let Some((_, public)) = keys.iter().find(|(id, _)| *id == self.key_id) else {
            return Some(format!("CHECKPOINT_KEY_UNKNOWN: {}", self.key_id));
        };
        let message = checkpoint_message(tenant, self.sequence, &self.hash, self.signed_at);
        if !crate::signing::verify(public, &message, &self.signature) {
            return Some("CHECKPOINT_SIGNATURE".to_owned());
        }
        match chain_hash {
            Some(hash) if hash == self.hash.as_slice() => None,
            Some(_) => Some("CHECKPOINT_MISMATCH".to_owned()),
            None => Some(format!(
                "TRUNCATED: checkpoint at {} but the event is missing",
                self.sequence
            )),
        }
    }

    /// The API message of this checkpoint.
    pub(crate) fn to_proto(&self) -> trustmesh_proto::v1::AuditCheckpoint {
        trustmesh_proto::v1::AuditCheckpoint {
            sequence: u64::try_from(self.sequence).unwrap_or(0),
            hash: hex::encode(&self.hash),
            time: Some(timestamp(self.signed_at)),
            signature: self.signature.clone(),
            key_id: self.key_id.clone(),
        }
    }
}

/// The outcome of checking a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every record checked matches.
    Valid {
        /// Records checked.
        checked: u64,
    },
    /// The first record that does not.
    Broken {
        /// Records that matched before it.
        checked: u64,
        /// Its sequence (the missing one for a gap).
        sequence: u64,
        /// `GAP`, `LINK_MISMATCH` or `HASH_MISMATCH`.
        reason: &'static str,
    },
}

/// Checks `rows` (ordered by sequence) as the continuation of a chain whose last record had sequence
/// `prev_sequence` and hash `prev_hash`.
pub(crate) fn verify(
    tenant: &str,
    prev_sequence: i64,
    prev_hash: &[u8],
    rows: &[EventRow],
) -> Verdict {
    let mut prev = prev_hash.to_vec();
    let mut checked = 0_u64;
    for (expected, row) in (prev_sequence + 1..).zip(rows) {
        let broken = |reason| Verdict::Broken {
            checked,
            sequence: u64::try_from(expected).unwrap_or(0),
            reason,
        };
        if row.sequence != expected {
            return broken("GAP");
        }
        if row.prev_hash != prev {
            return broken("LINK_MISMATCH");
        }
        if row.fields.chain_hash(tenant, &prev).as_slice() != row.hash.as_slice() {
            return broken("HASH_MISMATCH");
        }
        prev.clone_from(&row.hash);
        checked += 1;
    }
    Verdict::Valid { checked }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, nanos: i32) -> AuditEvent {
        AuditEvent {
            meta: Some(EventMeta {
                event_id: id.to_owned(),
                tenant: "acme".to_owned(),
                occurred_at: Some(Timestamp {
                    seconds: 1_800_000_000,
                    nanos,
                }),
                producer: "ingest".to_owned(),
                request_id: String::new(),
            }),
            action: "datasets.get".to_owned(),
            resource: "tenants/acme/datasets/1".to_owned(),
            outcome: Outcome::Allowed as i32,
            ..AuditEvent::default()
        }
    }

    fn chain(events: &[AuditEvent]) -> Vec<EventRow> {
        let mut prev = GENESIS.to_vec();
        let mut rows = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let fields = EventFields::from_event(e).unwrap();
            let hash = fields.chain_hash("acme", &prev).to_vec();
            rows.push(EventRow {
                sequence: i64::try_from(i).unwrap() + 1,
                fields,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            });
        }
        rows
    }

    #[test]
    fn stored_fields_rebuild_the_event_to_the_microsecond() {
        let e = event("e1", 123_456_789);
        let rebuilt = EventFields::from_event(&e).unwrap().to_event("acme");
        let mut expected = e;
        expected
            .meta
            .as_mut()
            .unwrap()
            .occurred_at
            .as_mut()
            .unwrap()
            .nanos = 123_456_000;
        assert_eq!(rebuilt, expected);
    }

    #[test]
    fn every_kind_of_tampering_names_the_first_bad_sequence() {
        let rows = chain(&[event("a", 0), event("b", 0), event("c", 0), event("d", 0)]);
        assert_eq!(
            verify("acme", 0, &GENESIS, &rows),
            Verdict::Valid { checked: 4 }
        );

        let mut modified = rows.clone();
        modified[2].fields.resource = "tenants/acme/datasets/2".to_owned();
        assert_eq!(
            verify("acme", 0, &GENESIS, &modified),
            Verdict::Broken {
                checked: 2,
                sequence: 3,
                reason: "HASH_MISMATCH"
            }
        );
        let mut deleted = rows.clone();
        deleted.remove(1);
        assert_eq!(
            verify("acme", 0, &GENESIS, &deleted),
            Verdict::Broken {
                checked: 1,
                sequence: 2,
                reason: "GAP"
            }
        );
        let mut reordered = rows.clone();
        reordered.swap(1, 2);
        reordered[1].sequence = 2;
        reordered[2].sequence = 3;
        assert_eq!(
            verify("acme", 0, &GENESIS, &reordered),
            Verdict::Broken {
                checked: 1,
                sequence: 2,
                reason: "LINK_MISMATCH"
            }
        );
        // Another tenant's chain does not verify as this one's.
        assert!(matches!(
            verify("beta", 0, &GENESIS, &rows),
            Verdict::Broken { sequence: 1, .. }
        ));
        // A suffix verifies from its predecessor.
        assert_eq!(
            verify("acme", 2, &rows[1].hash, &rows[2..]),
            Verdict::Valid { checked: 2 }
        );
    }
}
