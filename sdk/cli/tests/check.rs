//! `trustmesh check` end to end: the built binary on the iris reference fixture.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "../../../shared/fixtures/cleanlab-reference",
        name,
    ]
    .iter()
    .collect()
}

fn trustmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn check_with_cleanlab_compat_flags_cleanlabs_label_issues() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, summary) = (dir.path().join("rows.csv"), dir.path().join("summary.json"));
    let (data, pred_probs) = (
        fixture("iris_10s.dataset.csv"),
        fixture("iris_10s.pred_probs.csv"),
    );
    let out = trustmesh(&[
        "check",
        "--data",
        path(&data),
        "--label",
        "label",
        "--id-column",
        "row_id",
        "--pred-probs",
        path(&pred_probs),
        "--compat",
        "cleanlab",
        "--out",
        path(&rows),
        "--summary",
        path(&summary),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ROWS.csv: one row per input row, the id, a flag/score pair per check, then the label columns.
    let mut reader = csv::Reader::from_path(&rows).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 150);
    assert_eq!(header[0], "row_id");
    assert_eq!(
        header[header.len() - 4..],
        [
            "given_label",
            "predicted_label",
            "suggested_label",
            "trust_score"
        ]
    );
    let checks = &header[1..header.len() - 4];
    assert_eq!(checks.len() % 2, 0);
    for pair in checks.chunks(2) {
        let name = pair[1].strip_suffix("_score").expect("a score column");
        assert_eq!(pair[0], format!("is_{name}_issue"));
    }
    let flag = header
        .iter()
        .position(|h| h == "is_label_issue")
        .expect("the label check ran");
    let flagged: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| &r[flag] == "True")
        .map(|(i, _)| i)
        .collect();
    let cleanlab: Vec<usize> = std::fs::read_to_string(fixture("iris_10s.cleanlab_issues.csv"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(flagged, cleanlab);
    assert_eq!(&records[12][0], "12");
    for r in &records {
        let trust: f64 = r[header.len() - 1].parse().unwrap();
        assert!((0.0..=1.0).contains(&trust));
        assert!(r[header.len() - 4].starts_with("class_"));
    }

    // SUMMARY.json: per-type counts and scores, label health, timings.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["rows"], 150);
    assert_eq!(
        summary["classes"],
        serde_json::json!(["class_0", "class_1", "class_2"])
    );
    let label = summary["issues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["issue_type"] == "label")
        .unwrap();
    assert_eq!(label["num_issues"], 20);
    assert!((label["score"].as_f64().unwrap() - 0.893_333_333_333_333_3).abs() < 1e-12);
    let health = &summary["label_health"];
    assert!(
        (health["overall_label_health_score"].as_f64().unwrap() - 0.893_333_333_333_333_3).abs()
            < 1e-12
    );
    assert_eq!(
        health["classes_by_label_quality"].as_array().unwrap().len(),
        3
    );
    for stage in ["read_data", "read_pred_probs", "find_issues", "label"] {
        assert!(
            summary["timings_ms"][stage]
                .as_f64()
                .is_some_and(|ms| ms >= 0.0),
            "{stage}"
        );
    }
}

#[test]
fn bad_input_is_named_by_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let pred_probs = dir.path().join("pp.csv");
    std::fs::write(&pred_probs, "0.9,0.1\n0.2,0.8\n0.5,0.5\n").unwrap();
    let cases = [
        (
            "ragged.csv",
            "id,f0,label\n0,1.0,a\n1,2.0\n2,3.0,b\n",
            "line 3 has 2 fields, expected 3",
        ),
        (
            "nolabel.csv",
            "id,f0,target\n0,1.0,a\n1,2.0,b\n2,3.0,b\n",
            "no label column \"label\"",
        ),
        (
            "text.csv",
            "id,f0,label\n0,1.0,a\n1,x2,b\n2,3.0,b\n",
            "line 3, column \"f0\": \"x2\" is not a number",
        ),
        ("empty.csv", "", "is empty"),
    ];
    for (name, contents, expected) in cases {
        let data = dir.path().join(name);
        std::fs::write(&data, contents).unwrap();
        let out = trustmesh(&[
            "check",
            "--data",
            path(&data),
            "--label",
            "label",
            "--pred-probs",
            path(&pred_probs),
        ]);
        assert!(!out.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    // Without pred_probs nor numeric features there is nothing to train a model on.
    let data = dir.path().join("labels_only.csv");
    std::fs::write(&data, "id,label\n0,a\n1,b\n").unwrap();
    let out = trustmesh(&[
        "check",
        "--data",
        path(&data),
        "--label",
        "label",
        "--id-column",
        "id",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no numeric feature columns") && stderr.contains("--pred-probs"),
        "{stderr}"
    );
}

#[test]
fn check_without_pred_probs_cross_validates_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, summary) = (dir.path().join("rows.csv"), dir.path().join("summary.json"));
    let data = fixture("iris_10s.dataset.csv");
    let out = trustmesh(&[
        "check",
        "--data",
        path(&data),
        "--label",
        "label",
        "--id-column",
        "row_id",
        "--issues",
        "label",
        "--out",
        path(&rows),
        "--summary",
        path(&summary),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let model = &summary["pred_probs"];
    assert_eq!(model["source"], "cross-validated ensemble");
    // 10% of iris labels are flipped: the model agrees with roughly the other 90%.
    let accuracy = model["accuracy"].as_f64().unwrap();
    assert!((0.75..=0.95).contains(&accuracy), "{accuracy}");
    assert!(
        summary["timings_ms"]["cross_val_pred_probs"]
            .as_f64()
            .is_some()
    );
    let mut reader = csv::Reader::from_path(&rows).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "row_id",
            "is_label_issue",
            "label_score",
            "given_label",
            "predicted_label",
            "suggested_label",
            "trust_score"
        ]
    );
    let flagged = reader
        .records()
        .filter(|r| &r.as_ref().unwrap()[1] == "True")
        .count();
    // 15 labels were flipped; cleanlab flags 20 with the fixture's pred_probs.
    assert!((10..=30).contains(&flagged), "{flagged}");
}
