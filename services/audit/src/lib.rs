//! The audit service: consumes every service's audit events (`tm.*.audit.>`, durable
//! `audit-events`) and appends each, once per event id, to its tenant's hash chain
//! (`h_i = SHA-256(h_{i-1} || canonical(event_i))`); tenants read it with `ListEvents` and check it
//! with `VerifyLog` (`audit:read`). On `deletion.requested` (durable `audit-deletion`) it deletes
//! nothing: audit events carry ids and outcomes, never tenant payload, and are retained under the
//! audit log's retention, so it answers with an empty `deletion.receipt`.
//!
//! Layout:
//! - [`Application`] (`app.rs`): build (connect, migrate schema `audit`, ensure the consumers, load the
//!   key cache, bind listeners) and `run_until_stopped`.
//! - [`settings`]: typed, layered settings.
//! - `chain.rs`: stored rows ↔ events, canonical bytes, chain hashes and verification.
//! - `repo.rs`: the append-only `events` table and the per-tenant `chain_heads`.
//! - `consumer.rs`: the `audit-events` handler.
//! - `deletion.rs`: the `audit-deletion` handler (retention, not shredding, and the empty receipt).
//! - `grpc.rs`: the `AuditService` handler.
//! - `error.rs`: [`AuditError`] and its one mapping to `tonic::Status`.
//!
//! Signed checkpoints and `ExportEvents` arrive with the audit-log issue; `ExportEvents` answers
//! FAILED_PRECONDITION until then.

mod app;
mod chain;
mod consumer;
mod deletion;
mod error;
mod grpc;
mod repo;
pub mod settings;

pub use app::{AppError, Application, MIGRATOR, SCHEMA, component};
pub use error::AuditError;
pub use grpc::AuditHandler;
pub use settings::Settings;
