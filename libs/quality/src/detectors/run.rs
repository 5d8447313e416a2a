//! The orchestrator: validates inputs, builds the shared kNN graph once, runs the requested checks,
//! and assembles the report in a stable order.

use std::time::Instant;

use super::{
    CheckOutput, DetectorConfig, DetectorInput, IssueReport, IssueSummary, IssueType, Skipped,
    StageTiming, duplicate, imbalance, label, noniid, null, outlier, stats, studio, trust,
    underperforming, valuation,
};
use crate::knn::{KnnGraph, Metric};
use crate::{Features, PredProbs, QualityError};

/// Runs the configured checks on whatever inputs are present (Datalab's `find_issues`).
///
/// Checks whose inputs are missing are listed in [`IssueReport::skipped`] (as Datalab drops them):
/// `label` and `class_imbalance` need labels; `label` also pred_probs or features (kNN votes);
/// `outlier` features, or pred_probs with labels; `near_duplicate`, `exact_duplicate`,
/// `data_valuation` features; `non_iid` features or pred_probs; `underperforming_group` pred_probs,
/// labels and features; `null` features; `ambiguous` and `well_labeled` pred_probs and labels.
///
/// # Errors
/// [`QualityError::Empty`] without any input, [`QualityError::LengthMismatch`] if the inputs disagree
/// on the number of rows, and the label API's errors for invalid labels.
pub fn find_issues(
    input: &DetectorInput<'_>,
    config: &DetectorConfig,
) -> Result<IssueReport, QualityError> {
    let n = row_count(input)?;
    let wants = |t: IssueType| config.issue_types.contains(&t);
    let p = &config.params;
    let mut run = Run {
        timings: Vec::new(),
        outputs: Vec::new(),
        skipped: Vec::new(),
    };
    let k = p.k.min(n.saturating_sub(1));

    let graph_users = [
        IssueType::Outlier,
        IssueType::NearDuplicate,
        IssueType::NonIid,
        IssueType::UnderperformingGroup,
        IssueType::DataValuation,
    ];
    let graph = match input.features {
        Some(f) if k > 0 && graph_users.into_iter().any(wants) => {
            Some(run.timed("knn_graph", || {
                KnnGraph::build_with(f, k, Metric::datalab_default(f.d()), &p.knn)
            })?)
        }
        Some(_) | None => None,
    };

    if wants(IssueType::Null) {
        match input.features {
            Some(f) => run.push("null", |_| null::check(f)),
            None => run.skip(IssueType::Null, "needs features"),
        }
    }

    // pred_probs for the label check: given, or leave-one-out kNN votes on Euclidean features.
    let knn_votes = match (input.pred_probs, input.features, input.labels) {
        (None, Some(f), Some(labels)) if k > 0 && wants(IssueType::Label) => {
            Some(run.timed("knn_votes", || {
                let g = KnnGraph::build_with(f, k, Metric::Euclidean, &p.knn)?;
                label::knn_pred_probs(&g, labels)
            })?)
        }
        _ => None,
    };
    let model_probs: Option<&PredProbs> = input.pred_probs.or(knn_votes.as_ref());

    let mut label_health = None;
    let mut label_issues: Option<Vec<bool>> = None;
    if wants(IssueType::Label) {
        match (input.labels, model_probs) {
            (Some(labels), Some(pp)) => {
                let outcome = run.timed("label", || label::check(labels, pp, config.compat))?;
                label_issues = Some(outcome.output.column.is_issue.clone());
                label_health = Some(outcome.health);
                run.outputs.push(outcome.output);
            }
            (None, _) => run.skip(IssueType::Label, "needs labels"),
            (Some(_), None) => run.skip(IssueType::Label, "needs pred_probs or features"),
        }
    }

    if wants(IssueType::Outlier) {
        match (&graph, input.pred_probs, input.labels) {
            (Some(g), _, _) => run.push("outlier", |_| {
                outlier::from_knn(g, p.outlier_t, p.outlier_threshold)
            }),
            (None, Some(pp), Some(labels)) => {
                let out = run.timed("outlier", || {
                    outlier::from_pred_probs(labels, pp, p.outlier_pred_probs_threshold)
                })?;
                run.outputs.push(out);
            }
            (None, _, _) => run.skip(
                IssueType::Outlier,
                "needs features, or pred_probs with labels",
            ),
        }
    }

    let mut near_duplicate_set = None;
    if wants(IssueType::NearDuplicate) {
        match &graph {
            Some(g) => {
                let (out, ids) = run.timed("near_duplicate", || {
                    duplicate::near(g, p.near_duplicate_threshold)
                });
                near_duplicate_set = Some(ids);
                run.outputs.push(out);
            }
            None => run.skip(
                IssueType::NearDuplicate,
                "needs features (and at least two rows)",
            ),
        }
    }

    if wants(IssueType::ExactDuplicate) {
        match input.features {
            Some(f) => run.push("exact_duplicate", |_| duplicate::exact(f)),
            None => run.skip(IssueType::ExactDuplicate, "needs features"),
        }
    }

    let mut non_iid_p_value = None;
    if wants(IssueType::NonIid) {
        let fallback = match (&graph, input.pred_probs) {
            (None, Some(pp)) if k > 0 => Some(run.timed("knn_graph_pred_probs", || {
                let f = Features::new(pp.as_slice().iter().map(|v| *v as f32).collect(), pp.k())?;
                KnnGraph::build_with(&f, k, Metric::datalab_default(pp.k()), &p.knn)
            })?),
            _ => None,
        };
        match graph.as_ref().or(fallback.as_ref()) {
            Some(g) => {
                let (out, p_value) = run.timed("non_iid", || {
                    noniid::check(g, p.non_iid_permutations, p.non_iid_significance, p.seed)
                });
                non_iid_p_value = Some(p_value);
                run.outputs.push(out);
            }
            None => run.skip(
                IssueType::NonIid,
                "needs features or pred_probs (and at least two rows)",
            ),
        }
    }

    if wants(IssueType::ClassImbalance) {
        match input.labels {
            Some(labels) => run.push("class_imbalance", |_| {
                imbalance::check(labels, p.class_imbalance_threshold)
            }),
            None => run.skip(IssueType::ClassImbalance, "needs labels"),
        }
    }

    if wants(IssueType::UnderperformingGroup) {
        match (&graph, input.pred_probs, input.labels) {
            (Some(g), Some(pp), Some(labels)) => {
                let out = run.timed("underperforming_group", || {
                    let clusters = underperforming::dbscan(g, p.dbscan_eps, p.dbscan_min_samples);
                    let conf: Vec<f64> = (0..n).map(|i| pp.row(i)[labels[i]]).collect();
                    underperforming::check(
                        &clusters,
                        &conf,
                        p.min_cluster_samples,
                        p.underperforming_threshold,
                        config.compat,
                    )
                });
                match out {
                    Some(out) => run.outputs.push(out),
                    None => run.skip(
                        IssueType::UnderperformingGroup,
                        "no cluster of at least min_cluster_samples rows",
                    ),
                }
            }
            _ => run.skip(
                IssueType::UnderperformingGroup,
                "needs features, pred_probs and labels",
            ),
        }
    }

    if wants(IssueType::DataValuation) {
        match (&graph, input.labels) {
            (Some(g), Some(labels)) => {
                run.push("data_valuation", |_| {
                    valuation::check(g, labels, p.data_valuation_threshold)
                });
            }
            _ => run.skip(IssueType::DataValuation, "needs features and labels"),
        }
    }

    if wants(IssueType::Ambiguous) {
        match model_probs {
            Some(pp) => run.push("ambiguous", |_| {
                studio::ambiguous(pp, p.ambiguous_threshold)
            }),
            None => run.skip(
                IssueType::Ambiguous,
                "needs pred_probs or features with labels",
            ),
        }
    }

    let (mut suggested_label, mut suggested_label_confidence) = (None, None);
    if let (Some(labels), Some(pp)) = (input.labels, model_probs) {
        let (s, c) = studio::suggested(labels, pp, label_issues.as_deref());
        suggested_label = Some(s);
        suggested_label_confidence = Some(c);
        if wants(IssueType::WellLabeled) {
            let thresholds = crate::label::confident_thresholds(labels, pp)?;
            let cols: Vec<_> = run.outputs.iter().map(|o| o.column.clone()).collect();
            run.push("well_labeled", |_| {
                studio::well_labeled(labels, pp, &thresholds, &cols)
            });
        }
    } else if wants(IssueType::WellLabeled) {
        run.skip(
            IssueType::WellLabeled,
            "needs labels and pred_probs or features",
        );
    }

    run.outputs.sort_by_key(|o| o.column.issue_type);
    let columns: Vec<_> = run.outputs.iter().map(|o| o.column.clone()).collect();
    let trust_score = run.timed("trust_score", || trust::trust_scores(n, &columns));
    let summary: Vec<IssueSummary> = run
        .outputs
        .iter()
        .map(|o| IssueSummary {
            issue_type: o.column.issue_type,
            score: o.summary_score,
            num_issues: o.column.is_issue.iter().filter(|f| **f).count(),
        })
        .collect();
    let scores: Vec<f64> = summary.iter().map(|s| s.score).collect();
    let health_score = if scores.is_empty() {
        1.0
    } else {
        stats::mean(&scores)
    };
    Ok(IssueReport {
        n,
        columns,
        summary,
        skipped: run.skipped,
        predicted_label: model_probs.map(|pp| (0..n).map(|i| stats::argmax(pp.row(i))).collect()),
        suggested_label,
        suggested_label_confidence,
        near_duplicate_set,
        non_iid_p_value,
        trust_score,
        label_health,
        health_score,
        timings: run.timings,
    })
}

/// The number of rows all present inputs agree on.
fn row_count(input: &DetectorInput<'_>) -> Result<usize, QualityError> {
    let sizes = [
        ("labels", input.labels.map(<[usize]>::len)),
        ("pred_probs", input.pred_probs.map(PredProbs::n)),
        ("features", input.features.map(Features::n)),
    ];
    let mut present = sizes.iter().filter_map(|(what, s)| s.map(|s| (*what, s)));
    let Some((_, n)) = present.next() else {
        return Err(QualityError::Empty);
    };
    if let Some((what, got)) = present.find(|(_, s)| *s != n) {
        return Err(QualityError::LengthMismatch {
            what,
            got,
            expected: n,
        });
    }
    if n == 0 {
        return Err(QualityError::Empty);
    }
    Ok(n)
}

/// The accumulating state of one run.
struct Run {
    timings: Vec<StageTiming>,
    outputs: Vec<CheckOutput>,
    skipped: Vec<Skipped>,
}

impl Run {
    fn timed<T>(&mut self, stage: &'static str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.timings.push(StageTiming {
            stage,
            ms: start.elapsed().as_secs_f64() * 1e3,
        });
        out
    }

    fn push(&mut self, stage: &'static str, f: impl FnOnce(&mut Self) -> CheckOutput) {
        let start = Instant::now();
        let out = f(self);
        self.timings.push(StageTiming {
            stage,
            ms: start.elapsed().as_secs_f64() * 1e3,
        });
        self.outputs.push(out);
    }

    fn skip(&mut self, issue_type: IssueType, reason: &str) {
        self.skipped.push(Skipped {
            issue_type,
            reason: reason.to_owned(),
        });
    }
}
