//! Multi-label (one-vs-rest) and regression label quality.

use trustmesh_quality::label::{
    FilterBy, LabelIssueOptions, MultiLabelProbs, RegressionMethod, ScoreMethod,
    find_multilabel_issues, multilabel_quality_scores, regression_label_quality,
};

/// 90 rows over 3 classes, each row's label set matching confident probabilities, except row 0 whose
/// label set is {0} while the model is sure it is {1}.
fn multilabel() -> (Vec<Vec<usize>>, MultiLabelProbs) {
    let mut labels = Vec::new();
    let mut probs = Vec::new();
    for i in 0..90usize {
        let set: Vec<usize> = (0..3)
            .filter(|c| (i >> c) & 1 == 1 || i % 3 == *c)
            .collect();
        probs.extend((0..3).map(|c| if set.contains(&c) { 0.95 } else { 0.05 }));
        labels.push(set);
    }
    labels[0] = vec![0];
    probs[..3].copy_from_slice(&[0.05, 0.95, 0.05]);
    (labels, MultiLabelProbs::new(probs, 3).unwrap())
}

#[test]
fn a_wrong_label_set_is_flagged_and_scored_worst() {
    let (labels, probs) = multilabel();
    for filter_by in [
        FilterBy::PruneByNoiseRate,
        FilterBy::ConfidentLearning,
        FilterBy::PredictedNeqGiven,
    ] {
        let opts = LabelIssueOptions {
            filter_by,
            ..LabelIssueOptions::default()
        };
        let mask = find_multilabel_issues(&labels, &probs, &opts).unwrap();
        let flagged: Vec<usize> = mask
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(flagged, vec![0], "{filter_by:?}");
    }
    for (method, adjust) in [
        (ScoreMethod::SelfConfidence, false),
        (ScoreMethod::NormalizedMargin, true),
    ] {
        let scores = multilabel_quality_scores(&labels, &probs, method, adjust).unwrap();
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        let worst = scores
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(worst, 0, "{method:?}");
        // The aggregate leans on the worst class: two bad classes out of three score near the minimum.
        assert!(scores[0] < 0.2, "{}", scores[0]);
    }
}

#[test]
fn regression_scores_single_out_a_wrong_label() {
    let n = 400;
    let truth: Vec<f64> = (0..n)
        .map(|i| (i as f64 * 0.37).sin() * 10.0 + i as f64 * 0.05)
        .collect();
    let predictions: Vec<f64> = truth
        .iter()
        .enumerate()
        .map(|(i, t)| t + ((i * 7919) % 13) as f64 * 0.02)
        .collect();
    let mut labels = truth.clone();
    labels[123] += 25.0;
    for method in [
        RegressionMethod::default(),
        RegressionMethod::Outre { neighbours: 5 },
        RegressionMethod::OutreCleanlab,
        RegressionMethod::Residual,
    ] {
        let scores = regression_label_quality(&labels, &predictions, method).unwrap();
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{method:?}");
        let worst = scores
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(worst, 123, "{method:?}");
    }
    let residual =
        regression_label_quality(&[1.0, 2.0], &[1.5, 2.0], RegressionMethod::Residual).unwrap();
    assert!((residual[0] - (-0.5f64).exp()).abs() < 1e-15 && residual[1] == 1.0);
}
