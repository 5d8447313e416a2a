//! The audit service's typed settings: every field has a default, so a file or
//! `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use serde::Deserialize;
pub use trustmesh_runtime::settings::common::{DatabaseSettings, NatsSettings};
use trustmesh_runtime::{AdminSettings, GrpcSettings, InvalidSetting, ShutdownSettings, Validate};
use trustmesh_telemetry::TelemetrySettings;

/// Every setting of the audit service.
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
    /// Credentials.
    pub auth: AuthSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        self.database.validate().map_err(|e| e.within("database"))?;
        self.auth.validate().map_err(|e| e.within("auth"))
    }
}

/// How API keys are checked.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Seconds the key cache may be cut off from `tm_auth` before it refuses every key. Default 10.
    pub max_key_cache_staleness_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            max_key_cache_staleness_secs: 10,
        }
    }
}

impl Validate for AuthSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.max_key_cache_staleness_secs == 0 {
            return Err(InvalidSetting::new(
                "max_key_cache_staleness_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
