//! The notifier's typed settings: every field has a default, so a file or
//! `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
pub use trustmesh_runtime::settings::common::{DatabaseSettings, MeshSettings, NatsSettings};
use trustmesh_runtime::{AdminSettings, GrpcSettings, InvalidSetting, ShutdownSettings, Validate};
use trustmesh_telemetry::TelemetrySettings;

/// Every setting of the notifier.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The gRPC listener: `WebhookService` (tenancy forwards the tenant's webhook calls to it),
    /// health and reflection.
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
    /// The mesh's service credential, the only one `WebhookService` accepts (tenancy presents it).
    pub mesh: MeshSettings,
    /// Key-encryption keys (webhook signing secrets are sealed with per-tenant DEKs).
    pub keys: KeySettings,
    /// Webhook delivery: egress guard, timeouts and the retry schedule.
    pub webhooks: WebhookSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        self.nats.validate().map_err(|e| e.within("nats"))?;
        self.database.validate().map_err(|e| e.within("database"))?;
        self.webhooks.validate().map_err(|e| e.within("webhooks"))
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
            kek_file: PathBuf::from("data/notifier/kek"),
        }
    }
}

/// How webhooks are delivered.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Address ranges deliveries may reach although they are not public (e.g. `127.0.0.1/32` for a
    /// local receiver). Empty by default: only public addresses.
    pub allow_destinations: Vec<ipnet::IpNet>,
    /// Accept plain `http://` endpoint URLs. Default false (`https` only).
    pub allow_http: bool,
    /// Seconds an attempt may take (connect, TLS, answer). Default 15.
    pub timeout_secs: u64,
    /// Attempts per delivery, the first included. Default 8.
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds (doubling, with jitter). Default 5000.
    pub first_retry_delay_ms: u64,
    /// Longest delay between two attempts, in milliseconds. Default 10 h.
    pub max_retry_delay_ms: u64,
    /// How often due deliveries are looked for when nothing wakes the dispatcher, in
    /// milliseconds. Default 1000.
    pub poll_interval_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_destinations: Vec::new(),
            allow_http: false,
            timeout_secs: 15,
            max_attempts: 8,
            first_retry_delay_ms: 5_000,
            max_retry_delay_ms: 10 * 3_600_000,
            poll_interval_ms: 1_000,
        }
    }
}

impl WebhookSettings {
    /// The timeout of one attempt.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

impl Validate for WebhookSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        let positive = [
            ("timeout_secs", self.timeout_secs),
            ("max_attempts", u64::from(self.max_attempts)),
            ("first_retry_delay_ms", self.first_retry_delay_ms),
            ("poll_interval_ms", self.poll_interval_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(InvalidSetting::new(key, "must be at least 1"));
            }
        }
        if self.max_retry_delay_ms < self.first_retry_delay_ms {
            return Err(InvalidSetting::new(
                "max_retry_delay_ms",
                "must be at least first_retry_delay_ms",
            ));
        }
        Ok(())
    }
}
