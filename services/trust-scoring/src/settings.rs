//! The trust-scoring service's typed settings: every field has a default, so a file or
//! `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use std::path::PathBuf;

use serde::Deserialize;
pub use trustmesh_runtime::settings::common::{
    DatabaseSettings, MeshSettings, NatsSettings, PeerSettings,
};
use trustmesh_runtime::{AdminSettings, GrpcSettings, InvalidSetting, ShutdownSettings, Validate};
pub use trustmesh_store::ObjectStoreSettings;
use trustmesh_telemetry::TelemetrySettings;

/// Every setting of the trust-scoring service.
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
    /// The mesh's service credential, presented to analysis's `GetModelOutputs`.
    pub mesh: MeshSettings,
    /// Where encrypted objects are kept.
    pub objects: ObjectStoreSettings,
    /// Key-encryption keys.
    pub keys: KeySettings,
    /// The analysis service, whose `GetModelOutputs` trust-scoring reads.
    pub analysis: PeerSettings,
    /// The ingest service, whose `GetDataset` and `ReadRows` the cleanset export reads.
    // NOTE: optional: unset, the analysis endpoint is used, which serves `DatasetService` too in
    // the standalone mesh and behind an ingress that routes by gRPC service path (ARCHITECTURE §8).
    pub ingest: Option<PeerSettings>,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        self.database.validate().map_err(|e| e.within("database"))?;
        self.analysis.validate().map_err(|e| e.within("analysis"))?;
        match &self.ingest {
            Some(ingest) => ingest.validate().map_err(|e| e.within("ingest")),
            None => Ok(()),
        }
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
            kek_file: PathBuf::from("data/trust-scoring/kek"),
        }
    }
}
