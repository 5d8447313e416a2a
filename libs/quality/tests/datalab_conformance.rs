//! Conformance of the Datalab-equivalent detectors with cleanlab 2.9 on the reference fixtures
//! (`shared/fixtures/cleanlab-reference`): per column, flags agree with Jaccard ≥ 0.95 and scores
//! with Spearman ≥ 0.99, with `Compat::Cleanlab` and identical inputs.

use std::path::PathBuf;

use trustmesh_quality::detectors::{
    DetectorConfig, DetectorInput, IssueReport, IssueType, find_issues,
};
use trustmesh_quality::{Features, PredProbs};

const DATASETS: [&str; 4] = ["iris_10s", "wine_10s", "breast_cancer_10s", "digits_10s"];

fn fixture(name: &str) -> String {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "..",
        "shared",
        "fixtures",
        "cleanlab-reference",
    ]
    .iter()
    .collect();
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
}

fn numbers(text: &str) -> (Vec<f64>, usize) {
    let rows: Vec<Vec<f64>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|v| v.trim().parse().unwrap()).collect())
        .collect();
    let d = rows[0].len();
    (rows.into_iter().flatten().collect(), d)
}

struct Reference {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Reference {
    fn load(tag: &str) -> Self {
        let text = fixture(&format!("{tag}.datalab_issues.csv"));
        let mut lines = text.lines();
        let columns = lines
            .next()
            .unwrap()
            .split(',')
            .map(str::to_owned)
            .collect();
        let rows = lines
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect();
        Self { columns, rows }
    }

    fn column(&self, name: &str) -> Vec<&str> {
        let c = self
            .columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        self.rows.iter().map(|r| r[c].as_str()).collect()
    }
}

fn run(tag: &str) -> IssueReport {
    let (x, d) = numbers(&fixture(&format!("{tag}.X.csv")));
    let features = Features::new(x.iter().map(|v| *v as f32).collect(), d).unwrap();
    let (pp, k) = numbers(&fixture(&format!("{tag}.pred_probs.csv")));
    let pred_probs = PredProbs::new(pp, k).unwrap();
    let labels: Vec<usize> = fixture(&format!("{tag}.labels.csv"))
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let input = DetectorInput {
        labels: Some(&labels),
        pred_probs: Some(&pred_probs),
        features: Some(&features),
    };
    find_issues(&input, &DetectorConfig::cleanlab()).unwrap()
}

/// |A ∩ B| / |A ∪ B|, 1 when both are empty.
fn jaccard(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|a, b| v[*a].total_cmp(&v[*b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for t in &idx[i..=j] {
            r[*t] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (average ranks for ties); 1 when both are constant and equal.
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 && vb == 0.0 {
        return if a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6) {
            1.0
        } else {
            0.0
        };
    }
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

/// (jaccard, spearman) for one column of one dataset.
fn agreement(report: &IssueReport, reference: &Reference, t: IssueType) -> (f64, f64) {
    let col = report
        .column(t)
        .unwrap_or_else(|| panic!("{} did not run", t.name()));
    let flags: Vec<bool> = reference
        .column(&t.flag_column())
        .iter()
        .map(|v| *v == "True")
        .collect();
    let scores: Vec<f64> = reference
        .column(&t.score_column())
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    (
        jaccard(&col.is_issue, &flags),
        spearman(&col.score, &scores),
    )
}

#[test]
fn every_datalab_column_agrees_with_cleanlab() {
    let mut failures = Vec::new();
    for tag in DATASETS {
        let reference = Reference::load(tag);
        let report = run(tag);
        for t in IssueType::DATALAB_DEFAULT {
            let (j, s) = agreement(&report, &reference, t);
            eprintln!(
                "{tag:>18} {:>22}: jaccard {j:.4}  spearman {s:.4}",
                t.name()
            );
            if j < 0.95 || s < 0.99 {
                failures.push(format!(
                    "{tag} {}: jaccard {j:.4}, spearman {s:.4}",
                    t.name()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "columns below Jaccard 0.95 / Spearman 0.99:\n{}",
        failures.join("\n")
    );
}

#[test]
fn summary_matches_datalab_issue_summary() {
    for tag in DATASETS {
        let report = run(tag);
        let text = fixture(&format!("{tag}.datalab_summary.csv"));
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let t = IssueType::from_name(f[0]).unwrap();
            let (score, num): (f64, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
            let ours = report.summary_of(t).unwrap();
            eprintln!(
                "{tag:>18} {:>22}: score {:.6} vs {score:.6}, issues {} vs {num}",
                f[0], ours.score, ours.num_issues
            );
            // The non-IID p-value comes from random permutations (cleanlab: numpy's seed 0): compare
            // it on the significance decision, everything else to 1e-6.
            if t == IssueType::NonIid {
                assert_eq!(ours.score < 0.05, score < 0.05, "{tag} non_iid p-value");
            } else {
                assert!(
                    (ours.score - score).abs() < 1e-6,
                    "{tag} {} summary score",
                    f[0]
                );
            }
            if t == IssueType::Label {
                // Flags come from the label API; its agreement is checked per row (Jaccard) above.
                assert!(
                    ours.num_issues.abs_diff(num) * 100 <= num,
                    "{tag} label num_issues {} vs {num}",
                    ours.num_issues
                );
            } else {
                assert_eq!(ours.num_issues, num, "{tag} {} num_issues", f[0]);
            }
        }
    }
}
