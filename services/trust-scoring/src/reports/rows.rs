//! `ListRows`' selection over a report's rows: corrections attached, filtered by issue type and
//! correction, ordered, and one page cut out.

use std::collections::HashMap;

use trustmesh_proto::v1::{Correction, CorrectionAction, ListRowsRequest, RowOrder, RowResult};

use crate::error::TrustError;

/// One page of rows.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) rows: Vec<RowResult>,
    /// Where the next page starts, if there is one.
    pub(crate) next: Option<usize>,
    /// Rows matching the filter.
    pub(crate) total: u64,
}

/// A stable rendering of the request's filter and order, for page tokens.
pub(crate) fn query(req: &ListRowsRequest) -> String {
    format!(
        "parent={}&issues={:?}&order={}&action={}",
        req.parent, req.issue_types, req.order_by, req.correction_action
    )
}

fn issue_score(row: &RowResult, issue_type: i32) -> f64 {
    row.issues
        .iter()
        .find(|i| i.issue_type == issue_type)
        .map_or(1.0, |i| i.quality_score)
}

/// Rows `offset..offset + size` of `rows` (with `corrections` attached) matching `req`.
pub(crate) fn select(
    rows: Vec<RowResult>,
    corrections: Vec<Correction>,
    req: &ListRowsRequest,
    offset: usize,
    size: usize,
) -> Result<Page, TrustError> {
    let order = req.order_by();
    if order == RowOrder::IssueScoreAscending && req.issue_types.len() != 1 {
        return Err(TrustError::InvalidArgument(
            "order_by ROW_ORDER_ISSUE_SCORE_ASCENDING needs exactly one issue_types entry"
                .to_owned(),
        ));
    }
    let mut by_row: HashMap<u64, Correction> =
        corrections.into_iter().map(|c| (c.row_index, c)).collect();
    let action = req.correction_action();
    let mut selected: Vec<RowResult> = rows
        .into_iter()
        .map(|mut row| {
            row.correction = by_row.remove(&row.row_index);
            row
        })
        .filter(|row| {
            req.issue_types.is_empty()
                || row
                    .issues
                    .iter()
                    .any(|i| i.flagged && req.issue_types.contains(&i.issue_type))
        })
        .filter(|row| {
            action == CorrectionAction::Unspecified
                || row
                    .correction
                    .as_ref()
                    .is_some_and(|c| c.action == i32::from(action))
        })
        .collect();
    match order {
        RowOrder::Unspecified | RowOrder::TrustScoreAscending => selected.sort_by(|a, b| {
            a.trust_score
                .total_cmp(&b.trust_score)
                .then(a.row_index.cmp(&b.row_index))
        }),
        RowOrder::IssueScoreAscending => {
            let issue_type = req.issue_types[0];
            selected.sort_by(|a, b| {
                issue_score(a, issue_type)
                    .total_cmp(&issue_score(b, issue_type))
                    .then(a.row_index.cmp(&b.row_index))
            });
        }
        RowOrder::RowIndex => selected.sort_by_key(|r| r.row_index),
    }
    let total = selected.len();
    let end = offset.saturating_add(size).min(total);
    let rows = selected.drain(offset.min(total)..end).collect();
    Ok(Page {
        rows,
        next: (end < total).then_some(end),
        total: total as u64,
    })
}

#[cfg(test)]
mod tests {
    use trustmesh_proto::v1::{IssueType, RowIssue};

    use super::*;

    fn row(index: u64, trust: f64, label_flagged: bool) -> RowResult {
        RowResult {
            row_index: index,
            trust_score: trust,
            issues: vec![RowIssue {
                issue_type: IssueType::Label.into(),
                flagged: label_flagged,
                quality_score: trust,
                column: String::new(),
            }],
            ..RowResult::default()
        }
    }

    #[test]
    fn filters_orders_and_pages() {
        let rows = vec![
            row(0, 0.9, false),
            row(1, 0.1, true),
            row(2, 0.5, true),
            row(3, 0.2, true),
        ];
        let req = ListRowsRequest {
            issue_types: vec![IssueType::Label.into()],
            ..ListRowsRequest::default()
        };
        let first = select(rows.clone(), Vec::new(), &req, 0, 2).unwrap();
        assert_eq!(first.total, 3);
        assert_eq!(
            first.rows.iter().map(|r| r.row_index).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(first.next, Some(2));
        let second = select(rows.clone(), Vec::new(), &req, 2, 2).unwrap();
        assert_eq!(
            second.rows.iter().map(|r| r.row_index).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(second.next, None);

        let excluded = Correction {
            row_index: 2,
            action: CorrectionAction::Exclude.into(),
            ..Correction::default()
        };
        let by_action = ListRowsRequest {
            correction_action: CorrectionAction::Exclude.into(),
            order_by: RowOrder::RowIndex.into(),
            ..ListRowsRequest::default()
        };
        let page = select(rows.clone(), vec![excluded], &by_action, 0, 10).unwrap();
        assert_eq!(page.rows.len(), 1);
        assert!(page.rows[0].correction.is_some());

        let bad = ListRowsRequest {
            order_by: RowOrder::IssueScoreAscending.into(),
            ..ListRowsRequest::default()
        };
        assert!(select(rows, Vec::new(), &bad, 0, 10).is_err());
    }
}
