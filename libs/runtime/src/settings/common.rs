//! Settings sections several services share word for word: Postgres, NATS and a peer service.
//!
//! A service's `Settings` names them as fields (`database`, `nats`, `ingest`, ...), so the keys stay
//! `TRUSTMESH_DATABASE__URL`, `TRUSTMESH_NATS__URL` and so on.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{InvalidSetting, Validate};
use crate::tls::ClientTls;

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

/// Another service this one calls.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerSettings {
    /// Its gRPC endpoint, e.g. `https://ingest:50051`. Default `https://127.0.0.1:50051`.
    pub endpoint: String,
    /// TLS to it.
    pub tls: ClientTls,
    /// The API key presented to it (`authorization: Bearer`), if it requires one.
    ///
    /// NOTE: a stopgap until services have their own identity (mTLS or a service principal in
    /// `libs/auth`): a key belongs to one tenant, so only that tenant's data can be read through it.
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
