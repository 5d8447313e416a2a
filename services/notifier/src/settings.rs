//! The notifier's typed settings: every field has a default, so a file or
//! `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use serde::Deserialize;
use trustmesh_runtime::{
    AdminSettings, GrpcSettings, InvalidSetting, SecretString, ShutdownSettings, Validate,
};
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

/// How to reach Postgres.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// A `postgres://` URL (its `sslmode` sets TLS; `verify-full` is required off loopback).
    pub url: SecretString,
    /// Pool size. Default 10.
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://postgres@127.0.0.1:5432/trustmesh"),
            max_connections: 10,
        }
    }
}

/// How to reach NATS.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// Server URL. Default `nats://127.0.0.1:4222`.
    pub url: String,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
        }
    }
}
