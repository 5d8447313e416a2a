//! Precision and recall of every image and text check on the committed fixtures with planted
//! issues (`fixtures/modality`, written by the `modality-fixtures` binary from
//! `modality::synth`): each must be at least 0.9.

use std::collections::BTreeSet;
use std::path::PathBuf;

use trustmesh_quality::modality::{
    ImageIssueType, ImageOptions, ModalityColumn, TextIssueType, TextOptions, check_images,
    check_texts, synth,
};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/modality")
}

/// Rows of a committed truth table.
fn rows(name: &str) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(fixtures().join(name))
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect()
}

fn list(cell: &str) -> BTreeSet<String> {
    cell.split(';')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Precision and recall of `flagged` against `truth`, with the misses and false alarms named.
fn precision_recall(
    name: &str,
    flagged: &[bool],
    truth: &[bool],
    label: &dyn Fn(usize) -> String,
) -> (f64, f64) {
    let tp = (0..truth.len()).filter(|&i| flagged[i] && truth[i]).count();
    let fp: Vec<String> = (0..truth.len())
        .filter(|&i| flagged[i] && !truth[i])
        .map(label)
        .collect();
    let fn_: Vec<String> = (0..truth.len())
        .filter(|&i| !flagged[i] && truth[i])
        .map(label)
        .collect();
    let precision = tp as f64 / (tp + fp.len()).max(1) as f64;
    let recall = tp as f64 / (tp + fn_.len()).max(1) as f64;
    println!(
        "| {name} | {} | {} | {precision:.3} | {recall:.3} |",
        tp + fn_.len(),
        tp + fp.len()
    );
    if !fp.is_empty() || !fn_.is_empty() {
        println!("  false alarms: {fp:?}\n  misses: {fn_:?}");
    }
    (precision, recall)
}

fn assert_at_least(results: &[(String, f64, f64)], floor: f64) {
    for (name, p, r) in results {
        assert!(
            *p >= floor && *r >= floor,
            "{name}: precision {p:.3}, recall {r:.3}"
        );
    }
}

#[test]
fn image_checks_find_the_planted_issues() {
    let truth = rows("images.csv");
    let paths: Vec<String> = truth.iter().map(|r| r[0].to_owned()).collect();
    let planted: Vec<BTreeSet<String>> = truth.iter().map(|r| list(&r[1])).collect();
    let bytes: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(fixtures().join("images").join(p)).unwrap())
        .collect();
    let report = check_images(&bytes, &ImageOptions::default());
    assert_eq!(report.n, paths.len());
    let label = |i: usize| paths[i].clone();
    let column = |t: ImageIssueType| -> &ModalityColumn { report.column(t).unwrap() };
    println!("| image check | planted | flagged | precision | recall |\n|---|---|---|---|---|");
    let mut results = Vec::new();
    for t in ImageIssueType::ALL {
        let is: Vec<bool> = planted.iter().map(|p| p.contains(t.name())).collect();
        let (p, r) = precision_recall(t.name(), &column(t).is_issue, &is, &label);
        results.push((t.name().to_owned(), p, r));
    }
    let not_analyzed: Vec<bool> = report.not_analyzed.iter().map(Option::is_some).collect();
    let is: Vec<bool> = planted.iter().map(|p| p.contains("not_analyzed")).collect();
    let (p, r) = precision_recall("not_analyzed", &not_analyzed, &is, &label);
    results.push(("not_analyzed".to_owned(), p, r));
    assert_at_least(&results, 0.9);
    // Rows not analyzed say why and are flagged by no check.
    for (i, reason) in report.not_analyzed.iter().enumerate() {
        if let Some(reason) = reason {
            assert!(!reason.is_empty());
            assert!(
                report
                    .columns
                    .iter()
                    .all(|c| !c.is_issue[i] && c.score[i].is_nan())
            );
        }
    }
}

#[test]
fn text_checks_find_the_planted_issues() {
    let truth = rows("texts.csv");
    let texts: Vec<String> = truth.iter().map(|r| r[0].to_owned()).collect();
    let planted: Vec<BTreeSet<String>> = truth.iter().map(|r| list(&r[1])).collect();
    let pii_types: Vec<BTreeSet<String>> = truth.iter().map(|r| list(&r[2])).collect();
    let report = check_texts(&texts, &TextOptions::default());
    let label = |i: usize| format!("{i}: {:.60}", texts[i]);
    println!("| text check | planted | flagged | precision | recall |\n|---|---|---|---|---|");
    let mut results = Vec::new();
    for t in TextIssueType::ALL {
        let is: Vec<bool> = planted.iter().map(|p| p.contains(t.name())).collect();
        let (p, r) = precision_recall(t.name(), &report.column(t).unwrap().is_issue, &is, &label);
        results.push((t.name().to_owned(), p, r));
    }
    for kind in [
        "email",
        "phone",
        "credit_card",
        "ssn",
        "iban",
        "ip_address",
        "secret",
    ] {
        let found: Vec<bool> = report
            .pii
            .iter()
            .map(|items| items.iter().any(|m| m.pii_type.name() == kind))
            .collect();
        let is: Vec<bool> = pii_types.iter().map(|p| p.contains(kind)).collect();
        let name = format!("PII: {kind}");
        let (p, r) = precision_recall(&name, &found, &is, &label);
        results.push((name, p, r));
    }
    assert_at_least(&results, 0.9);
    assert_eq!(report.text_num_characters[0], texts[0].chars().count());
    let french = texts
        .iter()
        .position(|t| t.starts_with("Le petit chat"))
        .unwrap();
    assert_eq!(report.predicted_language[french], Some("French"));
    assert_eq!(report.predicted_language[0], Some("English"));
}

#[test]
fn committed_fixtures_match_the_generator() {
    let read = |name: &str| std::fs::read_to_string(fixtures().join(name)).unwrap();
    let texts = synth::text_fixtures(synth::FIXTURE_SEED);
    assert_eq!(
        read("texts.csv"),
        synth::texts_csv(&texts),
        "regenerate: cargo run -p trustmesh-quality --bin modality-fixtures"
    );
    let images = synth::image_fixtures(synth::FIXTURE_SEED);
    assert_eq!(
        read("images.csv"),
        synth::images_csv(&images),
        "regenerate: cargo run -p trustmesh-quality --bin modality-fixtures"
    );
}
