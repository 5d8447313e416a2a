//! The multi-process layout on one machine: every service its own process (the real service
//! binaries, configured by environment variables only, as in infra/docker/docker-compose.yml), with
//! `analysis` replicas behind a connection balancer standing in for a Kubernetes Service, over a
//! 3-node NATS JetStream cluster on loopback (streams at R3, `sync_interval: always`), Postgres and a
//! local object directory.
//!
//! Each service process connects to Postgres as its own role `tm_<schema>` (owning only its
//! schema, no superuser, no BYPASSRLS), provisioned by the administrator's connection of the test
//! database with `trustmesh_bus::schema::roles::provision_for_admin_url`, as `trustmesh standalone`
//! does: the row-level security the tenant tables FORCE applies to every process. The test itself
//! keeps the administrator's pool ([`Layout::database`]) for the rows it checks.
//!
//! Dedicated profile ([`Layout::start_with_dedicated`], infra/README.md "Deployment profiles"): a
//! tenant's own `analysis` replica, with its own durables (`work.dedicated_tenant`), its own
//! database, object directory (bucket) and key-encryption key, outside the balancer; the shared
//! replicas get `work.dedicated_elsewhere`. That tenant's clients call analysis on its replica
//! directly, as an ingress routing the tenant's host to its Deployment would, and trust-scoring
//! reads its model outputs there (`dedicated.analysis`).
//!
//! Single-tenant install ([`Layout::start_single_tenant`]): tenancy with `single_tenant.*` and no
//! operator credential; [`Layout::single_tenant_admin`] reads the first admin key from its file.
//!
//! The service binaries belong to other packages, so Cargo gives a test no `CARGO_BIN_EXE_*` for
//! them: they are looked up next to the running executable (`target/<profile>/`, or its parent for
//! a test in `target/<profile>/deps/`). `cargo test --workspace` builds them; to run one test alone,
//! `cargo build --workspace --bins` first.
//!
//! Shared by the tests of `sdk/cli/tests` (`mod common;`) and by `trustmesh-loadtest --layout
//! multi-process` (`#[path]`), so it names only crates both have.

// NOTE: each user of this file (a test binary, the load generator) uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use trustmesh_bus::SchemaName;
use trustmesh_bus::schema::roles::provision_for_admin_url;
use trustmesh_sdk::proto::Scope;
use trustmesh_sdk::{Client, SecretString};
use trustmesh_testkit::nats::{CLUSTER_SIZE, NatsCluster};
use trustmesh_testkit::ports::free_ports;
use trustmesh_testkit::postgres::TestDatabase;

/// Replicas of every stream (the cluster's size).
pub(crate) const REPLICAS: usize = CLUSTER_SIZE;
/// How long a service may take to report ready on `/readyz`.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The operator credential of the layout's tenancy.
pub(crate) const OPERATOR: &str = "multiprocess-test-operator-credential-0123456789";
const SERVICE_CREDENTIAL: &str = "multiprocess-test-service-credential-0123456789";

/// The services in their start order after tenancy (which creates `tm_auth` and publishes the
/// operator), with `analysis` started apart (its replicas share one key-encryption key file, which
/// the first creates).
pub(crate) const OTHERS: [&str; 5] = ["ingest", "trust-scoring", "deletion", "audit", "notifier"];

/// The path of the service binary `name`, built next to the running executable.
///
/// # Panics
///
/// If it is missing, saying how to build it.
pub(crate) fn service_binary(name: &str) -> PathBuf {
    // A test runs as target/<profile>/deps/<test>-<hash>, a binary as target/<profile>/<binary>.
    let exe = std::env::current_exe().expect("the process knows its executable");
    let dirs: Vec<&Path> = exe.ancestors().skip(1).take(2).collect();
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|binary| binary.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not in {dirs:?}: build the service binaries first \
                 (`cargo build [--release] --workspace --bins`, or run `cargo test --workspace`)"
            )
        })
}

/// One service process, killed (SIGKILL) on drop, so nothing outlives a failed test.
pub(crate) struct Process {
    /// The service, and its replica number for `analysis` (`analysis-1`).
    pub(crate) name: String,
    /// The service (`analysis` for every replica).
    pub(crate) service: String,
    /// Its replica number (the NATS node it first connects to).
    pub(crate) replica: usize,
    /// For a dedicated `analysis` replica, its tenant.
    pub(crate) dedicated: Option<String>,
    child: Option<Child>,
    pub(crate) grpc: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) log: PathBuf,
}

impl Process {
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process runs").id()
    }

    /// Whether the process runs (it was not killed).
    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, like a crash or an OOM kill, and reaps the process.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until `/readyz` answers 200 (every dependency up, consumers bound).
    pub(crate) async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited at start with {status}:\n{}",
                    self.name,
                    log_tail(&self.log)
                );
            }
            if http_status(self.admin, "/readyz").await == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} was not ready within {READY_TIMEOUT:?}:\n{}",
                self.name,
                log_tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// CPU time (user + system, in clock ticks) the process has used so far.
    pub(crate) fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("/proc/<pid>/stat is readable");
        // Fields after the command name (which may hold spaces) start at field 3; utime and stime
        // are fields 14 and 15.
        let rest = &stat[stat.rfind(')').expect("a stat line names the command") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a service's log, for a failure message.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The body of `GET path` on a plain HTTP/1.1 server (e.g. a service's `/metrics`), if it answers.
pub(crate) async fn http_body(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8(response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some(body.to_owned())
}

/// The status code of `GET path` on a plain HTTP/1.1 server, if it answers.
pub(crate) async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Spreads connections over the live `analysis` replicas, round robin, as a Kubernetes Service
/// does: a connection goes to the next replica that accepts it, so a dead replica is skipped and
/// clients that lose their connection (HTTP/2 channels reconnect) land on a live one.
pub(crate) struct Balancer {
    addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let shared = backends.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let candidates = shared.lock().unwrap().clone();
                let first = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    for k in 0..candidates.len() {
                        let backend = candidates[(first + k) % candidates.len()];
                        if let Ok(mut outbound) = TcpStream::connect(backend).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            backends,
            task,
        }
    }

    fn add(&self, backend: SocketAddr) {
        self.backends.lock().unwrap().push(backend);
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The services, the NATS cluster, the database and the directory they share; every process is
/// killed on drop (fields drop in order: the services before the servers they use).
pub(crate) struct Layout {
    pub(crate) services: Vec<Process>,
    pub(crate) analysis: Vec<Process>,
    /// Dedicated `analysis` replicas, one per dedicated tenant, outside the balancer.
    pub(crate) dedicated: Vec<Process>,
    pub(crate) balancer: Balancer,
    pub(crate) nats: NatsCluster,
    pub(crate) db: TestDatabase,
    pub(crate) dir: tempfile::TempDir,
    /// Ports picked for each service (gRPC, admin), so peers can name each other up front.
    ports: HashMap<&'static str, (u16, u16)>,
    /// Tenants with a dedicated replica: the shared replicas leave their work to it.
    dedicated_tenants: Vec<String>,
    /// Ports picked for each dedicated replica (gRPC, admin), so trust-scoring, started first,
    /// can name its tenant's endpoint.
    dedicated_ports: HashMap<String, (u16, u16)>,
    /// Each dedicated replica's own database.
    dedicated_dbs: HashMap<String, TestDatabase>,
    /// The URL each service connects with to the shared database: as its own role.
    role_urls: HashMap<&'static str, String>,
    /// The URL each dedicated replica connects with to its own database: as the `analysis` role.
    dedicated_urls: HashMap<String, String>,
    /// The tenant of a single-tenant install (tenancy without an operator).
    single_tenant: Option<String>,
}

impl Layout {
    /// Starts the cluster, a database, tenancy, the other services and `analysis_replicas`
    /// `analysis` processes, each ready.
    pub(crate) async fn start(analysis_replicas: usize) -> Self {
        Self::launch(analysis_replicas, &[], None).await
    }

    /// [`Layout::start`] as a single-tenant install of `tenant`: tenancy creates it and writes its
    /// first admin key to `<dir>/keys/first-admin.key`, and has no operator credential.
    pub(crate) async fn start_single_tenant(analysis_replicas: usize, tenant: &str) -> Self {
        Self::launch(analysis_replicas, &[], Some(tenant)).await
    }

    /// [`Layout::start`] in the dedicated profile: `analysis_replicas` shared replicas leaving the
    /// work of `dedicated_tenants` to them, and one dedicated replica for each of those tenants
    /// (its own database, its objects in `objects-<tenant>`, its own key-encryption key).
    pub(crate) async fn start_with_dedicated(
        analysis_replicas: usize,
        dedicated_tenants: &[&str],
    ) -> Self {
        Self::launch(analysis_replicas, dedicated_tenants, None).await
    }

    async fn launch(
        analysis_replicas: usize,
        dedicated_tenants: &[&str],
        single_tenant: Option<&str>,
    ) -> Self {
        let nats = NatsCluster::start().await;
        let db = TestDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        // Webhooks may go to plain-HTTP receivers on loopback (a test's); the defaults refuse both.
        std::fs::write(
            dir.path().join("notifier.toml"),
            "[webhooks]\nallow_http = true\nallow_destinations = [\"127.0.0.0/8\"]\n",
        )
        .unwrap();
        let free = free_ports(2 * (OTHERS.len() + 1 + dedicated_tenants.len()));
        let (named, own) = free.split_at(2 * (OTHERS.len() + 1));
        let ports = std::iter::once("tenancy")
            .chain(OTHERS)
            .zip(named.chunks(2))
            .map(|(name, pair)| (name, (pair[0], pair[1])))
            .collect();
        let dedicated_ports = dedicated_tenants
            .iter()
            .zip(own.chunks(2))
            .map(|(&tenant, pair)| (tenant.to_owned(), (pair[0], pair[1])))
            .collect();
        let mut role_urls = HashMap::new();
        for service in std::iter::once("tenancy").chain(OTHERS).chain(["analysis"]) {
            role_urls.insert(service, role_url(&db, service).await);
        }
        let mut dedicated_dbs = HashMap::new();
        let mut dedicated_urls = HashMap::new();
        for &tenant in dedicated_tenants {
            let own = TestDatabase::create().await;
            // Roles are the server's: the same `tm_analysis`, given its schema in this database too.
            dedicated_urls.insert(tenant.to_owned(), role_url(&own, "analysis").await);
            dedicated_dbs.insert(tenant.to_owned(), own);
        }
        let mut layout = Self {
            services: Vec::new(),
            analysis: Vec::new(),
            dedicated: Vec::new(),
            balancer: Balancer::start().await,
            nats,
            db,
            dir,
            ports,
            dedicated_tenants: dedicated_tenants.iter().map(|&t| t.to_owned()).collect(),
            dedicated_ports,
            dedicated_dbs,
            role_urls,
            dedicated_urls,
            single_tenant: single_tenant.map(str::to_owned),
        };
        let mut tenancy = layout.spawn("tenancy", 0);
        tenancy.wait_ready().await;
        layout.services.push(tenancy);
        let mut others: Vec<Process> = OTHERS
            .iter()
            .enumerate()
            .map(|(i, name)| layout.spawn(name, i + 1))
            .collect();
        for process in &mut others {
            process.wait_ready().await;
        }
        layout.services.extend(others);
        for _ in 0..analysis_replicas {
            layout.add_analysis_replica().await;
        }
        for (n, tenant) in dedicated_tenants.iter().enumerate() {
            let mut process = layout.spawn_analysis(n, Some(tenant));
            process.wait_ready().await;
            layout.dedicated.push(process);
        }
        layout
    }

    /// The dedicated `analysis` replica of `tenant`, if it has one.
    pub(crate) fn dedicated_replica(&self, tenant: &str) -> Option<&Process> {
        self.dedicated
            .iter()
            .find(|p| p.dedicated.as_deref() == Some(tenant))
    }

    /// The database of the shared services, or of `tenant`'s dedicated replica, with the
    /// administrator's pool (which row-level security does not restrict).
    ///
    /// # Panics
    ///
    /// If `tenant` has no dedicated replica.
    pub(crate) fn database(&self, dedicated: Option<&str>) -> &TestDatabase {
        match dedicated {
            None => &self.db,
            Some(tenant) => &self.dedicated_dbs[tenant],
        }
    }

    /// The object directory (bucket) of the shared services, or of `tenant`'s dedicated replica.
    pub(crate) fn objects_dir(&self, dedicated: Option<&str>) -> PathBuf {
        match dedicated {
            None => self.dir.path().join("objects"),
            Some(tenant) => self.dir.path().join(format!("objects-{tenant}")),
        }
    }

    /// Starts one more `analysis` replica, waits until it is ready and puts it behind the balancer.
    pub(crate) async fn add_analysis_replica(&mut self) {
        let replica = self.analysis.len();
        let mut process = self.spawn_analysis(replica, None);
        process.wait_ready().await;
        self.balancer.add(process.grpc);
        self.analysis.push(process);
    }

    /// The process named `name` (a service, or `analysis-<n>`).
    ///
    /// # Panics
    ///
    /// If there is none.
    pub(crate) fn process_mut(&mut self, name: &str) -> &mut Process {
        self.services
            .iter_mut()
            .chain(self.analysis.iter_mut())
            .chain(self.dedicated.iter_mut())
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} process"))
    }

    /// Starts process `name` again after a kill, on the same ports, data and settings, and waits
    /// until it is ready.
    pub(crate) async fn restart(&mut self, name: &str) {
        let process = self.process_mut(name);
        assert!(!process.is_running(), "{name} still runs");
        let (service, replica) = (process.service.clone(), process.replica);
        let dedicated = process.dedicated.clone();
        let (grpc, admin) = (process.grpc, process.admin);
        let mut fresh = self.spawn_on(&service, replica, dedicated.as_deref(), grpc, admin);
        fresh.wait_ready().await;
        *self.process_mut(name) = fresh;
    }

    /// Spawns `analysis` replica `n`, shared (on new ports) or dedicated to a tenant (on the ports
    /// picked for it).
    fn spawn_analysis(&self, n: usize, dedicated: Option<&str>) -> Process {
        let (grpc_port, admin_port) = match dedicated {
            Some(tenant) => self.dedicated_ports[tenant],
            None => {
                let free = free_ports(2);
                (free[0], free[1])
            }
        };
        self.spawn_on(
            "analysis",
            n,
            dedicated,
            SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            SocketAddr::from(([127, 0, 0, 1], admin_port)),
        )
    }

    /// Spawns service `service` (its `n`th process: the NATS node it first connects to) on the
    /// ports picked for it, or new ones.
    fn spawn(&self, service: &str, n: usize) -> Process {
        let (grpc_port, admin_port) = match self.ports.get(service) {
            Some(ports) => *ports,
            None => {
                let free = free_ports(2);
                (free[0], free[1])
            }
        };
        self.spawn_on(
            service,
            n,
            None,
            SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            SocketAddr::from(([127, 0, 0, 1], admin_port)),
        )
    }

    /// Spawns service `service` (its `n`th process; for `analysis`, dedicated to a tenant or
    /// shared) serving on `grpc` and `admin`, configured entirely by environment variables (and, for
    /// notifier, the webhook guard's file).
    fn spawn_on(
        &self,
        service: &str,
        n: usize,
        dedicated: Option<&str>,
        grpc: SocketAddr,
        admin: SocketAddr,
    ) -> Process {
        let peer = |name: &str| format!("http://127.0.0.1:{}", self.ports[name].0);
        let keys = self.dir.path().join("keys");
        let objects = self.objects_dir(dedicated);
        // A dedicated replica seals with its own key-encryption key.
        let key_owner = match dedicated {
            Some(tenant) => format!("{service}-{tenant}"),
            None => service.to_owned(),
        };
        let mut env: Vec<(&str, String)> = vec![
            ("TRUSTMESH_GRPC__BIND", grpc.to_string()),
            (
                "TRUSTMESH_GRPC__TLS__MODE",
                "dev_plaintext_loopback".to_owned(),
            ),
            ("TRUSTMESH_ADMIN__BIND", admin.to_string()),
            ("TRUSTMESH_DATABASE__URL", self.role_url(service, dedicated)),
            ("TRUSTMESH_DATABASE__MAX_CONNECTIONS", "4".to_owned()),
            // Spread the first connections over the nodes; each client learns the others from it.
            ("TRUSTMESH_NATS__URL", self.nats.url(n % CLUSTER_SIZE)),
            ("TRUSTMESH_NATS__STREAM_REPLICAS", REPLICAS.to_string()),
        ];
        let mesh = (
            "TRUSTMESH_MESH__SERVICE_CREDENTIAL",
            SERVICE_CREDENTIAL.to_owned(),
        );
        let operator = ("TRUSTMESH_AUTH__OPERATOR_CREDENTIAL", OPERATOR.to_owned());
        let plaintext = || "dev_plaintext_loopback".to_owned();
        let store = |env: &mut Vec<(&str, String)>| {
            env.push(("TRUSTMESH_OBJECTS__BACKEND", "local".to_owned()));
            env.push(("TRUSTMESH_OBJECTS__DIR", objects.display().to_string()));
            env.push((
                "TRUSTMESH_KEYS__KEK_FILE",
                keys.join(format!("{key_owner}.kek")).display().to_string(),
            ));
        };
        match service {
            "tenancy" => {
                env.extend([
                    mesh,
                    ("TRUSTMESH_NOTIFIER__ENDPOINT", peer("notifier")),
                    ("TRUSTMESH_NOTIFIER__TLS__MODE", plaintext()),
                ]);
                match &self.single_tenant {
                    Some(tenant) => env.extend([
                        ("TRUSTMESH_SINGLE_TENANT__TENANT", tenant.clone()),
                        (
                            "TRUSTMESH_SINGLE_TENANT__FIRST_KEY_FILE",
                            self.first_key_file().display().to_string(),
                        ),
                    ]),
                    None => env.push(operator),
                }
            }
            "ingest" => {
                env.push(mesh);
                store(&mut env);
            }
            "analysis" => {
                env.extend([
                    mesh,
                    ("TRUSTMESH_INGEST__ENDPOINT", peer("ingest")),
                    ("TRUSTMESH_INGEST__TLS__MODE", plaintext()),
                ]);
                store(&mut env);
                // Set on analysis processes only: the other services refuse a `work` section.
                match dedicated {
                    Some(tenant) => {
                        env.push(("TRUSTMESH_WORK__DEDICATED_TENANT", tenant.to_owned()));
                    }
                    None if !self.dedicated_tenants.is_empty() => env.push((
                        "TRUSTMESH_WORK__DEDICATED_ELSEWHERE",
                        self.dedicated_tenants.join(","),
                    )),
                    None => {}
                }
            }
            "trust-scoring" => {
                env.extend([
                    mesh,
                    ("TRUSTMESH_ANALYSIS__ENDPOINT", self.balancer.endpoint()),
                    ("TRUSTMESH_ANALYSIS__TLS__MODE", plaintext()),
                    ("TRUSTMESH_INGEST__ENDPOINT", peer("ingest")),
                    ("TRUSTMESH_INGEST__TLS__MODE", plaintext()),
                ]);
                store(&mut env);
                // Each dedicated tenant's model outputs are read from its own replica.
                if !self.dedicated_ports.is_empty() {
                    let endpoints: Vec<String> = self
                        .dedicated_ports
                        .iter()
                        .map(|(tenant, (grpc, _))| format!("{tenant}=http://127.0.0.1:{grpc}"))
                        .collect();
                    env.push(("TRUSTMESH_DEDICATED__ANALYSIS", endpoints.join(",")));
                }
            }
            "deletion" | "audit" => {
                if service == "deletion" {
                    env.push(operator);
                }
                env.push((
                    "TRUSTMESH_KEYS__SIGNING_KEY_FILE",
                    keys.join(format!("{service}-signing.key"))
                        .display()
                        .to_string(),
                ));
            }
            "notifier" => env.extend([
                mesh,
                (
                    "TRUSTMESH_KEYS__KEK_FILE",
                    keys.join("notifier.kek").display().to_string(),
                ),
                (
                    "TRUSTMESH_CONFIG",
                    self.dir.path().join("notifier.toml").display().to_string(),
                ),
            ]),
            other => panic!("no such service: {other}"),
        }
        let label = match (service, dedicated) {
            ("analysis", Some(tenant)) => format!("analysis-{tenant}-{n}"),
            ("analysis", None) => format!("analysis-{n}"),
            _ => service.to_owned(),
        };
        // Appended to, so a restarted process's log follows the killed one's.
        let log = self.dir.path().join("logs").join(format!("{label}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(service_binary(&format!("trustmesh-{service}")))
            .envs(env)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start trustmesh-{service}: {e}"));
        Process {
            name: label,
            service: service.to_owned(),
            replica: n,
            dedicated: dedicated.map(str::to_owned),
            child: Some(child),
            grpc,
            admin,
            log,
        }
    }

    /// The URL service `service` (for `analysis`, dedicated to a tenant or shared) connects to
    /// Postgres with: as its own role.
    ///
    /// # Panics
    ///
    /// If `service` is none of the layout's, or `dedicated` no dedicated tenant of it.
    pub(crate) fn role_url(&self, service: &str, dedicated: Option<&str>) -> String {
        match dedicated {
            Some(tenant) => self.dedicated_urls[tenant].clone(),
            None => self.role_urls[service].clone(),
        }
    }

    /// The process of service `name`.
    ///
    /// # Panics
    ///
    /// If there is none.
    pub(crate) fn service(&self, name: &str) -> &Process {
        self.services
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} process"))
    }

    /// Where a single-tenant install's tenancy writes the first admin key.
    fn first_key_file(&self) -> PathBuf {
        self.dir.path().join("keys").join("first-admin.key")
    }

    /// The clients of a single-tenant install's tenant, with the first admin key tenancy issued.
    pub(crate) async fn single_tenant_admin(&self) -> Clients {
        let tenant = self
            .single_tenant
            .as_deref()
            .expect("a single-tenant layout");
        let key = std::fs::read_to_string(self.first_key_file()).expect("the first admin key");
        let user = Client::connect(
            &self.service("tenancy").endpoint(),
            &SecretString::from(key.trim()),
        )
        .await
        .unwrap()
        .with_tenant(tenant);
        self.clients(&user).await
    }

    /// The operator's client, on tenancy.
    pub(crate) async fn operator(&self) -> Client {
        Client::connect(
            &self.service("tenancy").endpoint(),
            &SecretString::from(OPERATOR),
        )
        .await
        .unwrap()
    }

    /// A new tenant's admin client on every service (analysis: its dedicated replica if it has one).
    pub(crate) async fn tenant(&self, tenant: &str) -> Clients {
        let (_, user) = self
            .operator()
            .await
            .create_tenant_with_key(tenant, tenant, &[Scope::Admin], Duration::from_secs(3600))
            .await
            .unwrap();
        let mut clients = self.clients(&user).await;
        if let Some(replica) = self.dedicated_replica(tenant) {
            clients.analysis = user.reconnect(&replica.endpoint()).await.unwrap();
        }
        clients
    }

    /// `user`'s clients on every service.
    pub(crate) async fn clients(&self, user: &Client) -> Clients {
        let on = |endpoint: String| async move { user.reconnect(&endpoint).await.unwrap() };
        Clients {
            tenancy: on(self.service("tenancy").endpoint()).await,
            ingest: on(self.service("ingest").endpoint()).await,
            analysis: on(self.balancer.endpoint()).await,
            trust: on(self.service("trust-scoring").endpoint()).await,
            deletion: on(self.service("deletion").endpoint()).await,
            audit: on(self.service("audit").endpoint()).await,
        }
    }
}

/// Provisions `service`'s own role in `db` (`tm_<schema>`: it owns its schema there and nothing
/// else) with the administrator's pool, and returns the URL the service connects to `db` with.
///
/// # Panics
///
/// If Postgres refuses: the layout cannot run without it.
async fn role_url(db: &TestDatabase, service: &str) -> String {
    let schema = SchemaName::new(service.replace('-', "_")).expect("a service's schema name");
    provision_for_admin_url(db.pool(), db.url(), &schema)
        .await
        .unwrap_or_else(|e| panic!("cannot provision the Postgres role of {service}: {e}"))
}

/// A tenant's SDK client on each service (an ingress would route by gRPC service instead).
pub(crate) struct Clients {
    pub(crate) tenancy: Client,
    pub(crate) ingest: Client,
    pub(crate) analysis: Client,
    pub(crate) trust: Client,
    pub(crate) deletion: Client,
    pub(crate) audit: Client,
}
