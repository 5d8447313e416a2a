//! Real servers for tests: nats-server, a Postgres database per test, an s3s-fs S3 server, a
//! versioning S3 server (moto), and canary scanners.

pub mod canary;
pub mod data;
pub mod moto;
pub mod nats;
pub mod nats_auth;
pub mod pg_cluster;
pub mod postgres;
pub mod s3;
