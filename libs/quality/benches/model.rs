//! Criterion benchmark of 5-fold cross-validated pred_probs (standardize + multinomial logistic
//! regression) on a 100,000 × 20, 10-class `make_classification`-style table, the shape of
//! `shared/fixtures/cleanlab-reference/speed.md` (scikit-learn: 10.3 s). Prints the CV accuracy once.
//!
//! `cargo bench -p trustmesh-quality --bench model`.
// NOTE: `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use trustmesh_quality::model::{CvOptions, cross_val_pred_probs};

#[path = "model/synthetic.rs"]
mod synthetic;

/// 100,000 rows, 10 classes, 20 features: 10 informative, 5 redundant, 5 noise.
pub(crate) const BENCH_SPEC: synthetic::Spec = synthetic::Spec {
    n: 100_000,
    classes: 10,
    informative: 10,
    redundant: 5,
    noise: 5,
    clusters_per_class: 2,
    class_sep: 1.0,
    flip: 0.01,
};

fn cv_bench(c: &mut Criterion) {
    let (features, labels) = synthetic::make_classification(&BENCH_SPEC, 42);
    let opts = CvOptions::default();
    let result = cross_val_pred_probs(&features, &labels, BENCH_SPEC.classes, &opts).unwrap();
    let iterations: Vec<usize> = result.folds.iter().map(|f| f.iterations).collect();
    eprintln!(
        "5-fold CV 100000x20 k=10: accuracy {:.4}, log loss {:.4}, L-BFGS iterations per fold {iterations:?}, warnings {:?}",
        result.accuracy, result.log_loss, result.warnings
    );
    let mut group = c.benchmark_group("cross_val_pred_probs");
    group.sample_size(10);
    group.bench_function("100000x20 k=10 5-fold", |b| {
        b.iter(|| cross_val_pred_probs(&features, &labels, BENCH_SPEC.classes, &opts).unwrap())
    });
    group.finish();
}

criterion_group!(benches, cv_bench);
criterion_main!(benches);
