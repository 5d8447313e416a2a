//! The notifier's errors and their one mapping to `tonic::Status`.

use tonic::Status;
use trustmesh_auth::{AuthError, PageError};

/// Why a webhook operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// The caller is not the mesh (tenancy), or the name is malformed.
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
    /// The resource does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Postgres failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Sealing or opening a secret failed.
    #[error("encryption error")]
    Crypto(#[from] trustmesh_crypto::Error),
    /// A stored value is not what it should be.
    #[error("stored {0} is corrupt")]
    Corrupt(&'static str),
}

impl NotifierError {
    /// An invalid-argument error on `field`.
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}

impl From<NotifierError> for Status {
    fn from(error: NotifierError) -> Self {
        match error {
            NotifierError::Auth(error) => error.into(),
            NotifierError::Page(error) => error.into(),
            NotifierError::InvalidArgument { field, message } => {
                Status::invalid_argument(format!("invalid `{field}`: {message}"))
            }
            NotifierError::NotFound(resource) => {
                Status::not_found(format!("resource `{resource}` not found"))
            }
            error @ (NotifierError::Database(_)
            | NotifierError::Crypto(_)
            | NotifierError::Corrupt(_)) => {
                tracing::error!(error.cause_chain = %trustmesh_runtime::cause_chain(&error), "A webhook request failed.");
                Status::internal("internal error")
            }
        }
    }
}
