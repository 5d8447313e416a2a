//! Deletions: the gRPC API (`grpc.rs`), the workflow (`service.rs`), the receipt consumer
//! (`receipts.rs`), the sweeper for late receipts (`sweeper.rs`), the
//! tenant's JetStream purge (`streams.rs`), the tables (`repo.rs`) and the
//! row/API model (`model.rs`).

pub(crate) mod grpc;
pub(crate) mod model;
pub(crate) mod receipts;
pub(crate) mod repo;
pub(crate) mod service;
pub(crate) mod streams;
pub(crate) mod sweeper;
