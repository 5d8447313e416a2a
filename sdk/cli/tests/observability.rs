//! Observability of a running mesh (issue #10, parts 3-5): the flow upload -> analysis -> scoring
//! -> webhook runs on a standalone mesh inside one trace, whose id then shows in the spans of every
//! service involved, down to the notifier's webhook delivery and the `traceparent` the webhook
//! receiver (a local one, allow-listed) gets; and `/metrics` on the admin port serves every metric
//! each panel of `infra/grafana/trustmesh-overview.json` queries, a dashboard that has Grafana's
//! schema fields.
//!
//! The `trustmesh standalone` binary logs through the same telemetry init: its JSON log lines carry
//! the trace id of the call they were written for.
//!
//! Spans are seen through the JSON log lines written inside them: the RPC layer and the consumer
//! runner log a debug line at the end of each call or delivery, and the webhook dispatcher an info
//! line per attempt, carrying their span's `trace_id`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mesh::Mesh;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use trustmesh_proto::v1::upload_dataset_request::Payload;
use trustmesh_proto::v1::{
    CreateDatasetRequest, CreateTenantRequest, DatasetFormat, GetJobRequest, JobState, Scope,
    StartAnalysisRequest, TaskType, UploadDatasetRequest, UploadMetadata, WebhookEventType,
};
use trustmesh_runtime::SecretString;
use trustmesh_sdk::{Client, once_known};
use trustmesh_telemetry::{LogFormat, TRACEPARENT, TelemetrySettings};
use trustmesh_testkit::data::synthetic_csv;
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;

const DASHBOARD: &str = include_str!("../../../infra/grafana/trustmesh-overview.json");

/// `message` as a request carrying `traceparent`, as a traced client sends it.
fn traced<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(TRACEPARENT, traceparent.parse().unwrap());
    request
}

/// A local webhook receiver: answers every request 204 and sends its `traceparent` header (empty
/// if none) on the channel.
async fn webhook_receiver() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push(line);
                }
                let header = |name: &str| {
                    head.iter().find_map(|line| {
                        let (key, value) = line.split_once(':')?;
                        key.eq_ignore_ascii_case(name)
                            .then(|| value.trim().to_owned())
                    })
                };
                let length = header("content-length").map_or(0, |v| v.parse().unwrap());
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                let _ = tx.send(header("traceparent").unwrap_or_default());
                let _ = stream
                    .get_mut()
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, rx)
}

/// The service a span belongs to, from its RPC method, its durable consumer's name, or (a webhook
/// delivery attempt) its delivery.
fn service_of(span: &serde_json::Value) -> Option<String> {
    if span.get("webhook.delivery").is_some() {
        return Some("notifier".to_owned());
    }
    if let Some(method) = span.get("rpc.method").and_then(|m| m.as_str()) {
        let service = method.trim_start_matches('/').split('/').next()?;
        return Some(
            match service {
                "trustmesh.v1.DatasetService" => "ingest",
                "trustmesh.v1.AnalysisService" => "analysis",
                "trustmesh.v1.TrustService" => "trust-scoring",
                "trustmesh.v1.DeletionService" => "deletion",
                "trustmesh.v1.AuditService" => "audit",
                "trustmesh.v1.TenancyService" => "tenancy",
                other => other,
            }
            .to_owned(),
        );
    }
    let consumer = span.get("messaging.consumer.group.name")?.as_str()?;
    [
        "trust-scoring",
        "analysis",
        "deletion",
        "audit",
        "notifier",
        "ingest",
        "tenancy",
    ]
    .into_iter()
    .find(|service| consumer.starts_with(&format!("{service}-")))
    .map(str::to_owned)
}

/// Services whose spans (RPC or consumer) logged a line in trace `trace_id`, with the span names.
fn services_in_trace(logs: &str, trace_id: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut seen = BTreeMap::<String, BTreeSet<String>>::new();
    for line in logs.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(span) = event.get("span") else {
            continue;
        };
        if span.get("trace_id").and_then(|t| t.as_str()) != Some(trace_id) {
            continue;
        }
        if let Some(service) = service_of(span) {
            let what = span
                .get("rpc.method")
                .or_else(|| span.get("messaging.consumer.group.name"))
                .or_else(|| span.get("name"))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            seen.entry(service).or_default().insert(what);
        }
    }
    seen
}

/// `GET /metrics` on the admin address.
async fn scrape(admin: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// Every `trustmesh_*` metric name an expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("trustmesh_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The value of the first sample whose line starts with `prefix` (series name and labels).
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The dashboard has the fields Grafana's dashboard schema requires, and returns its panels' exprs
/// by panel title.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    for field in ["title", "uid"] {
        assert!(
            dashboard[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}"
        );
    }
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(dashboard["templating"]["list"].is_array());
    assert!(dashboard["time"]["from"].is_string() && dashboard["time"]["to"].is_string());
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap().to_owned();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: duplicate id"
        );
        assert!(panel["type"].is_string(), "{title}: type");
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        assert!(
            panel["gridPos"]["x"].as_u64().unwrap() + panel["gridPos"]["w"].as_u64().unwrap() <= 24
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            assert!(target["refId"].is_string(), "{title}: refId");
            let expr = target["expr"].as_str().unwrap();
            assert!(!metric_names(expr).is_empty(), "{title}: {expr}");
            exprs.push((title.clone(), expr.to_owned()));
        }
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_spans_the_flow_and_every_dashboard_metric_is_served() {
    let exprs = dashboard_exprs();
    let logs = tempfile::NamedTempFile::new().unwrap();
    let _telemetry = trustmesh_telemetry::init(
        "standalone",
        &TelemetrySettings {
            log_format: LogFormat::Json,
            log_filter: Some(
                "warn,observability=info,trustmesh_runtime=debug,trustmesh_bus=debug,trustmesh_notifier=info"
                    .to_owned(),
            ),
            log_file: Some(logs.path().to_owned()),
            ..TelemetrySettings::default()
        },
    )
    .unwrap();

    let mut mesh = Mesh::start_with(|settings| {
        // The local receiver is reachable through the operator's egress allow-list only.
        settings.webhooks = trustmesh_notifier::settings::WebhookSettings {
            allow_destinations: vec!["127.0.0.1/32".parse().unwrap()],
            allow_http: true,
            poll_interval_ms: 50,
            ..Default::default()
        };
    })
    .await;
    let (admin, operator) = (mesh.admin, &mesh.operator);
    let (_, user) = operator
        .create_tenant_with_key("acme", "acme", &[Scope::Admin], Duration::from_secs(3600))
        .await
        .unwrap();
    let (hook_url, mut hooks) = webhook_receiver().await;
    user.create_webhook(
        &hook_url,
        &[
            WebhookEventType::DatasetIngested,
            WebhookEventType::JobSucceeded,
        ],
        "observability",
    )
    .await
    .unwrap();

    // The client's trace: its traceparent goes with the upload and the analysis request.
    let root = tracing::info_span!("observability-flow");
    let trace_id = trustmesh_telemetry::trace_id(&root).expect("a trace");
    let traceparent = root
        .in_scope(trustmesh_telemetry::trace_headers)
        .into_iter()
        .find_map(|(name, value)| (name == TRACEPARENT).then_some(value))
        .unwrap();
    let dataset = once_known(|| {
        let mut datasets = user.datasets();
        let request = traced(
            CreateDatasetRequest {
                parent: "tenants/acme".to_owned(),
                display_name: "observed".to_owned(),
                ..CreateDatasetRequest::default()
            },
            &traceparent,
        );
        async move { datasets.create_dataset(request).await }
    })
    .await
    .unwrap()
    .into_inner();
    let csv = synthetic_csv(600, 4, 0);
    let messages = vec![
        UploadDatasetRequest {
            payload: Some(Payload::Metadata(UploadMetadata {
                dataset: dataset.name.clone(),
                format: DatasetFormat::Csv.into(),
                filename: "observed.csv".to_owned(),
                size_bytes: csv.len() as u64,
                id_column: "row_id".to_owned(),
                ..UploadMetadata::default()
            })),
        },
        UploadDatasetRequest {
            payload: Some(Payload::Chunk(csv)),
        },
    ];
    user.datasets()
        .upload_dataset(traced(futures::stream::iter(messages), &traceparent))
        .await
        .unwrap();
    let job = user
        .analysis()
        .start_analysis(traced(
            StartAnalysisRequest {
                dataset: dataset.name.clone(),
                label_column: "label".to_owned(),
                task_type: TaskType::Classification.into(),
                ..StartAnalysisRequest::default()
            },
            &traceparent,
        ))
        .await
        .unwrap()
        .into_inner();
    let done = tokio::time::timeout(Duration::from_secs(300), async {
        loop {
            let current = user
                .analysis()
                .get_job(GetJobRequest {
                    name: job.name.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            if matches!(
                current.state(),
                JobState::Succeeded | JobState::Failed | JobState::Cancelled
            ) {
                return current;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the job ends");
    assert_eq!(done.state(), JobState::Succeeded, "{done:?}");

    // (a) One trace: spans of every service the flow crossed carry the client's trace id (RPCs
    // through gRPC metadata, consumers through NATS headers, across the outboxes, webhook attempts
    // through the delivery rows). The scores are delivered after the job succeeds, and the audit
    // log and notifier consume asynchronously.
    let expected = ["ingest", "analysis", "trust-scoring", "audit", "notifier"];
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let text = std::fs::read_to_string(logs.path()).unwrap();
            let seen = services_in_trace(&text, &trace_id);
            if expected.iter().all(|s| seen.contains_key(*s)) {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let text = std::fs::read_to_string(logs.path()).unwrap();
        panic!(
            "trace {trace_id} reached only {:?}",
            services_in_trace(&text, &trace_id)
        )
    });
    eprintln!("trace {trace_id} spans: {seen:#?}");
    assert!(
        seen["analysis"].iter().any(|s| s.starts_with("analysis-")),
        "the analysis consumer continued the trace: {seen:?}"
    );
    assert!(
        seen["trust-scoring"].contains("trust-scoring-analysis"),
        "{seen:?}"
    );

    // The webhooks (dataset.ingested, job.succeeded) reached the receiver in that trace, and the
    // notifier's delivery attempts logged in it.
    for event in ["dataset.ingested", "job.succeeded"] {
        let traceparent = tokio::time::timeout(Duration::from_secs(30), hooks.recv())
            .await
            .unwrap_or_else(|_| panic!("the {event} webhook arrives"))
            .unwrap();
        assert!(
            traceparent.starts_with(&format!("00-{trace_id}-")),
            "a webhook came with traceparent {traceparent:?}, not in trace {trace_id}"
        );
    }
    let deliveries = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = std::fs::read_to_string(logs.path()).unwrap();
            let seen = services_in_trace(&text, &trace_id);
            if seen["notifier"].contains("webhook.deliver") {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        deliveries.is_ok(),
        "no webhook.deliver span in trace {trace_id}"
    );

    // (b) /metrics serves every metric every dashboard panel uses, and the flow moved them.
    let metrics = scrape(admin).await;
    for (title, expr) in &exprs {
        for name in metric_names(expr) {
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "panel {title:?} queries {name}, which /metrics does not serve:\n{metrics}"
            );
        }
    }
    let s = "service=\"standalone\"";
    for (prefix, what) in [
        (
            format!(
                "trustmesh_rpc_requests_total{{{s},method=\"/trustmesh.v1.AnalysisService/StartAnalysis\",code=\"OK\"}}"
            ),
            "the StartAnalysis call",
        ),
        (
            format!("trustmesh_job_transitions_total{{{s},kind=\"Analysis\",state=\"Succeeded\"}}"),
            "the job's success",
        ),
        (
            format!(
                "trustmesh_job_duration_seconds_count{{{s},kind=\"Analysis\",state=\"Succeeded\"}}"
            ),
            "the job's duration",
        ),
        (
            format!(
                "trustmesh_consumer_deliveries_total{{{s},stream=\"TM_ANALYSIS\",consumer=\"trust-scoring-analysis\",outcome=\"Acked\"}}"
            ),
            "the scoring consumer's delivery",
        ),
        (
            format!("trustmesh_audit_events_total{{{s}}}"),
            "the audit events",
        ),
        (
            format!("trustmesh_webhook_deliveries_total{{{s},outcome=\"Delivered\"}}"),
            "the webhooks",
        ),
    ] {
        let value = sample(&metrics, &prefix)
            .unwrap_or_else(|| panic!("no {prefix} ({what}) in:\n{metrics}"));
        assert!(value >= 1.0, "{what}: {prefix} = {value}");
    }
    assert!(!metrics.contains("acme"), "no tenant ids in metric labels");

    mesh.stop().await;
}

/// A `trustmesh standalone` child process, killed on drop.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_binary_logs_json_lines_with_the_callers_trace_id() {
    const OPERATOR: &str = "observability-operator-credential-0123456789";
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .args([
            "standalone",
            "--grpc-bind",
            "127.0.0.1:0",
            "--admin-bind",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["--database-url", db.url(), "--nats-url", &nats.url()])
        .env("TRUSTMESH_OPERATOR_CREDENTIAL", OPERATOR)
        .env("RUST_LOG", "warn,trustmesh_runtime=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // Collect stderr (the log) and read stdout's first line (the addresses), draining both so the
    // process never writes to a full or closed pipe.
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let collected = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = collected.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let stdout = child.stdout.take().unwrap();
    let (first_line, line) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = first_line.send(lines.next().and_then(Result::ok).unwrap_or_default());
        lines.for_each(drop);
    });
    let process = Process(child);
    let line = line.await.unwrap();
    let grpc = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("grpc="))
        .unwrap_or_else(|| panic!("no grpc= in {line:?}"));

    // A traced call, as from a client in trace `trace_id`.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let operator = Client::connect(&format!("http://{grpc}"), &SecretString::from(OPERATOR))
        .await
        .unwrap();
    operator
        .tenancy()
        .create_tenant(traced(
            CreateTenantRequest {
                tenant_id: "acme".to_owned(),
                display_name: "Acme".to_owned(),
                ..CreateTenantRequest::default()
            },
            &traceparent,
        ))
        .await
        .unwrap();

    let logged = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let lines = log.lock().unwrap().clone();
            if let Some(line) = lines.lines().find(|line| {
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|event| {
                    event["span"]["trace_id"] == trace_id.as_str()
                        && event["span"]["rpc.method"]
                            == "/trustmesh.v1.TenancyService/CreateTenant"
                })
            }) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no JSON log line of CreateTenant in trace {trace_id}:\n{}",
            log.lock().unwrap()
        )
    });
    eprintln!("{logged}");
    drop(process);
}
