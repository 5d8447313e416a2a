//! The notifier: the only service with egress to customer webhooks. It owns the tenants' webhook
//! endpoints (signing secrets sealed with per-tenant DEKs), delivers signed webhooks (Standard
//! Webhooks) through the SSRF guard of `trustmesh-webhooks`, keeps the delivery log, and answers
//! deletions.
//!
//! It consumes `job.*`, `scores.ready`, `dataset.*` and `deletion.*` through its durable consumers
//! (`trustmesh-events`). `dataset.ingested`, `dataset.failed`, `job.succeeded` / `job.failed` /
//! `job.cancelled` (from `job.updated`) and a dataset's `deletion.completed` become one queued
//! delivery per subscribed endpoint, keyed by (endpoint, event), so redeliveries add nothing. The
//! dispatcher sends due deliveries with bounded, jittered retries (`backon`), the same
//! `webhook-id` on every attempt; HTTP 410 disables the endpoint. On `deletion.requested` it
//! deletes the target's deliveries (a tenant's: also its endpoints, and destroys its DEKs), scans
//! for residue and publishes its `deletion.receipt` through the outbox, once per deletion.
//!
//! Tenants manage endpoints through `TenancyService`, which authorizes and audits the call and
//! forwards it to this service's `WebhookService` with the mesh's service credential.
//!
//! Layout:
//! - [`Application`] (`app.rs`): build and `run_until_stopped`.
//! - [`settings`]: typed, layered settings (egress allow-list, timeouts, retry schedule).
//! - [`webhooks`]: endpoints, deliveries, the dispatcher and `WebhookService`.
//! - `deliveries/consumer.rs`: the consumer handler.
//!
//! Deliveries hold event ids, types, resource names and HTTP outcomes only, never customer content
//! or response bodies.

mod app;
mod deliveries;
pub mod settings;
pub mod webhooks;

pub use app::{AppError, Application, MIGRATOR, SCHEMA, component};
pub use settings::Settings;
pub use webhooks::Deliveries;
