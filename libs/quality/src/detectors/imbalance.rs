//! `class_imbalance` (reference §9.5): the rarest class, flagged when below `threshold / K` of rows.

use super::{CheckOutput, IssueType};

/// Scores rows by the share of the rarest class; `k` = number of classes present in `labels`.
pub(crate) fn check(labels: &[usize], threshold: f64) -> CheckOutput {
    let n = labels.len();
    let mut counts = vec![0usize; labels.iter().max().map_or(0, |m| m + 1)];
    for y in labels {
        counts[*y] += 1;
    }
    let present = counts.iter().filter(|c| **c > 0).count();
    // Rarest present class, ties to the smaller index.
    let rarest = (0..counts.len())
        .filter(|c| counts[*c] > 0)
        .min_by_key(|c| (counts[*c], *c));
    let Some(rarest) = rarest else {
        return CheckOutput::new(IssueType::ClassImbalance, vec![], vec![], 1.0);
    };
    let share = counts[rarest] as f64 / n as f64;
    let imbalanced = share < threshold / present as f64;
    let is_issue = labels.iter().map(|y| *y == rarest && imbalanced).collect();
    let score = labels
        .iter()
        .map(|y| if *y == rarest { share } else { 1.0 })
        .collect();
    CheckOutput::new(IssueType::ClassImbalance, is_issue, score, share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_class_is_flagged_only_below_threshold() {
        let mut labels = vec![0usize; 95];
        labels.extend([1; 4]);
        labels.push(2);
        // Rarest class 2 has share 0.01 < 0.1 / 3.
        let out = check(&labels, 0.1);
        assert_eq!(out.column.is_issue.iter().filter(|f| **f).count(), 1);
        assert!(out.column.is_issue[99]);
        assert_eq!(out.column.score[99], 0.01);
        assert_eq!(out.column.score[0], 1.0);
        let balanced = check(&[0, 1, 0, 1], 0.1);
        assert!(balanced.column.is_issue.iter().all(|f| !f));
        assert_eq!(balanced.summary_score, 0.5);
    }
}
