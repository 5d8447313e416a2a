//! The `trustmesh` command line's library: the standalone mesh, a thin gRPC client of it, and the
//! demo that walks through it.
//!
//! - [`standalone`]: [`standalone::Standalone`], every service in one process on one gRPC port.
//! - [`client`]: [`client::Client`], one channel and one credential, a typed client per service.
//! - [`demo`]: `trustmesh demo`, the main flow end to end on a bundled noisy dataset.

pub mod client;
pub mod demo;
pub mod standalone;
