//! The notifier: the only service with egress to customer webhooks. For now it records, per
//! tenant, what it would deliver (webhook HTTP delivery is a later issue), and answers deletions.
//!
//! It consumes `job.*`, `scores.ready`, `dataset.*` and `deletion.*` through its durable consumers
//! (`trustmesh-events`); each event becomes one record in the delivery log, keyed by its event id,
//! so redeliveries add nothing. On `deletion.requested` it deletes the tenant's (or the dataset's)
//! records, scans for residue and publishes its `deletion.receipt` through the outbox, once per
//! deletion.
//!
//! Layout:
//! - [`Application`] (`app.rs`): build and `run_until_stopped`.
//! - [`settings`]: typed, layered settings.
//! - [`deliveries`]: the delivery log ([`DeliveryLog`]) and the consumer handler (`consumer.rs`).
//!
//! Records hold event ids, types and resource names only, never customer content.

mod app;
pub mod deliveries;
pub mod settings;

pub use app::{AppError, Application, MIGRATOR, SCHEMA, component};
pub use deliveries::{DeliveryLog, DeliveryRecord};
pub use settings::Settings;
