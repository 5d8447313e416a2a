//! AutoML on the cleanlab reference fixtures (`dataset.csv`, `row_id` as the id column): the
//! ensemble's out-of-sample pred_probs find the injected label noise at least as well as cleanlab
//! did with scikit-learn's 5-fold logistic regression.

use std::path::PathBuf;

use trustmesh_quality::automl::{AutoMlOptions, Column, ColumnRole, Table, train};
use trustmesh_quality::label::{LabelIssueOptions, find_label_issues};

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

/// A header-first CSV without quoting, as a table.
fn table(text: &str) -> Table {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let mut cells: Vec<Vec<String>> = vec![Vec::new(); header.len()];
    for line in lines {
        for (c, v) in line.split(',').enumerate() {
            cells[c].push(v.to_owned());
        }
    }
    Table::new(
        header
            .iter()
            .zip(cells)
            .map(|(h, c)| Column::new(*h, c))
            .collect(),
    )
    .unwrap()
}

fn f1(flagged: &[bool], truth: &[bool]) -> f64 {
    let count = |f: bool, t: bool| {
        flagged
            .iter()
            .zip(truth)
            .filter(|&(&a, &b)| a == f && b == t)
            .count() as f64
    };
    let tp = count(true, true);
    2.0 * tp / (2.0 * tp + count(true, false) + count(false, true))
}

fn check(tag: &str) {
    let table = table(&fixture(&format!("{tag}.dataset.csv")));
    let mut opts = AutoMlOptions::new("label");
    opts.id_columns = vec!["row_id".into()];
    let result = train(&table, &opts).unwrap();
    let summary = &result.summary;
    assert!(
        summary
            .columns
            .iter()
            .all(|c| (c.name == "row_id") == (c.role == ColumnRole::Id)),
        "{:?}",
        summary.columns
    );
    let (noisy, truth): (Vec<usize>, Vec<usize>) = fixture(&format!("{tag}.labels.csv"))
        .lines()
        .skip(1)
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap())
        })
        .unzip();
    let given: Vec<usize> = result
        .labels
        .iter()
        .map(|&c| {
            result.classes[c]
                .trim_start_matches("class_")
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(given, noisy);
    let pred_probs = result.pred_probs.as_ref().unwrap();
    let flagged =
        find_label_issues(&result.labels, pred_probs, &LabelIssueOptions::default()).unwrap();
    let injected: Vec<bool> = noisy.iter().zip(&truth).map(|(a, b)| a != b).collect();
    let ours = f1(&flagged, &injected);
    let json: serde_json::Value =
        serde_json::from_str(&fixture("cleanlab_reference.json")).unwrap();
    let cleanlab = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["dataset"] == tag)
        .and_then(|e| e["f1"].as_f64())
        .unwrap();
    for m in summary.models.iter().chain([&summary.ensemble]) {
        eprintln!(
            "{tag} {}: weight {:.3} accuracy {:.4} log loss {:.4} ({:.2} s)",
            m.model,
            m.weight,
            m.accuracy.unwrap(),
            m.log_loss.unwrap(),
            m.seconds
        );
    }
    eprintln!(
        "{tag}: label-issue F1 ours {ours:.4}, cleanlab {cleanlab:.4}; warnings {:?}",
        summary.warnings
    );
    assert_eq!(summary.models.len(), 3);
    assert!(
        ours >= cleanlab,
        "{tag}: F1 {ours} below cleanlab's {cleanlab}"
    );
}

#[test]
fn iris_label_issues_at_least_as_good_as_cleanlab() {
    check("iris_10s");
}

#[test]
fn wine_label_issues_at_least_as_good_as_cleanlab() {
    check("wine_10s");
}

#[test]
fn breast_cancer_label_issues_at_least_as_good_as_cleanlab() {
    check("breast_cancer_10s");
}

#[test]
fn digits_label_issues_at_least_as_good_as_cleanlab() {
    check("digits_10s");
}
