//! Chaos (issue #12, item 2): the standalone mesh under faults of what it depends on, each test
//! bounded in time.
//!
//! - nats-server killed mid-flow and restarted on the same port and store;
//! - Postgres (a private cluster, never the shared one) stopped immediately mid-flow and started again;
//! - the S3 server (s3s-fs) down for a while mid-flow and back on the same port and root;
//! - a poison message on a consumed subject.
//!
//! In each fault test a flow of [`JOBS`] uploads and analyses, started [`STAGGER`] apart, runs
//! while the dependency is down: the fault comes once two jobs are accepted (so jobs are in flight),
//! and the later uploads and starts fall inside it. The client retries what fails, and each failure
//! must carry a retryable code. Afterwards every job has SUCCEEDED, none is lost, and none was done
//! twice: one report, one `analysis.requested`, one `analysis.completed`, one `scores.ready` and one
//! `reports.create` audit event per job, one `dataset.ingested` per ready dataset, and no dead
//! letter.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use trustmesh_cli::standalone::{NatsSource, Standalone, StandaloneSettings};
use trustmesh_proto::v1::{
    AuditRecord, Dataset, DatasetState, Job, JobState, ListEventsRequest, Scope,
    StartAnalysisRequest, TaskType,
};
use trustmesh_runtime::SecretString;
use trustmesh_sdk::{Client, is_final, once_known};
use trustmesh_store::ObjectStoreSettings;
use trustmesh_testkit::data::synthetic_csv;
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::pg_cluster::PgCluster;
use trustmesh_testkit::postgres::TestDatabase;
use trustmesh_testkit::s3::S3Server;

const TENANT: &str = "acme";
/// Jobs of a flow (each: upload a dataset, analyse it).
const JOBS: usize = 6;
/// Rows of each dataset: small, so a flow takes seconds.
const ROWS: usize = 300;
/// Between the starts of two jobs of a flow, so some start before the fault and some during it.
const STAGGER: Duration = Duration::from_millis(700);
/// How long a dependency stays down.
const OUTAGE: Duration = Duration::from_secs(5);
/// The most a flow may take, faults included.
const FLOW_TIMEOUT: Duration = Duration::from_secs(150);
/// The codes a client may see while a dependency is down: the ones it retries.
const RETRYABLE: [Code; 3] = [Code::Unavailable, Code::ResourceExhausted, Code::Aborted];

/// The standalone mesh (in this process) on the given NATS, Postgres and object store; stopped on
/// drop.
struct Mesh {
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
    admin: SocketAddr,
    operator: Client,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Mesh {
    async fn start(nats_url: String, database_url: &str, s3: Option<&S3Server>) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut settings = StandaloneSettings::new(
            data_dir.path().to_owned(),
            SecretString::from(database_url.to_owned()),
        );
        settings.grpc.bind.set_port(0);
        settings.admin.bind.set_port(0);
        settings.nats = NatsSource::Url(nats_url);
        if let Some(s3) = s3 {
            settings.objects = ObjectStoreSettings::S3 {
                endpoint: Some(s3.endpoint()),
                region: s3.region().to_owned(),
                bucket: "trustmesh".to_owned(),
                access_key_id: s3.access_key().to_owned(),
                secret_access_key: SecretString::from(s3.secret_key().to_owned()),
                create_bucket: true,
            };
        }
        let mesh = Standalone::build(settings).await.unwrap();
        let endpoint = format!("http://{}", mesh.grpc_addr());
        let admin = mesh.admin_addr();
        let operator = Client::connect(&endpoint, mesh.operator_credential())
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let running = tokio::spawn(async move {
            // The keys and the operator credential live here as long as the mesh runs.
            let _data_dir = data_dir;
            mesh.run_until_stopped(stop).await
        });
        Self {
            shutdown,
            running: Some(running),
            admin,
            operator,
        }
    }

    /// Creates `tenant` and an admin key of it; returns a client acting as that key.
    async fn tenant_with_key(&self, tenant: &str) -> Client {
        let (_, user) = self
            .operator
            .create_tenant_with_key(tenant, tenant, &[Scope::Admin], Duration::from_secs(3600))
            .await
            .unwrap();
        // A new key reaches each service's cache within moments; wait for it, so that the flow
        // sees only the faults' failures.
        once_known(|| user.list_datasets().try_collect::<Vec<_>>())
            .await
            .unwrap();
        once_known(|| user.list_jobs(None).try_collect::<Vec<_>>())
            .await
            .unwrap();
        once_known(|| user.list_reports(None).try_collect::<Vec<_>>())
            .await
            .unwrap();
        once_known(|| async {
            user.audit()
                .list_events(ListEventsRequest {
                    parent: format!("tenants/{tenant}"),
                    ..ListEventsRequest::default()
                })
                .await
        })
        .await
        .unwrap();
        user
    }

    /// Stops the mesh; it must stop cleanly (no service gave up during the fault).
    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(60), running)
                .await
                .expect("the mesh stops within 60 s")
                .unwrap()
                .expect("the mesh ran without error through the fault");
        }
    }
}

/// The failures the client saw during a flow, by call and code (`TRANSPORT` when no server
/// answered).
#[derive(Debug, Default, Clone)]
struct Failures(Arc<Mutex<BTreeMap<(String, String), usize>>>);

impl Failures {
    fn record(&self, call: &str, code: String) {
        *self
            .0
            .lock()
            .unwrap()
            .entry((call.to_owned(), code))
            .or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<(String, String), usize> {
        self.0.lock().unwrap().clone()
    }
}

/// `call` until it succeeds (every failure recorded as `what`), for at most [`FLOW_TIMEOUT`].
async fn retrying<T, F, Fut>(what: &str, failures: &Failures, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, trustmesh_sdk::Error>>,
{
    let deadline = Instant::now() + FLOW_TIMEOUT;
    loop {
        let error = match tokio::time::timeout(Duration::from_secs(30), call()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(error)) => {
                let kind = match (&error, error.code()) {
                    (_, Some(code)) => code_name(code),
                    (trustmesh_sdk::Error::Usage(what), None) => what.clone(),
                    (_, None) => "TRANSPORT".to_owned(),
                };
                failures.record(what, kind);
                error.to_string()
            }
            Err(_) => {
                failures.record(what, "CLIENT_TIMEOUT".into());
                "no answer within 30 s".to_owned()
            }
        };
        assert!(
            Instant::now() < deadline,
            "{what} kept failing for {FLOW_TIMEOUT:?}: {error}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn code_name(code: Code) -> String {
    format!("{code:?}")
}

/// Uploads dataset `index` until it is READY, then analyses it until the job ends; counts the
/// job in `started` once the analysis is accepted.
async fn one_job(
    user: Client,
    index: usize,
    failures: Failures,
    started: Arc<AtomicUsize>,
) -> (Dataset, Job) {
    let csv = synthetic_csv(ROWS, 4, index as u64);
    let name = format!("chaos-{index}");
    let dataset = retrying("upload", &failures, || async {
        let dataset = user.upload_csv(&name, csv.clone(), "row_id").await?;
        if dataset.state() == DatasetState::Ready {
            Ok(dataset)
        } else {
            // A dataset the outage made FAILED: an answer, not an error, but the upload is lost.
            Err(trustmesh_sdk::Error::Usage(format!(
                "DATASET_FAILED {:?}",
                dataset.error
            )))
        }
    })
    .await;
    // One request id for every attempt, so a start the server applied but did not answer is not
    // applied twice.
    let request = StartAnalysisRequest {
        dataset: dataset.name.clone(),
        label_column: "label".to_owned(),
        task_type: TaskType::Classification.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        ..StartAnalysisRequest::default()
    };
    let job = retrying("start_analysis", &failures, || {
        user.start_analysis(request.clone())
    })
    .await
    .job()
    .clone();
    started.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + FLOW_TIMEOUT;
    loop {
        let job = retrying("get_job", &failures, || user.get_job(&job.name)).await;
        if is_final(job.state()) {
            return (dataset, job);
        }
        assert!(Instant::now() < deadline, "the job never ended: {job:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// [`JOBS`] jobs started [`STAGGER`] apart, running in the background.
struct Flow {
    jobs: Vec<JoinHandle<(Dataset, Job)>>,
    started: Arc<AtomicUsize>,
    failures: Failures,
}

impl Flow {
    fn start(user: &Client) -> Self {
        let started = Arc::new(AtomicUsize::new(0));
        let failures = Failures::default();
        let jobs = (0..JOBS)
            .map(|index| {
                let (user, failures, started) = (user.clone(), failures.clone(), started.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(STAGGER * u32::try_from(index).unwrap()).await;
                    one_job(user, index, failures, started).await
                })
            })
            .collect();
        Self {
            jobs,
            started,
            failures,
        }
    }

    /// Waits until `count` jobs were accepted: jobs are in flight.
    async fn wait_started(&self, count: usize) {
        tokio::time::timeout(FLOW_TIMEOUT, async {
            while self.started.load(Ordering::SeqCst) < count {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("jobs start before the fault");
    }

    /// Every job's dataset and final state, and the failures seen on the way.
    async fn finish(self) -> (Vec<(Dataset, Job)>, BTreeMap<(String, String), usize>) {
        let mut done = Vec::new();
        for job in self.jobs {
            done.push(
                tokio::time::timeout(FLOW_TIMEOUT, job)
                    .await
                    .expect("every job ends")
                    .unwrap(),
            );
        }
        (done, self.failures.snapshot())
    }
}

/// The subject of every message of every stream of `nats`.
async fn stored_subjects(nats: &NatsServer) -> Vec<String> {
    let js = nats.jetstream().await;
    let mut names = js.stream_names();
    let mut subjects = Vec::new();
    while let Some(name) = names.next().await {
        let mut stream = js.get_stream(name.unwrap()).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        for seq in 1..=last {
            if let Ok(message) = stream.get_raw_message(seq).await {
                subjects.push(message.subject.as_str().to_owned());
            }
        }
    }
    subjects
}

/// Every audit event of `tenant`, once `done` holds for them (they travel through the bus), or
/// after 30 s.
async fn audit_events(user: &Client, done: impl Fn(&[AuditRecord]) -> bool) -> Vec<AuditRecord> {
    let mut events = Vec::new();
    for _ in 0..150 {
        events = user
            .audit()
            .list_events(ListEventsRequest {
                parent: format!("tenants/{TENANT}"),
                page_size: 1000,
                ..ListEventsRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        if done(&events) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    events
}

/// Every job succeeded, none lost, none done twice; the client saw only retryable codes.
async fn assert_every_job_done_exactly_once(
    nats: &NatsServer,
    user: &Client,
    done: &[(Dataset, Job)],
    failures: &BTreeMap<(String, String), usize>,
) {
    eprintln!("failures seen by the client during the fault: {failures:?}");
    assert_eq!(done.len(), JOBS);
    for (dataset, job) in done {
        assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
        assert_eq!(dataset.row_count, ROWS as u64);
    }

    // One report per job, the job's own.
    let reports: Vec<_> = user.list_reports(None).try_collect().await.unwrap();
    let report_names: BTreeSet<_> = reports.iter().map(|r| r.name.clone()).collect();
    let outputs: BTreeSet<_> = done.iter().map(|(_, job)| job.output.clone()).collect();
    assert_eq!(reports.len(), JOBS, "{reports:?}");
    assert_eq!(report_names, outputs);

    // One event per job (per ready dataset) on each subject of the flow, no dead letter.
    let ready = user
        .list_datasets()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.state() == DatasetState::Ready)
        .count();
    assert!(ready >= JOBS, "{ready} ready datasets");
    let subjects = stored_subjects(nats).await;
    let count = |subject: &str| subjects.iter().filter(|s| *s == subject).count();
    for (event, expected) in [
        ("dataset.ingested", ready),
        ("analysis.requested", JOBS),
        ("analysis.completed", JOBS),
        ("scores.ready", JOBS),
    ] {
        assert_eq!(
            count(&format!("tm.{TENANT}.{event}")),
            expected,
            "{event} messages"
        );
    }
    let dead: Vec<_> = subjects
        .iter()
        .filter(|s| s.starts_with(&format!("tm.{TENANT}.dlq.")))
        .collect();
    assert!(dead.is_empty(), "messages were given up on: {dead:?}");

    // One audit event per report created.
    let created = |events: &[AuditRecord]| {
        events
            .iter()
            .filter(|e| e.action == "reports.create")
            .count()
    };
    let events = audit_events(user, |events| created(events) >= JOBS).await;
    assert_eq!(created(&events), JOBS, "reports.create audit events");

    // While the dependency was down, the client saw only codes it retries.
    let unclear: Vec<_> = failures
        .keys()
        .filter(|(_, code)| {
            code != "TRANSPORT" && !RETRYABLE.iter().any(|c| code_name(*c) == *code)
        })
        .collect();
    assert!(
        unclear.is_empty(),
        "calls failed with codes a client does not retry: {unclear:?} (all: {failures:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restarted_mid_flow_loses_and_repeats_nothing() {
    let mut nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let mesh = Mesh::start(nats.url(), db.url(), None).await;
    let user = mesh.tenant_with_key(TENANT).await;

    let flow = Flow::start(&user);
    flow.wait_started(2).await;
    nats.kill();
    tokio::time::sleep(OUTAGE).await;
    nats.restart().await;
    let (done, failures) = flow.finish().await;

    assert_every_job_done_exactly_once(&nats, &user, &done, &failures).await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_flow_loses_and_repeats_nothing() {
    let nats = NatsServer::start().await;
    let mut postgres = PgCluster::start().await;
    let mesh = Mesh::start(nats.url(), &postgres.url("trustmesh"), None).await;
    let user = mesh.tenant_with_key(TENANT).await;

    let flow = Flow::start(&user);
    flow.wait_started(2).await;
    postgres.stop().await;
    tokio::time::sleep(OUTAGE).await;
    postgres.restart().await;
    let (done, failures) = flow.finish().await;

    assert_every_job_done_exactly_once(&nats, &user, &done, &failures).await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unavailable_mid_flow_loses_and_repeats_nothing() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let mut s3 = S3Server::start().await;
    let mesh = Mesh::start(nats.url(), db.url(), Some(&s3)).await;
    let user = mesh.tenant_with_key(TENANT).await;

    let flow = Flow::start(&user);
    flow.wait_started(2).await;
    s3.stop();
    tokio::time::sleep(OUTAGE).await;
    s3.restart().await;
    let (done, failures) = flow.finish().await;

    assert_every_job_done_exactly_once(&nats, &user, &done, &failures).await;
    mesh.stop().await;
}

/// `GET /metrics` on the admin address.
async fn scrape(admin: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(" 200 "), "{head}");
    body.to_owned()
}

/// `trustmesh_dead_letters_total` of durable `consumer` (0 if not served yet).
async fn dead_letters(admin: SocketAddr, consumer: &str) -> f64 {
    let label = format!("consumer=\"{consumer}\"");
    scrape(admin)
        .await
        .lines()
        .filter(|l| l.starts_with("trustmesh_dead_letters_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_counted_and_blocks_nothing() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let mesh = Mesh::start(nats.url(), db.url(), None).await;
    let user = mesh.tenant_with_key(TENANT).await;
    // NOTE: the metrics are process-wide and other tests of this binary run meshes too: compare
    // with the count before.
    let before = dead_letters(mesh.admin, "analysis-requested").await;

    // A request that can never be processed: its payload is not an `AnalysisRequested`. The
    // handler calls it poison, so it is dead-lettered on its first delivery rather than after
    // `max_deliver` retries (that path, and the server's MAX_DELIVERIES advisory for a handler that
    // never settles, are held by libs/bus's own tests).
    let subject = format!("tm.{TENANT}.analysis.requested");
    let poison = bytes::Bytes::from_static(b"\xff\xff\xff not protobuf");
    let js = nats.jetstream().await;
    js.publish(subject.clone(), poison.clone())
        .await
        .unwrap()
        .await
        .unwrap();

    // It goes to the dead-letter subject, saying why and where from.
    let dead_subject = format!("tm.{TENANT}.dlq.analysis-requested");
    let dead = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(stream) = js.get_stream("TM_DLQ").await
                && let Ok(message) = stream.get_last_raw_message_by_subject(&dead_subject).await
            {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the poison message is dead-lettered");
    assert_eq!(dead.payload, poison);
    let header = |name: &str| {
        dead.headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("Trustmesh-Dlq-Subject"), subject);
    assert_eq!(header("Trustmesh-Dlq-Stream"), "TM_ANALYSIS");
    assert_eq!(header("Trustmesh-Dlq-Consumer"), "analysis-requested");
    assert!(
        header("Trustmesh-Dlq-Reason").contains("AnalysisRequested"),
        "{}",
        header("Trustmesh-Dlq-Reason")
    );

    // The dead-letter metric counts it.
    let counted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let now = dead_letters(mesh.admin, "analysis-requested").await;
            if now > before {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("trustmesh_dead_letters_total counts the dead letter");
    assert!(counted >= before + 1.0);

    // The stream is not blocked: a normal job after it completes, and the consumer has nothing
    // left pending or unacknowledged.
    let failures = Failures::default();
    let (_, job) = tokio::time::timeout(
        FLOW_TIMEOUT,
        one_job(user.clone(), 0, failures.clone(), Arc::default()),
    )
    .await
    .expect("the job after the poison message ends");
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    assert!(failures.snapshot().is_empty(), "{:?}", failures.snapshot());
    let mut consumer = js
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            "analysis-requested",
            "TM_ANALYSIS",
        )
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");

    // The dead letter is in the tenant's audit log: analysis gave up on a message, now on the
    // dead-letter subject.
    let events = audit_events(&user, |events| {
        events.iter().any(|e| e.action == "reports.create")
            && events.iter().any(|e| e.action == "messages.deadLetter")
    })
    .await;
    let dead: Vec<_> = events
        .iter()
        .filter(|e| e.action == "messages.deadLetter")
        .collect();
    assert_eq!(dead.len(), 1, "{events:?}");
    assert_eq!(
        dead[0].resource, "tm.acme.dlq.analysis-requested",
        "{dead:?}"
    );
    assert_eq!(dead[0].service, "analysis", "{dead:?}");
    mesh.stop().await;
}
