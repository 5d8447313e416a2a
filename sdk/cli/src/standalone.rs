//! `trustmesh standalone`: all seven services in one process, on one gRPC port and one admin port,
//! with a local key directory, a local object directory (or an S3 bucket), a `nats-server` child
//! process it starts (or a server given by URL) and Postgres by URL.
//!
//! Every service keeps what it has in a deployment of separate processes: its own schema, its own
//! key-encryption key, its own durable consumers and outbox. Only the listeners are shared, and the
//! peer calls (analysis reading rows from ingest, trust-scoring reading model outputs from analysis)
//! go to the process's own port, presenting a service credential generated for this run.
//!
//! Postgres: the URL given is the administrator's. When its role may create roles, each service
//! gets its own (`tm_<schema>`, provisioned at every start by
//! `trustmesh_bus::schema::roles::provision_for_admin_url`) and connects as it: it owns only its
//! schema, and the row-level security of its tenant tables applies to it, as in a deployment of
//! separate processes. Otherwise every service connects as the given role, with a warning.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng as _;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use trustmesh_bus::schema::roles::{may_provision_roles, provision_for_admin_url};
use trustmesh_runtime::settings::common::{
    DatabaseSettings, MeshSettings, NatsSettings, PeerSettings,
};
use trustmesh_runtime::{
    AdminSettings, ClientTls, Component, ExposeSecret as _, GrpcServer, GrpcSettings, Host,
    Readiness, SecretString, ServerTls, ShutdownSettings, TransportMode, instrumented,
};
use trustmesh_store::ObjectStoreSettings;
use trustmesh_telemetry::Metrics;

/// How the standalone mesh reaches NATS.
#[derive(Debug, Clone)]
pub enum NatsSource {
    /// A running server.
    Url(String),
    /// A `nats-server` child process with JetStream, storing under the data directory.
    Spawn {
        /// The `nats-server` binary.
        binary: PathBuf,
    },
}

/// Everything `trustmesh standalone` needs.
#[derive(Debug)]
pub struct StandaloneSettings {
    /// The one gRPC listener (port 0 picks a free port).
    pub grpc: GrpcSettings,
    /// The one admin listener.
    pub admin: AdminSettings,
    /// Postgres (one database; each service its own schema). Created if missing.
    pub database: SecretString,
    /// NATS.
    pub nats: NatsSource,
    /// Object storage shared by the store-owning services (keys are prefixed per service).
    pub objects: ObjectStoreSettings,
    /// Keys (one key-encryption key per service, the certificate signing key), the operator
    /// credential and the NATS store live here.
    pub data_dir: PathBuf,
    /// The operator credential; read from (or generated into) `<data_dir>/operator-credential`
    /// when unset.
    pub operator_credential: Option<SecretString>,
    /// Graceful shutdown.
    pub shutdown: ShutdownSettings,
    /// Ingest's upload limits (size, rows, columns).
    pub ingest_limits: trustmesh_ingest::settings::Limits,
    /// Webhook delivery: the notifier's egress allow-list, timeouts and retries. Default: public
    /// `https` destinations only.
    pub webhooks: trustmesh_notifier::settings::WebhookSettings,
    /// How `analysis` shares its work: training slots, fold fan-out (`analysis.fold` work items)
    /// and the deployment profile.
    pub analysis_work: trustmesh_analysis::settings::WorkSettings,
}

impl StandaloneSettings {
    /// Settings for `data_dir` with defaults: plaintext gRPC on `127.0.0.1:50051` (loopback only),
    /// admin on `127.0.0.1:9464`, objects in `<data_dir>/objects`, a spawned `nats-server`.
    #[must_use]
    pub fn new(data_dir: PathBuf, database: SecretString) -> Self {
        Self {
            grpc: GrpcSettings {
                bind: SocketAddr::from(([127, 0, 0, 1], 50051)),
                tls: ServerTls {
                    mode: TransportMode::DevPlaintextLoopback,
                    ..ServerTls::default()
                },
                ..GrpcSettings::default()
            },
            admin: AdminSettings {
                bind: SocketAddr::from(([127, 0, 0, 1], 9464)),
            },
            database,
            nats: NatsSource::Spawn {
                binary: PathBuf::from("nats-server"),
            },
            objects: ObjectStoreSettings::Local {
                dir: data_dir.join("objects"),
            },
            data_dir,
            operator_credential: None,
            shutdown: ShutdownSettings::default(),
            ingest_limits: trustmesh_ingest::settings::Limits::default(),
            webhooks: trustmesh_notifier::settings::WebhookSettings::default(),
            analysis_work: trustmesh_analysis::settings::WorkSettings::default(),
        }
    }
}

/// The built mesh: every service's component on one [`Host`], plus the NATS child if it started one.
pub struct Standalone {
    host: Host,
    nats: Option<Child>,
    nats_url: String,
    operator_credential: SecretString,
}

impl std::fmt::Debug for Standalone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standalone")
            .field("host", &self.host)
            .field("nats_url", &self.nats_url)
            .finish_non_exhaustive()
    }
}

/// Every service's name, in the order they are built.
pub const SERVICES: [&str; 7] = [
    "tenancy",
    "ingest",
    "analysis",
    "trust-scoring",
    "deletion",
    "audit",
    "notifier",
];

impl Standalone {
    /// Starts NATS if asked, creates the database if missing, builds the seven services and binds
    /// the listeners.
    ///
    /// # Errors
    ///
    /// What could not be set up, with the service it belongs to.
    pub async fn build(settings: StandaloneSettings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(settings.data_dir.join("keys"))
            .with_context(|| format!("cannot create {}", settings.data_dir.display()))?;
        let operator_credential = match settings.operator_credential {
            Some(credential) => credential,
            None => stored_credential(&settings.data_dir.join("operator-credential"))?,
        };
        let (nats, nats_url) = match &settings.nats {
            NatsSource::Url(url) => (None, url.clone()),
            NatsSource::Spawn { binary } => {
                let (child, url) = spawn_nats(binary, &settings.data_dir.join("nats")).await?;
                (Some(child), url)
            }
        };
        trustmesh_store::ensure_database(&settings.database)
            .await
            .context("cannot reach or create the database")?;
        let service_urls = provision_service_roles(&settings.database).await?;

        // The peers are this process: fix the port now, so their endpoints can name it.
        let mut grpc = settings.grpc;
        if grpc.bind.port() == 0 {
            grpc.bind.set_port(free_port(grpc.bind)?);
        }
        let scheme = match grpc.tls.mode {
            TransportMode::Tls => "https",
            TransportMode::DevPlaintextLoopback => "http",
        };
        // Over TLS the services call each other through this listener with mTLS (the mesh-internal
        // methods need a client certificate, libs/auth peer.rs): a mesh CA of the data directory,
        // issued once, verifies the certificate each presents; tenants' clients present none.
        let mesh_pki = match (grpc.tls.mode, grpc.tls.client_ca_file.is_none()) {
            (TransportMode::Tls, true) => {
                let pki = trustmesh_testkit::tls::MeshPki::ensure(
                    settings.data_dir.join("mesh-certs"),
                    &trustmesh_testkit::tls::MESH_SERVICES,
                )
                .context("cannot issue the mesh's certificates")?;
                grpc.tls.client_ca_file = Some(pki.ca());
                Some(pki)
            }
            _ => None,
        };
        let peer = |service: &str| PeerSettings {
            endpoint: format!("{scheme}://{}", grpc.bind),
            tls: match (grpc.tls.mode, &mesh_pki) {
                (TransportMode::Tls, pki) => {
                    let tls = ClientTls {
                        mode: TransportMode::Tls,
                        ca_file: grpc.tls.cert_file.clone(),
                        server_name: Some("localhost".to_owned()),
                        ..ClientTls::default()
                    };
                    match pki {
                        Some(pki) => tls.with_identity(pki.cert(service), pki.key(service)),
                        None => tls,
                    }
                }
                (TransportMode::DevPlaintextLoopback, _) => ClientTls::dev_plaintext_loopback(),
            },
        };
        let service_credential = random_secret();
        let mesh = || MeshSettings {
            service_credential: Some(service_credential.clone()),
        };
        let database = |service: &str| DatabaseSettings {
            url: service_urls
                .iter()
                .find(|(name, _)| *name == service)
                .map_or_else(|| settings.database.clone(), |(_, url)| url.clone()),
            max_connections: 5,
        };
        let nats_settings = || NatsSettings::at(nats_url.clone());
        let keys = settings.data_dir.join("keys");
        let kek = |service: &str| keys.join(format!("{service}.kek"));

        let readiness = Readiness::new();
        let mut components: Vec<Component> = Vec::new();

        let mut tenancy = trustmesh_tenancy::Settings {
            database: database("tenancy"),
            nats: nats_settings(),
            mesh: mesh(),
            notifier: Some(peer("tenancy")),
            ..Default::default()
        };
        tenancy.auth.operator_credential = Some(operator_credential.clone());
        components.push(in_service(
            "tenancy",
            trustmesh_tenancy::component(&tenancy, &readiness).await,
        )?);

        let ingest = trustmesh_ingest::Settings {
            database: database("ingest"),
            nats: nats_settings(),
            mesh: mesh(),
            objects: settings.objects.clone(),
            keys: trustmesh_ingest::settings::KeySettings {
                kek_file: kek("ingest"),
            },
            limits: settings.ingest_limits,
            ..Default::default()
        };
        components.push(in_service(
            "ingest",
            trustmesh_ingest::component(&ingest, &readiness).await,
        )?);

        let analysis = trustmesh_analysis::Settings {
            database: database("analysis"),
            nats: nats_settings(),
            mesh: mesh(),
            objects: settings.objects.clone(),
            keys: trustmesh_analysis::settings::KeySettings {
                kek_file: kek("analysis"),
            },
            ingest: peer("analysis"),
            work: settings.analysis_work.clone(),
            ..Default::default()
        };
        components.push(in_service(
            "analysis",
            trustmesh_analysis::component(&analysis, &readiness).await,
        )?);

        let trust = trustmesh_trust_scoring::Settings {
            database: database("trust-scoring"),
            nats: nats_settings(),
            mesh: mesh(),
            objects: settings.objects.clone(),
            keys: trustmesh_trust_scoring::settings::KeySettings {
                kek_file: kek("trust-scoring"),
            },
            analysis: peer("trust-scoring"),
            ..Default::default()
        };
        components.push(in_service(
            "trust-scoring",
            trustmesh_trust_scoring::component(&trust, &readiness).await,
        )?);

        let metrics = Metrics::new("standalone");
        let mut deletion = trustmesh_deletion::Settings {
            database: database("deletion"),
            nats: nats_settings(),
            keys: trustmesh_deletion::settings::KeySettings {
                signing_key_file: keys.join("deletion-signing.key"),
            },
            ..Default::default()
        };
        deletion.auth.operator_credential = Some(operator_credential.clone());
        components.push(in_service(
            "deletion",
            trustmesh_deletion::component(&deletion, &readiness).await,
        )?);

        let audit = trustmesh_audit::Settings {
            database: database("audit"),
            nats: nats_settings(),
            keys: trustmesh_audit::settings::KeySettings {
                signing_key_file: keys.join("audit-signing.key"),
            },
            ..Default::default()
        };
        components.push(in_service(
            "audit",
            trustmesh_audit::component(&audit, &readiness).await,
        )?);

        let notifier = trustmesh_notifier::Settings {
            database: database("notifier"),
            nats: nats_settings(),
            mesh: mesh(),
            keys: trustmesh_notifier::settings::KeySettings {
                kek_file: kek("notifier"),
            },
            webhooks: settings.webhooks,
            ..Default::default()
        };
        components.push(in_service(
            "notifier",
            trustmesh_notifier::component(&notifier, &readiness).await,
        )?);

        let builder = instrumented(GrpcServer::builder(grpc, readiness.clone()), &metrics)
            .grace_period(settings.shutdown.grace_period());
        let host = Host::build(
            builder,
            &settings.admin,
            readiness,
            move || metrics.render(),
            components,
        )
        .await
        .context("cannot bind the listeners")?;
        Ok(Self {
            host,
            nats,
            nats_url,
            operator_credential,
        })
    }

    /// The gRPC address every service answers on.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.host.grpc_addr()
    }

    /// The admin address (`/livez`, `/readyz`, `/metrics`).
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.host.admin_addr()
    }

    /// The NATS server the mesh uses.
    #[must_use]
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// The operator credential (manages tenants and keys; reads no tenant data).
    #[must_use]
    pub fn operator_credential(&self) -> &SecretString {
        &self.operator_credential
    }

    /// Serves until `shutdown` is cancelled, then stops the services and the NATS child.
    ///
    /// # Errors
    ///
    /// A server or a background task failed.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let result = self.host.run_until_stopped(shutdown).await;
        if let Some(mut nats) = self.nats {
            stop_child(&mut nats).await;
        }
        result.context("the mesh stopped on an error")
    }
}

fn in_service<T, E>(service: &'static str, result: Result<T, E>) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    result.with_context(|| format!("cannot start {service}"))
}

/// Provisions every service's own role when the administrator's role may, and returns the URL each
/// service connects with (none: every service connects as the administrator).
async fn provision_service_roles(
    admin_url: &SecretString,
) -> anyhow::Result<Vec<(&'static str, SecretString)>> {
    let public = trustmesh_store::SchemaName::new("public").context("the public schema")?;
    let mut admin_settings = trustmesh_store::PgSettings::new(admin_url.expose_secret(), public);
    admin_settings.max_connections = 1;
    let admin = trustmesh_store::connect(&admin_settings)
        .await
        .context("cannot connect to the database as its administrator")?;
    let result = async {
        if !may_provision_roles(&admin).await? {
            tracing::warn!(
                "The database role may not create roles: every service connects as it, and row-level security is not enforced on a superuser or BYPASSRLS role."
            );
            return Ok(Vec::new());
        }
        let mut urls = Vec::with_capacity(SERVICES.len());
        for service in SERVICES {
            let schema = trustmesh_bus::SchemaName::new(service.replace('-', "_"))?;
            let url = provision_for_admin_url(&admin, admin_url.expose_secret(), &schema)
                .await
                .with_context(|| format!("cannot provision the Postgres role of {service}"))?;
            urls.push((service, SecretString::from(url)));
        }
        anyhow::Ok(urls)
    }
    .await;
    admin.close().await;
    result
}

/// 48 random characters of `[A-Za-z0-9]` (about 285 bits).
fn random_secret() -> SecretString {
    let secret: String = (0..48)
        .map(|_| char::from(rand::rngs::OsRng.sample(rand::distributions::Alphanumeric)))
        .collect();
    SecretString::from(secret)
}

/// The credential in `path`, or a fresh one written there (mode 0600) if the file is missing.
fn stored_credential(path: &Path) -> anyhow::Result<SecretString> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(SecretString::from(text.trim().to_owned())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let secret = random_secret();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            file.write_all(secret.expose_secret().as_bytes())?;
            Ok(secret)
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// A port free on `addr`'s interface right now.
fn free_port(addr: SocketAddr) -> anyhow::Result<u16> {
    let mut probe = addr;
    probe.set_port(0);
    let listener = TcpListener::bind(probe).with_context(|| format!("cannot bind {probe}"))?;
    Ok(listener.local_addr()?.port())
}

/// Starts `nats-server` with JetStream on a free loopback port, storing in `store`, and waits until
/// it accepts connections.
async fn spawn_nats(binary: &Path, store: &Path) -> anyhow::Result<(Child, String)> {
    std::fs::create_dir_all(store)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let port = free_port(addr)?;
    let mut child = Command::new(binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (install it with infra/dev/up.sh, or pass --nats-url)",
                binary.display()
            )
        })?;
    let url = format!("nats://127.0.0.1:{port}");
    for _ in 0..100 {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("nats-server exited at start ({status})");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok((child, url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_child(&mut child).await;
    anyhow::bail!("nats-server did not accept connections on port {port} within 10 s")
}

/// Stops a child process: SIGTERM, then SIGKILL if it is still running after 5 s.
async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        let term = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if term.is_ok_and(|status| status.success())
            && tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_ok()
        {
            return;
        }
    }
    if let Err(error) = child.kill().await {
        tracing::warn!(error = %error, "Could not stop a child process.");
    }
}
