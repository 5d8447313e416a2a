//! The ingest service: dataset uploads (CSV, JSONL, Parquet), validation with row/column errors,
//! schema inference, encrypted storage of the raw upload and the parsed columns, `dataset.ingested`,
//! audited `ReadRows` for other services, and its share of deletions.
//!
//! Layout:
//! - [`Application`] (`app.rs`): build (connect, migrate schema `ingest`, ensure streams and the
//!   `ingest-deletion` consumer, load the `tm_auth` key cache, bind listeners behind
//!   `trustmesh_auth::Authenticator`) and `run_until_stopped`.
//! - [`settings`]: typed, layered settings.
//! - `datasets/`: `grpc.rs` (the `DatasetService` handler: scope and tenant checks on every call,
//!   every call audited, denials included; how service-to-service reads authenticate), `repo.rs`
//!   (the `datasets` table: display name, description, file name and schema sealed), `csv.rs`
//!   (parsing and rejections naming line and column), `schema.rs` (types, roles, typed columns).
//! - `deletion/consumer.rs`: deletes a dataset's or tenant's data, crypto-shreds, scans for residue,
//!   publishes `deletion.receipt`, once per deletion.
//! - `error.rs`: [`IngestError`] and its one mapping to `tonic::Status`.
//!
//! Customer content (cells, column names, names, descriptions, file names) is stored only encrypted;
//! events and audit records carry ids and counts.

mod app;
pub mod datasets;
mod deletion;
mod error;
pub mod settings;

pub use app::{AppError, Application, MIGRATOR, SCHEMA, component};
pub use error::IngestError;
pub use settings::Settings;
