//! JetStream streams, declared once; `libs/bus` turns each [`StreamSpec`] into a stream config and
//! ensures it at start.

use std::time::Duration;

const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 60 * 60)
}

/// Window within which JetStream drops a publish whose `Nats-Msg-Id` it has already seen.
///
/// Long enough to cover an outbox relay restarting and republishing what it sent before a crash.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Largest message a stream accepts. Events carry ids and references only, never customer content,
/// so anything near this size is a bug.
pub const MAX_MESSAGE_BYTES: i32 = 64 * 1024;

/// A JetStream stream as plain data (limits retention, file storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamSpec {
    /// Stream name.
    pub name: &'static str,
    /// Subjects the stream captures; streams never overlap.
    pub subjects: &'static [&'static str],
    /// What the stream carries.
    pub description: &'static str,
    /// How long a message is kept (consumers must keep up well within this).
    pub max_age: Duration,
    /// Dedupe window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// Largest accepted message, in bytes.
    pub max_message_bytes: i32,
}

/// Dataset lifecycle events: `tm.<tenant>.dataset.{ingested,failed}`.
pub const TM_DATASET: StreamSpec = StreamSpec {
    name: "TM_DATASET",
    subjects: &["tm.*.dataset.>"],
    description: "Dataset lifecycle events: ingested, failed.",
    max_age: days(7),
    duplicate_window: DUPLICATE_WINDOW,
    max_message_bytes: MAX_MESSAGE_BYTES,
};

/// Analysis work and results: `tm.<tenant>.analysis.{requested,fold.requested,completed,failed}`.
pub const TM_ANALYSIS: StreamSpec = StreamSpec {
    name: "TM_ANALYSIS",
    subjects: &["tm.*.analysis.>"],
    description: "Analysis requests, fold work items and results.",
    max_age: days(7),
    duplicate_window: DUPLICATE_WINDOW,
    max_message_bytes: MAX_MESSAGE_BYTES,
};

/// Job state changes: `tm.<tenant>.job.updated`.
pub const TM_JOB: StreamSpec = StreamSpec {
    name: "TM_JOB",
    subjects: &["tm.*.job.>"],
    description: "Job state and progress changes.",
    max_age: days(3),
    duplicate_window: DUPLICATE_WINDOW,
    max_message_bytes: MAX_MESSAGE_BYTES,
};

/// Trust scores computed for a dataset: `tm.<tenant>.scores.ready`.
pub const TM_SCORES: StreamSpec = StreamSpec {
    name: "TM_SCORES",
    subjects: &["tm.*.scores.>"],
    description: "Trust scores and reports ready.",
    max_age: days(7),
    duplicate_window: DUPLICATE_WINDOW,
    max_message_bytes: MAX_MESSAGE_BYTES,
};

/// Deletion requests, receipts and completions: `tm.<tenant>.deletion.{requested,receipt,completed}`.
pub const TM_DELETION: StreamSpec = StreamSpec {
    name: "TM_DELETION",
    subjects: &["tm.*.deletion.>"],
    description: "Deletion requests, per-service receipts and completions.",
    max_age: days(30),
    duplicate_window: DUPLICATE_WINDOW,
    max_message_bytes: MAX_MESSAGE_BYTES,
};

/// Audit events from every service: `tm.<tenant>.audit.<service>`.
pub const TM_AUDIT: StreamSpec = StreamSpec {
    name: "TM_AUDIT",
    subjects: &["tm.*.audit.>"],
    description: "Audit events (who did what to which resource, never content), one subject per service.",
    max_age: days(30),
    duplicate_window: DUPLICATE_WINDOW,
    max_message_bytes: MAX_MESSAGE_BYTES,
};

/// Poison messages moved aside by consumers: `tm.<tenant>.dlq.<consumer>`.
pub const TM_DLQ: StreamSpec = StreamSpec {
    name: "TM_DLQ",
    subjects: &["tm.*.dlq.>"],
    description: "Dead letters: messages a consumer could not process, kept for inspection and replay.",
    max_age: days(30),
    duplicate_window: DUPLICATE_WINDOW,
    max_message_bytes: MAX_MESSAGE_BYTES,
};

/// Every stream, to be ensured at start.
pub const ALL_STREAMS: &[&StreamSpec] = &[
    &TM_DATASET,
    &TM_ANALYSIS,
    &TM_JOB,
    &TM_SCORES,
    &TM_DELETION,
    &TM_AUDIT,
    &TM_DLQ,
];

/// The streams a tenant's deletion purges of `tm.<tenant>.>`: all but `TM_AUDIT`, whose events are
/// retained on a legal-obligation basis (see `AUDIT_DELETION`).
pub fn tenant_purged_streams() -> impl Iterator<Item = &'static StreamSpec> {
    ALL_STREAMS
        .iter()
        .copied()
        .filter(|spec| spec.name != TM_AUDIT.name)
}

/// NATS KV bucket through which tenancy replicates API-key digests and tenant state to every service.
pub const AUTH_KV_BUCKET: &str = "tm_auth";
