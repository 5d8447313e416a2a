//! `null` (reference §9.6): the share of present values per row; a row is flagged when all are missing.

use super::{CheckOutput, IssueType, stats};
use crate::Features;

/// Scores `features` by their null counts (all present when built without [`Features::with_missing`]).
pub(crate) fn check(features: &Features) -> CheckOutput {
    let d = features.d();
    let (is_issue, score): (Vec<bool>, Vec<f64>) = match features.null_counts() {
        Some(counts) => counts
            .iter()
            .map(|c| (*c as usize == d, (d - *c as usize) as f64 / d as f64))
            .unzip(),
        None => (vec![false; features.n()], vec![1.0; features.n()]),
    };
    let summary = stats::mean(&score);
    CheckOutput::new(IssueType::Null, is_issue, score, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_missing_rows_are_flagged_and_partial_rows_scored() {
        let nan = f32::NAN;
        let f = Features::with_missing(vec![1.0, 2.0, nan, 3.0, nan, nan], 2).unwrap();
        let out = check(&f);
        assert_eq!(out.column.is_issue, vec![false, false, true]);
        assert_eq!(out.column.score, vec![1.0, 0.5, 0.0]);
        assert!((out.summary_score - 0.5).abs() < 1e-12);
        assert_eq!(
            f.row(1),
            &[1.0, 3.0],
            "a missing value is imputed with its column mean"
        );
    }
}
