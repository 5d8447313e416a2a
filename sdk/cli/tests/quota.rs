//! Per-tenant quotas end to end on the standalone mesh (real nats-server and Postgres): the
//! operator sets them (`trustmesh quota set`, a tenant admin may only `get`), they reach every
//! service through `tm_auth`, and each is enforced where it is counted — stored bytes by ingest,
//! concurrent jobs by analysis, requests per minute by the auth layer — with RESOURCE_EXHAUSTED,
//! a `QuotaFailure` and (where waiting helps) a `RetryInfo`, while another tenant is untouched.
//! Every refusal is in the tenant's audit log: the handlers' as DENIED `QUOTA_EXCEEDED`, the auth
//! layer's rate refusals aggregated per second with their count.
//!
//! GetQuota's `usage` (and `trustmesh quota get`) says what the tenant uses, as ingest and analysis
//! last reported it: its datasets and their stored bytes after uploads and a deletion, its jobs
//! while they are queued or running, and never another tenant's.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::mesh::Mesh;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tonic::Code;
use tonic_types::StatusExt as _;
use trustmesh_events::permissions::USAGE_KV_BUCKET;
use trustmesh_proto::v1::{
    AuditRecord, GetDatasetRequest, JobState, ListDatasetsRequest, ListEventsRequest, QuotaUsage,
    Scope, StartAnalysisRequest, TaskType,
};
use trustmesh_runtime::{ExposeSecret as _, SecretString};
use trustmesh_sdk::{Client, QuotaChange, RetryPolicy, Upload};

const WINE: &str = include_str!("../../../examples/wine-noisy.csv");

/// Runs `trustmesh quota ARGS --json` with `secret` against `endpoint` in `tenant`.
async fn cli(endpoint: &str, tenant: &str, secret: &str, args: &[&str]) -> (i32, Value) {
    let config = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .arg("quota")
        .args(args)
        .args(["--json", "--endpoint", endpoint, "--tenant", tenant])
        .env("TRUSTMESH_CONFIG", config.path().join("config.toml"))
        .env("TRUSTMESH_API_KEY", secret)
        .env_remove("TRUSTMESH_PROFILE")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value =
        serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), value)
}

fn no_retry(client: &Client) -> Client {
    client.clone().with_retry(RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    })
}

/// The tenant's audit events, once `done` holds for them.
async fn audit_events(user: &Client, done: impl Fn(&[AuditRecord]) -> bool) -> Vec<AuditRecord> {
    let mut events = Vec::new();
    for _ in 0..60 {
        events = user
            .audit()
            .list_events(ListEventsRequest {
                parent: user.parent().unwrap(),
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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    events
}

#[tokio::test]
async fn quotas_are_set_by_the_operator_and_enforced_per_tenant() {
    let mut mesh = Mesh::start().await;
    let operator_secret = mesh.operator_credential.expose_secret().to_owned();
    let (endpoint, operator) = (mesh.endpoint.clone(), mesh.operator.clone());

    let lifetime = Duration::from_secs(3600);
    operator.create_tenant("quota-a", "quota-a").await.unwrap();
    let (_, secret_a) = operator
        .clone()
        .with_tenant("quota-a")
        .create_api_key("admin", &[Scope::Admin], lifetime)
        .await
        .unwrap();
    let secret_a = secret_a.expose_secret().to_owned();
    let a = no_retry(
        &operator
            .as_credential(&SecretString::from(secret_a.clone()))
            .unwrap()
            .with_tenant("quota-a"),
    );
    let (_, b) = operator
        .create_tenant_with_key("quota-b", "quota-b", &[Scope::Admin], lifetime)
        .await
        .unwrap();
    let b = no_retry(&b);

    // The CLI: the tenant admin reads the defaults and may not change them; the operator may.
    let (code, quota) = cli(&endpoint, "quota-a", &secret_a, &["get"]).await;
    assert_eq!(code, 0, "{quota}");
    assert_eq!(quota["name"], "tenants/quota-a/quota");
    assert_eq!(quota["max_requests_per_minute"], 6000);
    assert_eq!(quota["max_concurrent_jobs"], 20);
    assert_eq!(quota["max_storage_bytes"], 100_u64 << 30);
    let (code, _) = cli(
        &endpoint,
        "quota-a",
        &secret_a,
        &["set", "--concurrent-jobs", "1"],
    )
    .await;
    assert_eq!(code, 3, "a tenant admin may not change its quota");
    let limit = WINE.len() as u64 + WINE.len() as u64 / 2;
    let (code, quota) = cli(
        &endpoint,
        "quota-a",
        &operator_secret,
        &[
            "set",
            "--concurrent-jobs",
            "1",
            "--storage-bytes",
            &limit.to_string(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{quota}");
    assert_eq!(quota["max_concurrent_jobs"], 1);
    assert_eq!(quota["max_storage_bytes"], limit);
    assert_eq!(quota["max_requests_per_minute"], 6000);

    // Stored bytes (ingest): one upload fits, a second would exceed the limit; tenant b's does not.
    let first = a
        .upload_csv("wine", WINE.as_bytes().to_vec(), "row_id")
        .await
        .unwrap();
    let refused = a
        .upload_csv("wine-2", WINE.as_bytes().to_vec(), "row_id")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::ResourceExhausted), "{refused}");
    b.upload_csv("wine", WINE.as_bytes().to_vec(), "row_id")
        .await
        .unwrap();
    b.upload_csv("wine-2", WINE.as_bytes().to_vec(), "row_id")
        .await
        .unwrap();
    // Uploads finishing together: room for one more, two start, and both pass the checks made as
    // they arrive (against what is stored so far); when they are recorded one is stored and the
    // other refused, since that last check takes the tenant's turn.
    let room = 3 * WINE.len() as u64 + WINE.len() as u64 / 2;
    operator
        .clone()
        .with_tenant("quota-b")
        .update_quota(QuotaChange {
            max_storage_bytes: Some(room),
            ..QuotaChange::default()
        })
        .await
        .unwrap();
    let (mut writer_1, reader_1) = tokio::io::duplex(WINE.len());
    let (mut writer_2, reader_2) = tokio::io::duplex(WINE.len());
    let size = Some(WINE.len() as u64);
    let (first_racer, second_racer, ()) = tokio::join!(
        b.upload_reader(
            reader_1,
            size,
            Upload::csv("racing-1").id_column("row_id"),
            drop
        ),
        b.upload_reader(
            reader_2,
            size,
            Upload::csv("racing-2").id_column("row_id"),
            drop
        ),
        async {
            // By now both have sent their metadata and been admitted by their declared size.
            tokio::time::sleep(Duration::from_millis(500)).await;
            for writer in [&mut writer_1, &mut writer_2] {
                writer.write_all(WINE.as_bytes()).await.unwrap();
                writer.shutdown().await.unwrap();
            }
        }
    );
    let refused: Vec<_> = [first_racer, second_racer]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "one of the racing uploads refused: {refused:?}"
    );
    assert_eq!(
        refused[0].code(),
        Some(Code::ResourceExhausted),
        "{}",
        refused[0]
    );

    // Concurrent jobs (analysis): a second job while the first is queued or running is refused.
    let start = StartAnalysisRequest {
        dataset: first.name.clone(),
        label_column: "label".to_owned(),
        task_type: TaskType::Classification.into(),
        ..StartAnalysisRequest::default()
    };
    let mut refused_job = None;
    for _ in 0..5 {
        let job = a.start_analysis(start.clone()).await.unwrap();
        let second = a.analysis().start_analysis(start.clone()).await;
        job.wait().await.unwrap();
        if let Err(status) = second {
            refused_job = Some(status);
            break;
        }
    }
    let status = refused_job.expect("a second concurrent job refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let failure = status.get_details_quota_failure().expect("a QuotaFailure");
    assert_eq!(failure.violations[0].subject, "tenants/quota-a");
    assert!(
        failure.violations[0]
            .description
            .starts_with("max_concurrent_jobs: 1 of 1")
    );
    assert!(status.get_details_retry_info().is_some());
    // Once the first has ended, a job starts again.
    a.start_analysis(start.clone())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    // Starts racing each other, with no job running: counted and inserted as one step under the
    // tenant's turn, so one is admitted and the other refused.
    let racing = || async { a.analysis().start_analysis(start.clone()).await };
    let (one, two) = tokio::join!(racing(), racing());
    let (admitted, refused): (Vec<_>, Vec<_>) = [one, two].into_iter().partition(Result::is_ok);
    assert_eq!(admitted.len(), 1, "one racing start refused: {refused:?}");
    let refused = refused.into_iter().next().unwrap().unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let admitted = admitted.into_iter().next().unwrap().unwrap().into_inner();
    a.wait_job(&admitted.name, |_| {}).await.unwrap();

    // Requests per minute (the auth layer): 60 a minute is a burst of 2, then refusals.
    operator
        .clone()
        .with_tenant("quota-a")
        .update_quota(QuotaChange {
            max_requests_per_minute: Some(60),
            ..QuotaChange::default()
        })
        .await
        .unwrap();
    let get = GetDatasetRequest {
        name: first.name.clone(),
    };
    let mut rate_refusals = 0_u64;
    let mut status = None;
    for _ in 0..200 {
        if let Err(refused) = a.datasets().get_dataset(get.clone()).await {
            rate_refusals += 1;
            status = Some(refused);
        }
        if rate_refusals >= 20 {
            break;
        }
    }
    let status = status.expect("the rate refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry = status.get_details_retry_info().expect("a RetryInfo");
    assert!(
        retry
            .retry_delay
            .is_some_and(|d| d <= Duration::from_secs(1))
    );
    assert!(status.get_details_quota_failure().is_some());
    // Tenant b is on the default rate, untouched.
    for _ in 0..20 {
        b.get_dataset("00000000-0000-0000-0000-000000000000")
            .await
            .map(drop)
            .or_else(|e| {
                if e.code() == Some(Code::NotFound) {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .unwrap();
    }

    // Back on the default rate to read the audit log: every refusal is there.
    operator
        .clone()
        .with_tenant("quota-a")
        .update_quota(QuotaChange {
            max_requests_per_minute: Some(0),
            ..QuotaChange::default()
        })
        .await
        .unwrap();
    let counted = |events: &[AuditRecord]| -> u64 {
        events
            .iter()
            .filter(|e| e.action == "requests.refused" && e.reason == "RATE_LIMITED")
            .map(|e| e.records_affected)
            .sum()
    };
    let events = audit_events(&a, |events| counted(events) >= rate_refusals).await;
    assert_eq!(
        counted(&events),
        rate_refusals,
        "every rate refusal audited"
    );
    // Aggregated: fewer events than refusals.
    let rate_events = events
        .iter()
        .filter(|e| e.action == "requests.refused")
        .count() as u64;
    assert!(rate_events < rate_refusals, "{rate_events} events");
    for action in ["datasets.upload", "analysis.start"] {
        assert!(
            events
                .iter()
                .any(|e| e.action == action && e.reason == "QUOTA_EXCEEDED"),
            "{action} refusal audited"
        );
    }

    mesh.stop().await;
}

/// What the tenant's datasets are, counted from ListDatasets: how many, and their bytes.
async fn listed_datasets(user: &Client) -> (u64, u64) {
    let datasets = user
        .datasets()
        .list_datasets(ListDatasetsRequest {
            parent: user.parent().unwrap(),
            page_size: 1000,
            ..ListDatasetsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .datasets;
    (
        datasets.len() as u64,
        datasets.iter().map(|d| d.size_bytes).sum(),
    )
}

/// The tenant's usage once `done` holds for it (reports follow a change within moments).
async fn usage_once(user: &Client, done: impl Fn(&QuotaUsage) -> bool) -> QuotaUsage {
    let mut usage = QuotaUsage::default();
    for _ in 0..100 {
        usage = user.get_quota().await.unwrap().usage.expect("usage filled");
        if done(&usage) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    usage
}

#[tokio::test]
async fn usage_counts_each_tenants_datasets_bytes_and_active_jobs() {
    let mut mesh = Mesh::start().await;
    let (endpoint, operator) = (mesh.endpoint.clone(), mesh.operator.clone());
    let lifetime = Duration::from_secs(3600);
    let (_, a) = operator
        .create_tenant_with_key("usage-a", "usage-a", &[Scope::Admin], lifetime)
        .await
        .unwrap();
    operator.create_tenant("usage-b", "usage-b").await.unwrap();
    let (_, secret_b) = operator
        .clone()
        .with_tenant("usage-b")
        .create_api_key("admin", &[Scope::Admin], lifetime)
        .await
        .unwrap();
    let secret_b = secret_b.expose_secret().to_owned();
    let b = operator
        .as_credential(&SecretString::from(secret_b.clone()))
        .unwrap()
        .with_tenant("usage-b");

    // Nothing yet.
    assert_eq!(
        a.get_quota().await.unwrap().usage,
        Some(QuotaUsage::default())
    );

    // Uploads: a has two datasets, b one; each sees its own.
    let first = a
        .upload_csv("wine", WINE.as_bytes().to_vec(), "row_id")
        .await
        .unwrap();
    a.upload_csv("wine-2", WINE.as_bytes().to_vec(), "row_id")
        .await
        .unwrap();
    b.upload_csv("wine", WINE.as_bytes().to_vec(), "row_id")
        .await
        .unwrap();
    let (datasets_a, bytes_a) = listed_datasets(&a).await;
    assert_eq!(datasets_a, 2);
    assert!(bytes_a >= 2 * WINE.len() as u64, "{bytes_a}");
    let usage = usage_once(&a, |u| u.datasets == datasets_a).await;
    assert_eq!(
        usage,
        QuotaUsage {
            datasets: datasets_a,
            storage_bytes: bytes_a,
            concurrent_jobs: 0
        }
    );
    let (datasets_b, bytes_b) = listed_datasets(&b).await;
    assert_eq!(datasets_b, 1);
    assert_eq!(
        usage_once(&b, |u| u.datasets == datasets_b).await,
        QuotaUsage {
            datasets: datasets_b,
            storage_bytes: bytes_b,
            concurrent_jobs: 0
        }
    );

    // The CLI shows it too.
    let (code, quota) = cli(&endpoint, "usage-b", &secret_b, &["get"]).await;
    assert_eq!(code, 0, "{quota}");
    assert_eq!(quota["usage"]["datasets"], datasets_b);
    assert_eq!(quota["usage"]["storage_bytes"], bytes_b);
    assert_eq!(quota["usage"]["concurrent_jobs"], 0);

    // Jobs: while a's job is queued or running (still so after GetQuota answered, so it was then),
    // a counts it and b does not; once it ends, neither.
    let start = StartAnalysisRequest {
        dataset: first.name.clone(),
        label_column: "label".to_owned(),
        task_type: TaskType::Classification.into(),
        ..StartAnalysisRequest::default()
    };
    let mut seen_active = false;
    for _ in 0..5 {
        let job = a.start_analysis(start.clone()).await.unwrap();
        let usage = a.get_quota().await.unwrap().usage.expect("usage filled");
        let state = a.get_job(&job.job().name).await.unwrap().state();
        if matches!(state, JobState::Queued | JobState::Running) {
            assert_eq!(usage.concurrent_jobs, 1, "{usage:?}");
            seen_active = true;
        }
        assert_eq!(
            b.get_quota()
                .await
                .unwrap()
                .usage
                .expect("usage filled")
                .concurrent_jobs,
            0
        );
        job.wait().await.unwrap();
        assert_eq!(
            usage_once(&a, |u| u.concurrent_jobs == 0)
                .await
                .concurrent_jobs,
            0
        );
        if seen_active {
            break;
        }
    }
    assert!(seen_active, "a job seen queued or running");

    // A deletion: a's dataset and its bytes leave its usage; b's stay.
    a.delete_dataset(&first.name, "usage test").await.unwrap();
    let (datasets_left, bytes_left) = {
        let mut listed = listed_datasets(&a).await;
        for _ in 0..100 {
            if listed.0 == datasets_a - 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            listed = listed_datasets(&a).await;
        }
        listed
    };
    assert_eq!(datasets_left, datasets_a - 1);
    assert_eq!(
        usage_once(&a, |u| u.datasets == datasets_left).await,
        QuotaUsage {
            datasets: datasets_left,
            storage_bytes: bytes_left,
            concurrent_jobs: 0
        }
    );
    assert_eq!(
        b.get_quota().await.unwrap().usage.expect("usage filled"),
        QuotaUsage {
            datasets: datasets_b,
            storage_bytes: bytes_b,
            concurrent_jobs: 0
        }
    );

    // A report lost to a crash (the change committed, its report never sent) leaves a stale count;
    // a restart reports every tenant again.
    let usage_kv = mesh
        .nats
        .jetstream()
        .await
        .get_key_value(USAGE_KV_BUCKET)
        .await
        .unwrap();
    usage_kv
        .put(
            "usage-b.ingest",
            br#"{"datasets":99,"storage_bytes":1}"#.to_vec().into(),
        )
        .await
        .unwrap();
    assert_eq!(b.get_quota().await.unwrap().usage.unwrap().datasets, 99);
    mesh.restart().await;
    let current = QuotaUsage {
        datasets: datasets_b,
        storage_bytes: bytes_b,
        concurrent_jobs: 0,
    };
    assert_eq!(usage_once(&b, |u| u.datasets == datasets_b).await, current);

    // Once b is deleted, ingest and analysis purge its keys; a's stay.
    b.delete_tenant("usage test").await.unwrap();
    let mut left = Vec::new();
    for _ in 0..300 {
        left.clear();
        for service in ["ingest", "analysis"] {
            let key = format!("usage-b.{service}");
            if usage_kv.get(&key).await.unwrap().is_some() {
                left.push(key);
            }
        }
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "a deleted tenant's usage stays: {left:?}");
    assert!(usage_kv.get("usage-a.ingest").await.unwrap().is_some());

    mesh.stop().await;
}
