//! The modality checks of an analysis, run on the dataset's cells before the models train: the
//! image checks ([`check_images`], CleanVision's semantics) on every IMAGE column, and the text
//! checks ([`check_texts`]) on every column whose role is TEXT (the label excepted). These are the
//! checks `trustmesh check` runs, with the same names and scores.
//!
//! An image that cannot be analyzed (corrupt, not an image, over the pixel limit, or missing: a
//! table archive's row whose path names no file of the archive) is flagged by the `not_analyzed`
//! check with the reason (for a missing one, the row and its id, an archive's `path`), and its cell is marked missing for the models, so
//! AutoML featurizes the other images and the row's label and outlier scores come from its other
//! cells (none, for an image archive: the row gets the models' prior).

use trustmesh_proto::v1::column_data::Values;
use trustmesh_proto::v1::{ColumnData, ColumnRole, ColumnType, IssueType, ModalityCheck, Schema};
use trustmesh_quality::modality::{
    ImageOptions, ModalityColumn, TextOptions, check_images, check_texts,
};

use crate::outputs::StoredOutputs;

/// The name of the check flagging rows that could not be analyzed.
const NOT_ANALYZED: &str = "not_analyzed";

/// The API's issue type of a modality check's name.
fn issue_type(name: &str) -> IssueType {
    match name {
        "dark" => IssueType::Dark,
        "light" => IssueType::Light,
        "blurry" => IssueType::Blurry,
        "low_information" => IssueType::LowInformation,
        "odd_aspect_ratio" => IssueType::OddAspectRatio,
        "odd_size" => IssueType::OddSize,
        "grayscale" => IssueType::Grayscale,
        "exact_duplicate" => IssueType::ExactDuplicate,
        "near_duplicate" => IssueType::NearDuplicate,
        "empty_text" => IssueType::EmptyText,
        "text_length" => IssueType::TextLength,
        "PII" => IssueType::Pii,
        "non_english" => IssueType::NonEnglish,
        NOT_ANALYZED => IssueType::NotAnalyzed,
        _ => IssueType::Unspecified,
    }
}

/// What the modality checks found: one [`ModalityCheck`] per check and column, and per row their
/// flags and scores.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ModalityResults {
    checks: Vec<ModalityCheck>,
    /// Per check, its column.
    columns: Vec<ModalityColumn>,
    /// Rows not analyzed, ascending, and why.
    not_analyzed: Vec<(u64, String)>,
}

impl ModalityResults {
    fn push(&mut self, column: &str, check: ModalityColumn) {
        self.checks.push(ModalityCheck {
            issue_type: issue_type(check.name).into(),
            column: column.to_owned(),
            name: check.name.to_owned(),
            flagged_rows: check.num_issues() as u64,
            quality_score: check.mean_score(),
        });
        self.columns.push(check);
    }

    /// The stored outputs' modality fields (every other field default), row-major.
    pub(crate) fn into_stored(self, rows: usize) -> StoredOutputs {
        let mut flags = Vec::with_capacity(rows * self.columns.len());
        let mut scores = Vec::with_capacity(rows * self.columns.len());
        for row in 0..rows {
            for c in &self.columns {
                flags.push(c.is_issue.get(row).copied().unwrap_or_default());
                scores.push(c.score.get(row).copied().unwrap_or(f64::NAN));
            }
        }
        let (not_analyzed_rows, not_analyzed_reasons) = self.not_analyzed.into_iter().unzip();
        StoredOutputs {
            modality_checks: self.checks,
            modality_flags: flags,
            modality_scores: scores,
            not_analyzed_rows,
            not_analyzed_reasons,
            ..StoredOutputs::default()
        }
    }
}

/// Marks `row` of `column` missing.
fn mark_missing(column: &mut ColumnData, row: usize, rows: usize) {
    if column.valid.is_empty() {
        column.valid = vec![true; rows];
    }
    if let Some(valid) = column.valid.get_mut(row) {
        *valid = false;
    }
}

/// The id column's name and values, when the schema names one holding strings.
fn id_values<'a>(schema: &'a Schema, columns: &[ColumnData]) -> Option<(&'a str, Vec<String>)> {
    let name = schema.id_column.as_str();
    let column = columns
        .iter()
        .find(|c| !name.is_empty() && c.name == name)?;
    match &column.values {
        Some(Values::Strings(values)) => Some((name, values.values.clone())),
        _ => None,
    }
}

/// Why a missing image cell was not analyzed, naming its row and id (an archive's path).
fn missing_image(row: usize, ids: Option<&(&str, Vec<String>)>) -> String {
    let id = ids
        .and_then(|(name, values)| Some((name, values.get(row)?)))
        .map(|(name, value)| format!(" ({name} {value:?})"))
        .unwrap_or_default();
    format!("row {row}{id}: no image (the path is empty, not in the archive, or outside it)")
}

/// Runs the modality checks on `columns` (in `schema` order, `rows` values each; `label` is the
/// label column) and marks the images that could not be analyzed missing, for the models.
pub(crate) fn run(
    schema: &Schema,
    label: &str,
    mut columns: Vec<ColumnData>,
    rows: usize,
) -> (Vec<ColumnData>, ModalityResults) {
    let mut results = ModalityResults::default();
    let mut reasons: Vec<Option<String>> = vec![None; rows];
    let ids = id_values(schema, &columns);
    for column in &mut columns {
        let Some(meta) = schema.columns.iter().find(|c| c.name == column.name) else {
            continue;
        };
        let present = |row: usize| column.valid.get(row) != Some(&false);
        if let Some(Values::Images(images)) = &column.values
            && meta.r#type() == ColumnType::Image
        {
            let cells: Vec<&[u8]> = (0..rows)
                .map(|row| {
                    images
                        .values
                        .get(row)
                        .filter(|_| present(row))
                        .map_or(&[][..], Vec::as_slice)
                })
                .collect();
            let missing: Vec<bool> = (0..rows).map(|row| !present(row)).collect();
            let report = check_images(&cells, &ImageOptions::default());
            let name = column.name.clone();
            for check in report.columns {
                results.push(&name, check);
            }
            let mut not_analyzed = ModalityColumn {
                name: NOT_ANALYZED,
                is_issue: vec![false; rows],
                score: vec![1.0; rows],
            };
            for (row, reason) in report.not_analyzed.into_iter().enumerate() {
                let reason = if missing[row] {
                    Some(missing_image(row, ids.as_ref()))
                } else {
                    reason
                };
                if let Some(reason) = reason {
                    not_analyzed.is_issue[row] = true;
                    not_analyzed.score[row] = 0.0;
                    mark_missing(column, row, rows);
                    let slot = &mut reasons[row];
                    *slot = Some(match slot.take() {
                        Some(earlier) => format!("{earlier}; {name}: {reason}"),
                        None => format!("{name}: {reason}"),
                    });
                }
            }
            results.push(&name, not_analyzed);
        } else if let Some(Values::Strings(texts)) = &column.values
            && meta.role() == ColumnRole::Text
            && column.name != label
        {
            let cells: Vec<&str> = (0..rows)
                .map(|row| {
                    texts
                        .values
                        .get(row)
                        .filter(|_| present(row))
                        .map_or("", String::as_str)
                })
                .collect();
            let report = check_texts(&cells, &TextOptions::default());
            let name = column.name.clone();
            for check in report.columns {
                results.push(&name, check);
            }
        }
    }
    results.not_analyzed = reasons
        .into_iter()
        .enumerate()
        .filter_map(|(row, reason)| reason.map(|r| (row as u64, r)))
        .collect();
    (columns, results)
}

#[cfg(test)]
mod tests {
    use trustmesh_proto::v1::{BytesValues, Column, StringValues};
    use trustmesh_quality::modality::synth;

    use super::*;

    fn meta(name: &str, t: ColumnType, role: ColumnRole) -> Column {
        Column {
            name: name.to_owned(),
            r#type: t.into(),
            role: role.into(),
            ..Column::default()
        }
    }

    #[test]
    fn images_and_texts_are_checked_and_unreadable_images_marked_missing() {
        let mut images = synth::bench_images(8, 32, 1);
        images.push(b"not an image".to_vec());
        let rows = images.len();
        let mut texts: Vec<String> = (0..rows)
            .map(|i| format!("A plain English sentence about the weather, number {i}."))
            .collect();
        texts[2] = String::new();
        texts[3] = "Write to jane.doe@example.com about it, please, today.".to_owned();
        let schema = Schema {
            columns: vec![
                meta("image", ColumnType::Image, ColumnRole::Image),
                meta("note", ColumnType::String, ColumnRole::Text),
                meta("label", ColumnType::String, ColumnRole::Text),
            ],
            id_column: String::new(),
        };
        let columns = vec![
            ColumnData {
                name: "image".into(),
                valid: Vec::new(),
                values: Some(Values::Images(BytesValues { values: images })),
            },
            ColumnData {
                name: "note".into(),
                valid: Vec::new(),
                values: Some(Values::Strings(StringValues {
                    values: texts.clone(),
                })),
            },
            ColumnData {
                name: "label".into(),
                valid: Vec::new(),
                values: Some(Values::Strings(StringValues { values: texts })),
            },
        ];
        let (columns, results) = run(&schema, "label", columns, rows);
        assert_eq!(columns[0].valid.len(), rows);
        assert!(!columns[0].valid[rows - 1] && columns[0].valid[0]);
        assert!(results.checks.iter().all(|c| c.column != "label"));
        let count = |name: &str, column: &str| {
            results
                .checks
                .iter()
                .find(|c| c.name == name && c.column == column)
                .map(|c| c.flagged_rows)
        };
        assert_eq!(count(NOT_ANALYZED, "image"), Some(1));
        assert_eq!(count("empty_text", "note"), Some(1));
        assert_eq!(count("PII", "note"), Some(1));
        assert_eq!(results.not_analyzed.len(), 1);
        assert!(
            results.not_analyzed[0].1.starts_with("image: not an image"),
            "{:?}",
            results.not_analyzed
        );
        let checks = results.checks.len();
        let stored = results.into_stored(rows);
        assert_eq!(stored.modality_flags.len(), rows * checks);
        assert_eq!(stored.not_analyzed_rows, [rows as u64 - 1]);
    }

    #[test]
    fn missing_images_are_not_analyzed_naming_their_row_and_path() {
        let mut images = synth::bench_images(6, 32, 2);
        images[4].clear();
        let rows = images.len();
        let mut valid = vec![true; rows];
        valid[4] = false;
        let paths: Vec<String> = (0..rows).map(|i| format!("img/{i}.png")).collect();
        let schema = Schema {
            columns: vec![
                meta("path", ColumnType::String, ColumnRole::Id),
                meta("image", ColumnType::Image, ColumnRole::Image),
            ],
            id_column: "path".to_owned(),
        };
        let columns = vec![
            ColumnData {
                name: "path".into(),
                valid: Vec::new(),
                values: Some(Values::Strings(StringValues { values: paths })),
            },
            ColumnData {
                name: "image".into(),
                valid,
                values: Some(Values::Images(BytesValues { values: images })),
            },
        ];
        let (columns, results) = run(&schema, "label", columns, rows);
        assert!(!columns[1].valid[4]);
        assert_eq!(
            results.not_analyzed,
            [(
                4,
                "image: row 4 (path \"img/4.png\"): no image (the path is empty, not in the \
                 archive, or outside it)"
                    .to_owned()
            )]
        );
    }
}
