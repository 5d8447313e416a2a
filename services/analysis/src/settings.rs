//! The analysis service's typed settings: every field has a default, so a file or
//! `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use std::path::PathBuf;

use serde::Deserialize;
use trustmesh_events::TenantId;
pub use trustmesh_runtime::settings::common::{
    DatabaseSettings, MeshSettings, NatsSettings, PeerSettings,
};
use trustmesh_runtime::{AdminSettings, GrpcSettings, InvalidSetting, ShutdownSettings, Validate};
pub use trustmesh_store::ObjectStoreSettings;
use trustmesh_telemetry::TelemetrySettings;

/// Every setting of the analysis service.
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
    /// The mesh's service credential: presented to ingest's `ReadRows`, and accepted on
    /// `GetModelOutputs` (trust-scoring reads).
    pub mesh: MeshSettings,
    /// Where encrypted objects are kept.
    pub objects: ObjectStoreSettings,
    /// Key-encryption keys.
    pub keys: KeySettings,
    /// The ingest service, whose `ReadRows` the analysis reads.
    pub ingest: PeerSettings,
    /// How this replica shares the work: training slots, fold fan-out, deployment profile.
    pub work: WorkSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        self.nats.validate().map_err(|e| e.within("nats"))?;
        self.database.validate().map_err(|e| e.within("database"))?;
        self.ingest.validate().map_err(|e| e.within("ingest"))?;
        self.work.validate().map_err(|e| e.within("work"))
    }
}

/// How a replica shares the analysis work with the others (infra/README.md, "Work partitioning"
/// and "Deployment profiles").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkSettings {
    /// Jobs and folds this replica trains at once (each uses every core through rayon); the slots
    /// go to tenants in turn (`fairness.rs`).
    pub training_slots: usize,
    /// Deliveries of each consumer this replica admits at once; admitted work beyond the training
    /// slots waits for its tenant's turn.
    pub admitted: usize,
    /// A job with at least this many rows fans its cross-validation folds out as
    /// `analysis.fold.requested` work items, trained by any replica; smaller jobs train every fold
    /// in the replica that took them. `0` never fans out.
    pub fold_fanout_min_rows: usize,
    /// Dedicated profile: this replica takes only this tenant's jobs, folds, completions
    /// (`scores.ready`) and deletions, through durable consumers of its own (`<durable>-<tenant>`)
    /// filtered on `tm.<tenant>.…`, and answers only this tenant's calls. Give it its own
    /// `database.url`, `objects.*` and `keys.kek_file`: the tenant's rows, objects and keys then
    /// live only there.
    pub dedicated_tenant: Option<String>,
    /// Tenants served by dedicated replicas: the shared replicas acknowledge their jobs, folds,
    /// completions and deletions without acting on them, and refuse their calls
    /// (FAILED_PRECONDITION).
    /// A list in a file; in the environment, comma-separated
    /// (`TRUSTMESH_WORK__DEDICATED_ELSEWHERE=vip,big-co`).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub dedicated_elsewhere: Vec<String>,
}

/// A list of strings from a file's list or an environment variable's comma-separated string.
// NOTE: the environment source reads every value as a string (no list separator, so that secrets
// are taken verbatim), which a `Vec` field would refuse.
fn list_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Joined(String),
    }
    Ok(match Either::deserialize(deserializer)? {
        Either::List(list) => list,
        Either::Joined(joined) => joined
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

impl Default for WorkSettings {
    fn default() -> Self {
        Self {
            training_slots: 1,
            admitted: 64,
            fold_fanout_min_rows: 10_000,
            dedicated_tenant: None,
            dedicated_elsewhere: Vec::new(),
        }
    }
}

impl Validate for WorkSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.training_slots == 0 {
            return Err(InvalidSetting::new("training_slots", "must be at least 1"));
        }
        if self.admitted < self.training_slots {
            return Err(InvalidSetting::new(
                "admitted",
                "must be at least `training_slots`",
            ));
        }
        for tenant in self
            .dedicated_tenant
            .iter()
            .chain(&self.dedicated_elsewhere)
        {
            if TenantId::parse(tenant).is_err() {
                return Err(InvalidSetting::new("dedicated_tenant", "not a tenant id"));
            }
        }
        if self
            .dedicated_tenant
            .as_ref()
            .is_some_and(|t| self.dedicated_elsewhere.contains(t))
        {
            return Err(InvalidSetting::new(
                "dedicated_elsewhere",
                "names this replica's own dedicated tenant",
            ));
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
            kek_file: PathBuf::from("data/analysis/kek"),
        }
    }
}

#[cfg(test)]
mod tests {
    use trustmesh_runtime::{SettingsError, SettingsSource};

    use super::*;

    fn load(dedicated_elsewhere: &str) -> Result<Settings, SettingsError> {
        SettingsSource::from_env_vars([
            ("TRUSTMESH_WORK__DEDICATED_ELSEWHERE", dedicated_elsewhere),
            ("TRUSTMESH_GRPC__TLS__MODE", "dev_plaintext_loopback"),
        ])
        .load()
    }

    #[test]
    fn dedicated_tenants_come_from_the_environment_comma_separated() {
        let settings = load("vip, big-co").unwrap();
        assert_eq!(settings.work.dedicated_elsewhere, ["vip", "big-co"]);
        assert!(matches!(
            load("vip,not a tenant"),
            Err(SettingsError::Invalid(_))
        ));
    }

    #[test]
    fn the_nats_section_is_validated_too() {
        let loaded: Result<Settings, _> = SettingsSource::from_env_vars([
            ("TRUSTMESH_NATS__TLS__CERT_FILE", "/etc/trustmesh/nats.pem"),
            ("TRUSTMESH_GRPC__TLS__MODE", "dev_plaintext_loopback"),
        ])
        .load();
        let Err(SettingsError::Invalid(invalid)) = loaded else {
            panic!("a client certificate without its key was accepted: {loaded:?}");
        };
        assert!(
            invalid.to_string().contains("nats.tls.cert_file"),
            "{invalid}"
        );
    }
}
