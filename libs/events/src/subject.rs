//! Subjects `tm.<tenant>.<domain>.<event>`, built only from a [`TenantId`] and a typed [`EventKind`].

use std::fmt;

use crate::Service;
use crate::consumers::{ConsumerSpec, consumer_by_name};
use crate::streams::{
    StreamSpec, TM_ANALYSIS, TM_AUDIT, TM_DATASET, TM_DELETION, TM_DLQ, TM_JOB, TM_SCORES,
};
use crate::tenant::{TenantId, TenantIdError};

/// First token of every trustmesh subject.
pub const SUBJECT_PREFIX: &str = "tm";

/// The domain token of a subject; each domain has exactly one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    /// `dataset`: dataset lifecycle.
    Dataset,
    /// `analysis`: analysis work and results.
    Analysis,
    /// `job`: job state changes.
    Job,
    /// `scores`: trust scores ready.
    Scores,
    /// `deletion`: deletion requests and receipts.
    Deletion,
    /// `audit`: audit events.
    Audit,
    /// `dlq`: dead letters.
    DeadLetter,
}

impl Domain {
    /// Every domain.
    pub const ALL: [Self; 7] = [
        Self::Dataset,
        Self::Analysis,
        Self::Job,
        Self::Scores,
        Self::Deletion,
        Self::Audit,
        Self::DeadLetter,
    ];

    /// The domain token.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Dataset => "dataset",
            Self::Analysis => "analysis",
            Self::Job => "job",
            Self::Scores => "scores",
            Self::Deletion => "deletion",
            Self::Audit => "audit",
            Self::DeadLetter => "dlq",
        }
    }

    /// The stream that captures this domain's subjects.
    #[must_use]
    pub const fn stream(self) -> &'static StreamSpec {
        match self {
            Self::Dataset => &TM_DATASET,
            Self::Analysis => &TM_ANALYSIS,
            Self::Job => &TM_JOB,
            Self::Scores => &TM_SCORES,
            Self::Deletion => &TM_DELETION,
            Self::Audit => &TM_AUDIT,
            Self::DeadLetter => &TM_DLQ,
        }
    }

    fn from_token(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == token)
    }
}

/// What a subject carries: its `<domain>.<event>` part. Payloads are in `trustmesh.events.v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `dataset.ingested` (`DatasetIngested`).
    DatasetIngested,
    /// `dataset.failed` (`DatasetFailed`).
    DatasetFailed,
    /// `analysis.requested` (`AnalysisRequested`).
    AnalysisRequested,
    /// `analysis.fold.requested` (`AnalysisFoldRequested`): one cross-validation fold work item.
    AnalysisFoldRequested,
    /// `analysis.completed` (`AnalysisCompleted`).
    AnalysisCompleted,
    /// `analysis.failed` (`AnalysisFailed`).
    AnalysisFailed,
    /// `job.updated` (`JobUpdated`).
    JobUpdated,
    /// `scores.ready` (`ScoresReady`).
    ScoresReady,
    /// `deletion.requested` (`DeletionRequested`).
    DeletionRequested,
    /// `deletion.receipt` (`DeletionReceipt`), one per store-owning service.
    DeletionReceipt,
    /// `deletion.completed` (`DeletionCompleted`): all receipts in, certificate signed.
    DeletionCompleted,
    /// `audit.<service>` (`AuditEvent`) from the given service.
    Audit(Service),
    /// `dlq.<consumer>`: a message the given consumer gave up on, with its original headers.
    DeadLetter(&'static ConsumerSpec),
}

impl EventKind {
    /// Every kind without a parameter (`Audit` and `DeadLetter` take one).
    pub const FIXED: [Self; 11] = [
        Self::DatasetIngested,
        Self::DatasetFailed,
        Self::AnalysisRequested,
        Self::AnalysisFoldRequested,
        Self::AnalysisCompleted,
        Self::AnalysisFailed,
        Self::JobUpdated,
        Self::ScoresReady,
        Self::DeletionRequested,
        Self::DeletionReceipt,
        Self::DeletionCompleted,
    ];

    /// The domain token.
    #[must_use]
    pub const fn domain(self) -> Domain {
        match self {
            Self::DatasetIngested | Self::DatasetFailed => Domain::Dataset,
            Self::AnalysisRequested
            | Self::AnalysisFoldRequested
            | Self::AnalysisCompleted
            | Self::AnalysisFailed => Domain::Analysis,
            Self::JobUpdated => Domain::Job,
            Self::ScoresReady => Domain::Scores,
            Self::DeletionRequested | Self::DeletionReceipt | Self::DeletionCompleted => {
                Domain::Deletion
            }
            Self::Audit(_) => Domain::Audit,
            Self::DeadLetter(_) => Domain::DeadLetter,
        }
    }

    /// The token(s) after the domain, e.g. `ingested` or `fold.requested`.
    #[must_use]
    pub const fn event(self) -> &'static str {
        match self {
            Self::DatasetIngested => "ingested",
            Self::DatasetFailed | Self::AnalysisFailed => "failed",
            Self::AnalysisRequested | Self::DeletionRequested => "requested",
            Self::AnalysisFoldRequested => "fold.requested",
            Self::AnalysisCompleted | Self::DeletionCompleted => "completed",
            Self::JobUpdated => "updated",
            Self::ScoresReady => "ready",
            Self::DeletionReceipt => "receipt",
            Self::Audit(service) => service.as_str(),
            Self::DeadLetter(consumer) => consumer.durable_name,
        }
    }

    /// Fully qualified protobuf message of the payload; `None` for dead letters, which carry the
    /// original message unchanged.
    #[must_use]
    pub const fn payload_type(self) -> Option<&'static str> {
        Some(match self {
            Self::DatasetIngested => "trustmesh.events.v1.DatasetIngested",
            Self::DatasetFailed => "trustmesh.events.v1.DatasetFailed",
            Self::AnalysisRequested => "trustmesh.events.v1.AnalysisRequested",
            Self::AnalysisFoldRequested => "trustmesh.events.v1.AnalysisFoldRequested",
            Self::AnalysisCompleted => "trustmesh.events.v1.AnalysisCompleted",
            Self::AnalysisFailed => "trustmesh.events.v1.AnalysisFailed",
            Self::JobUpdated => "trustmesh.events.v1.JobUpdated",
            Self::ScoresReady => "trustmesh.events.v1.ScoresReady",
            Self::DeletionRequested => "trustmesh.events.v1.DeletionRequested",
            Self::DeletionReceipt => "trustmesh.events.v1.DeletionReceipt",
            Self::DeletionCompleted => "trustmesh.events.v1.DeletionCompleted",
            Self::Audit(_) => "trustmesh.events.v1.AuditEvent",
            Self::DeadLetter(_) => return None,
        })
    }

    /// The stream that captures this kind.
    #[must_use]
    pub const fn stream(self) -> &'static StreamSpec {
        self.domain().stream()
    }

    fn parse(domain: &str, event: &str) -> Option<Self> {
        match Domain::from_token(domain)? {
            Domain::Audit => Service::from_name(event).map(Self::Audit),
            Domain::DeadLetter => consumer_by_name(event).map(Self::DeadLetter),
            Domain::Dataset
            | Domain::Analysis
            | Domain::Job
            | Domain::Scores
            | Domain::Deletion => Self::FIXED
                .into_iter()
                .find(|k| k.domain().as_str() == domain && k.event() == event),
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.domain().as_str(), self.event())
    }
}

/// A concrete subject `tm.<tenant>.<domain>.<event>`: no wildcards, at least four tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    tenant: TenantId,
    kind: EventKind,
    rendered: String,
}

/// Why a string is not a trustmesh subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// It does not have the shape `tm.<tenant>.<domain>.<event>`.
    #[error("subject does not have the shape tm.<tenant>.<domain>.<event>")]
    Shape,
    /// The tenant token is not a valid tenant id.
    #[error("subject has an invalid tenant: {0}")]
    Tenant(#[from] TenantIdError),
    /// The `<domain>.<event>` part is not a known event kind.
    #[error("subject names an unknown event {0:?}")]
    UnknownEvent(String),
}

impl Subject {
    /// The subject of `kind` for `tenant`.
    #[must_use]
    pub fn new(tenant: &TenantId, kind: EventKind) -> Self {
        let rendered = format!("{SUBJECT_PREFIX}.{tenant}.{kind}");
        Self {
            tenant: tenant.clone(),
            kind,
            rendered,
        }
    }

    /// `tm.<tenant>.dataset.ingested`.
    #[must_use]
    pub fn dataset_ingested(tenant: &TenantId) -> Self {
        Self::new(tenant, EventKind::DatasetIngested)
    }

    /// `tm.<tenant>.dataset.failed`.
    #[must_use]
    pub fn dataset_failed(tenant: &TenantId) -> Self {
        Self::new(tenant, EventKind::DatasetFailed)
    }

    /// `tm.<tenant>.analysis.requested`.
    #[must_use]
    pub fn analysis_requested(tenant: &TenantId) -> Self {
        Self::new(tenant, EventKind::AnalysisRequested)
    }

    /// `tm.<tenant>.analysis.fold.requested`.
    #[must_use]
    pub fn analysis_fold_requested(tenant: &TenantId) -> Self {
        Self::new(tenant, EventKind::AnalysisFoldRequested)
    }

    /// `tm.<tenant>.analysis.completed`.
    #[must_use]
    pub fn analysis_completed(tenant: &TenantId) -> Self {
        Self::new(tenant, EventKind::AnalysisCompleted)
    }

    /// `tm.<tenant>.analysis.failed`.
    #[must_use]
    pub fn analysis_failed(tenant: &TenantId) -> Self {
        Self::new(tenant, EventKind::AnalysisFailed)
    }

    /// `tm.<tenant>.job.updated`.
    #[must_use]
    pub fn job_updated(tenant: &TenantId) -> Self {
        Self::new(tenant, EventKind::JobUpdated)
    }

    /// `tm.<tenant>.scores.ready`.
    #[must_use]
    pub fn scores_ready(tenant: &TenantId) -> Self {
        Self::new(tenant, EventKind::ScoresReady)
    }

    /// `tm.<tenant>.deletion.requested`.
    #[must_use]
    pub fn deletion_requested(tenant: &TenantId) -> Self {
        Self::new(tenant, EventKind::DeletionRequested)
    }

    /// `tm.<tenant>.deletion.receipt`.
    #[must_use]
    pub fn deletion_receipt(tenant: &TenantId) -> Self {
        Self::new(tenant, EventKind::DeletionReceipt)
    }

    /// `tm.<tenant>.deletion.completed`.
    #[must_use]
    pub fn deletion_completed(tenant: &TenantId) -> Self {
        Self::new(tenant, EventKind::DeletionCompleted)
    }

    /// `tm.<tenant>.audit.<service>`.
    #[must_use]
    pub fn audit(tenant: &TenantId, service: Service) -> Self {
        Self::new(tenant, EventKind::Audit(service))
    }

    /// `tm.<tenant>.dlq.<consumer>`.
    #[must_use]
    pub fn dead_letter(tenant: &TenantId, consumer: &'static ConsumerSpec) -> Self {
        Self::new(tenant, EventKind::DeadLetter(consumer))
    }

    /// Parses a received subject back into tenant and kind.
    ///
    /// # Errors
    /// [`SubjectError`] if `subject` is not one this crate builds.
    pub fn parse(subject: &str) -> Result<Self, SubjectError> {
        let mut tokens = subject.splitn(4, '.');
        let (Some(SUBJECT_PREFIX), Some(tenant), Some(domain), Some(event)) =
            (tokens.next(), tokens.next(), tokens.next(), tokens.next())
        else {
            return Err(SubjectError::Shape);
        };
        let tenant = TenantId::parse(tenant)?;
        let kind = EventKind::parse(domain, event)
            .ok_or_else(|| SubjectError::UnknownEvent(format!("{domain}.{event}")))?;
        Ok(Self::new(&tenant, kind))
    }

    /// The tenant the subject belongs to.
    #[must_use]
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// What the subject carries.
    #[must_use]
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The stream that captures it.
    #[must_use]
    pub fn stream(&self) -> &'static StreamSpec {
        self.kind.stream()
    }

    /// The subject string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.rendered
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl AsRef<str> for Subject {
    fn as_ref(&self) -> &str {
        &self.rendered
    }
}

impl From<Subject> for String {
    fn from(subject: Subject) -> Self {
        subject.rendered
    }
}

/// A subscription or consumer filter, possibly with `*` / `>` wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectFilter(String);

impl SubjectFilter {
    pub(crate) fn from_parts(filter: String) -> Self {
        Self(filter)
    }

    /// Everything of one tenant: `tm.<tenant>.>`.
    #[must_use]
    pub fn tenant(tenant: &TenantId) -> Self {
        Self(format!("{SUBJECT_PREFIX}.{tenant}.>"))
    }

    /// One domain of one tenant: `tm.<tenant>.<domain>.>`.
    #[must_use]
    pub fn tenant_domain(tenant: &TenantId, domain: Domain) -> Self {
        Self(format!("{SUBJECT_PREFIX}.{tenant}.{}.>", domain.as_str()))
    }

    /// One domain of every tenant: `tm.*.<domain>.>`.
    #[must_use]
    pub fn all_tenants_domain(domain: Domain) -> Self {
        Self(format!("{SUBJECT_PREFIX}.*.{}.>", domain.as_str()))
    }

    /// The filter string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `subject` (without wildcards) matches this filter under NATS rules.
    #[must_use]
    pub fn matches(&self, subject: &str) -> bool {
        filter_matches(&self.0, subject)
    }
}

impl fmt::Display for SubjectFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SubjectFilter {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<SubjectFilter> for String {
    fn from(filter: SubjectFilter) -> Self {
        filter.0
    }
}

/// Whether the concrete `subject` matches `filter` under NATS rules (`*` one token, `>` one or more
/// trailing tokens).
#[must_use]
pub fn filter_matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for f in filter.split('.') {
        match (f, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (f, Some(s)) if f == s => {}
            (_, Some(_) | None) => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumers::ALL_CONSUMERS;

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[test]
    fn builders_produce_the_documented_subjects() {
        let t = acme();
        assert_eq!(
            Subject::dataset_ingested(&t).as_str(),
            "tm.acme.dataset.ingested"
        );
        assert_eq!(
            Subject::analysis_fold_requested(&t).as_str(),
            "tm.acme.analysis.fold.requested"
        );
        assert_eq!(
            Subject::deletion_receipt(&t).as_str(),
            "tm.acme.deletion.receipt"
        );
        assert_eq!(
            Subject::audit(&t, Service::TrustScoring).as_str(),
            "tm.acme.audit.trust-scoring"
        );
        assert_eq!(
            Subject::dead_letter(&t, &crate::AUDIT_EVENTS).as_str(),
            "tm.acme.dlq.audit-events"
        );
        assert_eq!(SubjectFilter::tenant(&t).as_str(), "tm.acme.>");
        assert_eq!(
            SubjectFilter::tenant_domain(&t, Domain::Job).as_str(),
            "tm.acme.job.>"
        );
    }

    fn every_kind() -> Vec<EventKind> {
        let mut kinds = EventKind::FIXED.to_vec();
        kinds.extend(Service::ALL.map(EventKind::Audit));
        kinds.extend(ALL_CONSUMERS.iter().copied().map(EventKind::DeadLetter));
        kinds
    }

    #[test]
    fn every_subject_parses_back_and_lands_in_exactly_its_stream() {
        let t = acme();
        for kind in every_kind() {
            let subject = Subject::new(&t, kind);
            assert_eq!(Subject::parse(subject.as_str()), Ok(subject.clone()));
            let streams: Vec<_> = crate::ALL_STREAMS
                .iter()
                .filter(|s| {
                    s.subjects
                        .iter()
                        .any(|f| filter_matches(f, subject.as_str()))
                })
                .map(|s| s.name)
                .collect();
            assert_eq!(streams, [kind.stream().name], "{subject}");
        }
    }

    #[test]
    fn every_consumer_reads_its_stream_and_sees_the_kinds_it_is_for() {
        let t = acme();
        for consumer in ALL_CONSUMERS {
            assert!(consumer.filter_subject.starts_with("tm.*."), "{consumer:?}");
            let seen: Vec<_> = every_kind()
                .into_iter()
                .filter(|&k| filter_matches(consumer.filter_subject, Subject::new(&t, k).as_str()))
                .collect();
            assert!(!seen.is_empty(), "{} sees nothing", consumer.durable_name);
            for kind in &seen {
                assert_eq!(kind.stream(), consumer.stream, "{}", consumer.durable_name);
            }
            let per_tenant = consumer.filter_for_tenant(&t);
            let other = TenantId::parse("other").unwrap();
            for kind in seen {
                assert!(per_tenant.matches(Subject::new(&t, kind).as_str()));
                assert!(!per_tenant.matches(Subject::new(&other, kind).as_str()));
            }
        }
        let audit_sees: Vec<_> = Service::ALL
            .into_iter()
            .filter(|&s| {
                filter_matches(
                    crate::AUDIT_EVENTS.filter_subject,
                    Subject::audit(&t, s).as_str(),
                )
            })
            .collect();
        assert_eq!(audit_sees, Service::ALL);
    }

    #[test]
    fn parse_rejects_foreign_and_malformed_subjects() {
        assert_eq!(Subject::parse("tm.acme.dataset"), Err(SubjectError::Shape));
        assert_eq!(
            Subject::parse("xx.acme.dataset.ingested"),
            Err(SubjectError::Shape)
        );
        assert!(matches!(
            Subject::parse("tm.*.dataset.ingested"),
            Err(SubjectError::Tenant(_))
        ));
        assert_eq!(
            Subject::parse("tm.acme.dataset.exploded"),
            Err(SubjectError::UnknownEvent("dataset.exploded".into()))
        );
        assert!(Subject::parse("tm.acme.audit.nobody").is_err());
        assert!(Subject::parse("tm.acme.dlq.nobody").is_err());
    }

    #[test]
    fn filter_matching_follows_nats_rules() {
        assert!(filter_matches("tm.*.dataset.>", "tm.a.dataset.x.y"));
        assert!(!filter_matches("tm.*.dataset.>", "tm.a.dataset"));
        assert!(filter_matches("tm.*.job.*", "tm.a.job.updated"));
        assert!(!filter_matches("tm.*.job.*", "tm.a.job.updated.more"));
        assert!(!filter_matches("tm.*.job.*", "tm.a.scores.ready"));
    }

    #[test]
    fn every_consumer_has_a_publisher_and_every_event_a_consumer() {
        let t = acme();
        let published: Vec<EventKind> = Service::ALL
            .into_iter()
            .flat_map(|s| s.publishes().iter().copied())
            .collect();
        for consumer in ALL_CONSUMERS {
            assert!(
                published.iter().any(|&k| filter_matches(
                    consumer.filter_subject,
                    Subject::new(&t, k).as_str()
                )),
                "nobody publishes what {} reads",
                consumer.durable_name
            );
        }
        for kind in published {
            // Its failure reaches users and the notifier through `job.updated`; `analysis.failed`
            // stays in TM_ANALYSIS as the analysis domain's own record.
            if kind == EventKind::AnalysisFailed {
                continue;
            }
            assert!(
                ALL_CONSUMERS
                    .iter()
                    .any(|c| filter_matches(c.filter_subject, Subject::new(&t, kind).as_str())),
                "nobody consumes {kind}"
            );
        }
        let perms = Service::Ingest.publish_permissions();
        assert!(
            perms.contains(&"tm.*.dataset.ingested".to_owned()),
            "{perms:?}"
        );
        assert!(
            perms.contains(&"tm.*.dlq.ingest-deletion".to_owned()),
            "{perms:?}"
        );
        assert!(!perms.iter().any(|p| p.contains("analysis")), "{perms:?}");
    }

    #[test]
    fn each_service_has_its_consumers() {
        for service in Service::ALL {
            assert!(
                service
                    .consumers()
                    .all(|c| c.durable_name.starts_with(service.as_str())),
                "{service}"
            );
        }
        assert_eq!(Service::Notifier.consumers().count(), 4);
        assert_eq!(Service::Analysis.consumers().count(), 4);
        let mut names: Vec<_> = ALL_CONSUMERS.iter().map(|c| c.durable_name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL_CONSUMERS.len(), "durable names are unique");
    }
}
