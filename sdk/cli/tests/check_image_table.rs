//! `trustmesh check` on a table archive: a zip holding a table at its root (here `metadata.csv`)
//! whose `image` column names each row's image by its path inside the archive (the quality
//! engine's committed image fixtures, under `images/`), and a `label` column. One output row per
//! table row, with the image checks' and the label and outlier checks' columns; rows whose paths
//! are missing from the archive or escape it are not analyzed, the reason naming row and path.
//! And on a Parquet file whose binary column holds the same images: the image checks on that
//! column, `photo.is_<type>_issue` / `photo.<type>_score` per row.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/files.rs"]
mod files;

use files::{read_rows, write_parquet};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../libs/quality/fixtures/modality")
}

/// The planted issues of each fixture image (`;`-separated), by its path.
fn planted() -> Vec<(String, String)> {
    csv::Reader::from_path(fixtures().join("images.csv"))
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_owned(), r[1].to_owned())
        })
        .collect()
}

/// The table archive at `to`, its table named `table` and written by `write` from the rows
/// (path, label); returns each row's planted issues in table order.
fn table_zip(
    to: &Path,
    table: &str,
    write: impl Fn(&[(String, String)]) -> Vec<u8>,
) -> Vec<String> {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    let mut rows = Vec::new();
    let mut truth = Vec::new();
    for (file, types) in planted() {
        let inner = format!("images/{file}");
        writer.start_file(inner.as_str(), options).unwrap();
        writer
            .write_all(&std::fs::read(fixtures().join("images").join(&file)).unwrap())
            .unwrap();
        rows.push((inner, file.split('/').next().unwrap().to_owned()));
        truth.push(types);
    }
    for bad in ["images/dog/missing.png", "../outside.png"] {
        rows.push((bad.to_owned(), "dog".to_owned()));
        truth.push("not_analyzed".to_owned());
    }
    writer.start_file(table, options).unwrap();
    writer.write_all(&write(&rows)).unwrap();
    writer.finish().unwrap();
    truth
}

fn csv_table(rows: &[(String, String)]) -> Vec<u8> {
    let mut table = csv::Writer::from_writer(Vec::new());
    table.write_record(["image", "label"]).unwrap();
    for (path, label) in rows {
        table.write_record([path, label]).unwrap();
    }
    table.into_inner().unwrap()
}

fn run_check(archive: &Path, out: &Path, summary: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .args(["check", "--data"])
        .arg(archive)
        .arg("--out")
        .arg(out)
        .arg("--summary")
        .arg(summary)
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_on_a_table_archive_writes_one_row_per_table_row() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("table.zip");
    let truth = table_zip(&archive, "metadata.csv", csv_table);
    let (out, summary) = (dir.path().join("rows.csv"), dir.path().join("summary.json"));
    run_check(&archive, &out, &summary);

    let (header, records) = read_rows(&out);
    assert_eq!(records.len(), truth.len());
    assert_eq!(header[..2], ["path", "given_label"]);
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    for name in [
        "dark",
        "light",
        "blurry",
        "exact_duplicate",
        "label",
        "outlier",
    ] {
        col(&format!("is_{name}_issue"));
        col(&format!("{name}_score"));
    }
    // Per type, precision and recall over the table's rows.
    let mut counts: BTreeMap<&str, (u32, u32, u32)> = BTreeMap::new();
    for (r, planted) in records.iter().zip(&truth) {
        for name in ["dark", "light", "odd_size", "grayscale", "exact_duplicate"] {
            let flagged = &r[col(&format!("is_{name}_issue"))] == "True";
            let is = planted.split(';').any(|t| t == name);
            let c = counts.entry(name).or_default();
            match (flagged, is) {
                (true, true) => c.0 += 1,
                (true, false) => c.1 += 1,
                (false, true) => c.2 += 1,
                (false, false) => {}
            }
        }
        let not_analyzed = &r[col("is_not_analyzed")] == "True";
        assert_eq!(not_analyzed, planted == "not_analyzed", "{}", &r[0]);
    }
    for (name, (tp, fp, fn_)) in counts {
        let precision = f64::from(tp) / f64::from((tp + fp).max(1));
        let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
        println!("{name}: precision {precision:.3}, recall {recall:.3}");
        assert!(tp > 0 && precision >= 0.9 && recall >= 0.9, "{name}");
    }
    // The rows whose paths name no image: the reason names the row and the path.
    let n = records.len();
    for (i, bad, why) in [
        (n - 2, "images/dog/missing.png", "is not in the archive"),
        (n - 1, "../outside.png", "escapes the archive"),
    ] {
        let r = &records[i];
        assert_eq!(&r[0], bad);
        let reason = &r[col("not_analyzed_reason")];
        assert!(
            reason.starts_with(&format!("row {i}: path {bad:?} {why}")),
            "{reason}"
        );
        assert_eq!(&r[col("label_score")], "");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["rows"], n);
    assert_eq!(summary["classes"], serde_json::json!(["cat", "dog"]));
    assert_eq!(summary["pred_probs"]["folds"], 5);
    let not_analyzed = truth.iter().filter(|t| *t == "not_analyzed").count();
    assert_eq!(
        summary["not_analyzed"].as_array().unwrap().len(),
        not_analyzed
    );
}

#[test]
fn a_jsonl_table_archive_gives_the_rows_of_the_same_csv_one() {
    let dir = tempfile::tempdir().unwrap();
    let (csv_zip, jsonl_zip) = (dir.path().join("csv.zip"), dir.path().join("jsonl.zip"));
    table_zip(&csv_zip, "metadata.csv", csv_table);
    table_zip(&jsonl_zip, "metadata.jsonl", |rows| {
        rows.iter()
            .map(|(path, label)| {
                serde_json::json!({"image": path, "label": label}).to_string() + "\n"
            })
            .collect::<String>()
            .into_bytes()
    });
    let mut outputs = Vec::new();
    for archive in [&csv_zip, &jsonl_zip] {
        let (out, summary) = (
            archive.with_extension("csv"),
            archive.with_extension("json"),
        );
        run_check(archive, &out, &summary);
        let mut reader = csv::Reader::from_path(&out).unwrap();
        let records: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().take(20).map(str::to_owned).collect())
            .collect();
        outputs.push(records);
    }
    assert_eq!(outputs[0], outputs[1]);

    // A table naming no file of the archive is refused, naming the table.
    let nowhere = dir.path().join("nowhere.zip");
    table_zip(&nowhere, "metadata.csv", |rows| {
        csv_table(
            &rows
                .iter()
                .map(|(_, l)| (format!("x/{l}.png"), l.clone()))
                .collect::<Vec<_>>(),
        )
    });
    let output = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .args(["check", "--data"])
        .arg(&nowhere)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("metadata.csv: no column names files"),
        "{stderr}"
    );
}

#[test]
fn check_on_a_parquet_image_column_runs_the_image_checks_on_it() {
    use arrow_array::{ArrayRef, BinaryArray, StringArray};
    let rows: Vec<(String, String)> = planted()
        .into_iter()
        .filter(|(_, types)| types != "not_analyzed")
        .collect();
    let bytes: Vec<Vec<u8>> = rows
        .iter()
        .map(|(f, _)| std::fs::read(fixtures().join("images").join(f)).unwrap())
        .collect();
    let labels: Vec<&str> = rows
        .iter()
        .map(|(f, _)| f.split('/').next().unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("photos.parquet");
    write_parquet(
        &data,
        vec![
            (
                "photo",
                std::sync::Arc::new(BinaryArray::from_iter_values(&bytes)) as ArrayRef,
            ),
            ("label", std::sync::Arc::new(StringArray::from(labels))),
        ],
    );
    let (out, summary) = (dir.path().join("rows.csv"), dir.path().join("summary.json"));
    let output = Command::new(env!("CARGO_BIN_EXE_trustmesh"))
        .args(["check", "--label", "label", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .arg("--summary")
        .arg(&summary)
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (header, records) = read_rows(&out);
    assert_eq!(records.len(), rows.len());
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    for name in ["dark", "light", "odd_size", "grayscale", "exact_duplicate"] {
        let flag = col(&format!("photo.is_{name}_issue"));
        let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
        for (r, (_, planted)) in records.iter().zip(&rows) {
            match (&r[flag] == "True", planted.split(';').any(|t| t == name)) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                (false, false) => {}
            }
        }
        let precision = f64::from(tp) / f64::from((tp + fp).max(1));
        let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
        println!("photo.{name}: precision {precision:.3}, recall {recall:.3}");
        assert!(tp > 0 && precision >= 0.9 && recall >= 0.9, "{name}");
    }
    assert!(
        records
            .iter()
            .all(|r| &r[col("photo.is_not_analyzed")] == "False")
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["image_issues"][0]["column"], "photo");
    assert_eq!(summary["image_issues"][0]["not_analyzed"], 0);
}
