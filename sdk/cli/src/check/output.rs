//! Writing the per-row report (CSV), the summary (JSON) and the overview on stdout.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};
use trustmesh_quality::automl::ModelSummary;
use trustmesh_quality::detectors::{Compat, IssueReport};
use trustmesh_quality::label::HealthSummary;

use super::input::Data;

/// Writes one row per input row: the id (if any), `is_<type>_issue` and `<type>_score` per check,
/// `given_label`, `predicted_label`, `suggested_label` (class names) and `trust_score`.
pub(super) fn write_rows(path: &Path, data: &Data, report: &IssueReport) -> anyhow::Result<()> {
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

/// Writes the summary: rows, classes, where the pred_probs came from, per-type counts and scores, skipped checks, label health and
/// per-stage timings in milliseconds (the engine's stages, then the command's).
pub(super) fn write_summary(
    path: &Path,
    data: &Data,
    report: &IssueReport,
    compat: Compat,
    model: Option<&ModelSummary>,
    timings: &[(&str, f64)],
) -> anyhow::Result<()> {
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
