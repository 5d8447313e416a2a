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
    /// What it writes to the audit log.
    pub audit: ConsumerAudit,
}

/// What a consumer writes to its tenant's audit log: the consumer half of "every access to tenant
/// data is audited" (the RPC half is the gRPC handlers'). A test runs the mesh and holds every
/// consumer of [`ALL_CONSUMERS`] to this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsumerAudit {
    /// It reads or changes tenant data: exactly one event, by the consumer's service, with one of
    /// `actions`, for each message on `tm.<tenant>.<on>` it handles (a redelivery adds none).
    Each {
        /// The event kind (subject after the tenant) whose messages are audited.
        on: &'static str,
        /// The actions the event may carry (e.g. one per deletion scope).
        actions: &'static [&'static str],
    },
    /// It touches no tenant data; why.
    Nothing(&'static str),
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

/// The event kind every deletion consumer handles.
const DELETION_REQUESTED: &str = "deletion.requested";
const ACK_WAIT: Duration = Duration::from_secs(30);
const MAX_DELIVER: i64 = 5;
const MAX_ACK_PENDING: i64 = 256;

const fn deletion_consumer(
    durable_name: &'static str,
    service: Service,
    description: &'static str,
    audit: ConsumerAudit,
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
        audit,
    }
}

/// tenancy: deletes a tenant's keys, webhook secrets and records on `deletion.requested`.
pub const TENANCY_DELETION: ConsumerSpec = deletion_consumer(
    "tenancy-deletion",
    Service::Tenancy,
    "tenancy deletes tenant records, key digests and webhook secrets, then publishes its receipt.",
    ConsumerAudit::Each {
        on: DELETION_REQUESTED,
        actions: &["datasets.delete", "tenants.delete"],
    },
);

/// ingest: deletes raw uploads and parsed datasets on `deletion.requested`.
pub const INGEST_DELETION: ConsumerSpec = deletion_consumer(
    "ingest-deletion",
    Service::Ingest,
    "ingest deletes uploads and parsed datasets, then publishes its receipt.",
    ConsumerAudit::Each {
        on: DELETION_REQUESTED,
        actions: &["datasets.delete"],
    },
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
    description: "analysis runs a job: reads the rows from ingest, featurizes, trains K folds, stores the outputs.",
    audit: ConsumerAudit::Each {
        on: "analysis.requested",
        actions: &["analysis.run"],
    },
};

/// analysis: trains one cross-validation fold of a large job on `analysis.fold.requested`. Every
/// replica binds it, so a job's folds spread over the replicas; a fold cut off by a crash is
/// redelivered after the ack wait.
pub const ANALYSIS_FOLDS: ConsumerSpec = ConsumerSpec {
    durable_name: "analysis-folds",
    service: Service::Analysis,
    stream: &TM_ANALYSIS,
    filter_subject: "tm.*.analysis.fold.requested",
    max_deliver: MAX_DELIVER,
    ack_wait: ACK_WAIT,
    max_ack_pending: MAX_ACK_PENDING,
    description: "analysis trains one fold of a large job and stores its encrypted out-of-fold predictions.",
    audit: ConsumerAudit::Each {
        on: "analysis.fold.requested",
        actions: &["analysis.fold"],
    },
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
    audit: ConsumerAudit::Nothing("marks the job done from the event; reads no tenant data."),
};

/// analysis: deletes jobs and model outputs on `deletion.requested`.
pub const ANALYSIS_DELETION: ConsumerSpec = deletion_consumer(
    "analysis-deletion",
    Service::Analysis,
    "analysis deletes jobs and model outputs, then publishes its receipt.",
    ConsumerAudit::Each {
        on: DELETION_REQUESTED,
        actions: &["jobs.delete"],
    },
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
    audit: ConsumerAudit::Each {
        on: "analysis.completed",
        actions: &["reports.create"],
    },
};

/// trust-scoring: deletes reports, scores and corrections on `deletion.requested`.
pub const TRUST_SCORING_DELETION: ConsumerSpec = deletion_consumer(
    "trust-scoring-deletion",
    Service::TrustScoring,
    "trust-scoring deletes reports, scores and corrections, then publishes its receipt.",
    ConsumerAudit::Each {
        on: DELETION_REQUESTED,
        actions: &["reports.delete"],
    },
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
    audit: ConsumerAudit::Nothing(
        "records each service's counts; the certificate it signs is audited once, as deletion.certificates.issue.",
    ),
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
    audit: ConsumerAudit::Nothing("is the audit log itself."),
};

/// audit: answers `deletion.requested` with an empty receipt; audit events are retained, not shredded.
pub const AUDIT_DELETION: ConsumerSpec = deletion_consumer(
    "audit-deletion",
    Service::Audit,
    "audit keeps the tenant's audit events (retained on a legal-obligation basis, never shredded with \
     the tenant) and publishes an empty receipt.",
    ConsumerAudit::Nothing("keeps the audit log (retained, not shredded) and deletes nothing."),
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
    audit: ConsumerAudit::Nothing(
        "reads event metadata (names, states) to queue webhooks; no rows.",
    ),
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
    audit: ConsumerAudit::Nothing(
        "reads event metadata (names, states) to queue webhooks; no rows.",
    ),
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
    audit: ConsumerAudit::Nothing(
        "reads event metadata (names, states) to queue webhooks; no rows.",
    ),
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
    audit: ConsumerAudit::Each {
        on: "deletion.requested",
        actions: &["webhookDeliveries.delete"],
    },
};

/// Every durable consumer of the mesh.
pub const ALL_CONSUMERS: &[&ConsumerSpec] = &[
    &TENANCY_DELETION,
    &INGEST_DELETION,
    &ANALYSIS_REQUESTED,
    &ANALYSIS_FOLDS,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::filter_matches;

    #[test]
    fn audited_messages_are_ones_the_consumer_receives() {
        for consumer in ALL_CONSUMERS {
            match consumer.audit {
                ConsumerAudit::Each { on, actions } => {
                    assert!(
                        filter_matches(consumer.filter_subject, &format!("tm.acme.{on}")),
                        "{}: {on}",
                        consumer.durable_name
                    );
                    assert!(!actions.is_empty(), "{}", consumer.durable_name);
                }
                ConsumerAudit::Nothing(why) => assert!(!why.is_empty()),
            }
        }
        assert!(!filter_matches(
            "tm.*.deletion.requested",
            "tm.acme.deletion.receipt"
        ));
    }
}
