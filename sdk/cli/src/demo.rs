//! `trustmesh demo`: what trustmesh finds in a noisy dataset, in one command.
//!
//! Runs the quality engine end to end on the bundled `examples/wine-noisy.csv` (10% of its labels
//! flipped): trains a cross-validated model for out-of-sample predicted probabilities, runs every
//! detector, and prints the per-check summary and the rows whose labels most likely are wrong.
// NOTE: the mesh (tenancy, encrypted upload, analysis jobs, deletion certificate, audit log) joins
// this demo with the walking-skeleton issue; until then the demo shows the engine on its own.

use std::path::PathBuf;

use anyhow::Context;

use crate::check::{self, CheckArgs};

/// The bundled dataset, as a user would upload it.
const DATASET: &[u8] = include_bytes!("../../../examples/wine-noisy.csv");
/// How many suspicious rows the demo prints.
const TOP: usize = 10;

/// Runs the demo.
///
/// # Errors
/// The scratch directory cannot be written, or the engine fails on the bundled data.
pub(crate) fn run() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("trustmesh-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_in(&dir);
    // Best effort: the scratch files hold nothing but the public example and its report.
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &std::path::Path) -> anyhow::Result<()> {
    let data = dir.join("wine-noisy.csv");
    std::fs::write(&data, DATASET).with_context(|| format!("cannot write {}", data.display()))?;
    let (rows, summary) = (dir.join("rows.csv"), dir.join("summary.json"));

    println!("trustmesh demo: the quality engine on examples/wine-noisy.csv");
    println!("(178 wines, 13 measurements each, 10% of the labels flipped at random)\n");
    println!("Training a 5-fold cross-validated model and running every check ...\n");
    check::run(&CheckArgs::with_outputs(
        data,
        "label",
        "row_id",
        rows.clone(),
        summary,
    ))?;
    print_label_issues(&rows)
}

/// One flagged row of the report.
struct Suspect {
    row_id: String,
    given: String,
    suggested: String,
    label_score: f64,
    trust: f64,
}

fn print_label_issues(rows: &PathBuf) -> anyhow::Result<()> {
    let mut reader = csv::Reader::from_path(rows)?;
    let header = reader.headers()?.clone();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("the report has no {name} column"))
    };
    let (id, flag, score, given, suggested, trust) = (
        col("row_id")?,
        col("is_label_issue")?,
        col("label_score")?,
        col("given_label")?,
        col("suggested_label")?,
        col("trust_score")?,
    );
    let mut suspects = Vec::new();
    for record in reader.records() {
        let record = record?;
        if &record[flag] == "True" {
            suspects.push(Suspect {
                row_id: record[id].to_owned(),
                given: record[given].to_owned(),
                suggested: record[suggested].to_owned(),
                label_score: record[score].parse()?,
                trust: record[trust].parse()?,
            });
        }
    }
    suspects.sort_by(|a, b| a.trust.total_cmp(&b.trust));
    println!(
        "\n{} rows have a likely label error; the {} least trustworthy:\n",
        suspects.len(),
        TOP.min(suspects.len())
    );
    println!(
        "{:>6}  {:<10} {:<10} {:>11} {:>11}",
        "row_id", "given", "suggested", "label_score", "trust_score"
    );
    for s in suspects.iter().take(TOP) {
        println!(
            "{:>6}  {:<10} {:<10} {:>11.4} {:>11.4}",
            s.row_id, s.given, s.suggested, s.label_score, s.trust
        );
    }
    println!(
        "\nEvery row and check: trustmesh check --data examples/wine-noisy.csv --label label \
         --id-column row_id --out rows.csv --summary summary.json"
    );
    Ok(())
}
