//! The deletion service's typed settings: every field has a default, so a file or
//! `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use trustmesh_auth::OperatorCredential;
use trustmesh_events::Service;
pub use trustmesh_runtime::settings::common::{DatabaseSettings, NatsSettings};
use trustmesh_runtime::{
    AdminSettings, GrpcSettings, InvalidSetting, SecretString, ShutdownSettings, Validate,
};
use trustmesh_telemetry::TelemetrySettings;

/// Every setting of the deletion service.
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
    /// The certificate signing key.
    pub keys: KeySettings,
    /// Receipts, retries and the certificate's backup statement.
    pub deletion: DeletionSettings,
    /// The operator credential and the API-key cache.
    pub auth: AuthSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        self.nats.validate().map_err(|e| e.within("nats"))?;
        if self.database.max_connections == 0 {
            return Err(
                InvalidSetting::new("max_connections", "must be at least 1").within("database")
            );
        }
        self.deletion.validate().map_err(|e| e.within("deletion"))?;
        self.auth.validate().map_err(|e| e.within("auth"))
    }
}

/// Who may call: API keys from `tm_auth`, and the operator (whose credential's digest tenancy
/// publishes to `tm_auth`, or this setting).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The operator credential (the same secret as `tenancy`'s): `authorization: Bearer <it>` may
    /// delete a tenant and fetch its certificates. Optional: without it the operator is recognised
    /// from the digest tenancy publishes to `tm_auth`. At least 32 printable characters.
    pub operator_credential: Option<SecretString>,
    /// Seconds the key cache may be cut off from `tm_auth` before it refuses every key. Default 10.
    pub max_key_cache_staleness_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            operator_credential: None,
            max_key_cache_staleness_secs: 10,
        }
    }
}

impl AuthSettings {
    /// The operator credential, validated, if one is set.
    ///
    /// # Errors
    /// [`InvalidSetting`] if it is set but too weak.
    pub fn operator(&self) -> Result<Option<OperatorCredential>, InvalidSetting> {
        self.operator_credential
            .as_ref()
            .map(|secret| {
                OperatorCredential::new(secret)
                    .map_err(|e| InvalidSetting::new("operator_credential", e.to_string()))
            })
            .transpose()
    }

    /// How long the key cache may be cut off from `tm_auth`.
    #[must_use]
    pub fn max_key_cache_staleness(&self) -> Duration {
        Duration::from_secs(self.max_key_cache_staleness_secs)
    }
}

impl Validate for AuthSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.operator()?;
        if self.max_key_cache_staleness_secs == 0 {
            return Err(InvalidSetting::new(
                "max_key_cache_staleness_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Where the certificate signing key lives.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySettings {
    /// The Ed25519 signing key file (mode 0600; created with a fresh key if missing).
    pub signing_key_file: PathBuf,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            signing_key_file: PathBuf::from("data/deletion/signing-key"),
        }
    }
}

/// How deletions wait for receipts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeletionSettings {
    /// Services whose receipt every deletion waits for. Default: every store-owning service
    /// (`tenancy`, `ingest`, `analysis`, `trust-scoring`, `notifier`, `audit`).
    pub expected_services: Vec<String>,
    /// How long to wait for the receipts before publishing the request again, in milliseconds.
    /// Default 5 minutes.
    pub receipt_timeout_ms: u64,
    /// How often the request is published again before the deletion fails. Default 3.
    pub max_retries: u32,
    /// How often late deletions are looked for, in milliseconds. Default 5 s.
    pub sweep_interval_ms: u64,
    /// Backup retention stated in certificates: backups older than this are gone. Default 35 days.
    pub backup_retention_days: u32,
}

impl Default for DeletionSettings {
    fn default() -> Self {
        Self {
            expected_services: [
                Service::Tenancy,
                Service::Ingest,
                Service::Analysis,
                Service::TrustScoring,
                Service::Notifier,
                Service::Audit,
            ]
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
            receipt_timeout_ms: 5 * 60 * 1000,
            max_retries: 3,
            sweep_interval_ms: 5000,
            backup_retention_days: 35,
        }
    }
}

impl DeletionSettings {
    /// The receipt timeout.
    #[must_use]
    pub fn receipt_timeout(&self) -> Duration {
        Duration::from_millis(self.receipt_timeout_ms)
    }

    /// The sweep interval.
    #[must_use]
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
}

impl Validate for DeletionSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.expected_services.is_empty() {
            return Err(InvalidSetting::new(
                "expected_services",
                "name at least one service",
            ));
        }
        for (i, name) in self.expected_services.iter().enumerate() {
            match Service::from_name(name) {
                None => {
                    return Err(InvalidSetting::new(
                        "expected_services",
                        format!("{name:?} is not a trustmesh service"),
                    ));
                }
                Some(Service::Deletion) => {
                    return Err(InvalidSetting::new(
                        "expected_services",
                        "the deletion service sends no receipt to itself",
                    ));
                }
                Some(_) if self.expected_services[..i].contains(name) => {
                    return Err(InvalidSetting::new(
                        "expected_services",
                        format!("{name:?} is listed twice"),
                    ));
                }
                Some(_) => {}
            }
        }
        if self.receipt_timeout_ms == 0 || self.sweep_interval_ms == 0 {
            return Err(InvalidSetting::new(
                "receipt_timeout_ms",
                "timeouts and intervals must be at least 1 ms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_expected_set_is_every_store_owning_service_and_valid() {
        let settings = DeletionSettings::default();
        assert_eq!(settings.expected_services.len(), 6);
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn the_operator_credential_is_optional_but_must_be_strong() {
        assert!(AuthSettings::default().validate().is_ok());
        assert!(matches!(AuthSettings::default().operator(), Ok(None)));
        let weak = AuthSettings {
            operator_credential: Some(SecretString::from("short")),
            ..AuthSettings::default()
        };
        assert!(weak.validate().is_err());
        let strong = AuthSettings {
            operator_credential: Some(SecretString::from("o".repeat(40))),
            ..AuthSettings::default()
        };
        assert!(matches!(strong.operator(), Ok(Some(_))));
    }

    #[test]
    fn unknown_duplicate_or_self_services_are_refused() {
        for bad in [
            vec!["ingest".to_owned(), "nobody".to_owned()],
            vec!["ingest".to_owned(), "ingest".to_owned()],
            vec!["deletion".to_owned()],
            vec![],
        ] {
            let settings = DeletionSettings {
                expected_services: bad.clone(),
                ..DeletionSettings::default()
            };
            assert!(settings.validate().is_err(), "{bad:?}");
        }
    }
}
