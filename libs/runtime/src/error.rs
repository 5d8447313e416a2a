//! Errors of the servers and channels (settings have their own, [`crate::SettingsError`]).

use std::net::SocketAddr;

use crate::tls::TlsError;

/// Why a gRPC or admin server could not be built or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Development plaintext was asked for on an address other than loopback.
    #[error(
        "refusing to serve plaintext gRPC on {addr}: `dev_plaintext_loopback` is allowed only on a \
         loopback address (127.0.0.1 or ::1); use mode `tls` with a certificate"
    )]
    PlaintextNotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The listen address could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("cannot configure TLS")]
    Tls(#[from] TlsError),
    /// The reflection service could not be built (e.g. a malformed descriptor set).
    #[error("cannot build the gRPC reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed while serving.
    #[error("the gRPC server failed")]
    Grpc(#[from] tonic::transport::Error),
    /// The admin HTTP server failed while serving.
    #[error("the admin HTTP server failed")]
    Admin(#[source] std::io::Error),
}

/// Why a channel to another service could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The endpoint is not a valid URI.
    #[error("invalid endpoint {endpoint:?}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The endpoint has no host.
    #[error("endpoint {0:?} has no host")]
    NoHost(String),
    /// The host is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// Development plaintext was asked for to a host other than loopback.
    #[error(
        "refusing plaintext gRPC to {0:?}: `dev_plaintext_loopback` is allowed only to localhost, \
         127.0.0.1 or ::1; use mode `tls` with a CA file"
    )]
    PlaintextNotLoopback(String),
    /// The TLS configuration could not be built.
    #[error("cannot configure TLS")]
    Tls(#[from] TlsError),
    /// The connection (TCP, TLS handshake or HTTP/2) failed.
    #[error("cannot connect to {endpoint}")]
    Connect {
        /// The endpoint given.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}
