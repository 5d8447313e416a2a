//! Image and text data through the mesh (issue #6): the standalone mesh over a real nats-server,
//! Postgres and a local object directory. A folder-per-class zip of the quality engine's committed
//! image fixtures is uploaded, analyzed and scored: the report carries every image check, per row
//! (naming the `image` column) and per type, and finds the planted issues; the corrupt image and
//! the non-image file keep their rows, flagged not analyzed with the reason. A CSV with a text
//! column (the committed text fixtures) gets the text checks the same way. The same images in a
//! table archive (a `metadata.csv` at the root naming each row's image by its path, with rows
//! whose paths are missing from the archive or escape it) get the same checks per table row, and
//! so do they as a Parquet file's binary column of encoded images.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::files::write_parquet;
use common::mesh::Mesh;
use trustmesh_proto::v1::{
    DatasetFormat, GetReportRequest, IssueType, JobState, ListRowsRequest, Modality, Report,
    RowResult, StartAnalysisRequest, TaskType,
};
use trustmesh_sdk::{Client, Upload, once_known};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../libs/quality/fixtures/modality")
}

/// The planted issue types of each row of a committed truth table (`;`-separated), keyed by its
/// first cell.
fn planted(name: &str) -> Vec<(String, BTreeSet<String>)> {
    csv::Reader::from_path(fixtures().join(name))
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            let types = r[1]
                .split(';')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            (r[0].to_owned(), types)
        })
        .collect()
}

/// The image fixtures as a folder-per-class zip, in `dir`.
fn images_zip(dir: &Path) -> PathBuf {
    let path = dir.join("images.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (file, _) in planted("images.csv") {
        writer
            .start_file(file.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        writer
            .write_all(&std::fs::read(fixtures().join("images").join(&file)).unwrap())
            .unwrap();
    }
    writer.finish().unwrap();
    path
}

/// The text fixtures as a CSV with a `text` column and a two-class `label`.
fn texts_csv() -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["text", "label"]).unwrap();
    for (i, (text, _)) in planted("texts.csv").into_iter().enumerate() {
        let label = if i % 2 == 0 { "even" } else { "odd" };
        writer.write_record([text.as_str(), label]).unwrap();
    }
    writer.into_inner().unwrap()
}

/// Analyzes `dataset` (label column `label`) and returns its report and every row.
async fn analyze(user: &Client, dataset: &str) -> (Report, Vec<RowResult>) {
    let job = user
        .analysis()
        .start_analysis(StartAnalysisRequest {
            dataset: dataset.to_owned(),
            label_column: "label".to_owned(),
            task_type: TaskType::Classification.into(),
            ..StartAnalysisRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let job = tokio::time::timeout(Duration::from_secs(120), user.wait_job(&job.name, |_| {}))
        .await
        .expect("the analysis finishes")
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    let report = user
        .trust()
        .get_report(GetReportRequest {
            name: job.output.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let rows = user
        .trust()
        .list_rows(ListRowsRequest {
            parent: report.name.clone(),
            page_size: 1000,
            ..ListRowsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rows;
    (report, rows)
}

/// Precision and recall of each planted type among the rows' `column` issues, whose API types
/// `types` maps to the planted names; each must reach 0.9.
fn assert_found(
    rows: &[RowResult],
    key: impl Fn(&RowResult) -> String,
    truth: &BTreeMap<String, BTreeSet<String>>,
    column: &str,
    types: &[(IssueType, &str)],
) -> Vec<String> {
    let mut lines = Vec::new();
    for (issue_type, name) in types {
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for row in rows {
            let flagged = row
                .issues
                .iter()
                .find(|i| i.issue_type() == *issue_type && i.column == column)
                .unwrap_or_else(|| panic!("row {} has no {name} result", row.row_index))
                .flagged;
            let is = truth[&key(row)].contains(*name);
            match (flagged, is) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                (false, false) => {}
            }
        }
        let precision = f64::from(tp) / f64::from((tp + fp).max(1));
        let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
        lines.push(format!(
            "{name}: precision {precision:.3}, recall {recall:.3}"
        ));
        assert!(
            precision >= 0.9 && recall >= 0.9 && tp > 0,
            "{name}: precision {precision:.3}, recall {recall:.3} ({tp} found, {fp} false, {fn_} missed)"
        );
    }
    lines
}

/// The image checks and what each is called in the fixtures' truth table.
const IMAGE_TYPES: [(IssueType, &str); 10] = [
    (IssueType::Dark, "dark"),
    (IssueType::Light, "light"),
    (IssueType::Blurry, "blurry"),
    (IssueType::LowInformation, "low_information"),
    (IssueType::OddAspectRatio, "odd_aspect_ratio"),
    (IssueType::OddSize, "odd_size"),
    (IssueType::Grayscale, "grayscale"),
    (IssueType::ExactDuplicate, "exact_duplicate"),
    (IssueType::NearDuplicate, "near_duplicate"),
    (IssueType::NotAnalyzed, "not_analyzed"),
];

/// Asserts that each image check's summary names the `image` column and counts at least 90% of
/// the rows `truth` plants it in.
fn assert_image_summaries(report: &Report, truth: &BTreeMap<String, BTreeSet<String>>) {
    for (issue_type, name) in IMAGE_TYPES {
        let summary = report
            .issue_summaries
            .iter()
            .find(|s| s.issue_type() == issue_type && s.column == "image")
            .unwrap_or_else(|| panic!("no {name} summary"));
        let planted = truth.values().filter(|t| t.contains(name)).count() as u64;
        assert!(summary.flagged_rows >= planted * 9 / 10, "{summary:?}");
    }
}

/// The image fixtures as a table archive in `dir`: `metadata.csv` at the root (`image`, the path
/// `images/<fixture path>`; `label`, its class folder; `camera`, a categorical feature), the images
/// under `images/`, and two rows whose images cannot be found: one missing from the archive, one
/// escaping it. Returns the archive and each row's planted issues, keyed by its path.
fn table_zip(dir: &Path) -> (PathBuf, BTreeMap<String, BTreeSet<String>>) {
    let path = dir.join("table.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    let mut table = csv::Writer::from_writer(Vec::new());
    table.write_record(["image", "label", "camera"]).unwrap();
    let mut truth = BTreeMap::new();
    for (i, (file, types)) in planted("images.csv").into_iter().enumerate() {
        let inner = format!("images/{file}");
        let class = file.split('/').next().unwrap();
        let camera = if i % 3 == 0 { "north" } else { "south" };
        table.write_record([inner.as_str(), class, camera]).unwrap();
        writer.start_file(inner.as_str(), options).unwrap();
        writer
            .write_all(&std::fs::read(fixtures().join("images").join(&file)).unwrap())
            .unwrap();
        truth.insert(inner, types);
    }
    for bad in ["images/cat/missing.png", "../outside.png"] {
        table.write_record([bad, "cat", "north"]).unwrap();
        truth.insert(bad.to_owned(), BTreeSet::from(["not_analyzed".to_owned()]));
    }
    writer.start_file("metadata.csv", options).unwrap();
    writer.write_all(&table.into_inner().unwrap()).unwrap();
    writer.finish().unwrap();
    (path, truth)
}

/// The image fixtures that are images (not the corrupt and non-image files) as a Parquet file in
/// `dir`: `file` (the fixture's path, the id), `photo` (its bytes) and `label` (its class folder).
/// Returns the file and each row's planted issues, keyed by `file`.
fn images_parquet(dir: &Path) -> (PathBuf, BTreeMap<String, BTreeSet<String>>) {
    use arrow_array::{ArrayRef, BinaryArray, StringArray};
    let rows: Vec<(String, BTreeSet<String>)> = planted("images.csv")
        .into_iter()
        .filter(|(_, types)| !types.contains("not_analyzed"))
        .collect();
    let files: Vec<&str> = rows.iter().map(|(f, _)| f.as_str()).collect();
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(fixtures().join("images").join(f)).unwrap())
        .collect();
    let labels: Vec<&str> = files.iter().map(|f| f.split('/').next().unwrap()).collect();
    let path = dir.join("photos.parquet");
    write_parquet(
        &path,
        vec![
            (
                "file",
                std::sync::Arc::new(StringArray::from(files.clone())) as ArrayRef,
            ),
            (
                "photo",
                std::sync::Arc::new(BinaryArray::from_iter_values(&bytes)),
            ),
            ("label", std::sync::Arc::new(StringArray::from(labels))),
        ],
    );
    (path, rows.into_iter().collect())
}

#[tokio::test]
async fn table_archives_and_parquet_image_columns_get_the_image_checks_per_row() {
    let started = std::time::Instant::now();
    let mut mesh = Mesh::start().await;
    let user = mesh.tenant_with_key("acme").await;
    let user = &user;
    let (zip, truth) = table_zip(mesh.data_dir.path());
    let dataset = once_known(|| {
        user.upload_path(
            &zip,
            Upload::csv("table").format(DatasetFormat::ImageZip),
            |_| {},
        )
    })
    .await
    .unwrap();
    assert_eq!(dataset.modality(), Modality::Image);
    assert_eq!(dataset.row_count, truth.len() as u64);
    let columns: Vec<&str> = dataset
        .schema
        .as_ref()
        .unwrap()
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["path", "image", "label", "camera"]);
    let (report, rows) = analyze(user, &dataset.name).await;
    assert_eq!(rows.len(), truth.len());
    let not_analyzed = truth
        .values()
        .filter(|t| t.contains("not_analyzed"))
        .count();
    assert_eq!(
        report.analyzed_row_count,
        (truth.len() - not_analyzed) as u64
    );
    let lines = assert_found(&rows, |r| r.row_id.clone(), &truth, "image", &IMAGE_TYPES);
    assert_image_summaries(&report, &truth);
    assert!(
        report
            .issue_summaries
            .iter()
            .any(|s| s.issue_type() == IssueType::Label && s.column.is_empty())
    );
    // The rows whose paths name no image say which row and path.
    for bad in ["images/cat/missing.png", "../outside.png"] {
        let row = rows.iter().find(|r| r.row_id == bad).unwrap();
        let reason = &row.not_analyzed_reason;
        assert!(
            reason.starts_with(&format!("image: row {} (path {bad:?})", row.row_index)),
            "{reason}"
        );
    }
    println!("table archive ({} rows): {lines:#?}", rows.len());

    // A Parquet file with a binary column of encoded images: the image checks on that column.
    let (parquet, truth) = images_parquet(mesh.data_dir.path());
    let dataset = once_known(|| {
        user.upload_path(
            &parquet,
            Upload::csv("photos")
                .format(DatasetFormat::Parquet)
                .id_column("file"),
            |_| {},
        )
    })
    .await
    .unwrap();
    assert_eq!(dataset.modality(), Modality::Image);
    let (report, rows) = analyze(user, &dataset.name).await;
    assert_eq!(rows.len(), truth.len());
    assert_eq!(report.analyzed_row_count, truth.len() as u64);
    let lines = assert_found(
        &rows,
        |r| r.row_id.clone(),
        &truth,
        "photo",
        &IMAGE_TYPES[..9],
    );
    println!("parquet image column ({} rows): {lines:#?}", rows.len());
    mesh.stop().await;
    println!(
        "the whole test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn image_archives_and_text_columns_get_their_checks_in_the_report() {
    let started = std::time::Instant::now();
    let mut mesh = Mesh::start().await;
    let user = mesh.tenant_with_key("acme").await;
    let user = &user;

    // The image archive: one row per file, labels from the folders.
    let zip = images_zip(mesh.data_dir.path());
    let dataset = once_known(|| {
        user.upload_path(
            &zip,
            Upload::csv("images").format(DatasetFormat::ImageZip),
            |_| {},
        )
    })
    .await
    .unwrap();
    let truth: BTreeMap<String, BTreeSet<String>> = planted("images.csv").into_iter().collect();
    assert_eq!(dataset.modality(), Modality::Image);
    assert_eq!(dataset.row_count, truth.len() as u64);
    let (report, rows) = analyze(user, &dataset.name).await;
    assert_eq!(rows.len(), truth.len());
    assert_eq!(report.analyzed_row_count, truth.len() as u64 - 2);
    let lines = assert_found(&rows, |r| r.row_id.clone(), &truth, "image", &IMAGE_TYPES);
    assert_image_summaries(&report, &truth);
    // The models' checks ran on the images' features too.
    assert!(
        report
            .issue_summaries
            .iter()
            .any(|s| s.issue_type() == IssueType::Label && s.column.is_empty())
    );
    for row in rows
        .iter()
        .filter(|r| truth[&r.row_id].contains("not_analyzed"))
    {
        assert!(
            row.not_analyzed_reason.starts_with("image: "),
            "{}: {:?}",
            row.row_id,
            row.not_analyzed_reason
        );
    }
    println!("images ({} rows): {lines:#?}", rows.len());

    // A CSV with a text column: the text checks, named after the column.
    let texts = planted("texts.csv");
    let dataset = once_known(|| user.upload_csv("texts", texts_csv(), ""))
        .await
        .unwrap();
    assert_eq!(dataset.modality(), Modality::Text);
    let (report, rows) = analyze(user, &dataset.name).await;
    let by_row: BTreeMap<String, BTreeSet<String>> = texts
        .into_iter()
        .enumerate()
        .map(|(i, (_, types))| (i.to_string(), types))
        .collect();
    let text_types = [
        (IssueType::EmptyText, "empty_text"),
        (IssueType::TextLength, "text_length"),
        (IssueType::Pii, "PII"),
        (IssueType::NonEnglish, "non_english"),
        (IssueType::NearDuplicate, "near_duplicate"),
    ];
    let lines = assert_found(
        &rows,
        |r| r.row_index.to_string(),
        &by_row,
        "text",
        &text_types,
    );
    for (issue_type, name) in text_types {
        assert!(
            report
                .issue_summaries
                .iter()
                .any(|s| s.issue_type() == issue_type && s.column == "text"),
            "no {name} summary"
        );
    }
    println!("texts ({} rows): {lines:#?}", rows.len());

    mesh.stop().await;
    let seconds = started.elapsed().as_secs_f64();
    println!("the whole test took {seconds:.1} s");
    assert!(seconds < 60.0, "{seconds:.1} s");
}
