//! The services of the mesh, as named in subjects and consumer names.

use std::fmt;

use crate::subject::{EventKind, SUBJECT_PREFIX};

/// One trustmesh service (ARCHITECTURE.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// Tenants, API keys, webhook endpoints, quotas.
    Tenancy,
    /// Dataset uploads, parsing and row reads.
    Ingest,
    /// Jobs, model training and model outputs.
    Analysis,
    /// Issue detection, trust scores and reports.
    TrustScoring,
    /// Deletion requests, receipts and certificates.
    Deletion,
    /// The hash-chained audit log.
    Audit,
    /// Webhook delivery.
    Notifier,
}

impl Service {
    /// Every service, in the order of ARCHITECTURE.md §1.
    pub const ALL: [Self; 7] = [
        Self::Tenancy,
        Self::Ingest,
        Self::Analysis,
        Self::TrustScoring,
        Self::Deletion,
        Self::Audit,
        Self::Notifier,
    ];

    /// The service's name as used in subjects (`tm.<tenant>.audit.<service>`), consumer names and NATS users.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tenancy => "tenancy",
            Self::Ingest => "ingest",
            Self::Analysis => "analysis",
            Self::TrustScoring => "trust-scoring",
            Self::Deletion => "deletion",
            Self::Audit => "audit",
            Self::Notifier => "notifier",
        }
    }

    /// The service named `name`, if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The event kinds this service publishes (ARCHITECTURE.md §1 "publishes"), besides dead letters
    /// of its own consumers.
    #[must_use]
    pub const fn publishes(self) -> &'static [EventKind] {
        match self {
            Self::Tenancy => &[EventKind::DeletionReceipt, EventKind::Audit(Self::Tenancy)],
            Self::Ingest => &[
                EventKind::DatasetIngested,
                EventKind::DatasetFailed,
                EventKind::DeletionReceipt,
                EventKind::Audit(Self::Ingest),
            ],
            Self::Analysis => &[
                EventKind::AnalysisRequested,
                EventKind::AnalysisFoldRequested,
                EventKind::AnalysisCompleted,
                EventKind::AnalysisFailed,
                EventKind::JobUpdated,
                EventKind::DeletionReceipt,
                EventKind::Audit(Self::Analysis),
            ],
            Self::TrustScoring => &[
                EventKind::ScoresReady,
                EventKind::DeletionReceipt,
                EventKind::Audit(Self::TrustScoring),
            ],
            Self::Deletion => &[
                EventKind::DeletionRequested,
                EventKind::DeletionCompleted,
                EventKind::JobUpdated,
                EventKind::Audit(Self::Deletion),
            ],
            // Reads of the audit log are themselves audited (services/audit/src/grpc.rs), through
            // the same subject as every other service's events.
            Self::Audit => &[EventKind::DeletionReceipt, EventKind::Audit(Self::Audit)],
            Self::Notifier => &[EventKind::DeletionReceipt, EventKind::Audit(Self::Notifier)],
        }
    }

    /// NATS publish permissions of this service's user, all tenants: `tm.*.<domain>.<event>` for each
    /// kind it publishes and `tm.*.dlq.<consumer>` for each of its consumers.
    #[must_use]
    pub fn publish_permissions(self) -> Vec<String> {
        self.publishes()
            .iter()
            .map(|kind| format!("{SUBJECT_PREFIX}.*.{kind}"))
            .chain(
                self.consumers()
                    .map(|c| format!("{SUBJECT_PREFIX}.*.{}", EventKind::DeadLetter(c))),
            )
            .collect()
    }

    /// The durable consumers this service runs.
    pub fn consumers(self) -> impl Iterator<Item = &'static crate::ConsumerSpec> {
        crate::consumers::ALL_CONSUMERS
            .iter()
            .copied()
            .filter(move |c| c.service == self)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
