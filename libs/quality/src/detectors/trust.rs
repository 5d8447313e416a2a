//! The per-row trust score.
//!
//! `trust_i = Π_c m_c(i)` over the row-level checks `c` that ran, with `s` the row's score (1 = clean):
//! - `null`: `m = s` (the share of present values);
//! - `label`: `m = s` if the row is a label issue, else `(1 + s)/2` (s = self-confidence);
//! - `outlier`, `near_duplicate`, `exact_duplicate`, `underperforming_group`, `ambiguous`:
//!   `m = (1 + s)/2` if flagged, else 1.
//!
//! Dataset-level checks (`non_iid`, `class_imbalance`), `data_valuation` (a value, not an error) and
//! `well_labeled` do not enter. So trust is in [0, 1], is 1 only for a row nothing doubts, a label
//! issue caps it at the row's probability of its given label, and every other flag at most halves it.

use super::{IssueColumn, IssueType};

/// Whether a check describes the row itself (and so enters the trust score).
pub(crate) fn is_row_level(t: IssueType) -> bool {
    match t {
        IssueType::Null
        | IssueType::Label
        | IssueType::Outlier
        | IssueType::NearDuplicate
        | IssueType::ExactDuplicate
        | IssueType::UnderperformingGroup
        | IssueType::Ambiguous => true,
        IssueType::NonIid
        | IssueType::ClassImbalance
        | IssueType::DataValuation
        | IssueType::WellLabeled => false,
    }
}

/// Combines the per-row columns into trust scores (definition in the module docs).
pub fn trust_scores(n: usize, columns: &[IssueColumn]) -> Vec<f64> {
    let mut trust = vec![1.0f64; n];
    for col in columns.iter().filter(|c| is_row_level(c.issue_type)) {
        for ((t, flag), s) in trust.iter_mut().zip(&col.is_issue).zip(&col.score) {
            let s = s.clamp(0.0, 1.0);
            *t *= match (col.issue_type, flag) {
                (IssueType::Null, _) | (IssueType::Label, true) => s,
                (IssueType::Label, false) => (1.0 + s) / 2.0,
                (_, true) => (1.0 + s) / 2.0,
                (_, false) => 1.0,
            };
        }
    }
    trust
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(issue_type: IssueType, is_issue: Vec<bool>, score: Vec<f64>) -> IssueColumn {
        IssueColumn {
            issue_type,
            is_issue,
            score,
        }
    }

    #[test]
    fn flags_lower_trust_and_dataset_checks_do_not() {
        let cols = vec![
            col(
                IssueType::Label,
                vec![false, true, false],
                vec![1.0, 0.2, 1.0],
            ),
            col(
                IssueType::Outlier,
                vec![false, false, true],
                vec![0.9, 0.9, 0.0],
            ),
            col(
                IssueType::ClassImbalance,
                vec![true, true, true],
                vec![0.0, 0.0, 0.0],
            ),
        ];
        let t = trust_scores(3, &cols);
        assert_eq!(t, vec![1.0, 0.2, 0.5]);
    }
}
