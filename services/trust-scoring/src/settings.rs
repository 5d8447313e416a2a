//! The trust-scoring service's typed settings: every field has a default, so a file or
//! `TRUSTMESH_<SECTION>__<KEY>` names only what differs.

use std::path::PathBuf;

use serde::Deserialize;
use trustmesh_runtime::{
    AdminSettings, ClientTls, ExposeSecret, GrpcSettings, InvalidSetting, SecretString,
    ShutdownSettings, Validate,
};
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
    /// Where encrypted objects are kept.
    pub objects: ObjectStoreSettings,
    /// Key-encryption keys.
    pub keys: KeySettings,
    /// The analysis service, whose `GetModelOutputs` trust-scoring reads.
    pub analysis: PeerSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.grpc.validate().map_err(|e| e.within("grpc"))?;
        self.admin.validate().map_err(|e| e.within("admin"))?;
        self.shutdown.validate().map_err(|e| e.within("shutdown"))?;
        self.database.validate().map_err(|e| e.within("database"))?;
        self.analysis.validate().map_err(|e| e.within("analysis"))
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

impl Validate for DatabaseSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.max_connections == 0 {
            return Err(InvalidSetting::new("max_connections", "must be at least 1"));
        }
        Ok(())
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

/// The object store backend.
#[derive(Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum ObjectStoreSettings {
    /// A local directory.
    Local {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// An S3 bucket (any S3-compatible server).
    S3 {
        /// Endpoint of an S3-compatible server; unset means AWS.
        endpoint: Option<String>,
        /// Region.
        region: String,
        /// Bucket.
        bucket: String,
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: SecretString,
        /// Create the bucket if missing (dev and tests).
        #[serde(default)]
        create_bucket: bool,
    },
}

impl Default for ObjectStoreSettings {
    fn default() -> Self {
        Self::Local {
            dir: PathBuf::from("data/trust-scoring/objects"),
        }
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

/// Another service this one calls.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerSettings {
    /// Its gRPC endpoint, e.g. `https://analysis:50051`. Default `https://127.0.0.1:50051`.
    pub endpoint: String,
    /// TLS to it.
    pub tls: ClientTls,
    /// The API key presented to it (`authorization: Bearer`); analysis authenticates every call, so
    /// `GetModelOutputs` needs a key with `reports:read`.
    ///
    /// NOTE: a stopgap until services have their own identity (mTLS or a service principal in
    /// `libs/auth`): a key belongs to one tenant, so only that tenant's analyses can be scored.
    pub api_key: Option<SecretString>,
}

impl Default for PeerSettings {
    fn default() -> Self {
        Self {
            endpoint: "https://127.0.0.1:50051".to_owned(),
            tls: ClientTls::default(),
            api_key: None,
        }
    }
}

impl Validate for PeerSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.endpoint.is_empty() {
            return Err(InvalidSetting::new("endpoint", "must not be empty"));
        }
        if self
            .api_key
            .as_ref()
            .is_some_and(|key| !key.expose_secret().chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(InvalidSetting::new("api_key", "must be printable ASCII"));
        }
        Ok(())
    }
}
