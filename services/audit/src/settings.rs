//! The audit service's typed settings: every field has a default, so a file or
//! `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use std::path::PathBuf;

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
    /// The checkpoint signing key.
    pub keys: KeySettings,
    /// When checkpoints are signed.
    pub checkpoints: CheckpointSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        self.nats.validate().map_err(|e| e.within("nats"))?;
        self.database.validate().map_err(|e| e.within("database"))?;
        self.auth.validate().map_err(|e| e.within("auth"))?;
        self.checkpoints
            .validate()
            .map_err(|e| e.within("checkpoints"))
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

/// The checkpoint signing key.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySettings {
    /// The Ed25519 key file (`ed25519 <hex seed>`, mode 0600), created with a fresh key if missing.
    /// Default `data/audit/signing-key`.
    pub signing_key_file: PathBuf,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            signing_key_file: PathBuf::from("data/audit/signing-key"),
        }
    }
}

/// When a tenant's chain gets a signed checkpoint: after `every_events` new events, or, with at
/// least one new event, `every_secs` after its last checkpoint.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointSettings {
    /// Events between checkpoints. Default 100.
    pub every_events: u64,
    /// Seconds after which new events are checkpointed anyway. Default 10.
    pub every_secs: u64,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            every_events: 100,
            every_secs: 10,
        }
    }
}

impl Validate for CheckpointSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.every_events == 0 || i64::try_from(self.every_events).is_err() {
            return Err(InvalidSetting::new("every_events", "must be at least 1"));
        }
        if self.every_secs == 0 {
            return Err(InvalidSetting::new("every_secs", "must be at least 1"));
        }
        Ok(())
    }
}
