//! The tenancy API's errors and their one mapping to `tonic::Status`.

use tonic::{Code, Status};
use trustmesh_auth::{AuthError, KeyStoreError, PageError};

/// Why a tenancy RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    /// The caller may not do this (or the resource is another tenant's).
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
        message: String,
    },
    /// The tenant id is taken.
    #[error("tenant {0} already exists")]
    TenantExists(String),
    /// The resource does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The RPC belongs to a later version of the service.
    #[error("{0} is not available in this version")]
    NotAvailable(&'static str),
    /// Postgres failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A stored key row does not make a valid `tm_auth` record (bad id or digest).
    #[error("stored key {0} is corrupt")]
    CorruptKey(String),
    /// The `tm_auth` bucket could not be written.
    #[error("key replication failed")]
    KeyStore(#[from] KeyStoreError),
    /// The audit event could not be queued.
    #[error("audit outbox failed")]
    Outbox(#[from] trustmesh_bus::OutboxError),
    /// The notifier (which owns webhook endpoints) answered with an error.
    #[error("the notifier answered {}", .0.code())]
    Notifier(Status),
}

impl TenancyError {
    /// An invalid-argument error on `field`.
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            message: message.into(),
        }
    }

    /// A short machine-readable reason for the audit log.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Auth(error) => error.reason(),
            Self::Page(_) | Self::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Self::TenantExists(_) => "ALREADY_EXISTS",
            Self::NotFound(_) => "NOT_FOUND",
            Self::NotAvailable(_) => "NOT_AVAILABLE",
            Self::Notifier(status) => match status.code() {
                Code::InvalidArgument => "INVALID_ARGUMENT",
                Code::NotFound => "NOT_FOUND",
                Code::Ok
                | Code::Cancelled
                | Code::Unknown
                | Code::DeadlineExceeded
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::ResourceExhausted
                | Code::FailedPrecondition
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
                | Code::Unauthenticated => "NOTIFIER_UNAVAILABLE",
            },
            Self::Database(_) | Self::CorruptKey(_) | Self::KeyStore(_) | Self::Outbox(_) => {
                "INTERNAL"
            }
        }
    }
}

impl From<TenancyError> for Status {
    fn from(error: TenancyError) -> Self {
        match error {
            TenancyError::Auth(error) => error.into(),
            TenancyError::Page(error) => error.into(),
            TenancyError::InvalidArgument { field, message } => {
                Status::invalid_argument(format!("invalid `{field}`: {message}"))
            }
            TenancyError::TenantExists(tenant) => {
                Status::already_exists(format!("tenant `{tenant}` already exists"))
            }
            TenancyError::NotFound(resource) => {
                Status::not_found(format!("resource `{resource}` not found"))
            }
            TenancyError::NotAvailable(method) => {
                Status::failed_precondition(format!("{method} is not available in this version"))
            }
            error @ (TenancyError::Database(_)
            | TenancyError::CorruptKey(_)
            | TenancyError::Outbox(_)) => {
                tracing::error!(error.cause_chain = %trustmesh_runtime::cause_chain(&error), "A tenancy request failed.");
                Status::internal("internal error")
            }
            // The notifier's client-safe answers pass through; anything else is its outage.
            TenancyError::Notifier(status) => match status.code() {
                Code::InvalidArgument | Code::NotFound => {
                    Status::new(status.code(), status.message())
                }
                Code::Ok
                | Code::Cancelled
                | Code::Unknown
                | Code::DeadlineExceeded
                | Code::AlreadyExists
                | Code::PermissionDenied
                | Code::ResourceExhausted
                | Code::FailedPrecondition
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
                | Code::Unauthenticated => {
                    tracing::error!(grpc.code = ?status.code(), "A webhook call to the notifier failed.");
                    Status::unavailable("webhook service is unavailable; retry shortly")
                }
            },
            error @ TenancyError::KeyStore(_) => {
                tracing::error!(error.cause_chain = %trustmesh_runtime::cause_chain(&error), "Key replication to tm_auth failed.");
                Status::unavailable("key replication is unavailable; retry shortly")
            }
        }
    }
}
