//! Issue 8, deletion with proof, end to end on the standalone mesh (local object directory): tenant
//! `acme` registers a webhook endpoint (a local receiver, allow-listed), uploads data holding a
//! canary (raw, hex and base64), analyses it, records corrections and exports the cleanset, gets its
//! webhook deliveries, deletes one dataset (its other dataset stays byte for byte), then the operator
//! deletes the tenant. Throughout, the canary is in no table, file (the mesh's own log file, written
//! at debug level, included), stream message or webhook delivery. Afterwards no row, object, file or
//! stream message of `acme` remains outside what is kept as proof by design (the content-free audit
//! log and the deletion's own record), tenant `keep` is intact and `acme`'s key is refused. A second
//! test runs the tenant deletion on a versioned S3 bucket (moto): no object version or delete marker
//! of `acme` remains.
//!
//! Postgres is inspected with `psql` / `pg_dump` (installed with the dev servers), as an operator
//! auditing a deletion would.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::mesh::Mesh;
use futures::StreamExt as _;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use trustmesh_proto::v1::{
    Correction, CorrectionAction, DeleteDatasetRequest, DeleteTenantRequest, DeletionCertificate,
    DeletionState, GetDatasetRequest, GetDeletionCertificateRequest, GetReportRequest, JobState,
    ListCertificateSigningKeysRequest, ReadRowsRequest, Report, SetCorrectionsRequest,
    StartAnalysisRequest, TaskType,
};
use trustmesh_runtime::SecretString;
use trustmesh_sdk::{Client, ExportOptions, once_known};
use trustmesh_store::{ObjectPrefix, ObjectStore as _, ObjectStoreSettings, S3Settings, S3Store};
use trustmesh_telemetry::{LogFormat, TelemetrySettings};
use trustmesh_testkit::canary::Canary;
use trustmesh_testkit::moto::MotoServer;
use trustmesh_testkit::nats::NatsServer;

const WINE: &str = include_str!("../../../examples/wine-noisy.csv");

/// The mesh with its objects in `objects` (`None`: `<data dir>/objects`), delivering webhooks to
/// plain-HTTP receivers on loopback (the operator's allow-list).
async fn start(objects: Option<ObjectStoreSettings>) -> Mesh {
    Mesh::start_with(|settings| {
        if let Some(objects) = objects {
            settings.objects = objects;
        }
        settings.webhooks.allow_destinations = vec!["127.0.0.1/32".parse().unwrap()];
        settings.webhooks.allow_http = true;
    })
    .await
}

/// Postgres as seen by an operator auditing a deletion (`psql`, `pg_dump`).
trait Inspect {
    fn psql(&self, sql: &str) -> String;
    fn pg_dump(&self) -> String;
    fn tenant_rows(&self, tenant: &str) -> Vec<(String, u64)>;
}

impl Inspect for Mesh {
    /// `sql` through `psql`, unaligned, tuples only.
    fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .arg(self.db.url())
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A data-only dump of every schema.
    fn pg_dump(&self) -> String {
        let out = Command::new("pg_dump")
            .args(["--data-only", "--no-owner", "--dbname"])
            .arg(self.db.url())
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `schema.table.column` → rows whose `tenant` / `tenant_id` column is `tenant`, where not 0.
    fn tenant_rows(&self, tenant: &str) -> Vec<(String, u64)> {
        let columns = self.psql(
            "SELECT c.table_schema || '.' || c.table_name || '.' || c.column_name
               FROM information_schema.columns c
               JOIN information_schema.tables t
                 ON t.table_schema = c.table_schema AND t.table_name = c.table_name
              WHERE t.table_type = 'BASE TABLE'
                AND c.column_name IN ('tenant', 'tenant_id')
                AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
              ORDER BY 1",
        );
        let mut rows = Vec::new();
        for column in columns.lines().filter(|l| !l.is_empty()) {
            let parts: Vec<&str> = column.split('.').collect();
            let [schema, table, col] = parts[..] else {
                panic!("{column}")
            };
            let count: u64 = self
                .psql(&format!(
                    "SELECT count(*) FROM \"{schema}\".\"{table}\" WHERE \"{col}\"::text = '{tenant}'"
                ))
                .trim()
                .parse()
                .unwrap();
            if count > 0 {
                rows.push((column.to_owned(), count));
            }
        }
        rows
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0_u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Every message of every stream: (stream, subject, payload).
async fn stream_messages(nats: &NatsServer) -> Vec<(String, String, Vec<u8>)> {
    let js = nats.jetstream().await;
    let mut names = js.stream_names();
    let mut messages = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.unwrap();
        let mut stream = js.get_stream(&name).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(message) = stream.get_raw_message(seq).await {
                messages.push((
                    name.clone(),
                    message.subject.to_string(),
                    message.payload.to_vec(),
                ));
            }
        }
    }
    messages
}

/// The canary's three forms.
fn forms(canary: &Canary) -> [(&'static str, String); 3] {
    [
        ("raw", canary.as_str().to_owned()),
        ("hex", hex(canary.as_bytes())),
        ("base64", base64(canary.as_bytes())),
    ]
}

/// Asserts that no form of the canary is in any table (a dump of every schema), file, message, the
/// mesh's log or a webhook delivery the tenant's receiver got.
async fn assert_canary_nowhere(
    mesh: &Mesh,
    canary: &Canary,
    log_file: &Path,
    received: &Received,
    when: &str,
) {
    assert_eq!(
        canary.scan_postgres(mesh.db.pool()).await.unwrap(),
        [],
        "{when}"
    );
    let dump = mesh.pg_dump();
    let messages = stream_messages(&mesh.nats).await;
    for (form, text) in forms(canary) {
        assert!(
            !dump.contains(&text),
            "{when}: the {form} canary is in the dump"
        );
        for dir in mesh.dirs() {
            for file in files(&dir) {
                let bytes = std::fs::read(&file).unwrap_or_default();
                assert!(
                    !contains(&bytes, text.as_bytes()),
                    "{when}: the {form} canary is in {}",
                    file.display()
                );
            }
        }
        for (stream, subject, payload) in &messages {
            assert!(
                !contains(payload, text.as_bytes()),
                "{when}: the {form} canary is in a message on {subject} in {stream}"
            );
        }
        let log = std::fs::read(log_file).unwrap();
        assert!(
            !contains(&log, text.as_bytes()),
            "{when}: the {form} canary is in the mesh's log"
        );
        for (headers, body) in received.lock().unwrap().iter() {
            assert!(
                !contains(body, text.as_bytes())
                    && !headers
                        .values()
                        .any(|v| contains(v.as_bytes(), text.as_bytes())),
                "{when}: the {form} canary is in a webhook delivery"
            );
        }
    }
}

/// The webhook deliveries a receiver got: headers and body of each request.
type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

async fn receive(State(got): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    got.lock().unwrap().push((headers, body.to_vec()));
    StatusCode::NO_CONTENT
}

/// A webhook receiver on loopback, served until `stop`: its URL and what it receives.
async fn webhook_receiver(stop: CancellationToken) -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });
    (url, received)
}

/// Waits (60 s at most) until the receiver has got a delivery of each of `types`.
async fn wait_deliveries(received: &Received, types: &[&str]) {
    let got = || -> Vec<String> {
        received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| {
                let body: serde_json::Value = serde_json::from_slice(body).unwrap();
                body["type"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    };
    for _ in 0..600 {
        if types.iter().all(|t| got().iter().any(|g| g == t)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("webhook deliveries {:?}, expected {types:?}", got());
}

/// Sends this process's logs (every service of the mesh runs in it) to `path` as JSON lines, the
/// production format, at debug level (more than production's info) except for the transport
/// crates' frame-level chatter.
fn log_to(path: &Path) -> trustmesh_telemetry::TelemetryGuard {
    trustmesh_telemetry::init(
        "tenant-deletion-test",
        &TelemetrySettings {
            log_format: LogFormat::Json,
            log_filter: Some(
                "debug,h2=info,hyper=info,hyper_util=info,tower=info,rustls=info".to_owned(),
            ),
            log_file: Some(path.to_owned()),
            ..TelemetrySettings::default()
        },
    )
    .expect("the one telemetry init of this test binary")
}

/// The JSON pointer of every value inside `value` (members, items and their own contents).
fn fields(value: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    if !at.is_empty() {
        out.push(at.to_owned());
    }
    match value {
        serde_json::Value::Object(map) => {
            for (name, member) in map {
                let name = name.replace('~', "~0").replace('/', "~1");
                fields(member, &format!("{at}/{name}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                fields(item, &format!("{at}/{i}"), out);
            }
        }
        serde_json::Value::Null
        | serde_json::Value::Bool(_)
        | serde_json::Value::Number(_)
        | serde_json::Value::String(_) => {}
    }
}

/// Changes `value`: another string, number or boolean; a string for null; other contents for a
/// container.
fn tamper(value: &mut serde_json::Value) {
    use serde_json::Value;
    *value = match value.take() {
        Value::String(s) => Value::String(format!("{s}x")),
        Value::Number(n) => match n.as_u64() {
            Some(n) => Value::from(n + 1),
            None => Value::from(n.as_f64().unwrap_or_default() + 1.0),
        },
        Value::Bool(b) => Value::Bool(!b),
        Value::Null => Value::from("x"),
        Value::Array(_) => Value::from(vec!["x"]),
        Value::Object(_) => serde_json::json!({"x": 1}),
    };
}

/// Tampering with any one field of the certificate (changing its value, or removing an object
/// member) makes the signature fail, while the untouched document, written out the same way, still
/// verifies: each failure is the tampering's.
fn assert_tampering_fails(document: &serde_json::Value, signature: &[u8], key: &[u8]) {
    let verifies = |doc: &serde_json::Value| {
        trustmesh_deletion::verify_certificate(&serde_json::to_vec(doc).unwrap(), signature, key)
            .is_ok()
    };
    assert!(verifies(document), "the document as re-encoded verifies");
    let mut paths = Vec::new();
    fields(document, "", &mut paths);
    assert!(paths.len() > 30, "{paths:?}");
    for path in &paths {
        let mut changed = document.clone();
        tamper(changed.pointer_mut(path).unwrap());
        assert!(!verifies(&changed), "changing {path} went unnoticed");
        let (parent, member) = path.rsplit_once('/').unwrap();
        let mut removed = document.clone();
        if let Some(map) = removed.pointer_mut(parent).and_then(|p| p.as_object_mut()) {
            map.remove(&member.replace("~1", "/").replace("~0", "~"));
            assert!(!verifies(&removed), "removing {path} went unnoticed");
        }
    }
    let mut added = document.clone();
    added["note"] = serde_json::Value::from("added");
    assert!(!verifies(&added), "an added field went unnoticed");
}

/// Every row of `dataset`, as the encoded ReadRows responses.
async fn read_rows(user: &Client, dataset: &str) -> Vec<u8> {
    let mut rows = user
        .datasets()
        .read_rows(ReadRowsRequest {
            name: dataset.to_owned(),
            ..ReadRowsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(batch) = rows.message().await.unwrap() {
        bytes.extend(batch.encode_to_vec());
    }
    assert!(!bytes.is_empty());
    bytes
}

/// Runs an analysis of `dataset` to SUCCEEDED; returns its report.
async fn analyse(user: &Client, dataset: &str) -> Report {
    let job = user
        .analysis()
        .start_analysis(StartAnalysisRequest {
            dataset: dataset.to_owned(),
            label_column: "label".to_owned(),
            task_type: TaskType::Classification.into(),
            ..StartAnalysisRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let job = tokio::time::timeout(Duration::from_secs(300), user.wait_job(&job.name, |_| {}))
        .await
        .expect("the analysis finishes")
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    user.trust()
        .get_report(GetReportRequest { name: job.output })
        .await
        .unwrap()
        .into_inner()
}

/// The operator waits for `deletion`'s certificate (the operator reads no deletion, but may fetch
/// certificates: they outlive the tenant).
async fn wait_certificate(mesh: &Mesh, deletion: &str) -> DeletionCertificate {
    for _ in 0..600 {
        match mesh
            .operator
            .deletion()
            .get_deletion_certificate(GetDeletionCertificateRequest {
                name: format!("{deletion}/certificate"),
            })
            .await
        {
            Ok(certificate) => return certificate.into_inner(),
            Err(status)
                if status.code() == Code::FailedPrecondition
                    && status.message().contains("still waiting") =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!(
                "the deletion did not complete: {status:?}\n{}\n{}",
                mesh.psql("SELECT error_code, error_message FROM deletion.deletions"),
                mesh.psql("SELECT service, deleted, residue FROM deletion.receipts"),
            ),
        }
    }
    panic!("no certificate for {deletion} after 120 s")
}

#[tokio::test]
async fn a_deleted_tenant_leaves_no_rows_objects_messages_or_canary_and_others_stay_intact() {
    let logs = tempfile::tempdir().unwrap();
    let log_file = logs.path().join("mesh.log");
    let _telemetry = log_to(&log_file);
    let mut mesh = start(None).await;
    let acme = mesh.tenant_with_key("acme").await;
    let keep = mesh.tenant_with_key("keep").await;

    // acme's webhook endpoint, for every event type, at a local receiver.
    let stop_receiver = CancellationToken::new();
    let (hook_url, received) = webhook_receiver(stop_receiver.clone()).await;
    acme.create_webhook(&hook_url, &[], "canary flow")
        .await
        .unwrap();

    // acme's data: three row ids are the canary, raw, hex and base64.
    let canary = Canary::new();
    let [(_, raw), (_, hex_form), (_, b64_form)] = forms(&canary);
    let csv = WINE
        .replacen("\n0,", &format!("\n{raw},"), 1)
        .replacen("\n1,", &format!("\n{hex_form},"), 1)
        .replacen("\n2,", &format!("\n{b64_form},"), 1);
    assert_eq!(csv.matches(canary.as_str()).count(), 1);
    let first = once_known(|| acme.upload_csv("wine", csv.clone().into_bytes(), "row_id"))
        .await
        .unwrap();
    assert_eq!(first.row_count, 178);
    let acme_report = analyse(&acme, &first.name).await;
    assert_eq!(acme_report.analyzed_row_count, 178);

    // Corrections, then the cleanset export: the canary goes back to acme, and nowhere else.
    acme.trust()
        .set_corrections(SetCorrectionsRequest {
            parent: acme_report.name.clone(),
            corrections: vec![
                Correction {
                    row_index: 3,
                    action: CorrectionAction::Relabel.into(),
                    corrected_label: "class_1".to_owned(),
                    ..Correction::default()
                },
                Correction {
                    row_index: 4,
                    action: CorrectionAction::Exclude.into(),
                    ..Correction::default()
                },
            ],
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap();
    let mut export = Vec::new();
    let exported = acme
        .export_cleanset(
            &acme_report.name,
            ExportOptions {
                apply_corrections: true,
                include_quality_columns: true,
                ..ExportOptions::default()
            },
            &mut export,
        )
        .await
        .unwrap();
    assert_eq!(exported.bytes, export.len() as u64);
    for (form, text) in forms(&canary) {
        assert!(
            contains(&export, text.as_bytes()),
            "the export has the {form} canary"
        );
    }
    // The second dataset holds the canary too, so the tenant deletion has it to remove.
    let second = acme
        .upload_csv("wine-2", csv.clone().into_bytes(), "row_id")
        .await
        .unwrap();

    let kept = once_known(|| keep.upload_csv("kept", WINE.as_bytes().to_vec(), "row_id"))
        .await
        .unwrap();
    let keep_report = analyse(&keep, &kept.name).await;
    let keep_rows = read_rows(&keep, &kept.name).await;

    // acme's receiver got its deliveries, which the notifier keeps as rows.
    wait_deliveries(&received, &["dataset.ingested", "job.succeeded"]).await;
    assert!(
        mesh.tenant_rows("acme")
            .iter()
            .any(|(column, n)| column.starts_with("notifier.")
                && column.contains("deliver")
                && *n > 0),
        "acme has webhook delivery rows: {:?}",
        mesh.tenant_rows("acme")
    );

    assert_canary_nowhere(&mesh, &canary, &log_file, &received, "before any deletion").await;

    // Deleting acme's first dataset leaves its second one byte for byte.
    let second_rows = read_rows(&acme, &second.name).await;
    let job = acme
        .deletion()
        .delete_dataset(DeleteDatasetRequest {
            name: first.name.clone(),
            reason: "gdpr-art-17".to_owned(),
            ..DeleteDatasetRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let deletion = acme
        .wait_deletion(&job.output, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(deletion.state(), DeletionState::Completed, "{deletion:?}");
    let status = acme
        .datasets()
        .get_dataset(GetDatasetRequest {
            name: first.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let second_after = acme
        .datasets()
        .get_dataset(GetDatasetRequest {
            name: second.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second_after.sha256, second.sha256);
    assert_eq!(second_after.row_count, 178);
    assert_eq!(read_rows(&acme, &second.name).await, second_rows);
    wait_deliveries(&received, &["deletion.completed"]).await;

    // Before the tenant deletion, acme has messages in the streams besides the audit log.
    let before = stream_messages(&mesh.nats).await;
    assert!(
        before
            .iter()
            .any(|(stream, subject, _)| stream != "TM_AUDIT" && subject.starts_with("tm.acme.")),
        "acme has messages to purge"
    );

    // The operator deletes the tenant; a confirmation naming another tenant is refused.
    let status = mesh
        .operator
        .deletion()
        .delete_tenant(DeleteTenantRequest {
            name: "tenants/acme".to_owned(),
            reason: "offboarding".to_owned(),
            confirm_tenant_id: "keep".to_owned(),
            ..DeleteTenantRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let job = mesh
        .operator
        .deletion()
        .delete_tenant(DeleteTenantRequest {
            name: "tenants/acme".to_owned(),
            reason: "offboarding".to_owned(),
            confirm_tenant_id: "acme".to_owned(),
            ..DeleteTenantRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let deletion = job.output.clone();
    let certificate = wait_certificate(&mesh, &deletion).await;
    let keys = mesh
        .operator
        .deletion()
        .list_certificate_signing_keys(ListCertificateSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    let key = keys
        .keys
        .iter()
        .find(|k| k.key_id == certificate.key_id)
        .expect("the signing key is published");
    trustmesh_deletion::verify_certificate(
        &certificate.certificate,
        &certificate.signature,
        &key.public_key,
    )
    .unwrap();
    let mut tampered = certificate.certificate.clone();
    tampered[10] ^= 1;
    assert!(
        trustmesh_deletion::verify_certificate(&tampered, &certificate.signature, &key.public_key)
            .is_err()
    );
    let document: serde_json::Value = serde_json::from_slice(&certificate.certificate).unwrap();
    assert_tampering_fails(&document, &certificate.signature, &key.public_key);
    assert_eq!(document["tenant"], "acme", "{document}");
    assert_eq!(document["scope"], "tenant", "{document}");
    let receipts = document["receipts"].as_array().unwrap();
    let services: Vec<&str> = receipts
        .iter()
        .map(|r| r["service"].as_str().unwrap())
        .collect();
    for service in [
        "analysis",
        "audit",
        "deletion",
        "ingest",
        "notifier",
        "tenancy",
        "trust-scoring",
    ] {
        assert!(services.contains(&service), "no {service} in {document}");
    }
    assert!(
        receipts.iter().all(|r| r["residue_found"] == false),
        "{document}"
    );
    // The deletion service's own receipt: the tenant's messages purged from each stream but TM_AUDIT.
    let purge = receipts
        .iter()
        .find(|r| r["service"] == "deletion")
        .unwrap();
    let purged = purge["deleted"].as_object().unwrap();
    assert!(purged.contains_key("stream:TM_DATASET"), "{document}");
    assert!(!purged.contains_key("stream:TM_AUDIT"), "{document}");
    assert!(
        purged.values().map(|n| n.as_u64().unwrap()).sum::<u64>() > 0,
        "{document}"
    );

    // (a) No row names acme in any table of any schema, except what is kept by design:
    // - `audit.*`: the audit log, content-free (who, what action, which resource name, outcome),
    //   kept as a tombstoned record after a tenant deletion (issue 8, audit retention policy);
    // - `deletion.deletions`: the deletion's own record, which the certificate (also kept, keyed
    //   by deletion id) proves; the operator fetches the certificate after the tenant is gone;
    // - `<service>.deks`: crypto-shredding tombstones (`libs/store`: destroying a tenant's keys
    //   erases `wrapped` and keeps the row as the record of when it happened), checked below to
    //   hold no key material.
    let allowed = |column: &str| {
        column.starts_with("audit.")
            || column == "deletion.deletions.tenant"
            || column.ends_with(".deks.tenant")
    };
    let rows = mesh.tenant_rows("acme");
    let left: Vec<&(String, u64)> = rows.iter().filter(|(column, _)| !allowed(column)).collect();
    assert_eq!(left, Vec::<&(String, u64)>::new(), "rows of acme remain");
    for (column, _) in rows.iter().filter(|(c, _)| c.ends_with(".deks.tenant")) {
        let schema = column.split('.').next().unwrap();
        let keys = mesh.psql(&format!(
            "SELECT count(*) FROM \"{schema}\".deks
              WHERE tenant = 'acme' AND (wrapped IS NOT NULL OR destroyed_at IS NULL)"
        ));
        assert_eq!(keys.trim(), "0", "live DEKs of acme in {schema}");
    }
    assert!(!mesh.tenant_rows("keep").is_empty());

    // (b) No object of acme.
    let objects: Vec<PathBuf> = files(&mesh.data_dir.path().join("objects"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("acme"))
        .collect();
    assert_eq!(objects, Vec::<PathBuf>::new(), "objects of acme remain");

    // (c) No message of acme in any stream but TM_AUDIT (the content-free audit log), except the
    // deletion's own `deletion.completed` (ids only: the deletion, its target and certificate),
    // published after the purge with the certificate. The request and receipts are purged: their
    // content is in the signed certificate.
    let messages = stream_messages(&mesh.nats).await;
    let left: Vec<(String, String)> = messages
        .iter()
        .filter(|(stream, subject, _)| {
            subject.starts_with("tm.acme.")
                && stream != "TM_AUDIT"
                && !(stream == "TM_DELETION" && subject == "tm.acme.deletion.completed")
        })
        .map(|(stream, subject, _)| (stream.clone(), subject.clone()))
        .collect();
    assert_eq!(left, [], "messages of acme remain");
    assert!(
        messages
            .iter()
            .any(|(stream, subject, _)| stream != "TM_AUDIT" && subject.starts_with("tm.keep.")),
        "keep's messages stay"
    );

    // (d) The canary, in any form, is nowhere.
    assert_canary_nowhere(
        &mesh,
        &canary,
        &log_file,
        &received,
        "after the tenant deletion",
    )
    .await;
    // The log scanned is the mesh's, at debug level: not an empty file.
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("\"level\":\"DEBUG\""), "{}", log.len());

    // (e) keep's dataset and report are intact.
    assert_eq!(read_rows(&keep, &kept.name).await, keep_rows);
    let report = keep
        .trust()
        .get_report(GetReportRequest {
            name: keep_report.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report, keep_report);

    // (f) acme's key is refused.
    let mut code = Code::Ok;
    for _ in 0..50 {
        code = match acme
            .datasets()
            .get_dataset(GetDatasetRequest {
                name: second.name.clone(),
            })
            .await
        {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        if code == Code::Unauthenticated {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code, Code::Unauthenticated);
    mesh.stop().await;
    stop_receiver.cancel();
}

/// The object versions and delete markers of `tenant` in the bucket (keys `<service>/<tenant>/..`),
/// counted per service, straight from ListObjectVersions (not through the store under test).
async fn versions_of(bucket: &S3Store, tenant: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let page = bucket
            .client()
            .list_object_versions()
            .bucket(bucket.bucket())
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .unwrap();
        let keys = page
            .versions()
            .iter()
            .filter_map(|v| v.key())
            .chain(page.delete_markers().iter().filter_map(|m| m.key()));
        for key in keys {
            let mut segments = key.split('/');
            if let (Some(service), Some(owner)) = (segments.next(), segments.next())
                && owner == tenant
            {
                *out.entry(service.to_owned()).or_default() += 1;
            }
        }
        if !page.is_truncated().unwrap_or(false) {
            return out;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        version_marker = page.next_version_id_marker().map(str::to_owned);
    }
}

#[tokio::test]
async fn a_tenant_deletion_on_a_versioned_bucket_leaves_no_version_or_delete_marker() {
    let moto = MotoServer::start().await;
    let s3 = S3Settings::compatible(
        moto.endpoint(),
        moto.region(),
        "trustmesh",
        moto.access_key(),
        moto.secret_key(),
    );
    let bucket = S3Store::connect(&s3).await.unwrap();
    bucket
        .client()
        .put_bucket_versioning()
        .bucket(bucket.bucket())
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut mesh = start(Some(ObjectStoreSettings::S3 {
        endpoint: Some(moto.endpoint()),
        region: moto.region().to_owned(),
        bucket: "trustmesh".to_owned(),
        access_key_id: moto.access_key().to_owned(),
        secret_access_key: SecretString::from(moto.secret_key().to_owned()),
        create_bucket: false,
    }))
    .await;
    let acme = mesh.tenant_with_key("acme").await;
    let keep = mesh.tenant_with_key("keep").await;
    let first = once_known(|| acme.upload_csv("wine", WINE.as_bytes().to_vec(), "row_id"))
        .await
        .unwrap();
    analyse(&acme, &first.name).await;
    let kept = once_known(|| keep.upload_csv("kept", WINE.as_bytes().to_vec(), "row_id"))
        .await
        .unwrap();
    let keep_rows = read_rows(&keep, &kept.name).await;

    // Older versions of each of acme's objects (as a restore or sync tool rewriting them leaves),
    // and a delete marker hiding one more.
    for meta in bucket.list(&ObjectPrefix::new("").unwrap()).await.unwrap() {
        if meta.key.as_str().contains("/acme/") {
            let bytes = bucket.get(&meta.key).await.unwrap();
            bucket.put(&meta.key, bytes).await.unwrap();
        }
    }
    let hidden = trustmesh_store::ObjectKey::new("ingest/acme/stray/v1").unwrap();
    bucket
        .put(&hidden, Bytes::from_static(b"hidden"))
        .await
        .unwrap();
    bucket
        .client()
        .delete_object()
        .bucket(bucket.bucket())
        .key(hidden.as_str())
        .send()
        .await
        .unwrap();
    let before = versions_of(&bucket, "acme").await;
    assert!(
        before.contains_key("ingest") && before.contains_key("analysis"),
        "{before:?}"
    );
    let keep_before = versions_of(&bucket, "keep").await;
    assert!(!keep_before.is_empty());

    let job = mesh
        .operator
        .deletion()
        .delete_tenant(DeleteTenantRequest {
            name: "tenants/acme".to_owned(),
            reason: "offboarding".to_owned(),
            confirm_tenant_id: "acme".to_owned(),
            ..DeleteTenantRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let certificate = wait_certificate(&mesh, &job.output).await;
    let document: serde_json::Value = serde_json::from_slice(&certificate.certificate).unwrap();
    assert!(
        document["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["residue_found"] == false),
        "{document}"
    );
    assert_eq!(
        versions_of(&bucket, "acme").await,
        BTreeMap::new(),
        "versions or delete markers of acme remain"
    );
    assert_eq!(versions_of(&bucket, "keep").await, keep_before);
    assert_eq!(read_rows(&keep, &kept.name).await, keep_rows);
    mesh.stop().await;
}
