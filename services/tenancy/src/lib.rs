//! The tenancy service: tenants, API keys and support grants. Keys are random 256-bit secrets shown once; Postgres
//! and the NATS KV bucket `tm_auth` hold only their SHA-256 digests, and every service resolves keys
//! from `tm_auth` through `trustmesh-auth`'s key cache.
//!
//! Layout:
//! - [`Application`] (`app.rs`): build (connect, migrate schema `tenancy`, reconcile `tm_auth` with
//!   Postgres, load the key cache, bind listeners) and `run_until_stopped`.
//! - [`settings`]: typed, layered settings (the operator credential among them).
//! - `grpc.rs`: the `TenancyService` handler, auditing every call that reaches a tenant.
//! - `grants.rs`: support grants (a tenant admin's time-limited, scoped access for the operator),
//!   replicated to every service through `tm_auth`. `app.rs` also publishes the operator
//!   credential's digest and the per-tenant request-rate limit there.
//! - `deletion.rs`: the `tenancy-deletion` consumer: a tenant's deletion revokes and deletes its
//!   keys (rows and `tm_auth` records) and its row, answered with a `deletion.receipt`.
//! - `repo.rs`: the `tenants`, `api_keys` and `support_grants` tables.
//! - `webhooks.rs`: the webhook RPCs, authorized and audited here and forwarded to the notifier's
//!   `WebhookService` (which owns endpoints, sealed secrets and deliveries) with the mesh credential.
//! - `error.rs`: [`TenancyError`] and its one mapping to `tonic::Status`.
//! - `single_tenant.rs`: the single-tenant install (`single_tenant` settings): its tenant and first
//!   admin key created at start, the operator's RPCs refused.
//!
//! - `quotas.rs`: GetQuota (tenant admin or operator) and UpdateQuota (operator): per-tenant
//!   requests per minute, concurrent jobs and stored bytes, replicated through `tm_auth` and
//!   enforced by the auth layer (rate), analysis (jobs) and ingest (bytes).
//!
//! Tenant disable/enable/list arrive with later issues; until then those RPCs answer
//! FAILED_PRECONDITION.

mod app;
mod deletion;
mod error;
mod grants;
mod grpc;
mod quotas;
mod repo;
pub mod settings;
mod single_tenant;
mod webhooks;

pub use app::{AppError, Application, MIGRATOR, SCHEMA, component};
pub use error::TenancyError;
pub use grpc::TenancyHandler;
pub use settings::Settings;
pub use single_tenant::BootstrapError;
