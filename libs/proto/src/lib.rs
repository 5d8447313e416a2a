//! Generated gRPC and event contracts of trustmesh (tonic/prost), plus the file descriptor set for reflection.
//!
//! - [`v1`]: package `trustmesh.v1`, the public gRPC API (`proto/trustmesh/v1`): messages, and for each
//!   service a `<service>_client` and a `<service>_server` module.
//! - [`events::v1`]: package `trustmesh.events.v1`, the bus payloads (`proto/trustmesh/events/v1`).
//! - [`FILE_DESCRIPTOR_SET`]: every file above, for `tonic-reflection`.
//!
//! Code is generated at build time by `build.rs` with a vendored `protoc`.

/// Package `trustmesh.v1`: the public gRPC API of every service.
// NOTE: generated code gets no lint exemptions: its docs come from the .proto comments, so every
// message, field, enum value, service and RPC there must have a comment (`missing_docs` checks it).
pub mod v1 {
    tonic::include_proto!("trustmesh.v1");
}

/// Bus payloads.
pub mod events {
    /// Package `trustmesh.events.v1`: event payloads published on NATS JetStream.
    pub mod v1 {
        tonic::include_proto!("trustmesh.events.v1");
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of every trustmesh .proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/trustmesh_descriptor.bin"));
