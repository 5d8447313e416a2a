//! The trust-scoring service's typed settings: every field has a default, so a file or
//! `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use trustmesh_events::TenantId;
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
    /// Dedicated deployment profile (infra/README.md, "Deployment profiles").
    pub dedicated: DedicatedSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        self.nats.validate().map_err(|e| e.within("nats"))?;
        self.database.validate().map_err(|e| e.within("database"))?;
        self.analysis.validate().map_err(|e| e.within("analysis"))?;
        if let Some(ingest) = &self.ingest {
            ingest.validate().map_err(|e| e.within("ingest"))?;
        }
        self.dedicated.validate().map_err(|e| e.within("dedicated"))
    }
}

/// Where the tenants served by dedicated analysis Deployments have their analysis.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedicatedSettings {
    /// Tenant → the gRPC endpoint of its dedicated analysis Deployment, reached with
    /// `analysis.tls`. That tenant's model outputs are read there: the shared analysis replicas
    /// cannot open the dedicated bucket nor unwrap its key. A table in a file; in the environment,
    /// comma-separated `tenant=endpoint` pairs
    /// (`TRUSTMESH_DEDICATED__ANALYSIS=vip=https://analysis-vip:50051`).
    #[serde(deserialize_with = "table_or_comma_separated")]
    pub analysis: BTreeMap<String, String>,
}

/// A table of strings from a file's table or an environment variable's `key=value,...` string.
// NOTE: the environment source reads every value as a string (no list or map separator, so that
// secrets are taken verbatim), which a map field would refuse.
fn table_or_comma_separated<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Table(BTreeMap<String, String>),
        Joined(String),
    }
    match Either::deserialize(deserializer)? {
        Either::Table(table) => Ok(table),
        Either::Joined(joined) => joined
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!("`{pair}` is not `tenant=endpoint`"))
                    })
            })
            .collect(),
    }
}

impl Validate for DedicatedSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        for (tenant, endpoint) in &self.analysis {
            if TenantId::parse(tenant).is_err() {
                return Err(InvalidSetting::new("analysis", "not a tenant id"));
            }
            if endpoint.is_empty() {
                return Err(InvalidSetting::new("analysis", "an endpoint is empty"));
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use trustmesh_runtime::{SettingsError, SettingsSource};

    use super::*;

    fn load(dedicated_analysis: &str) -> Result<Settings, SettingsError> {
        SettingsSource::from_env_vars([
            ("TRUSTMESH_DEDICATED__ANALYSIS", dedicated_analysis),
            ("TRUSTMESH_GRPC__TLS__MODE", "dev_plaintext_loopback"),
        ])
        .load()
    }

    #[test]
    fn dedicated_analysis_endpoints_come_from_the_environment_comma_separated() {
        let settings =
            load("vip=http://127.0.0.1:1234, big-co=https://analysis-big-co:50051").unwrap();
        assert_eq!(
            settings.dedicated.analysis,
            BTreeMap::from([
                (
                    "big-co".to_owned(),
                    "https://analysis-big-co:50051".to_owned()
                ),
                ("vip".to_owned(), "http://127.0.0.1:1234".to_owned()),
            ])
        );
        assert!(matches!(load("vip"), Err(SettingsError::Load(_))));
        assert!(matches!(
            load("not a tenant=http://127.0.0.1:1234"),
            Err(SettingsError::Invalid(_))
        ));
        assert!(matches!(load("vip="), Err(SettingsError::Invalid(_))));
    }
}
