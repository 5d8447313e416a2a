//! The analysis service: analysis jobs (StartAnalysis → Job; Get, List, Cancel, Watch), the worker
//! that reads a dataset's rows through ingest and trains the quality engine's AutoML suite on them
//! (K-fold cross-validated, ensembled), encrypted model outputs (`GetModelOutputs` for
//! trust-scoring), the job's completion on `scores.ready`, and its share of deletions.
//!
//! Layout:
//! - [`Application`] (`app.rs`): build (connect, migrate schema `analysis`, ensure streams and the
//!   `analysis-requested`, `analysis-scores` and `analysis-deletion` consumers, bind listeners) and `run_until_stopped`.
//! - [`settings`]: typed, layered settings.
//! - `jobs/`: `grpc.rs` (the `AnalysisService` handler, auditing every call), `repo.rs` (the `jobs`
//!   table: every change writes `job.updated` in the same transaction), `worker.rs` (the
//!   `analysis-requested` consumer), `scores.rs` (the `analysis-scores` consumer), `deletion.rs`
//!   (the `analysis-deletion` consumer: `trustmesh_service_kit::ResourceDeletion` over `jobs`, a
//!   dataset's jobs and outputs, or a tenant's, crypto-shredded, deleted, residue scanned,
//!   `deletion.receipt` sent once).
//! - `placement.rs`: which tenants' messages and calls a replica takes (dedicated profile).
//! - `training.rs`: columns → AutoML's table, the one training call, the detectors' features and
//!   the model summary.
//! - `ingest.rs`: ingest's `DatasetService` with the mesh's service credential (StartAnalysis checks
//!   the dataset through it; the worker reads the rows).
//! - `modality.rs`: the image and text checks on the dataset's cells.
//! - `outputs.rs`: the stored model outputs and their batches.
//! - `error.rs`: [`AnalysisError`] and its one mapping to `tonic::Status`.
//!
//! Customer content (the label column's name, class names, labels, features, probabilities) is
//! stored only encrypted; events and audit records carry ids and counts.

mod app;
mod error;
mod fairness;
mod ingest;
mod jobs;
mod modality;
mod outputs;
mod placement;
pub mod settings;
mod training;

pub use app::{AppError, Application, MIGRATOR, SCHEMA, component};
pub use error::AnalysisError;
pub use settings::Settings;
