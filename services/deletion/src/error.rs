//! The service's one error type and its one mapping to `tonic::Status`.

use tonic::{Code, Status};
use trustmesh_auth::AuthError;
use trustmesh_runtime::cause_chain;

/// Why a request or a consumer step failed.
#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    /// The request is malformed; the message is ours and safe to show.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller may not do this (the auth layer's own answer).
    #[error("request denied")]
    Denied(#[from] AuthError),
    /// A `request_id` already named another deletion.
    #[error("request_id was already used for another deletion target")]
    RequestIdReused,
    /// No such deletion for this tenant (another tenant's is not told apart).
    #[error("deletion not found")]
    NotFound,
    /// The deletion is not in the state the call needs.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// Postgres failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Writing an event to the outbox failed.
    #[error("outbox write failed")]
    Outbox(#[from] trustmesh_bus::OutboxError),
    /// Stored data is inconsistent (corruption or a bug).
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    /// Purging a tenant's messages from JetStream failed (retried).
    #[error("JetStream purge failed: {0}")]
    Purge(String),
}

impl DeletionError {
    /// The gRPC code this error maps to.
    #[must_use]
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Denied(error) => Status::from(error.clone()).code(),
            Self::RequestIdReused => Code::AlreadyExists,
            Self::NotFound => Code::NotFound,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Database(_) | Self::Outbox(_) | Self::Purge(_) => Code::Unavailable,
            Self::Corrupt(_) => Code::Internal,
        }
    }

    /// A short machine-readable reason for the audit log (never content).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::Denied(_) => "DENIED",
            Self::RequestIdReused => "REQUEST_ID_REUSED",
            Self::NotFound => "NOT_FOUND",
            Self::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Self::Database(_) => "DATABASE",
            Self::Outbox(_) => "OUTBOX",
            Self::Corrupt(_) => "CORRUPT",
            Self::Purge(_) => "PURGE",
        }
    }
}

impl From<DeletionError> for Status {
    fn from(error: DeletionError) -> Self {
        let code = error.code();
        match error {
            DeletionError::Denied(error) => Status::from(error),
            DeletionError::InvalidArgument(_)
            | DeletionError::RequestIdReused
            | DeletionError::NotFound
            | DeletionError::FailedPrecondition(_) => Status::new(code, error.to_string()),
            DeletionError::Database(_)
            | DeletionError::Outbox(_)
            | DeletionError::Purge(_)
            | DeletionError::Corrupt(_) => {
                tracing::error!(error.cause_chain = %cause_chain(&error), "A request failed on an internal error.");
                let message = if code == Code::Unavailable {
                    "the service is temporarily unavailable; retry later"
                } else {
                    "internal error"
                };
                Status::new(code, message)
            }
        }
    }
}
