//! Integration tests of trustmesh-runtime: real servers and clients on loopback, real TLS handshakes.

mod admin_and_readiness;
mod helpers;
mod observe;
mod reflection;
mod settings;
mod shutdown;
mod tls;
