//! Per-column standardization fitted on a subset of rows (a training fold), like scikit-learn's
//! `StandardScaler`: population mean and standard deviation; a constant column keeps scale 1, so it
//! becomes all zeros.

use crate::Features;

/// Column means and scales fitted on the training rows only.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    mean: Vec<f64>,
    scale: Vec<f64>,
}

impl Standardizer {
    /// Fits the mean and population standard deviation of each column over `rows` of `features`.
    /// A column whose standard deviation is negligible next to its mean (constant on these rows) gets
    /// scale 1.
    pub fn fit(features: &Features, rows: &[usize]) -> Self {
        let d = features.d();
        let mut mean = vec![0.0f64; d];
        for &r in rows {
            for (m, v) in mean.iter_mut().zip(features.row(r)) {
                *m += f64::from(*v);
            }
        }
        let count = rows.len().max(1) as f64;
        mean.iter_mut().for_each(|m| *m /= count);
        let mut var = vec![0.0f64; d];
        for &r in rows {
            for ((s, m), v) in var.iter_mut().zip(&mean).zip(features.row(r)) {
                let delta = f64::from(*v) - m;
                *s += delta * delta;
            }
        }
        let scale = var
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let std = (s / count).sqrt();
                // f32 inputs: anything below the input's own rounding noise is a constant column.
                if std <= 10.0 * f64::from(f32::EPSILON) * m.abs() {
                    1.0
                } else {
                    std
                }
            })
            .collect();
        Self { mean, scale }
    }

    /// Number of columns.
    pub fn d(&self) -> usize {
        self.mean.len()
    }

    /// Writes the standardized `row` into `out` (same length).
    pub fn transform_into(&self, row: &[f32], out: &mut [f32]) {
        for (((o, v), m), s) in out.iter_mut().zip(row).zip(&self.mean).zip(&self.scale) {
            *o = ((f64::from(*v) - m) / s) as f32;
        }
    }

    /// The standardized `rows` of `features`, row-major.
    pub fn transform(&self, features: &Features, rows: &[usize]) -> Vec<f32> {
        let d = self.d();
        let mut out = vec![0.0f32; rows.len() * d];
        for (o, &r) in out.chunks_exact_mut(d.max(1)).zip(rows) {
            self.transform_into(features.row(r), o);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_on_the_given_rows_only_and_zeroes_constant_columns() {
        // Column 0 varies, column 1 is constant (7), rows 2.. are outliers excluded from the fit.
        let features = Features::new(vec![1.0, 7.0, 3.0, 7.0, 1000.0, 7.0], 2).unwrap();
        let s = Standardizer::fit(&features, &[0, 1]);
        let out = s.transform(&features, &[0, 1, 2]);
        assert_eq!(out[..4], [-1.0, 0.0, 1.0, 0.0]);
        assert_eq!(out[4], 998.0);
        assert_eq!(out[5], 0.0);
    }
}
