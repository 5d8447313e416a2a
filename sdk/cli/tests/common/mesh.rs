//! The standalone mesh (all seven services in this process on one gRPC port, `trustmesh
//! standalone`) on its own nats-server, a fresh database and a temporary data directory, with a
//! client holding the operator credential; stopped when dropped.

// NOTE: each test binary uses a part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trustmesh_cli::standalone::{NatsSource, Standalone, StandaloneSettings};
use trustmesh_sdk::proto::Scope;
use trustmesh_sdk::{Client, SecretString};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;

/// A running standalone mesh and the servers it uses.
pub(crate) struct Mesh {
    pub(crate) nats: NatsServer,
    pub(crate) db: TestDatabase,
    pub(crate) data_dir: tempfile::TempDir,
    /// `http://<grpc address>`.
    pub(crate) endpoint: String,
    /// The admin listener (`/metrics`, `/readyz`).
    pub(crate) admin: SocketAddr,
    /// The operator credential, and a client acting with it.
    pub(crate) operator_credential: SecretString,
    pub(crate) operator: Client,
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Mesh {
    /// The mesh with the default settings (local object directory, ports picked by the system).
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// The mesh with the settings `configure` changes from the defaults.
    pub(crate) async fn start_with(configure: impl FnOnce(&mut StandaloneSettings)) -> Self {
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
        let data_dir = tempfile::tempdir().unwrap();
        let mut settings = default_settings(&nats, &db, &data_dir);
        configure(&mut settings);
        let mesh = Standalone::build(settings).await.unwrap();
        let endpoint = format!("http://{}", mesh.grpc_addr());
        let admin = mesh.admin_addr();
        let operator_credential = mesh.operator_credential().clone();
        let operator = Client::connect(&endpoint, &operator_credential)
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let running = Some(tokio::spawn(mesh.run_until_stopped(shutdown.clone())));
        Self {
            nats,
            db,
            data_dir,
            endpoint,
            admin,
            operator_credential,
            operator,
            shutdown,
            running,
        }
    }

    /// Stops the mesh and starts it again, with the default settings, on the same servers, data
    /// directory and ports (clients reconnect), as after a crash or an upgrade.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        let mut settings = default_settings(&self.nats, &self.db, &self.data_dir);
        settings.grpc.bind = self
            .endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("the endpoint is http://<address>");
        settings.admin.bind = self.admin;
        let mesh = Standalone::build(settings).await.unwrap();
        self.shutdown = CancellationToken::new();
        self.running = Some(tokio::spawn(mesh.run_until_stopped(self.shutdown.clone())));
    }

    /// Creates `tenant` and an admin key of it (valid for an hour); returns a client acting as
    /// that key.
    pub(crate) async fn tenant_with_key(&self, tenant: &str) -> Client {
        let (_, user) = self
            .operator
            .create_tenant_with_key(tenant, tenant, &[Scope::Admin], Duration::from_secs(3600))
            .await
            .unwrap();
        user
    }

    /// Every directory the mesh and its nats-server write to.
    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        vec![self.data_dir.path().to_owned(), self.nats.store_dir()]
    }

    /// Stops the mesh and waits until every service has shut down cleanly.
    ///
    /// # Panics
    ///
    /// If the mesh stopped on an error.
    pub(crate) async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.await.unwrap().unwrap();
        }
    }
}

/// The standalone defaults on `nats`, `db` and `data_dir`, listening on ports the system picks.
fn default_settings(
    nats: &NatsServer,
    db: &TestDatabase,
    data_dir: &tempfile::TempDir,
) -> StandaloneSettings {
    let mut settings = StandaloneSettings::new(
        data_dir.path().to_owned(),
        SecretString::from(db.url().to_owned()),
    );
    settings.grpc.bind.set_port(0);
    settings.admin.bind.set_port(0);
    settings.nats = NatsSource::Url(nats.url());
    settings
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
