//! `trustmesh quota get|set`: a tenant's quota of requests per minute, concurrent jobs and stored
//! bytes. `get` needs the tenant's admin key (or the operator credential); `set`, the operator
//! credential in TRUSTMESH_API_KEY with `--tenant` naming the tenant.

use clap::{Args, Subcommand};
use serde_json::json;
use trustmesh_sdk::QuotaChange;
use trustmesh_sdk::proto::Quota;

use super::{Remote, UsageError};

/// `trustmesh quota`.
#[derive(Debug, Args)]
pub(crate) struct QuotaArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: QuotaCommand,
}

/// The `quota` subcommands.
#[derive(Debug, Subcommand)]
enum QuotaCommand {
    /// Show the tenant's quota as it applies (0 in a request means the deployment's default) and
    /// its usage as ingest and analysis last reported it.
    Get,
    /// Change the tenant's quota (the operator's command); 0 returns a value to the default.
    Set {
        /// Requests per minute the tenant's keys may make to each service.
        #[arg(long)]
        requests_per_minute: Option<u32>,
        /// Jobs queued or running at once.
        #[arg(long)]
        concurrent_jobs: Option<u32>,
        /// Bytes stored across the tenant's datasets.
        #[arg(long)]
        storage_bytes: Option<u64>,
    },
}

fn quota_json(quota: &Quota) -> serde_json::Value {
    let mut value = json!({
        "name": quota.name,
        "max_requests_per_minute": quota.max_requests_per_minute,
        "max_concurrent_jobs": quota.max_concurrent_jobs,
        "max_storage_bytes": quota.max_storage_bytes,
    });
    if let Some(usage) = &quota.usage {
        value["usage"] = json!({
            "datasets": usage.datasets,
            "storage_bytes": usage.storage_bytes,
            "concurrent_jobs": usage.concurrent_jobs,
        });
    }
    value
}

fn quota_text(quota: &Quota) -> String {
    let mut text = format!(
        "{}\n  requests per minute  {}\n  concurrent jobs      {}\n  stored bytes         {}",
        quota.name,
        quota.max_requests_per_minute,
        quota.max_concurrent_jobs,
        quota.max_storage_bytes
    );
    if let Some(usage) = &quota.usage {
        text = format!(
            "{text}\nusage (as last reported)\n  datasets             {}\n  concurrent jobs      {}\n  stored bytes         {}",
            usage.datasets, usage.concurrent_jobs, usage.storage_bytes
        );
    }
    text
}

/// Runs `trustmesh quota ...`.
pub(crate) async fn run(args: QuotaArgs) -> anyhow::Result<()> {
    let out = args.remote.output();
    let quota = match args.command {
        QuotaCommand::Get => args.remote.connect().await?.get_quota().await?,
        QuotaCommand::Set {
            requests_per_minute,
            concurrent_jobs,
            storage_bytes,
        } => {
            let change = QuotaChange {
                max_requests_per_minute: requests_per_minute,
                max_concurrent_jobs: concurrent_jobs,
                max_storage_bytes: storage_bytes,
            };
            if change.is_empty() {
                return Err(UsageError(
                    "give at least one of --requests-per-minute, --concurrent-jobs, --storage-bytes"
                        .to_owned(),
                )
                .into());
            }
            args.remote.connect().await?.update_quota(change).await?
        }
    };
    out.show(&quota_json(&quota), || quota_text(&quota));
    Ok(())
}
