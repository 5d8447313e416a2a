//! Criterion benchmarks of the kNN graph and the Datalab-equivalent scan on the synthetic inputs of
//! `shared/fixtures/cleanlab-reference/speed.md` (the bench binary `quality-bench` prints the table).

#[path = "../src/bin/quality-bench/synthetic.rs"]
mod synthetic;

use criterion::Criterion;
use trustmesh_quality::detectors::{DetectorConfig, DetectorInput, find_issues};
use trustmesh_quality::knn::{KnnGraph, KnnOptions, Metric, Search};

fn knn(c: &mut Criterion) {
    let data = synthetic::generate(10_000, 10, Some(32), 42);
    let f = data.features.as_ref().expect("features");
    for (name, search) in [
        ("exact", Search::Exact),
        ("approximate", Search::Approximate),
    ] {
        let opts = KnnOptions {
            search,
            ..KnnOptions::default()
        };
        c.bench_function(&format!("knn {name} 10k x 32 k=10"), |b| {
            b.iter(|| KnnGraph::build_with(f, 10, Metric::Cosine, &opts).expect("graph"));
        });
    }
}

fn scan(c: &mut Criterion) {
    let data = synthetic::generate(10_000, 10, Some(32), 42);
    let input = DetectorInput {
        labels: Some(&data.labels),
        pred_probs: Some(&data.pred_probs),
        features: data.features.as_ref(),
    };
    c.bench_function("datalab scan 10k x 32", |b| {
        b.iter(|| find_issues(&input, &DetectorConfig::cleanlab()).expect("scan"));
    });
}

// NOTE: `main` by hand rather than `criterion_group!`/`criterion_main!`, whose generated function
// has no doc comment and trips the workspace's `missing_docs` lint.
fn main() {
    let mut c = Criterion::default().sample_size(10).configure_from_args();
    knn(&mut c);
    scan(&mut c);
    c.final_summary();
}
