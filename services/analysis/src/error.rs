//! The service's one error type and its one mapping to `tonic::Status`.

use tonic::{Code, Status};
use trustmesh_runtime::cause_chain;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The request is malformed; the message is ours and safe to show.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such job for this tenant (another tenant's is not told apart).
    #[error("job not found")]
    NotFound,
    /// The job is not in the state the call needs.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// Postgres failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Encrypted object storage failed.
    #[error("encrypted object storage failed")]
    Objects(#[from] trustmesh_store::EncryptedError),
    /// Sealing or opening the job spec failed.
    #[error("job spec encryption failed")]
    Crypto(#[from] trustmesh_crypto::Error),
    /// Writing an event to the outbox failed.
    #[error("outbox write failed")]
    Outbox(#[from] trustmesh_bus::OutboxError),
    /// Stored data did not decode (corruption or a bug).
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
}

impl From<trustmesh_auth::PageError> for AnalysisError {
    fn from(error: trustmesh_auth::PageError) -> Self {
        Self::InvalidArgument(error.to_string())
    }
}

impl AnalysisError {
    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Database(_) | Self::Outbox(_) => Code::Unavailable,
            Self::Objects(_) | Self::Crypto(_) | Self::Corrupt(_) => Code::Internal,
        }
    }

    /// A short machine-readable reason for the audit log (never content).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::NotFound => "NOT_FOUND",
            Self::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Self::Database(_) => "DATABASE",
            Self::Outbox(_) => "OUTBOX",
            Self::Objects(_) => "OBJECT_STORE",
            Self::Crypto(_) => "CRYPTO",
            Self::Corrupt(_) => "CORRUPT",
        }
    }
}

impl From<AnalysisError> for Status {
    fn from(error: AnalysisError) -> Self {
        let code = error.code();
        match error {
            AnalysisError::InvalidArgument(_)
            | AnalysisError::NotFound
            | AnalysisError::FailedPrecondition(_) => Status::new(code, error.to_string()),
            AnalysisError::Database(_)
            | AnalysisError::Outbox(_)
            | AnalysisError::Objects(_)
            | AnalysisError::Crypto(_)
            | AnalysisError::Corrupt(_) => {
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
