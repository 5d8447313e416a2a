//! The `trustmesh` command line's library: the standalone mesh and the demo that walks through it.
//! The client of the mesh is the Rust SDK, `trustmesh-sdk`.
//!
//! - [`standalone`]: [`standalone::Standalone`], every service in one process on one gRPC port.
//! - [`demo`]: `trustmesh demo`, the main flow end to end on a bundled noisy dataset.

pub mod demo;
pub mod standalone;
