//! The commands that talk to a running mesh through the SDK: `login`, `datasets`, `analyze`,
//! `jobs`, `report`, `rows`, `export`, `delete`, `keys`, `quota`, `webhooks`, and the online parts
//! of `certificate` and `audit`.
//!
//! - `config`: profiles (`~/.config/trustmesh/config.toml`, owner-only) and `login`.
//! - `render`: tables for people, `--json` for scripts.
//! - `datasets`, `jobs`, `results`, `admin`: the commands, by resource.

pub(crate) mod admin;
pub(crate) mod config;
pub(crate) mod datasets;
pub(crate) mod jobs;
pub(crate) mod quota;
pub(crate) mod render;
pub(crate) mod results;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use trustmesh_sdk::{Client, ClientTls, Error};

use self::config::{ConfigFile, Profile};
use self::render::Output;

/// A usage error of the command line itself (bad flags, no profile, a missing file): exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// A command that ran but whose outcome is negative (a job failed, a log did not verify): exit 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Negative(pub(crate) String);

/// Exit codes, as documented in `trustmesh --help`.
pub(crate) mod exit {
    /// A check failed or a job did not succeed (and other failures).
    pub(crate) const FAILED: u8 = 1;
    /// Usage: bad arguments, configuration or local file, or a request the server refused as
    /// invalid (INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, OUT_OF_RANGE).
    pub(crate) const USAGE: u8 = 2;
    /// Authentication or permission (UNAUTHENTICATED, PERMISSION_DENIED, no API key).
    pub(crate) const AUTH: u8 = 3;
    /// The resource does not exist (NOT_FOUND).
    pub(crate) const NOT_FOUND: u8 = 4;
    /// The server failed or could not be reached.
    pub(crate) const SERVER: u8 = 5;
}

/// The exit code of `error`.
pub(crate) fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(sdk) = cause.downcast_ref::<Error>() {
            return match sdk {
                Error::Usage(_) | Error::Io { .. } | Error::Invalid { .. } => exit::USAGE,
                Error::Auth { .. } => exit::AUTH,
                Error::NotFound { .. } => exit::NOT_FOUND,
                Error::Server { .. } | Error::Transport(_) => exit::SERVER,
            };
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return exit::USAGE;
        }
        if cause.downcast_ref::<NoKey>().is_some() {
            return exit::AUTH;
        }
    }
    exit::FAILED
}

/// No API key anywhere.
#[derive(Debug, thiserror::Error)]
#[error("no API key: run `trustmesh login` or set TRUSTMESH_API_KEY (profile {0:?} in {1})")]
pub(crate) struct NoKey(String, String);

/// Where the mesh is and how to talk to it; every remote command takes these.
#[derive(Debug, Clone, Args)]
pub(crate) struct Remote {
    /// The profile of the profiles file to use.
    #[arg(
        long,
        global = true,
        env = "TRUSTMESH_PROFILE",
        default_value = "default"
    )]
    pub(crate) profile: String,
    /// The gRPC endpoint (overrides the profile's).
    #[arg(long, global = true, env = "TRUSTMESH_ENDPOINT")]
    pub(crate) endpoint: Option<String>,
    /// The tenant (overrides the profile's).
    #[arg(long, global = true, env = "TRUSTMESH_TENANT")]
    pub(crate) tenant: Option<String>,
    /// The CA (PEM) that signs an `https://` endpoint's certificate (overrides the profile's).
    #[arg(long, global = true, env = "TRUSTMESH_CA_FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Remote {
    /// The output mode.
    pub(crate) fn output(&self) -> Output {
        Output { json: self.json }
    }

    /// The profile, with flags and environment laid over it.
    pub(crate) fn resolve(&self) -> anyhow::Result<Profile> {
        let path = config::path();
        let file = ConfigFile::load(&path)?;
        let mut profile = file
            .profiles
            .get(&self.profile)
            .cloned()
            .unwrap_or_default();
        if let Some(endpoint) = &self.endpoint {
            profile.endpoint.clone_from(endpoint);
        }
        if let Some(tenant) = &self.tenant {
            profile.tenant.clone_from(tenant);
        }
        if self.ca_file.is_some() {
            profile.ca_file.clone_from(&self.ca_file);
        }
        if profile.endpoint.is_empty() {
            return Err(UsageError(format!(
                "no endpoint: run `trustmesh login` or pass --endpoint (profile {:?} in {})",
                self.profile,
                path.display()
            ))
            .into());
        }
        Ok(profile)
    }

    /// A client of the mesh as the profile's key, in its tenant.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let profile = self.resolve()?;
        let key = config::api_key(&profile)
            .ok_or_else(|| NoKey(self.profile.clone(), config::path().display().to_string()))?;
        let client = connect(&profile, &key).await?;
        Ok(if profile.tenant.is_empty() {
            client
        } else {
            client.with_tenant(profile.tenant)
        })
    }
}

/// A client of `profile`'s endpoint presenting `key`.
pub(crate) async fn connect(
    profile: &Profile,
    key: &trustmesh_sdk::SecretString,
) -> anyhow::Result<Client> {
    let tls = match (&profile.ca_file, profile.endpoint.starts_with("https://")) {
        (Some(ca), _) => ClientTls::tls(ca),
        (None, true) => {
            return Err(UsageError(format!(
                "{} is TLS: give the CA that signs its certificate (--ca-file)",
                profile.endpoint
            ))
            .into());
        }
        (None, false) => ClientTls::dev_plaintext_loopback(),
    };
    Client::connect_with(&profile.endpoint, key, &tls)
        .await
        .with_context(|| format!("connecting to {}", profile.endpoint))
}

/// Runs `future` on a fresh multi-threaded runtime.
pub(crate) fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}
