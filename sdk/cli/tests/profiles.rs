//! The deployment profiles of infra/README.md ("Deployment profiles") on the multi-process layout
//! (`common::layout`: every service its own process, configured by environment variables, over a
//! 3-node NATS cluster). Build the service binaries first:
//!
//! ```text
//! cargo build --workspace --bins && cargo test -p trustmesh-cli --test profiles
//! ```
//!
//! Dedicated: tenant `vip` has its own `analysis` replica (own durables, database, bucket and
//! key-encryption key), the two shared replicas leave its work to it, `vip`'s analysis calls go to
//! that replica (an ingress routing by host), and trust-scoring reads `vip`'s model outputs from
//! it. Deleting `vip`'s dataset, then `vip`, is carried out by that replica in its own database
//! and bucket (its keys destroyed there). Every process connects to Postgres as its own role, the
//! dedicated replica as the `analysis` role in its own database, so row-level security applies.
//!
//! Single-tenant: tenancy without an operator credential creates tenant `solo` and its first admin
//! key at start; that key runs a job end to end, and the operator's RPCs are refused.

mod common;

use std::path::Path;
use std::time::Duration;

use common::layout::{Clients, Layout, Process, http_body, log_tail};
use trustmesh_proto::v1::{
    AnalysisOptions, CreateTenantRequest, DeleteTenantRequest, DeletionState, JobState,
    StartAnalysisRequest, TaskType,
};
use trustmesh_sdk::once_known;
use trustmesh_testkit::data::synthetic_csv;
use trustmesh_testkit::postgres::TestDatabase;

/// Rows of each analyzed dataset: below the fold fan-out threshold, so a job trains in the replica
/// that took it.
const ROWS: usize = 1_000;
/// Jobs of each tenant.
const JOBS: usize = 2;
/// How long a small analysis may take on a loaded machine.
const JOB_TIMEOUT: Duration = Duration::from_secs(180);
/// What an `analysis` replica logs once per job it ran.
const STORED: &str = "The analysis job stored its model outputs.";

/// Uploads a dataset as `user` and starts [`JOBS`] analyses of it; the dataset's name and theirs.
async fn start_jobs(user: &Clients, name: &str) -> (String, Vec<String>) {
    let dataset = once_known(|| {
        user.ingest
            .upload_csv(name, synthetic_csv(ROWS, 4, 0), "row_id")
    })
    .await
    .unwrap();
    let mut jobs = Vec::new();
    for _ in 0..JOBS {
        let request = StartAnalysisRequest {
            dataset: dataset.name.clone(),
            label_column: "label".to_owned(),
            task_type: TaskType::Classification.into(),
            options: Some(AnalysisOptions {
                cv_folds: 3,
                ..AnalysisOptions::default()
            }),
            ..StartAnalysisRequest::default()
        };
        let analysis = user.analysis.start_analysis(request).await.unwrap();
        jobs.push(analysis.name().to_owned());
    }
    (dataset.name, jobs)
}

/// `tenant`'s analysis data-encryption keys in `db` not yet destroyed.
async fn live_deks(db: &TestDatabase, tenant: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM analysis.deks WHERE tenant = $1 AND wrapped IS NOT NULL",
    )
    .bind(tenant)
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// `tenant`'s rows in `db`'s `analysis.jobs`.
async fn jobs_in(db: &TestDatabase, tenant: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM analysis.jobs WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// Files below `dir` (recursively).
fn files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|entry| entry.unwrap().path())
        .map(|path| if path.is_dir() { files(&path) } else { 1 })
        .sum()
}

/// How many jobs `process` ran, by its log.
fn jobs_ran(process: &Process) -> usize {
    std::fs::read_to_string(&process.log)
        .unwrap_or_default()
        .matches(STORED)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_tenants_jobs_and_deletions_run_only_on_its_replica_in_its_own_database_and_bucket()
 {
    let layout = Layout::start_with_dedicated(2, &["vip"]).await;
    let acme = layout.tenant("acme").await;
    let vip = layout.tenant("vip").await;
    let (_, acme_jobs) = start_jobs(&acme, "acme-data").await;
    let (vip_data, vip_jobs) = start_jobs(&vip, "vip-data").await;

    // The other tenant's jobs complete through the shared replicas and trust-scoring.
    for job in &acme_jobs {
        let done = tokio::time::timeout(JOB_TIMEOUT, acme.analysis.wait_job(job, |_| {}))
            .await
            .expect("the shared tenant's job completes")
            .unwrap();
        assert_eq!(done.state(), JobState::Succeeded, "{done:?}");
    }
    // The dedicated tenant's jobs complete too: trust-scoring reads their outputs from vip's own
    // replica (`dedicated.analysis`), the only one that can open them.
    let dedicated = layout.dedicated_replica("vip").expect("vip's replica");
    for job in &vip_jobs {
        let done = tokio::time::timeout(JOB_TIMEOUT, vip.analysis.wait_job(job, |_| {}))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "vip's job {job} did not complete:\n{}",
                    log_tail(&dedicated.log)
                )
            })
            .unwrap();
        assert_eq!(done.state(), JobState::Succeeded, "{done:?}");
        let report = vip.trust.get_report(&done.output).await.unwrap();
        assert_eq!(report.analyzed_row_count, ROWS as u64);
    }

    // Objects: `analysis/<tenant>/...` of each bucket.
    let shared_bucket = layout.objects_dir(None).join("analysis");
    let vip_bucket = layout.objects_dir(Some("vip")).join("analysis");
    assert!(
        files(&vip_bucket.join("vip")) >= JOBS,
        "each vip job's outputs"
    );
    assert_eq!(
        files(&vip_bucket.join("acme")),
        0,
        "no acme object in vip's bucket"
    );
    assert_eq!(
        files(&shared_bucket.join("vip")),
        0,
        "no vip object in the shared bucket"
    );
    assert!(
        files(&shared_bucket.join("acme")) >= JOBS,
        "each acme job's outputs"
    );

    // Logs: vip's jobs ran on its replica, acme's on the shared ones.
    assert_eq!(jobs_ran(dedicated), JOBS, "{}", log_tail(&dedicated.log));
    let shared_ran: usize = layout.analysis.iter().map(jobs_ran).sum();
    assert_eq!(shared_ran, JOBS, "the shared replicas ran acme's jobs only");

    // Metrics: only the dedicated replica has vip's durables.
    let vip_durable = "consumer=\"analysis-requested-vip\"";
    let metrics = http_body(dedicated.admin, "/metrics").await.unwrap();
    assert!(metrics.contains(vip_durable), "{metrics}");
    for replica in &layout.analysis {
        let metrics = http_body(replica.admin, "/metrics").await.unwrap();
        assert!(
            !metrics.contains(vip_durable),
            "{}: {metrics}",
            replica.name
        );
        assert!(metrics.contains("consumer=\"analysis-requested\""));
    }

    // Rows: vip's jobs are in its replica's database only, acme's in the shared one only.
    let (shared_db, vip_db) = (layout.database(None), layout.database(Some("vip")));
    assert_eq!(jobs_in(vip_db, "vip").await, JOBS as i64);
    assert_eq!(jobs_in(shared_db, "vip").await, 0);
    assert_eq!(jobs_in(shared_db, "acme").await, JOBS as i64);
    assert_eq!(jobs_in(vip_db, "acme").await, 0);
    // The dedicated replica connects to its database as the analysis role (row-level security
    // applies to it there too): it made every table there.
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT pg_get_userbyid(relowner)::text FROM pg_class WHERE relkind IN ('r', 'p')
           AND relnamespace IN (SELECT oid FROM pg_namespace
                                WHERE nspname NOT IN ('pg_catalog', 'information_schema'))",
    )
    .fetch_all(vip_db.pool())
    .await
    .unwrap();
    assert_eq!(owners, ["tm_analysis"]);

    // Deleting vip's dataset: vip's replica (`analysis-deletion-vip`) deletes the jobs from its
    // database and their objects from its bucket, scans its bucket for residue and answers; the
    // deletion completes with every service's receipt, none with residue.
    let requested = vip
        .deletion
        .delete_dataset(&vip_data, "dedicated-profile-test")
        .await
        .unwrap();
    let deletion = vip
        .deletion
        .wait_deletion(&requested.output, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(deletion.state(), DeletionState::Completed, "{deletion:?}");
    let mut services: Vec<&str> = deletion
        .receipts
        .iter()
        .map(|r| r.service.as_str())
        .collect();
    services.sort_unstable();
    assert_eq!(
        services,
        [
            "analysis",
            "audit",
            "ingest",
            "notifier",
            "tenancy",
            "trust-scoring"
        ],
        "{deletion:?}"
    );
    assert!(
        deletion.receipts.iter().all(|r| !r.residue_found),
        "{deletion:?}"
    );
    let analysis = deletion
        .receipts
        .iter()
        .find(|r| r.service == "analysis")
        .unwrap();
    assert_eq!(
        analysis.deleted.get("rows:jobs"),
        Some(&(JOBS as u64)),
        "vip's replica deleted vip's jobs: {analysis:?}"
    );
    assert!(
        analysis
            .deleted
            .get("objects")
            .is_some_and(|n| *n >= JOBS as u64),
        "{analysis:?}"
    );
    assert_eq!(
        files(&vip_bucket.join("vip")),
        0,
        "vip's bucket keeps no object of the deleted dataset's jobs"
    );
    assert_eq!(jobs_in(vip_db, "vip").await, 0);
    assert_eq!(
        jobs_in(shared_db, "acme").await,
        JOBS as i64,
        "acme untouched"
    );

    // Deleting the tenant (the operator's request): vip's keys are only in its replica's database,
    // where that replica destroys them; the certificate (the operator reads it once vip is gone)
    // lists every service's receipt, none with residue.
    assert!(live_deks(vip_db, "vip").await >= 1);
    assert_eq!(live_deks(shared_db, "vip").await, 0);
    let operator = layout
        .operator()
        .await
        .reconnect(&layout.service("deletion").endpoint())
        .await
        .unwrap();
    let requested = operator
        .deletion()
        .delete_tenant(DeleteTenantRequest {
            name: "tenants/vip".to_owned(),
            reason: "dedicated-profile-test".to_owned(),
            confirm_tenant_id: "vip".to_owned(),
            ..DeleteTenantRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let certificate = loop {
        match operator.get_certificate(&requested.output).await {
            Ok(certificate) => break certificate,
            Err(error) => assert!(
                std::time::Instant::now() < deadline,
                "vip's deletion did not complete: {error:?}\n{}",
                log_tail(&dedicated.log)
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let document: serde_json::Value = serde_json::from_slice(&certificate.certificate).unwrap();
    let receipts = document["receipts"].as_array().unwrap();
    assert!(
        receipts.iter().all(|r| r["residue_found"] == false),
        "{document}"
    );
    let analysis = receipts
        .iter()
        .find(|r| r["service"] == "analysis")
        .unwrap_or_else(|| panic!("no analysis receipt: {document}"));
    assert!(
        analysis["deks_destroyed"].as_u64().unwrap() >= 1,
        "{document}"
    );
    assert_eq!(live_deks(vip_db, "vip").await, 0);
    assert_eq!(files(&vip_bucket.join("vip")), 0);

    // Both deletions went through vip's replica: its log, not the shared replicas'.
    let applied = "Deletion applied and its receipt queued.";
    let log = std::fs::read_to_string(&dedicated.log).unwrap_or_default();
    assert_eq!(
        log.matches(applied).count(),
        2,
        "{}",
        log_tail(&dedicated.log)
    );
    for replica in &layout.analysis {
        let log = std::fs::read_to_string(&replica.log).unwrap_or_default();
        assert!(
            !log.contains(applied),
            "{}: {}",
            replica.name,
            log_tail(&replica.log)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_tenant_install_runs_a_job_with_its_first_key_and_has_no_operator() {
    let layout = Layout::start_single_tenant(1, "solo").await;
    let solo = layout.single_tenant_admin().await;
    let (_, jobs) = start_jobs(&solo, "solo-data").await;
    for job in &jobs {
        let done = tokio::time::timeout(JOB_TIMEOUT, solo.analysis.wait_job(job, |_| {}))
            .await
            .expect("the job completes")
            .unwrap();
        assert_eq!(done.state(), JobState::Succeeded, "{done:?}");
        let report = solo.trust.get_report(&done.output).await.unwrap();
        assert_eq!(report.analyzed_row_count, ROWS as u64);
    }
    // No second tenant, whoever asks.
    let status = solo
        .tenancy
        .tenancy()
        .create_tenant(CreateTenantRequest {
            tenant_id: "second".to_owned(),
            display_name: "Second".to_owned(),
            ..CreateTenantRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}
