//! A real `nats-server` started with the repo's config (`infra/nats/nats-server.conf`: JetStream and
//! one user per service, `infra/nats/permissions.conf`), on free loopback ports with a temporary store
//! directory, for tests of what each service's NATS user may do.
//!
//! The config reads every password and its deployment values from the environment; [`SecuredNats`]
//! gives each service user a random password and hands it to the test ([`SecuredNats::password`]).
//! [`SecuredNats::start_tls`] starts `infra/nats/nats-server-tls.conf` instead: the same plus TLS 1.3
//! with client certificates of a [`MeshPki`] required.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::nats::{client_port, nats_server_bin};
use crate::tls::MeshPki;

/// How long [`SecuredNats::start`] waits for the server to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The repo's nats-server config.
#[must_use]
pub fn repo_nats_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/nats/nats-server.conf")
}

/// The repo's nats-server config with TLS (mTLS) required.
#[must_use]
pub fn repo_nats_tls_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/nats/nats-server-tls.conf")
}

/// A running `nats-server` with the repo's config, killed (and its store removed) on drop.
#[derive(Debug)]
pub struct SecuredNats {
    child: Child,
    port: u16,
    passwords: BTreeMap<String, String>,
    dir: tempfile::TempDir,
}

impl SecuredNats {
    /// Starts `nats-server -c infra/nats/nats-server.conf` with a random password in each variable of
    /// `password_envs` (e.g. `TRUSTMESH_NATS_PASSWORD_INGEST`), the store in a temp directory and the
    /// client and monitoring ports picked free on loopback; waits until it is ready.
    ///
    /// # Panics
    ///
    /// If the binary is missing or the server does not come up (its log is in the panic message).
    pub async fn start(password_envs: impl IntoIterator<Item = String>) -> Self {
        Self::launch(repo_nats_config(), password_envs, Vec::new()).await
    }

    /// [`SecuredNats::start`] with the config file `config` instead of the repo's (e.g. a copy of
    /// `nats-server.conf` beside another generated `permissions.conf`).
    ///
    /// # Panics
    ///
    /// As [`SecuredNats::start`].
    pub async fn start_with_config(
        config: PathBuf,
        password_envs: impl IntoIterator<Item = String>,
    ) -> Self {
        Self::launch(config, password_envs, Vec::new()).await
    }

    /// [`SecuredNats::start`] with `infra/nats/nats-server-tls.conf`: the server presents `pki`'s
    /// certificate `nats` (issued if missing) and requires TLS 1.3 and a client certificate of
    /// `pki`'s CA.
    ///
    /// # Panics
    ///
    /// As [`SecuredNats::start`], or if the certificate cannot be issued.
    pub async fn start_tls(password_envs: impl IntoIterator<Item = String>, pki: &MeshPki) -> Self {
        let pki = MeshPki::ensure(pki.dir(), &["nats"])
            .unwrap_or_else(|e| panic!("cannot issue the nats certificate: {e}"));
        let files = vec![
            ("TRUSTMESH_NATS_TLS_CERT_FILE", pki.cert("nats")),
            ("TRUSTMESH_NATS_TLS_KEY_FILE", pki.key("nats")),
            ("TRUSTMESH_NATS_TLS_CA_FILE", pki.ca()),
        ];
        Self::launch(repo_nats_tls_config(), password_envs, files).await
    }

    async fn launch(
        config: PathBuf,
        password_envs: impl IntoIterator<Item = String>,
        files: Vec<(&'static str, PathBuf)>,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("trustmesh-nats-auth-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for nats-server: {e}"));
        let passwords: BTreeMap<String, String> = password_envs
            .into_iter()
            .map(|env| (env, hex::encode(rand::random::<[u8; 24]>())))
            .collect();
        let bin = nats_server_bin();
        let log = dir.path().join("nats.log");
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(config)
            .args(["-a", "127.0.0.1", "-p", "-1", "-m", "-1"])
            .arg("--ports_file_dir")
            .arg(dir.path())
            .arg("-l")
            .arg(&log)
            .env("TRUSTMESH_NATS_SERVER_NAME", "trustmesh-test")
            .env("TRUSTMESH_NATS_STORE_DIR", dir.path().join("store"))
            .envs(&passwords)
            .envs(files)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start nats-server at {} (set ${}): {e}",
                    bin.display(),
                    crate::nats::NATS_SERVER_BIN_ENV
                )
            });
        let ports = dir.path().join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + READY_TIMEOUT;
        let port = loop {
            if let Ok(Some(status)) = child.try_wait() {
                // A config error is on stderr, before the log file is opened.
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("nats-server exited with {status}: {stderr}{log}");
            }
            // The log says "Server is ready" once JetStream runs and clients are accepted.
            let ready = std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Server is ready"));
            if ready
                && let Some(port) = std::fs::read_to_string(&ports)
                    .ok()
                    .and_then(|t| client_port(&t))
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server was not ready within {READY_TIMEOUT:?}; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        Self {
            child,
            port,
            passwords,
            dir,
        }
    }

    /// The server's client URL, e.g. `nats://127.0.0.1:41234`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The password the server was given in `env`.
    ///
    /// # Panics
    ///
    /// If `env` was not one of [`SecuredNats::start`]'s.
    #[must_use]
    pub fn password(&self, env: &str) -> &str {
        self.passwords
            .get(env)
            .unwrap_or_else(|| panic!("{env} was not given to SecuredNats::start"))
    }

    /// The server's log so far (it names every permissions violation).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for SecuredNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
