//! `quality-bench`: times the quality engine on the synthetic inputs of
//! `shared/fixtures/cleanlab-reference/speed.md` against cleanlab's reference seconds, and prints a
//! markdown table (wall seconds, speed-up, peak RSS) plus the approximate kNN graph's recall@10 against exact.
//!
//! Usage: `cargo run --release -p trustmesh-quality --bin quality-bench [-- --small]`
//! (`--small` skips the 1,000,000-row label rows and the recall row; `--scan N` times one scan of
//! `N` rows with its stages; `--recall N` measures the approximate graph on `N` rows; `--automl`
//! times AutoML's 5-fold CV on the 100,000 × 20, 10-class table of the model benchmark, the logistic
//! regression alone and the whole suite).

#[path = "../../../benches/model/synthetic.rs"]
mod classification;
mod synthetic;

use std::time::Instant;

use trustmesh_quality::automl::{AutoMlOptions, Column, ModelKind, Table, train};
use trustmesh_quality::detectors::{DetectorConfig, DetectorInput, find_issues};
use trustmesh_quality::knn::{KnnGraph, KnnOptions, Metric, Search};
use trustmesh_quality::label::{LabelIssueOptions, find_label_issues};

/// Peak resident set size in MiB since the last [`reset_peak_rss`] (Linux `VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    // NOTE: assumes the usual USER_HZ of 100 ticks per second (reading it needs libc's sysconf).
    ticks / 100.0
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0), so each row reports its own peak.
fn reset_peak_rss() {
    // NOTE: best effort; without it the column shows the process-wide peak so far.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Row {
    what: String,
    n: usize,
    k: usize,
    d: Option<usize>,
    seconds: f64,
    cpu_seconds: f64,
    reference: f64,
    rss_mib: f64,
}

/// Best wall time of `reps` runs of `f`, and the CPU seconds of that run.
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    (0..reps)
        .map(|_| {
            let (start, cpu) = (Instant::now(), cpu_seconds());
            f();
            (start.elapsed().as_secs_f64(), cpu_seconds() - cpu)
        })
        .fold((f64::INFINITY, f64::NAN), |best, run| {
            if run.0 < best.0 { run } else { best }
        })
}

fn label_row(n: usize, k: usize, reference: f64, reps: usize) -> Row {
    let data = synthetic::generate(n, k, None, 42);
    reset_peak_rss();
    let (seconds, cpu_seconds) = time(reps, || {
        find_label_issues(
            &data.labels,
            &data.pred_probs,
            &LabelIssueOptions::cleanlab(),
        )
        .expect("label issues");
    });
    Row {
        what: "find_label_issues".into(),
        n,
        k,
        d: None,
        seconds,
        cpu_seconds,
        reference,
        rss_mib: peak_rss_mib(),
    }
}

fn scan_row(n: usize, reference: f64, reps: usize) -> Row {
    let data = synthetic::generate(n, 10, Some(32), 42);
    let input = DetectorInput {
        labels: Some(&data.labels),
        pred_probs: Some(&data.pred_probs),
        features: data.features.as_ref(),
    };
    reset_peak_rss();
    let mut stages = String::new();
    let (seconds, cpu_seconds) = time(reps, || {
        let report = find_issues(&input, &DetectorConfig::cleanlab()).expect("datalab scan");
        stages = report
            .timings
            .iter()
            .map(|t| format!("{} {:.0} ms", t.stage, t.ms))
            .collect::<Vec<_>>()
            .join(", ");
    });
    eprintln!("stages at {n}: {stages}");
    Row {
        what: "Datalab scan (7 default checks)".into(),
        n,
        k: 10,
        d: Some(32),
        seconds,
        cpu_seconds,
        reference,
        rss_mib: peak_rss_mib(),
    }
}

fn recall_line(n: usize, samples: usize) -> String {
    let data = synthetic::generate(n, 10, Some(32), 7);
    let f = data.features.as_ref().expect("features");
    let opts = KnnOptions {
        search: Search::Approximate,
        ..KnnOptions::default()
    };
    let start = Instant::now();
    let approx = KnnGraph::build_with(f, 10, Metric::Cosine, &opts).expect("approximate graph");
    let build_s = start.elapsed().as_secs_f64();
    let rows: Vec<usize> = (0..samples).map(|i| i * (n / samples)).collect();
    let recall = approx.recall_on(f, &rows).expect("rows in range");
    format!(
        "Approximate kNN graph (RP forest + NN-descent) on {n} × 32, cosine, k = 10: recall@10 against \
         brute force on {samples} evenly spaced rows = **{recall:.4}**; graph built in {build_s:.2} s"
    )
}

/// AutoML's 5-fold CV on the model benchmark's table (`make_classification`, 100,000 × 20, 10
/// classes: 10 informative, 5 redundant, 5 noise features), from text cells (parsing and
/// featurization included), with `models`.
fn automl_line(models: &[ModelKind]) -> String {
    let spec = classification::Spec {
        n: 100_000,
        classes: 10,
        informative: 10,
        redundant: 5,
        noise: 5,
        clusters_per_class: 2,
        class_sep: 1.0,
        flip: 0.01,
    };
    let (features, labels) = classification::make_classification(&spec, 42);
    let mut columns: Vec<Column> = (0..features.d())
        .map(|j| {
            let cells = (0..features.n())
                .map(|i| features.row(i)[j].to_string())
                .collect();
            Column::new(format!("f{j}"), cells)
        })
        .collect();
    columns.push(Column::new(
        "label",
        labels.iter().map(|l| format!("c{l}")).collect(),
    ));
    let table = Table::new(columns).expect("a rectangular table");
    let mut opts = AutoMlOptions::new("label");
    opts.models = models.to_vec();
    reset_peak_rss();
    let mut summary = None;
    let (seconds, cpu) = time(1, || {
        summary = Some(train(&table, &opts).expect("AutoML").summary);
    });
    let summary = summary.expect("one run");
    let per_model: Vec<String> = summary
        .models
        .iter()
        .map(|m| {
            format!(
                "{} accuracy {:.4} log loss {:.4} weight {:.2} ({:.1} s)",
                m.model,
                m.accuracy.unwrap_or(f64::NAN),
                m.log_loss.unwrap_or(f64::NAN),
                m.weight,
                m.seconds
            )
        })
        .collect();
    format!(
        "AutoML 5-fold CV, 100000 × 20, k = 10, models {models:?}: {seconds:.2} s wall, {cpu:.2} CPU s, \
         peak RSS {:.0} MiB; ensemble accuracy {:.4}, log loss {:.4}; {}",
        peak_rss_mib(),
        summary.ensemble.accuracy.unwrap_or(f64::NAN),
        summary.ensemble.log_loss.unwrap_or(f64::NAN),
        per_model.join("; ")
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--automl") {
        println!("{}", automl_line(&[ModelKind::Linear]));
        println!("{}", automl_line(&ModelKind::ALL));
        return;
    }
    if let Some(n) = args
        .iter()
        .position(|a| a == "--recall")
        .and_then(|i| args.get(i + 1))
    {
        println!(
            "{}",
            recall_line(n.parse().expect("--recall takes a row count"), 1_000)
        );
        return;
    }
    if let Some(n) = args
        .iter()
        .position(|a| a == "--scan")
        .and_then(|i| args.get(i + 1))
    {
        let n: usize = n.parse().expect("--scan takes a row count");
        let row = scan_row(n, f64::NAN, 1);
        println!(
            "scan of {n} rows: {:.3} s wall, {:.3} CPU s, peak RSS {:.0} MiB",
            row.seconds, row.cpu_seconds, row.rss_mib
        );
        return;
    }
    let small = args.iter().any(|a| a == "--small");
    let mut rows = vec![label_row(100_000, 10, 0.24, 5)];
    if !small {
        rows.push(label_row(1_000_000, 10, 2.09, 3));
        rows.push(label_row(1_000_000, 100, 12.9, 1));
    }
    rows.push(scan_row(10_000, 4.3, 3));
    rows.push(scan_row(100_000, 210.8, 1));
    println!(
        "| what | N | K | d | trustmesh wall (s) | trustmesh CPU (s) | cleanlab (s) | speed-up (wall) | peak RSS (MiB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let d = r.d.map_or("–".to_owned(), |d| d.to_string());
        println!(
            "| {} | {} | {} | {d} | {:.3} | {:.2} | {} | {:.1}× | {:.0} |",
            r.what,
            r.n,
            r.k,
            r.seconds,
            r.cpu_seconds,
            r.reference,
            r.reference / r.seconds,
            r.rss_mib
        );
    }
    println!();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{} threads; load average at the end: {}",
        rayon_threads(),
        load.trim()
    );
    if !small {
        println!("{}", recall_line(100_000, 2_000));
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
