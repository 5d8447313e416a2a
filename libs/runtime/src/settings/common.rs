//! Settings sections several services share word for word: Postgres, NATS, a peer service and the
//! mesh's service credential.
//!
//! A service's `Settings` names them as fields (`database`, `nats`, `ingest`, ...), so the keys stay
//! `TRUSTMESH_DATABASE__URL`, `TRUSTMESH_NATS__URL` and so on.

use std::path::PathBuf;

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
    /// Replicas of each JetStream stream the service ensures: 1 on a single server (the default),
    /// 3 on a production cluster (R3, so losing one node loses no acknowledged message).
    pub stream_replicas: usize,
    /// The service's NATS user (`infra/nats`: one per service, named after it, allowed exactly its
    /// subjects); unset connects without credentials, to a dev server without authorization.
    pub user: Option<String>,
    /// The user's password (`TRUSTMESH_NATS__PASSWORD`).
    pub password: Option<SecretString>,
    /// TLS to the server (the `nats.tls` part): off unless `ca_file` is set.
    pub tls: NatsTls,
}

/// TLS 1.3 to NATS (`TRUSTMESH_NATS__TLS__CA_FILE`, ...). With `ca_file` the client requires TLS
/// and trusts only that CA (not the system roots); with `cert_file`/`key_file` it also presents a
/// client certificate (for a server with `verify: true`). The NATS user still decides what the
/// connection may do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsTls {
    /// PEM file of the CA(s) the server certificate must chain to; set, TLS is required.
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client's certificate chain (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM file with the client's private key (with `cert_file`).
    pub key_file: Option<PathBuf>,
}

impl Validate for NatsTls {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(InvalidSetting::new(
                "cert_file",
                "`cert_file` and `key_file` go together",
            ));
        }
        if self.cert_file.is_some() && self.ca_file.is_none() {
            return Err(InvalidSetting::new(
                "ca_file",
                "required with a client certificate",
            ));
        }
        Ok(())
    }
}

impl Validate for NatsSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.tls.validate().map_err(|error| error.within("tls"))
    }
}

impl NatsSettings {
    /// The server at `url`, one replica per stream.
    #[must_use]
    pub fn at(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream_replicas: 1,
            user: None,
            password: None,
            tls: NatsTls::default(),
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
}

impl Default for PeerSettings {
    fn default() -> Self {
        Self {
            endpoint: "https://127.0.0.1:50051".to_owned(),
            tls: ClientTls::default(),
        }
    }
}

impl Validate for PeerSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.endpoint.is_empty() {
            return Err(InvalidSetting::new("endpoint", "must not be empty"));
        }
        Ok(())
    }
}

/// The mesh's service credential (the `mesh` section): a service reading another's data on a
/// tenant's behalf presents it, and the services whose data is read accept it on those methods
/// only. At least 32 printable ASCII characters; the same value for every service of a deployment.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshSettings {
    /// The shared secret; unset, no service-to-service read succeeds.
    pub service_credential: Option<SecretString>,
}

impl MeshSettings {
    /// The `authorization` header value presenting the credential, if one is set.
    #[must_use]
    pub fn bearer(&self) -> Option<SecretString> {
        self.service_credential
            .as_ref()
            .map(|secret| SecretString::from(format!("Bearer {}", secret.expose_secret())))
    }
}
