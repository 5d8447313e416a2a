//! Invariants of the detectors and the kNN graph: scores and trust in [0, 1], permuting rows permutes
//! every order-independent output, injected duplicates are found, the approximate graph agrees with
//! the exact one.

use proptest::prelude::*;
use trustmesh_quality::detectors::{
    DetectorConfig, DetectorInput, IssueReport, IssueType, find_issues, trust_scores,
};
use trustmesh_quality::knn::{KnnGraph, KnnOptions, Metric, Search};
use trustmesh_quality::{Features, PredProbs};

/// A random dataset: `n` rows, `d` features, `k` classes, with every class present.
fn dataset() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, usize, Vec<f32>, usize)> {
    (24usize..60, 2usize..6, 2usize..5).prop_flat_map(|(n, d, k)| {
        (
            proptest::collection::vec(0..k, n),
            proptest::collection::vec(0.01f64..1.0, n * k),
            proptest::collection::vec(-10.0f32..10.0, n * d),
        )
            .prop_map(move |(mut labels, raw, x)| {
                for (c, l) in labels.iter_mut().take(k).enumerate() {
                    *l = c;
                }
                let mut pp = raw;
                for row in pp.chunks_exact_mut(k) {
                    let s: f64 = row.iter().sum();
                    row.iter_mut().for_each(|v| *v /= s);
                }
                (labels, pp, k, x, d)
            })
    })
}

fn all_checks() -> DetectorConfig {
    DetectorConfig {
        issue_types: IssueType::ALL.to_vec(),
        ..DetectorConfig::default()
    }
}

fn scan(labels: &[usize], pp: &[f64], k: usize, x: &[f32], d: usize) -> IssueReport {
    let pred_probs = PredProbs::new(pp.to_vec(), k).unwrap();
    let features = Features::new(x.to_vec(), d).unwrap();
    let input = DetectorInput {
        labels: Some(labels),
        pred_probs: Some(&pred_probs),
        features: Some(&features),
    };
    find_issues(&input, &all_checks()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn scores_and_trust_are_in_unit_interval((labels, pp, k, x, d) in dataset()) {
        let report = scan(&labels, &pp, k, &x, d);
        for col in &report.columns {
            prop_assert_eq!(col.score.len(), labels.len());
            prop_assert!(col.score.iter().all(|s| (0.0..=1.0).contains(s)), "{} score out of range", col.issue_type.name());
        }
        for s in &report.summary {
            prop_assert!((0.0..=1.0).contains(&s.score), "{} summary out of range", s.issue_type.name());
        }
        prop_assert!(report.trust_score.iter().all(|t| (0.0..=1.0).contains(t)));
        let conf = report.suggested_label_confidence.as_ref().unwrap();
        prop_assert!(conf.iter().all(|c| (0.0..=1.0).contains(c)));
    }

    #[test]
    fn permuting_rows_permutes_order_independent_outputs((labels, pp, k, x, d) in dataset(), seed in any::<u64>()) {
        let n = labels.len();
        // A seeded shuffle.
        let mut perm: Vec<usize> = (0..n).collect();
        let mut state = seed;
        for i in (1..n).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            perm.swap(i, (state >> 33) as usize % (i + 1));
        }
        let labels_p: Vec<usize> = perm.iter().map(|i| labels[*i]).collect();
        let pp_p: Vec<f64> = perm.iter().flat_map(|i| pp[i * k..(i + 1) * k].iter().copied()).collect();
        let x_p: Vec<f32> = perm.iter().flat_map(|i| x[i * d..(i + 1) * d].iter().copied()).collect();
        let a = scan(&labels, &pp, k, &x, d);
        let b = scan(&labels_p, &pp_p, k, &x_p, d);
        // non_iid is about the row order itself; DBSCAN (underperforming_group) gives a border row
        // reachable from two clusters to the one expanded first, as scikit-learn's does; and the
        // trust score folds that check in. Every other output must follow the rows.
        let order_dependent = [IssueType::NonIid, IssueType::UnderperformingGroup];
        for t in IssueType::ALL.into_iter().filter(|t| !order_dependent.contains(t)) {
            let (ca, cb) = match (a.column(t), b.column(t)) {
                (Some(ca), Some(cb)) => (ca, cb),
                (None, None) => continue,
                (ca, cb) => return Err(TestCaseError::fail(format!("{} ran in one order only: {} / {}", t.name(), ca.is_some(), cb.is_some()))),
            };
            for (pos, i) in perm.iter().enumerate() {
                prop_assert_eq!(ca.is_issue[*i], cb.is_issue[pos], "{} flag of row {}", t.name(), i);
                prop_assert!((ca.score[*i] - cb.score[pos]).abs() < 1e-9, "{} score of row {}", t.name(), i);
            }
        }
        let stable = |r: &IssueReport| {
            let cols: Vec<_> = r.columns.iter().filter(|c| !order_dependent.contains(&c.issue_type)).cloned().collect();
            trust_scores(n, &cols)
        };
        let (ta, tb) = (stable(&a), stable(&b));
        for (pos, i) in perm.iter().enumerate() {
            prop_assert!((ta[*i] - tb[pos]).abs() < 1e-9, "trust of row {}", i);
        }
    }

    #[test]
    fn an_injected_duplicate_is_found((labels, pp, k, mut x, d) in dataset()) {
        let (mut labels, mut pp) = (labels, pp);
        let n = labels.len();
        // Append a copy of row 0.
        x.extend_from_within(..d);
        pp.extend_from_within(..k);
        labels.push(labels[0]);
        let report = scan(&labels, &pp, k, &x, d);
        let exact = report.column(IssueType::ExactDuplicate).unwrap();
        prop_assert!(exact.is_issue[0] && exact.is_issue[n]);
        let near = report.column(IssueType::NearDuplicate).unwrap();
        prop_assert!(near.is_issue[0] && near.is_issue[n]);
        prop_assert_eq!(near.score[n], 0.0);
        let sets = report.near_duplicate_set.as_ref().unwrap();
        prop_assert!(sets[0].is_some());
        prop_assert_eq!(sets[0], sets[n]);
    }
}

#[test]
fn approximate_graph_recovers_most_exact_neighbours() {
    let (n, d) = (3_000usize, 8usize);
    let mut state = 11u64;
    let data: Vec<f32> = (0..n * d)
        .map(|i| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Five clusters plus uniform noise.
            ((i / d) % 5 * 4) as f32 + (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    let f = Features::new(data, d).unwrap();
    let opts = KnnOptions {
        search: Search::Approximate,
        ..KnnOptions::default()
    };
    let approx = KnnGraph::build_with(&f, 10, Metric::Euclidean, &opts).unwrap();
    let rows: Vec<usize> = (0..n).step_by(7).collect();
    let recall = approx.recall_on(&f, &rows).unwrap();
    assert!(recall > 0.9, "recall@10 = {recall}");
    let exact = KnnGraph::build_with(
        &f,
        10,
        Metric::Euclidean,
        &KnnOptions {
            search: Search::Exact,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(exact.recall_on(&f, &rows).unwrap(), 1.0);
    for i in [0usize, 1234, n - 1] {
        assert!(
            approx.distances(i).windows(2).all(|w| w[0] <= w[1]),
            "row {i} sorted"
        );
        assert!(
            !approx.neighbors(i).contains(&(i as u32)),
            "row {i} excludes itself"
        );
    }
}

#[test]
fn rows_with_missing_values_are_flagged_not_fatal() {
    let nan = f32::NAN;
    let mut x: Vec<f32> = (0..40).map(|i| (i % 7) as f32 + i as f32 * 0.01).collect();
    x[2] = nan;
    x[10] = nan;
    x[11] = nan;
    let f = Features::with_missing(x, 2).unwrap();
    let config = DetectorConfig {
        issue_types: vec![
            IssueType::Null,
            IssueType::Outlier,
            IssueType::NearDuplicate,
        ],
        ..DetectorConfig::default()
    };
    let report = find_issues(
        &DetectorInput {
            features: Some(&f),
            ..DetectorInput::default()
        },
        &config,
    )
    .unwrap();
    let null = report.column(IssueType::Null).unwrap();
    assert_eq!(null.is_issue.iter().filter(|v| **v).count(), 1);
    assert!(null.is_issue[5]);
    assert_eq!(null.score[1], 0.5);
    assert_eq!(report.column(IssueType::Outlier).unwrap().score.len(), 20);
    assert!(report.skipped.is_empty());
}
