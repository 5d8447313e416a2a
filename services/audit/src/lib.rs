//! The audit service: consumes every service's audit events (`tm.*.audit.>`, durable
//! `audit-events`) and appends each, once per event id, to its tenant's hash chain
//! (`h_i = SHA-256(h_{i-1} || canonical(event_i))`); tenants read it with `ListEvents` and check it
//! with `VerifyLog` (`audit:read`).
//!
//! Layout:
//! - [`Application`] (`app.rs`): build (connect, migrate schema `audit`, ensure the consumer, load the
//!   key cache, bind listeners) and `run_until_stopped`.
//! - [`settings`]: typed, layered settings.
//! - `chain.rs`: stored rows ↔ events, canonical bytes, chain hashes and verification.
//! - `repo.rs`: the append-only `events` table and the per-tenant `chain_heads`.
//! - `consumer.rs`: the `audit-events` handler.
//! - `grpc.rs`: the `AuditService` handler.
//! - `error.rs`: [`AuditError`] and its one mapping to `tonic::Status`.
//!
//! Signed checkpoints and `ExportEvents` arrive with the audit-log issue; `ExportEvents` answers
//! FAILED_PRECONDITION until then.

mod app;
mod chain;
mod consumer;
mod error;
mod grpc;
mod repo;
pub mod settings;

pub use app::{AppError, Application, MIGRATOR, SCHEMA};
pub use error::AuditError;
pub use grpc::AuditHandler;
pub use settings::Settings;
