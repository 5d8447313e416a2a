//! Criterion benchmarks of `find_label_issues` on the synthetic inputs of
//! `shared/fixtures/cleanlab-reference/speed.md`: labels uniform over K classes, logits N(0, 1) with +3
//! on the true class, softmax, then 10% of labels replaced by a uniformly random class.
//!
//! `cargo bench -p trustmesh-quality --bench label`.
// NOTE: `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use trustmesh_quality::label::{LabelIssueOptions, find_label_issues};

#[path = "../src/bin/quality-bench/synthetic.rs"]
mod synthetic;

fn find_label_issues_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("find_label_issues");
    group.sample_size(10);
    for (n, k) in [(100_000, 10), (1_000_000, 10), (1_000_000, 100)] {
        let data = synthetic::generate(n, k, None, 42);
        assert!(data.features.is_none(), "no features asked for");
        let (labels, pred_probs) = (data.labels, data.pred_probs);
        for (name, opts) in [
            ("default", LabelIssueOptions::default()),
            ("cleanlab", LabelIssueOptions::cleanlab()),
        ] {
            group.bench_function(format!("{n}x{k} {name}"), |b| {
                b.iter(|| find_label_issues(&labels, &pred_probs, &opts).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, find_label_issues_bench);
criterion_main!(benches);
