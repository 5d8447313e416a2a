//! Generated gRPC and event contracts of trustmesh (tonic/prost), plus the file descriptor set for reflection.
