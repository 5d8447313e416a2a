//! The service's one error type and its one mapping to `tonic::Status`.

use tonic::{Code, Status};
use trustmesh_runtime::cause_chain;
use trustmesh_service_kit::CallError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The request is malformed; the message is ours and safe to show.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such job for this tenant (another tenant's is not told apart).
    // NOTE: the message is word for word `AuthError::OtherTenant`'s, so a missing job and another
    // tenant's cannot be told apart.
    #[error("resource `{resource}` not found")]
    NotFound {
        /// The resource name asked for.
        resource: String,
    },
    /// Ingest has no such dataset (StartAnalysis); another tenant's was refused before asking.
    #[error("dataset `{dataset}` not found")]
    DatasetNotFound {
        /// The dataset name asked for.
        dataset: String,
    },
    /// The dataset cannot be analysed in its state (StartAnalysis).
    #[error(
        "dataset `{dataset}` is {state}, not DATASET_STATE_READY; it can be analysed once READY"
    )]
    DatasetNotReady {
        /// The dataset name asked for.
        dataset: String,
        /// Its state's name (`DATASET_STATE_...`).
        state: &'static str,
    },
    /// Ingest could not be asked about the dataset (unreachable, or answered an error); retryable.
    #[error("ingest answered {0:?}")]
    IngestUnavailable(Code),
    /// The caller may not make this call on this resource: answered as `libs/auth` maps it, so
    /// another tenant's job looks exactly like a missing one.
    #[error(transparent)]
    Auth(#[from] trustmesh_auth::AuthError),
    /// The job is not in the state the call needs.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// The tenant's analyses are served by another deployment (dedicated profile: the tenant's own
    /// replicas, or the shared ones); its host is routed to the wrong one.
    #[error(
        "tenant `{tenant}`'s analyses are not served by this analysis deployment; call the one its host routes to"
    )]
    ServedElsewhere {
        /// The tenant the call's resource names.
        tenant: String,
    },
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

impl CallError for AnalysisError {
    fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::Auth(error) => Status::from(error.clone()).code(),
            Self::NotFound { .. } | Self::DatasetNotFound { .. } => Code::NotFound,
            Self::FailedPrecondition(_)
            | Self::DatasetNotReady { .. }
            | Self::ServedElsewhere { .. } => Code::FailedPrecondition,
            Self::Database(_) | Self::Outbox(_) | Self::IngestUnavailable(_) => Code::Unavailable,
            Self::Objects(_) | Self::Crypto(_) | Self::Corrupt(_) => Code::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::Auth(error) => error.reason(),
            Self::NotFound { .. } => "NOT_FOUND",
            Self::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Self::ServedElsewhere { .. } => "SERVED_ELSEWHERE",
            Self::DatasetNotFound { .. } => "DATASET_NOT_FOUND",
            Self::DatasetNotReady { .. } => "DATASET_NOT_READY",
            Self::IngestUnavailable(_) => "INGEST_UNAVAILABLE",
            Self::Database(_) => "DATABASE",
            Self::Outbox(_) => "OUTBOX",
            Self::Objects(_) => "OBJECT_STORE",
            Self::Crypto(_) => "CRYPTO",
            Self::Corrupt(_) => "CORRUPT",
        }
    }

    fn is_denial(&self) -> bool {
        matches!(self, Self::Auth(_))
    }
}

impl From<AnalysisError> for Status {
    fn from(error: AnalysisError) -> Self {
        let code = error.code();
        match error {
            AnalysisError::Auth(error) => error.into(),
            AnalysisError::InvalidArgument(_)
            | AnalysisError::NotFound { .. }
            | AnalysisError::FailedPrecondition(_)
            | AnalysisError::ServedElsewhere { .. }
            | AnalysisError::DatasetNotFound { .. }
            | AnalysisError::DatasetNotReady { .. } => Status::new(code, error.to_string()),
            AnalysisError::IngestUnavailable(_) => {
                tracing::warn!(error = %error, "Could not check the dataset with ingest.");
                Status::new(
                    code,
                    "the dataset could not be checked right now; retry later",
                )
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_job_and_another_tenants_answer_alike() {
        let resource = "tenants/acme/jobs/01900000-0000-7000-8000-000000000001";
        let missing = Status::from(AnalysisError::NotFound {
            resource: resource.to_owned(),
        });
        let foreign = Status::from(AnalysisError::Auth(
            trustmesh_auth::AuthError::OtherTenant {
                resource: resource.to_owned(),
            },
        ));
        assert_eq!(
            (missing.code(), missing.message()),
            (foreign.code(), foreign.message())
        );
    }
}
