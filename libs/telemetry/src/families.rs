//! The process-wide metric families: jobs, NATS consumers, webhook deliveries, decrypt failures,
//! audit and deletion throughput.
//!
//! They live once per process and every [`crate::Metrics`] registry renders them, so code deep in a
//! service (a repository, a consumer runner) records without a registry handed down to it; in
//! `trustmesh standalone` all services share them, told apart by their labels. Families whose label
//! values are a closed set are created with every value at zero, so `/metrics` always lists them
//! and a dashboard shows 0 rather than "no data".
//!
//! Labels stay low-cardinality: job kinds and states, stream and durable consumer names, outcomes.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::HistogramFamily;

/// A job's state, as in `trustmesh.v1.Job.State`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum JobState {
    /// Accepted, waiting for a worker.
    Queued,
    /// Being worked on.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

const JOB_STATES: [JobState; 5] = [
    JobState::Queued,
    JobState::Running,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Cancelled,
];

/// What a job does.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum JobKind {
    /// An analysis job (`analysis`).
    Analysis,
    /// A dataset or tenant deletion (`deletion`).
    Deletion,
}

const JOB_KINDS: [JobKind; 2] = [JobKind::Analysis, JobKind::Deletion];

/// How a delivery to a NATS consumer was settled.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ConsumerOutcome {
    /// Handled and acknowledged.
    Acked,
    /// Failed and nak'ed for a later redelivery.
    Retried,
    /// Moved to the dead-letter subject.
    DeadLettered,
    /// Failed fatally; the consumer stopped.
    Stopped,
}

const CONSUMER_OUTCOMES: [ConsumerOutcome; 4] = [
    ConsumerOutcome::Acked,
    ConsumerOutcome::Retried,
    ConsumerOutcome::DeadLettered,
    ConsumerOutcome::Stopped,
];

/// How one webhook delivery attempt ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum WebhookOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The attempt failed and another one is scheduled.
    Retried,
    /// The attempt failed and the retry schedule is exhausted.
    Failed,
    /// The receiver answered 410 Gone: the endpoint was disabled.
    Disabled,
    /// The destination was refused (SSRF guard) and nothing connected to it.
    Refused,
}

const WEBHOOK_OUTCOMES: [WebhookOutcome; 5] = [
    WebhookOutcome::Delivered,
    WebhookOutcome::Retried,
    WebhookOutcome::Failed,
    WebhookOutcome::Disabled,
    WebhookOutcome::Refused,
];

/// How one service's purge for a deletion request ended, as its receipt says.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PurgeOutcome {
    /// The service purged the data and found none left.
    Purged,
    /// The service reported residue it could not remove.
    ResidueFound,
}

const PURGE_OUTCOMES: [PurgeOutcome; 2] = [PurgeOutcome::Purged, PurgeOutcome::ResidueFound];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: JobKind,
    state: JobState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    stream: String,
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    stream: String,
    consumer: String,
    outcome: ConsumerOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    outcome: WebhookOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiptLabels {
    outcome: PurgeOutcome,
}

fn job_duration_histogram() -> Histogram {
    // 0.1 s to ~27 min.
    Histogram::new(exponential_buckets(0.1, 2.0, 15))
}

struct Families {
    job_transitions: Family<JobLabels, Counter>,
    job_duration: HistogramFamily<JobLabels>,
    consumer_pending: Family<ConsumerLabels, Gauge>,
    consumer_ack_pending: Family<ConsumerLabels, Gauge>,
    consumer_deliveries: Family<DeliveryLabels, Counter>,
    consumer_redeliveries: Family<ConsumerLabels, Counter>,
    dead_letters: Family<ConsumerLabels, Counter>,
    webhook_deliveries: Family<WebhookLabels, Counter>,
    decrypt_failures: Counter,
    audit_events: Counter,
    deletion_receipts: Family<ReceiptLabels, Counter>,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    let families = Families {
        job_transitions: Family::default(),
        job_duration: HistogramFamily::new_with_constructor(job_duration_histogram),
        consumer_pending: Family::default(),
        consumer_ack_pending: Family::default(),
        consumer_deliveries: Family::default(),
        consumer_redeliveries: Family::default(),
        dead_letters: Family::default(),
        webhook_deliveries: Family::default(),
        decrypt_failures: Counter::default(),
        audit_events: Counter::default(),
        deletion_receipts: Family::default(),
    };
    for kind in JOB_KINDS {
        for state in JOB_STATES {
            drop(
                families
                    .job_transitions
                    .get_or_create(&JobLabels { kind, state }),
            );
        }
        for state in [JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
            drop(
                families
                    .job_duration
                    .get_or_create(&JobLabels { kind, state }),
            );
        }
    }
    for outcome in WEBHOOK_OUTCOMES {
        drop(
            families
                .webhook_deliveries
                .get_or_create(&WebhookLabels { outcome }),
        );
    }
    for outcome in PURGE_OUTCOMES {
        drop(
            families
                .deletion_receipts
                .get_or_create(&ReceiptLabels { outcome }),
        );
    }
    families
});

/// Registers the process-wide families in `registry`.
pub(crate) fn register(registry: &mut Registry) {
    let f = &*FAMILIES;
    registry.register(
        "job_transitions",
        "Jobs that entered each state, by kind",
        f.job_transitions.clone(),
    );
    registry.register_with_unit(
        "job_duration",
        "Time from a job's creation to its end, by kind and final state",
        Unit::Seconds,
        f.job_duration.clone(),
    );
    registry.register(
        "consumer_pending",
        "Messages of the stream the durable consumer has not yet been delivered (its lag)",
        f.consumer_pending.clone(),
    );
    registry.register(
        "consumer_ack_pending",
        "Messages delivered to the durable consumer and not yet acknowledged",
        f.consumer_ack_pending.clone(),
    );
    registry.register(
        "consumer_deliveries",
        "Deliveries handled by the consumer, by how they were settled",
        f.consumer_deliveries.clone(),
    );
    registry.register(
        "consumer_redeliveries",
        "Deliveries that were not the message's first",
        f.consumer_redeliveries.clone(),
    );
    registry.register(
        "dead_letters",
        "Messages moved to the dead-letter subject, by the consumer that gave up on them",
        f.dead_letters.clone(),
    );
    registry.register(
        "webhook_deliveries",
        "Webhook delivery attempts by outcome",
        f.webhook_deliveries.clone(),
    );
    registry.register(
        "decrypt_failures",
        "Sealed objects or fields that failed to open (destroyed or unknown key, tampering, key store down)",
        f.decrypt_failures.clone(),
    );
    registry.register(
        "audit_events",
        "Audit events appended to the hash-chained log",
        f.audit_events.clone(),
    );
    registry.register(
        "deletion_receipts",
        "Per-service purge receipts recorded for deletion requests, by outcome",
        f.deletion_receipts.clone(),
    );
}

/// Jobs of one kind: `trustmesh_job_transitions_total{kind, state}` and
/// `trustmesh_job_duration_seconds{kind, state}`.
#[derive(Clone, Copy, Debug)]
pub struct JobMetrics {
    kind: JobKind,
}

impl JobMetrics {
    /// The metrics of jobs of `kind`.
    #[must_use]
    pub fn of(kind: JobKind) -> Self {
        Self { kind }
    }

    /// Counts a job entering `state`.
    pub fn entered(&self, state: JobState) {
        FAMILIES
            .job_transitions
            .get_or_create(&JobLabels {
                kind: self.kind,
                state,
            })
            .inc();
    }

    /// Counts a job ending in `state` after `elapsed` since its creation.
    pub fn finished(&self, state: JobState, elapsed: Duration) {
        self.entered(state);
        FAMILIES
            .job_duration
            .get_or_create(&JobLabels {
                kind: self.kind,
                state,
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// One durable consumer of a stream: `trustmesh_consumer_pending`, `trustmesh_consumer_ack_pending`,
/// `trustmesh_consumer_deliveries_total{outcome}`, `trustmesh_consumer_redeliveries_total` and
/// `trustmesh_dead_letters_total`, labelled `{stream, consumer}`.
#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    labels: ConsumerLabels,
}

impl ConsumerMetrics {
    /// The metrics of durable `consumer` on `stream`, every series created at zero.
    #[must_use]
    pub fn new(stream: &str, consumer: &str) -> Self {
        let labels = ConsumerLabels {
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
        };
        let f = &*FAMILIES;
        drop(f.consumer_pending.get_or_create(&labels));
        drop(f.consumer_ack_pending.get_or_create(&labels));
        drop(f.consumer_redeliveries.get_or_create(&labels));
        drop(f.dead_letters.get_or_create(&labels));
        for outcome in CONSUMER_OUTCOMES {
            drop(
                f.consumer_deliveries
                    .get_or_create(&Self::delivery_labels(&labels, outcome)),
            );
        }
        Self { labels }
    }

    fn delivery_labels(labels: &ConsumerLabels, outcome: ConsumerOutcome) -> DeliveryLabels {
        DeliveryLabels {
            stream: labels.stream.clone(),
            consumer: labels.consumer.clone(),
            outcome,
        }
    }

    /// Sets the consumer's lag (`pending`) and unacknowledged deliveries (`ack_pending`), as the
    /// server last reported them.
    pub fn set_pending(&self, pending: u64, ack_pending: u64) {
        let as_gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        FAMILIES
            .consumer_pending
            .get_or_create(&self.labels)
            .set(as_gauge(pending));
        FAMILIES
            .consumer_ack_pending
            .get_or_create(&self.labels)
            .set(as_gauge(ack_pending));
    }

    /// Counts a delivery; one that is not the message's first also counts as a redelivery.
    pub fn delivered(&self, delivery_count: i64, outcome: ConsumerOutcome) {
        if delivery_count > 1 {
            FAMILIES
                .consumer_redeliveries
                .get_or_create(&self.labels)
                .inc();
        }
        FAMILIES
            .consumer_deliveries
            .get_or_create(&Self::delivery_labels(&self.labels, outcome))
            .inc();
    }

    /// Counts a message moved to the dead-letter subject (also one the server gave up redelivering).
    pub fn dead_lettered(&self) {
        FAMILIES.dead_letters.get_or_create(&self.labels).inc();
    }
}

/// `trustmesh_webhook_deliveries_total{outcome}`; the notifier records each delivery attempt.
#[derive(Clone, Copy, Debug)]
pub struct WebhookMetrics;

impl WebhookMetrics {
    /// Counts one delivery attempt that ended with `outcome`.
    pub fn attempt(outcome: WebhookOutcome) {
        FAMILIES
            .webhook_deliveries
            .get_or_create(&WebhookLabels { outcome })
            .inc();
    }
}

/// `trustmesh_decrypt_failures_total`.
#[derive(Clone, Copy, Debug)]
pub struct DecryptMetrics;

impl DecryptMetrics {
    /// Counts a sealed object or field that failed to open.
    pub fn failed() {
        FAMILIES.decrypt_failures.inc();
    }
}

/// `trustmesh_audit_events_total`.
#[derive(Clone, Copy, Debug)]
pub struct AuditMetrics;

impl AuditMetrics {
    /// Counts `count` events appended to the audit log.
    pub fn appended(count: u64) {
        FAMILIES.audit_events.inc_by(count);
    }
}

/// `trustmesh_deletion_receipts_total{outcome}` (deletion requests themselves are jobs of kind
/// [`JobKind::Deletion`]).
#[derive(Clone, Copy, Debug)]
pub struct DeletionMetrics;

impl DeletionMetrics {
    /// Counts a service's purge receipt that ended with `outcome`.
    pub fn receipt(outcome: PurgeOutcome) {
        FAMILIES
            .deletion_receipts
            .get_or_create(&ReceiptLabels { outcome })
            .inc();
    }
}
