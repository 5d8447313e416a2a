//! The tenancy service's typed settings: every field has a default except the operator credential
//! (or, in a single-tenant install, `single_tenant`), so a file or `TRUSTMESH_<SECTION>__<KEY>`
//! names only what differs.

use std::path::PathBuf;

use serde::Deserialize;
use trustmesh_auth::{OperatorCredential, QuotaDefaults, RateLimit};
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
    /// A single-tenant install (the customer's own VPC): one tenant, created at start, and no
    /// operator surface. Unset (the default), tenancy serves many tenants managed by the operator.
    pub single_tenant: Option<SingleTenantSettings>,
}

/// The one tenant of a single-tenant install and where its first admin key goes
/// (`single_tenant.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SingleTenantSettings {
    /// The tenant id (`TRUSTMESH_SINGLE_TENANT__TENANT`), created at start if absent.
    pub tenant: String,
    /// Its display name; the tenant id if unset.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The file (created mode 0600) that receives the tenant's first admin API key, issued at a start
    /// that finds the tenant without an active key (`TRUSTMESH_SINGLE_TENANT__FIRST_KEY_FILE`).
    pub first_key_file: PathBuf,
}

impl Validate for SingleTenantSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        trustmesh_events::TenantId::parse(&self.tenant)
            .map_err(|e| InvalidSetting::new("tenant", e.to_string()))?;
        if self.first_key_file.as_os_str().is_empty() {
            return Err(InvalidSetting::new(
                "first_key_file",
                "required: where the first admin key is written",
            ));
        }
        Ok(())
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        self.nats.validate().map_err(|e| e.within("nats"))?;
        self.database.validate().map_err(|e| e.within("database"))?;
        if let Some(notifier) = &self.notifier {
            notifier.validate().map_err(|e| e.within("notifier"))?;
        }
        self.auth.validate().map_err(|e| e.within("auth"))?;
        match &self.single_tenant {
            Some(single) => {
                if self.auth.operator_credential.is_some() {
                    return Err(InvalidSetting::new(
                        "auth.operator_credential",
                        "a single-tenant install has no operator: remove it",
                    ));
                }
                single.validate().map_err(|e| e.within("single_tenant"))
            }
            None => self.auth.operator().map(drop).map_err(|e| e.within("auth")),
        }
    }
}

/// The operator credential, API-key and support-grant limits, and the per-tenant request rate.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The operator credential (`authorization: Bearer <it>` manages tenants); at least 32
    /// printable characters; required unless `single_tenant` is set, which refuses it.
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
    /// Every tenant's concurrent jobs (`max_concurrent_jobs`, default 20) and stored bytes
    /// (`max_storage_bytes`, default 100 GiB) unless its quota says otherwise; published to every
    /// service through `tm_auth`.
    pub default_quota: QuotaDefaults,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            operator_credential: None,
            max_key_lifetime_days: 365,
            max_key_cache_staleness_secs: 10,
            max_support_grant_days: 7,
            tenant_rate_limit: RateLimit::default(),
            default_quota: QuotaDefaults::default(),
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
        // Required or refused by the deployment profile (`Settings::validate`); checked if present.
        if self.operator_credential.is_some() {
            self.operator()?;
        }
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

    fn load_single(vars: &[(&str, &str)]) -> Result<Settings, trustmesh_runtime::SettingsError> {
        SettingsSource::from_env_vars(
            vars.iter()
                .copied()
                .chain([("TRUSTMESH_GRPC__TLS__MODE", "dev_plaintext_loopback")]),
        )
        .load()
    }

    #[test]
    fn a_single_tenant_install_needs_no_operator_credential_and_refuses_one() {
        let single = [
            ("TRUSTMESH_SINGLE_TENANT__TENANT", "acme"),
            ("TRUSTMESH_SINGLE_TENANT__FIRST_KEY_FILE", "/tmp/first.key"),
        ];
        let settings = load_single(&single).unwrap();
        assert_eq!(settings.single_tenant.unwrap().tenant, "acme");
        let operator = "o".repeat(40);
        let with_operator: Vec<(&str, &str)> = single
            .iter()
            .copied()
            .chain([("TRUSTMESH_AUTH__OPERATOR_CREDENTIAL", operator.as_str())])
            .collect();
        assert!(load_single(&with_operator).is_err());
        assert!(
            load_single(&[
                ("TRUSTMESH_SINGLE_TENANT__TENANT", "Not A Tenant"),
                ("TRUSTMESH_SINGLE_TENANT__FIRST_KEY_FILE", "/tmp/first.key"),
            ])
            .is_err()
        );
        // Without the profile, the operator credential stays required.
        assert!(load_single(&[]).is_err());
    }
}
