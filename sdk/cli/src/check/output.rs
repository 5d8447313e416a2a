//! Writing the per-row report (CSV), the summary (JSON) and the overview on stdout.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use trustmesh_quality::automl::ModelSummary;
use trustmesh_quality::detectors::{Compat, IssueReport};
use trustmesh_quality::label::HealthSummary;
use trustmesh_quality::modality::{ArchiveFile, ImageReport, ModalityColumn, TextReport};

use super::images::{ISSUE_TYPES, ImageLabelChecks};
use super::input::Data;

/// The label and outlier checks on an archive's images, or why they did not run.
pub(super) type LabelChecks = Result<ImageLabelChecks, String>;

/// What the summary says about the run besides the report.
pub(super) struct Run<'a> {
    /// Whose rules were followed.
    pub(super) compat: Compat,
    /// The models' summary, when they were trained for the pred_probs.
    pub(super) model: Option<&'a ModelSummary>,
    /// The text checks per text column.
    pub(super) texts: &'a [(String, TextReport)],
    /// The image checks per binary column.
    pub(super) images: &'a [(String, ImageReport)],
    /// The command's stages and their milliseconds.
    pub(super) timings: &'a [(&'a str, f64)],
}

/// A score cell: empty for a row that was not analyzed.
fn score_cell(score: f64) -> String {
    if score.is_nan() {
        String::new()
    } else {
        score.to_string()
    }
}

fn flag_cell(flag: bool) -> String {
    if flag { "True" } else { "False" }.to_owned()
}

/// `is_<type>_issue` / `<type>_score` header pairs, each name after `prefix`.
fn pair_headers(columns: &[ModalityColumn], prefix: &str) -> Vec<String> {
    columns
        .iter()
        .flat_map(|c| {
            [
                format!("{prefix}{}", c.flag_column()),
                format!("{prefix}{}", c.score_column()),
            ]
        })
        .collect()
}

/// Per-type counts and mean scores, as the detectors' `issues`.
fn modality_issues(columns: &[ModalityColumn]) -> Vec<Value> {
    columns
        .iter()
        .map(|c| {
            json!({
                "issue_type": c.name,
                "score": c.mean_score(),
                "num_issues": c.num_issues(),
            })
        })
        .collect()
}

/// Writes one row per input row: the id (if any), `is_<type>_issue` and `<type>_score` per check,
/// `given_label`, `predicted_label`, `suggested_label` (class names) and `trust_score`; then, per
/// text column `c`, `c.is_<type>_issue` and `c.<type>_score` per text check, `c.text_num_characters`,
/// `c.PII_types`, `c.PII_items` (`;`-separated) and `c.predicted_language`; then, per image
/// (binary) column `c`, `c.is_<type>_issue` and `c.<type>_score` per image check,
/// `c.is_not_analyzed` and `c.not_analyzed_reason`.
pub(super) fn write_rows(
    path: &Path,
    data: &Data,
    report: &IssueReport,
    texts: &[(String, TextReport)],
    images: &[(String, ImageReport)],
) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut header: Vec<String> = Vec::new();
    if let Some((name, _)) = &data.ids {
        header.push(name.clone());
    }
    for column in &report.columns {
        header.push(column.issue_type.flag_column());
        header.push(column.issue_type.score_column());
    }
    header.extend(
        [
            "given_label",
            "predicted_label",
            "suggested_label",
            "trust_score",
        ]
        .map(String::from),
    );
    for (name, text) in texts {
        header.extend(pair_headers(&text.columns, &format!("{name}.")));
        header.extend(
            [
                "text_num_characters",
                "PII_types",
                "PII_items",
                "predicted_language",
            ]
            .map(|c| format!("{name}.{c}")),
        );
    }
    for (name, image) in images {
        header.extend(pair_headers(&image.columns, &format!("{name}.")));
        header.extend(["is_not_analyzed", "not_analyzed_reason"].map(|c| format!("{name}.{c}")));
    }
    writer.write_record(&header)?;
    let class = |labels: Option<&Vec<usize>>, i: usize| {
        labels.map_or_else(String::new, |l| data.classes[l[i]].clone())
    };
    let mut record: Vec<String> = Vec::with_capacity(header.len());
    for i in 0..report.n {
        record.clear();
        if let Some((_, ids)) = &data.ids {
            record.push(ids[i].clone());
        }
        for column in &report.columns {
            record.push(if column.is_issue[i] { "True" } else { "False" }.to_owned());
            record.push(column.score[i].to_string());
        }
        record.push(data.classes[data.labels[i]].clone());
        record.push(class(report.predicted_label.as_ref(), i));
        record.push(class(report.suggested_label.as_ref(), i));
        record.push(report.trust_score[i].to_string());
        for (_, text) in texts {
            for column in &text.columns {
                record.push(flag_cell(column.is_issue[i]));
                record.push(score_cell(column.score[i]));
            }
            let pii = &text.pii[i];
            let mut kinds: Vec<&str> = pii.iter().map(|m| m.pii_type.name()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            record.push(text.text_num_characters[i].to_string());
            record.push(kinds.join(";"));
            record.push(
                pii.iter()
                    .map(|m| m.text.as_str())
                    .collect::<Vec<_>>()
                    .join(";"),
            );
            record.push(text.predicted_language[i].unwrap_or_default().to_owned());
        }
        for (_, image) in images {
            for column in &image.columns {
                record.push(flag_cell(column.is_issue[i]));
                record.push(score_cell(column.score[i]));
            }
            record.push(flag_cell(image.not_analyzed[i].is_some()));
            record.push(image.not_analyzed[i].clone().unwrap_or_default());
        }
        writer.write_record(&record)?;
    }
    writer
        .flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The label health summary with class names.
fn health_json(health: &HealthSummary, classes: &[String]) -> Value {
    json!({
        "overall_label_health_score": health.overall_label_health_score,
        "num_label_issues": health.num_label_issues,
        "num_label_issues_calibrated": health.num_label_issues_calibrated,
        "classes_by_label_quality": health.classes_by_label_quality.iter().map(|c| json!({
            "class": classes[c.class],
            "label_issues": c.label_issues,
            "inverse_label_issues": c.inverse_label_issues,
            "label_noise": c.label_noise,
            "inverse_label_noise": c.inverse_label_noise,
            "label_quality_score": c.label_quality_score,
        })).collect::<Vec<_>>(),
        "overlapping_classes": health.overlapping_classes.iter().map(|o| json!({
            "class_a": classes[o.class_a],
            "class_b": classes[o.class_b],
            "num_overlapping_examples": o.num_overlapping_examples,
            "joint_probability": o.joint_probability,
        })).collect::<Vec<_>>(),
    })
}

/// Writes the summary: rows, classes, where the pred_probs came from, per-type counts and scores,
/// skipped checks, the text checks' counts and scores per text column, label health and per-stage
/// timings in milliseconds (the engine's stages, then the command's).
pub(super) fn write_summary(
    path: &Path,
    data: &Data,
    report: &IssueReport,
    run: &Run<'_>,
) -> anyhow::Result<()> {
    let Run {
        compat,
        model,
        texts,
        images,
        timings,
    } = *run;
    let timings_ms: serde_json::Map<String, Value> = report
        .timings
        .iter()
        .map(|t| (t.stage.to_owned(), json!(t.ms)))
        .chain(
            timings
                .iter()
                .map(|(stage, ms)| ((*stage).to_owned(), json!(ms))),
        )
        .collect();
    let summary = json!({
        "rows": report.n,
        "classes": data.classes,
        "compat": match compat { Compat::Trustmesh => "trustmesh", Compat::Cleanlab => "cleanlab" },
        "issues": report.summary.iter().map(|s| json!({
            "issue_type": s.issue_type.name(),
            "score": s.score,
            "num_issues": s.num_issues,
        })).collect::<Vec<_>>(),
        "skipped": report.skipped.iter().map(|s| json!({
            "issue_type": s.issue_type.name(),
            "reason": s.reason,
        })).collect::<Vec<_>>(),
        "pred_probs": model.map_or_else(
            || Ok(json!({ "source": "file" })),
            |m| -> anyhow::Result<Value> {
                Ok(json!({
                    "source": "cross-validated ensemble",
                    "folds": m.folds,
                    "accuracy": m.ensemble.accuracy,
                    "log_loss": m.ensemble.log_loss,
                    "warnings": m.warnings,
                    "model_summary": serde_json::to_value(m)?,
                }))
            },
        )?,
        "text_issues": texts.iter().map(|(name, text)| json!({
            "column": name,
            "issues": modality_issues(&text.columns),
        })).collect::<Vec<_>>(),
        "image_issues": images.iter().map(|(name, image)| json!({
            "column": name,
            "issues": modality_issues(&image.columns),
            "not_analyzed": image.not_analyzed.iter().flatten().count(),
        })).collect::<Vec<_>>(),
        "health_score": report.health_score,
        "non_iid_p_value": report.non_iid_p_value,
        "label_health": report.label_health.as_ref().map(|h| health_json(h, &data.classes)),
        "timings_ms": timings_ms,
    });
    let text = serde_json::to_string_pretty(&summary)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// The models' cross-validated metrics on stdout: one line per model and the ensemble, then the
/// ensemble's per-class precision, recall and F1.
pub(super) fn print_model_summary(summary: &ModelSummary) {
    println!(
        "models: {}-fold cross-validation on {} rows, {} dense + {} text features",
        summary.folds, summary.rows, summary.dense_features, summary.sparse_features
    );
    for m in summary.models.iter().chain([&summary.ensemble]) {
        println!(
            "  {:<24} accuracy {:.4}  log loss {:.4}  weight {:.2}  {:.2} s",
            m.model,
            m.accuracy.unwrap_or(f64::NAN),
            m.log_loss.unwrap_or(f64::NAN),
            m.weight,
            m.seconds
        );
    }
    for c in &summary.ensemble.per_class {
        println!(
            "  class {:<18} support {:>7}  precision {:.4}  recall {:.4}  F1 {:.4}",
            c.class, c.support, c.precision, c.recall, c.f1
        );
    }
}

/// A short overview on stdout: one line per check.
pub(super) fn print_overview(report: &IssueReport) {
    println!("{} rows checked", report.n);
    for s in &report.summary {
        println!(
            "{:<22} {:>8} issues  score {:.4}",
            s.issue_type.name(),
            s.num_issues,
            s.score
        );
    }
    for s in &report.skipped {
        println!("{:<22} skipped: {}", s.issue_type.name(), s.reason);
    }
}

/// The text and image checks' overview on stdout: one line per column and check.
pub(super) fn print_column_overview(
    texts: &[(String, TextReport)],
    images: &[(String, ImageReport)],
) {
    let columns = texts
        .iter()
        .map(|(name, text)| (name, &text.columns))
        .chain(images.iter().map(|(name, image)| (name, &image.columns)));
    for (name, checks) in columns {
        for c in checks {
            println!(
                "{:<22} {:>8} issues  score {:.4}",
                format!("{name}.{}", c.name),
                c.num_issues(),
                c.mean_score()
            );
        }
    }
}

/// The image checks' columns, then the label and outlier checks' when they ran.
fn image_columns<'a>(report: &'a ImageReport, labels: &'a LabelChecks) -> Vec<&'a ModalityColumn> {
    let extra = labels.as_ref().map_or(&[][..], |l| l.columns.as_slice());
    report.columns.iter().chain(extra).collect()
}

/// Writes one row per archive file: `path`, `given_label` (its folder), `is_<type>_issue` and
/// `<type>_score` per image check, then for the label and outlier checks (when they ran), then
/// `predicted_label`, `suggested_label` and `trust_score` (when the label check ran), then
/// `is_not_analyzed` and `not_analyzed_reason`. Files not analyzed have empty scores and labels.
pub(super) fn write_image_rows(
    path: &Path,
    files: &[ArchiveFile],
    report: &ImageReport,
    labels: &LabelChecks,
) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let columns = image_columns(report, labels);
    let mut header = vec!["path".to_owned(), "given_label".to_owned()];
    for column in &columns {
        header.extend([column.flag_column(), column.score_column()]);
    }
    if labels.is_ok() {
        header.extend(["predicted_label", "suggested_label", "trust_score"].map(String::from));
    }
    header.extend(["is_not_analyzed", "not_analyzed_reason"].map(String::from));
    writer.write_record(&header)?;
    for (i, file) in files.iter().enumerate() {
        let mut record = vec![file.path.clone(), file.label.clone()];
        for column in &columns {
            record.push(flag_cell(column.is_issue[i]));
            record.push(score_cell(column.score[i]));
        }
        if let Ok(l) = labels {
            record.push(l.predicted_label[i].clone());
            record.push(l.suggested_label[i].clone());
            record.push(score_cell(l.trust_score[i]));
        }
        record.push(flag_cell(report.not_analyzed[i].is_some()));
        record.push(report.not_analyzed[i].clone().unwrap_or_default());
        writer.write_record(&record)?;
    }
    writer
        .flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The label and outlier checks that did not run, with the reason.
fn label_skipped(labels: &LabelChecks) -> Vec<(&'static str, String)> {
    match labels {
        Ok(l) => l.skipped.clone(),
        Err(reason) => ISSUE_TYPES
            .iter()
            .map(|t| (t.name(), reason.clone()))
            .collect(),
    }
}

/// Writes the image summary: rows, classes (folder names), per-type counts and mean scores (the
/// image checks, then the label and outlier checks), the checks skipped with the reason, where the
/// pred_probs came from, the files not analyzed with their reasons, and per-stage timings in
/// milliseconds.
pub(super) fn write_image_summary(
    path: &Path,
    files: &[ArchiveFile],
    report: &ImageReport,
    labels: &LabelChecks,
    timings: &[(&str, f64)],
) -> anyhow::Result<()> {
    let mut classes: Vec<&str> = files.iter().map(|f| f.label.as_str()).collect();
    classes.sort_unstable();
    classes.dedup();
    let summary = json!({
        "rows": report.n,
        "classes": classes,
        "issues": image_columns(report, labels).into_iter().map(|c| json!({
            "issue_type": c.name,
            "score": c.mean_score(),
            "num_issues": c.num_issues(),
        })).collect::<Vec<_>>(),
        "skipped": label_skipped(labels).into_iter().map(|(name, reason)| json!({
            "issue_type": name,
            "reason": reason,
        })).collect::<Vec<_>>(),
        "pred_probs": labels.as_ref().ok().map(|l| json!({
            "source": "cross-validated ensemble",
            "folds": l.model.folds,
            "accuracy": l.model.ensemble.accuracy,
            "log_loss": l.model.ensemble.log_loss,
            "warnings": l.model.warnings,
        })),
        "not_analyzed": files.iter().zip(&report.not_analyzed).filter_map(|(f, r)| {
            r.as_ref().map(|reason| json!({ "path": f.path, "reason": reason }))
        }).collect::<Vec<_>>(),
        "timings_ms": timings.iter().map(|(stage, ms)| ((*stage).to_owned(), json!(ms)))
            .collect::<serde_json::Map<String, Value>>(),
    });
    let text = serde_json::to_string_pretty(&summary)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// The image checks' overview on stdout: one line per check (the label and outlier checks' too),
/// the checks skipped, then the files not analyzed.
pub(super) fn print_image_overview(report: &ImageReport, labels: &LabelChecks) {
    println!("{} images checked", report.n);
    for c in image_columns(report, labels) {
        println!(
            "{:<22} {:>8} issues  score {:.4}",
            c.name,
            c.num_issues(),
            c.mean_score()
        );
    }
    for (name, reason) in label_skipped(labels) {
        println!("{name:<22} skipped: {reason}");
    }
    let not_analyzed = report.not_analyzed.iter().flatten().count();
    println!("{:<22} {not_analyzed:>8}", "not analyzed");
}
