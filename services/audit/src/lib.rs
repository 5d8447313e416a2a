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
//! Every `checkpoints.every_events` events, or `checkpoints.every_secs` after the last checkpoint
//! when there are new events, the chain head is signed (Ed25519, `signing.rs`) into a checkpoint.
//! `VerifyLog` checks chain and checkpoints; `ExportEvents` streams the chain and its checkpoints as
//! JSON Lines, which [`verify_export`] (and `trustmesh audit verify`) checks offline.

mod app;
mod chain;
mod consumer;
mod deletion;
mod error;
mod export;
mod grpc;
mod repo;
pub mod settings;
mod signing;

pub use app::{AppError, Application, MIGRATOR, SCHEMA, component};
pub use error::AuditError;
pub use export::{ExportFailure, VerifiedExport, parse_public_key, verify_export};
pub use grpc::AuditHandler;
pub use settings::Settings;
pub use signing::{ALGORITHM, SigningKeyError, key_id};
