//! Bad input to the label engine: a clear error naming the problem and the first offending row.

use trustmesh_quality::label::{
    CollisionRule, FilterBy, LabelIssueOptions, MultiLabelProbs, RegressionMethod, ScoreMethod,
    find_label_issues, find_multilabel_issues, health_summary, label_quality_scores,
    regression_label_quality,
};
use trustmesh_quality::{PredProbs, QualityError};

fn three_rows() -> PredProbs {
    PredProbs::new(vec![0.8, 0.2, 0.3, 0.7, 0.5, 0.5], 2).unwrap()
}

#[test]
fn a_label_outside_the_class_range_names_its_row() {
    let err =
        find_label_issues(&[0, 1, 2], &three_rows(), &LabelIssueOptions::default()).unwrap_err();
    assert_eq!(
        err,
        QualityError::InvalidValue {
            what: "labels",
            row: 2,
            reason: "label 2 is outside the class range 0..2".to_owned()
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid labels at row 2: label 2 is outside the class range 0..2"
    );
    let err = label_quality_scores(
        &[0, 7, 9],
        &three_rows(),
        ScoreMethod::SelfConfidence,
        false,
    )
    .unwrap_err();
    assert!(
        matches!(err, QualityError::InvalidValue { row: 1, .. }),
        "{err}"
    );
}

#[test]
fn mismatched_lengths_are_rejected() {
    let err = find_label_issues(&[0, 1], &three_rows(), &LabelIssueOptions::default()).unwrap_err();
    assert_eq!(
        err,
        QualityError::LengthMismatch {
            what: "labels",
            got: 2,
            expected: 3
        }
    );
    let err =
        regression_label_quality(&[1.0, 2.0], &[1.0], RegressionMethod::default()).unwrap_err();
    assert_eq!(
        err,
        QualityError::LengthMismatch {
            what: "predictions",
            got: 1,
            expected: 2
        }
    );
}

#[test]
fn fewer_than_two_classes_are_rejected() {
    let err =
        find_label_issues(&[1, 1, 1], &three_rows(), &LabelIssueOptions::default()).unwrap_err();
    assert_eq!(err, QualityError::TooFewClasses(1));
    assert_eq!(
        health_summary(&[0, 0, 0], &three_rows(), CollisionRule::Paper).unwrap_err(),
        QualityError::TooFewClasses(1)
    );
    assert_eq!(
        PredProbs::new(vec![1.0, 1.0], 1).unwrap_err(),
        QualityError::TooFewClasses(1)
    );
    // Scores are defined for a single class, as in cleanlab.
    assert!(
        label_quality_scores(
            &[1, 1, 1],
            &three_rows(),
            ScoreMethod::SelfConfidence,
            false
        )
        .is_ok()
    );
}

#[test]
fn bad_pred_probs_name_their_row() {
    let nan = PredProbs::new(vec![0.5, 0.5, f64::NAN, 1.0], 2).unwrap_err();
    assert!(
        matches!(
            nan,
            QualityError::InvalidValue {
                what: "pred_probs",
                row: 1,
                ..
            }
        ),
        "{nan}"
    );
    let negative = PredProbs::new(vec![1.2, -0.2, 0.5, 0.5], 2).unwrap_err();
    assert!(
        matches!(negative, QualityError::InvalidValue { row: 0, .. }),
        "{negative}"
    );
    let sum = PredProbs::new(vec![0.5, 0.5, 0.5, 0.6], 2).unwrap_err();
    assert!(
        sum.to_string().contains("row 1") && sum.to_string().contains("sums to"),
        "{sum}"
    );
}

#[test]
fn invalid_options_are_rejected() {
    let opts = LabelIssueOptions {
        frac_noise: 0.0,
        ..LabelIssueOptions::default()
    };
    let err = find_label_issues(&[0, 1, 1], &three_rows(), &opts).unwrap_err();
    assert!(
        matches!(
            err,
            QualityError::InvalidOption {
                option: "frac_noise",
                ..
            }
        ),
        "{err}"
    );
    let err = label_quality_scores(
        &[0, 1, 1],
        &three_rows(),
        ScoreMethod::ConfidenceWeightedEntropy,
        true,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            QualityError::InvalidOption {
                option: "adjust_pred_probs",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bad_multilabel_and_regression_input_names_its_row() {
    let err = MultiLabelProbs::new(vec![0.5, 0.2, 0.3, 1.5], 2).unwrap_err();
    assert!(
        matches!(err, QualityError::InvalidValue { row: 1, .. }),
        "{err}"
    );
    let probs = MultiLabelProbs::new(vec![0.5, 0.2, 0.3, 0.5], 2).unwrap();
    let err = find_multilabel_issues(
        &[vec![0], vec![1, 4]],
        &probs,
        &LabelIssueOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            QualityError::InvalidValue {
                what: "labels",
                row: 1,
                ..
            }
        ),
        "{err}"
    );
    let err = regression_label_quality(&[1.0, f64::NAN], &[1.0, 2.0], RegressionMethod::Residual)
        .unwrap_err();
    assert!(
        matches!(
            err,
            QualityError::InvalidValue {
                what: "labels",
                row: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_bad_removal_request_is_rejected() {
    let opts = LabelIssueOptions {
        num_to_remove_per_class: Some(vec![1]),
        ..LabelIssueOptions::default()
    };
    let err = find_label_issues(&[0, 1, 1], &three_rows(), &opts).unwrap_err();
    assert!(
        err.to_string()
            .contains("has 1 entries, expected one per class (2)"),
        "{err}"
    );
    let opts = LabelIssueOptions {
        filter_by: FilterBy::ConfidentLearning,
        num_to_remove_per_class: Some(vec![1, 1]),
        ..LabelIssueOptions::default()
    };
    let err = find_label_issues(&[0, 1, 1], &three_rows(), &opts).unwrap_err();
    assert!(
        matches!(
            err,
            QualityError::InvalidOption {
                option: "num_to_remove_per_class",
                ..
            }
        ),
        "{err}"
    );
}
