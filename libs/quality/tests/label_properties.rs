//! Invariants of the label engine under random inputs (proptest).

use proptest::prelude::*;
use trustmesh_quality::PredProbs;
use trustmesh_quality::label::{
    CollisionRule, FilterBy, LabelIssueOptions, NumIssuesMethod, ScoreMethod, confident_joint,
    find_label_issues, health_summary, label_quality_scores, num_label_issues,
};

const ALL_FILTERS: [FilterBy; 7] = [
    FilterBy::PruneByNoiseRate,
    FilterBy::PruneByClass,
    FilterBy::Both,
    FilterBy::ConfidentLearning,
    FilterBy::PredictedNeqGiven,
    FilterBy::LowSelfConfidence,
    FilterBy::LowNormalizedMargin,
];

/// Rows normalised from positive weights, and labels with at least classes 0 and 1 present.
fn dataset(max_n: usize, k: usize) -> impl Strategy<Value = (Vec<usize>, PredProbs)> {
    (4..max_n).prop_flat_map(move |n| {
        (
            proptest::collection::vec(0..k, n),
            proptest::collection::vec(0.001f64..1.0, n * k),
        )
            .prop_map(move |(mut labels, weights)| {
                labels[0] = 0;
                labels[1] = 1;
                (labels, normalise(weights, k))
            })
    })
}

fn normalise(mut weights: Vec<f64>, k: usize) -> PredProbs {
    for row in weights.chunks_exact_mut(k) {
        let total: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= total);
    }
    PredProbs::new(weights, k).unwrap()
}

fn is_argmax(row: &[f64], y: usize) -> bool {
    row.iter().all(|&p| p <= row[y] + 1e-6)
}

/// Shared invariants: the mask has one entry per row, and the confident-learning methods never flag a
/// row whose given label is the argmax.
fn check_masks(labels: &[usize], pred_probs: &PredProbs, collision: CollisionRule) {
    for filter_by in ALL_FILTERS {
        let opts = LabelIssueOptions {
            filter_by,
            collision,
            ..LabelIssueOptions::default()
        };
        let mask = find_label_issues(labels, pred_probs, &opts).unwrap();
        assert_eq!(mask.len(), labels.len());
        if !matches!(
            filter_by,
            FilterBy::LowSelfConfidence | FilterBy::LowNormalizedMargin
        ) {
            for (i, &flagged) in mask.iter().enumerate() {
                assert!(
                    !(flagged && is_argmax(pred_probs.row(i), labels[i])),
                    "{filter_by:?} row {i}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn scores_are_in_unit_interval((labels, pred_probs) in dataset(60, 4)) {
        for (method, adjust) in [
            (ScoreMethod::SelfConfidence, false),
            (ScoreMethod::SelfConfidence, true),
            (ScoreMethod::NormalizedMargin, false),
            (ScoreMethod::NormalizedMargin, true),
            (ScoreMethod::ConfidenceWeightedEntropy, false),
        ] {
            let scores = label_quality_scores(&labels, &pred_probs, method, adjust).unwrap();
            prop_assert_eq!(scores.len(), labels.len());
            prop_assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{:?} {}: {:?}", method, adjust, scores);
        }
    }

    #[test]
    fn permuting_rows_permutes_the_output(
        ((labels, pred_probs), seed) in (dataset(80, 4), any::<u64>())
    ) {
        let n = labels.len();
        // A seeded Fisher-Yates permutation.
        let mut perm: Vec<usize> = (0..n).collect();
        let mut state = seed;
        for i in (1..n).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            perm.swap(i, (state >> 33) as usize % (i + 1));
        }
        let permuted_labels: Vec<usize> = perm.iter().map(|&i| labels[i]).collect();
        let permuted_probs = PredProbs::new(
            perm.iter().flat_map(|&i| pred_probs.row(i).to_vec()).collect(),
            pred_probs.k(),
        ).unwrap();
        for filter_by in ALL_FILTERS {
            for collision in [CollisionRule::Paper, CollisionRule::Cleanlab] {
                let opts = LabelIssueOptions { filter_by, collision, ..LabelIssueOptions::default() };
                let mask = find_label_issues(&labels, &pred_probs, &opts).unwrap();
                let permuted = find_label_issues(&permuted_labels, &permuted_probs, &opts).unwrap();
                let expected: Vec<bool> = perm.iter().map(|&i| mask[i]).collect();
                prop_assert_eq!(permuted, expected, "{:?} {:?}", filter_by, collision);
            }
        }
        let scores = label_quality_scores(&labels, &pred_probs, ScoreMethod::NormalizedMargin, true).unwrap();
        let permuted = label_quality_scores(&permuted_labels, &permuted_probs, ScoreMethod::NormalizedMargin, true).unwrap();
        for (j, &i) in perm.iter().enumerate() {
            prop_assert!((permuted[j] - scores[i]).abs() < 1e-12);
        }
    }

    #[test]
    fn perfectly_confident_correct_labels_have_no_issues(
        labels in proptest::collection::vec(0usize..5, 4..80)
    ) {
        let mut labels = labels;
        labels[0] = 0;
        labels[1] = 1;
        let k = 5;
        let probs = labels.iter().flat_map(|&y| (0..k).map(move |j| if j == y { 1.0 } else { 0.0 })).collect();
        let pred_probs = PredProbs::new(probs, k).unwrap();
        for filter_by in ALL_FILTERS {
            for collision in [CollisionRule::Paper, CollisionRule::Cleanlab] {
                let opts = LabelIssueOptions { filter_by, collision, min_examples_per_class: 0, ..LabelIssueOptions::default() };
                let mask = find_label_issues(&labels, &pred_probs, &opts).unwrap();
                prop_assert!(mask.iter().all(|f| !f), "{:?}", filter_by);
            }
        }
        let health = health_summary(&labels, &pred_probs, CollisionRule::Paper).unwrap();
        prop_assert_eq!(health.overall_label_health_score, 1.0);
        prop_assert_eq!(health.num_label_issues_calibrated, 0);
    }

    #[test]
    fn absent_classes_are_never_counted_as_true_classes((labels, pred_probs) in dataset(60, 3)) {
        // Widen to 6 classes, of which 3..6 never appear as given labels but carry probability.
        let k = 6;
        let widened: Vec<f64> = (0..labels.len())
            .flat_map(|i| {
                let row = pred_probs.row(i);
                [row[0] * 0.7, row[1] * 0.7, row[2] * 0.7, 0.1, 0.1, 0.1]
            })
            .collect();
        let wide = PredProbs::new(widened, k).unwrap();
        let joint = confident_joint(&labels, &wide, CollisionRule::Paper, false).unwrap();
        for given in 0..k {
            for absent in 3..k {
                if given != absent {
                    prop_assert_eq!(joint.get(given, absent), 0);
                }
            }
        }
        check_masks(&labels, &wide, CollisionRule::Paper);
        check_masks(&labels, &wide, CollisionRule::Cleanlab);
    }

    #[test]
    fn one_row_classes_are_never_pruned((labels, pred_probs) in dataset(60, 3)) {
        // Class 3 has exactly one row, whose predictions say class 0 (a clear label issue).
        let mut labels = labels;
        labels.push(3);
        let mut values = pred_probs.as_slice().iter().map(|p| p * 0.9).collect::<Vec<_>>();
        for i in 0..labels.len() - 1 {
            values.insert(i * 4 + 3, 0.1);
        }
        values.extend([0.97, 0.01, 0.01, 0.01]);
        let pred_probs = PredProbs::new(values, 4).unwrap();
        let last = labels.len() - 1;
        for filter_by in [FilterBy::PruneByNoiseRate, FilterBy::PruneByClass, FilterBy::Both] {
            let opts = LabelIssueOptions { filter_by, min_examples_per_class: 0, ..LabelIssueOptions::default() };
            prop_assert!(!find_label_issues(&labels, &pred_probs, &opts).unwrap()[last]);
        }
        let opts = LabelIssueOptions { filter_by: FilterBy::PredictedNeqGiven, ..LabelIssueOptions::default() };
        prop_assert!(find_label_issues(&labels, &pred_probs, &opts).unwrap()[last]);
    }

    #[test]
    fn binary_problems_keep_the_invariants((labels, pred_probs) in dataset(120, 2)) {
        check_masks(&labels, &pred_probs, CollisionRule::Paper);
        let cl = LabelIssueOptions { filter_by: FilterBy::ConfidentLearning, ..LabelIssueOptions::default() };
        let flagged = find_label_issues(&labels, &pred_probs, &cl).unwrap().iter().filter(|&&f| f).count();
        prop_assert_eq!(
            flagged,
            num_label_issues(&labels, &pred_probs, NumIssuesMethod::OffDiagonal, CollisionRule::Paper).unwrap()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn a_thousand_classes_keep_the_invariants((labels, pred_probs) in dataset(600, 1000)) {
        check_masks(&labels, &pred_probs, CollisionRule::Paper);
        check_masks(&labels, &pred_probs, CollisionRule::Cleanlab);
        let health = health_summary(&labels, &pred_probs, CollisionRule::Paper).unwrap();
        prop_assert_eq!(health.classes_by_label_quality.len(), 1000);
    }
}

#[test]
fn a_clear_swap_is_flagged_by_every_method() {
    // 40 confident rows per class; row 0 is labelled 1 but predicted 0 with high confidence.
    let k = 3;
    let mut labels = Vec::new();
    let mut probs = Vec::new();
    for i in 0..120 {
        let y = i % k;
        labels.push(y);
        probs.extend((0..k).map(|j| if j == y { 0.9 } else { 0.05 }));
    }
    labels[0] = 1;
    let pred_probs = PredProbs::new(probs, k).unwrap();
    for filter_by in ALL_FILTERS {
        let opts = LabelIssueOptions {
            filter_by,
            ..LabelIssueOptions::default()
        };
        let mask = find_label_issues(&labels, &pred_probs, &opts).unwrap();
        assert_eq!(
            mask.iter()
                .enumerate()
                .filter(|(_, f)| **f)
                .map(|(i, _)| i)
                .collect::<Vec<_>>(),
            vec![0],
            "{filter_by:?}"
        );
    }
}

#[test]
fn a_requested_number_of_removals_is_honoured() {
    // Class 1 holds three rows (0, 3, 6) that the model confidently puts in class 0.
    let k = 3;
    let mut labels: Vec<usize> = (0..120).map(|i| i % k).collect();
    let probs: Vec<f64> = labels
        .iter()
        .flat_map(|&y| (0..k).map(move |j| if j == y { 0.9 } else { 0.05 }))
        .collect();
    for row in [0, 3, 6] {
        labels[row] = 1;
    }
    let pred_probs = PredProbs::new(probs, k).unwrap();
    let flagged = |filter_by, requested: [usize; 3]| {
        let opts = LabelIssueOptions {
            filter_by,
            num_to_remove_per_class: Some(requested.to_vec()),
            ..LabelIssueOptions::default()
        };
        let mask = find_label_issues(&labels, &pred_probs, &opts).unwrap();
        mask.iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    // Ties in the score go to the lower row.
    assert_eq!(flagged(FilterBy::PruneByClass, [0, 2, 0]), vec![0, 3]);
    assert_eq!(flagged(FilterBy::PruneByNoiseRate, [0, 2, 0]), vec![0, 3]);
    assert_eq!(flagged(FilterBy::Both, [0, 2, 0]), vec![0, 3]);
    // Asking for more only adds rows whose given label is the argmax, which are never flagged.
    assert_eq!(flagged(FilterBy::PruneByClass, [0, 5, 0]), vec![0, 3, 6]);
    assert_eq!(
        flagged(FilterBy::PruneByClass, [0, 0, 0]),
        Vec::<usize>::new()
    );
}
