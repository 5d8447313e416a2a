//! Subjects, streams and consumers of the trustmesh bus, declared once, with validated tenant ids.
//!
//! Plain data, no NATS client: `libs/bus` maps these to `async-nats` configs.
//!
//! - [`tenant`]: [`TenantId`], the only way a tenant reaches a subject (`^[a-z0-9][a-z0-9-]{2,62}$`).
//! - [`subject`]: [`Subject`] `tm.<tenant>.<domain>.<event>` built from a typed [`EventKind`], parsed
//!   back with [`Subject::parse`]; [`SubjectFilter`] for per-tenant wildcards.
//! - [`streams`]: one [`StreamSpec`] per domain (`TM_DATASET` ... `TM_AUDIT`, `TM_DLQ`), [`ALL_STREAMS`].
//! - [`consumers`]: one [`ConsumerSpec`] per durable consumer of each service, [`ALL_CONSUMERS`].
//! - [`headers`]: header names and the deterministic `Nats-Msg-Id` ([`msg_id`]).
//! - [`Service`]: the services of the mesh.
//! - [`permissions`]: each service's NATS user and permissions, and the nats-server config generated
//!   from them (`infra/nats/permissions.conf`).

pub mod consumers;
pub mod headers;
pub mod permissions;
mod service;
pub mod streams;
pub mod subject;
pub mod tenant;

pub use consumers::{
    ALL_CONSUMERS, ANALYSIS_DELETION, ANALYSIS_FOLDS, ANALYSIS_REQUESTED, ANALYSIS_SCORES,
    AUDIT_DELETION, AUDIT_EVENTS, ConsumerAudit, ConsumerSpec, DELETION_RECEIPT, INGEST_DELETION,
    NOTIFIER_DATASET, NOTIFIER_DELETION, NOTIFIER_JOB, NOTIFIER_SCORES, TENANCY_DELETION,
    TRUST_SCORING_ANALYSIS, TRUST_SCORING_DELETION, consumer_by_name,
};
pub use headers::msg_id;
pub use permissions::{NatsPermissions, nats_authorization_config};
pub use service::Service;
pub use streams::{
    ALL_STREAMS, AUTH_KV_BUCKET, StreamSpec, TM_ANALYSIS, TM_AUDIT, TM_DATASET, TM_DELETION,
    TM_DLQ, TM_JOB, TM_SCORES, tenant_purged_streams,
};
pub use subject::{Domain, EventKind, Subject, SubjectError, SubjectFilter, filter_matches};
pub use tenant::{TenantId, TenantIdError};
