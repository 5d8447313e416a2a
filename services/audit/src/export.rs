//! The JSON Lines export of a tenant's chain and its offline verification.
//!
//! Each event is one line: its `AuditRecord` fields (proto field names; the time in RFC 3339, the
//! outcome by enum name) plus `tenant` and `meta_request_id`, so the event, and with it its chain
//! hash, can be rebuilt exactly as the service hashes it (`chain.rs`). Each checkpoint is a line
//! `{"checkpoint": {...}}` right after the event it covers. [`verify_export`] recomputes the chain,
//! checks every checkpoint's signature and hash, and finds a tail truncated behind a checkpoint.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use trustmesh_proto::events::v1::{ActorType, Outcome};
use trustmesh_proto::v1::AuditOutcome;

use crate::chain::{
    self, CheckpointRow, EventFields, EventRow, GENESIS, Verdict, actor_type_name, outcome,
};

/// An event line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordLine {
    tenant: String,
    sequence: u64,
    event_id: String,
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    actor: ActorLine,
    action: String,
    resource: String,
    outcome: String,
    grpc_code: i32,
    reason: String,
    request_id: String,
    trace_id: String,
    source_ip: String,
    user_agent: String,
    service: String,
    records_affected: u64,
    prev_hash: String,
    hash: String,
    meta_request_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorLine {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    on_behalf_of: String,
}

/// A checkpoint line's content.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    tenant: String,
    sequence: u64,
    hash: String,
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    key_id: String,
    signature: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointWrapper {
    checkpoint: CheckpointLine,
}

/// The newline-terminated export line of `row` of `tenant`.
pub(crate) fn record_line(tenant: &str, row: &EventRow) -> Vec<u8> {
    let f = &row.fields;
    let line = RecordLine {
        tenant: tenant.to_owned(),
        sequence: u64::try_from(row.sequence).unwrap_or(0),
        event_id: f.event_id.clone(),
        time: f.occurred_at,
        actor: ActorLine {
            kind: actor_type_name(f.actor_type).to_owned(),
            id: f.actor_id.clone(),
            on_behalf_of: f.on_behalf_of.clone(),
        },
        action: f.action.clone(),
        resource: f.resource.clone(),
        outcome: outcome(f.outcome).as_str_name().to_owned(),
        grpc_code: f.grpc_code,
        reason: f.reason.clone(),
        request_id: f.request_id.clone(),
        trace_id: f.trace_id.clone(),
        source_ip: f.source_ip.clone(),
        user_agent: f.user_agent.clone(),
        service: f.producer.clone(),
        records_affected: u64::try_from(f.records_affected).unwrap_or(0),
        prev_hash: hex::encode(&row.prev_hash),
        hash: hex::encode(&row.hash),
        meta_request_id: f.meta_request_id.clone(),
    };
    to_line(&line)
}

/// The newline-terminated export line of checkpoint `cp` of `tenant`.
pub(crate) fn checkpoint_line(tenant: &str, cp: &CheckpointRow) -> Vec<u8> {
    to_line(&CheckpointWrapper {
        checkpoint: CheckpointLine {
            tenant: tenant.to_owned(),
            sequence: u64::try_from(cp.sequence).unwrap_or(0),
            hash: hex::encode(&cp.hash),
            time: cp.signed_at,
            key_id: cp.key_id.clone(),
            signature: BASE64.encode(&cp.signature),
        },
    })
}

fn to_line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    line
}

/// A verified export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedExport {
    /// The tenant whose chain it is (empty for an empty export).
    pub tenant: String,
    /// Events checked.
    pub events: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
}

/// Why an export does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid at sequence {first_bad_sequence}: {reason}")]
pub struct ExportFailure {
    /// The first sequence whose event, link or checkpoint does not match (the first missing one for
    /// a gap or a truncated tail).
    pub first_bad_sequence: u64,
    /// `HASH_MISMATCH`, `LINK_MISMATCH`, `GAP`, `CHECKPOINT_SIGNATURE`, `CHECKPOINT_MISMATCH`,
    /// `CHECKPOINT_KEY_UNKNOWN: ...`, `TRUNCATED: ...`, `MALFORMED: ...` or `TENANT_MISMATCH`.
    pub reason: String,
}

/// Verifies an `ExportEvents` JSONL export offline, with the same canonical encoding and chain
/// hash as the service: the chain from sequence 1, every checkpoint's signature (by one of
/// `public_keys`, `(key id, raw Ed25519 key)`) and hash, and no tail truncated behind a checkpoint.
///
/// # Errors
///
/// [`ExportFailure`] naming the first bad sequence.
pub fn verify_export(
    jsonl: &[u8],
    public_keys: &[(&str, &[u8])],
) -> Result<VerifiedExport, ExportFailure> {
    let mut tenant: Option<String> = None;
    let mut rows: Vec<EventRow> = Vec::new();
    let mut checkpoints: Vec<CheckpointRow> = Vec::new();
    for (number, line) in jsonl.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let next = rows.last().map_or(1, |r| r.sequence.saturating_add(1));
        let malformed = |why: String| ExportFailure {
            first_bad_sequence: u64::try_from(next).unwrap_or(0),
            reason: format!("MALFORMED: line {}: {why}", number + 1),
        };
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| malformed(e.to_string()))?;
        let (line_tenant, sequence) = if value.get("checkpoint").is_some() {
            let wrapper: CheckpointWrapper =
                serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
            let cp = wrapper.checkpoint;
            let row = CheckpointRow {
                sequence: i64::try_from(cp.sequence).map_err(|e| malformed(e.to_string()))?,
                hash: hex::decode(&cp.hash).map_err(|e| malformed(e.to_string()))?,
                signed_at: cp.time,
                key_id: cp.key_id,
                signature: BASE64
                    .decode(&cp.signature)
                    .map_err(|e| malformed(e.to_string()))?,
            };
            let sequence = row.sequence;
            checkpoints.push(row);
            (cp.tenant, sequence)
        } else {
            let record: RecordLine =
                serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
            let line_tenant = record.tenant.clone();
            let row = to_row(record).map_err(malformed)?;
            let sequence = row.sequence;
            rows.push(row);
            (line_tenant, sequence)
        };
        match &tenant {
            None => tenant = Some(line_tenant),
            Some(t) if *t != line_tenant => {
                return Err(ExportFailure {
                    first_bad_sequence: u64::try_from(sequence).unwrap_or(0),
                    reason: "TENANT_MISMATCH".to_owned(),
                });
            }
            Some(_) => {}
        }
    }
    let tenant = tenant.unwrap_or_default();
    let chain_bad = match chain::verify(&tenant, 0, &GENESIS, &rows) {
        Verdict::Valid { .. } => None,
        Verdict::Broken {
            sequence, reason, ..
        } => Some((sequence, reason.to_owned())),
    };
    checkpoints.sort_by_key(|cp| cp.sequence);
    let last = rows.last().map_or(0, |r| r.sequence);
    for cp in &checkpoints {
        let at = u64::try_from(cp.sequence).unwrap_or(0);
        if chain_bad.as_ref().is_some_and(|(bad, _)| *bad <= at) {
            break;
        }
        if cp.sequence > last {
            // Verify the signature first: a forged checkpoint is not evidence of truncation.
            if let Some(reason) = cp.fault(&tenant, Some(&cp.hash), public_keys) {
                return Err(ExportFailure {
                    first_bad_sequence: at,
                    reason,
                });
            }
            return Err(ExportFailure {
                first_bad_sequence: u64::try_from(last + 1).unwrap_or(0),
                reason: chain::truncated(cp.sequence, last),
            });
        }
        // Before the first break the rows are exactly 1..=last, so event `s` is at index `s - 1`.
        let hash = usize::try_from(cp.sequence - 1)
            .ok()
            .and_then(|i| rows.get(i))
            .map(|r| r.hash.as_slice());
        if let Some(reason) = cp.fault(&tenant, hash, public_keys) {
            return Err(ExportFailure {
                first_bad_sequence: at,
                reason,
            });
        }
    }
    if let Some((first_bad_sequence, reason)) = chain_bad {
        return Err(ExportFailure {
            first_bad_sequence,
            reason,
        });
    }
    Ok(VerifiedExport {
        tenant,
        events: u64::try_from(rows.len()).unwrap_or(0),
        checkpoints: u64::try_from(checkpoints.len()).unwrap_or(0),
    })
}

fn to_row(record: RecordLine) -> Result<EventRow, String> {
    let actor_type = match record.actor.kind.as_str() {
        "" => ActorType::Unspecified,
        "api_key" => ActorType::ApiKey,
        "operator" => ActorType::Operator,
        "service" => ActorType::Service,
        "support" => ActorType::Support,
        "anonymous" => ActorType::Anonymous,
        other => return Err(format!("unknown actor type `{other}`")),
    };
    let outcome = match AuditOutcome::from_str_name(&record.outcome) {
        Some(AuditOutcome::Unspecified) => Outcome::Unspecified,
        Some(AuditOutcome::Allowed) => Outcome::Allowed,
        Some(AuditOutcome::Denied) => Outcome::Denied,
        Some(AuditOutcome::Error) => Outcome::Error,
        None => return Err(format!("unknown outcome `{}`", record.outcome)),
    };
    let hex = |field: &str, value: &str| {
        hex::decode(value).map_err(|e| format!("`{field}` is not hex: {e}"))
    };
    Ok(EventRow {
        sequence: i64::try_from(record.sequence).map_err(|e| e.to_string())?,
        prev_hash: hex("prev_hash", &record.prev_hash)?,
        hash: hex("hash", &record.hash)?,
        fields: EventFields {
            event_id: record.event_id,
            occurred_at: record.time,
            producer: record.service,
            meta_request_id: record.meta_request_id,
            actor_type: actor_type as i32,
            actor_id: record.actor.id,
            on_behalf_of: record.actor.on_behalf_of,
            action: record.action,
            resource: record.resource,
            outcome: outcome as i32,
            grpc_code: record.grpc_code,
            reason: record.reason,
            request_id: record.request_id,
            trace_id: record.trace_id,
            source_ip: record.source_ip,
            user_agent: record.user_agent,
            records_affected: i64::try_from(record.records_affected).map_err(|e| e.to_string())?,
        },
    })
}

/// A raw 32-byte Ed25519 public key from its text form: base64 (standard, as in `AuditSigningKey`
/// JSON), hex, or `ed25519 <base64 or hex>`; `None` if it is neither.
#[must_use]
pub fn parse_public_key(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let text = text.strip_prefix("ed25519 ").unwrap_or(text).trim();
    [
        hex::decode(text).ok(),
        BASE64.decode(text).ok(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok(),
    ]
    .into_iter()
    .flatten()
    .find(|key| key.len() == 32)
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use trustmesh_proto::events::v1::{AuditEvent, EventMeta};

    use super::*;
    use crate::chain::{checkpoint_message, to_micros};
    use crate::signing::CheckpointSigner;

    fn rows(n: i64) -> Vec<EventRow> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|sequence| {
                let event = AuditEvent {
                    meta: Some(EventMeta {
                        event_id: format!("e{sequence}"),
                        tenant: "acme".to_owned(),
                        occurred_at: Some(Timestamp {
                            seconds: 1_800_000_000 + sequence,
                            nanos: 123_456_000,
                        }),
                        producer: "ingest".to_owned(),
                        request_id: "meta-req".to_owned(),
                    }),
                    actor_type: ActorType::Service as i32,
                    action: "datasets.get".to_owned(),
                    outcome: Outcome::Denied as i32,
                    ..AuditEvent::default()
                };
                let fields = EventFields::from_event(&event).unwrap();
                let hash = fields.chain_hash("acme", &prev).to_vec();
                EventRow {
                    sequence,
                    fields,
                    prev_hash: std::mem::replace(&mut prev, hash.clone()),
                    hash,
                }
            })
            .collect()
    }

    #[test]
    fn an_export_round_trips_and_tampering_is_named_offline() {
        let dir = tempfile::tempdir().unwrap();
        let signer = CheckpointSigner::open_or_create(&dir.path().join("k")).unwrap();
        let rows = rows(5);
        let signed_at = to_micros(OffsetDateTime::now_utc());
        let cp = CheckpointRow {
            sequence: 4,
            hash: rows[3].hash.clone(),
            signed_at,
            key_id: signer.key_id().to_owned(),
            signature: signer
                .sign(&checkpoint_message("acme", 4, &rows[3].hash, signed_at))
                .to_vec(),
        };
        let export = |rows: &[EventRow]| {
            let mut jsonl = Vec::new();
            for row in rows {
                jsonl.extend(record_line("acme", row));
                if row.sequence == 4 {
                    jsonl.extend(checkpoint_line("acme", &cp));
                }
            }
            if rows.len() < 4 {
                jsonl.extend(checkpoint_line("acme", &cp));
            }
            jsonl
        };
        let public = signer.public_key();
        let keys = [(signer.key_id(), public.as_slice())];
        assert_eq!(
            verify_export(&export(&rows), &keys),
            Ok(VerifiedExport {
                tenant: "acme".to_owned(),
                events: 5,
                checkpoints: 1
            })
        );
        let mut modified = rows.clone();
        modified[1].fields.action = "datasets.delete".to_owned();
        let failure = verify_export(&export(&modified), &keys).unwrap_err();
        assert_eq!(
            (failure.first_bad_sequence, failure.reason.as_str()),
            (2, "HASH_MISMATCH")
        );
        let failure = verify_export(&export(&rows[..2]), &keys).unwrap_err();
        assert_eq!(failure.first_bad_sequence, 3);
        assert_eq!(
            failure.reason,
            "TRUNCATED: checkpoint at 4 but the log ends at 2"
        );
        let failure = verify_export(&export(&rows), &[]).unwrap_err();
        assert_eq!(failure.first_bad_sequence, 4);
        assert!(
            failure.reason.starts_with("CHECKPOINT_KEY_UNKNOWN"),
            "{failure:?}"
        );
        let failure = verify_export(b"{not json\n", &keys).unwrap_err();
        assert_eq!(failure.first_bad_sequence, 1);
        assert_eq!(
            parse_public_key(&BASE64.encode(public)).as_deref(),
            Some(public.as_slice())
        );
        assert_eq!(
            parse_public_key(&hex::encode(public)).as_deref(),
            Some(public.as_slice())
        );
    }
}
