//! `trustmesh analyze` and `trustmesh jobs list|get|watch|cancel`.

use clap::{Args, Subcommand, ValueEnum};
use futures::{StreamExt as _, TryStreamExt as _};
use indicatif::{ProgressBar, ProgressStyle};
use trustmesh_sdk::proto::{Job, JobState, StartAnalysisRequest, TaskType};
use trustmesh_sdk::{Client, is_final};

use super::render::{self, JOB_HEADER, Output};
use super::{Negative, Remote};

/// `trustmesh analyze`.
#[derive(Debug, Args)]
pub(crate) struct AnalyzeArgs {
    #[command(flatten)]
    remote: Remote,
    /// The dataset: its resource name or id.
    dataset: String,
    /// The label column.
    #[arg(long)]
    label: String,
    /// The task.
    #[arg(long, value_enum, default_value_t = Task::Classification)]
    task: Task,
    /// Follow the job until it ends, with live progress, and exit 1 unless it succeeds.
    #[arg(long)]
    wait: bool,
}

/// Task types.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Task {
    Classification,
    Multilabel,
    Regression,
    Unsupervised,
}

/// `trustmesh jobs`.
#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: JobsCommand,
}

/// The `jobs` subcommands.
#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// List the tenant's jobs.
    List {
        /// Only the jobs of this dataset.
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Show one job.
    Get {
        /// The job: its resource name or id.
        name: String,
    },
    /// Follow a job until it ends (JSON: one line per update); exit 1 unless it succeeds.
    Watch {
        /// The job: its resource name or id.
        name: String,
    },
    /// Cancel a job.
    Cancel {
        /// The job: its resource name or id.
        name: String,
    },
}

/// Runs `trustmesh analyze`.
pub(crate) async fn analyze(args: AnalyzeArgs) -> anyhow::Result<()> {
    let out = args.remote.output();
    let client = args.remote.connect().await?;
    let task = match args.task {
        Task::Classification => TaskType::Classification,
        Task::Multilabel => TaskType::Multilabel,
        Task::Regression => TaskType::Regression,
        Task::Unsupervised => TaskType::Unsupervised,
    };
    let analysis = client
        .start_analysis(StartAnalysisRequest {
            dataset: args.dataset,
            label_column: args.label,
            task_type: task.into(),
            ..StartAnalysisRequest::default()
        })
        .await?;
    if !args.wait {
        out.show(&render::job_json(analysis.job()), || {
            format!(
                "Started {}; follow it with `trustmesh jobs watch {}`",
                analysis.name(),
                analysis.name()
            )
        });
        return Ok(());
    }
    if !out.json {
        eprintln!("Started {}", analysis.name());
    }
    follow(&client, analysis.name(), out).await
}

/// Follows job `name` to its end: a progress bar (people) or one JSON line per update; fails
/// with [`Negative`] unless it succeeds.
async fn follow(client: &Client, name: &str, out: Output) -> anyhow::Result<()> {
    let bar = if out.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1000).with_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% {msg}")?
                .progress_chars("=> "),
        )
    };
    let mut updates = std::pin::pin!(client.watch_job(name));
    let mut last: Option<Job> = None;
    while let Some(job) = updates.next().await {
        let job = job?;
        if out.json {
            println!("{}", render::job_json(&job));
        }
        bar.set_position((job.progress.clamp(0.0, 1.0) * 1000.0) as u64);
        bar.set_message(format!(
            "{} ({}/{})",
            job.step, job.step_index, job.step_count
        ));
        let done = is_final(job.state());
        last = Some(job);
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    let job = last.ok_or_else(|| Negative(format!("the watch of {name} ended with no update")))?;
    if !out.json {
        println!("{}", render::table(JOB_HEADER, [render::job_row(&job)]));
    }
    match job.state() {
        JobState::Succeeded => {
            if !out.json && !job.output.is_empty() {
                println!("Report: {} (`trustmesh report {}`)", job.output, job.output);
            }
            Ok(())
        }
        JobState::Failed
        | JobState::Cancelled
        | JobState::Unspecified
        | JobState::Queued
        | JobState::Running => {
            let reason = job
                .error
                .as_ref()
                .map(|e| format!(": {} {}", e.code, e.message))
                .unwrap_or_default();
            Err(Negative(format!(
                "{} ended {}{reason}",
                job.name,
                render::short(job.state().as_str_name(), "JOB_STATE_")
            ))
            .into())
        }
    }
}

/// Runs `trustmesh jobs ...`.
pub(crate) async fn run(args: JobsArgs) -> anyhow::Result<()> {
    let out = args.remote.output();
    let client = args.remote.connect().await?;
    match args.command {
        JobsCommand::List { dataset } => {
            let jobs: Vec<_> = client.list_jobs(dataset.as_deref()).try_collect().await?;
            out.list(
                &jobs,
                render::job_json,
                JOB_HEADER,
                render::job_row,
                "No jobs.",
            );
        }
        JobsCommand::Get { name } => {
            let job = client.get_job(&name).await?;
            out.show(&render::job_json(&job), || {
                render::table(JOB_HEADER, [render::job_row(&job)]).to_string()
            });
        }
        JobsCommand::Watch { name } => {
            let name = client.resource("jobs", &name)?;
            follow(&client, &name, out).await?;
        }
        JobsCommand::Cancel { name } => {
            let job = client.cancel_job(&name).await?;
            out.show(&render::job_json(&job), || {
                format!(
                    "{}: {}",
                    job.name,
                    render::short(job.state().as_str_name(), "JOB_STATE_")
                )
            });
        }
    }
    Ok(())
}
