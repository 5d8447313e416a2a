//! The multi-process layout on one machine: every service its own process (the real service
//! binaries, with two `analysis` replicas behind a connection balancer standing in for a Kubernetes
//! Service), over a 3-node NATS JetStream cluster on loopback (streams at R3, `sync_interval:
//! always`), Postgres and a local object directory, driven through the SDK. One NATS node is killed
//! during the flow and no acknowledged message is lost; the `analysis` replica running a job is
//! killed (SIGKILL) mid-job and the other replica completes it.
//!
//! The service binaries belong to other packages, so Cargo gives this test no `CARGO_BIN_EXE_*`
//! for them: they are looked up in the directory the test executable's directory sits in
//! (`target/<profile>/`). `cargo test --workspace` builds them; to run this test alone, build them
//! first:
//!
//! ```text
//! cargo build --workspace --bins && cargo test -p trustmesh-cli --test multiprocess
//! ```
//!
//! The ignored test `jobs_per_second_with_one_and_two_analysis_replicas` prints the throughput of a
//! batch of concurrent analyses with one, then two `analysis` replicas (README, Performance).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use trustmesh_events::{ALL_STREAMS, AUTH_KV_BUCKET, consumers::ANALYSIS_REQUESTED};
use trustmesh_proto::v1::{
    AnalysisOptions, DeletionState, IssueType, JobState, Scope, StartAnalysisRequest, TaskType,
};
use trustmesh_runtime::SecretString;
use trustmesh_sdk::{Client, once_known};
use trustmesh_testkit::data::synthetic_csv;
use trustmesh_testkit::nats::{CLUSTER_SIZE, NatsCluster, free_loopback_ports};
use trustmesh_testkit::postgres::TestDatabase;

/// Replicas of every stream (the cluster's size).
const REPLICAS: usize = CLUSTER_SIZE;
/// How long a service may take to report ready on `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an analysis may take, a redelivery after a killed replica included (ack wait 30 s).
const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// Rows of the analyzed dataset: the most that still get AutoML's whole model suite, so that with
/// [`JOB_FOLDS`] folds a job trains for a few seconds, long enough to kill its replica mid-job.
const JOB_ROWS: usize = 20_000;
/// Cross-validation folds of every analysis (the most the API allows).
const JOB_FOLDS: u32 = 20;
/// The step of a job that keeps its `analysis` replica busy.
const TRAIN_FOLDS: &str = "train-folds";
const OPERATOR: &str = "multiprocess-test-operator-credential-0123456789";
const SERVICE_CREDENTIAL: &str = "multiprocess-test-service-credential-0123456789";

/// The path of the service binary `name`, built next to this test's executable.
///
/// # Panics
///
/// If it is missing, saying how to build it.
fn service_binary(name: &str) -> PathBuf {
    // The test runs as target/<profile>/deps/multiprocess-<hash>; binaries are in target/<profile>/.
    let exe = std::env::current_exe().expect("the test knows its executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.is_file(),
        "{} is missing: build the service binaries first \
         (`cargo build --workspace --bins`, or run `cargo test --workspace`)",
        binary.display()
    );
    binary
}

/// One service process, killed (SIGKILL) on drop, so nothing outlives a failed test.
struct Process {
    name: String,
    child: Option<Child>,
    grpc: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl Process {
    fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process runs").id()
    }

    /// SIGKILL, like a crash or an OOM kill, and reaps the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until `/readyz` answers 200 (every dependency up, consumers bound).
    async fn wait_ready(&mut self) {
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
    fn cpu_ticks(&self) -> u64 {
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
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The status code of `GET path` on a plain HTTP/1.1 server, if it answers.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
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
struct Balancer {
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

    fn endpoint(&self) -> String {
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
struct Layout {
    services: Vec<Process>,
    analysis: Vec<Process>,
    balancer: Balancer,
    nats: NatsCluster,
    db: TestDatabase,
    dir: tempfile::TempDir,
    /// Ports picked for each service (gRPC, admin), so peers can name each other up front.
    ports: std::collections::HashMap<&'static str, (u16, u16)>,
}

/// The services in their start order after tenancy (which creates `tm_auth` and publishes the
/// operator), with `analysis` started apart (its replicas share one key-encryption key file, which
/// the first creates).
const OTHERS: [&str; 5] = ["ingest", "trust-scoring", "deletion", "audit", "notifier"];

impl Layout {
    /// Starts the cluster, a database, tenancy, the other services and `analysis_replicas`
    /// `analysis` processes, each ready.
    async fn start(analysis_replicas: usize) -> Self {
        let nats = NatsCluster::start().await;
        let db = TestDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let free = free_loopback_ports(2 * (OTHERS.len() + 1));
        let ports = std::iter::once("tenancy")
            .chain(OTHERS)
            .zip(free.chunks(2))
            .map(|(name, pair)| (name, (pair[0], pair[1])))
            .collect();
        let mut layout = Self {
            services: Vec::new(),
            analysis: Vec::new(),
            balancer: Balancer::start().await,
            nats,
            db,
            dir,
            ports,
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
        layout
    }

    /// Starts one more `analysis` replica, waits until it is ready and puts it behind the balancer.
    async fn add_analysis_replica(&mut self) {
        let replica = self.analysis.len();
        let mut process = self.spawn("analysis", replica);
        process.wait_ready().await;
        self.balancer.add(process.grpc);
        self.analysis.push(process);
    }

    /// Spawns service `service` (its `n`th process: the NATS node it first connects to), configured
    /// entirely by environment variables, as in infra/docker/docker-compose.yml.
    fn spawn(&self, service: &str, n: usize) -> Process {
        let (grpc_port, admin_port) = match self.ports.get(service) {
            Some(ports) => *ports,
            None => {
                let free = free_loopback_ports(2);
                (free[0], free[1])
            }
        };
        let grpc = SocketAddr::from(([127, 0, 0, 1], grpc_port));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let peer = |name: &str| format!("http://127.0.0.1:{}", self.ports[name].0);
        let keys = self.dir.path().join("keys");
        let objects = self.dir.path().join("objects");
        let mut env: Vec<(&str, String)> = vec![
            ("TRUSTMESH_GRPC__BIND", grpc.to_string()),
            (
                "TRUSTMESH_GRPC__TLS__MODE",
                "dev_plaintext_loopback".to_owned(),
            ),
            ("TRUSTMESH_ADMIN__BIND", admin.to_string()),
            ("TRUSTMESH_DATABASE__URL", self.db.url().to_owned()),
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
                keys.join(format!("{service}.kek")).display().to_string(),
            ));
        };
        match service {
            "tenancy" => env.extend([
                mesh,
                operator,
                ("TRUSTMESH_NOTIFIER__ENDPOINT", peer("notifier")),
                ("TRUSTMESH_NOTIFIER__TLS__MODE", plaintext()),
            ]),
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
            ]),
            other => panic!("no such service: {other}"),
        }
        let label = if service == "analysis" {
            format!("analysis-{n}")
        } else {
            service.to_owned()
        };
        let log = self.dir.path().join("logs").join(format!("{label}.log"));
        let out = std::fs::File::create(&log).unwrap();
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
            child: Some(child),
            grpc,
            admin,
            log,
        }
    }

    fn service(&self, name: &str) -> &Process {
        self.services
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} process"))
    }

    /// The operator's client (on tenancy) and a new tenant's admin client on every service.
    async fn tenant(&self, tenant: &str) -> Clients {
        let operator = Client::connect(
            &self.service("tenancy").endpoint(),
            &SecretString::from(OPERATOR),
        )
        .await
        .unwrap();
        let (_, user) = operator
            .create_tenant_with_key(tenant, tenant, &[Scope::Admin], Duration::from_secs(3600))
            .await
            .unwrap();
        let on = |endpoint: String| {
            let user = user.clone();
            async move { user.reconnect(&endpoint).await.unwrap() }
        };
        Clients {
            ingest: on(self.service("ingest").endpoint()).await,
            analysis: on(self.balancer.endpoint()).await,
            trust: on(self.service("trust-scoring").endpoint()).await,
            deletion: on(self.service("deletion").endpoint()).await,
            audit: on(self.service("audit").endpoint()).await,
        }
    }
}

/// A tenant's SDK client on each service (an ingress would route by gRPC service instead).
struct Clients {
    ingest: Client,
    analysis: Client,
    trust: Client,
    deletion: Client,
    audit: Client,
}

/// A classification analysis of `dataset`'s `label`, with [`JOB_FOLDS`] folds.
fn analysis_request(dataset: &str) -> StartAnalysisRequest {
    StartAnalysisRequest {
        dataset: dataset.to_owned(),
        label_column: "label".to_owned(),
        task_type: TaskType::Classification.into(),
        options: Some(AnalysisOptions {
            cv_folds: JOB_FOLDS,
            ..AnalysisOptions::default()
        }),
        ..StartAnalysisRequest::default()
    }
}

/// Each stream's name and the sequence numbers of the messages it holds.
async fn stream_contents(js: &async_nats::jetstream::Context) -> Vec<(String, Vec<u64>)> {
    let mut contents = Vec::new();
    for spec in ALL_STREAMS {
        let mut stream = js.get_stream(spec.name).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let mut seqs = Vec::new();
        if state.messages > 0 {
            for seq in state.first_sequence..=state.last_sequence {
                if stream.get_raw_message(seq).await.is_ok() {
                    seqs.push(seq);
                }
            }
        }
        contents.push((spec.name.to_owned(), seqs));
    }
    contents
}

/// The NATS nodes holding a stream (leader and replicas).
fn hosts(info: &async_nats::jetstream::stream::Info) -> Vec<String> {
    let cluster = info.cluster.clone().unwrap_or_default();
    cluster
        .leader
        .into_iter()
        .chain(cluster.replicas.into_iter().map(|r| r.name))
        .collect()
}

/// The whole flow on the multi-process layout, with a NATS node and an `analysis` replica killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_survives_a_killed_nats_node_and_a_killed_analysis_replica() {
    let started = Instant::now();
    let mut layout = Layout::start(2).await;
    eprintln!("layout up in {:.1} s", started.elapsed().as_secs_f64());
    let js = layout.nats.jetstream().await;

    // Every stream the services ensured has three replicas, on all three nodes.
    for spec in ALL_STREAMS {
        let mut stream = js.get_stream(spec.name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.num_replicas, REPLICAS, "{}", spec.name);
        assert_eq!(
            hosts(info).len(),
            REPLICAS,
            "{}: {:?}",
            spec.name,
            info.cluster
        );
    }
    // NOTE: the `tm_auth` bucket is created by tenancy with `CacheOptions::default().replicas` (1),
    // not `nats.stream_replicas`; its node must not be the one killed (reported, not asserted).
    let mut auth = js.get_stream(format!("KV_{AUTH_KV_BUCKET}")).await.unwrap();
    let auth = auth.info().await.unwrap();
    let mut unreplicated_hosts = Vec::new();
    if auth.config.num_replicas < REPLICAS {
        eprintln!(
            "tm_auth has {} replica(s) on {:?}",
            auth.config.num_replicas,
            hosts(auth)
        );
        unreplicated_hosts.extend(hosts(auth));
    }

    let user = layout.tenant("acme").await;
    let dataset = once_known(|| {
        user.ingest
            .upload_csv("synthetic", synthetic_csv(JOB_ROWS, 8, 0), "row_id")
    })
    .await
    .unwrap();
    assert_eq!(dataset.row_count, JOB_ROWS as u64);

    // Kill a NATS node: the leader of the analysis stream unless it holds an unreplicated stream.
    let mut analysis_stream = js.get_stream(ANALYSIS_REQUESTED.stream.name).await.unwrap();
    let analysis_info = analysis_stream.info().await.unwrap().clone();
    let leader = analysis_info.cluster.clone().unwrap().leader.unwrap();
    let victim_name = hosts(&analysis_info)
        .into_iter()
        .find(|node| !unreplicated_hosts.contains(node))
        .expect("a node holds no unreplicated stream");
    eprintln!("analysis stream leader {leader}; killing NATS node {victim_name}");
    let acknowledged = stream_contents(&js).await;
    let victim = layout.nats.node_named(&victim_name).unwrap();
    layout.nats.kill(victim);
    // The test's own client may have been on the killed node: a fresh one is on a live node.
    let js = layout.nats.jetstream().await;

    // An analysis; the replica running it is killed once it trains.
    let analysis = tokio::time::timeout(
        JOB_TIMEOUT,
        user.analysis
            .start_analysis(analysis_request(&dataset.name)),
    )
    .await
    .expect("the analysis starts")
    .unwrap();
    let job_name = analysis.name().to_owned();
    let mut updates = std::pin::pin!(user.analysis.watch_job(&job_name));
    tokio::time::timeout(JOB_TIMEOUT, async {
        while let Some(update) = updates.next().await {
            let Ok(job) = update else { continue };
            eprintln!(
                "t+{:.1}s {:?} {} {:.2}",
                started.elapsed().as_secs_f64(),
                job.state(),
                job.step,
                job.progress
            );
            if job.state() == JobState::Running && job.step == TRAIN_FOLDS {
                return;
            }
        }
        panic!("the watch ended before the job ran");
    })
    .await
    .expect("the job trains");
    let worker = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let before: Vec<u64> = layout.analysis.iter().map(Process::cpu_ticks).collect();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let used: Vec<u64> = layout
                .analysis
                .iter()
                .zip(&before)
                .map(|(p, b)| p.cpu_ticks() - b)
                .collect();
            // Training keeps a core busy (50 ticks in 0.5 s); an idle replica uses next to none.
            let (busiest, &most) = used.iter().enumerate().max_by_key(|(_, u)| **u).unwrap();
            if most >= 15 && used.iter().all(|&u| u == most || u * 3 < most) {
                return busiest;
            }
            let job = user.analysis.get_job(&job_name).await.unwrap();
            assert_eq!(
                job.step, TRAIN_FOLDS,
                "the job trained before a replica was killed: {job:?}"
            );
        }
    })
    .await
    .expect("one analysis replica works on the job");
    eprintln!(
        "t+{:.1}s killing {} (it trains the job)",
        started.elapsed().as_secs_f64(),
        layout.analysis[worker].name
    );
    layout.analysis[worker].kill();

    // The other replica gets the job once the ack wait runs out, and completes it.
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(ANALYSIS_REQUESTED.stream.name)
        .await
        .unwrap()
        .get_consumer(ANALYSIS_REQUESTED.durable_name)
        .await
        .unwrap();
    let mut redelivered = 0;
    let done = tokio::time::timeout(JOB_TIMEOUT, async {
        loop {
            if let Ok(info) = consumer.info().await {
                redelivered = redelivered.max(info.num_redelivered);
            }
            if let Ok(job) = user.analysis.get_job(&job_name).await
                && trustmesh_sdk::is_final(job.state())
            {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let survivor = &layout.analysis[1 - worker];
        panic!(
            "the job did not complete on {}:\n{}",
            survivor.name,
            log_tail(&survivor.log)
        )
    });
    eprintln!("t+{:.1}s job done", started.elapsed().as_secs_f64());
    assert_eq!(done.state(), JobState::Succeeded, "{done:?}");
    // The killed replica had the delivery: the job came back to the other one only through a
    // redelivery (had it been done by then, nothing would have been redelivered).
    assert!(
        redelivered >= 1,
        "the job was not redelivered: the killed replica did not run it"
    );

    // The report, through trust-scoring (which read the outputs from the surviving replica).
    let report = user.trust.get_report(&done.output).await.unwrap();
    assert_eq!(report.analyzed_row_count, JOB_ROWS as u64);
    assert!(
        report
            .issue_summaries
            .iter()
            .any(|s| s.issue_type() == IssueType::Label),
        "{report:?}"
    );

    // Deletion with receipts from every store-owning service and a certificate that verifies.
    let deletion_job = user
        .deletion
        .delete_dataset(&dataset.name, "gdpr-art-17")
        .await
        .unwrap();
    let deletion = user
        .deletion
        .wait_deletion(&deletion_job.output, Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(deletion.state(), DeletionState::Completed, "{deletion:?}");
    assert_eq!(deletion.receipts.len(), 6, "{deletion:?}");
    assert!(
        deletion.receipts.iter().all(|r| !r.residue_found),
        "{deletion:?}"
    );
    let certificate = user.deletion.get_certificate(&deletion.name).await.unwrap();
    let keys = user.deletion.certificate_signing_keys().await.unwrap();
    let key = keys
        .iter()
        .find(|k| k.key_id == certificate.key_id)
        .expect("the signing key is published");
    trustmesh_deletion::verify_certificate(
        &certificate.certificate,
        &certificate.signature,
        &key.public_key,
    )
    .unwrap();
    let verified = user.audit.verify_audit_log().await.unwrap();
    assert!(verified.valid, "{verified:?}");
    assert!(verified.verified_count > 0, "{verified:?}");

    // Nothing acknowledged before the node died is lost: every message is still in its stream.
    let now = stream_contents(&js).await;
    for ((name, before), (_, after)) in acknowledged.iter().zip(&now) {
        let lost: Vec<&u64> = before.iter().filter(|seq| !after.contains(seq)).collect();
        assert!(lost.is_empty(), "{name} lost messages {lost:?}");
    }
    assert!(acknowledged.iter().map(|(_, s)| s.len()).sum::<usize>() > 0);
    let elapsed = started.elapsed();
    eprintln!("flow done in {:.1} s", elapsed.as_secs_f64());
    assert!(elapsed < Duration::from_secs(180), "took {elapsed:?}");
}

/// Jobs per second over `jobs` concurrent analyses of `dataset`, start to SUCCEEDED.
async fn batch_throughput(user: &Clients, dataset: &str, jobs: usize) -> f64 {
    let started = Instant::now();
    let mut names = Vec::new();
    for _ in 0..jobs {
        names.push(
            user.analysis
                .start_analysis(analysis_request(dataset))
                .await
                .unwrap()
                .name()
                .to_owned(),
        );
    }
    for name in &names {
        let job = tokio::time::timeout(
            Duration::from_secs(600),
            user.analysis.wait_job(name, |_| {}),
        )
        .await
        .expect("the batch completes")
        .unwrap();
        assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

/// A batch of concurrent analyses with one `analysis` replica, then the same batch with two: every
/// job succeeds on either layout, and the throughput of each is printed. CI runs a small batch; the
/// figures of README's "Multi-process layout" come from
/// `TRUSTMESH_BENCH_ROWS=20000 TRUSTMESH_BENCH_JOBS=8 cargo test -p trustmesh-cli --test multiprocess
/// jobs_per_second -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_per_second_with_one_and_two_analysis_replicas() {
    let rows: usize = std::env::var("TRUSTMESH_BENCH_ROWS").map_or(2_000, |v| v.parse().unwrap());
    let jobs: usize = std::env::var("TRUSTMESH_BENCH_JOBS").map_or(2, |v| v.parse().unwrap());
    let mut layout = Layout::start(1).await;
    let user = layout.tenant("bench").await;
    let dataset = once_known(|| {
        user.ingest
            .upload_csv("bench", synthetic_csv(rows, 8, 0), "row_id")
    })
    .await
    .unwrap();
    // A first job warms every service (connections, caches) outside the measurement.
    batch_throughput(&user, &dataset.name, 1).await;
    let one = batch_throughput(&user, &dataset.name, jobs).await;
    layout.add_analysis_replica().await;
    let before: Vec<u64> = layout.analysis.iter().map(Process::cpu_ticks).collect();
    let two = batch_throughput(&user, &dataset.name, jobs).await;
    // How the work was shared: each replica's CPU time over the batch.
    let shares: Vec<String> = layout
        .analysis
        .iter()
        .zip(&before)
        .map(|(p, b)| format!("{} {} ticks", p.name, p.cpu_ticks() - b))
        .collect();
    println!(
        "{jobs} concurrent analyses ({rows} rows x 8 features, {JOB_FOLDS} folds): \
         1 analysis replica {one:.3} jobs/s, 2 replicas {two:.3} jobs/s ({:.2}x); \
         CPU of the two-replica batch: {}",
        two / one,
        shares.join(", ")
    );
}
