//! `trustmesh check`: the quality engine on a CSV, Parquet or JSONL file or an image archive,
//! without the mesh.
//!
//! A table (CSV, Parquet or JSONL, by extension): reads the data (`input.rs`), takes the given pred_probs or trains AutoML's models for
//! them ([`trustmesh_quality::automl::train`]: every column featurized by its role, logistic
//! regression, gradient-boosted trees and kNN cross-validated and ensembled), runs
//! [`trustmesh_quality::detectors::find_issues`] and, on every column whose inferred role is text,
//! the text checks ([`trustmesh_quality::modality::check_texts`]), on every binary column (a
//! Parquet file's encoded images) the image checks, and writes the per-row report and the JSON
//! summary (`output.rs`).
//!
//! A zip archive of images (`archive.rs`), with one folder per class or a table at its root naming
//! each row's image by its path in the archive: runs the image checks
//! ([`trustmesh_quality::modality::check_images`]), then the label and outlier checks on the images
//! that could be analyzed (`images.rs`: AutoML's models on image features), and writes one row per
//! image (per table row: a row whose path names no image is not analyzed, with the reason).

mod archive;
mod images;
mod input;
mod output;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use trustmesh_quality::QualityError;
use trustmesh_quality::automl::{AutoMlOptions, ColumnRole, Task, infer_schema, train};
use trustmesh_quality::detectors::{Compat, DetectorConfig, DetectorInput, IssueType, find_issues};
use trustmesh_quality::modality::{
    ImageOptions, ImageReport, TextOptions, TextReport, check_images, check_texts,
};

/// Arguments of `trustmesh check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The data: a CSV file with a header row, a Parquet file (`.parquet`), a JSONL file (`.jsonl`,
    /// one JSON object per line), or a zip archive of images: one folder per class (the folder
    /// names are the labels), or one table (.csv, .jsonl, .parquet) at its root with a column of
    /// image paths inside the archive and a label column.
    #[arg(long, value_name = "FILE.csv|.parquet|.jsonl|IMAGES.zip")]
    data: PathBuf,
    /// The column holding the given labels (a table, or an archive's table: default `label`; a
    /// folder-per-class archive's labels are its folder names).
    #[arg(long, value_name = "COLUMN")]
    label: Option<String>,
    /// A column identifying rows: never used as a feature, copied to the report.
    #[arg(long, value_name = "COLUMN")]
    id_column: Option<String>,
    /// Out-of-sample predicted probabilities: no header, one row per data row, one column per class
    /// in sorted class-name order. Without it, models (logistic regression, gradient-boosted trees,
    /// kNN) are cross-validated (5 folds) on every column but the label and ids, and ensembled.
    #[arg(long, value_name = "PP.csv")]
    pred_probs: Option<PathBuf>,
    /// A column's role for the models, overriding inference: `NAME=ROLE` with ROLE one of id,
    /// numeric, categorical, boolean, datetime, text, embedding, ignored. Repeatable.
    #[arg(long, value_name = "NAME=ROLE")]
    column_role: Vec<String>,
    /// The checks to run, comma-separated (default: all of them; Datalab's with `--compat cleanlab`).
    #[arg(long, value_delimiter = ',', value_name = "TYPE,...")]
    issues: Option<Vec<String>>,
    /// Follow cleanlab's rules wherever trustmesh deliberately differs.
    #[arg(long, value_enum, default_value_t = CompatArg::Trustmesh)]
    compat: CompatArg,
    /// Where to write one row per input row: `is_<type>_issue`, `<type>_score` per check, then
    /// `given_label`, `predicted_label`, `suggested_label`, `trust_score`.
    #[arg(long, value_name = "ROWS.csv")]
    out: Option<PathBuf>,
    /// Where to write the per-type counts and scores, label health and per-stage timings.
    #[arg(long, value_name = "SUMMARY.json")]
    summary: Option<PathBuf>,
    /// An image archive may hold at most this many files.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_archive_files: usize,
    /// An image archive's files may expand to at most this many bytes in all.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 30)]
    max_archive_bytes: u64,
    /// Images with more pixels are not analyzed (their row says why).
    #[arg(long, value_name = "PIXELS", default_value_t = 100_000_000)]
    max_image_pixels: u64,
}

/// Whose rules to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompatArg {
    /// trustmesh's rules.
    Trustmesh,
    /// cleanlab 2.9's rules, quirks included.
    Cleanlab,
}

/// Milliseconds since `start`.
fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// Runs `trustmesh check`.
///
/// # Errors
/// Unreadable or malformed input (naming the file, row and column), invalid options, or an engine
/// error.
pub(crate) fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let is_zip = args
        .data
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"));
    if is_zip {
        return run_images(args);
    }
    let Some(label) = args.label.as_deref() else {
        bail!(
            "{}: --label is required for a table (the column holding the given labels)",
            args.data.display()
        );
    };
    let (compat, mut config) = detector_config(args);
    if let Some(names) = &args.issues {
        config.issue_types = names
            .iter()
            .map(|name| {
                IssueType::from_name(name.trim()).with_context(|| {
                    let known: Vec<&str> = IssueType::ALL.iter().map(|t| t.name()).collect();
                    format!("unknown issue type {name:?} (known: {})", known.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?;
    }
    let mut timings = Vec::new();
    let start = Instant::now();
    let mut data = input::read_data(&args.data, label, args.id_column.as_deref())?;
    timings.push(("read_data", ms_since(start)));
    let roles = column_roles(args)?;
    let start = Instant::now();
    let texts = text_checks(args, label, &data, &roles);
    timings.push(("text_checks", ms_since(start)));
    let start = Instant::now();
    let images = image_checks(args, &data);
    timings.push(("image_checks", ms_since(start)));
    let start = Instant::now();
    let (pred_probs, model) = match &args.pred_probs {
        Some(path) => {
            let pred_probs = input::read_pred_probs(path, data.labels.len(), data.classes.len())?;
            timings.push(("read_pred_probs", ms_since(start)));
            (pred_probs, None)
        }
        None => {
            let automl = train_models(args, label, &roles, &data)?;
            timings.push(("cross_val_pred_probs", ms_since(start)));
            output::print_model_summary(&automl.summary);
            for warning in &automl.summary.warnings {
                eprintln!("warning: {warning}");
            }
            let Some(pred_probs) = automl.pred_probs else {
                bail!("the models gave no class probabilities");
            };
            // Without numeric columns, the checks that need features (outliers, near duplicates,
            // non-IID, ...) run on the models' dense features (text projection included).
            if data.features.is_none() {
                data.features = automl.design.dense_features();
            }
            (pred_probs, Some(automl.summary))
        }
    };

    let input = DetectorInput {
        labels: Some(&data.labels),
        pred_probs: Some(&pred_probs),
        features: data.features.as_ref(),
    };
    let start = Instant::now();
    let report = find_issues(&input, &config).context("checking the data")?;
    timings.push(("find_issues", ms_since(start)));

    let start = Instant::now();
    if let Some(path) = &args.out {
        output::write_rows(path, &data, &report, &texts, &images)?;
    }
    timings.push(("write_rows", ms_since(start)));
    if let Some(path) = &args.summary {
        let run = output::Run {
            compat,
            model: model.as_ref(),
            texts: &texts,
            images: &images,
            timings: &timings,
        };
        output::write_summary(path, &data, &report, &run)?;
    }
    output::print_overview(&report);
    output::print_column_overview(&texts, &images);
    Ok(())
}

/// Whose rules the detectors follow, and their configuration.
fn detector_config(args: &CheckArgs) -> (Compat, DetectorConfig) {
    match args.compat {
        CompatArg::Trustmesh => (Compat::Trustmesh, DetectorConfig::default()),
        CompatArg::Cleanlab => (Compat::Cleanlab, DetectorConfig::cleanlab()),
    }
}

/// The image checks on a folder-per-class archive, then the label and outlier checks on the
/// images analyzed: one row per file.
///
/// # Errors
/// An unreadable archive or one over the limits; unwritable outputs.
fn run_images(args: &CheckArgs) -> anyhow::Result<()> {
    if args.pred_probs.is_some() || args.issues.is_some() {
        bail!("--pred-probs and --issues apply to a table, not to an image archive");
    }
    let mut timings = Vec::new();
    let start = Instant::now();
    let limits = trustmesh_quality::modality::ArchiveLimits {
        max_files: args.max_archive_files,
        max_bytes: args.max_archive_bytes,
    };
    let archive::ImageRows { files, unresolved } =
        archive::read_file(&args.data, limits, args.label.as_deref())?;
    timings.push(("read_archive", ms_since(start)));
    let start = Instant::now();
    let options = ImageOptions {
        max_pixels: args.max_image_pixels,
        ..ImageOptions::default()
    };
    let bytes: Vec<&[u8]> = files.iter().map(|f| f.bytes.as_slice()).collect();
    let mut report = check_images(&bytes, &options);
    for (reason, unresolved) in report.not_analyzed.iter_mut().zip(unresolved) {
        if unresolved.is_some() {
            *reason = unresolved;
        }
    }
    timings.push(("image_checks", ms_since(start)));
    let start = Instant::now();
    let analyzed: Vec<bool> = report.not_analyzed.iter().map(Option::is_none).collect();
    let labels = images::label_checks(&files, &analyzed, detector_config(args).1);
    timings.push(("label_and_outlier_checks", ms_since(start)));
    match &labels {
        Ok(checks) => {
            output::print_model_summary(&checks.model);
            for (name, reason) in &checks.skipped {
                eprintln!("warning: no {name} check: {reason}");
            }
        }
        Err(reason) => eprintln!("warning: no label or outlier checks: {reason}"),
    }
    if let Some(path) = &args.out {
        output::write_image_rows(path, &files, &report, &labels)?;
    }
    if let Some(path) = &args.summary {
        output::write_image_summary(path, &files, &report, &labels, &timings)?;
    }
    output::print_image_overview(&report, &labels);
    Ok(())
}

/// The `--column-role` overrides.
///
/// # Errors
/// A malformed override or an unknown role.
fn column_roles(args: &CheckArgs) -> anyhow::Result<BTreeMap<String, ColumnRole>> {
    let mut roles = BTreeMap::new();
    for given in &args.column_role {
        let (name, role) = given
            .split_once('=')
            .with_context(|| format!("--column-role {given:?}: expected NAME=ROLE"))?;
        let role = ColumnRole::from_name(role.trim()).with_context(|| {
            format!(
                "--column-role {given:?}: unknown role {role:?} (known: id, numeric, categorical, \
                 boolean, datetime, text, embedding, ignored)"
            )
        })?;
        roles.insert(name.trim().to_owned(), role);
    }
    Ok(roles)
}

/// The image checks on every binary column (a Parquet file's encoded images); a cell that is
/// missing or no image is not analyzed, with the reason.
fn image_checks(args: &CheckArgs, data: &input::Data) -> Vec<(String, ImageReport)> {
    let options = ImageOptions {
        max_pixels: args.max_image_pixels,
        ..ImageOptions::default()
    };
    data.table
        .columns()
        .iter()
        .filter(|c| c.is_binary())
        .map(|column| {
            let cells: Vec<&[u8]> = (0..column.len())
                .map(|i| column.bytes(i).unwrap_or_default())
                .collect();
            (column.name().to_owned(), check_images(&cells, &options))
        })
        .collect()
}

/// The text checks on every column whose role (inferred, or given) is text. A schema that cannot be
/// inferred skips them with a warning: the models report the same problem when they train.
fn text_checks(
    args: &CheckArgs,
    label: &str,
    data: &input::Data,
    roles: &BTreeMap<String, ColumnRole>,
) -> Vec<(String, TextReport)> {
    let ids: Vec<String> = args.id_column.iter().cloned().collect();
    let plans = match infer_schema(&data.table, label, &ids, roles) {
        Ok(plans) => plans,
        Err(err) => {
            eprintln!("warning: no text checks: {err}");
            return Vec::new();
        }
    };
    plans
        .iter()
        .filter(|p| p.role == ColumnRole::Text)
        .filter_map(|p| data.table.column(&p.name))
        .map(|column| {
            let cells: Vec<&str> = (0..column.len())
                .map(|i| column.get(i).unwrap_or(""))
                .collect();
            let report = check_texts(&cells, &TextOptions::default());
            (column.name().to_owned(), report)
        })
        .collect()
}

/// Trains AutoML's models on every column of the data (classification, the CLI's class order).
///
/// # Errors
/// A `--column-role` naming no column, a column whose values do not fit its role (naming the row
/// and column), no column to learn from, or an engine error.
fn train_models(
    args: &CheckArgs,
    label: &str,
    roles: &BTreeMap<String, ColumnRole>,
    data: &input::Data,
) -> anyhow::Result<trustmesh_quality::automl::AutoMlResult> {
    let mut options = AutoMlOptions::new(label);
    options.task = Some(Task::Classification);
    options.id_columns = args.id_column.iter().cloned().collect();
    options.roles.clone_from(roles);
    let automl = match train(&data.table, &options) {
        Ok(automl) => automl,
        Err(QualityError::Empty) => bail!(
            "{}: no feature columns to train a model on (no numeric feature columns, nor categorical, \
             boolean, date, text or embedding ones); give --pred-probs (out-of-sample predicted \
             probabilities, one column per class in sorted class-name order)",
            args.data.display()
        ),
        Err(err) => {
            return Err(err)
                .with_context(|| format!("{}: training the models", args.data.display()));
        }
    };
    if automl.classes != data.classes || automl.labels != data.labels {
        bail!("the models' classes differ from the label column's");
    }
    Ok(automl)
}
