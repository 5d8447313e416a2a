//! `trustmesh datasets upload|list|get`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use futures::TryStreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use trustmesh_sdk::proto::{DatasetFormat, DatasetState};
use trustmesh_sdk::{Upload, format_of};

use super::render::{self, DATASET_HEADER};
use super::{Negative, Remote, UsageError};

/// `trustmesh datasets`.
#[derive(Debug, Args)]
pub(crate) struct DatasetsArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: DatasetsCommand,
}

/// The `datasets` subcommands.
#[derive(Debug, Subcommand)]
enum DatasetsCommand {
    /// Upload a file (streamed in 1 MiB chunks, with a progress bar on a terminal).
    Upload(UploadArgs),
    /// List the tenant's datasets.
    List,
    /// Show one dataset and its schema.
    Get {
        /// The dataset: its resource name or id.
        name: String,
    },
}

/// File formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Jsonl,
    Parquet,
    ImageZip,
}

/// `trustmesh datasets upload`.
#[derive(Debug, Args)]
struct UploadArgs {
    /// The file.
    file: PathBuf,
    /// The dataset's display name (default: the file name without extension).
    #[arg(long)]
    name: Option<String>,
    /// The format (default: from the file's extension).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The column holding row ids.
    #[arg(long)]
    id_column: Option<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `trustmesh datasets ...`.
pub(crate) async fn run(args: DatasetsArgs) -> anyhow::Result<()> {
    let out = args.remote.output();
    let client = args.remote.connect().await?;
    match args.command {
        DatasetsCommand::Upload(upload) => {
            let format = match upload.format {
                Some(Format::Csv) => DatasetFormat::Csv,
                Some(Format::Jsonl) => DatasetFormat::Jsonl,
                Some(Format::Parquet) => DatasetFormat::Parquet,
                Some(Format::ImageZip) => DatasetFormat::ImageZip,
                None => format_of(&upload.file).ok_or_else(|| {
                    UsageError(format!(
                        "cannot tell the format of {}: pass --format",
                        upload.file.display()
                    ))
                })?,
            };
            let name = match upload.name {
                Some(name) => name,
                None => upload
                    .file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            let filename = upload
                .file
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut spec = Upload::csv(name).format(format).filename(filename);
            if let Some(id) = upload.id_column {
                spec = spec.id_column(id);
            }
            let bar = if upload.quiet {
                ProgressBar::hidden()
            } else {
                // Drawn on stderr, and only on a terminal (indicatif hides it otherwise).
                ProgressBar::new(0).with_style(
                    ProgressStyle::with_template(
                        "{spinner} uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )?
                    .progress_chars("=> "),
                )
            };
            let progress = bar.clone();
            let dataset = client
                .upload_path(&upload.file, spec, move |p| {
                    if let Some(total) = p.total {
                        progress.set_length(total);
                    }
                    progress.set_position(p.sent);
                })
                .await;
            bar.finish_and_clear();
            let dataset = dataset?;
            out.show(&render::dataset_json(&dataset), || {
                format!(
                    "Uploaded {} as {}: {} rows, {} bytes, state {}",
                    upload.file.display(),
                    dataset.name,
                    dataset.row_count,
                    dataset.size_bytes,
                    render::short(dataset.state().as_str_name(), "DATASET_STATE_")
                )
            });
            if dataset.state() == DatasetState::Failed {
                let reason = dataset.error.map(|e| e.message).unwrap_or_default();
                return Err(Negative(format!("ingest refused the file: {reason}")).into());
            }
        }
        DatasetsCommand::List => {
            let datasets: Vec<_> = client.list_datasets().try_collect().await?;
            out.list(
                &datasets,
                render::dataset_json,
                DATASET_HEADER,
                render::dataset_row,
                "No datasets.",
            );
        }
        DatasetsCommand::Get { name } => {
            let dataset = client.get_dataset(&name).await?;
            out.show(&render::dataset_json(&dataset), || {
                let mut text =
                    render::table(DATASET_HEADER, [render::dataset_row(&dataset)]).to_string();
                if let Some(schema) = &dataset.schema {
                    text.push('\n');
                    text.push_str(
                        &render::table(
                            &["column", "type", "role", "nulls", "distinct"],
                            schema.columns.iter().map(|c| {
                                vec![
                                    c.name.clone(),
                                    render::short(c.r#type().as_str_name(), "COLUMN_TYPE_"),
                                    render::short(c.role().as_str_name(), "COLUMN_ROLE_"),
                                    c.null_count.to_string(),
                                    c.distinct_count.to_string(),
                                ]
                            }),
                        )
                        .to_string(),
                    );
                }
                text
            });
        }
    }
    Ok(())
}
