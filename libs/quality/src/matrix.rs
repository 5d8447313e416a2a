//! Dense row-major matrices that the engine takes as input, validated once at construction.

use crate::QualityError;

/// Out-of-sample predicted probabilities: `n` rows × `k` classes, row-major, each row summing to 1.
#[derive(Debug, Clone, PartialEq)]
pub struct PredProbs {
    n: usize,
    k: usize,
    data: Vec<f64>,
}

impl PredProbs {
    /// Tolerance on a row's sum.
    pub const SUM_TOLERANCE: f64 = 1e-3;

    /// Wraps `data` (row-major, `k` columns) after checking every value is finite, non-negative, and
    /// every row sums to 1 within [`Self::SUM_TOLERANCE`].
    ///
    /// # Errors
    /// [`QualityError`] naming the first offending row.
    pub fn new(data: Vec<f64>, k: usize) -> Result<Self, QualityError> {
        if k < 2 {
            return Err(QualityError::TooFewClasses(k));
        }
        if data.is_empty() {
            return Err(QualityError::Empty);
        }
        if data.len() % k != 0 {
            return Err(QualityError::LengthMismatch {
                what: "pred_probs values",
                got: data.len(),
                expected: data.len().div_ceil(k) * k,
            });
        }
        for (row, probs) in data.chunks_exact(k).enumerate() {
            if let Some(p) = probs.iter().find(|p| !p.is_finite() || **p < 0.0) {
                return Err(QualityError::InvalidValue {
                    what: "pred_probs",
                    row,
                    reason: format!("probability {p} is not a finite non-negative number"),
                });
            }
            let sum: f64 = probs.iter().sum();
            if (sum - 1.0).abs() > Self::SUM_TOLERANCE {
                return Err(QualityError::InvalidValue {
                    what: "pred_probs",
                    row,
                    reason: format!("row sums to {sum}, not 1"),
                });
            }
        }
        Ok(Self { n: data.len() / k, k, data })
    }

    /// Number of rows.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of classes.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Row `i`'s probabilities.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.k..(i + 1) * self.k]
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }
}

/// Numeric features: `n` rows × `d` columns, row-major, all finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    n: usize,
    d: usize,
    data: Vec<f32>,
}

impl Features {
    /// Wraps `data` (row-major, `d` columns) after checking every value is finite.
    ///
    /// # Errors
    /// [`QualityError`] naming the first row with a non-finite value.
    pub fn new(data: Vec<f32>, d: usize) -> Result<Self, QualityError> {
        if d == 0 || data.is_empty() {
            return Err(QualityError::Empty);
        }
        if data.len() % d != 0 {
            return Err(QualityError::LengthMismatch {
                what: "feature values",
                got: data.len(),
                expected: data.len().div_ceil(d) * d,
            });
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(QualityError::InvalidValue {
                what: "features",
                row: i / d,
                reason: format!("column {} is not a finite number", i % d),
            });
        }
        Ok(Self { n: data.len() / d, d, data })
    }

    /// Number of rows.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of columns.
    pub fn d(&self) -> usize {
        self.d
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
}
