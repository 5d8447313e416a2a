//! The tenancy service's typed settings: every field has a default except the operator credential,
//! so a file or `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use serde::Deserialize;
use trustmesh_auth::OperatorCredential;
pub use trustmesh_runtime::settings::common::{
    DatabaseSettings, MeshSettings, NatsSettings, PeerSettings,
};
use trustmesh_runtime::{
    AdminSettings, GrpcSettings, InvalidSetting, SecretString, ShutdownSettings, Validate,
};
use trustmesh_telemetry::TelemetrySettings;

/// Every setting of the tenancy service.
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
    /// The mesh's service credential, presented to the notifier's `WebhookService`.
    pub mesh: MeshSettings,
    /// The notifier, which owns webhook endpoints and deliveries. Unset (the default), the webhook
    /// RPCs answer FAILED_PRECONDITION.
    pub notifier: Option<PeerSettings>,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        self.database.validate().map_err(|e| e.within("database"))?;
        if let Some(notifier) = &self.notifier {
            notifier.validate().map_err(|e| e.within("notifier"))?;
        }
        self.auth.validate().map_err(|e| e.within("auth"))
    }
}

/// The operator credential and API-key limits.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The operator credential (`authorization: Bearer <it>` manages tenants); required, at least
    /// 32 printable characters.
    pub operator_credential: Option<SecretString>,
    /// Longest lifetime of an API key, in days. Default 365.
    pub max_key_lifetime_days: u32,
    /// Seconds the key cache may be cut off from `tm_auth` before it refuses every key. Default 10.
    pub max_key_cache_staleness_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            operator_credential: None,
            max_key_lifetime_days: 365,
            max_key_cache_staleness_secs: 10,
        }
    }
}

impl AuthSettings {
    /// The operator credential, validated.
    ///
    /// # Errors
    /// [`InvalidSetting`] if it is missing or too weak.
    pub fn operator(&self) -> Result<OperatorCredential, InvalidSetting> {
        let secret = self.operator_credential.as_ref().ok_or_else(|| {
            InvalidSetting::new(
                "operator_credential",
                "required: the secret that manages tenants",
            )
        })?;
        OperatorCredential::new(secret)
            .map_err(|e| InvalidSetting::new("operator_credential", e.to_string()))
    }
}

impl Validate for AuthSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.operator()?;
        if self.max_key_lifetime_days == 0 {
            return Err(InvalidSetting::new(
                "max_key_lifetime_days",
                "must be at least 1",
            ));
        }
        if self.max_key_cache_staleness_secs == 0 {
            return Err(InvalidSetting::new(
                "max_key_cache_staleness_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
