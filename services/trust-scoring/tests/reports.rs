//! The scoring flow end to end against real servers (nats-server, Postgres, local object
//! directories) with ingest, analysis and trust-scoring in-process: upload → analysis → report.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use trustmesh_bus::Publisher;
use trustmesh_events::{Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{
    AnalysisCompleted, DeletionReceipt, DeletionRequested, DeletionScope,
};
use trustmesh_proto::v1::analysis_service_client::AnalysisServiceClient;
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::trust_service_client::TrustServiceClient;
use trustmesh_proto::v1::upload_dataset_request::Payload;
use trustmesh_proto::v1::{
    Correction, CorrectionAction, CreateDatasetRequest, DatasetFormat, GetJobRequest,
    GetReportRequest, IssueType, Job, JobState, ListReportsRequest, ListRowsRequest,
    SetCorrectionsRequest, StartAnalysisRequest, TaskType, UploadDatasetRequest, UploadMetadata,
    WatchJobRequest,
};
use trustmesh_runtime::{AdminSettings, ClientTls, GrpcSettings, ServerTls, TransportMode};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;
use uuid::Uuid;

const FIXTURES: &str = "/work/shared/fixtures/cleanlab-reference";

/// Mints an API key of `tenant` that may read and write datasets; returns `Bearer <key>`.
async fn mint(nats: &NatsServer, tenant: &str) -> String {
    use trustmesh_auth::{AuthBucket, IssuedKey, KeyRecord, Scope};
    use trustmesh_runtime::ExposeSecret as _;
    let bucket = AuthBucket::open(&nats.jetstream().await, 1).await.unwrap();
    let issued = IssuedKey::generate();
    let record = KeyRecord {
        key_id: issued.key_id().clone(),
        tenant: tenant.to_owned(),
        scopes: [Scope::DatasetsRead, Scope::DatasetsWrite]
            .into_iter()
            .collect(),
        expires_at: (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).unix_timestamp(),
        revoked: false,
        digest: issued.digest().clone(),
    };
    bucket.put(&record).await.unwrap();
    format!("Bearer {}", issued.token().expose_secret())
}

/// `message` with `bearer` as its credential.
fn with_key<T>(bearer: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    request
}

#[allow(clippy::unnecessary_wraps)]
fn pass(request: Request<()>) -> Result<Request<()>, Status> {
    Ok(request)
}

fn grpc() -> GrpcSettings {
    GrpcSettings {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: ServerTls {
            mode: TransportMode::DevPlaintextLoopback,
            ..ServerTls::default()
        },
        ..GrpcSettings::default()
    }
}

fn admin() -> AdminSettings {
    AdminSettings {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
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
    analysis: AnalysisServiceClient<Channel>,
    trust: TrustServiceClient<Channel>,
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
            grpc: grpc(),
            admin: admin(),
            objects: trustmesh_ingest::settings::ObjectStoreSettings::Local {
                dir: root.join("ingest"),
            },
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
            grpc: grpc(),
            admin: admin(),
            objects: trustmesh_analysis::settings::ObjectStoreSettings::Local {
                dir: root.join("analysis"),
            },
            ingest: trustmesh_analysis::settings::PeerSettings {
                endpoint,
                tls,
                api_key: Some(bearer.trim_start_matches("Bearer ").to_owned().into()),
            },
            ..trustmesh_analysis::Settings::default()
        };
        analysis.database.url = db.url().to_owned().into();
        analysis.nats.url = nats.url();
        analysis.keys.kek_file = root.join("analysis.kek");
        let app = trustmesh_analysis::Application::build(analysis, pass)
            .await
            .unwrap();
        let analysis_addr = app.grpc_addr();
        tokio::spawn(app.run_until_stopped(shutdown.child_token()));

        let (endpoint, tls) = peer(analysis_addr);
        let mut trust = trustmesh_trust_scoring::Settings {
            grpc: grpc(),
            admin: admin(),
            objects: trustmesh_trust_scoring::settings::ObjectStoreSettings::Local {
                dir: root.join("trust-scoring"),
            },
            analysis: trustmesh_trust_scoring::settings::PeerSettings { endpoint, tls },
            ..trustmesh_trust_scoring::Settings::default()
        };
        trust.database.url = db.url().to_owned().into();
        trust.nats.url = nats.url();
        trust.keys.kek_file = root.join("trust-scoring.kek");
        let app = trustmesh_trust_scoring::Application::build(trust, pass)
            .await
            .unwrap();
        let trust_addr = app.grpc_addr();
        tokio::spawn(app.run_until_stopped(shutdown.child_token()));

        Self {
            ingest: DatasetServiceClient::connect(format!("http://{ingest_addr}"))
                .await
                .unwrap(),
            analysis: AnalysisServiceClient::connect(format!("http://{analysis_addr}"))
                .await
                .unwrap(),
            trust: TrustServiceClient::connect(format!("http://{trust_addr}"))
                .await
                .unwrap(),
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
        let csv = std::fs::read(format!("{FIXTURES}/iris_10s.dataset.csv")).unwrap();
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
    assert_eq!(report.class_health.len(), 3);
    assert_eq!(
        report.class_health.iter().map(|c| c.row_count).sum::<u64>(),
        150
    );
    assert_eq!(
        report.model_metrics.unwrap().model_family,
        "logistic-regression"
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
}

#[tokio::test]
async fn another_tenant_cannot_read_a_report() {
    let mesh = Mesh::start().await;
    let job = mesh.analyse_iris("acme").await;
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    let id = job.output.rsplit('/').next().unwrap();
    let theirs = format!("tenants/bbb/reports/{id}");
    let mut trust = mesh.trust.clone();
    let get = trust
        .get_report(GetReportRequest {
            name: theirs.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::NotFound);
    let rows = trust
        .list_rows(ListRowsRequest {
            parent: theirs.clone(),
            ..ListRowsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(rows.code(), Code::NotFound);
    let set = trust
        .set_corrections(SetCorrectionsRequest {
            parent: theirs,
            ..SetCorrectionsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(set.code(), Code::NotFound);
    let listed = trust
        .list_reports(ListReportsRequest {
            parent: "tenants/bbb".into(),
            ..ListReportsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.reports.is_empty());
    // The owner reads it.
    let own = trust
        .get_report(GetReportRequest {
            name: job.output.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.name, job.output);
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
