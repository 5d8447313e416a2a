//! The tenancy service's typed settings: every field has a default except the operator credential,
//! so a file or `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use serde::Deserialize;
use trustmesh_auth::{OperatorCredential, RateLimit};
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

/// The operator credential, API-key and support-grant limits, and the per-tenant request rate.
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
    /// Longest lifetime of a support grant, in days. Default 7.
    pub max_support_grant_days: u32,
    /// Requests per second (`requests_per_second`, default 100) and burst (`burst`, default 200)
    /// each service allows one tenant's keys; published to every service through `tm_auth`.
    pub tenant_rate_limit: RateLimit,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            operator_credential: None,
            max_key_lifetime_days: 365,
            max_key_cache_staleness_secs: 10,
            max_support_grant_days: 7,
            tenant_rate_limit: RateLimit::default(),
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
        if self.max_support_grant_days == 0 {
            return Err(InvalidSetting::new(
                "max_support_grant_days",
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

#[cfg(test)]
mod tests {
    use trustmesh_runtime::SettingsSource;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, trustmesh_runtime::SettingsError> {
        let required = [
            (
                "TRUSTMESH_AUTH__OPERATOR_CREDENTIAL".to_owned(),
                "o".repeat(40),
            ),
            (
                "TRUSTMESH_GRPC__TLS__MODE".to_owned(),
                "dev_plaintext_loopback".to_owned(),
            ),
        ];
        SettingsSource::from_env_vars(
            vars.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .chain(required),
        )
        .load()
    }

    #[test]
    fn the_tenant_rate_limit_defaults_and_is_set_per_deployment() {
        assert_eq!(
            load(&[]).unwrap().auth.tenant_rate_limit,
            RateLimit::default()
        );
        let settings = load(&[(
            "TRUSTMESH_AUTH__TENANT_RATE_LIMIT__REQUESTS_PER_SECOND",
            "5",
        )])
        .unwrap();
        assert_eq!(settings.auth.tenant_rate_limit.requests_per_second.get(), 5);
        assert_eq!(
            settings.auth.tenant_rate_limit.burst,
            RateLimit::default().burst
        );
        assert!(load(&[("TRUSTMESH_AUTH__TENANT_RATE_LIMIT__BURST", "0")]).is_err());
        assert!(load(&[("TRUSTMESH_AUTH__MAX_SUPPORT_GRANT_DAYS", "0")]).is_err());
    }
}
