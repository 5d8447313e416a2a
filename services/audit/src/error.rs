//! The audit API's errors and their one mapping to `tonic::Status`.

use tonic::Status;
use trustmesh_auth::{AuthError, PageError};

/// Why an audit RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The caller may not read this log.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Bad paging parameters.
    #[error(transparent)]
    Page(#[from] PageError),
    /// A request field is invalid.
    #[error("invalid `{field}`: {message}")]
    InvalidArgument {
        /// The field.
        field: &'static str,
        /// What is wrong, for the client.
        message: &'static str,
    },
    /// The RPC belongs to a later version of the service.
    #[error("{0} is not available in this version")]
    NotAvailable(&'static str),
    /// Postgres failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl AuditError {
    /// A short machine-readable reason for the audit log (UPPER_SNAKE).
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Auth(error) => error.reason(),
            Self::Page(_) => "INVALID_PAGE",
            Self::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Self::NotAvailable(_) => "NOT_AVAILABLE",
            Self::Database(_) => "INTERNAL",
        }
    }
}

impl From<AuditError> for Status {
    fn from(error: AuditError) -> Self {
        match error {
            AuditError::Auth(error) => error.into(),
            AuditError::Page(error) => error.into(),
            AuditError::InvalidArgument { field, message } => {
                Status::invalid_argument(format!("invalid `{field}`: {message}"))
            }
            AuditError::NotAvailable(method) => {
                Status::failed_precondition(format!("{method} is not available in this version"))
            }
            error @ AuditError::Database(_) => {
                tracing::error!(error.cause_chain = %trustmesh_runtime::cause_chain(&error), "An audit request failed.");
                Status::internal("internal error")
            }
        }
    }
}
