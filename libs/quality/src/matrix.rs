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
        if !data.len().is_multiple_of(k) {
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
        Ok(Self {
            n: data.len() / k,
            k,
            data,
        })
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
    /// Missing values per row, when built by [`Features::with_missing`].
    null_counts: Option<Vec<u32>>,
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
        if !data.len().is_multiple_of(d) {
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
        Ok(Self {
            n: data.len() / d,
            d,
            data,
            null_counts: None,
        })
    }

    /// Wraps `data` in which NaN marks a missing value: the per-row count of missing values is kept for
    /// the `null` check ([`Self::null_counts`]) and each NaN is replaced by its column's mean over the
    /// present values (0 for a column with none), so distance-based checks can run on every row.
    ///
    /// # Errors
    /// [`QualityError`] naming the first row with an infinite value, or on a shape mismatch.
    pub fn with_missing(mut data: Vec<f32>, d: usize) -> Result<Self, QualityError> {
        if let Some(i) = data.iter().position(|v| v.is_infinite()) {
            return Err(QualityError::InvalidValue {
                what: "features",
                row: i / d.max(1),
                reason: format!("column {} is infinite", i % d.max(1)),
            });
        }
        if d == 0 || !data.len().is_multiple_of(d) {
            // Delegate the shape errors to `new`.
            return Self::new(data, d);
        }
        let mut sums = vec![0.0f64; d];
        let mut present = vec![0usize; d];
        for row in data.chunks_exact(d) {
            for (c, v) in row.iter().enumerate().filter(|(_, v)| !v.is_nan()) {
                sums[c] += f64::from(*v);
                present[c] += 1;
            }
        }
        let means: Vec<f32> = sums
            .iter()
            .zip(&present)
            .map(|(s, p)| if *p == 0 { 0.0 } else { (s / *p as f64) as f32 })
            .collect();
        let mut null_counts = Vec::with_capacity(data.len() / d);
        for row in data.chunks_exact_mut(d) {
            let mut nulls = 0u32;
            for (v, mean) in row.iter_mut().zip(&means).filter(|(v, _)| v.is_nan()) {
                *v = *mean;
                nulls += 1;
            }
            null_counts.push(nulls);
        }
        let mut features = Self::new(data, d)?;
        features.null_counts = Some(null_counts);
        Ok(features)
    }

    /// Missing values per row, if built by [`Self::with_missing`] (the values seen here are imputed).
    pub fn null_counts(&self) -> Option<&[u32]> {
        self.null_counts.as_deref()
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
