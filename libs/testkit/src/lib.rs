//! Real servers for tests: nats-server, a Postgres database per test, an s3s-fs S3 server, and canary scanners.

pub mod canary;
pub mod nats;
pub mod postgres;
pub mod s3;
