//! `trustmesh report`, `trustmesh rows` and `trustmesh export`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::json;
use trustmesh_sdk::proto::IssueType;
use trustmesh_sdk::{Client, ExportOptions, RowQuery};

use super::render::{self, ROW_HEADER};
use super::{Remote, UsageError};

/// `trustmesh report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    remote: Remote,
    /// The report (resource name or id), the job that made it, or a dataset (its latest report).
    name: String,
}

/// `trustmesh rows`.
#[derive(Debug, Args)]
pub(crate) struct RowsArgs {
    #[command(flatten)]
    remote: Remote,
    /// The report (resource name or id), the job that made it, or a dataset (its latest report).
    name: String,
    /// Only rows flagged with this issue (label, outlier, near-duplicate, exact-duplicate, ...).
    #[arg(long)]
    issue: Option<String>,
    /// At most this many rows (lowest trust first).
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

/// `trustmesh export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    remote: Remote,
    /// The report (resource name or id), the job that made it, or a dataset (its latest report).
    name: String,
    /// The CSV file to write.
    #[arg(long)]
    out: PathBuf,
    /// Apply the corrections (relabels, exclusions) recorded on the report.
    #[arg(long)]
    apply_corrections: bool,
    /// Keep excluded rows (marked in the `action` column).
    #[arg(long)]
    keep_excluded: bool,
    /// Append the quality columns (trust score, suggested label, per-issue flags and scores).
    #[arg(long)]
    quality_columns: bool,
}

/// The report `name` designates: a report, the job that made it, or a dataset's latest report.
async fn report_of(client: &Client, name: &str) -> anyhow::Result<String> {
    if name.contains("/jobs/") {
        let job = client.get_job(name).await?;
        if job.output.is_empty() {
            return Err(UsageError(format!("{name} has no report (yet)")).into());
        }
        return Ok(job.output);
    }
    if name.contains("/datasets/") {
        let mut reports: Vec<_> = client.list_reports(Some(name)).try_collect().await?;
        reports.sort_by_key(|r| r.create_time.map(|t| (t.seconds, t.nanos)));
        return reports.pop().map(|r| r.name).ok_or_else(|| {
            UsageError(format!("{name} has no report: run `trustmesh analyze`")).into()
        });
    }
    Ok(client.resource("reports", name)?)
}

/// An issue type from its user spelling (`label`, `near-duplicate`, `NEAR_DUPLICATE`).
fn issue_type(text: &str) -> Result<IssueType, UsageError> {
    let name = format!("ISSUE_TYPE_{}", text.to_ascii_uppercase().replace('-', "_"));
    IssueType::from_str_name(&name)
        .filter(|&issue| issue != IssueType::Unspecified)
        .ok_or_else(|| {
            UsageError(format!(
                "unknown issue type {text:?} (e.g. label, outlier, near-duplicate)"
            ))
        })
}

/// Runs `trustmesh report`.
pub(crate) async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let out = args.remote.output();
    let client = args.remote.connect().await?;
    let name = report_of(&client, &args.name).await?;
    let report = client.get_report(&name).await?;
    out.show(&render::report_json(&report), || {
        render::report_text(&report)
    });
    Ok(())
}

/// Runs `trustmesh rows`.
pub(crate) async fn rows(args: RowsArgs) -> anyhow::Result<()> {
    let out = args.remote.output();
    let query = match &args.issue {
        Some(issue) => RowQuery::issue(issue_type(issue)?),
        None => RowQuery::default(),
    };
    let client = args.remote.connect().await?;
    let name = report_of(&client, &args.name).await?;
    let rows: Vec<_> = client
        .list_rows(&name, query)
        .take(args.limit)
        .try_collect()
        .await?;
    out.list(
        &rows,
        render::row_json,
        ROW_HEADER,
        render::row_row,
        "No rows.",
    );
    Ok(())
}

/// Runs `trustmesh export`.
pub(crate) async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let out = args.remote.output();
    let client = args.remote.connect().await?;
    let name = report_of(&client, &args.name).await?;
    // Written beside the target and renamed into place, so a failed export leaves no half file.
    let dir = args
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| std::path::Path::new("."));
    let partial = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| UsageError(format!("cannot write in {}: {e}", dir.display())))?;
    let mut file = tokio::fs::File::from_std(partial.reopen()?);
    let exported = client
        .export_cleanset(
            &name,
            ExportOptions {
                apply_corrections: args.apply_corrections,
                keep_excluded: args.keep_excluded,
                include_quality_columns: args.quality_columns,
            },
            &mut file,
        )
        .await
        .map_err(|e| match e.code() {
            Some(tonic::Code::FailedPrecondition | tonic::Code::Unimplemented) => {
                anyhow::Error::new(e).context(format!("the server cannot export {name} yet"))
            }
            _ => anyhow::Error::new(e),
        })?;
    drop(file);
    partial
        .persist(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    out.show(
        &json!({
            "report": name,
            "out": args.out,
            "bytes": exported.bytes,
            "content_type": exported.content_type,
            "apply_corrections": args.apply_corrections,
        }),
        || {
            format!(
                "Wrote {} bytes of {name} to {}",
                exported.bytes,
                args.out.display()
            )
        },
    );
    Ok(())
}
