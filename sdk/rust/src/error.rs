//! [`Error`]: what went wrong, in the classes a caller acts on differently.

use tonic::{Code, Status};
use trustmesh_runtime::ConnectError;

/// Why an SDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The call was not made: a bad argument on this side (endpoint, credential, name, file).
    #[error("{0}")]
    Usage(String),
    /// A local file could not be read or written.
    #[error("{context}")]
    Io {
        /// What was being done (names the file).
        context: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server refused the request as given (INVALID_ARGUMENT, FAILED_PRECONDITION,
    /// ALREADY_EXISTS, OUT_OF_RANGE): retrying it unchanged will not help.
    #[error("{}: {}", code_name(*.code), .message)]
    Invalid {
        /// The gRPC code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// The credential is missing, unknown, expired or revoked (UNAUTHENTICATED), or lacks the
    /// scope the call needs (PERMISSION_DENIED).
    #[error("{}: {}", code_name(*.code), .message)]
    Auth {
        /// The gRPC code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// The resource does not exist (or is not this tenant's).
    #[error("NOT_FOUND: {message}")]
    NotFound {
        /// The server's message.
        message: String,
    },
    /// The server failed or could not serve the call (after any retries).
    #[error("{}: {}", code_name(*.code), .message)]
    Server {
        /// The gRPC code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// No connection to the endpoint could be made.
    #[error("{0}")]
    Transport(String),
}

impl Error {
    /// The gRPC code of an error the server answered (`None` for local and transport errors).
    #[must_use]
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Invalid { code, .. } | Self::Auth { code, .. } | Self::Server { code, .. } => {
                Some(*code)
            }
            Self::NotFound { .. } => Some(Code::NotFound),
            Self::Usage(_) | Self::Io { .. } | Self::Transport(_) => None,
        }
    }

    /// The server's message (empty for local and transport errors).
    #[must_use]
    pub fn message(&self) -> &str {
        match self {
            Self::Invalid { message, .. }
            | Self::Auth { message, .. }
            | Self::Server { message, .. }
            | Self::NotFound { message } => message,
            Self::Usage(_) | Self::Io { .. } | Self::Transport(_) => "",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let code = status.code();
        let message = status.message().to_owned();
        match code {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange => Self::Invalid { code, message },
            Code::Unauthenticated | Code::PermissionDenied => Self::Auth { code, message },
            Code::NotFound => Self::NotFound { message },
            // NOTE: a broken connection surfaces as UNAVAILABLE/UNKNOWN with a transport message;
            // it is a server-side class for the caller (retry later), like INTERNAL.
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss => Self::Server { code, message },
        }
    }
}

impl From<ConnectError> for Error {
    fn from(error: ConnectError) -> Self {
        let text = trustmesh_runtime::cause_chain(&error);
        match error {
            ConnectError::Connect { .. } => Self::Transport(text),
            ConnectError::InvalidEndpoint { .. }
            | ConnectError::NoHost(_)
            | ConnectError::ServerName(_)
            | ConnectError::PlaintextNotLoopback(_)
            | ConnectError::Tls(_) => Self::Usage(text),
        }
    }
}

/// The canonical upper-case name of `code` (`NOT_FOUND`, ...).
fn code_name(code: Code) -> &'static str {
    trustmesh_runtime::code_name(code)
}

/// An error that may carry a gRPC code: [`Status`] and [`Error`], for [`crate::once_known`].
pub trait GrpcCode {
    /// The gRPC code, when the server answered.
    fn grpc_code(&self) -> Option<Code>;
}

impl GrpcCode for Status {
    fn grpc_code(&self) -> Option<Code> {
        Some(self.code())
    }
}

impl GrpcCode for Error {
    fn grpc_code(&self) -> Option<Code> {
        self.code()
    }
}
