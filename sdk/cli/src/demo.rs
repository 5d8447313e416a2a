//! `trustmesh demo`: the whole mesh on a bundled noisy dataset, in one command.
//!
//! Starts the standalone mesh (all seven services, a `nats-server` child, Postgres), then, as a
//! user would over gRPC: the operator creates a tenant and an API key; the key uploads
//! `examples/wine-noisy.csv` (10% of its labels flipped), runs the analysis (with its progress),
//! reads the report and the rows with the likeliest label errors, deletes the dataset, fetches the
//! signed deletion certificate (and verifies it), and lists the tenant's audit events (and verifies
//! the hash chain). Then it stops everything it started.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use trustmesh_proto::v1::{
    AuditRecord, DeleteDatasetRequest, DeletionState, GetDeletionCertificateRequest,
    GetReportRequest, IssueType, JobState, ListCertificateSigningKeysRequest, ListEventsRequest,
    ListRowsRequest, Report, RowOrder, Scope, StartAnalysisRequest, TaskType, VerifyLogRequest,
};
use trustmesh_runtime::{SecretString, ServerTls, TransportMode};

use crate::standalone::{NatsSource, Standalone, StandaloneSettings};
use trustmesh_sdk::{Client, once_known};

/// The bundled dataset, as a user would upload it.
const DATASET: &[u8] = include_bytes!("../../../examples/wine-noisy.csv");
/// How many suspicious rows the demo prints.
const TOP: i32 = 10;

/// Where the demo's mesh gets its servers.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Postgres (the database is created if missing).
    pub database: SecretString,
    /// The `nats-server` binary the mesh starts.
    pub nats_server: PathBuf,
}

/// What the demo saw, for its callers (and tests) beyond the printed text.
#[derive(Debug, Clone, Default)]
pub struct DemoOutcome {
    /// The tenant it created.
    pub tenant: String,
    /// Rows flagged with a label issue.
    pub label_issues: u64,
    /// Whether the deletion certificate's signature verified.
    pub certificate_verified: bool,
    /// The tenant's audit events at the end.
    pub audit_events: usize,
    /// Whether the audit chain verified.
    pub audit_verified: bool,
}

/// Runs the demo, printing to `out`.
///
/// # Errors
///
/// The mesh could not start, or a step failed (the error names the step).
pub async fn run(settings: DemoSettings, out: &mut impl Write) -> anyhow::Result<DemoOutcome> {
    let data_dir = std::env::temp_dir().join(format!("trustmesh-demo-{}", std::process::id()));
    let mut standalone = StandaloneSettings::new(data_dir.clone(), settings.database);
    standalone.grpc.bind.set_port(0);
    standalone.grpc.tls = ServerTls {
        mode: TransportMode::DevPlaintextLoopback,
        ..ServerTls::default()
    };
    standalone.admin.bind.set_port(0);
    standalone.nats = NatsSource::Spawn {
        binary: settings.nats_server,
    };
    writeln!(
        out,
        "Starting the standalone mesh (7 services, nats-server, Postgres) ..."
    )?;
    let mesh = Standalone::build(standalone).await?;
    let endpoint = format!("http://{}", mesh.grpc_addr());
    writeln!(
        out,
        "  gRPC on {endpoint} (tenancy, ingest, analysis, trust-scoring, deletion, audit, notifier), admin on http://{}\n",
        mesh.admin_addr()
    )?;
    let operator = mesh.operator_credential().clone();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(mesh.run_until_stopped(shutdown.clone()));

    let result = walk_through(&endpoint, &operator, out).await;
    shutdown.cancel();
    let stopped = running.await.context("the mesh task panicked")?;
    // Best effort: keys and the NATS store of a throwaway run.
    let _ = std::fs::remove_dir_all(&data_dir);
    let outcome = result?;
    stopped?;
    writeln!(out, "\nStopped the mesh and its nats-server.")?;
    Ok(outcome)
}

async fn walk_through(
    endpoint: &str,
    operator: &SecretString,
    out: &mut impl Write,
) -> anyhow::Result<DemoOutcome> {
    let tenant = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let admin = Client::connect(endpoint, operator).await?;

    // 1. The operator creates a tenant and an API key for it.
    let (key_name, user) = admin
        .create_tenant_with_key(
            &tenant,
            "Demo Wines Ltd",
            &[Scope::Admin],
            Duration::from_secs(24 * 3600),
        )
        .await?;
    writeln!(
        out,
        "1. Operator created tenant `{tenant}` and API key {key_name} (shown once, kept in memory)"
    )?;

    // 2. Upload.
    let dataset = once_known(|| user.upload_csv("wine-noisy", DATASET.to_vec(), "row_id"))
        .await
        .context("uploading examples/wine-noisy.csv")?;
    let columns = dataset.schema.as_ref().map_or(0, |s| s.columns.len());
    writeln!(
        out,
        "2. Uploaded examples/wine-noisy.csv as {}: {} rows, {columns} columns, {} bytes, encrypted at rest (AES-256-GCM)",
        dataset.name, dataset.row_count, dataset.size_bytes
    )?;

    // 3. Analysis, with progress.
    let job = user
        .analysis()
        .start_analysis(StartAnalysisRequest {
            dataset: dataset.name.clone(),
            label_column: "label".to_owned(),
            task_type: TaskType::Classification.into(),
            ..StartAnalysisRequest::default()
        })
        .await
        .context("starting the analysis")?
        .into_inner();
    writeln!(out, "3. Analysis {} started:", job.name)?;
    let mut last_step = String::new();
    let mut progress_lines = Vec::new();
    let job = tokio::time::timeout(
        Duration::from_secs(600),
        user.wait_job(&job.name, |update| {
            if update.step != last_step {
                last_step.clone_from(&update.step);
                progress_lines.push(format!(
                    "   [{:>3.0}%] {} ({}/{})",
                    update.progress * 100.0,
                    update.step,
                    update.step_index,
                    update.step_count
                ));
            }
        }),
    )
    .await
    .context("the analysis did not finish within 10 minutes")??;
    for line in &progress_lines {
        writeln!(out, "{line}")?;
    }
    anyhow::ensure!(
        job.state() == JobState::Succeeded,
        "the analysis ended {:?}: {:?}",
        job.state(),
        job.error
    );
    writeln!(out, "   [100%] {:?}", job.state())?;

    // 4. The report and the likeliest label errors.
    let report = user
        .trust()
        .get_report(GetReportRequest {
            name: job.output.clone(),
        })
        .await
        .context("reading the report")?
        .into_inner();
    let label_issues = print_report(&report, out)?;
    let rows = user
        .trust()
        .list_rows(ListRowsRequest {
            parent: report.name.clone(),
            issue_types: vec![IssueType::Label.into()],
            order_by: RowOrder::TrustScoreAscending.into(),
            page_size: TOP,
            ..ListRowsRequest::default()
        })
        .await
        .context("listing the rows with label issues")?
        .into_inner();
    writeln!(
        out,
        "\n   The {} least trustworthy of the {} rows with a likely label error:",
        rows.rows.len(),
        rows.total_size
    )?;
    writeln!(
        out,
        "   {:>6}  {:<10} {:<10} {:>10} {:>11}",
        "row_id", "given", "suggested", "confidence", "trust_score"
    )?;
    for row in &rows.rows {
        writeln!(
            out,
            "   {:>6}  {:<10} {:<10} {:>10.3} {:>11.4}",
            row.row_id,
            row.given_label,
            row.suggested_label,
            row.suggested_label_confidence,
            row.trust_score
        )?;
    }

    // 5. Deletion, with a signed certificate.
    let deletion_job = user
        .deletion()
        .delete_dataset(DeleteDatasetRequest {
            name: dataset.name.clone(),
            reason: "demo".to_owned(),
            ..DeleteDatasetRequest::default()
        })
        .await
        .context("requesting the deletion")?
        .into_inner();
    let deletion = user
        .wait_deletion(&deletion_job.output, Duration::from_secs(120))
        .await?;
    anyhow::ensure!(
        deletion.state() == DeletionState::Completed,
        "the deletion ended {:?}",
        deletion.state()
    );
    writeln!(out, "\n5. Deleted {} ({}):", dataset.name, deletion.name)?;
    for receipt in &deletion.receipts {
        let mut deleted: Vec<_> = receipt.deleted.iter().collect();
        deleted.sort();
        let deleted = deleted
            .iter()
            .map(|(what, n)| format!("{what}={n}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            out,
            "   receipt from {:<13} deks destroyed: {}, residue: {}, deleted: {deleted}",
            receipt.service, receipt.deks_destroyed, receipt.residue_found
        )?;
    }
    let certificate = user
        .deletion()
        .get_deletion_certificate(GetDeletionCertificateRequest {
            name: format!("{}/certificate", deletion.name),
        })
        .await
        .context("fetching the certificate")?
        .into_inner();
    let keys = user
        .deletion()
        .list_certificate_signing_keys(ListCertificateSigningKeysRequest {})
        .await
        .context("fetching the signing keys")?
        .into_inner();
    let certificate_verified = keys.keys.iter().any(|k| {
        k.key_id == certificate.key_id
            && trustmesh_deletion::verify_certificate(
                &certificate.certificate,
                &certificate.signature,
                &k.public_key,
            )
            .is_ok()
    });
    writeln!(
        out,
        "   Certificate {} ({}, key {}), signature {}:",
        certificate.name,
        certificate.algorithm,
        certificate.key_id,
        if certificate_verified {
            "VERIFIED"
        } else {
            "INVALID"
        }
    )?;
    // The gist of the signed document; `trustmesh certificate get` writes it whole.
    let document: serde_json::Value =
        serde_json::from_slice(&certificate.certificate).unwrap_or_default();
    let receipts = document["receipts"].as_array().map_or(0, Vec::len);
    let residue = document["receipts"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["residue_found"] == true));
    writeln!(
        out,
        "   scope {}, {receipts} service receipts, residue found: {}",
        document["scope"].as_str().unwrap_or("?"),
        if residue { "YES" } else { "none" }
    )?;
    if let Some(statement) = document["backups"]["statement"].as_str() {
        writeln!(out, "   backups: {statement}")?;
    }
    writeln!(
        out,
        "   (the whole signed document: trustmesh certificate get {} --out cert.json)",
        deletion.name
    )?;

    // 6. The audit log.
    let parent = format!("tenants/{tenant}");
    let events = audit_events(&user, &parent).await?;
    writeln!(out, "\n6. Audit log of {parent}: {} events", events.len())?;
    writeln!(
        out,
        "   {:>4}  {:<14} {:<32} {:<8} actor",
        "seq", "service", "action", "outcome"
    )?;
    for event in &events {
        writeln!(
            out,
            "   {:>4}  {:<14} {:<32} {:<8} {}",
            event.sequence,
            event.service,
            event.action,
            event
                .outcome()
                .as_str_name()
                .trim_start_matches("AUDIT_OUTCOME_"),
            event.actor.as_ref().map_or("", |a| a.id.as_str())
        )?;
    }
    let verified = user
        .audit()
        .verify_log(VerifyLogRequest {
            parent: parent.clone(),
            ..VerifyLogRequest::default()
        })
        .await
        .context("verifying the audit log")?
        .into_inner();
    writeln!(
        out,
        "   Hash chain: {} ({} events verified)",
        if verified.valid { "VALID" } else { "BROKEN" },
        verified.verified_count
    )?;
    Ok(DemoOutcome {
        tenant,
        label_issues,
        certificate_verified,
        audit_events: events.len(),
        audit_verified: verified.valid,
    })
}

/// Prints the report's summary; returns the number of rows with a label issue.
fn print_report(report: &Report, out: &mut impl Write) -> anyhow::Result<u64> {
    writeln!(
        out,
        "\n4. Report {}: {} rows analysed, dataset health {:.3}",
        report.name, report.analyzed_row_count, report.health_score
    )?;
    if let Some(metrics) = &report.model_metrics {
        writeln!(
            out,
            "   model: {} ({}-fold out-of-sample), accuracy {:.3}",
            metrics.model_family,
            metrics.cv_folds,
            metrics.accuracy.unwrap_or(f64::NAN)
        )?;
    }
    if let Some(summary) = &report.model_summary {
        for m in summary.models.iter().chain(summary.ensemble.as_ref()) {
            writeln!(
                out,
                "     {:<24} accuracy {:.3}  log loss {:.3}  weight {:.2}",
                m.model,
                m.accuracy.unwrap_or(f64::NAN),
                m.log_loss.unwrap_or(f64::NAN),
                m.weight
            )?;
        }
    }
    writeln!(out, "   {:<22} {:>8} {:>9}", "issue", "flagged", "quality")?;
    let mut label_issues = 0;
    for summary in &report.issue_summaries {
        if summary.issue_type() == IssueType::Label {
            label_issues = summary.flagged_rows;
        }
        writeln!(
            out,
            "   {:<22} {:>8} {:>9.3}",
            summary
                .issue_type()
                .as_str_name()
                .trim_start_matches("ISSUE_TYPE_")
                .to_lowercase(),
            summary.flagged_rows,
            summary.quality_score
        )?;
    }
    Ok(label_issues)
}

/// Every audit event of `parent`, once the deletion's own events have arrived (they travel through
/// the bus, so they land shortly after the calls).
async fn audit_events(user: &Client, parent: &str) -> anyhow::Result<Vec<AuditRecord>> {
    let mut events = Vec::new();
    for _ in 0..50 {
        events.clear();
        let mut page_token = String::new();
        loop {
            let page = user
                .audit()
                .list_events(ListEventsRequest {
                    parent: parent.to_owned(),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..ListEventsRequest::default()
                })
                .await
                .context("listing the audit events")?
                .into_inner();
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        if events.iter().any(|e| e.action.starts_with("deletion.")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    events.sort_by_key(|e| e.sequence);
    Ok(events)
}
