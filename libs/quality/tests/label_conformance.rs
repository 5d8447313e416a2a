//! Conformance with cleanlab 2.9 on the reference fixtures: with cleanlab's options,
//! `find_label_issues` flags exactly cleanlab's rows and self-confidence scores match to 1e-6.

use std::path::PathBuf;

use trustmesh_quality::PredProbs;
use trustmesh_quality::label::{
    CollisionRule, FilterBy, LabelIssueOptions, NumIssuesMethod, PyMethod, ScoreMethod,
    confident_joint, estimate_joint, estimate_py_and_noise_matrices, find_label_issues,
    health_summary, label_quality_scores, num_label_issues,
};

const DATASETS: [&str; 4] = ["iris_10s", "wine_10s", "breast_cancer_10s", "digits_10s"];

/// `(dataset, rows only we flag, rows only cleanlab flags)`.
///
/// digits row 1657 (given 7): the calibrated confident joint's row 7 rounds
/// `[4.205, 1.40, 2.80, 2.80, 1.40, 7.008, 1.40, 137.37, 2.80, 2.80]` to integers that must sum to 164;
/// three entries (true 1, 4, 6) tie exactly on the largest remainder and one of them gets the extra
/// count. cleanlab breaks the tie with numpy's unstable (SIMD) argsort and picks true class 4, so it
/// prunes two rows of (given 7, true 4); we deterministically pick the later index (true 6), as on
/// digits row 0 where numpy also picks the later of two tied entries. No other row differs.
const TIE_DIFFERENCES: [(&str, &[usize], &[usize]); 1] = [("digits_10s", &[], &[1657])];

fn expected_differences(tag: &str) -> (Vec<usize>, Vec<usize>) {
    TIE_DIFFERENCES
        .iter()
        .find(|(t, _, _)| *t == tag)
        .map_or((vec![], vec![]), |(_, ours, theirs)| {
            (ours.to_vec(), theirs.to_vec())
        })
}

fn fixture(name: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "../../../shared/fixtures/cleanlab-reference",
        name,
    ]
    .iter()
    .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

struct Fixture {
    labels: Vec<usize>,
    pred_probs: PredProbs,
    cleanlab_issues: Vec<usize>,
    cleanlab_scores: Vec<f64>,
}

fn load(tag: &str) -> Fixture {
    let labels = fixture(&format!("{tag}.labels.csv"))
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let mut k = 0;
    let mut values = Vec::new();
    for line in fixture(&format!("{tag}.pred_probs.csv")).lines() {
        let row: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
        k = row.len();
        values.extend(row);
    }
    let pred_probs = PredProbs::new(values, k).unwrap();
    let cleanlab_issues = fixture(&format!("{tag}.cleanlab_issues.csv"))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let cleanlab_scores = fixture(&format!("{tag}.cleanlab_scores.csv"))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    Fixture {
        labels,
        pred_probs,
        cleanlab_issues,
        cleanlab_scores,
    }
}

fn flagged(mask: &[bool]) -> Vec<usize> {
    mask.iter()
        .enumerate()
        .filter(|(_, f)| **f)
        .map(|(i, _)| i)
        .collect()
}

/// Rows flagged only by us, and rows flagged only by cleanlab.
fn differences(mask: &[bool], cleanlab: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let ours_only = flagged(mask)
        .into_iter()
        .filter(|r| !cleanlab.contains(r))
        .collect();
    let theirs_only = cleanlab.iter().copied().filter(|&r| !mask[r]).collect();
    (ours_only, theirs_only)
}

#[test]
fn cleanlab_options_flag_cleanlabs_rows_but_one_documented_tie() {
    for tag in DATASETS {
        let f = load(tag);
        let mask =
            find_label_issues(&f.labels, &f.pred_probs, &LabelIssueOptions::cleanlab()).unwrap();
        assert_eq!(
            differences(&mask, &f.cleanlab_issues),
            expected_differences(tag),
            "{tag}: (ours only, cleanlab only)"
        );
    }
}

#[test]
fn self_confidence_scores_match_cleanlab() {
    for tag in DATASETS {
        let f = load(tag);
        let scores =
            label_quality_scores(&f.labels, &f.pred_probs, ScoreMethod::SelfConfidence, false)
                .unwrap();
        assert_eq!(scores.len(), f.cleanlab_scores.len(), "{tag}");
        for (row, (ours, theirs)) in scores.iter().zip(&f.cleanlab_scores).enumerate() {
            assert!(
                (ours - theirs).abs() <= 1e-6,
                "{tag} row {row}: {ours} vs {theirs}"
            );
        }
    }
}

#[test]
fn paper_collision_rule_differences_are_documented() {
    // The paper's rule (argmax over confident classes only) and cleanlab's (argmax over all classes)
    // only differ on rows confident in several classes; on these fixtures they flag the same rows.
    for tag in DATASETS {
        let f = load(tag);
        let paper =
            find_label_issues(&f.labels, &f.pred_probs, &LabelIssueOptions::default()).unwrap();
        assert_eq!(
            differences(&paper, &f.cleanlab_issues),
            expected_differences(tag),
            "{tag}"
        );
    }
}

#[test]
fn health_score_matches_datalab_label_summary() {
    // Datalab's label summary score is 1 - num_label_issues(off_diagonal) / N.
    for tag in DATASETS {
        let f = load(tag);
        let summary = fixture(&format!("{tag}.datalab_summary.csv"));
        let expected: f64 = summary
            .lines()
            .find_map(|l| l.strip_prefix("label,"))
            .and_then(|rest| rest.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        let health = health_summary(&f.labels, &f.pred_probs, CollisionRule::Cleanlab).unwrap();
        assert!(
            (health.overall_label_health_score - expected).abs() < 1e-9,
            "{tag}"
        );
        let off = num_label_issues(
            &f.labels,
            &f.pred_probs,
            NumIssuesMethod::OffDiagonal,
            CollisionRule::Cleanlab,
        )
        .unwrap();
        assert_eq!(off, health.num_label_issues, "{tag}");
        let cl = find_label_issues(
            &f.labels,
            &f.pred_probs,
            &LabelIssueOptions {
                filter_by: FilterBy::ConfidentLearning,
                ..LabelIssueOptions::cleanlab()
            },
        )
        .unwrap();
        assert_eq!(cl.iter().filter(|&&x| x).count(), off, "{tag}");
    }
}

#[test]
fn calibrated_joint_and_noise_estimates_are_consistent() {
    for tag in DATASETS {
        let f = load(tag);
        let k = f.pred_probs.k();
        let mut counts = vec![0u64; k];
        f.labels.iter().for_each(|&y| counts[y] += 1);
        for collision in [CollisionRule::Paper, CollisionRule::Cleanlab] {
            // Calibration rescales each given-label row of the confident joint to its class count.
            let calibrated = confident_joint(&f.labels, &f.pred_probs, collision, true).unwrap();
            for (given, &n) in counts.iter().enumerate() {
                assert_eq!(
                    calibrated.row(given).iter().sum::<u64>(),
                    n,
                    "{tag} row {given}"
                );
            }
            let joint = estimate_joint(&f.labels, &f.pred_probs, collision).unwrap();
            assert!(
                (joint.as_slice().iter().sum::<f64>() - 1.0).abs() < 1e-12,
                "{tag}"
            );
            let latent =
                estimate_py_and_noise_matrices(&f.labels, &f.pred_probs, collision, PyMethod::Cnt)
                    .unwrap();
            assert_eq!(latent.confident_joint, calibrated);
            assert!((latent.py.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{tag}");
            for method in [PyMethod::Marginal, PyMethod::MarginalPs] {
                let other =
                    estimate_py_and_noise_matrices(&f.labels, &f.pred_probs, collision, method)
                        .unwrap();
                assert!(
                    (other.py.iter().sum::<f64>() - 1.0).abs() < 1e-12,
                    "{tag} {method:?}"
                );
                // Every estimate of the true-label prior stays close to the given-label prior here.
                for (py, &n) in other.py.iter().zip(&counts) {
                    let ps = n as f64 / f.labels.len() as f64;
                    assert!((py - ps).abs() < 0.1, "{tag} {method:?}: {py} vs {ps}");
                }
            }
            for matrix in [&latent.noise_matrix, &latent.inverse_noise_matrix] {
                for col in matrix.col_sums() {
                    assert!((col - 1.0).abs() < 1e-12, "{tag}: column sums to {col}");
                }
                // A useful model: each class is mostly itself.
                for c in 0..k {
                    assert!(
                        matrix.get(c, c) > 0.5,
                        "{tag} class {c}: {}",
                        matrix.get(c, c)
                    );
                }
            }
            let calibrated_issues = num_label_issues(
                &f.labels,
                &f.pred_probs,
                NumIssuesMethod::OffDiagonalCalibrated,
                collision,
            )
            .unwrap();
            let trace: f64 = (0..k).map(|c| joint.get(c, c)).sum();
            assert_eq!(
                calibrated_issues,
                (f.labels.len() as f64 * (1.0 - trace)).round() as usize
            );
        }
    }
}
