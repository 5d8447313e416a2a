//! The service's one error type and its one mapping to `tonic::Status`.

use tonic::{Code, Status};
use trustmesh_runtime::cause_chain;
use trustmesh_service_kit::CallError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The request is malformed; the message is ours and safe to show.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such report for this tenant (another tenant's is not told apart).
    // NOTE: the message is word for word `AuthError::OtherTenant`'s, so a missing report and another
    // tenant's cannot be told apart.
    #[error("resource `{resource}` not found")]
    NotFound {
        /// The resource name asked for.
        resource: String,
    },
    /// The caller may not make this call on this resource: answered as `libs/auth` maps it, so
    /// another tenant's report looks exactly like a missing one.
    #[error(transparent)]
    Auth(#[from] trustmesh_auth::AuthError),
    /// The report is not in the state the call needs.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// Postgres failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Encrypted object storage failed.
    #[error("encrypted object storage failed")]
    Objects(#[from] trustmesh_store::EncryptedError),
    /// Sealing or opening a report or correction failed.
    #[error("report encryption failed")]
    Crypto(#[from] trustmesh_crypto::Error),
    /// Writing an event to the outbox failed.
    #[error("outbox write failed")]
    Outbox(#[from] trustmesh_bus::OutboxError),
    /// Ingest refused or failed a read of the report's dataset (the code it answered).
    #[error("ingest answered {0:?}")]
    Ingest(Code),
    /// Stored data did not decode (corruption or a bug).
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
}

impl From<trustmesh_auth::PageError> for TrustError {
    fn from(error: trustmesh_auth::PageError) -> Self {
        Self::InvalidArgument(error.to_string())
    }
}

impl CallError for TrustError {
    fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Auth(error) => Status::from(error.clone()).code(),
            Self::NotFound { .. } => Code::NotFound,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Database(_) | Self::Outbox(_) | Self::Ingest(_) => Code::Unavailable,
            Self::Objects(_) | Self::Crypto(_) | Self::Corrupt(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::Auth(error) => error.reason(),
            Self::NotFound { .. } => "NOT_FOUND",
            Self::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Self::Database(_) => "DATABASE",
            Self::Outbox(_) => "OUTBOX",
            Self::Ingest(_) => "INGEST",
            Self::Objects(_) => "OBJECT_STORE",
            Self::Crypto(_) => "CRYPTO",
            Self::Corrupt(_) => "CORRUPT",
        }
    }

    fn is_denial(&self) -> bool {
        matches!(self, Self::Auth(_))
    }
}

impl From<TrustError> for Status {
    fn from(error: TrustError) -> Self {
        let code = error.code();
        match error {
            TrustError::Auth(error) => error.into(),
            TrustError::InvalidArgument(_)
            | TrustError::NotFound { .. }
            | TrustError::FailedPrecondition(_) => Status::new(code, error.to_string()),
            TrustError::Database(_)
            | TrustError::Outbox(_)
            | TrustError::Ingest(_)
            | TrustError::Objects(_)
            | TrustError::Crypto(_)
            | TrustError::Corrupt(_) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_report_and_another_tenants_answer_alike() {
        let resource = "tenants/acme/reports/01900000-0000-7000-8000-000000000001";
        let missing = Status::from(TrustError::NotFound {
            resource: resource.to_owned(),
        });
        let foreign = Status::from(TrustError::Auth(trustmesh_auth::AuthError::OtherTenant {
            resource: resource.to_owned(),
        }));
        assert_eq!(
            (missing.code(), missing.message()),
            (foreign.code(), foreign.message())
        );
    }
}
