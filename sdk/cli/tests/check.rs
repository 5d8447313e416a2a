//! `trustmesh check` end to end: the built binary on the iris reference fixture, and on the
//! quality engine's image archive and text fixtures with planted issues.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/files.rs"]
mod files;

use files::{read_rows, write_parquet};

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
    let (header, records) = read_rows(&rows);
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
    let (header, records) = read_rows(&rows);
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
    let flagged = records.iter().filter(|r| &r[1] == "True").count();
    // 15 labels were flipped; cleanlab flags 20 with the fixture's pred_probs.
    assert!((10..=30).contains(&flagged), "{flagged}");
}

/// The quality engine's image and text fixtures with planted issues.
fn modality_fixture(name: &str) -> PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "../../libs/quality/fixtures/modality",
        name,
    ]
    .iter()
    .collect()
}

/// Zips the image fixtures (one folder per class) into `to`, plus `extra` files.
fn zip_images(to: &Path, extra: &[(&str, &[u8])]) -> usize {
    let root = modality_fixture("images");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    let mut files = 0;
    for class in std::fs::read_dir(&root).unwrap() {
        let class = class.unwrap();
        let name = class.file_name().into_string().unwrap();
        writer.add_directory(format!("{name}/"), options).unwrap();
        for file in std::fs::read_dir(class.path()).unwrap() {
            let file = file.unwrap();
            let inner = format!("{name}/{}", file.file_name().into_string().unwrap());
            writer.start_file(inner, options).unwrap();
            std::io::Write::write_all(&mut writer, &std::fs::read(file.path()).unwrap()).unwrap();
            files += 1;
        }
    }
    for (inner, bytes) in extra {
        writer.start_file(*inner, options).unwrap();
        std::io::Write::write_all(&mut writer, bytes).unwrap();
    }
    writer.finish().unwrap();
    files
}

#[test]
fn check_on_an_image_archive_writes_one_row_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("images.zip");
    let files = zip_images(&archive, &[("__MACOSX/cat/._000_clean.png", b"fork")]);
    let (rows, summary) = (dir.path().join("rows.csv"), dir.path().join("summary.json"));
    let out = trustmesh(&[
        "check",
        "--data",
        path(&archive),
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
    let (header, records) = read_rows(&rows);
    assert_eq!(records.len(), files);
    assert_eq!(header[..2], ["path", "given_label"]);
    assert_eq!(
        header[header.len() - 2..],
        ["is_not_analyzed", "not_analyzed_reason"]
    );
    // The nine image checks, then the label and outlier checks, then the models' labels.
    let checks = &header[2..header.len() - 5];
    assert_eq!(checks.len(), 22);
    for pair in checks.chunks(2) {
        let name = pair[1].strip_suffix("_score").expect("a score column");
        assert_eq!(pair[0], format!("is_{name}_issue"));
    }
    assert_eq!(
        checks[18..],
        [
            "is_label_issue",
            "label_score",
            "is_outlier_issue",
            "outlier_score"
        ]
    );
    assert_eq!(
        header[header.len() - 5..header.len() - 2],
        ["predicted_label", "suggested_label", "trust_score"]
    );
    // Labels are the folder names; the planted issues are flagged; bad files are not analyzed.
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let truth: std::collections::HashMap<String, String> =
        csv::Reader::from_path(modality_fixture("images.csv"))
            .unwrap()
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[0].to_owned(), r[1].to_owned())
            })
            .collect();
    for r in &records {
        assert_eq!(&r[1], r[0].split('/').next().unwrap());
        let planted = &truth[&r[0]];
        if planted == "dark" {
            assert_eq!(&r[col("is_dark_issue")], "True", "{}", &r[0]);
        }
        let not_analyzed = &r[col("is_not_analyzed")] == "True";
        assert_eq!(not_analyzed, planted == "not_analyzed", "{}", &r[0]);
        if not_analyzed {
            assert!(!r[col("not_analyzed_reason")].is_empty());
            for empty in [
                "dark_score",
                "label_score",
                "outlier_score",
                "predicted_label",
            ] {
                assert_eq!(&r[col(empty)], "", "{empty}");
            }
            assert_eq!(&r[col("is_label_issue")], "False");
        } else {
            for score in ["label_score", "outlier_score", "trust_score"] {
                let score: f64 = r[col(score)].parse().unwrap();
                assert!((0.0..=1.0).contains(&score));
            }
            assert!(["cat", "dog"].contains(&&r[col("predicted_label")]));
        }
    }
    // The summary counts what the rows flag.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["rows"], files);
    assert_eq!(summary["classes"], serde_json::json!(["cat", "dog"]));
    for issue in summary["issues"].as_array().unwrap() {
        let name = issue["issue_type"].as_str().unwrap();
        let flag = col(&format!("is_{name}_issue"));
        let flagged = records.iter().filter(|r| &r[flag] == "True").count();
        assert_eq!(issue["num_issues"], flagged, "{name}");
        if !["label", "outlier"].contains(&name) {
            assert!(flagged > 0, "{name}");
        }
    }
    assert_eq!(summary["issues"].as_array().unwrap().len(), 11);
    assert_eq!(summary["skipped"], serde_json::json!([]));
    assert_eq!(summary["pred_probs"]["folds"], 5);
    assert_eq!(summary["not_analyzed"].as_array().unwrap().len(), 2);
}

#[test]
fn image_archives_over_the_limits_are_refused_or_their_images_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("images.zip");
    zip_images(&archive, &[]);
    for (flag, value, expected) in [
        (
            "--max-archive-files",
            "10",
            "over the limit (--max-archive-files)",
        ),
        (
            "--max-archive-bytes",
            "50000",
            "over the limit (--max-archive-bytes)",
        ),
    ] {
        let out = trustmesh(&["check", "--data", path(&archive), flag, value]);
        assert!(!out.status.success(), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{flag}: {stderr}");
    }
    // A deflated run of zeros: tiny in the archive, over the limit once expanded.
    let bomb = dir.path().join("bomb.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&bomb).unwrap());
    writer
        .start_file("cat/zeros.png", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut writer, &vec![0u8; 10_000_000]).unwrap();
    writer.finish().unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 100_000);
    let out = trustmesh(&[
        "check",
        "--data",
        path(&bomb),
        "--max-archive-bytes",
        "1000000",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-archive-bytes"));
    // Files at the root have no class.
    let flat = dir.path().join("flat.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&flat).unwrap());
    writer
        .start_file("a.png", zip::write::SimpleFileOptions::default())
        .unwrap();
    writer.finish().unwrap();
    let out = trustmesh(&["check", "--data", path(&flat)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected one folder per class"));
    // Images over the pixel limit are not analyzed; the others are.
    let rows = dir.path().join("rows.csv");
    let out = trustmesh(&[
        "check",
        "--data",
        path(&archive),
        "--max-image-pixels",
        "2500",
        "--out",
        path(&rows),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (header, records) = read_rows(&rows);
    let reason = header
        .iter()
        .position(|h| h == "not_analyzed_reason")
        .unwrap();
    let over = records
        .iter()
        .filter(|r| r[reason].contains("over the limit of 2500"))
        .count();
    assert!(over > 10 && over < records.len() - 10, "{over}");
}

#[test]
fn check_on_a_csv_with_a_text_column_runs_the_text_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (data, rows, summary) = (
        dir.path().join("texts.csv"),
        dir.path().join("rows.csv"),
        dir.path().join("summary.json"),
    );
    // The fixture's texts with a label; the planted issues are left out of the data.
    let mut writer = csv::Writer::from_path(&data).unwrap();
    writer.write_record(["review", "label"]).unwrap();
    let texts: Vec<csv::StringRecord> = csv::Reader::from_path(modality_fixture("texts.csv"))
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect();
    for (i, r) in texts.iter().enumerate() {
        writer
            .write_record([&r[0], ["good", "bad"][i % 2]])
            .unwrap();
    }
    writer.flush().unwrap();
    let out = trustmesh(&[
        "check",
        "--data",
        path(&data),
        "--label",
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
    let (header, records) = read_rows(&rows);
    assert_eq!(records.len(), texts.len());
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    for (r, truth) in records.iter().zip(&texts) {
        let planted: Vec<&str> = truth[1].split(';').collect();
        assert_eq!(
            &r[col("review.is_PII_issue")] == "True",
            planted.contains(&"PII"),
            "{}",
            &truth[0]
        );
        if planted.contains(&"PII") {
            assert_eq!(&r[col("review.PII_types")], &truth[2]);
            assert!(!r[col("review.PII_items")].is_empty());
        }
        assert_eq!(
            &r[col("review.is_empty_text_issue")] == "True",
            planted.contains(&"empty_text")
        );
        let _ = col("review.non_english_score");
        let _ = col("review.is_near_duplicate_issue");
        let _ = col("review.text_length_score");
        // A whitespace-only cell is a missing value: no characters.
        let characters = if truth[0].trim().is_empty() {
            0
        } else {
            truth[0].chars().count()
        };
        assert_eq!(
            r[col("review.text_num_characters")]
                .parse::<usize>()
                .unwrap(),
            characters
        );
    }
    let french = texts
        .iter()
        .position(|t| t[0].starts_with("Le petit chat"))
        .unwrap();
    assert_eq!(&records[french][col("review.predicted_language")], "French");
    assert_eq!(&records[french][col("review.is_non_english_issue")], "True");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let text = &summary["text_issues"][0];
    assert_eq!(text["column"], "review");
    let pii = text["issues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["issue_type"] == "PII")
        .unwrap();
    assert_eq!(pii["num_issues"], 28);
}

/// The iris fixture's rows as (row_id, features, label).
fn iris_rows() -> Vec<(i64, [f64; 4], String)> {
    csv::Reader::from_path(fixture("iris_10s.dataset.csv"))
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            let f = |c: usize| r[c].parse::<f64>().unwrap();
            (
                r[0].parse().unwrap(),
                [f(1), f(2), f(3), f(4)],
                r[5].to_owned(),
            )
        })
        .collect()
}

/// Runs `trustmesh check` on `data` with the iris pred_probs and returns the rows it writes.
fn check_iris(data: &Path, dir: &Path) -> String {
    let rows = dir.join(format!(
        "rows_{}.csv",
        data.extension().unwrap().to_str().unwrap()
    ));
    let out = trustmesh(&[
        "check",
        "--data",
        path(data),
        "--label",
        "label",
        "--id-column",
        "row_id",
        "--pred-probs",
        path(&fixture("iris_10s.pred_probs.csv")),
        "--out",
        path(&rows),
    ]);
    assert!(
        out.status.success(),
        "{}: {}",
        data.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(rows).unwrap()
}

#[test]
fn parquet_and_jsonl_data_give_the_rows_of_the_same_csv() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};

    let dir = tempfile::tempdir().unwrap();
    let iris = iris_rows();
    let jsonl = dir.path().join("iris.jsonl");
    let lines: Vec<String> = iris
        .iter()
        .map(|(id, f, label)| {
            serde_json::json!({
                "row_id": id, "f0": f[0], "f1": f[1], "f2": f[2], "f3": f[3], "label": label,
            })
            .to_string()
        })
        .collect();
    // Blank lines are no rows.
    std::fs::write(&jsonl, lines.join("\n\n") + "\n").unwrap();
    let parquet = dir.path().join("iris.parquet");
    let feature = |j: usize| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(iris.iter().map(|r| r.1[j])))
    };
    write_parquet(
        &parquet,
        vec![
            (
                "row_id",
                Arc::new(Int64Array::from_iter_values(iris.iter().map(|r| r.0))) as ArrayRef,
            ),
            ("f0", feature(0)),
            ("f1", feature(1)),
            ("f2", feature(2)),
            ("f3", feature(3)),
            (
                "label",
                Arc::new(StringArray::from_iter_values(iris.iter().map(|r| &r.2))),
            ),
        ],
    );
    let csv = check_iris(&fixture("iris_10s.dataset.csv"), dir.path());
    assert_eq!(csv.lines().count(), 151);
    assert_eq!(check_iris(&jsonl, dir.path()), csv);
    assert_eq!(check_iris(&parquet, dir.path()), csv);
}

#[test]
fn bad_parquet_and_jsonl_are_named_by_line_or_row_and_column() {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, StringArray};

    let dir = tempfile::tempdir().unwrap();
    let pred_probs = dir.path().join("pp.csv");
    std::fs::write(&pred_probs, "0.9,0.1\n0.2,0.8\n0.5,0.5\n").unwrap();
    let strings = |v: Vec<Option<&str>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    // A column of numbers in text with one that is not; a missing label.
    let text = dir.path().join("text.parquet");
    write_parquet(
        &text,
        vec![
            ("f0", strings(vec![Some("1.5"), None, Some("x2")])),
            ("label", strings(vec![Some("a"), Some("b"), Some("b")])),
        ],
    );
    let nolabel = dir.path().join("nolabel.parquet");
    write_parquet(
        &nolabel,
        vec![
            ("f0", strings(vec![Some("1"), Some("2"), Some("3")])),
            ("label", strings(vec![Some("a"), None, Some("b")])),
        ],
    );
    let truncated = dir.path().join("truncated.parquet");
    std::fs::write(&truncated, &std::fs::read(&text).unwrap()[..40]).unwrap();
    let mut cases = vec![
        (
            text,
            "row 3, column \"f0\": \"x2\" is not a number".to_owned(),
        ),
        (
            nolabel,
            "row 2, column \"label\": the label is empty".into(),
        ),
        (truncated, "not a readable Parquet file".into()),
    ];
    for (name, contents, expected) in [
        (
            "cut.jsonl",
            "{\"f0\": 1, \"label\": \"a\"}\n{\"f0\": 2, \"label\"\n",
            "line 2: not valid JSON",
        ),
        (
            "array.jsonl",
            "{\"f0\": 1, \"label\": \"a\"}\n\n[1, \"b\"]\n",
            "line 3: not a JSON object",
        ),
        (
            "mixed.jsonl",
            "{\"f0\": 1, \"label\": \"a\"}\n{\"f0\": \"two\", \"label\": \"b\"}\n",
            "line 2, field \"f0\": string value, but line 1 has a number value",
        ),
        (
            "nolabel.jsonl",
            "{\"f0\": 1, \"label\": \"a\"}\n\n{\"f0\": 2}\n{\"f0\": 3, \"label\": \"b\"}\n",
            "line 3, column \"label\": the label is empty",
        ),
        (
            "nested.jsonl",
            "{\"f0\": {\"x\": 1}, \"label\": \"a\"}\n",
            "column \"f0\"",
        ),
        ("blank.jsonl", "\n\n", "has no data rows"),
    ] {
        let data = dir.path().join(name);
        std::fs::write(&data, contents).unwrap();
        cases.push((data, expected.to_owned()));
    }
    for (data, expected) in cases {
        let out = trustmesh(&[
            "check",
            "--data",
            path(&data),
            "--label",
            "label",
            "--pred-probs",
            path(&pred_probs),
        ]);
        assert!(!out.status.success(), "{}", data.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&expected) && stderr.contains(path(&data)),
            "{}: {stderr}",
            data.display()
        );
    }
}

#[test]
fn label_issues_are_found_among_an_archives_images() {
    // Folders the images tell apart: the fixtures' clean, dark and light pictures, one dark picture
    // filed with the light ones and one light picture with the dark ones.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("images.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&archive).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for class in ["cat", "dog"] {
        for file in std::fs::read_dir(modality_fixture("images").join(class)).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_str().unwrap().to_owned();
            files.push((name, file));
        }
    }
    files.sort();
    let (mut dark, mut light) = (0, 0);
    let mut mislabelled = Vec::new();
    for (name, file) in &files {
        let folder = if name.ends_with("_clean.png") {
            "photo"
        } else if name.ends_with("_dark.png") {
            dark += 1;
            if dark == 3 { "snow" } else { "night" }
        } else if name.ends_with("_light.png") {
            light += 1;
            if light == 5 { "night" } else { "snow" }
        } else {
            continue;
        };
        let inner = format!("{folder}/{name}");
        if (dark == 3 && name.ends_with("_dark.png"))
            || (light == 5 && name.ends_with("_light.png"))
        {
            mislabelled.push(inner.clone());
        }
        writer.start_file(inner, options).unwrap();
        std::io::Write::write_all(&mut writer, &std::fs::read(file).unwrap()).unwrap();
    }
    writer.finish().unwrap();
    assert_eq!((dark, light, mislabelled.len()), (8, 8, 2));

    let rows = dir.path().join("rows.csv");
    let out = trustmesh(&["check", "--data", path(&archive), "--out", path(&rows)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (header, records) = read_rows(&rows);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let flagged: Vec<&str> = records
        .iter()
        .filter(|r| &r[col("is_label_issue")] == "True")
        .map(|r| &r[0])
        .collect();
    for inner in &mislabelled {
        assert!(flagged.contains(&inner.as_str()), "{inner}: {flagged:?}");
    }
    // Precision on this set: at most one image flagged besides the two planted.
    assert!(flagged.len() <= 3, "{flagged:?}");
    for r in &records {
        if mislabelled.iter().any(|m| m == &r[0]) {
            let truth = if r[0].contains("_dark") {
                "night"
            } else {
                "snow"
            };
            assert_eq!(&r[col("suggested_label")], truth, "{}", &r[0]);
        }
    }
}
