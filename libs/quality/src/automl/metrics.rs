//! Cross-validated metrics of a model's out-of-sample predictions, serializable for the report.

use serde::Serialize;

/// Probabilities are clipped to `[EPS, 1]` in the log loss, as scikit-learn's `log_loss` does.
const LOG_LOSS_EPS: f64 = 1e-15;

/// Precision, recall and F1 of one class (its argmax predictions against the given labels).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// The class's name.
    pub class: String,
    /// Rows with this given label.
    pub support: usize,
    /// Of the rows predicted as this class, the share with this given label (0 when none is).
    pub precision: f64,
    /// Of the rows with this given label, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are).
    pub f1: f64,
}

/// One model's (or the ensemble's) cross-validated quality.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelMetrics {
    /// `logistic_regression`, `gradient_boosted_trees`, `knn`, `ridge`, or `ensemble`.
    pub model: String,
    /// Weight in the ensemble (1 for the ensemble itself).
    pub weight: f64,
    /// Wall seconds of its cross-validation.
    pub seconds: f64,
    /// Share of rows whose argmax is their given label (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Mean negative log probability of the given label (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    /// Per-class precision, recall and F1 (classification).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_class: Vec<ClassMetrics>,
    /// Root mean squared error (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Coefficient of determination (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
}

/// Argmax of a probability row, first on ties.
pub(super) fn argmax(p: &[f64]) -> usize {
    p.iter()
        .enumerate()
        .fold(0, |best, (c, v)| if *v > p[best] { c } else { best })
}

/// Mean log loss of row-major `probs` against `labels`.
pub(super) fn log_loss(probs: &[f64], labels: &[usize], k: usize) -> f64 {
    let total: f64 = probs
        .chunks_exact(k)
        .zip(labels)
        .map(|(p, &l)| -p[l].clamp(LOG_LOSS_EPS, 1.0).ln())
        .sum();
    total / labels.len().max(1) as f64
}

/// Classification metrics of row-major `probs` against `labels`.
pub(super) fn classification(
    model: &str,
    probs: &[f64],
    labels: &[usize],
    classes: &[String],
    weight: f64,
    seconds: f64,
) -> ModelMetrics {
    let k = classes.len();
    let (mut tp, mut predicted, mut support) = (vec![0usize; k], vec![0usize; k], vec![0usize; k]);
    for (p, &l) in probs.chunks_exact(k).zip(labels) {
        let a = argmax(p);
        predicted[a] += 1;
        support[l] += 1;
        tp[a] += usize::from(a == l);
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_class = (0..k)
        .map(|c| {
            let (precision, recall) = (ratio(tp[c], predicted[c]), ratio(tp[c], support[c]));
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassMetrics {
                class: classes[c].clone(),
                support: support[c],
                precision,
                recall,
                f1,
            }
        })
        .collect();
    ModelMetrics {
        model: model.to_owned(),
        weight,
        seconds,
        accuracy: Some(ratio(tp.iter().sum(), labels.len())),
        log_loss: Some(log_loss(probs, labels, k)),
        per_class,
        rmse: None,
        r2: None,
    }
}

/// Regression metrics of `predictions` against `y`.
pub(super) fn regression(
    model: &str,
    predictions: &[f64],
    y: &[f64],
    weight: f64,
    seconds: f64,
) -> ModelMetrics {
    let n = y.len().max(1) as f64;
    let mean = y.iter().sum::<f64>() / n;
    let sse: f64 = predictions
        .iter()
        .zip(y)
        .map(|(p, t)| (p - t).powi(2))
        .sum();
    let sst: f64 = y.iter().map(|t| (t - mean).powi(2)).sum();
    ModelMetrics {
        model: model.to_owned(),
        weight,
        seconds,
        accuracy: None,
        log_loss: None,
        per_class: Vec::new(),
        rmse: Some((sse / n).sqrt()),
        r2: Some(if sst > 0.0 { 1.0 - sse / sst } else { 0.0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_class_metrics_follow_their_definitions() {
        // Rows: (given, predicted) = (0,0), (0,1), (1,1), (1,1).
        let probs = [0.9, 0.1, 0.4, 0.6, 0.2, 0.8, 0.3, 0.7];
        let classes = ["a".to_owned(), "b".to_owned()];
        let m = classification("m", &probs, &[0, 0, 1, 1], &classes, 1.0, 0.0);
        assert_eq!(m.accuracy, Some(0.75));
        let (a, b) = (&m.per_class[0], &m.per_class[1]);
        assert_eq!((a.precision, a.recall, a.support), (1.0, 0.5, 2));
        assert_eq!((b.precision, b.recall), (2.0 / 3.0, 1.0));
        assert!((b.f1 - 0.8).abs() < 1e-12);
        let r = regression("r", &[1.0, 3.0], &[1.0, 3.0], 1.0, 0.0);
        assert_eq!((r.rmse, r.r2), (Some(0.0), Some(1.0)));
    }
}
