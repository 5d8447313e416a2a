//! How analysis replicas share the work, against real servers (nats-server, Postgres, local object
//! directories, ingest in-process): a large job's folds as `analysis.fold.requested` work items
//! trained by two replicas; tenants taking turns for a replica's training slot; a dedicated replica
//! taking only its tenant's jobs, into its own database and bucket, and its tenant's completions
//! and deletions, which the shared replica leaves to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};
use trustmesh_auth::Scope;
use trustmesh_bus::Publisher;
use trustmesh_events::{Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{
    AuditEvent, DeletionReceipt, DeletionRequested, DeletionScope, ScoresReady,
};
use trustmesh_proto::v1::analysis_service_client::AnalysisServiceClient;
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::get_model_outputs_response::Payload as OutputsPayload;
use trustmesh_proto::v1::upload_dataset_request::Payload;
use trustmesh_proto::v1::{
    CreateDatasetRequest, DatasetFormat, GetJobRequest, GetModelOutputsRequest, Job, JobState,
    StartAnalysisRequest, TaskType, UploadDatasetRequest, UploadMetadata,
};
use trustmesh_runtime::settings::common::MeshSettings;
use trustmesh_runtime::{ClientTls, GrpcSettings};
use trustmesh_testkit::data::synthetic_csv;
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;

const IRIS: &str = "/work/shared/fixtures/cleanlab-reference/iris_10s.dataset.csv";
const MESH_CREDENTIAL: &str = "test-mesh-service-credential-0123456789";
/// The step a job is at once its outputs are stored (trust-scoring, absent here, goes on).
const DETECT_ISSUES: &str = "detect-issues";

fn mesh_settings() -> MeshSettings {
    MeshSettings {
        service_credential: Some(MESH_CREDENTIAL.to_owned().into()),
    }
}

/// `Bearer <key>` of a fresh API key of `tenant` that may upload datasets and run analyses.
async fn mint(nats: &NatsServer, tenant: &str) -> String {
    use trustmesh_auth::{AuthBucket, IssuedKey, KeyRecord};
    use trustmesh_runtime::ExposeSecret as _;
    let bucket = AuthBucket::open(&nats.jetstream().await, 1).await.unwrap();
    let issued = IssuedKey::generate();
    let record = KeyRecord {
        key_id: issued.key_id().clone(),
        tenant: tenant.to_owned(),
        scopes: [
            Scope::DatasetsRead,
            Scope::DatasetsWrite,
            Scope::AnalysisRun,
            Scope::ReportsRead,
        ]
        .into_iter()
        .collect(),
        expires_at: (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).unix_timestamp(),
        revoked: false,
        digest: issued.digest().clone(),
    };
    bucket.put(&record).await.unwrap();
    format!("Bearer {}", issued.token().expose_secret())
}

fn with_key<T>(bearer: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    request
}

/// nats-server, a database, ingest, and analysis replicas added with [`Mesh::replica`].
struct Mesh {
    nats: NatsServer,
    db: TestDatabase,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    ingest_addr: SocketAddr,
    ingest: DatasetServiceClient<Channel>,
    /// The first shared replica's gRPC address.
    analysis: Option<SocketAddr>,
    /// Each dedicated replica's tenant: its database and gRPC address.
    dedicated: HashMap<String, (TestDatabase, SocketAddr)>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Mesh {
    async fn start() -> Self {
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let mut settings = trustmesh_ingest::Settings {
            grpc: GrpcSettings::dev_plaintext_loopback(),
            admin: trustmesh_runtime::AdminSettings::any_loopback_port(),
            objects: trustmesh_ingest::settings::ObjectStoreSettings::Local {
                dir: dir.path().join("ingest-objects"),
            },
            mesh: mesh_settings(),
            ..trustmesh_ingest::Settings::default()
        };
        settings.database.url = db.url().to_owned().into();
        settings.nats.url = nats.url();
        settings.keys.kek_file = dir.path().join("ingest.kek");
        let app = trustmesh_ingest::Application::build(settings)
            .await
            .unwrap();
        let ingest_addr = app.grpc_addr();
        tokio::spawn(app.run_until_stopped(shutdown.child_token()));
        let ingest = DatasetServiceClient::connect(format!("http://{ingest_addr}"))
            .await
            .unwrap();
        Self {
            nats,
            db,
            dir,
            shutdown,
            ingest_addr,
            ingest,
            analysis: None,
            dedicated: HashMap::new(),
        }
    }

    /// Starts an analysis replica with `work` settings, its objects in `objects` under the mesh's
    /// directory (replicas of one deployment share it; a dedicated deployment has its own). A
    /// dedicated replica (`work.dedicated_tenant`) gets a database of its own, and its tenant's calls
    /// go to it ([`Mesh::client`]), as an ingress routing the tenant's host would send them.
    async fn replica(&mut self, objects: &str, work: trustmesh_analysis::settings::WorkSettings) {
        use trustmesh_analysis::settings::{ObjectStoreSettings, PeerSettings};
        let dedicated = work.dedicated_tenant.clone();
        let own_db = match &dedicated {
            Some(_) => Some(TestDatabase::create().await),
            None => None,
        };
        let database_url = own_db.as_ref().unwrap_or(&self.db).url().to_owned();
        let mut settings = trustmesh_analysis::Settings {
            grpc: GrpcSettings::dev_plaintext_loopback(),
            admin: trustmesh_runtime::AdminSettings::any_loopback_port(),
            objects: ObjectStoreSettings::Local {
                dir: self.dir.path().join(objects),
            },
            ingest: PeerSettings {
                endpoint: format!("http://{}", self.ingest_addr),
                tls: ClientTls::dev_plaintext_loopback(),
            },
            mesh: mesh_settings(),
            work,
            ..trustmesh_analysis::Settings::default()
        };
        settings.database.url = database_url.into();
        settings.nats.url = self.nats.url();
        // One key file for the mesh's shared replicas: any of them opens what another sealed. A
        // dedicated deployment has its own.
        let kek = match &dedicated {
            Some(tenant) => format!("analysis-{tenant}.kek"),
            None => "analysis.kek".to_owned(),
        };
        settings.keys.kek_file = self.dir.path().join(kek);
        let app = trustmesh_analysis::Application::build(settings)
            .await
            .unwrap();
        match (dedicated, own_db) {
            (Some(tenant), Some(db)) => {
                self.dedicated.insert(tenant, (db, app.grpc_addr()));
            }
            _ => {
                self.analysis.get_or_insert(app.grpc_addr());
            }
        }
        tokio::spawn(app.run_until_stopped(self.shutdown.child_token()));
    }

    /// The analysis client for `resource` (`tenants/{tenant}/...`): its tenant's dedicated replica
    /// if it has one, else the first shared replica.
    async fn client(&self, resource: &str) -> AnalysisServiceClient<Channel> {
        let tenant = resource
            .strip_prefix("tenants/")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        let addr = match self.dedicated.get(tenant) {
            Some((_, addr)) => *addr,
            None => self.analysis.unwrap(),
        };
        Self::client_at(addr).await
    }

    async fn client_at(addr: SocketAddr) -> AnalysisServiceClient<Channel> {
        AnalysisServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
    }

    /// The database of `tenant`'s dedicated replica.
    fn dedicated_db(&self, tenant: &str) -> &TestDatabase {
        &self.dedicated[tenant].0
    }

    /// Creates a dataset of `tenant` with `csv`; returns its name.
    async fn upload(&self, bearer: &str, tenant: &str, csv: Vec<u8>) -> String {
        let create = || {
            with_key(
                bearer,
                CreateDatasetRequest {
                    parent: format!("tenants/{tenant}"),
                    display_name: "data".to_owned(),
                    ..CreateDatasetRequest::default()
                },
            )
        };
        let mut attempts = 0;
        let name = loop {
            match self.ingest.clone().create_dataset(create()).await {
                Ok(dataset) => break dataset.into_inner().name,
                Err(status) if status.code() == Code::Unauthenticated && attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("create dataset: {status:?}"),
            }
        };
        let messages = vec![
            UploadDatasetRequest {
                payload: Some(Payload::Metadata(UploadMetadata {
                    dataset: name.clone(),
                    format: DatasetFormat::Csv.into(),
                    filename: "data.csv".to_owned(),
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
            .upload_dataset(with_key(bearer, futures::stream::iter(messages)))
            .await
            .unwrap();
        name
    }

    async fn start_job(&self, bearer: &str, dataset: &str) -> String {
        let mut client = self.client(dataset).await;
        let mut attempts = 0;
        loop {
            let request = with_key(
                bearer,
                StartAnalysisRequest {
                    dataset: dataset.to_owned(),
                    label_column: "label".to_owned(),
                    task_type: TaskType::Classification.into(),
                    ..StartAnalysisRequest::default()
                },
            );
            match client.start_analysis(request).await {
                Ok(job) => return job.into_inner().name,
                Err(status) if status.code() == Code::Unauthenticated && attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("start analysis: {status:?}"),
            }
        }
    }

    async fn get(&self, bearer: &str, job: &str) -> Job {
        self.client(job)
            .await
            .get_job(with_key(
                bearer,
                GetJobRequest {
                    name: job.to_owned(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits (up to `timeout`) until `job`'s outputs are stored.
    async fn until_outputs(&self, bearer: &str, job: &str, timeout: Duration) -> Job {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.get(bearer, job).await;
            assert!(now.error.is_none(), "{now:?}");
            if now.step == DETECT_ISSUES {
                return now;
            }
            assert!(Instant::now() < deadline, "no outputs in time: {now:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every message of `stream` on `filter` so far, decoded.
    async fn messages<M: prost::Message + Default>(&self, stream: &str, filter: String) -> Vec<M> {
        use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
        use futures::StreamExt as _;
        let js = self.nats.jetstream().await;
        let stream = js.get_stream(stream).await.unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subject: filter,
                ack_policy: AckPolicy::None,
                deliver_policy: DeliverPolicy::All,
                ..pull::Config::default()
            })
            .await
            .unwrap();
        let mut batch = consumer
            .fetch()
            .max_messages(10_000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(M::decode(message.unwrap().payload.as_ref()).unwrap());
        }
        messages
    }

    /// The actions analysis recorded in `tenant`'s audit log.
    async fn audit_actions(&self, tenant: &str) -> Vec<String> {
        self.messages::<AuditEvent>("TM_AUDIT", format!("tm.{tenant}.audit.analysis"))
            .await
            .into_iter()
            .map(|event| event.action)
            .collect()
    }

    /// Requests a deletion of `target` (`scope`) of `vip` as the deletion service does, and waits
    /// for analysis's receipt. Checks that it is the only analysis receipt: the shared replica
    /// acknowledged the request without acting on it (nothing recorded as processed in the shared
    /// database), vip's replica answered.
    async fn analysis_deletion(
        &self,
        publisher: &Publisher,
        scope: DeletionScope,
        target: &str,
    ) -> DeletionReceipt {
        let vip = TenantId::parse("vip").unwrap();
        let deletion = format!("tenants/vip/deletions/{}", uuid::Uuid::now_v7());
        let request = DeletionRequested {
            deletion: deletion.clone(),
            scope: scope.into(),
            target: target.to_owned(),
            ..DeletionRequested::default()
        };
        let subject = Subject::deletion_requested(&vip);
        publisher
            .publish(&subject, &request, &msg_id(&subject, uuid::Uuid::now_v7()))
            .await
            .unwrap();
        let analysis = |receipts: Vec<DeletionReceipt>| -> Vec<DeletionReceipt> {
            receipts
                .into_iter()
                .filter(|r| r.deletion == deletion && r.service == "analysis")
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while analysis(
            self.messages("TM_DELETION", "tm.vip.deletion.receipt".to_owned())
                .await,
        )
        .is_empty()
        {
            assert!(Instant::now() < deadline, "no receipt for {deletion}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.until_acked("TM_DELETION", "analysis-deletion").await;
        self.until_acked("TM_DELETION", "analysis-deletion-vip")
            .await;
        let processed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM analysis.processed_messages WHERE msg_id = $1",
        )
        .bind(&deletion)
        .fetch_one(self.db.pool())
        .await
        .unwrap();
        assert_eq!(processed, 0, "the shared replica handled vip's deletion");
        let mut receipts = analysis(
            self.messages("TM_DELETION", "tm.vip.deletion.receipt".to_owned())
                .await,
        );
        assert_eq!(receipts.len(), 1, "{receipts:?}");
        receipts.remove(0)
    }

    /// Waits until durable `durable` of `stream` has acknowledged everything it was delivered.
    async fn until_acked(&self, stream: &str, durable: &str) {
        use async_nats::jetstream::consumer::PullConsumer;
        let js = self.nats.jetstream().await;
        let mut consumer: PullConsumer = js
            .get_stream(stream)
            .await
            .unwrap()
            .get_consumer(durable)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = consumer.info().await.unwrap().clone();
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{durable} still holds {info:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn work(fanout: usize) -> trustmesh_analysis::settings::WorkSettings {
    trustmesh_analysis::settings::WorkSettings {
        fold_fanout_min_rows: fanout,
        ..trustmesh_analysis::settings::WorkSettings::default()
    }
}

/// Files under `dir` (recursively) whose path contains `part`.
fn files_with(dir: &Path, part: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|path| {
            if path.is_dir() {
                files_with(&path, part)
            } else {
                usize::from(path.to_string_lossy().contains(part))
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_jobs_folds_are_work_items_of_both_replicas_and_ensemble_as_in_one_process() {
    let mut mesh = Mesh::start().await;
    // Iris (150 rows) counts as large here: its 5 folds go out as work items.
    mesh.replica("analysis-objects", work(100)).await;
    mesh.replica("analysis-objects", work(100)).await;
    let bearer = mint(&mesh.nats, "acme").await;
    let dataset = mesh
        .upload(&bearer, "acme", std::fs::read(IRIS).unwrap())
        .await;
    let job = mesh.start_job(&bearer, &dataset).await;
    mesh.until_outputs(&bearer, &job, Duration::from_secs(120))
        .await;

    let mut stream = mesh
        .client(&job)
        .await
        .get_model_outputs(with_key(
            &bearer,
            GetModelOutputsRequest {
                name: job.clone(),
                ..GetModelOutputsRequest::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let Some(OutputsPayload::Header(header)) = stream.message().await.unwrap().unwrap().payload
    else {
        panic!("the first message is the header");
    };
    assert_eq!(header.row_count, 150);
    let summary = header.model_summary.expect("the models' summary");
    assert_eq!((summary.cv_folds, summary.row_count), (5, 150));
    let models: Vec<&str> = summary.models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(
        models,
        ["logistic_regression", "gradient_boosted_trees", "knn"]
    );
    assert!(header.metrics.unwrap().accuracy.unwrap() > 0.7);
    let mut probs = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(OutputsPayload::Batch(batch)) = message.payload {
            probs.extend(batch.pred_probs);
        }
    }
    assert_eq!(probs.len(), 450);
    for row in probs.chunks_exact(3) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{row:?}");
    }

    // One audit event per fold work item, besides the job's own; the folds' objects go right after
    // the outputs are recorded (the outputs are readable a moment before).
    let actions = mesh.audit_actions("acme").await;
    let folds = actions.iter().filter(|a| *a == "analysis.fold").count();
    assert_eq!(folds, 5, "{actions:?}");
    let objects = mesh.dir.path().join("analysis-objects");
    let mut left = files_with(&objects, "folds");
    for _ in 0..100 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = files_with(&objects, "folds");
    }
    assert_eq!(left, 0, "stored folds left after the outputs");
}

/// `flood_jobs` jobs of tenant `flood`, then one of tenant `quiet`, on `replicas` replicas of one
/// training slot each (every job in-process): the tenants in the order their jobs' outputs are
/// stored.
async fn flood_then_quiet(replicas: usize, flood_jobs: usize) -> Vec<&'static str> {
    let mut mesh = Mesh::start().await;
    for _ in 0..replicas {
        mesh.replica("analysis-objects", work(0)).await;
    }
    let flood = mint(&mesh.nats, "flood").await;
    let quiet = mint(&mesh.nats, "quiet").await;
    let csv = synthetic_csv(1_500, 8, 0);
    let flood_data = mesh.upload(&flood, "flood", csv.clone()).await;
    let quiet_data = mesh.upload(&quiet, "quiet", csv).await;
    let mut jobs = Vec::new();
    for _ in 0..flood_jobs {
        jobs.push(("flood", mesh.start_job(&flood, &flood_data).await));
    }
    jobs.push(("quiet", mesh.start_job(&quiet, &quiet_data).await));

    let mut order: Vec<&str> = Vec::new();
    let mut waiting = jobs.clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !waiting.is_empty() {
        assert!(Instant::now() < deadline, "{order:?}");
        let mut still = Vec::new();
        for (tenant, job) in waiting {
            let bearer = if tenant == "flood" { &flood } else { &quiet };
            let now = mesh.get(bearer, &job).await;
            assert!(now.error.is_none(), "{now:?}");
            if now.step == DETECT_ISSUES {
                order.push(tenant);
            } else {
                still.push((tenant, job));
            }
        }
        waiting = still;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_arriving_after_another_tenants_flood_is_served_next() {
    let order = flood_then_quiet(1, 5).await;
    // In arrival order the quiet tenant would be last; taking turns, it is served as soon as the
    // flood's first job (already training when it arrived) frees the slot, at worst after the
    // flood's second if that was granted before the quiet job was even pulled.
    let quiet_at = order.iter().position(|t| *t == "quiet").unwrap();
    assert!(quiet_at <= 2, "{order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_two_replicas_a_tenant_arriving_after_a_flood_waits_for_one_slot_of_its_replica() {
    let order = flood_then_quiet(2, 8).await;
    // In arrival order the quiet tenant would be 9th of 9. Whichever replica pulled its job serves
    // it when its slot frees (at worst after one more flood job granted before the pull), while
    // the other replica keeps training the flood: at most 2 flood jobs of each replica first.
    let quiet_at = order.iter().position(|t| *t == "quiet").unwrap();
    assert!(quiet_at <= 4, "{order:?}");
}

/// `tenant`'s job rows in `db`'s `analysis.jobs`.
async fn jobs_in(db: &TestDatabase, tenant: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM analysis.jobs WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// A mesh with a shared replica leaving `vip` to its dedicated replica (own database, bucket
/// `vip-objects` and key-encryption key); the shared replica's objects go to `analysis-objects`.
async fn dedicated_mesh() -> Mesh {
    let mut mesh = Mesh::start().await;
    let mut shared = work(0);
    shared.dedicated_elsewhere = vec!["vip".to_owned()];
    mesh.replica("analysis-objects", shared).await;
    let mut dedicated = work(0);
    dedicated.dedicated_tenant = Some("vip".to_owned());
    mesh.replica("vip-objects", dedicated).await;
    mesh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_replica_takes_only_its_tenants_jobs_into_its_own_database_and_bucket() {
    let mesh = dedicated_mesh().await;
    let acme = mint(&mesh.nats, "acme").await;
    let vip = mint(&mesh.nats, "vip").await;
    let iris = std::fs::read(IRIS).unwrap();
    let acme_data = mesh.upload(&acme, "acme", iris.clone()).await;
    let vip_data = mesh.upload(&vip, "vip", iris).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push((&acme, mesh.start_job(&acme, &acme_data).await));
        jobs.push((&vip, mesh.start_job(&vip, &vip_data).await));
    }
    for (bearer, job) in &jobs {
        mesh.until_outputs(bearer, job, Duration::from_secs(120))
            .await;
    }
    // Object paths name the tenant: `vip`'s outputs are all in the dedicated bucket, `acme`'s all
    // in the shared one.
    let root = mesh.dir.path();
    let (shared, own) = (root.join("analysis-objects"), root.join("vip-objects"));
    assert_eq!(files_with(&own, "vip"), 3, "each vip job's outputs");
    assert_eq!(files_with(&shared, "vip"), 0);
    assert_eq!(files_with(&shared, "acme"), 3, "each acme job's outputs");
    assert_eq!(files_with(&own, "acme"), 0);
    // Rows: `vip`'s jobs only in its replica's database, `acme`'s only in the shared one.
    let vip_db = mesh.dedicated_db("vip");
    assert_eq!(jobs_in(vip_db, "vip").await, 3);
    assert_eq!(jobs_in(&mesh.db, "vip").await, 0);
    assert_eq!(jobs_in(&mesh.db, "acme").await, 3);
    assert_eq!(jobs_in(vip_db, "acme").await, 0);

    // A call routed to the wrong deployment is refused, not answered from (or written to) the
    // wrong database: vip's on the shared replica, acme's on vip's.
    let (acme_job, vip_job) = (&jobs[0].1, &jobs[1].1);
    let shared_replica = Mesh::client_at(mesh.analysis.unwrap()).await;
    let vip_replica = Mesh::client_at(mesh.dedicated["vip"].1).await;
    for (mut client, bearer, job) in [
        (shared_replica.clone(), &vip, vip_job),
        (vip_replica.clone(), &acme, acme_job),
    ] {
        let get = GetJobRequest { name: job.clone() };
        let status = client.get_job(with_key(bearer, get)).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
    let start = StartAnalysisRequest {
        dataset: vip_data.clone(),
        label_column: "label".to_owned(),
        task_type: TaskType::Classification.into(),
        ..StartAnalysisRequest::default()
    };
    let status = shared_replica
        .clone()
        .start_analysis(with_key(&vip, start))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(jobs_in(&mesh.db, "vip").await, 0, "nothing stored for it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_replica_leaves_a_dedicated_tenants_completions_and_deletions_to_its_replica() {
    let mesh = dedicated_mesh().await;
    let vip_tenant = TenantId::parse("vip").unwrap();
    let vip = mint(&mesh.nats, "vip").await;
    let acme = mint(&mesh.nats, "acme").await;
    let iris = std::fs::read(IRIS).unwrap();
    let vip_data = mesh.upload(&vip, "vip", iris.clone()).await;
    let acme_data = mesh.upload(&acme, "acme", iris).await;
    let job = mesh.start_job(&vip, &vip_data).await;
    let acme_job = mesh.start_job(&acme, &acme_data).await;
    mesh.until_outputs(&vip, &job, Duration::from_secs(120))
        .await;
    mesh.until_outputs(&acme, &acme_job, Duration::from_secs(120))
        .await;
    let publisher = Publisher::new(mesh.nats.jetstream().await);

    // scores.ready (trust-scoring's) reaches both `analysis-scores` and `analysis-scores-vip`: the
    // shared replica acknowledges it untouched, vip's replica completes the job in its database.
    let report = format!("tenants/vip/reports/{}", uuid::Uuid::now_v7());
    let ready = ScoresReady {
        job: job.clone(),
        dataset: vip_data.clone(),
        report: report.clone(),
        row_count: 150,
        ..ScoresReady::default()
    };
    let subject = Subject::scores_ready(&vip_tenant);
    publisher
        .publish(&subject, &ready, &msg_id(&subject, uuid::Uuid::now_v7()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = mesh.get(&vip, &job).await;
        if now.state() == JobState::Succeeded {
            assert_eq!(now.output, report);
            break;
        }
        assert!(Instant::now() < deadline, "not completed: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mesh.until_acked("TM_SCORES", "analysis-scores").await;
    mesh.until_acked("TM_SCORES", "analysis-scores-vip").await;

    // The dataset's deletion: vip's replica deletes the job's row and objects from its database
    // and bucket and answers with the one analysis receipt (ingest answers for its part); the
    // shared replica acknowledges the request without acting (nothing recorded as processed in the
    // shared database, no receipt).
    let deletion = mesh
        .analysis_deletion(&publisher, DeletionScope::Dataset, &vip_data)
        .await;
    assert!(!deletion.residue_found, "{deletion:?}");
    assert_eq!(deletion.deleted.get("rows:jobs"), Some(&1), "{deletion:?}");
    assert!(
        deletion.deleted.get("objects").is_some_and(|n| *n >= 1),
        "{deletion:?}"
    );
    assert_eq!(jobs_in(mesh.dedicated_db("vip"), "vip").await, 0);
    assert_eq!(
        files_with(&mesh.dir.path().join("vip-objects"), "vip"),
        0,
        "vip's bucket keeps nothing of the dataset's job"
    );
    // acme's job is untouched.
    assert_eq!(jobs_in(&mesh.db, "acme").await, 1);
    assert_eq!(
        files_with(&mesh.dir.path().join("analysis-objects"), "acme"),
        1
    );

    // The tenant's deletion: its keys are in its replica's database only, and destroyed there.
    let live_deks = |db: &TestDatabase, tenant: &'static str| {
        let pool = db.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM analysis.deks WHERE tenant = $1 AND wrapped IS NOT NULL",
            )
            .bind(tenant)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert!(live_deks(mesh.dedicated_db("vip"), "vip").await >= 1);
    assert_eq!(live_deks(&mesh.db, "vip").await, 0);
    let deletion = mesh
        .analysis_deletion(&publisher, DeletionScope::Tenant, "tenants/vip")
        .await;
    assert!(!deletion.residue_found, "{deletion:?}");
    assert!(deletion.deks_destroyed >= 1, "{deletion:?}");
    assert_eq!(live_deks(mesh.dedicated_db("vip"), "vip").await, 0);
    assert_eq!(
        live_deks(&mesh.db, "acme").await,
        1,
        "acme's key is untouched"
    );
}
