//! `ExportCleanset`: the report's dataset, read from ingest (`GetDataset`, `ReadRows`) with the
//! mesh's service credential (ingest audits those reads as actor SERVICE in the tenant's log),
//! rendered batch by batch with the report's per-row results and the corrections, as CSV or JSON
//! Lines, and streamed in chunks.
//!
//! [`Ingest`] is the client, [`Cleanset`] the rendering (pure: a batch in, bytes out), [`stream`]
//! the pump from ingest's batches to the response stream.

use std::collections::HashMap;
use std::pin::Pin;

use base64::Engine as _;
use futures::Stream;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};
use trustmesh_proto::v1::column_data::Values;
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::{
    ColumnData, Correction, CorrectionAction, Dataset, DatasetFormat, ExportCleansetRequest,
    ExportCleansetResponse, ExportFormat, GetDatasetRequest, IssueType, ReadRowsRequest,
    ReadRowsResponse, RowBatch, RowResult,
};
use trustmesh_service_kit::calls::mesh_request;

use crate::error::TrustError;

/// Largest `chunk` of one response message (well under gRPC's default 4 MiB message limit).
const CHUNK_BYTES: usize = 1 << 20;

/// The response stream of `ExportCleanset`.
pub(crate) type ExportStream =
    Pin<Box<dyn Stream<Item = Result<ExportCleansetResponse, Status>> + Send>>;

/// Ingest's `DatasetService`, called with the mesh's service credential.
#[derive(Debug, Clone)]
pub(crate) struct Ingest {
    datasets: DatasetServiceClient<Channel>,
    /// `Bearer <mesh.service_credential>`, if configured.
    bearer: Option<MetadataValue<Ascii>>,
}

/// What a refusal of ingest means for the export.
fn ingest_error(status: &Status) -> TrustError {
    match status.code() {
        Code::NotFound | Code::FailedPrecondition => {
            TrustError::FailedPrecondition("the report's dataset is no longer readable")
        }
        code @ (Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::InvalidArgument
        | Code::DeadlineExceeded
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unauthenticated) => TrustError::Ingest(code),
    }
}

impl Ingest {
    /// A client on `channel` presenting `bearer` (the whole `authorization` value), if set.
    pub(crate) fn new(channel: Channel, bearer: Option<MetadataValue<Ascii>>) -> Self {
        Self {
            datasets: DatasetServiceClient::new(channel),
            bearer,
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        mesh_request(message, self.bearer.as_ref())
    }

    /// The dataset `name` (`tenants/{tenant}/datasets/{id}`).
    pub(crate) async fn dataset(&self, name: &str) -> Result<Dataset, TrustError> {
        let request = self.request(GetDatasetRequest {
            name: name.to_owned(),
        });
        self.datasets
            .clone()
            .get_dataset(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ingest_error(&s))
    }

    /// All rows of dataset `name`, columns `columns`, as a stream of batches.
    pub(crate) async fn rows(
        &self,
        name: &str,
        columns: Vec<String>,
    ) -> Result<Streaming<ReadRowsResponse>, TrustError> {
        let request = self.request(ReadRowsRequest {
            name: name.to_owned(),
            columns,
            ..ReadRowsRequest::default()
        });
        self.datasets
            .clone()
            .read_rows(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ingest_error(&s))
    }
}

/// Output format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// The format asked for; UNSPECIFIED is the dataset's own where it can be, else CSV.
    pub(crate) fn choose(asked: i32, dataset: DatasetFormat) -> Result<Self, TrustError> {
        match ExportFormat::try_from(asked) {
            Ok(ExportFormat::Csv) => Ok(Self::Csv),
            Ok(ExportFormat::Jsonl) => Ok(Self::Jsonl),
            Ok(ExportFormat::Unspecified) => Ok(match dataset {
                DatasetFormat::Jsonl => Self::Jsonl,
                DatasetFormat::Unspecified
                | DatasetFormat::Csv
                | DatasetFormat::Parquet
                | DatasetFormat::ImageZip => Self::Csv,
            }),
            Ok(ExportFormat::Parquet) => Err(TrustError::InvalidArgument(
                "format EXPORT_FORMAT_PARQUET is not available yet; ask for CSV or JSONL"
                    .to_owned(),
            )),
            Err(_) => Err(TrustError::InvalidArgument(
                "format is not an ExportFormat".to_owned(),
            )),
        }
    }

    /// Media type of the file.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv",
            Self::Jsonl => "application/jsonl",
        }
    }

    /// File name extension.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
        }
    }
}

/// `ISSUE_TYPE_NEAR_DUPLICATE` → `near_duplicate`.
fn issue_column(issue_type: i32) -> String {
    IssueType::try_from(issue_type)
        .map(|t| t.as_str_name())
        .unwrap_or("ISSUE_TYPE_UNSPECIFIED")
        .trim_start_matches("ISSUE_TYPE_")
        .to_ascii_lowercase()
}

/// The `action` column's value of a correction.
fn action_name(correction: Option<&Correction>) -> &'static str {
    match correction.map(Correction::action) {
        None | Some(CorrectionAction::Unspecified) => "",
        Some(CorrectionAction::Keep) => "keep",
        Some(CorrectionAction::Relabel) => "relabel",
        Some(CorrectionAction::Exclude) => "exclude",
        Some(CorrectionAction::NeedsReview) => "needs_review",
    }
}

/// A report's cleanset over its dataset: which rows are kept and what each row's cells are.
#[derive(Debug)]
pub(crate) struct Cleanset {
    format: Format,
    /// The dataset's columns, in file order (the columns read from ingest).
    columns: Vec<String>,
    /// Position of `label_column` among `columns`, when corrections replace it in place.
    label: Option<usize>,
    /// The report's results by row index.
    results: HashMap<u64, RowResult>,
    corrections: HashMap<u64, Correction>,
    /// Issue types of the results and the column a modality check looked at, in the results' order.
    issues: Vec<(i32, String)>,
    apply: bool,
    keep_excluded: bool,
    quality: bool,
}

impl Cleanset {
    /// The cleanset of `req` over a dataset with `columns`, from the report's `results` and its
    /// `corrections`.
    ///
    /// # Errors
    ///
    /// INVALID_ARGUMENT when `label_column` is not one of `columns`.
    pub(crate) fn new(
        req: &ExportCleansetRequest,
        format: Format,
        columns: Vec<String>,
        results: Vec<RowResult>,
        corrections: Vec<Correction>,
    ) -> Result<Self, TrustError> {
        let label = match req.label_column.as_str() {
            "" => None,
            name => Some(columns.iter().position(|c| c == name).ok_or_else(|| {
                TrustError::InvalidArgument(
                    "label_column is not a column of the dataset".to_owned(),
                )
            })?),
        };
        let issues = results
            .first()
            .map(|r| {
                r.issues
                    .iter()
                    .map(|i| (i.issue_type, i.column.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            format,
            columns,
            label: label.filter(|_| req.apply_corrections),
            results: results.into_iter().map(|r| (r.row_index, r)).collect(),
            corrections: corrections.into_iter().map(|c| (c.row_index, c)).collect(),
            issues,
            apply: req.apply_corrections,
            keep_excluded: req.keep_excluded,
            quality: req.include_quality_columns,
        })
    }

    /// Every output column's name, in order.
    pub(crate) fn header(&self) -> Vec<String> {
        let mut header = self.columns.clone();
        if self.apply {
            if self.label.is_none() {
                header.push("corrected_label".to_owned());
            }
            header.push("action".to_owned());
        }
        if self.quality {
            header.extend(
                [
                    "row_index",
                    "trust_score",
                    "given_label",
                    "suggested_label",
                    "suggested_label_confidence",
                    "near_duplicate_cluster_id",
                ]
                .map(str::to_owned),
            );
            for (issue, column) in &self.issues {
                let name = issue_column(*issue);
                // A modality check's columns are named after the column it looked at.
                let prefix = if column.is_empty() {
                    String::new()
                } else {
                    format!("{column}.")
                };
                header.push(format!("{prefix}is_{name}"));
                header.push(format!("{prefix}{name}_quality"));
            }
        }
        header
    }

    /// The start of the file: the header row of a CSV, nothing for JSON Lines.
    ///
    /// # Errors
    ///
    /// [`TrustError::Corrupt`] if the header cannot be written (never for an in-memory writer).
    pub(crate) fn preamble(&self) -> Result<Vec<u8>, TrustError> {
        match self.format {
            Format::Csv => {
                let mut writer = csv::Writer::from_writer(Vec::new());
                writer
                    .write_record(self.header())
                    .map_err(|_| TrustError::Corrupt("cleanset header"))?;
                writer
                    .into_inner()
                    .map_err(|_| TrustError::Corrupt("cleanset header"))
            }
            Format::Jsonl => Ok(Vec::new()),
        }
    }

    /// The output cells of dataset row `index` with cells `cells`, or `None` if the cleanset drops
    /// it.
    fn row(&self, index: u64, mut cells: Vec<Value>) -> Option<Vec<Value>> {
        let correction = self.corrections.get(&index);
        let result = self.results.get(&index);
        if self.apply {
            let action = correction.map(Correction::action);
            if action == Some(CorrectionAction::Exclude) && !self.keep_excluded {
                return None;
            }
            let relabel = correction
                .filter(|_| action == Some(CorrectionAction::Relabel))
                .map(|c| c.corrected_label.clone());
            match self.label {
                Some(label) => {
                    if let Some(relabel) = relabel {
                        cells[label] = Value::String(relabel);
                    }
                }
                None => cells.push(
                    relabel
                        .or_else(|| result.map(|r| r.given_label.clone()))
                        .map_or(Value::Null, Value::String),
                ),
            }
            cells.push(Value::String(action_name(correction).to_owned()));
        }
        if self.quality {
            cells.push(Value::from(index));
            match result {
                Some(r) => {
                    cells.push(float(r.trust_score));
                    cells.push(Value::String(r.given_label.clone()));
                    cells.push(Value::String(r.suggested_label.clone()));
                    cells.push(float(r.suggested_label_confidence));
                    cells.push(Value::from(r.near_duplicate_cluster_id));
                    for (issue, column) in &self.issues {
                        match r
                            .issues
                            .iter()
                            .find(|i| i.issue_type == *issue && i.column == *column)
                        {
                            Some(i) => {
                                cells.push(Value::Bool(i.flagged));
                                cells.push(float(i.quality_score));
                            }
                            None => cells.extend([Value::Null, Value::Null]),
                        }
                    }
                }
                // A row the analysis could not use has no results.
                None => cells.extend((0..5 + 2 * self.issues.len()).map(|_| Value::Null)),
            }
        }
        Some(cells)
    }

    /// Renders `batch` (the dataset's columns, as read) into the file's next bytes.
    ///
    /// # Errors
    ///
    /// [`TrustError::Corrupt`] when the batch lacks one of the columns or a column's values.
    pub(crate) fn render(&self, batch: &RowBatch) -> Result<Vec<u8>, TrustError> {
        let by_name: HashMap<&str, &ColumnData> =
            batch.columns.iter().map(|c| (c.name.as_str(), c)).collect();
        let data = self
            .columns
            .iter()
            .map(|name| by_name.get(name.as_str()).copied())
            .collect::<Option<Vec<_>>>()
            .ok_or(TrustError::Corrupt("a row batch lacks a column"))?;
        let header = self.header();
        let mut csv = csv::Writer::from_writer(Vec::new());
        let mut jsonl = Vec::new();
        for offset in 0..batch.row_count as usize {
            let cells = data
                .iter()
                .map(|column| cell(column, offset))
                .collect::<Option<Vec<_>>>()
                .ok_or(TrustError::Corrupt("a row batch is short of values"))?;
            let Some(cells) = self.row(batch.start_row + offset as u64, cells) else {
                continue;
            };
            match self.format {
                Format::Csv => csv
                    .write_record(cells.iter().map(csv_text))
                    .map_err(|_| TrustError::Corrupt("a cleanset row"))?,
                Format::Jsonl => json_line(&mut jsonl, &header, &cells)?,
            }
        }
        match self.format {
            Format::Csv => csv
                .into_inner()
                .map_err(|_| TrustError::Corrupt("a cleanset row")),
            Format::Jsonl => Ok(jsonl),
        }
    }
}

/// A JSON number, or null for NaN and infinities.
fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Row `row` of `column` as a JSON value (null when missing); `None` past its values.
fn cell(column: &ColumnData, row: usize) -> Option<Value> {
    if column.valid.get(row) == Some(&false) {
        return Some(Value::Null);
    }
    Some(match column.values.as_ref()? {
        Values::Strings(v) => Value::String(v.values.get(row)?.clone()),
        Values::Integers(v) => Value::from(*v.values.get(row)?),
        Values::Floats(v) => float(*v.values.get(row)?),
        Values::Booleans(v) => Value::Bool(*v.values.get(row)?),
        Values::DatetimesMicros(v) => {
            let micros = i128::from(*v.values.get(row)?);
            time::OffsetDateTime::from_unix_timestamp_nanos(micros * 1000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map_or(Value::Null, Value::String)
        }
        Values::Images(v) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(v.values.get(row)?))
        }
        Values::FloatLists(v) => {
            let n = v.list_length as usize;
            let list = v.values.get(row * n..(row + 1) * n)?;
            Value::Array(list.iter().map(|x| float(f64::from(*x))).collect())
        }
        Values::StringLists(v) => Value::Array(
            v.values
                .get(row)?
                .values
                .iter()
                .cloned()
                .map(Value::String)
                .collect(),
        ),
    })
}

/// A cell as CSV text: strings as they are, null empty, lists as JSON.
fn csv_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

/// Appends one JSON object (keys in `header` order) and a newline to `out`.
fn json_line(out: &mut Vec<u8>, header: &[String], cells: &[Value]) -> Result<(), TrustError> {
    out.push(b'{');
    for (i, (name, value)) in header.iter().zip(cells).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, name)
            .map_err(|_| TrustError::Corrupt("a cleanset row"))?;
        out.push(b':');
        serde_json::to_writer(&mut *out, value)
            .map_err(|_| TrustError::Corrupt("a cleanset row"))?;
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// The response stream: a first message with the media type, the file name and the preamble,
/// then each batch from `rows` rendered, in chunks of at most [`CHUNK_BYTES`]. A failure midway
/// ends the stream with an error status (internal details only in the log).
pub(crate) fn stream(
    cleanset: Cleanset,
    filename: String,
    mut rows: Streaming<ReadRowsResponse>,
) -> Result<ExportStream, TrustError> {
    let first = ExportCleansetResponse {
        content_type: cleanset.format.content_type().to_owned(),
        filename,
        chunk: cleanset.preamble()?,
    };
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        loop {
            let batch = match rows.message().await {
                Ok(Some(message)) => message.batch.unwrap_or_default(),
                Ok(None) => return,
                Err(status) => {
                    let error = ingest_error(&status);
                    tracing::warn!(
                        error = %error,
                        "Reading the dataset failed during a cleanset export."
                    );
                    let _closed = tx.send(Err(Status::from(error))).await;
                    return;
                }
            };
            let bytes = match cleanset.render(&batch) {
                Ok(bytes) => bytes,
                Err(error) => {
                    let _closed = tx.send(Err(Status::from(error))).await;
                    return;
                }
            };
            for chunk in bytes.chunks(CHUNK_BYTES) {
                let message = ExportCleansetResponse {
                    chunk: chunk.to_vec(),
                    ..ExportCleansetResponse::default()
                };
                if tx.send(Ok(message)).await.is_err() {
                    // The client went away.
                    return;
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

#[cfg(test)]
mod tests {
    use trustmesh_proto::v1::{Int64Values, RowIssue, StringValues};

    use super::*;

    fn batch() -> RowBatch {
        RowBatch {
            start_row: 0,
            row_count: 3,
            columns: vec![
                ColumnData {
                    name: "id".to_owned(),
                    valid: vec![],
                    values: Some(Values::Integers(Int64Values {
                        values: vec![10, 11, 12],
                    })),
                },
                ColumnData {
                    name: "label".to_owned(),
                    valid: vec![true, true, false],
                    values: Some(Values::Strings(StringValues {
                        values: vec!["a".to_owned(), "b,c".to_owned(), String::new()],
                    })),
                },
            ],
        }
    }

    fn results() -> Vec<RowResult> {
        (0..3)
            .map(|i| RowResult {
                row_index: i,
                trust_score: 0.5,
                given_label: "a".to_owned(),
                suggested_label: "b".to_owned(),
                issues: vec![RowIssue {
                    issue_type: IssueType::Label.into(),
                    flagged: i == 1,
                    quality_score: 0.25,
                    column: String::new(),
                }],
                ..RowResult::default()
            })
            .collect()
    }

    fn corrections() -> Vec<Correction> {
        vec![
            Correction {
                row_index: 0,
                action: CorrectionAction::Relabel.into(),
                corrected_label: "z".to_owned(),
                update_time: None,
            },
            Correction {
                row_index: 2,
                action: CorrectionAction::Exclude.into(),
                ..Correction::default()
            },
        ]
    }

    fn columns() -> Vec<String> {
        vec!["id".to_owned(), "label".to_owned()]
    }

    #[test]
    fn corrections_relabel_in_place_and_drop_excluded_rows() {
        let req = ExportCleansetRequest {
            apply_corrections: true,
            label_column: "label".to_owned(),
            ..ExportCleansetRequest::default()
        };
        let set = Cleanset::new(&req, Format::Csv, columns(), results(), corrections()).unwrap();
        let mut out = set.preamble().unwrap();
        out.extend(set.render(&batch()).unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,label,action\n10,z,relabel\n11,\"b,c\",\n"
        );
    }

    #[test]
    fn without_a_label_column_corrected_labels_get_their_own_column_and_quality_columns_follow() {
        let req = ExportCleansetRequest {
            apply_corrections: true,
            keep_excluded: true,
            include_quality_columns: true,
            ..ExportCleansetRequest::default()
        };
        let set = Cleanset::new(&req, Format::Jsonl, columns(), results(), corrections()).unwrap();
        assert!(set.preamble().unwrap().is_empty());
        let out = String::from_utf8(set.render(&batch()).unwrap()).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["label"], "a");
        assert_eq!(lines[0]["corrected_label"], "z");
        assert_eq!(lines[1]["corrected_label"], "a");
        assert_eq!(lines[2]["action"], "exclude");
        assert_eq!(lines[2]["label"], Value::Null);
        assert_eq!(lines[1]["is_label"], true);
        assert_eq!(lines[1]["label_quality"], 0.25);
        assert_eq!(lines[1]["row_index"], 1);
        assert!(out.starts_with("{\"id\":10,\"label\":\"a\",\"corrected_label\""));
    }

    #[test]
    fn a_missing_label_column_and_parquet_are_invalid_arguments() {
        let req = ExportCleansetRequest {
            label_column: "nope".to_owned(),
            ..ExportCleansetRequest::default()
        };
        assert!(matches!(
            Cleanset::new(&req, Format::Csv, columns(), results(), vec![]),
            Err(TrustError::InvalidArgument(_))
        ));
        assert!(Format::choose(ExportFormat::Parquet.into(), DatasetFormat::Csv).is_err());
        assert_eq!(
            Format::choose(ExportFormat::Unspecified.into(), DatasetFormat::Jsonl).unwrap(),
            Format::Jsonl
        );
    }
}
