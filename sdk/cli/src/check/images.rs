//! The label and outlier checks on a folder-per-class archive's images: AutoML's models, trained on
//! the images' features (colour histograms, gradient-orientation histograms and a thumbnail, see
//! `trustmesh_quality::automl`), give cross-validated pred_probs for the label check, and the same
//! features the kNN distances of the outlier check.

use trustmesh_quality::automl::{AutoMlOptions, Column, ModelSummary, Table, Task, train};
use trustmesh_quality::detectors::{DetectorConfig, DetectorInput, IssueType, find_issues};
use trustmesh_quality::modality::{ArchiveFile, ModalityColumn};

/// The checks this module runs.
pub(super) const ISSUE_TYPES: [IssueType; 2] = [IssueType::Label, IssueType::Outlier];

/// What the label and outlier checks found, one entry per archive file.
pub(super) struct ImageLabelChecks {
    /// `label` and `outlier`, each as long as the archive (files not analyzed: not flagged, NaN
    /// score).
    pub(super) columns: Vec<ModalityColumn>,
    /// The models' most likely class per file (empty when not analyzed).
    pub(super) predicted_label: Vec<String>,
    /// The class suggested instead of the given one (empty when not analyzed).
    pub(super) suggested_label: Vec<String>,
    /// Trust score per file (NaN when not analyzed).
    pub(super) trust_score: Vec<f64>,
    /// The checks that could not run, with the reason.
    pub(super) skipped: Vec<(&'static str, String)>,
    /// The models' cross-validated metrics.
    pub(super) model: ModelSummary,
}

/// Runs the label and outlier checks on the files that were analyzed (`analyzed[i]`), labelled by
/// their folders, with `config`'s thresholds.
///
/// # Errors
/// Why the checks cannot run (fewer than two classes, a class too small to cross-validate, ...):
/// the caller reports it and keeps the image checks.
pub(super) fn label_checks(
    files: &[ArchiveFile],
    analyzed: &[bool],
    mut config: DetectorConfig,
) -> Result<ImageLabelChecks, String> {
    let rows: Vec<usize> = (0..files.len()).filter(|&i| analyzed[i]).collect();
    let mut classes: Vec<&str> = rows.iter().map(|&i| files[i].label.as_str()).collect();
    classes.sort_unstable();
    classes.dedup();
    if classes.len() < 2 {
        return Err(format!(
            "the analyzed images are of {} class(es) (folders); at least two are needed",
            classes.len()
        ));
    }
    let table = Table::new(vec![
        Column::binary(
            "image",
            rows.iter().map(|&i| files[i].bytes.clone()).collect(),
        ),
        Column::new(
            "label",
            rows.iter().map(|&i| files[i].label.clone()).collect(),
        ),
    ])
    .map_err(|e| e.to_string())?;
    let mut options = AutoMlOptions::new("label");
    options.task = Some(Task::Classification);
    let automl = train(&table, &options).map_err(|e| format!("training the models: {e}"))?;
    let pred_probs = automl
        .pred_probs
        .as_ref()
        .ok_or("the models gave no class probabilities")?;
    let features = automl.design.dense_features();
    config.issue_types = ISSUE_TYPES.to_vec();
    let input = DetectorInput {
        labels: Some(&automl.labels),
        pred_probs: Some(pred_probs),
        features: features.as_ref(),
    };
    let report = find_issues(&input, &config).map_err(|e| e.to_string())?;

    let n = files.len();
    let columns = report
        .columns
        .iter()
        .map(|c| {
            let mut column = ModalityColumn {
                name: c.issue_type.name(),
                is_issue: vec![false; n],
                score: vec![f64::NAN; n],
            };
            for (j, &i) in rows.iter().enumerate() {
                column.is_issue[i] = c.is_issue[j];
                column.score[i] = c.score[j];
            }
            column
        })
        .collect();
    let names = |labels: Option<&Vec<usize>>| {
        let mut out = vec![String::new(); n];
        if let Some(labels) = labels {
            for (j, &i) in rows.iter().enumerate() {
                out[i].clone_from(&automl.classes[labels[j]]);
            }
        }
        out
    };
    let mut trust_score = vec![f64::NAN; n];
    for (j, &i) in rows.iter().enumerate() {
        trust_score[i] = report.trust_score[j];
    }
    Ok(ImageLabelChecks {
        columns,
        predicted_label: names(report.predicted_label.as_ref()),
        suggested_label: names(report.suggested_label.as_ref()),
        trust_score,
        skipped: report
            .skipped
            .iter()
            .map(|s| (s.issue_type.name(), s.reason.clone()))
            .collect(),
        model: automl.summary,
    })
}
