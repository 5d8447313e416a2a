//! The modality checks' results in a report: analysis ran the image checks on an image column and
//! the text checks on each text column (`ModalityCheck`s in the outputs' header, per-row flags and
//! scores in the batches); each check becomes a [`RowIssue`] of every row and an
//! [`IssueSummary`], both naming the column, and the rows whose cell could not be analyzed get
//! their reason.

use trustmesh_proto::v1::{IssueSummary, ModelOutputsHeader, RowIssue, RowResult};

/// Appends each modality check's flag and score to every row of `rows` (`flags` and `scores`
/// row-major over `header.modality_checks`), and the reasons of the rows not analyzed.
pub(crate) fn add_to_rows(
    rows: &mut [RowResult],
    header: &ModelOutputsHeader,
    flags: &[bool],
    scores: &[f64],
) {
    let checks = &header.modality_checks;
    if !checks.is_empty() {
        for (row, result) in rows.iter_mut().enumerate() {
            for (c, check) in checks.iter().enumerate() {
                let at = row * checks.len() + c;
                result.issues.push(RowIssue {
                    issue_type: check.issue_type,
                    flagged: flags.get(at).copied().unwrap_or_default(),
                    quality_score: scores.get(at).copied().unwrap_or(f64::NAN),
                    column: check.column.clone(),
                });
            }
        }
    }
    for (row, reason) in header
        .not_analyzed_rows
        .iter()
        .zip(&header.not_analyzed_reasons)
    {
        if let Some(result) = usize::try_from(*row).ok().and_then(|r| rows.get_mut(r)) {
            result.not_analyzed_reason.clone_from(reason);
        }
    }
}

/// One summary per modality check, over `n` rows.
pub(crate) fn summaries(header: &ModelOutputsHeader, n: usize) -> Vec<IssueSummary> {
    header
        .modality_checks
        .iter()
        .map(|check| IssueSummary {
            issue_type: check.issue_type,
            flagged_rows: check.flagged_rows,
            flagged_fraction: check.flagged_rows as f64 / n.max(1) as f64,
            quality_score: check.quality_score,
            column: check.column.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use trustmesh_proto::v1::{IssueType, ModalityCheck};

    use super::*;

    #[test]
    fn checks_become_row_issues_and_summaries_naming_their_column() {
        let header = ModelOutputsHeader {
            modality_checks: vec![
                ModalityCheck {
                    issue_type: IssueType::Dark.into(),
                    column: "image".into(),
                    name: "dark".into(),
                    flagged_rows: 1,
                    quality_score: 0.7,
                },
                ModalityCheck {
                    issue_type: IssueType::NotAnalyzed.into(),
                    column: "image".into(),
                    name: "not_analyzed".into(),
                    flagged_rows: 1,
                    quality_score: 0.5,
                },
            ],
            not_analyzed_rows: vec![1],
            not_analyzed_reasons: vec!["image: corrupt image".into()],
            ..ModelOutputsHeader::default()
        };
        let mut rows = vec![RowResult::default(), RowResult::default()];
        add_to_rows(
            &mut rows,
            &header,
            &[true, false, false, true],
            &[0.1, 1.0, f64::NAN, 0.0],
        );
        assert_eq!(rows[0].issues.len(), 2);
        assert!(rows[0].issues[0].flagged && rows[0].issues[0].column == "image");
        assert!(rows[1].issues[1].flagged && rows[1].issues[0].quality_score.is_nan());
        assert_eq!(rows[1].not_analyzed_reason, "image: corrupt image");
        let summaries = summaries(&header, 2);
        assert_eq!(summaries[0].flagged_fraction, 0.5);
        assert_eq!(summaries[1].issue_type, i32::from(IssueType::NotAnalyzed));
    }
}
