//! Integration tests of trustmesh-store against a real Postgres and a real S3 server (s3s-fs).

mod common;
mod encrypted;
mod objects;
mod pg;
