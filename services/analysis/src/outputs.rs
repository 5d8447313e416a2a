//! A job's model outputs: the plaintext of its encrypted `outputs` object, and how
//! `GetModelOutputs` slices it into a header and batches. The modality checks' flags and scores go
//! with every batch, whatever kinds were asked for.

use trustmesh_proto::v1::get_model_outputs_response::Payload;
use trustmesh_proto::v1::{
    GetModelOutputsRequest, GetModelOutputsResponse, ModalityCheck, ModelMetrics, ModelOutputKind,
    ModelOutputsBatch, ModelOutputsHeader, ModelSummary,
};
use trustmesh_store::{EncryptedError, ObjectKey};
use uuid::Uuid;

use crate::error::AnalysisError;

/// Default and largest `GetModelOutputs` batch.
const BATCH_DEFAULT: u64 = 4096;
const BATCH_MAX: u64 = 65536;

/// What an analysis produced, stored encrypted (class names, labels and row ids are customer
/// content).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StoredOutputs {
    /// Rows.
    #[prost(uint64, tag = "1")]
    pub(crate) row_count: u64,
    /// Class names by class index.
    #[prost(string, repeated, tag = "2")]
    pub(crate) class_names: Vec<String>,
    /// Given labels as class indices, one per row.
    #[prost(int32, repeated, tag = "3")]
    pub(crate) labels: Vec<i32>,
    /// Out-of-sample predicted probabilities, row-major.
    #[prost(float, repeated, tag = "4")]
    pub(crate) pred_probs: Vec<f32>,
    /// Feature columns per row.
    #[prost(uint32, tag = "5")]
    pub(crate) embedding_dim: u32,
    /// The detectors' features, row-major, NaN where missing: the numeric columns, or without any
    /// the models' dense features.
    #[prost(float, repeated, tag = "6")]
    pub(crate) embeddings: Vec<f32>,
    /// Out-of-sample model quality.
    #[prost(message, optional, tag = "7")]
    pub(crate) metrics: Option<ModelMetrics>,
    /// Issue types asked for.
    #[prost(int32, repeated, tag = "8")]
    pub(crate) issue_types: Vec<i32>,
    /// Task (`trustmesh.v1.TaskType`).
    #[prost(int32, tag = "9")]
    pub(crate) task_type: i32,
    /// Row ids (the id column's values, or the row index), one per row; empty in outputs stored
    /// before row ids were kept.
    #[prost(string, repeated, tag = "10")]
    pub(crate) row_ids: Vec<String>,
    /// The models behind `pred_probs` and their cross-validated quality; none in outputs stored
    /// before AutoML trained them.
    #[prost(message, optional, tag = "11")]
    pub(crate) model_summary: Option<ModelSummary>,
    /// The image and text checks that ran (none in outputs stored before they did).
    #[prost(message, repeated, tag = "12")]
    pub(crate) modality_checks: Vec<ModalityCheck>,
    /// Their flags, `modality_checks.len()` per row, row-major.
    #[prost(bool, repeated, tag = "13")]
    pub(crate) modality_flags: Vec<bool>,
    /// Their scores matching `modality_flags`, NaN where the row was not analyzed.
    #[prost(double, repeated, tag = "14")]
    pub(crate) modality_scores: Vec<f64>,
    /// Rows whose cell could not be analyzed (an unreadable image), ascending.
    #[prost(uint64, repeated, tag = "15")]
    pub(crate) not_analyzed_rows: Vec<u64>,
    /// Why, matching `not_analyzed_rows`.
    #[prost(string, repeated, tag = "16")]
    pub(crate) not_analyzed_reasons: Vec<String>,
}

/// The object key of job `id`'s outputs.
pub(crate) fn outputs_key(id: Uuid) -> Result<ObjectKey, AnalysisError> {
    ObjectKey::new(format!("jobs/{id}/outputs"))
        .map_err(|e| AnalysisError::Objects(EncryptedError::InvalidObjectId(e)))
}

fn rows_of<T: Clone>(values: &[T], width: usize, from: usize, to: usize) -> Vec<T> {
    values
        .get(from * width..to * width)
        .map(<[T]>::to_vec)
        .unwrap_or_default()
}

/// The header and batches answering `req` for `stored`, an analysis of `dataset`.
pub(crate) fn responses(
    stored: &StoredOutputs,
    dataset: String,
    req: &GetModelOutputsRequest,
) -> Result<Vec<GetModelOutputsResponse>, AnalysisError> {
    let wants = |kind: ModelOutputKind| req.kinds.is_empty() || req.kinds.contains(&kind.into());
    let total = stored.row_count;
    if req.start_row > total {
        return Err(AnalysisError::InvalidArgument(
            "start_row is past the last row".to_owned(),
        ));
    }
    let end = match req.row_count {
        0 => total,
        n => req.start_row.saturating_add(n).min(total),
    };
    let batch = match u64::from(req.batch_rows) {
        0 => BATCH_DEFAULT,
        n => n.min(BATCH_MAX),
    };
    let k = stored.class_names.len();
    let checks = stored.modality_checks.len();
    let dim = usize::try_from(stored.embedding_dim).unwrap_or_default();
    let with_embeddings = wants(ModelOutputKind::Embeddings);
    let mut responses = vec![GetModelOutputsResponse {
        payload: Some(Payload::Header(ModelOutputsHeader {
            dataset,
            task_type: stored.task_type,
            row_count: total,
            class_names: stored.class_names.clone(),
            embedding_dim: if with_embeddings {
                stored.embedding_dim
            } else {
                0
            },
            knn_k: 0,
            metrics: stored.metrics.clone(),
            issue_types: stored.issue_types.clone(),
            not_analyzed_rows: stored.not_analyzed_rows.clone(),
            model_summary: stored.model_summary.clone(),
            not_analyzed_reasons: stored.not_analyzed_reasons.clone(),
            modality_checks: stored.modality_checks.clone(),
        })),
    }];
    let as_index = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let mut from = req.start_row;
    while from < end {
        let to = from.saturating_add(batch).min(end);
        let (a, b) = (as_index(from), as_index(to));
        responses.push(GetModelOutputsResponse {
            payload: Some(Payload::Batch(ModelOutputsBatch {
                start_row: from,
                row_count: u32::try_from(to - from).unwrap_or(u32::MAX),
                pred_probs: if wants(ModelOutputKind::PredProbs) {
                    rows_of(&stored.pred_probs, k, a, b)
                } else {
                    Vec::new()
                },
                embeddings: if with_embeddings {
                    rows_of(&stored.embeddings, dim, a, b)
                } else {
                    Vec::new()
                },
                labels: if wants(ModelOutputKind::Labels) {
                    rows_of(&stored.labels, 1, a, b)
                } else {
                    Vec::new()
                },
                row_ids: if wants(ModelOutputKind::RowIds) {
                    rows_of(&stored.row_ids, 1, a, b)
                } else {
                    Vec::new()
                },
                modality_flags: rows_of(&stored.modality_flags, checks, a, b),
                modality_scores: rows_of(&stored.modality_scores, checks, a, b),
                ..ModelOutputsBatch::default()
            })),
        });
        from = to;
    }
    Ok(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_the_requested_rows_and_kinds() {
        let stored = StoredOutputs {
            row_count: 5,
            class_names: vec!["a".into(), "b".into()],
            labels: vec![0, 1, 0, 1, 1],
            pred_probs: (0..10)
                .map(|i| f32::from(u8::try_from(i).unwrap()))
                .collect(),
            embedding_dim: 1,
            embeddings: vec![1.0, 2.0, 3.0, 4.0, 5.0],
            row_ids: ["r0", "r1", "r2", "r3", "r4"].map(String::from).to_vec(),
            ..StoredOutputs::default()
        };
        let req = GetModelOutputsRequest {
            start_row: 1,
            batch_rows: 2,
            kinds: vec![ModelOutputKind::PredProbs.into()],
            ..GetModelOutputsRequest::default()
        };
        let out = responses(&stored, "d".into(), &req).unwrap();
        assert_eq!(out.len(), 3, "a header and two batches");
        let Some(Payload::Batch(first)) = &out[1].payload else {
            panic!("a batch follows the header");
        };
        assert_eq!((first.start_row, first.row_count), (1, 2));
        assert_eq!(first.pred_probs, [2.0, 3.0, 4.0, 5.0]);
        assert!(first.labels.is_empty() && first.embeddings.is_empty());
        assert!(first.row_ids.is_empty(), "row ids only when asked for");
        let with_ids = GetModelOutputsRequest {
            start_row: 3,
            kinds: vec![ModelOutputKind::RowIds.into()],
            ..GetModelOutputsRequest::default()
        };
        let out = responses(&stored, "d".into(), &with_ids).unwrap();
        let Some(Payload::Batch(last)) = &out[1].payload else {
            panic!("a batch follows the header");
        };
        assert_eq!(last.row_ids, ["r3", "r4"]);
        assert!(last.pred_probs.is_empty());
        let everything =
            responses(&stored, "d".into(), &GetModelOutputsRequest::default()).unwrap();
        let Some(Payload::Batch(all)) = &everything[1].payload else {
            panic!("a batch follows the header");
        };
        assert_eq!(all.row_ids.len(), 5, "empty kinds means every output");
        let past = GetModelOutputsRequest {
            start_row: 6,
            ..GetModelOutputsRequest::default()
        };
        assert!(responses(&stored, "d".into(), &past).is_err());
    }
}
