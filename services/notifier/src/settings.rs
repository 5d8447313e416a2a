//! The notifier's typed settings: every field has a default, so a file or
//! `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use serde::Deserialize;
pub use trustmesh_runtime::settings::common::{DatabaseSettings, NatsSettings};
use trustmesh_runtime::{AdminSettings, GrpcSettings, InvalidSetting, ShutdownSettings, Validate};
use trustmesh_telemetry::TelemetrySettings;

/// Every setting of the notifier.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The gRPC listener (health and reflection; the notifier is managed through `TenancyService`).
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
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        if self.database.max_connections == 0 {
            return Err(
                InvalidSetting::new("max_connections", "must be at least 1").within("database")
            );
        }
        Ok(())
    }
}
