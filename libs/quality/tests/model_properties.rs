//! Invariants of cross-validated pred_probs on random small inputs.

use proptest::prelude::*;
use trustmesh_quality::Features;
use trustmesh_quality::model::{CvOptions, LogisticOptions, cross_val_pred_probs};

/// `(features, d, labels, k)` with at least two classes present.
fn inputs() -> impl Strategy<Value = (Vec<f32>, usize, Vec<usize>, usize)> {
    (10usize..60, 1usize..4, 2usize..4).prop_flat_map(|(n, d, k)| {
        (
            prop::collection::vec(-10.0f32..10.0, n * d),
            Just(d),
            prop::collection::vec(0..k, n)
                .prop_filter("two classes", |l| l.iter().any(|&c| c != l[0])),
            Just(k),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_row_gets_one_out_of_sample_distribution((x, d, labels, k) in inputs(), seed in any::<u64>()) {
        let features = Features::new(x, d).unwrap();
        let opts = CvOptions { seed, ..CvOptions::default() };
        let result = cross_val_pred_probs(&features, &labels, k, &opts).unwrap();
        let n = labels.len();
        prop_assert_eq!(result.pred_probs.n(), n);
        prop_assert_eq!(result.folds.iter().map(|f| f.rows).sum::<usize>(), n);
        let sizes: Vec<usize> = (0..5).map(|f| result.fold_of_row.iter().filter(|&&x| x == f).count()).collect();
        prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{:?}", sizes);
        prop_assert!((0.0..=1.0).contains(&result.accuracy) && result.log_loss >= 0.0);
    }

    /// Standardization makes the model blind to a positive rescaling and shift of any column.
    #[test]
    fn predictions_are_invariant_to_affine_column_changes(
        (x, d, labels, k) in inputs(),
        scale in 0.01f32..100.0,
        shift in -100.0f32..100.0,
    ) {
        let opts = CvOptions {
            logistic: LogisticOptions { tol: 1e-9, ..LogisticOptions::default() },
            ..CvOptions::default()
        };
        let moved: Vec<f32> = x.iter().enumerate().map(|(i, v)| if i % d == 0 { v * scale + shift } else { *v }).collect();
        let a = cross_val_pred_probs(&Features::new(x, d).unwrap(), &labels, k, &opts).unwrap();
        let b = cross_val_pred_probs(&Features::new(moved, d).unwrap(), &labels, k, &opts).unwrap();
        for (p, q) in a.pred_probs.as_slice().iter().zip(b.pred_probs.as_slice()) {
            prop_assert!((p - q).abs() < 1e-3, "{} vs {}", p, q);
        }
    }
}
