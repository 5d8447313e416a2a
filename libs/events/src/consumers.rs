//! Durable pull consumers, one set per service (ARCHITECTURE.md §1 "consumes"), declared once.
//!
//! Every replica of a service binds the same durable, so replicas share the work. `libs/bus` turns each
//! [`ConsumerSpec`] into a pull-consumer config (explicit ack) and ensures it at start.

use std::time::Duration;

use crate::Service;
use crate::streams::{
    StreamSpec, TM_ANALYSIS, TM_AUDIT, TM_DATASET, TM_DELETION, TM_JOB, TM_SCORES,
};
use crate::subject::SubjectFilter;
use crate::tenant::TenantId;

/// A durable pull consumer as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConsumerSpec {
    /// Durable name, `<service>-<what>`; also the last token of its dead-letter subject.
    pub durable_name: &'static str,
    /// The service that runs it.
    pub service: Service,
    /// The stream it reads.
    pub stream: &'static StreamSpec,
    /// Filter subject within the stream, always `tm.*.<domain>.<...>` (all tenants).
    pub filter_subject: &'static str,
    /// Deliveries before the message is given up on and dead-lettered.
    pub max_deliver: i64,
    /// How long a delivery may stay unacked before redelivery; long handlers send progress acks.
    pub ack_wait: Duration,
    /// Unacked deliveries in flight across all replicas.
    pub max_ack_pending: i64,
    /// What it does.
    pub description: &'static str,
}

impl ConsumerSpec {
    /// This consumer's filter restricted to one tenant (e.g. for per-tenant fairness or replays).
    #[must_use]
    pub fn filter_for_tenant(&self, tenant: &TenantId) -> SubjectFilter {
        let rest = self
            .filter_subject
            .strip_prefix("tm.*.")
            .unwrap_or(self.filter_subject);
        SubjectFilter::from_parts(format!("tm.{tenant}.{rest}"))
    }
}

const ACK_WAIT: Duration = Duration::from_secs(30);
const MAX_DELIVER: i64 = 5;
const MAX_ACK_PENDING: i64 = 256;

const fn deletion_consumer(
    durable_name: &'static str,
    service: Service,
    description: &'static str,
) -> ConsumerSpec {
    ConsumerSpec {
        durable_name,
        service,
        stream: &TM_DELETION,
        filter_subject: "tm.*.deletion.requested",
        // Deletion must not be given up on lightly: a dead-lettered request blocks the certificate.
        max_deliver: 10,
        ack_wait: Duration::from_secs(60),
        max_ack_pending: 64,
        description,
    }
}

/// tenancy: deletes a tenant's keys, webhook secrets and records on `deletion.requested`.
pub const TENANCY_DELETION: ConsumerSpec = deletion_consumer(
    "tenancy-deletion",
    Service::Tenancy,
    "tenancy deletes tenant records, key digests and webhook secrets, then publishes its receipt.",
);

/// ingest: deletes raw uploads and parsed datasets on `deletion.requested`.
pub const INGEST_DELETION: ConsumerSpec = deletion_consumer(
    "ingest-deletion",
    Service::Ingest,
    "ingest deletes uploads and parsed datasets, then publishes its receipt.",
);

/// analysis: starts a job on `analysis.requested`.
pub const ANALYSIS_REQUESTED: ConsumerSpec = ConsumerSpec {
    durable_name: "analysis-requested",
    service: Service::Analysis,
    stream: &TM_ANALYSIS,
    filter_subject: "tm.*.analysis.requested",
    max_deliver: MAX_DELIVER,
    ack_wait: ACK_WAIT,
    max_ack_pending: MAX_ACK_PENDING,
    description: "analysis plans a job: featurizes and fans out cross-validation folds.",
};

/// analysis: trains one cross-validation fold on `analysis.fold.requested`.
pub const ANALYSIS_FOLD: ConsumerSpec = ConsumerSpec {
    durable_name: "analysis-fold",
    service: Service::Analysis,
    stream: &TM_ANALYSIS,
    filter_subject: "tm.*.analysis.fold.*",
    max_deliver: MAX_DELIVER,
    // Training is long: the handler sends progress acks well within this.
    ack_wait: Duration::from_secs(120),
    // Few in flight: each is CPU-heavy, and a replica takes one per core.
    max_ack_pending: 32,
    description: "analysis trains one K-fold model and stores its out-of-sample predictions.",
};

/// analysis: marks the job SUCCEEDED on `scores.ready`.
pub const ANALYSIS_SCORES: ConsumerSpec = ConsumerSpec {
    durable_name: "analysis-scores",
    service: Service::Analysis,
    stream: &TM_SCORES,
    filter_subject: "tm.*.scores.ready",
    max_deliver: MAX_DELIVER,
    ack_wait: ACK_WAIT,
    max_ack_pending: MAX_ACK_PENDING,
    description: "analysis completes the job once its trust scores are ready.",
};

/// analysis: deletes jobs and model outputs on `deletion.requested`.
pub const ANALYSIS_DELETION: ConsumerSpec = deletion_consumer(
    "analysis-deletion",
    Service::Analysis,
    "analysis deletes jobs and model outputs, then publishes its receipt.",
);

/// trust-scoring: runs the detectors on `analysis.completed`.
pub const TRUST_SCORING_ANALYSIS: ConsumerSpec = ConsumerSpec {
    durable_name: "trust-scoring-analysis",
    service: Service::TrustScoring,
    stream: &TM_ANALYSIS,
    filter_subject: "tm.*.analysis.completed",
    max_deliver: MAX_DELIVER,
    ack_wait: Duration::from_secs(120),
    max_ack_pending: 32,
    description: "trust-scoring runs every issue detector, stores scores and the report, publishes scores.ready.",
};

/// trust-scoring: deletes reports, scores and corrections on `deletion.requested`.
pub const TRUST_SCORING_DELETION: ConsumerSpec = deletion_consumer(
    "trust-scoring-deletion",
    Service::TrustScoring,
    "trust-scoring deletes reports, scores and corrections, then publishes its receipt.",
);

/// deletion: collects receipts on `deletion.receipt`.
pub const DELETION_RECEIPT: ConsumerSpec = ConsumerSpec {
    durable_name: "deletion-receipt",
    service: Service::Deletion,
    stream: &TM_DELETION,
    filter_subject: "tm.*.deletion.receipt",
    max_deliver: 10,
    ack_wait: ACK_WAIT,
    max_ack_pending: MAX_ACK_PENDING,
    description: "deletion records each service's receipt and signs the certificate once all are in.",
};

/// audit: appends every audit event to the tenant's hash chain.
pub const AUDIT_EVENTS: ConsumerSpec = ConsumerSpec {
    durable_name: "audit-events",
    service: Service::Audit,
    stream: &TM_AUDIT,
    filter_subject: "tm.*.audit.>",
    // An audit event must not be lost: retry long before dead-lettering.
    max_deliver: 20,
    ack_wait: ACK_WAIT,
    max_ack_pending: 1024,
    description: "audit appends each event to the tenant's hash-chained log.",
};

/// audit: answers `deletion.requested` with an empty receipt; audit events are retained, not shredded.
pub const AUDIT_DELETION: ConsumerSpec = deletion_consumer(
    "audit-deletion",
    Service::Audit,
    "audit keeps the tenant's audit events (retained on a legal-obligation basis, never shredded with \
     the tenant) and publishes an empty receipt.",
);

/// notifier: webhooks for job changes.
pub const NOTIFIER_JOB: ConsumerSpec = ConsumerSpec {
    durable_name: "notifier-job",
    service: Service::Notifier,
    stream: &TM_JOB,
    filter_subject: "tm.*.job.*",
    max_deliver: MAX_DELIVER,
    ack_wait: ACK_WAIT,
    max_ack_pending: MAX_ACK_PENDING,
    description: "notifier queues webhook deliveries for job state changes.",
};

/// notifier: webhooks for scores ready.
pub const NOTIFIER_SCORES: ConsumerSpec = ConsumerSpec {
    durable_name: "notifier-scores",
    service: Service::Notifier,
    stream: &TM_SCORES,
    filter_subject: "tm.*.scores.ready",
    max_deliver: MAX_DELIVER,
    ack_wait: ACK_WAIT,
    max_ack_pending: MAX_ACK_PENDING,
    description: "notifier queues webhook deliveries for reports ready.",
};

/// notifier: webhooks for dataset events.
pub const NOTIFIER_DATASET: ConsumerSpec = ConsumerSpec {
    durable_name: "notifier-dataset",
    service: Service::Notifier,
    stream: &TM_DATASET,
    filter_subject: "tm.*.dataset.*",
    max_deliver: MAX_DELIVER,
    ack_wait: ACK_WAIT,
    max_ack_pending: MAX_ACK_PENDING,
    description: "notifier queues webhook deliveries for dataset ingested/failed.",
};

/// notifier: webhooks for deletion events.
pub const NOTIFIER_DELETION: ConsumerSpec = ConsumerSpec {
    durable_name: "notifier-deletion",
    service: Service::Notifier,
    stream: &TM_DELETION,
    filter_subject: "tm.*.deletion.*",
    max_deliver: MAX_DELIVER,
    ack_wait: ACK_WAIT,
    max_ack_pending: MAX_ACK_PENDING,
    description: "notifier queues webhook deliveries for deletion requested/completed.",
};

/// Every durable consumer of the mesh.
pub const ALL_CONSUMERS: &[&ConsumerSpec] = &[
    &TENANCY_DELETION,
    &INGEST_DELETION,
    &ANALYSIS_REQUESTED,
    &ANALYSIS_FOLD,
    &ANALYSIS_SCORES,
    &ANALYSIS_DELETION,
    &TRUST_SCORING_ANALYSIS,
    &TRUST_SCORING_DELETION,
    &DELETION_RECEIPT,
    &AUDIT_EVENTS,
    &AUDIT_DELETION,
    &NOTIFIER_JOB,
    &NOTIFIER_SCORES,
    &NOTIFIER_DATASET,
    &NOTIFIER_DELETION,
];

/// The consumer with durable name `name`, if any.
#[must_use]
pub fn consumer_by_name(name: &str) -> Option<&'static ConsumerSpec> {
    ALL_CONSUMERS
        .iter()
        .copied()
        .find(|c| c.durable_name == name)
}
