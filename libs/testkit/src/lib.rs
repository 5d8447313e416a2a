//! Real servers for tests: nats-server, a Postgres database per test, an s3s-fs S3 server, a
//! versioning S3 server (moto), canary scanners, and a mesh PKI (a dev CA and per-service
//! certificates).

pub mod canary;
pub mod data;
pub mod moto;
pub mod nats;
pub mod nats_auth;
pub mod pg_cluster;
pub mod ports;
pub mod postgres;
pub mod s3;
pub mod tls;
