//! The service's one error type and its one mapping to `tonic::Status`.

use tonic::{Code, Status};
use trustmesh_auth::{AuthError, PageError};
use trustmesh_runtime::cause_chain;
use trustmesh_service_kit::CallError;

use crate::datasets::csv::Rejection;

/// Why a request or a consumer step failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The request is malformed; the message is ours and safe to show.
    #[error("{0}")]
    InvalidArgument(String),
    /// The uploaded file was rejected (row and column named, never a value).
    #[error("{0}")]
    Rejected(Rejection),
    /// The upload exceeds a limit.
    #[error("{0}")]
    TooLarge(String),
    /// The caller may not make this call on this resource (or has no valid key): answered as
    /// `libs/auth` maps it, so another tenant's dataset looks exactly like a missing one.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// `page_size` or `page_token` is not acceptable.
    #[error(transparent)]
    Page(#[from] PageError),
    /// No such resource for this tenant.
    // NOTE: the message is word for word `AuthError::OtherTenant`'s (a unit test holds them
    // together), so a missing dataset and another tenant's cannot be told apart.
    #[error("resource `{resource}` not found")]
    NotFound {
        /// The resource name asked for.
        resource: String,
    },
    /// The dataset is not in the state the call needs.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// The uploaded bytes do not match the announced SHA-256.
    #[error("the uploaded bytes do not match the sha256 given in the metadata")]
    DigestMismatch,
    /// The client's stream broke off, or one of its messages could not be read (e.g. a chunk
    /// over the gRPC message limit); the reason is in the message.
    #[error("the upload stream broke off ({}); the dataset still awaits its upload", .0.message())]
    StreamBroken(#[source] Status),
    /// Postgres failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Encrypted object storage failed.
    #[error("encrypted object storage failed")]
    Objects(#[from] trustmesh_store::EncryptedError),
    /// Sealing or opening metadata failed.
    #[error("metadata encryption failed")]
    Crypto(#[from] trustmesh_crypto::Error),
    /// Writing an event to the outbox failed.
    #[error("outbox write failed")]
    Outbox(#[from] trustmesh_bus::OutboxError),
    /// Stored data did not decode (corruption or a bug).
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    /// A background task failed.
    #[error("a worker task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl CallError for IngestError {
    fn code(&self) -> Code {
        match self {
            Self::Auth(error) => Status::from(error.clone()).code(),
            Self::InvalidArgument(_) | Self::Rejected(_) | Self::Page(_) => Code::InvalidArgument,
            Self::TooLarge(_) => Code::ResourceExhausted,
            Self::NotFound { .. } => Code::NotFound,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::DigestMismatch => Code::DataLoss,
            // A message over the size limit is the client's to fix, not to retry as is.
            Self::StreamBroken(status)
                if matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted) =>
            {
                status.code()
            }
            Self::StreamBroken(_) => Code::Aborted,
            // The object store down (S3 unreachable, its metadata database down) is an outage like
            // Postgres down: the client should retry.
            Self::Database(_)
            | Self::Outbox(_)
            | Self::Objects(
                trustmesh_store::EncryptedError::Store(_)
                | trustmesh_store::EncryptedError::Database(_),
            ) => Code::Unavailable,
            Self::Objects(_) | Self::Crypto(_) | Self::Corrupt(_) | Self::Task(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::Auth(error) => error.reason(),
            Self::InvalidArgument(_) | Self::Page(_) => "INVALID_ARGUMENT",
            Self::Rejected(rejection) => rejection.code,
            Self::TooLarge(_) => "TOO_LARGE",
            Self::NotFound { .. } => "NOT_FOUND",
            Self::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Self::DigestMismatch => "DIGEST_MISMATCH",
            Self::StreamBroken(_) => "STREAM_BROKEN",
            Self::Database(_) => "DATABASE",
            Self::Outbox(_) => "OUTBOX",
            Self::Objects(_) => "OBJECT_STORE",
            Self::Crypto(_) => "CRYPTO",
            Self::Corrupt(_) => "CORRUPT",
            Self::Task(_) => "TASK",
        }
    }

    fn is_denial(&self) -> bool {
        matches!(self, Self::Auth(_))
    }
}

impl From<IngestError> for Status {
    fn from(error: IngestError) -> Self {
        let code = error.code();
        match error {
            IngestError::Auth(error) => error.into(),
            IngestError::Page(error) => error.into(),
            IngestError::InvalidArgument(_)
            | IngestError::Rejected(_)
            | IngestError::TooLarge(_)
            | IngestError::NotFound { .. }
            | IngestError::FailedPrecondition(_)
            | IngestError::DigestMismatch
            | IngestError::StreamBroken(_) => Status::new(code, error.to_string()),
            IngestError::Database(_)
            | IngestError::Outbox(_)
            | IngestError::Objects(_)
            | IngestError::Crypto(_)
            | IngestError::Corrupt(_)
            | IngestError::Task(_) => {
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
    fn a_missing_dataset_and_another_tenants_answer_alike() {
        let resource = "tenants/acme/datasets/01900000-0000-7000-8000-000000000001";
        let missing = Status::from(IngestError::NotFound {
            resource: resource.to_owned(),
        });
        let foreign = Status::from(IngestError::Auth(AuthError::OtherTenant {
            resource: resource.to_owned(),
        }));
        assert_eq!(
            (missing.code(), missing.message()),
            (foreign.code(), foreign.message())
        );
    }

    #[test]
    fn an_object_store_outage_is_retryable_and_corruption_is_not() {
        let refused = trustmesh_store::ObjectError::Io(std::io::Error::other("connection refused"));
        let outage = Status::from(IngestError::Objects(refused.into()));
        assert_eq!(outage.code(), Code::Unavailable);
        assert!(outage.message().contains("retry later"), "{outage:?}");
        let corrupt = IngestError::Objects(trustmesh_crypto::Error::Decrypt.into());
        assert_eq!(corrupt.code(), Code::Internal);
    }
}
