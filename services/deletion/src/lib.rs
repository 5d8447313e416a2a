//! The deletion service: deletes a dataset or a whole tenant across every store-owning service and
//! proves it with a signed certificate.
//!
//! `DeleteDataset` / `DeleteTenant` start a deletion (a DELETION job; idempotent by `request_id`
//! and by in-progress target) and publish `deletion.requested` through the outbox. Each service
//! answers with a `deletion.receipt`, recorded once; when every expected service has answered (for
//! a TENANT, after this service purged `tm.<tenant>.>` from every stream but `TM_AUDIT` and recorded
//! the counts as its own `deletion` receipt), the certificate (canonical JSON of the deletion and its receipts) is signed with the service's
//! Ed25519 key, stored, audited, and `deletion.completed` is published. Late receipts lead to
//! re-published requests, then to FAILED naming the services that did not answer.
//!
//! Layout:
//! - [`Application`] (`app.rs`): build and `run_until_stopped`.
//! - [`settings`]: typed, layered settings (the expected services, timeouts and retries, the
//!   operator credential).
//! - [`certificate`]: the document, the signing key file and [`verify_certificate`].
//! - `deletions/`: `grpc.rs` (the `DeletionService` handler), `service.rs` (the workflow),
//!   `receipts.rs` (the `deletion-receipt` consumer), `sweeper.rs` (late receipts), `repo.rs` (tables),
//!   `model.rs` (rows, names, the job view), `streams.rs` (a tenant's JetStream purge).
//! - `error.rs`: [`DeletionError`] and its one mapping to `tonic::Status`.

mod app;
pub mod certificate;
mod deletions;
mod error;
pub mod settings;

pub use app::{AppError, Application, MIGRATOR, SCHEMA, component};
pub use certificate::{VerifyError, verify_certificate};
pub use error::DeletionError;
pub use settings::Settings;
