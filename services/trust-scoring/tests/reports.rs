//! The scoring flow end to end against real servers (nats-server, Postgres, local object
//! directories) with ingest, analysis and trust-scoring in-process: upload → analysis → report.

use std::net::SocketAddr;
use std::path::Path;
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
use trustmesh_proto::events::v1::{
    ActorType, AnalysisCompleted, AuditEvent, DeletionReceipt, DeletionRequested, DeletionScope,
    Outcome,
};
use trustmesh_proto::v1::analysis_service_client::AnalysisServiceClient;
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::trust_service_client::TrustServiceClient;
use trustmesh_proto::v1::upload_dataset_request::Payload;
use trustmesh_proto::v1::{
    Correction, CorrectionAction, CreateDatasetRequest, DatasetFormat, ExportCleansetRequest,
    ExportFormat, GetJobRequest, GetReportRequest, IssueType, Job, JobState, ListReportsRequest,
    ListRowsRequest, SetCorrectionsRequest, StartAnalysisRequest, TaskType, UploadDatasetRequest,
    UploadMetadata, WatchJobRequest,
};
use trustmesh_runtime::{AdminSettings, ClientTls, GrpcSettings};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;
use uuid::Uuid;

const FIXTURES: &str = "/work/shared/fixtures/cleanlab-reference";

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

/// Mints an API key of `tenant` that may read and write datasets (ingest, corrections), run
/// analyses and read reports and model outputs; returns `Bearer <key>`.
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

type Authed = InterceptedService<Channel, Bearer>;

/// A channel to `addr` sending `bearer` (`Bearer <key>`) on every call, or no credential.
async fn authed(addr: SocketAddr, bearer: Option<&str>) -> Authed {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    InterceptedService::new(channel, Bearer(bearer.map(|b| b.parse().unwrap())))
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

/// The audit events trust-scoring recorded in `tenant`'s log.
async fn audit_events(nats: &NatsServer, tenant: &str) -> Vec<AuditEvent> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use futures::StreamExt as _;
    let stream = nats.jetstream().await.get_stream("TM_AUDIT").await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("tm.{tenant}.audit.trust-scoring"),
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
    events
}

/// The DENIED events in `tenant`'s log as (action, actor, gRPC code, reason), once there are `n`.
async fn denied(nats: &NatsServer, tenant: &str, n: usize) -> Vec<(String, String, i32, String)> {
    let mut found = Vec::new();
    for _ in 0..200 {
        found = audit_events(nats, tenant)
            .await
            .into_iter()
            .filter(|e| e.outcome() == Outcome::Denied)
            .map(|e| {
                assert_eq!(e.actor_type(), ActorType::ApiKey);
                (e.action, e.actor_id, e.grpc_code, e.reason)
            })
            .collect();
        if found.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found.sort();
    found
}

/// The mesh's service credential, shared by ingest, analysis and trust-scoring.
const MESH_CREDENTIAL: &str = "test-mesh-service-credential-0123456789";

fn mesh_settings() -> trustmesh_runtime::settings::common::MeshSettings {
    trustmesh_runtime::settings::common::MeshSettings {
        service_credential: Some(MESH_CREDENTIAL.to_owned().into()),
    }
}

fn peer(addr: SocketAddr) -> (String, ClientTls) {
    (
        format!("http://{addr}"),
        ClientTls::dev_plaintext_loopback(),
    )
}

/// nats-server, a database, ingest, analysis and trust-scoring, stopped on drop.
struct Mesh {
    nats: NatsServer,
    _db: TestDatabase,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    bearer: String,
    ingest: DatasetServiceClient<Channel>,
    trust_addr: SocketAddr,
    analysis: AnalysisServiceClient<Authed>,
    trust: TrustServiceClient<Authed>,
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
        let root = dir.path();
        let shutdown = CancellationToken::new();
        let bearer = mint(&nats, "acme").await;

        let mut ingest = trustmesh_ingest::Settings {
            grpc: GrpcSettings::dev_plaintext_loopback(),
            admin: AdminSettings::any_loopback_port(),
            objects: trustmesh_ingest::settings::ObjectStoreSettings::Local {
                dir: root.join("ingest"),
            },
            mesh: mesh_settings(),
            ..trustmesh_ingest::Settings::default()
        };
        ingest.database.url = db.url().to_owned().into();
        ingest.nats.url = nats.url();
        ingest.keys.kek_file = root.join("ingest.kek");
        let app = trustmesh_ingest::Application::build(ingest).await.unwrap();
        let ingest_addr = app.grpc_addr();
        tokio::spawn(app.run_until_stopped(shutdown.child_token()));

        let (endpoint, tls) = peer(ingest_addr);
        let mut analysis = trustmesh_analysis::Settings {
            grpc: GrpcSettings::dev_plaintext_loopback(),
            admin: AdminSettings::any_loopback_port(),
            objects: trustmesh_analysis::settings::ObjectStoreSettings::Local {
                dir: root.join("analysis"),
            },
            ingest: trustmesh_analysis::settings::PeerSettings { endpoint, tls },
            mesh: mesh_settings(),
            ..trustmesh_analysis::Settings::default()
        };
        analysis.database.url = db.url().to_owned().into();
        analysis.nats.url = nats.url();
        analysis.keys.kek_file = root.join("analysis.kek");
        let app = trustmesh_analysis::Application::build(analysis)
            .await
            .unwrap();
        let analysis_addr = app.grpc_addr();
        tokio::spawn(app.run_until_stopped(shutdown.child_token()));

        let (endpoint, tls) = peer(analysis_addr);
        let (ingest_endpoint, ingest_tls) = peer(ingest_addr);
        let mut trust = trustmesh_trust_scoring::Settings {
            grpc: GrpcSettings::dev_plaintext_loopback(),
            admin: AdminSettings::any_loopback_port(),
            objects: trustmesh_trust_scoring::settings::ObjectStoreSettings::Local {
                dir: root.join("trust-scoring"),
            },
            analysis: trustmesh_trust_scoring::settings::PeerSettings { endpoint, tls },
            ingest: Some(trustmesh_trust_scoring::settings::PeerSettings {
                endpoint: ingest_endpoint,
                tls: ingest_tls,
            }),
            mesh: mesh_settings(),
            ..trustmesh_trust_scoring::Settings::default()
        };
        trust.database.url = db.url().to_owned().into();
        trust.nats.url = nats.url();
        trust.keys.kek_file = root.join("trust-scoring.kek");
        let app = trustmesh_trust_scoring::Application::build(trust)
            .await
            .unwrap();
        let trust_addr = app.grpc_addr();
        tokio::spawn(app.run_until_stopped(shutdown.child_token()));

        Self {
            ingest: DatasetServiceClient::connect(format!("http://{ingest_addr}"))
                .await
                .unwrap(),
            analysis: AnalysisServiceClient::new(authed(analysis_addr, Some(&bearer)).await),
            trust: TrustServiceClient::new(authed(trust_addr, Some(&bearer)).await),
            trust_addr,
            nats,
            _db: db,
            dir,
            shutdown,
            bearer,
        }
    }

    /// Uploads the iris fixture as a dataset of `tenant`, analyses it, and waits for the job to end.
    async fn analyse_iris(&self, tenant: &str) -> Job {
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
        // The ids are made textual and unlike the row indices, so the report's row ids are
        // told apart from the indices and can be looked for in plaintext.
        let csv = iris_csv().into_bytes();
        let messages = vec![
            UploadDatasetRequest {
                payload: Some(Payload::Metadata(UploadMetadata {
                    dataset: dataset.name.clone(),
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
        let job = self
            .analysis
            .clone()
            .start_analysis(StartAnalysisRequest {
                dataset: dataset.name,
                label_column: "label".to_owned(),
                task_type: TaskType::Classification.into(),
                ..StartAnalysisRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut updates = self
            .analysis
            .clone()
            .watch_job(WatchJobRequest { name: job.name })
            .await
            .unwrap()
            .into_inner();
        tokio::time::timeout(Duration::from_secs(180), async {
            let mut last = None;
            while let Some(update) = updates.message().await.unwrap() {
                last = Some(update);
            }
            last.expect("a watch streams the job at least once")
        })
        .await
        .expect("the job did not finish in time")
    }
}

/// The prefix of the iris rows' ids as uploaded.
const ROW_ID_PREFIX: &str = "rowid-";

/// The iris fixture with each `row_id` (its first column) prefixed by [`ROW_ID_PREFIX`].
fn iris_csv() -> String {
    let csv = std::fs::read_to_string(format!("{FIXTURES}/iris_10s.dataset.csv")).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("row_id,"), "{header}");
    let mut out = format!("{header}\n");
    for line in lines.filter(|l| !l.trim().is_empty()) {
        out.push_str(&format!("{ROW_ID_PREFIX}{line}\n"));
    }
    out
}

/// The uploaded `row_id` of each iris row, by row index.
fn iris_row_ids() -> Vec<String> {
    iris_csv()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect()
}

/// The row indices of the reference's label issues for iris.
fn reference_label_issues() -> Vec<u64> {
    std::fs::read_to_string(format!("{FIXTURES}/iris_10s.cleanlab_issues.csv"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn assert_no_plaintext(path: &Path, needle: &[u8]) {
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

#[tokio::test]
async fn an_uploaded_dataset_gets_a_report_with_label_issues_and_paged_rows() {
    let mesh = Mesh::start().await;
    let job = mesh.analyse_iris("acme").await;
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    assert_eq!(job.progress, 1.0);
    let report_name = job.output.clone();
    assert!(
        report_name.starts_with("tenants/acme/reports/"),
        "{report_name}"
    );

    let mut trust = mesh.trust.clone();
    let report = trust
        .get_report(GetReportRequest {
            name: report_name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((report.row_count, report.analyzed_row_count), (150, 150));
    assert_eq!(report.job, job.name);
    assert_eq!(report.dataset, job.target);
    assert!((0.0..=1.0).contains(&report.health_score));
    let label = report
        .issue_summaries
        .iter()
        .find(|s| s.issue_type() == IssueType::Label)
        .expect("the label check ran");
    assert!((5..=40).contains(&label.flagged_rows), "{label:?}");
    // The models behind the report: each one's cross-validated quality and ensemble weight, and
    // the ensemble's per-class metrics.
    let metrics = report.model_metrics.clone().expect("the model's headline");
    assert_eq!(
        (metrics.model_family.as_str(), metrics.cv_folds),
        ("ensemble", 5)
    );
    let summary = report.model_summary.clone().expect("the models' summary");
    assert_eq!(summary.row_count, 150);
    let models: Vec<&str> = summary.models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(
        models,
        ["logistic_regression", "gradient_boosted_trees", "knn"]
    );
    assert!(
        summary
            .models
            .iter()
            .all(|m| m.accuracy.unwrap() > 0.7 && m.log_loss.unwrap() > 0.0 && m.weight >= 0.0),
        "{summary:?}"
    );
    let ensemble = summary.ensemble.expect("the ensemble's quality");
    assert_eq!(ensemble.accuracy, metrics.accuracy);
    assert_eq!(ensemble.per_class.len(), 3);
    assert!(
        ensemble
            .per_class
            .iter()
            .all(|c| c.class_name.starts_with("class_") && c.f1 > 0.5)
    );
    assert_eq!(report.class_health.len(), 3);
    assert_eq!(
        report.class_health.iter().map(|c| c.row_count).sum::<u64>(),
        150
    );

    // Label issues, least trustworthy first, two pages of 5 and the rest.
    let query = |page_token: String| ListRowsRequest {
        parent: report_name.clone(),
        issue_types: vec![IssueType::Label.into()],
        page_size: 5,
        page_token,
        ..ListRowsRequest::default()
    };
    let first = trust
        .list_rows(query(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.total_size, label.flagged_rows);
    assert_eq!(first.rows.len(), 5);
    assert!(
        first
            .rows
            .windows(2)
            .all(|w| w[0].trust_score <= w[1].trust_score)
    );
    let second = trust
        .list_rows(query(first.next_page_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        second
            .rows
            .iter()
            .all(|r| first.rows.iter().all(|f| f.row_index != r.row_index))
    );
    assert!(first.rows.last().unwrap().trust_score <= second.rows[0].trust_score);
    let mut flagged = Vec::new();
    let mut token = String::new();
    loop {
        let page = trust.list_rows(query(token)).await.unwrap().into_inner();
        flagged.extend(page.rows);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(flagged.len() as u64, label.flagged_rows);
    let row_ids = iris_row_ids();
    assert_eq!(row_ids.len(), 150);
    for row in first.rows.iter().chain(&second.rows).chain(&flagged) {
        let index = usize::try_from(row.row_index).unwrap();
        assert_eq!(row.row_id, row_ids[index], "row {index}");
    }
    for row in &flagged {
        assert!(
            row.issues
                .iter()
                .any(|i| i.issue_type() == IssueType::Label && i.flagged)
        );
        assert!(row.given_label.starts_with("class_") && row.suggested_label.starts_with("class_"));
    }
    let reference = reference_label_issues();
    let found = reference
        .iter()
        .filter(|r| flagged.iter().any(|f| f.row_index == **r))
        .count();
    assert!(
        found * 2 >= reference.len(),
        "found {found} of the reference's {} label issues",
        reference.len()
    );

    // Corrections show up on their rows.
    let target = flagged[0].row_index;
    let corrected = flagged[0].suggested_label.clone();
    let set = trust
        .set_corrections(SetCorrectionsRequest {
            parent: report_name.clone(),
            corrections: vec![Correction {
                row_index: target,
                action: CorrectionAction::Relabel.into(),
                corrected_label: corrected.clone(),
                update_time: None,
            }],
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.updated_count, 1);
    let relabelled = trust
        .list_rows(ListRowsRequest {
            parent: report_name.clone(),
            correction_action: CorrectionAction::Relabel.into(),
            ..ListRowsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(relabelled.rows.len(), 1);
    assert_eq!(
        relabelled.rows[0].row_id,
        row_ids[usize::try_from(target).unwrap()]
    );
    assert_eq!(
        relabelled.rows[0]
            .correction
            .as_ref()
            .unwrap()
            .corrected_label,
        corrected
    );

    // A redelivered analysis.completed makes no second report.
    let tenant = TenantId::parse("acme").unwrap();
    let subject = Subject::analysis_completed(&tenant);
    let again = AnalysisCompleted {
        job: job.name.clone(),
        dataset: job.target.clone(),
        row_count: 150,
        ..AnalysisCompleted::default()
    };
    Publisher::new(mesh.nats.jetstream().await)
        .publish(&subject, &again, &msg_id(&subject, Uuid::now_v7()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reports = trust
        .list_reports(ListReportsRequest {
            parent: "tenants/acme".into(),
            ..ListReportsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reports.reports.len(), 1);

    // Labels are customer content: only ciphertext in the object directories.
    assert_no_plaintext(mesh.dir.path(), b"class_1");
    assert_no_plaintext(mesh.dir.path(), ROW_ID_PREFIX.as_bytes());
}

#[tokio::test]
async fn calls_without_a_key_are_unauthenticated() {
    let mesh = Mesh::start().await;
    let report = format!("tenants/acme/reports/{}", Uuid::now_v7());
    let mut anonymous = TrustServiceClient::new(authed(mesh.trust_addr, None).await);
    let get = anonymous
        .get_report(GetReportRequest {
            name: report.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::Unauthenticated, "{get:?}");
    let list = anonymous
        .list_reports(ListReportsRequest {
            parent: "tenants/acme".into(),
            ..ListReportsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::Unauthenticated, "{list:?}");
    let mut forged =
        TrustServiceClient::new(authed(mesh.trust_addr, Some("Bearer tmk_not_a_key")).await);
    let rows = forged
        .list_rows(ListRowsRequest {
            parent: report.clone(),
            ..ListRowsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(rows.code(), Code::Unauthenticated, "{rows:?}");
    let set = forged
        .set_corrections(SetCorrectionsRequest {
            parent: report,
            ..SetCorrectionsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(set.code(), Code::Unauthenticated, "{set:?}");
    // Nothing was touched, so nothing of the tenant's was audited.
    assert!(audit_events(&mesh.nats, "acme").await.is_empty());
}

#[tokio::test]
async fn another_tenants_key_gets_not_found_like_a_missing_report_and_is_audited_in_the_owners_log()
{
    let mesh = Mesh::start().await;
    let job = mesh.analyse_iris("acme").await;
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    let report = job.output.clone();
    let (intruder, intruder_actor) = mint_key(&mesh.nats, "bbb", &[Scope::Admin]).await;
    let mut trust = TrustServiceClient::new(authed(mesh.trust_addr, Some(&intruder)).await);
    let missing = format!("tenants/acme/reports/{}", Uuid::now_v7());
    let absent = mesh
        .trust
        .clone()
        .get_report(GetReportRequest {
            name: missing.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(absent.code(), Code::NotFound);

    let get = once_known(|| {
        let mut trust = trust.clone();
        let name = report.clone();
        async move { trust.get_report(GetReportRequest { name }).await }
    })
    .await
    .unwrap_err();
    assert_eq!(get.code(), Code::NotFound, "{get:?}");
    // Word for word what a missing report gets.
    assert_eq!(get.message(), absent.message().replace(&missing, &report));
    let rows = trust
        .list_rows(ListRowsRequest {
            parent: report.clone(),
            ..ListRowsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(rows.code(), Code::NotFound);
    let set = trust
        .set_corrections(SetCorrectionsRequest {
            parent: report.clone(),
            ..SetCorrectionsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(set.code(), Code::NotFound);
    let export = trust
        .export_cleanset(ExportCleansetRequest {
            name: report.clone(),
            ..ExportCleansetRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(export.code(), Code::NotFound);
    assert_eq!(
        export.message(),
        absent.message().replace(&missing, &report)
    );
    let list = trust
        .list_reports(ListReportsRequest {
            parent: "tenants/acme".into(),
            ..ListReportsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::NotFound);
    // Its own tenant has no reports.
    let listed = trust
        .list_reports(ListReportsRequest {
            parent: "tenants/bbb".into(),
            ..ListReportsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.reports.is_empty());

    let not_found = Code::NotFound as i32;
    let entry = |action: &str| {
        (
            action.to_owned(),
            intruder_actor.clone(),
            not_found,
            "OTHER_TENANT".to_owned(),
        )
    };
    assert_eq!(
        denied(&mesh.nats, "acme", 5).await,
        [
            entry("reports.corrections.set"),
            entry("reports.export"),
            entry("reports.get"),
            entry("reports.list"),
            entry("reports.rows.list"),
        ]
    );
    // The intruder's own log has only its own listing.
    let mut theirs = Vec::new();
    for _ in 0..200 {
        theirs = audit_events(&mesh.nats, "bbb").await;
        if !theirs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0].action, "reports.list");
    assert_eq!(theirs[0].actor_id, intruder_actor);

    // The owner reads it, audited as the owner's key.
    let own = mesh
        .trust
        .clone()
        .get_report(GetReportRequest {
            name: report.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.name, report);
    // Audit events reach the log through the outbox relay, shortly after the call.
    let mut read = None;
    for _ in 0..200 {
        read = audit_events(&mesh.nats, "acme")
            .await
            .into_iter()
            .find(|e| e.action == "reports.get" && e.outcome() == Outcome::Allowed);
        if read.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = read.expect("the owner's read is audited");
    assert_eq!(read.actor_type(), ActorType::ApiKey);
    assert!(read.actor_id.starts_with("tenants/acme/apiKeys/"));
}

#[tokio::test]
async fn a_key_without_the_scope_is_permission_denied_and_audited() {
    let mesh = Mesh::start().await;
    let report = format!("tenants/acme/reports/{}", Uuid::now_v7());
    let (reader, reader_actor) = mint_key(&mesh.nats, "acme", &[Scope::ReportsRead]).await;
    let (writer, writer_actor) = mint_key(&mesh.nats, "acme", &[Scope::DatasetsWrite]).await;
    let mut reader = TrustServiceClient::new(authed(mesh.trust_addr, Some(&reader)).await);
    let mut writer = TrustServiceClient::new(authed(mesh.trust_addr, Some(&writer)).await);

    // Corrections need `datasets:write`, not just `reports:read`.
    let set = once_known(|| {
        let mut reader = reader.clone();
        let parent = report.clone();
        async move {
            reader
                .set_corrections(SetCorrectionsRequest {
                    parent,
                    ..SetCorrectionsRequest::default()
                })
                .await
        }
    })
    .await
    .unwrap_err();
    assert_eq!(set.code(), Code::PermissionDenied, "{set:?}");
    // ... while the reader passes the check (and finds no such report).
    let get = reader
        .get_report(GetReportRequest {
            name: report.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::NotFound, "{get:?}");
    let read = once_known(|| {
        let mut writer = writer.clone();
        let name = report.clone();
        async move { writer.get_report(GetReportRequest { name }).await }
    })
    .await
    .unwrap_err();
    assert_eq!(read.code(), Code::PermissionDenied, "{read:?}");
    let rows = writer
        .list_rows(ListRowsRequest {
            parent: report.clone(),
            ..ListRowsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(rows.code(), Code::PermissionDenied, "{rows:?}");

    let denied_code = Code::PermissionDenied as i32;
    let scope = "MISSING_SCOPE".to_owned();
    assert_eq!(
        denied(&mesh.nats, "acme", 3).await,
        [
            (
                "reports.corrections.set".to_owned(),
                reader_actor,
                denied_code,
                scope.clone()
            ),
            (
                "reports.get".to_owned(),
                writer_actor.clone(),
                denied_code,
                scope.clone()
            ),
            (
                "reports.rows.list".to_owned(),
                writer_actor,
                denied_code,
                scope
            ),
        ]
    );
}

#[tokio::test]
async fn deleting_the_dataset_deletes_its_jobs_and_reports_with_one_receipt_each() {
    use futures::StreamExt as _;
    use prost::Message as _;

    let mesh = Mesh::start().await;
    let job = mesh.analyse_iris("acme").await;
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    let tenant = TenantId::parse("acme").unwrap();
    let mut receipts = mesh
        .nats
        .client()
        .await
        .subscribe(Subject::deletion_receipt(&tenant).as_str().to_owned())
        .await
        .unwrap();
    let request = DeletionRequested {
        deletion: format!("tenants/acme/deletions/{}", Uuid::now_v7()),
        scope: DeletionScope::Dataset.into(),
        target: job.target.clone(),
        ..DeletionRequested::default()
    };
    let subject = Subject::deletion_requested(&tenant);
    let publisher = Publisher::new(mesh.nats.jetstream().await);
    publisher
        .publish(&subject, &request, &msg_id(&subject, Uuid::now_v7()))
        .await
        .unwrap();

    let mut services = Vec::new();
    while services.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(30), receipts.next())
            .await
            .expect("every store-owning service answers")
            .unwrap();
        let receipt = DeletionReceipt::decode(message.payload).unwrap();
        assert_eq!(receipt.deletion, request.deletion);
        assert!(!receipt.residue_found, "{receipt:?}");
        services.push(receipt.service);
    }
    services.sort();
    assert_eq!(services, ["analysis", "ingest", "trust-scoring"]);

    let report = mesh
        .trust
        .clone()
        .get_report(GetReportRequest {
            name: job.output.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(report.code(), Code::NotFound);
    let gone = mesh
        .analysis
        .clone()
        .get_job(GetJobRequest {
            name: job.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // The same deletion requested again is answered by no second receipt.
    publisher
        .publish(&subject, &request, &msg_id(&subject, Uuid::now_v7()))
        .await
        .unwrap();
    let again = tokio::time::timeout(Duration::from_secs(2), receipts.next()).await;
    assert!(again.is_err(), "no second receipt");
}

/// The whole cleanset file of `req`, with the first message's media type and file name.
async fn export(
    trust: &mut TrustServiceClient<Authed>,
    req: ExportCleansetRequest,
) -> Result<(String, String, Vec<u8>), Status> {
    let mut stream = trust.export_cleanset(req).await?.into_inner();
    let first = stream.message().await?.expect("a first message");
    let mut bytes = first.chunk;
    while let Some(message) = stream.message().await? {
        assert!(message.content_type.is_empty() && message.filename.is_empty());
        bytes.extend(message.chunk);
    }
    Ok((first.content_type, first.filename, bytes))
}

#[tokio::test]
async fn the_cleanset_applies_relabels_and_exclusions_to_the_dataset_and_carries_the_scores() {
    let mesh = Mesh::start().await;
    let job = mesh.analyse_iris("acme").await;
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    let report = job.output.clone();
    let mut trust = mesh.trust.clone();
    let flagged = trust
        .list_rows(ListRowsRequest {
            parent: report.clone(),
            issue_types: vec![IssueType::Label.into()],
            ..ListRowsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert!(flagged.len() >= 2);
    let (relabelled, excluded) = (&flagged[0], &flagged[1]);
    trust
        .set_corrections(SetCorrectionsRequest {
            parent: report.clone(),
            corrections: vec![
                Correction {
                    row_index: relabelled.row_index,
                    action: CorrectionAction::Relabel.into(),
                    corrected_label: relabelled.suggested_label.clone(),
                    update_time: None,
                },
                Correction {
                    row_index: excluded.row_index,
                    action: CorrectionAction::Exclude.into(),
                    ..Correction::default()
                },
            ],
            request_id: String::new(),
        })
        .await
        .unwrap();

    // Corrections applied in place on the label column, with the quality columns.
    let (content_type, filename, bytes) = export(
        &mut trust,
        ExportCleansetRequest {
            name: report.clone(),
            apply_corrections: true,
            include_quality_columns: true,
            label_column: "label".to_owned(),
            ..ExportCleansetRequest::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(content_type, "text/csv");
    assert!(filename.ends_with(".csv"), "{filename}");
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(header[..6], ["row_id", "f0", "f1", "f2", "f3", "label"]);
    for column in [
        "action",
        "row_index",
        "trust_score",
        "suggested_label",
        "is_label",
        "label_quality",
    ] {
        assert!(header.iter().any(|h| h == column), "{column} in {header:?}");
    }
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 149);
    let row_ids = iris_row_ids();
    let original = iris_csv();
    let labels: Vec<&str> = original
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    for record in &records {
        let index: usize = record[at("row_index")].parse().unwrap();
        assert_ne!(index as u64, excluded.row_index);
        assert_eq!(&record[at("row_id")], row_ids[index]);
        let trust_score: f64 = record[at("trust_score")].parse().unwrap();
        assert!((0.0..=1.0).contains(&trust_score));
        if index as u64 == relabelled.row_index {
            assert_eq!(&record[at("label")], relabelled.suggested_label);
            assert_eq!(&record[at("action")], "relabel");
            assert_eq!(&record[at("is_label")], "true");
        } else {
            assert_eq!(&record[at("label")], labels[index]);
        }
    }

    // As JSON Lines, excluded rows kept, corrected labels in their own column.
    let (content_type, _, bytes) = export(
        &mut trust,
        ExportCleansetRequest {
            name: report.clone(),
            format: ExportFormat::Jsonl.into(),
            apply_corrections: true,
            keep_excluded: true,
            ..ExportCleansetRequest::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(content_type, "application/jsonl");
    let lines: Vec<serde_json::Value> = std::str::from_utf8(&bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 150);
    let excluded_line = &lines[usize::try_from(excluded.row_index).unwrap()];
    assert_eq!(excluded_line["action"], "exclude");
    let relabelled_line = &lines[usize::try_from(relabelled.row_index).unwrap()];
    assert_eq!(
        relabelled_line["corrected_label"],
        relabelled.suggested_label.as_str()
    );
    assert_eq!(relabelled_line["label"], relabelled.given_label.as_str());

    // Without corrections: the dataset as uploaded.
    let (_, _, bytes) = export(
        &mut trust,
        ExportCleansetRequest {
            name: report.clone(),
            ..ExportCleansetRequest::default()
        },
    )
    .await
    .unwrap();
    let plain = csv::Reader::from_reader(bytes.as_slice()).records().count();
    assert_eq!(plain, 150);

    let parquet = export(
        &mut trust,
        ExportCleansetRequest {
            name: report.clone(),
            format: ExportFormat::Parquet.into(),
            ..ExportCleansetRequest::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(parquet.code(), Code::InvalidArgument);
    let unknown_column = export(
        &mut trust,
        ExportCleansetRequest {
            name: report.clone(),
            label_column: "nope".to_owned(),
            ..ExportCleansetRequest::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(unknown_column.code(), Code::InvalidArgument);

    // A key that may read reports but not datasets gets no export.
    let (reader_key, _) = mint_key(&mesh.nats, "acme", &[Scope::ReportsRead]).await;
    let reader = TrustServiceClient::new(authed(mesh.trust_addr, Some(&reader_key)).await);
    let denied_export = once_known(|| {
        let mut reader = reader.clone();
        let name = report.clone();
        async move {
            reader
                .export_cleanset(ExportCleansetRequest {
                    name,
                    ..ExportCleansetRequest::default()
                })
                .await
                .map(drop)
        }
    })
    .await
    .unwrap_err();
    assert_eq!(denied_export.code(), Code::PermissionDenied);
    drop(reader);

    // Each export is an audited read, allowed or denied.
    let mut exports = Vec::new();
    for _ in 0..200 {
        exports = audit_events(&mesh.nats, "acme")
            .await
            .into_iter()
            .filter(|e| e.action == "reports.export")
            .map(|e| e.outcome())
            .collect();
        if exports.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        exports.iter().filter(|o| **o == Outcome::Allowed).count(),
        3
    );
    assert_eq!(exports.iter().filter(|o| **o == Outcome::Denied).count(), 1);
}
