//! The trust-scoring service: on `analysis.completed` it reads the analysis' model outputs (through
//! `AnalysisService.GetModelOutputs`), runs the quality engine's issue detectors and per-row trust
//! score, stores the report and the per-row results encrypted, and publishes `scores.ready`; the
//! `TrustService` serves reports, paged rows (filtered by issue, ordered by score), corrections and
//! the cleanset export (the dataset's rows read from ingest's `ReadRows` with the mesh's service
//! credential, corrections applied, quality columns appended); it deletes its share of a dataset or
//! tenant on `deletion.requested`.
//!
//! Layout:
//! - [`Application`] (`app.rs`): build (connect, migrate schema `trust_scoring`, ensure streams and
//!   the `trust-scoring-analysis` and `trust-scoring-deletion` consumers, bind listeners) and `run_until_stopped`.
//! - [`settings`]: typed, layered settings.
//! - `reports/`: `grpc.rs` (the `TrustService` handler, auditing every call), `repo.rs` (the
//!   `reports` and `corrections` tables), `scoring.rs` (the consumer), `rows.rs` (`ListRows`'
//!   selection), `export.rs` (`ExportCleanset`: the ingest client and the CSV / JSON Lines rendering).
//! - the `trust-scoring-deletion` consumer is `trustmesh_service_kit::ResourceDeletion` over
//!   `reports`: a dataset's reports, rows and corrections (or a tenant's, crypto-shredded) deleted,
//!   residue scanned, `deletion.receipt` sent once.
//! - `error.rs`: [`TrustError`] and its one mapping to `tonic::Status`.
//!
//! Customer content (class names, given and suggested labels, corrected labels) is stored only
//! encrypted; events and audit records carry ids, counts and scores.

mod app;
mod error;
mod reports;
pub mod settings;

pub use app::{AppError, Application, MIGRATOR, SCHEMA, component};
pub use error::TrustError;
pub use settings::Settings;
