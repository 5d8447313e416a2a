//! Analysis jobs end to end against real servers: nats-server, Postgres, a local object directory,
//! and the ingest service in-process (its `ReadRows` is what the worker reads).

use std::net::SocketAddr;
use std::time::Duration;

use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use trustmesh_auth::Scope;
use trustmesh_bus::Publisher;
use trustmesh_events::{Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{ActorType, AnalysisRequested, AuditEvent, Outcome, ScoresReady};
use trustmesh_proto::v1::analysis_service_client::AnalysisServiceClient;
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::get_model_outputs_response::Payload as OutputsPayload;
use trustmesh_proto::v1::upload_dataset_request::Payload;
use trustmesh_proto::v1::{
    CancelJobRequest, ColumnOverride, CreateDatasetRequest, DatasetFormat, GetJobRequest,
    GetModelOutputsRequest, Job, JobState, ListJobsRequest, StartAnalysisRequest, TaskType,
    UploadDatasetRequest, UploadMetadata, WatchJobRequest,
};
use trustmesh_runtime::settings::common::MeshSettings;
use trustmesh_runtime::{ClientTls, GrpcSettings};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;
use uuid::Uuid;

const IRIS: &str = "/work/shared/fixtures/cleanlab-reference/iris_10s.dataset.csv";

/// The mesh's service credential, shared by ingest and analysis (analysis reads ingest's rows with it).
const MESH_CREDENTIAL: &str = "test-mesh-service-credential-0123456789";

fn mesh_settings() -> MeshSettings {
    MeshSettings {
        service_credential: Some(MESH_CREDENTIAL.to_owned().into()),
    }
}

/// Mints an API key of `tenant` with `scopes`; returns `Bearer <key>` and the key's audit actor id.
async fn mint_key(nats: &NatsServer, tenant: &str, scopes: &[Scope]) -> (String, String) {
    use trustmesh_auth::{AuthBucket, IssuedKey, KeyRecord};
    use trustmesh_runtime::ExposeSecret as _;
    let bucket = AuthBucket::open(&nats.jetstream().await, 1).await.unwrap();
    let issued = IssuedKey::generate();
    let record = KeyRecord {
        key_id: issued.key_id().clone(),
        tenant: tenant.to_owned(),
        scopes: scopes.iter().copied().collect(),
        expires_at: (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).unix_timestamp(),
        revoked: false,
        digest: issued.digest().clone(),
    };
    bucket.put(&record).await.unwrap();
    let actor = format!("tenants/{tenant}/apiKeys/{}", issued.key_id());
    (format!("Bearer {}", issued.token().expose_secret()), actor)
}

/// Mints an API key of `tenant` that may read and write datasets (for ingest), and run analyses and
/// read their outputs (for analysis); returns `Bearer <key>`.
async fn mint(nats: &NatsServer, tenant: &str) -> String {
    let scopes = [
        Scope::DatasetsRead,
        Scope::DatasetsWrite,
        Scope::AnalysisRun,
        Scope::ReportsRead,
    ];
    mint_key(nats, tenant, &scopes).await.0
}

/// `message` with `bearer` as its credential.
fn with_key<T>(bearer: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    request
}

/// Adds `authorization: <bearer>` to every request, if set.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(bearer) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

/// An analysis client sending `bearer` (`Bearer <key>`) on every call, or no credential.
type Client = AnalysisServiceClient<InterceptedService<Channel, Bearer>>;

async fn connect(addr: SocketAddr, bearer: Option<&str>) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    AnalysisServiceClient::with_interceptor(channel, Bearer(bearer.map(|b| b.parse().unwrap())))
}

/// `call` again while it is UNAUTHENTICATED because a freshly minted key has not reached the
/// service's cache yet (through the `tm_auth` watch).
async fn once_known<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    for _ in 0..100 {
        match call().await {
            Err(status) if status.code() == Code::Unauthenticated => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
    call().await
}

/// The audit events analysis recorded in `tenant`'s log, once there are at least `n` (or 20 s).
async fn audit_events(nats: &NatsServer, tenant: &str, n: usize) -> Vec<AuditEvent> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use futures::StreamExt as _;
    let js = nats.jetstream().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stream = js.get_stream("TM_AUDIT").await.unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subject: format!("tm.{tenant}.audit.analysis"),
                ack_policy: AckPolicy::None,
                deliver_policy: DeliverPolicy::All,
                ..pull::Config::default()
            })
            .await
            .unwrap();
        let mut batch = consumer
            .fetch()
            .max_messages(10_000)
            .messages()
            .await
            .unwrap();
        let mut events = Vec::new();
        while let Some(message) = batch.next().await {
            events.push(AuditEvent::decode(message.unwrap().payload.as_ref()).unwrap());
        }
        if events.len() >= n || tokio::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// nats-server, a database, ingest and analysis, stopped on drop.
struct Mesh {
    nats: NatsServer,
    db: TestDatabase,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    ingest_addr: SocketAddr,
    analysis_addr: SocketAddr,
    bearer: String,
    ingest: DatasetServiceClient<Channel>,
    analysis: Client,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn analysis_settings(
    mesh_dir: &std::path::Path,
    db: &TestDatabase,
    nats: &NatsServer,
    ingest: SocketAddr,
) -> trustmesh_analysis::Settings {
    use trustmesh_analysis::settings::{ObjectStoreSettings, PeerSettings};
    let mut settings = trustmesh_analysis::Settings {
        grpc: GrpcSettings::dev_plaintext_loopback(),
        admin: trustmesh_runtime::AdminSettings::any_loopback_port(),
        objects: ObjectStoreSettings::Local {
            dir: mesh_dir.join("analysis-objects"),
        },
        ingest: PeerSettings {
            endpoint: format!("http://{ingest}"),
            tls: ClientTls::dev_plaintext_loopback(),
        },
        mesh: mesh_settings(),
        ..trustmesh_analysis::Settings::default()
    };
    settings.database.url = db.url().to_owned().into();
    settings.nats.url = nats.url();
    settings.keys.kek_file = mesh_dir.join("analysis.kek");
    settings
}

impl Mesh {
    async fn start() -> Self {
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let bearer = mint(&nats, "acme").await;

        let mut ingest_settings = trustmesh_ingest::Settings {
            grpc: GrpcSettings::dev_plaintext_loopback(),
            admin: trustmesh_runtime::AdminSettings::any_loopback_port(),
            objects: trustmesh_ingest::settings::ObjectStoreSettings::Local {
                dir: dir.path().join("ingest-objects"),
            },
            mesh: mesh_settings(),
            ..trustmesh_ingest::Settings::default()
        };
        ingest_settings.database.url = db.url().to_owned().into();
        ingest_settings.nats.url = nats.url();
        ingest_settings.keys.kek_file = dir.path().join("ingest.kek");
        let ingest_app = trustmesh_ingest::Application::build(ingest_settings)
            .await
            .unwrap();
        let ingest_addr = ingest_app.grpc_addr();
        tokio::spawn(ingest_app.run_until_stopped(shutdown.child_token()));

        let analysis_app = trustmesh_analysis::Application::build(analysis_settings(
            dir.path(),
            &db,
            &nats,
            ingest_addr,
        ))
        .await
        .unwrap();
        let analysis_addr = analysis_app.grpc_addr();
        tokio::spawn(analysis_app.run_until_stopped(shutdown.child_token()));

        let ingest = DatasetServiceClient::connect(format!("http://{ingest_addr}"))
            .await
            .unwrap();
        let analysis = connect(analysis_addr, Some(&bearer)).await;
        Self {
            nats,
            db,
            dir,
            shutdown,
            ingest_addr,
            analysis_addr,
            bearer,
            ingest,
            analysis,
        }
    }

    /// Creates a dataset of `tenant` (AWAITING_UPLOAD); returns its name.
    async fn create(&self, tenant: &str) -> String {
        let create = || {
            with_key(
                &self.bearer,
                CreateDatasetRequest {
                    parent: format!("tenants/{tenant}"),
                    display_name: "iris".to_owned(),
                    ..CreateDatasetRequest::default()
                },
            )
        };
        // The key reaches ingest's cache through the `tm_auth` watch, shortly after it is minted.
        let mut attempts = 0;
        let dataset = loop {
            match self.ingest.clone().create_dataset(create()).await {
                Ok(dataset) => break dataset.into_inner(),
                Err(status) if status.code() == Code::Unauthenticated && attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("create dataset: {status:?}"),
            }
        };
        dataset.name
    }

    /// Creates a dataset of `tenant` and uploads `csv` to it; returns its name.
    async fn upload(&self, tenant: &str, csv: Vec<u8>) -> String {
        let name = self.create(tenant).await;
        let messages = vec![
            UploadDatasetRequest {
                payload: Some(Payload::Metadata(UploadMetadata {
                    dataset: name.clone(),
                    format: DatasetFormat::Csv.into(),
                    filename: "iris.csv".to_owned(),
                    id_column: "row_id".to_owned(),
                    ..UploadMetadata::default()
                })),
            },
            UploadDatasetRequest {
                payload: Some(Payload::Chunk(csv)),
            },
        ];
        self.ingest
            .clone()
            .upload_dataset(with_key(&self.bearer, futures::stream::iter(messages)))
            .await
            .unwrap();
        name
    }

    async fn start_job(&self, dataset: &str, label: &str) -> Job {
        self.analysis
            .clone()
            .start_analysis(StartAnalysisRequest {
                dataset: dataset.to_owned(),
                label_column: label.to_owned(),
                task_type: TaskType::Classification.into(),
                ..StartAnalysisRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Watches `job` until `done` holds for an update; panics if the stream ends first.
    async fn watch_until(&self, job: &str, done: impl Fn(&Job) -> bool) -> Job {
        let mut stream = self
            .analysis
            .clone()
            .watch_job(WatchJobRequest {
                name: job.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        tokio::time::timeout(Duration::from_secs(120), async {
            let mut last = None;
            while let Some(update) = stream.message().await.unwrap() {
                if done(&update) {
                    return update;
                }
                last = Some(update);
            }
            panic!("the watch ended before the condition held; last update: {last:?}");
        })
        .await
        .expect("the job did not get there in time")
    }

    async fn get(&self, job: &str) -> Job {
        self.analysis
            .clone()
            .get_job(GetJobRequest {
                name: job.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
    }
}

fn iris() -> Vec<u8> {
    std::fs::read(IRIS).unwrap()
}

fn is_terminal(job: &Job) -> bool {
    matches!(
        job.state(),
        JobState::Succeeded | JobState::Failed | JobState::Cancelled
    )
}

#[tokio::test]
async fn an_analysis_stores_encrypted_model_outputs_and_succeeds_on_scores_ready() {
    let mesh = Mesh::start().await;
    let dataset = mesh.upload("acme", iris()).await;
    let job = mesh.start_job(&dataset, "label").await;
    assert_eq!(job.state(), JobState::Queued);
    assert_eq!(job.target, dataset);

    let waiting = mesh
        .watch_until(&job.name, |j| j.step == "detect-issues" || is_terminal(j))
        .await;
    assert_eq!(waiting.state(), JobState::Running, "{waiting:?}");
    assert_eq!((waiting.step_index, waiting.step_count), (5, 5));
    assert!(waiting.start_time.is_some());

    let mut stream = mesh
        .analysis
        .clone()
        .get_model_outputs(GetModelOutputsRequest {
            name: job.name.clone(),
            batch_rows: 64,
            ..GetModelOutputsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(OutputsPayload::Header(header)) = stream.message().await.unwrap().unwrap().payload
    else {
        panic!("the first message is the header");
    };
    assert_eq!(header.class_names, ["class_0", "class_1", "class_2"]);
    assert_eq!((header.row_count, header.embedding_dim), (150, 4));
    let metrics = header.metrics.unwrap();
    assert_eq!(metrics.cv_folds, 5);
    assert!(metrics.accuracy.unwrap() > 0.7, "{metrics:?}");
    // AutoML's whole suite (150 rows), ensembled, with each model's quality and weight.
    assert_eq!(metrics.model_family, "ensemble");
    let summary = header.model_summary.expect("the models' summary");
    assert_eq!((summary.cv_folds, summary.row_count), (5, 150));
    let models: Vec<&str> = summary.models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(
        models,
        ["logistic_regression", "gradient_boosted_trees", "knn"]
    );
    let weights: f64 = summary.models.iter().map(|m| m.weight).sum();
    assert!((weights - 1.0).abs() < 1e-6, "{summary:?}");
    for model in &summary.models {
        assert!(model.accuracy.unwrap() > 0.7, "{model:?}");
        assert!(model.log_loss.unwrap() > 0.0, "{model:?}");
    }
    let ensemble = summary.ensemble.expect("the ensemble's quality");
    assert_eq!(ensemble.accuracy, metrics.accuracy);
    let classes: Vec<&str> = ensemble
        .per_class
        .iter()
        .map(|c| c.class_name.as_str())
        .collect();
    assert_eq!(classes, ["class_0", "class_1", "class_2"]);
    let support: u64 = ensemble.per_class.iter().map(|c| c.support).sum();
    assert_eq!(support, 150, "every row's given label");
    assert!(
        ensemble.per_class.iter().all(|c| c.f1 > 0.5),
        "{ensemble:?}"
    );
    let id = summary.columns.iter().find(|c| c.column == "row_id");
    assert_eq!(id.map(|c| c.role.as_str()), Some("id"), "never a feature");
    let (mut probs, mut labels, mut row_ids, mut batches) = (Vec::new(), Vec::new(), Vec::new(), 0);
    while let Some(message) = stream.message().await.unwrap() {
        let Some(OutputsPayload::Batch(batch)) = message.payload else {
            panic!("batches follow the header")
        };
        assert_eq!(batch.start_row, labels.len() as u64);
        probs.extend(batch.pred_probs);
        labels.extend(batch.labels);
        row_ids.extend(batch.row_ids);
        batches += 1;
    }
    assert_eq!((batches, labels.len(), probs.len()), (3, 150, 450));
    // The fixture's `row_id` column counts the rows from 0.
    let expected_ids: Vec<String> = (0..150).map(|i: u32| i.to_string()).collect();
    assert_eq!(row_ids, expected_ids, "each row's id column value");
    for row in probs.chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-3);
    }
    let agree = labels
        .iter()
        .zip(probs.chunks(3))
        .filter(|(l, p)| {
            let best = (0..3).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap();
            usize::try_from(**l).unwrap() == best
        })
        .count();
    assert!(
        agree > 100,
        "out-of-sample predictions mostly agree with iris' labels: {agree}"
    );

    // The class names are customer content: only ciphertext in the object directory.
    for entry in std::fs::read_dir(mesh.dir.path().join("analysis-objects"))
        .unwrap()
        .flatten()
    {
        assert_no_plaintext(&entry.path(), b"class_1");
    }

    // A redelivered request for a job whose outputs are stored changes nothing.
    let publisher = Publisher::new(mesh.nats.jetstream().await);
    let tenant = TenantId::parse("acme").unwrap();
    let again = AnalysisRequested {
        job: job.name.clone(),
        dataset: dataset.clone(),
        ..AnalysisRequested::default()
    };
    let subject = Subject::analysis_requested(&tenant);
    publisher
        .publish(&subject, &again, &msg_id(&subject, Uuid::now_v7()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mesh.get(&job.name).await.update_time, waiting.update_time);

    // scores.ready from trust-scoring completes the job.
    let report = format!(
        "tenants/acme/reports/{}",
        job.name.rsplit('/').next().unwrap()
    );
    let ready = ScoresReady {
        job: job.name.clone(),
        dataset,
        report: report.clone(),
        row_count: 150,
        ..ScoresReady::default()
    };
    let subject = Subject::scores_ready(&tenant);
    publisher
        .publish(&subject, &ready, &msg_id(&subject, Uuid::now_v7()))
        .await
        .unwrap();
    let done = mesh.watch_until(&job.name, is_terminal).await;
    assert_eq!(done.state(), JobState::Succeeded);
    assert_eq!(
        (done.output.as_str(), done.progress),
        (report.as_str(), 1.0)
    );
    assert!(done.end_time.is_some());
}

/// `n` rows whose label only shows in a categorical and a text column (the numeric `noise` is
/// random): the old numeric-only featurization had nothing to learn from.
/// Every committed change of a job is announced on the Postgres channel the replicas listen on, so
/// `WatchJob` streams wake on changes instead of polling; the payload is the job's id only.
#[tokio::test]
async fn every_change_of_a_job_is_announced_to_the_watchers() {
    let mesh = Mesh::start().await;
    let mut listener = sqlx::postgres::PgListener::connect(mesh.db.url())
        .await
        .unwrap();
    listener.listen("analysis_job_changed").await.unwrap();
    let dataset = mesh.upload("acme", iris()).await;
    let job = mesh.start_job(&dataset, "label").await;
    let id = job.name.rsplit('/').next().unwrap().to_owned();

    // Its insert and its updates up to the step that waits for scores, each announced.
    let waiting = mesh
        .watch_until(&job.name, |j| j.step == "detect-issues" || is_terminal(j))
        .await;
    assert_eq!(waiting.state(), JobState::Running, "{waiting:?}");
    let mut announced = 0;
    while let Ok(Ok(Some(notification))) =
        tokio::time::timeout(Duration::from_secs(2), listener.try_recv()).await
    {
        assert_eq!(notification.payload(), id);
        announced += 1;
    }
    assert!(announced >= 3, "{announced} changes announced");
}

fn colours_and_notes(n: usize) -> Vec<u8> {
    let mut csv = "row_id,colour,note,noise,label\n".to_owned();
    let words = [
        ["crisp", "apple", "orchard"],
        ["sour", "lemon", "grove"],
        ["sweet", "grape", "vineyard"],
    ];
    for i in 0..n {
        let class = i % 3;
        let colour = ["red", "yellow", "purple"][class];
        let [a, b, c] = words[class];
        let noise = (i * 7919) % 101;
        csv.push_str(&format!(
            "r{i},{colour},a {a} {b} from the {c} number {i},{noise},fruit_{class}\n"
        ));
    }
    csv.into_bytes()
}

#[tokio::test]
async fn an_analysis_learns_from_every_column_by_its_role_with_the_roles_given() {
    let mesh = Mesh::start().await;
    let dataset = mesh.upload("acme", colours_and_notes(90)).await;
    let job = mesh
        .analysis
        .clone()
        .start_analysis(StartAnalysisRequest {
            dataset: dataset.clone(),
            label_column: "label".to_owned(),
            task_type: TaskType::Classification.into(),
            column_overrides: vec![ColumnOverride {
                column: "noise".to_owned(),
                role: trustmesh_proto::v1::ColumnRole::Ignored.into(),
                ..ColumnOverride::default()
            }],
            ..StartAnalysisRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let waiting = mesh
        .watch_until(&job.name, |j| j.step == "detect-issues" || is_terminal(j))
        .await;
    assert_eq!(waiting.state(), JobState::Running, "{waiting:?}");
    let mut stream = mesh
        .analysis
        .clone()
        .get_model_outputs(GetModelOutputsRequest {
            name: job.name.clone(),
            ..GetModelOutputsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(OutputsPayload::Header(header)) = stream.message().await.unwrap().unwrap().payload
    else {
        panic!("the first message is the header");
    };
    assert_eq!(header.class_names, ["fruit_0", "fruit_1", "fruit_2"]);
    // Without numeric features, the detectors get the models' dense features.
    assert!(header.embedding_dim > 0, "{header:?}");
    let summary = header.model_summary.expect("the models' summary");
    let roles: Vec<(&str, &str, &str)> = summary
        .columns
        .iter()
        .map(|c| (c.column.as_str(), c.role.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            ("row_id", "id", "given as an id column"),
            ("colour", "categorical", "strings"),
            ("note", "text", "free text"),
            ("noise", "ignored", "given"),
        ]
    );
    assert!(
        summary.sparse_features > 0,
        "the notes' TF-IDF: {summary:?}"
    );
    let ensemble = summary.ensemble.expect("the ensemble's quality");
    assert!(ensemble.accuracy.unwrap() > 0.95, "{ensemble:?}");
}

fn assert_no_plaintext(path: &std::path::Path, needle: &[u8]) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            assert_no_plaintext(&entry.path(), needle);
        }
    } else {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "plaintext in {}",
            path.display()
        );
    }
}

/// The `analysis.requested` events in TM_ANALYSIS for `dataset` of `tenant`, once there are at
/// least `n` (or 20 s).
async fn requested_events(
    nats: &NatsServer,
    tenant: &str,
    dataset: &str,
    n: usize,
) -> Vec<AnalysisRequested> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use futures::StreamExt as _;
    let js = nats.jetstream().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stream = js.get_stream("TM_ANALYSIS").await.unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subject: format!("tm.{tenant}.analysis.requested"),
                ack_policy: AckPolicy::None,
                deliver_policy: DeliverPolicy::All,
                ..pull::Config::default()
            })
            .await
            .unwrap();
        let mut batch = consumer
            .fetch()
            .max_messages(10_000)
            .messages()
            .await
            .unwrap();
        let mut events = Vec::new();
        while let Some(message) = batch.next().await {
            let event = AnalysisRequested::decode(message.unwrap().payload.as_ref()).unwrap();
            if event.dataset == dataset {
                events.push(event);
            }
        }
        if events.len() >= n || tokio::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn analyses_of_a_missing_dataset_or_column_are_refused_up_front_and_leave_nothing() {
    let mesh = Mesh::start().await;
    let mut client = mesh.analysis.clone();
    let start = |dataset: &str, label: &str| StartAnalysisRequest {
        dataset: dataset.to_owned(),
        label_column: label.to_owned(),
        task_type: TaskType::Classification.into(),
        ..StartAnalysisRequest::default()
    };

    // A dataset that does not exist.
    let missing = format!("tenants/acme/datasets/{}", Uuid::now_v7());
    let status = client
        .start_analysis(start(&missing, "label"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains(&missing), "{status:?}");

    // A dataset not READY (created, never uploaded).
    let created = mesh.create("acme").await;
    let status = client
        .start_analysis(start(&created, "label"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("DATASET_STATE_AWAITING_UPLOAD"),
        "{status:?}"
    );

    // A label column the dataset lacks: named, with the dataset's columns.
    let dataset = mesh.upload("acme", iris()).await;
    let status = client
        .start_analysis(start(&dataset, "no_such_column"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("\"no_such_column\""),
        "{status:?}"
    );
    assert!(status.message().contains("label"), "{status:?}");
    // ... and a column override naming a column the dataset lacks.
    let mut request = start(&dataset, "label");
    request.column_overrides = vec![ColumnOverride {
        column: "no_such_override".into(),
        ..ColumnOverride::default()
    }];
    let status = client.start_analysis(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("\"no_such_override\""),
        "{status:?}"
    );

    // Nothing was stored for the refused requests: no job ...
    for name in [&missing, &created, &dataset] {
        let listed = client
            .list_jobs(ListJobsRequest {
                parent: "tenants/acme".into(),
                dataset: name.clone(),
                ..ListJobsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(listed.jobs.is_empty(), "{listed:?}");
    }
    // ... and no `analysis.requested`: once a valid request's event is on the stream, it is the
    // only one of the dataset.
    let bad_column = "bad_column_canary";
    client
        .start_analysis(start(&dataset, bad_column))
        .await
        .unwrap_err();
    let job = mesh.start_job(&dataset, "label").await;
    let requested = requested_events(&mesh.nats, "acme", &dataset, 1).await;
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert_eq!(requested[0].job, job.name);
    for name in [&missing, &created] {
        assert!(
            requested_events(&mesh.nats, "acme", name, 0)
                .await
                .is_empty()
        );
    }
    // The refusals are audited without the column's name (customer content).
    let mut refused: Vec<AuditEvent> = Vec::new();
    for _ in 0..100 {
        refused = audit_events(&mesh.nats, "acme", 0)
            .await
            .into_iter()
            .filter(|e| e.action == "analysis.start" && e.outcome() == Outcome::Error)
            .collect();
        if refused.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused.len(), 5, "{refused:?}");
    for event in &refused {
        let bytes = event.encode_to_vec();
        assert!(
            !bytes
                .windows(bad_column.len())
                .any(|w| w == bad_column.as_bytes()),
            "{event:?}"
        );
    }

    // Bad requests are refused up front.
    let no_task = StartAnalysisRequest {
        dataset: dataset.clone(),
        label_column: "label".into(),
        ..StartAnalysisRequest::default()
    };
    assert_eq!(
        client.start_analysis(no_task).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let no_label = StartAnalysisRequest {
        dataset: dataset.clone(),
        task_type: TaskType::Classification.into(),
        ..StartAnalysisRequest::default()
    };
    assert_eq!(
        client.start_analysis(no_label).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // A second job, cancelled: finished jobs cannot be cancelled again.
    let job = mesh.start_job(&dataset, "label").await;
    let cancelled = client
        .cancel_job(CancelJobRequest {
            name: job.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), JobState::Cancelled);

    // Finished jobs cannot be cancelled; jobs list newest first, paged.
    let cancel = client
        .cancel_job(CancelJobRequest {
            name: job.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(cancel.code(), Code::FailedPrecondition);
    let first = client
        .list_jobs(ListJobsRequest {
            parent: "tenants/acme".into(),
            page_size: 1,
            ..ListJobsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.jobs.len(), 1);
    assert_eq!(first.jobs[0].name, job.name);
    let second = client
        .list_jobs(ListJobsRequest {
            parent: "tenants/acme".into(),
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..ListJobsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.jobs.len(), 1);
    assert!(second.next_page_token.is_empty());
    // Another tenant's key cannot page through acme's jobs with acme's token.
    let (other, _) = mint_key(&mesh.nats, "bbb", &[Scope::AnalysisRun]).await;
    let other = connect(mesh.analysis_addr, Some(&other)).await;
    let foreign = once_known(|| {
        let mut other = other.clone();
        let page_token = first.next_page_token.clone();
        async move {
            other
                .list_jobs(ListJobsRequest {
                    parent: "tenants/bbb".into(),
                    page_token,
                    ..ListJobsRequest::default()
                })
                .await
        }
    })
    .await
    .unwrap_err();
    assert_eq!(
        foreign.code(),
        Code::InvalidArgument,
        "a page token is bound to its tenant"
    );
}

#[tokio::test]
async fn calls_without_a_key_are_unauthenticated() {
    let mesh = Mesh::start().await;
    let dataset = mesh.upload("acme", iris()).await;
    let job = mesh.start_job(&dataset, "label").await;
    let addr = mesh.analysis_addr;
    let mut anonymous = connect(addr, None).await;
    let start = anonymous
        .start_analysis(StartAnalysisRequest {
            dataset: job.target.clone(),
            label_column: "label".into(),
            task_type: TaskType::Classification.into(),
            ..StartAnalysisRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(start.code(), Code::Unauthenticated, "{start:?}");
    let get = anonymous
        .get_job(GetJobRequest {
            name: job.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::Unauthenticated, "{get:?}");
    let outputs = anonymous
        .get_model_outputs(GetModelOutputsRequest {
            name: job.name.clone(),
            ..GetModelOutputsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(outputs.code(), Code::Unauthenticated, "{outputs:?}");
    let mut forged = connect(addr, Some("Bearer tmk_not_a_key")).await;
    let list = forged
        .list_jobs(ListJobsRequest {
            parent: "tenants/acme".into(),
            ..ListJobsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::Unauthenticated, "{list:?}");
}

#[tokio::test]
async fn another_tenants_key_gets_not_found_like_a_missing_job_and_is_audited_in_the_owners_log() {
    let mesh = Mesh::start().await;
    let dataset = mesh.upload("acme", iris()).await;
    let job = mesh.start_job(&dataset, "label").await;
    let all = [Scope::Admin];
    let (intruder, intruder_actor) = mint_key(&mesh.nats, "bbb", &all).await;
    let mut client = connect(mesh.analysis_addr, Some(&intruder)).await;
    let missing = format!("tenants/acme/jobs/{}", Uuid::now_v7());
    let mut own = mesh.analysis.clone();
    let absent = own
        .get_job(GetJobRequest {
            name: missing.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(absent.code(), Code::NotFound);

    let get = once_known(|| {
        let mut client = client.clone();
        let name = job.name.clone();
        async move { client.get_job(GetJobRequest { name }).await }
    })
    .await
    .unwrap_err();
    assert_eq!(get.code(), Code::NotFound, "{get:?}");
    // Word for word what a missing job gets.
    assert_eq!(
        get.message(),
        absent.message().replace(&missing, &job.name),
        "another tenant's job must look missing"
    );
    let cancel = client
        .cancel_job(CancelJobRequest {
            name: job.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(cancel.code(), Code::NotFound);
    let watch = client
        .watch_job(WatchJobRequest {
            name: job.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(watch.code(), Code::NotFound);
    let outputs = client
        .get_model_outputs(GetModelOutputsRequest {
            name: job.name.clone(),
            ..GetModelOutputsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(outputs.code(), Code::NotFound);
    let list = client
        .list_jobs(ListJobsRequest {
            parent: "tenants/acme".into(),
            ..ListJobsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::NotFound);
    let start = client
        .start_analysis(StartAnalysisRequest {
            dataset: dataset.clone(),
            label_column: "label".into(),
            task_type: TaskType::Classification.into(),
            ..StartAnalysisRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(start.code(), Code::NotFound);
    // Its own tenant's jobs are none.
    let listed = client
        .list_jobs(ListJobsRequest {
            parent: "tenants/bbb".into(),
            ..ListJobsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty());

    // Every attempt is in the owner's log, as DENIED, by the intruding key.
    let denied_of = |events: Vec<AuditEvent>| {
        let mut denied: Vec<String> = events
            .into_iter()
            .filter(|e| e.outcome() == Outcome::Denied)
            .map(|e| {
                assert_eq!(e.actor_type(), ActorType::ApiKey);
                assert_eq!(e.actor_id, intruder_actor);
                assert_eq!(e.grpc_code, Code::NotFound as i32);
                assert_eq!(e.reason, "OTHER_TENANT");
                e.action
            })
            .collect();
        denied.sort();
        denied
    };
    let mut denied = Vec::new();
    for _ in 0..100 {
        denied = denied_of(audit_events(&mesh.nats, "acme", 0).await);
        if denied.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        denied,
        [
            "analysis.start",
            "jobs.cancel",
            "jobs.get",
            "jobs.list",
            "jobs.outputs.read",
            "jobs.watch"
        ]
    );
    // ... and none in the intruder's, but its own listing.
    let theirs = audit_events(&mesh.nats, "bbb", 1).await;
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0].action, "jobs.list");
    assert_eq!(theirs[0].actor_id, intruder_actor);
    // The owner's own calls are audited as the owner's key.
    let owner = audit_events(&mesh.nats, "acme", 1).await;
    assert!(
        owner
            .iter()
            .filter(|e| e.outcome() != Outcome::Denied && e.action != "analysis.run")
            .all(|e| e.actor_type() == ActorType::ApiKey
                && e.actor_id.starts_with("tenants/acme/apiKeys/"))
    );
}

#[tokio::test]
async fn a_key_without_the_scope_is_permission_denied_and_audited() {
    let mesh = Mesh::start().await;
    let dataset = mesh.upload("acme", iris()).await;
    let job = mesh.start_job(&dataset, "label").await;
    let addr = mesh.analysis_addr;
    let (reader, reader_actor) = mint_key(&mesh.nats, "acme", &[Scope::ReportsRead]).await;
    let (runner, runner_actor) = mint_key(&mesh.nats, "acme", &[Scope::AnalysisRun]).await;
    let mut reader = connect(addr, Some(&reader)).await;
    let mut runner = connect(addr, Some(&runner)).await;

    let start = once_known(|| {
        let mut reader = reader.clone();
        let dataset = job.target.clone();
        async move {
            reader
                .start_analysis(StartAnalysisRequest {
                    dataset,
                    label_column: "label".into(),
                    task_type: TaskType::Classification.into(),
                    ..StartAnalysisRequest::default()
                })
                .await
        }
    })
    .await
    .unwrap_err();
    assert_eq!(start.code(), Code::PermissionDenied, "{start:?}");
    let get = reader
        .get_job(GetJobRequest {
            name: job.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::PermissionDenied, "{get:?}");
    let outputs = once_known(|| {
        let mut runner = runner.clone();
        let name = job.name.clone();
        async move {
            runner
                .get_model_outputs(GetModelOutputsRequest {
                    name,
                    ..GetModelOutputsRequest::default()
                })
                .await
        }
    })
    .await
    .unwrap_err();
    assert_eq!(outputs.code(), Code::PermissionDenied, "{outputs:?}");
    // The runner may watch its analyses.
    let seen = runner
        .get_job(GetJobRequest {
            name: job.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.name, job.name);

    let mut denied = Vec::new();
    for _ in 0..100 {
        denied = audit_events(&mesh.nats, "acme", 0)
            .await
            .into_iter()
            .filter(|e| e.outcome() == Outcome::Denied)
            .map(|e| {
                assert_eq!(e.grpc_code, Code::PermissionDenied as i32);
                assert_eq!(e.reason, "MISSING_SCOPE");
                (e.action, e.actor_id)
            })
            .collect::<Vec<_>>();
        if denied.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    denied.sort();
    assert_eq!(
        denied,
        [
            ("analysis.start".to_owned(), reader_actor.clone()),
            ("jobs.get".to_owned(), reader_actor),
            ("jobs.outputs.read".to_owned(), runner_actor),
        ]
    );
}

#[tokio::test]
async fn the_service_credential_reads_model_outputs_only() {
    let mesh = Mesh::start().await;
    let dataset = mesh.upload("acme", iris()).await;
    let job = mesh.start_job(&dataset, "label").await;
    let stored = mesh
        .watch_until(&job.name, |j| j.step == "detect-issues" || is_terminal(j))
        .await;
    assert_eq!(stored.state(), JobState::Running, "{stored:?}");
    let mut service = connect(
        mesh.analysis_addr,
        Some(&format!("Bearer {MESH_CREDENTIAL}")),
    )
    .await;

    // Least privilege: no listing or reading of jobs, only the outputs trust-scoring reads.
    let list = service
        .list_jobs(ListJobsRequest {
            parent: "tenants/acme".into(),
            ..ListJobsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::PermissionDenied, "{list:?}");
    let get = service
        .get_job(GetJobRequest {
            name: job.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::PermissionDenied, "{get:?}");
    let mut outputs = service
        .get_model_outputs(GetModelOutputsRequest {
            name: job.name.clone(),
            batch_rows: 64,
            ..GetModelOutputsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(OutputsPayload::Header(header)) = outputs.message().await.unwrap().unwrap().payload
    else {
        panic!("the first message is the header");
    };
    assert_eq!(header.row_count, 150);

    // Audited in the tenant's log as the service.
    let mut read = None;
    for _ in 0..100 {
        read = audit_events(&mesh.nats, "acme", 0)
            .await
            .into_iter()
            .find(|e| e.action == "jobs.outputs.read" && e.outcome() == Outcome::Allowed);
        if read.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = read.expect("the service's read is audited");
    assert_eq!(read.actor_type(), ActorType::Service);
    assert_eq!(read.actor_id, "service");
}

#[tokio::test]
async fn a_job_cut_off_by_a_crash_completes_after_a_restart() {
    let mut mesh = Mesh::start().await;
    let dataset = mesh.upload("acme", iris()).await;
    // Stop the whole mesh's analysis at once (abort = crash: no graceful nak), with the job queued.
    mesh.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shutdown = CancellationToken::new();
    mesh.shutdown = shutdown.clone();
    let ingest_settings = {
        let mut s = trustmesh_ingest::Settings {
            grpc: GrpcSettings::dev_plaintext_loopback(),
            admin: trustmesh_runtime::AdminSettings::any_loopback_port(),
            objects: trustmesh_ingest::settings::ObjectStoreSettings::Local {
                dir: mesh.dir.path().join("ingest-objects"),
            },
            mesh: mesh_settings(),
            ..trustmesh_ingest::Settings::default()
        };
        s.database.url = mesh.db.url().to_owned().into();
        s.nats.url = mesh.nats.url();
        s.keys.kek_file = mesh.dir.path().join("ingest.kek");
        s
    };
    let ingest_app = trustmesh_ingest::Application::build(ingest_settings)
        .await
        .unwrap();
    let ingest_addr = ingest_app.grpc_addr();
    tokio::spawn(ingest_app.run_until_stopped(shutdown.child_token()));
    let build = || {
        trustmesh_analysis::Application::build(analysis_settings(
            mesh.dir.path(),
            &mesh.db,
            &mesh.nats,
            ingest_addr,
        ))
    };
    let first = build().await.unwrap();
    let addr = first.grpc_addr();
    let crashed = tokio::spawn(first.run_until_stopped(CancellationToken::new()));
    let mut client = connect(addr, Some(&mesh.bearer)).await;
    let job = client
        .start_analysis(StartAnalysisRequest {
            dataset,
            label_column: "label".into(),
            task_type: TaskType::Classification.into(),
            ..StartAnalysisRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Crash as soon as the job is picked up.
    let mut watch = client
        .watch_job(WatchJobRequest {
            name: job.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(update) = watch.message().await.unwrap() {
        if update.state() != JobState::Queued {
            break;
        }
    }
    crashed.abort();
    let _ = crashed.await;

    let second = build().await.unwrap();
    mesh.analysis = connect(second.grpc_addr(), Some(&mesh.bearer)).await;
    mesh.ingest_addr = ingest_addr;
    mesh.analysis_addr = second.grpc_addr();
    tokio::spawn(second.run_until_stopped(shutdown.child_token()));
    let resumed = mesh
        .watch_until(&job.name, |j| j.step == "detect-issues" || is_terminal(j))
        .await;
    assert_eq!(resumed.state(), JobState::Running, "{resumed:?}");
    assert_eq!(resumed.step, "detect-issues");
}
