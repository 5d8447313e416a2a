//! The ingest service's typed settings: every field has a default, so a file or
//! `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use std::path::PathBuf;

use serde::Deserialize;
pub use trustmesh_runtime::settings::common::{DatabaseSettings, MeshSettings, NatsSettings};
use trustmesh_runtime::{AdminSettings, GrpcSettings, InvalidSetting, ShutdownSettings, Validate};
pub use trustmesh_store::ObjectStoreSettings;
use trustmesh_telemetry::TelemetrySettings;

/// Every setting of the ingest service.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The gRPC listener.
    pub grpc: GrpcSettings,
    /// The admin HTTP listener (`/livez`, `/readyz`, `/metrics`).
    pub admin: AdminSettings,
    /// Graceful shutdown.
    pub shutdown: ShutdownSettings,
    /// Logs, traces, metrics.
    pub telemetry: TelemetrySettings,
    /// Postgres.
    pub database: DatabaseSettings,
    /// NATS JetStream.
    pub nats: NatsSettings,
    /// The mesh's service credential, accepted on `GetDataset` and `ReadRows` (analysis reads).
    pub mesh: MeshSettings,
    /// Where encrypted objects are kept.
    pub objects: ObjectStoreSettings,
    /// Key-encryption keys.
    pub keys: KeySettings,
    /// Upload limits.
    pub limits: Limits,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        self.nats.validate().map_err(|e| e.within("nats"))?;
        self.database.validate().map_err(|e| e.within("database"))?;
        self.limits.validate().map_err(|e| e.within("limits"))
    }
}

/// Where the key-encryption keys come from.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySettings {
    /// The local key file (mode 0600; created with a fresh KEK if missing).
    pub kek_file: PathBuf,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            kek_file: PathBuf::from("data/ingest/kek"),
        }
    }
}

/// Upload limits.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest upload, in bytes. Default 256 MiB.
    pub max_upload_bytes: u64,
    /// Most data rows. Default 1,000,000.
    pub max_rows: u64,
    /// Most columns. Default 2,048.
    pub max_columns: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_bytes: 256 * 1024 * 1024,
            max_rows: 1_000_000,
            max_columns: 2048,
        }
    }
}

impl Validate for Limits {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.max_upload_bytes == 0 || self.max_rows == 0 || self.max_columns == 0 {
            return Err(InvalidSetting::new(
                "max_upload_bytes",
                "every limit must be at least 1",
            ));
        }
        Ok(())
    }
}
