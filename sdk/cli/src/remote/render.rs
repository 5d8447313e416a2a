//! How results are shown: a table (or a few labelled lines) for people, JSON for scripts.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use prost_types::Timestamp;
use serde_json::{Value, json};
use trustmesh_sdk::proto::{
    ApiKey, AuditRecord, Dataset, Deletion, DeletionCertificate, IssueType, Job, ModelEvaluation,
    ModelSummary, Report, RowResult, Scope, WebhookEndpoint, WebhookEventType,
};

/// Where results go: human tables or JSON.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    /// JSON for scripts instead of tables.
    pub(crate) json: bool,
}

impl Output {
    /// Prints `value` (JSON mode) or `human` (table mode).
    pub(crate) fn show(self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }

    /// Prints a list: a JSON array, or a table of `header` and `rows` (with `empty` when none).
    pub(crate) fn list<T>(
        self,
        items: &[T],
        to_json: impl Fn(&T) -> Value,
        header: &[&str],
        row: impl Fn(&T) -> Vec<String>,
        empty: &str,
    ) {
        if self.json {
            println!("{}", Value::Array(items.iter().map(to_json).collect()));
        } else if items.is_empty() {
            println!("{empty}");
        } else {
            println!("{}", table(header, items.iter().map(row)));
        }
    }
}

/// A table of `header` and `rows`, sized to the terminal.
pub(crate) fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    table
}

/// `name` of a protobuf enum value without its `prefix` (`JOB_STATE_RUNNING` → `RUNNING`).
pub(crate) fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

/// RFC 3339, or empty.
pub(crate) fn time(t: Option<&Timestamp>) -> String {
    t.map(ToString::to_string).unwrap_or_default()
}

/// An issue type as users write it (`label`, `near-duplicate`).
pub(crate) fn issue_name(issue: IssueType) -> String {
    short(issue.as_str_name(), "ISSUE_TYPE_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// A scope as users write it (`datasets:write`).
pub(crate) fn scope_name(scope: Scope) -> String {
    short(scope.as_str_name(), "SCOPE_")
        .to_ascii_lowercase()
        .replacen('_', ":", 1)
}

/// A webhook event type as users write it (`job-updated`).
pub(crate) fn event_name(event: WebhookEventType) -> String {
    short(event.as_str_name(), "WEBHOOK_EVENT_TYPE_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// A dataset as JSON.
pub(crate) fn dataset_json(d: &Dataset) -> Value {
    json!({
        "name": d.name,
        "display_name": d.display_name,
        "state": short(d.state().as_str_name(), "DATASET_STATE_"),
        "format": short(d.format().as_str_name(), "DATASET_FORMAT_"),
        "filename": d.filename,
        "size_bytes": d.size_bytes,
        "sha256": d.sha256,
        "row_count": d.row_count,
        "columns": d.schema.as_ref().map(|s| s.columns.iter().map(|c| json!({
            "name": c.name,
            "type": short(c.r#type().as_str_name(), "COLUMN_TYPE_"),
            "role": short(c.role().as_str_name(), "COLUMN_ROLE_"),
        })).collect::<Vec<_>>()).unwrap_or_default(),
        "error": d.error.as_ref().map(|e| json!({"code": e.code, "message": e.message, "row": e.row, "column": e.column})),
        "create_time": time(d.create_time.as_ref()),
    })
}

/// A dataset's table row.
pub(crate) fn dataset_row(d: &Dataset) -> Vec<String> {
    vec![
        d.name.clone(),
        d.display_name.clone(),
        short(d.state().as_str_name(), "DATASET_STATE_"),
        d.row_count.to_string(),
        d.size_bytes.to_string(),
        time(d.create_time.as_ref()),
    ]
}

/// The header of [`dataset_row`].
pub(crate) const DATASET_HEADER: &[&str] =
    &["name", "display name", "state", "rows", "bytes", "created"];

/// A job as JSON.
pub(crate) fn job_json(j: &Job) -> Value {
    json!({
        "name": j.name,
        "kind": short(j.kind().as_str_name(), "JOB_KIND_"),
        "state": short(j.state().as_str_name(), "JOB_STATE_"),
        "progress": j.progress,
        "step": j.step,
        "step_index": j.step_index,
        "step_count": j.step_count,
        "target": j.target,
        "output": j.output,
        "error": j.error.as_ref().map(|e| json!({"code": e.code, "message": e.message})),
        "create_time": time(j.create_time.as_ref()),
        "end_time": time(j.end_time.as_ref()),
    })
}

/// A job's table row.
pub(crate) fn job_row(j: &Job) -> Vec<String> {
    vec![
        j.name.clone(),
        short(j.state().as_str_name(), "JOB_STATE_"),
        format!("{:.0}%", j.progress * 100.0),
        j.step.clone(),
        j.target.clone(),
        j.output.clone(),
    ]
}

/// The header of [`job_row`].
pub(crate) const JOB_HEADER: &[&str] = &["name", "state", "progress", "step", "target", "output"];

/// A report as JSON.
pub(crate) fn report_json(r: &Report) -> Value {
    json!({
        "name": r.name,
        "dataset": r.dataset,
        "job": r.job,
        "row_count": r.row_count,
        "analyzed_row_count": r.analyzed_row_count,
        "health_score": r.health_score,
        "issues": r.issue_summaries.iter().map(|s| json!({
            "issue": issue_name(s.issue_type()),
            "column": s.column,
            "flagged_rows": s.flagged_rows,
            "flagged_fraction": s.flagged_fraction,
            "quality_score": s.quality_score,
        })).collect::<Vec<_>>(),
        "model": r.model_metrics.as_ref().map(|m| json!({
            "family": m.model_family, "cv_folds": m.cv_folds, "accuracy": m.accuracy, "macro_f1": m.macro_f1,
        })),
        "model_summary": r.model_summary.as_ref().map(model_summary_json),
        "classes": r.class_health.iter().map(|c| json!({
            "class": c.class_name, "rows": c.row_count, "label_issues": c.label_issue_count,
            "estimated_noise_rate": c.estimated_noise_rate,
        })).collect::<Vec<_>>(),
        "create_time": time(r.create_time.as_ref()),
    })
}

fn evaluation_json(m: &ModelEvaluation) -> Value {
    json!({
        "model": m.model,
        "weight": m.weight,
        "seconds": m.seconds,
        "accuracy": m.accuracy,
        "log_loss": m.log_loss,
        "per_class": m.per_class.iter().map(|c| json!({
            "class": c.class_name, "support": c.support, "precision": c.precision,
            "recall": c.recall, "f1": c.f1,
        })).collect::<Vec<_>>(),
    })
}

/// The models behind a report as JSON.
fn model_summary_json(s: &ModelSummary) -> Value {
    json!({
        "cv_folds": s.cv_folds,
        "seed": s.seed,
        "rows": s.row_count,
        "columns": s.columns.iter().map(|c| json!({
            "column": c.column, "role": c.role, "reason": c.reason,
        })).collect::<Vec<_>>(),
        "dense_features": s.dense_features,
        "sparse_features": s.sparse_features,
        "models": s.models.iter().map(evaluation_json).collect::<Vec<_>>(),
        "ensemble": s.ensemble.as_ref().map(evaluation_json),
        "warnings": s.warnings,
    })
}

/// `value` to 3 decimals, or `-`.
fn decimal(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

/// The models behind a report for people: each model's and the ensemble's cross-validated
/// accuracy, log loss and weight, then the ensemble's per-class precision, recall and F1.
fn model_summary_text(s: &ModelSummary) -> String {
    let mut text = format!(
        "  models: {}-fold cross-validation on {} rows, {} dense + {} text features\n",
        s.cv_folds, s.row_count, s.dense_features, s.sparse_features
    );
    let models = s.models.iter().chain(s.ensemble.as_ref());
    text.push_str(
        &table(
            &["model", "weight", "accuracy", "log loss", "seconds"],
            models.map(|m| {
                vec![
                    m.model.clone(),
                    format!("{:.2}", m.weight),
                    decimal(m.accuracy),
                    decimal(m.log_loss),
                    format!("{:.2}", m.seconds),
                ]
            }),
        )
        .to_string(),
    );
    text.push('\n');
    if let Some(ensemble) = &s.ensemble {
        text.push_str(
            &table(
                &["class", "support", "precision", "recall", "F1"],
                ensemble.per_class.iter().map(|c| {
                    vec![
                        c.class_name.clone(),
                        c.support.to_string(),
                        format!("{:.3}", c.precision),
                        format!("{:.3}", c.recall),
                        format!("{:.3}", c.f1),
                    ]
                }),
            )
            .to_string(),
        );
        text.push('\n');
    }
    for warning in &s.warnings {
        text.push_str(&format!("  warning: {warning}\n"));
    }
    text
}

/// A report for people: the headline, the models, then a table of issues.
pub(crate) fn report_text(r: &Report) -> String {
    let mut text = format!(
        "{}\n  dataset {}\n  {} rows ({} analyzed), health score {:.3}\n",
        r.name, r.dataset, r.row_count, r.analyzed_row_count, r.health_score
    );
    if let Some(m) = &r.model_metrics {
        text.push_str(&format!(
            "  model {} ({} folds), accuracy {}\n",
            m.model_family,
            m.cv_folds,
            decimal(m.accuracy)
        ));
    }
    if let Some(s) = &r.model_summary {
        text.push_str(&model_summary_text(s));
    }
    let mut issues: Vec<_> = r.issue_summaries.iter().collect();
    issues.sort_by_key(|s| std::cmp::Reverse(s.flagged_rows));
    text.push_str(
        &table(
            &[
                "issue",
                "column",
                "flagged rows",
                "fraction",
                "quality score",
            ],
            issues.iter().map(|s| {
                vec![
                    issue_name(s.issue_type()),
                    s.column.clone(),
                    s.flagged_rows.to_string(),
                    format!("{:.1}%", s.flagged_fraction * 100.0),
                    format!("{:.3}", s.quality_score),
                ]
            }),
        )
        .to_string(),
    );
    text
}

fn flagged(row: &RowResult) -> Vec<String> {
    row.issues
        .iter()
        .filter(|i| i.flagged)
        .map(|i| issue_name(i.issue_type()))
        .collect()
}

/// The flagged issues of a row for people: each with the column it concerns, if any
/// (`dark (image)`, `label`).
fn flagged_text(row: &RowResult) -> String {
    row.issues
        .iter()
        .filter(|i| i.flagged)
        .map(|i| match i.column.as_str() {
            "" => issue_name(i.issue_type()),
            column => format!("{} ({column})", issue_name(i.issue_type())),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row result as JSON.
pub(crate) fn row_json(r: &RowResult) -> Value {
    json!({
        "row_index": r.row_index,
        "row_id": r.row_id,
        "trust_score": r.trust_score,
        "issues": flagged(r),
        "flagged": r.issues.iter().filter(|i| i.flagged).map(|i| json!({
            "issue": issue_name(i.issue_type()), "column": i.column,
        })).collect::<Vec<_>>(),
        "not_analyzed_reason": r.not_analyzed_reason,
        "given_label": r.given_label,
        "suggested_label": r.suggested_label,
        "suggested_label_confidence": r.suggested_label_confidence,
    })
}

/// A row result's table row.
pub(crate) fn row_row(r: &RowResult) -> Vec<String> {
    vec![
        r.row_index.to_string(),
        r.row_id.clone(),
        format!("{:.3}", r.trust_score),
        flagged_text(r),
        r.given_label.clone(),
        r.suggested_label.clone(),
        r.not_analyzed_reason.clone(),
    ]
}

/// The header of [`row_row`].
pub(crate) const ROW_HEADER: &[&str] = &[
    "row",
    "id",
    "trust",
    "issues",
    "given label",
    "suggested",
    "not analyzed because",
];

/// An API key as JSON (never its secret: the key has none to show).
pub(crate) fn key_json(k: &ApiKey) -> Value {
    json!({
        "name": k.name,
        "display_name": k.display_name,
        "key_prefix": k.key_prefix,
        "scopes": k.scopes().map(scope_name).collect::<Vec<_>>(),
        "create_time": time(k.create_time.as_ref()),
        "expire_time": time(k.expire_time.as_ref()),
        "revoke_time": time(k.revoke_time.as_ref()),
    })
}

/// An API key's table row.
pub(crate) fn key_row(k: &ApiKey) -> Vec<String> {
    vec![
        k.name.clone(),
        k.display_name.clone(),
        k.key_prefix.clone(),
        k.scopes().map(scope_name).collect::<Vec<_>>().join(" "),
        time(k.expire_time.as_ref()),
        time(k.revoke_time.as_ref()),
    ]
}

/// The header of [`key_row`].
pub(crate) const KEY_HEADER: &[&str] = &[
    "name",
    "display name",
    "prefix",
    "scopes",
    "expires",
    "revoked",
];

/// A webhook endpoint as JSON.
pub(crate) fn webhook_json(w: &WebhookEndpoint) -> Value {
    json!({
        "name": w.name,
        "url": w.url,
        "event_types": w.event_types().map(event_name).collect::<Vec<_>>(),
        "description": w.description,
        "disabled": w.disabled,
        "create_time": time(w.create_time.as_ref()),
    })
}

/// A webhook endpoint's table row.
pub(crate) fn webhook_row(w: &WebhookEndpoint) -> Vec<String> {
    vec![
        w.name.clone(),
        w.url.clone(),
        w.event_types()
            .map(event_name)
            .collect::<Vec<_>>()
            .join(" "),
        w.disabled.to_string(),
    ]
}

/// The header of [`webhook_row`].
pub(crate) const WEBHOOK_HEADER: &[&str] = &["name", "url", "events", "disabled"];

/// An audit record as JSON.
pub(crate) fn audit_json(e: &AuditRecord) -> Value {
    json!({
        "sequence": e.sequence,
        "time": time(e.time.as_ref()),
        "actor": e.actor.as_ref().map(|a| json!({"type": a.r#type, "id": a.id})),
        "action": e.action,
        "resource": e.resource,
        "outcome": short(e.outcome().as_str_name(), "AUDIT_OUTCOME_"),
        "service": e.service,
        "hash": e.hash,
    })
}

/// An audit record's table row.
pub(crate) fn audit_row(e: &AuditRecord) -> Vec<String> {
    vec![
        e.sequence.to_string(),
        time(e.time.as_ref()),
        e.actor
            .as_ref()
            .map(|a| format!("{}:{}", a.r#type, a.id))
            .unwrap_or_default(),
        e.action.clone(),
        e.resource.clone(),
        short(e.outcome().as_str_name(), "AUDIT_OUTCOME_"),
    ]
}

/// The header of [`audit_row`].
pub(crate) const AUDIT_HEADER: &[&str] = &["seq", "time", "actor", "action", "resource", "outcome"];

/// A deletion as JSON.
pub(crate) fn deletion_json(d: &Deletion) -> Value {
    json!({
        "name": d.name,
        "target": d.target,
        "state": short(d.state().as_str_name(), "DELETION_STATE_"),
        "receipts": d.receipts.iter().map(|r| json!({
            "service": r.service, "deleted": r.deleted, "residue_found": r.residue_found,
            "deks_destroyed": r.deks_destroyed,
        })).collect::<Vec<_>>(),
        "complete_time": time(d.complete_time.as_ref()),
    })
}

/// A deletion certificate as JSON (the document as text, the signature in hex).
pub(crate) fn certificate_json(c: &DeletionCertificate) -> Value {
    json!({
        "name": c.name,
        "algorithm": c.algorithm,
        "key_id": c.key_id,
        "issue_time": time(c.issue_time.as_ref()),
        "signature_hex": hex::encode(&c.signature),
        "certificate": String::from_utf8_lossy(&c.certificate),
    })
}

#[cfg(test)]
mod tests {
    use trustmesh_sdk::proto::{ClassMetrics, IssueSummary, ModelMetrics, RowIssue};

    use super::*;

    fn evaluation(model: &str, weight: f64, accuracy: f64) -> ModelEvaluation {
        ModelEvaluation {
            model: model.to_owned(),
            weight,
            seconds: 0.25,
            accuracy: Some(accuracy),
            log_loss: Some(0.5),
            per_class: vec![ClassMetrics {
                class_name: "class_0".to_owned(),
                support: 59,
                precision: 0.9,
                recall: 0.8,
                f1: 0.847,
            }],
        }
    }

    #[test]
    fn a_report_shows_each_model_the_ensemble_and_its_per_class_metrics() {
        let report = Report {
            name: "tenants/acme/reports/r".to_owned(),
            model_metrics: Some(ModelMetrics {
                model_family: "ensemble".to_owned(),
                cv_folds: 5,
                accuracy: Some(0.91),
                ..ModelMetrics::default()
            }),
            model_summary: Some(ModelSummary {
                cv_folds: 5,
                row_count: 178,
                dense_features: 13,
                models: vec![
                    evaluation("logistic_regression", 0.6, 0.88),
                    evaluation("knn", 0.4, 0.86),
                ],
                ensemble: Some(evaluation("ensemble", 1.0, 0.91)),
                warnings: vec!["a warning".to_owned()],
                ..ModelSummary::default()
            }),
            ..Report::default()
        };
        let text = report_text(&report);
        for expected in [
            "model ensemble (5 folds), accuracy 0.910",
            "5-fold cross-validation on 178 rows, 13 dense + 0 text features",
            "logistic_regression",
            "0.880",
            "knn",
            "0.40",
            "class_0",
            "0.847",
            "warning: a warning",
        ] {
            assert!(text.contains(expected), "no {expected:?} in\n{text}");
        }
        let json = report_json(&report);
        let summary = &json["model_summary"];
        assert_eq!(summary["models"][0]["model"], "logistic_regression");
        assert_eq!(summary["models"][1]["weight"], 0.4);
        assert_eq!(summary["ensemble"]["accuracy"], 0.91);
        assert_eq!(summary["ensemble"]["per_class"][0]["recall"], 0.8);
        let without = report_json(&Report::default());
        assert!(without["model_summary"].is_null());
    }

    #[test]
    fn reports_and_rows_name_each_issues_column_and_why_a_row_was_not_analyzed() {
        let report = Report {
            issue_summaries: vec![
                IssueSummary {
                    issue_type: IssueType::Dark.into(),
                    column: "image".to_owned(),
                    flagged_rows: 3,
                    ..IssueSummary::default()
                },
                IssueSummary {
                    issue_type: IssueType::Label.into(),
                    flagged_rows: 2,
                    ..IssueSummary::default()
                },
            ],
            ..Report::default()
        };
        let text = report_text(&report);
        assert!(text.contains("column"), "{text}");
        let dark = text
            .lines()
            .find(|l| l.contains("dark"))
            .unwrap_or_else(|| panic!("no dark line in\n{text}"));
        assert!(dark.contains("image"), "{dark}");
        let json = report_json(&report);
        assert_eq!(json["issues"][0]["column"], "image");
        assert_eq!(json["issues"][1]["column"], "");

        let issue = |t: IssueType, column: &str, flagged: bool| RowIssue {
            issue_type: t.into(),
            column: column.to_owned(),
            flagged,
            ..RowIssue::default()
        };
        let row = RowResult {
            row_index: 4,
            row_id: "img/gone.png".to_owned(),
            issues: vec![
                issue(IssueType::NotAnalyzed, "image", true),
                issue(IssueType::Dark, "image", false),
                issue(IssueType::Label, "", true),
            ],
            not_analyzed_reason: "image: row 4 (path \"img/gone.png\"): no image".to_owned(),
            ..RowResult::default()
        };
        let cells = row_row(&row);
        assert_eq!(cells.len(), ROW_HEADER.len());
        assert_eq!(cells[3], "not-analyzed (image), label");
        assert_eq!(cells[6], row.not_analyzed_reason);
        let json = row_json(&row);
        assert_eq!(json["issues"], json!(["not-analyzed", "label"]));
        assert_eq!(
            json["flagged"],
            json!([
                {"issue": "not-analyzed", "column": "image"},
                {"issue": "label", "column": ""},
            ])
        );
        assert_eq!(json["not_analyzed_reason"], row.not_analyzed_reason);
    }
}
