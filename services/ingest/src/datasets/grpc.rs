//! `DatasetService`: Create, Upload (client-streaming), Get, List and ReadRows (server-streaming).
//!
//! Every call comes through `trustmesh_auth::Authenticator` (no valid API key: UNAUTHENTICATED) and
//! is checked with [`Principal::require`] before anything is read: `datasets:write` for Create and
//! Upload, `datasets:read` for Get, List and ReadRows. A key of another tenant gets NOT_FOUND, word
//! for word what a missing dataset gets.
//!
//! An upload that would take the tenant's datasets past its stored-bytes quota
//! (`max_storage_bytes`, `trustmesh_auth::quota`) is refused with RESOURCE_EXHAUSTED and a
//! `QuotaFailure`, by its declared size before any chunk is read, by the bytes received after, and
//! last when it is recorded, under a per-tenant lock, so uploads finishing together cannot exceed it
//! between them. Stored bytes are the raw uploads' sizes (the parsed rows beside them not counted).
//!
//! Every call is audited (allowed, denied or failed) through the outbox on
//! `tm.<tenant>.audit.ingest` of the tenant the resource name names, that is the owner's log even
//! when another tenant's key is refused; the actor is the calling key.
//!
//! Service-to-service reads (`analysis` and `trust-scoring` calling `ReadRows` or `GetDataset`)
//! authenticate like any client, for now: the caller forwards the bearer key of the request that
//! started the work, so the read needs `datasets:read` on that tenant, stops working as soon as the
//! key is revoked or expires, and is audited as that key's access.
// NOTE: there is no service identity in `libs/auth` yet; when one lands (mTLS identities acting for a
// tenant), ReadRows should accept it instead of a forwarded user key.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use prost::Message as _;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, Streaming};
use trustmesh_auth::{EffectiveQuota, PageError, PageToken, Principal, Scope, page_size};
use trustmesh_bus::audit::AuditEntry;
use trustmesh_events::{Service, TenantId};
use trustmesh_proto::v1::column_data::Values;
use trustmesh_proto::v1::dataset_service_server::DatasetService;
use trustmesh_proto::v1::upload_dataset_request::Payload;
use trustmesh_proto::v1::{
    BoolValues, BytesValues, ColumnData, CreateDatasetRequest, Dataset, DatasetFormat,
    DatasetState, DoubleValues, GetDatasetRequest, Int64Values, ListDatasetsRequest,
    ListDatasetsResponse, ReadRowsRequest, ReadRowsResponse, RowBatch, StringValues,
    UploadDatasetRequest, UploadMetadata,
};
use trustmesh_service_kit::{call_entry, call_entry_for, request_id, settle};
use trustmesh_store::{EncryptedObjects, TenantScope};
use uuid::Uuid;

use super::csv::{self, CsvOptions, Rejection};
use super::data_uri::decode_image_uris;
use super::pipeline::{PieceReader, UploadSink, put_rows};
use super::repo::{DatasetRepo, DatasetRow, FinishedUpload, state};
use super::{DatasetName, SealedMeta, SealedUpload, StoredRows, parse_parent, schema};
use super::{images, jsonl, parquet};
use crate::error::IngestError;
use crate::settings::Limits;

/// Default and largest `ListDatasets` page.
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 1000;
/// Default and largest `ReadRows` batch.
const BATCH_DEFAULT: u64 = 4096;
const BATCH_MAX: u64 = 65536;

/// The `DatasetService` handler.
#[derive(Debug, Clone)]
pub(crate) struct DatasetsHandler {
    repo: DatasetRepo,
    objects: EncryptedObjects,
    limits: Limits,
}

type ReadRowsStream = Pin<Box<dyn Stream<Item = Result<ReadRowsResponse, Status>> + Send>>;

impl DatasetsHandler {
    pub(crate) fn new(repo: DatasetRepo, objects: EncryptedObjects, limits: Limits) -> Self {
        Self {
            repo,
            objects,
            limits,
        }
    }

    /// Audits the call and turns the result into the RPC's answer ([`settle`]).
    async fn settle<T>(
        &self,
        entry: Option<AuditEntry>,
        result: Result<(T, u64), IngestError>,
    ) -> Result<T, Status> {
        settle(entry, result, |entry| self.repo.audit(entry)).await
    }

    async fn to_proto(&self, scope: &TenantScope, row: DatasetRow) -> Result<Dataset, IngestError> {
        let meta = self.repo.open_meta(scope, &row).await?;
        let upload = self
            .repo
            .open_upload(scope, &row)
            .await?
            .unwrap_or_default();
        Ok(Dataset {
            name: format!("tenants/{}/datasets/{}", scope.as_str(), row.id),
            display_name: meta.display_name,
            description: meta.description,
            state: i32::from(row.state),
            format: i32::from(row.format),
            filename: upload.filename,
            size_bytes: u64::try_from(row.size_bytes).unwrap_or_default(),
            sha256: upload.sha256,
            row_count: u64::try_from(row.row_count).unwrap_or_default(),
            schema: upload.schema,
            modality: i32::from(row.modality),
            error: None,
            create_time: Some(timestamp(row.created_at)),
            update_time: Some(timestamp(row.updated_at)),
        })
    }

    async fn create(
        &self,
        tenant: &TenantId,
        req: CreateDatasetRequest,
    ) -> Result<Dataset, IngestError> {
        let request_id = if req.request_id.is_empty() {
            None
        } else {
            Some(Uuid::try_parse(&req.request_id).map_err(|_| {
                IngestError::InvalidArgument("request_id must be a UUID".to_owned())
            })?)
        };
        let scope = TenantScope::new(tenant.clone());
        let meta = SealedMeta {
            display_name: req.display_name,
            description: req.description,
        };
        let row = self.repo.create(&scope, request_id, &meta).await?;
        self.to_proto(&scope, row).await
    }

    async fn get(&self, name: &DatasetName) -> Result<Dataset, IngestError> {
        let scope = TenantScope::new(name.tenant.clone());
        let row = self
            .repo
            .get(&scope, name.id)
            .await?
            .ok_or_else(|| not_found(name))?;
        self.to_proto(&scope, row).await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        req: &ListDatasetsRequest,
    ) -> Result<ListDatasetsResponse, IngestError> {
        let size = page_size(req.page_size, PAGE_DEFAULT, PAGE_MAX)?;
        let state = (req.state != 0).then(|| i16::try_from(req.state).unwrap_or(-1));
        let query = format!("state={}", req.state);
        let before = PageToken::decode(&req.page_token, tenant, &query)?
            .map(|cursor| Uuid::try_parse(&cursor))
            .transpose()
            .map_err(|_| PageError::InvalidToken)?;
        let scope = TenantScope::new(tenant.clone());
        let limit = i64::try_from(size + 1).unwrap_or(i64::MAX);
        let mut rows = self.repo.list(&scope, state, before, limit).await?;
        let more = rows.len() > size;
        rows.truncate(size);
        let next_page_token = match rows.last() {
            Some(last) if more => PageToken::encode(tenant, &query, &last.id.to_string()),
            Some(_) | None => String::new(),
        };
        let mut datasets = Vec::with_capacity(rows.len());
        for row in rows {
            datasets.push(self.to_proto(&scope, row).await?);
        }
        Ok(ListDatasetsResponse {
            datasets,
            next_page_token,
        })
    }

    /// Receives, checks `principal` may write the dataset, validates, parses and stores an upload.
    /// Nothing is stored unless all of it is valid; `resource` is set as soon as the metadata names
    /// the dataset.
    async fn upload(
        &self,
        principal: &Principal,
        mut stream: Streaming<UploadDatasetRequest>,
        request_id: &str,
        resource: &mut Option<String>,
        quota: Option<&EffectiveQuota>,
    ) -> Result<(Dataset, u64), IngestError> {
        let first = stream
            .message()
            .await
            .map_err(IngestError::StreamBroken)?
            .and_then(|m| m.payload);
        let Some(Payload::Metadata(metadata)) = first else {
            return Err(IngestError::InvalidArgument(
                "the first message of an upload must carry its metadata".to_owned(),
            ));
        };
        *resource = Some(metadata.dataset.clone());
        principal.require(Scope::DatasetsWrite, "metadata.dataset", &metadata.dataset)?;
        let dataset = DatasetName::parse(&metadata.dataset)?;
        let format = self.check_metadata(&metadata)?;
        let scope = TenantScope::new(dataset.tenant.clone());
        let row = self
            .repo
            .get(&scope, dataset.id)
            .await?
            .ok_or_else(|| not_found(&dataset))?;
        if row.state != state(DatasetState::AwaitingUpload) {
            return Err(IngestError::FailedPrecondition(
                "the dataset is not awaiting an upload",
            ));
        }

        // The tenant's stored-bytes quota: the declared size first, then what actually arrives.
        let stored = match quota {
            Some(quota) => {
                let stored = self.repo.stored_bytes(&scope).await?;
                quota.admit_bytes(stored, metadata.size_bytes)?;
                Some((quota, stored))
            }
            None => None,
        };
        // The upload is stored and parsed as it arrives, never held whole (see `pipeline`).
        let limits = self.limits;
        let overrides = metadata.column_overrides.clone();
        let id_column = metadata.id_column.clone();
        let (raw_key, rows_key) = (dataset.raw_key()?, dataset.rows_key()?);
        let parse = move |reader: PieceReader| {
            let (rows, columns) = (limits.max_rows, limits.max_columns);
            match format {
                Format::Csv(options) => csv::parse(reader, options, rows, columns),
                Format::Jsonl => jsonl::parse(reader, rows, columns).and_then(decode_image_uris),
                Format::Parquet => parquet::parse(reader.into_bytes()?, rows, columns),
                Format::ImageZip => {
                    let max_bytes = limits.max_upload_bytes;
                    let bytes = reader.into_bytes()?;
                    return images::parse(&bytes, rows, columns, max_bytes, &overrides, &id_column);
                }
            }
            .and_then(|table| schema::infer(table, &overrides, &id_column))
        };
        let mut sink = UploadSink::start(&self.objects, &scope, raw_key.clone(), rejected, parse);
        let received = async {
            let mut hasher = Sha256::new();
            while let Some(message) = stream.message().await.map_err(IngestError::StreamBroken)? {
                let Some(Payload::Chunk(chunk)) = message.payload else {
                    return Err(IngestError::InvalidArgument(
                        "every message after the first must carry a chunk".to_owned(),
                    ));
                };
                let received = sink.received() + chunk.len() as u64;
                if received > self.limits.max_upload_bytes {
                    return Err(self.too_large());
                }
                if let Some((quota, stored)) = stored {
                    quota.admit_bytes(stored, received)?;
                }
                hasher.update(&chunk);
                sink.push(Bytes::from(chunk)).await?;
            }
            let sha256 = hex_lower(&hasher.finalize());
            if !metadata.sha256.is_empty() && !metadata.sha256.eq_ignore_ascii_case(&sha256) {
                return Err(IngestError::DigestMismatch);
            }
            Ok(sha256)
        }
        .await;
        let sha256 = match received {
            Ok(sha256) => sha256,
            Err(error) => {
                sink.abort().await;
                return Err(error);
            }
        };
        let (inferred, raw) = sink.finish().await?;

        let size_bytes = raw.size;
        let row_count = inferred
            .columns
            .first()
            .map_or(0, |c| value_count(c) as u64);
        let column_count = u32::try_from(inferred.columns.len()).unwrap_or(u32::MAX);
        let stored = async {
            put_rows(
                &self.objects,
                &scope,
                &rows_key,
                row_count,
                inferred.columns,
            )
            .await?;
            let mut entry = call_entry(
                Service::Ingest,
                principal,
                dataset.tenant.clone(),
                "datasets.upload",
                &dataset.to_string(),
                request_id,
            );
            entry.records_affected = row_count;
            let upload = FinishedUpload {
                format: i32::from(metadata.format()),
                size_bytes,
                row_count,
                column_count,
                modality: i32::from(inferred.modality),
                upload: SealedUpload {
                    filename: metadata.filename,
                    sha256,
                    schema: Some(inferred.schema),
                },
            };
            self.repo
                .finish_upload(&dataset, upload, quota, request_id, entry)
                .await
        }
        .await;
        match stored {
            Ok(row) => Ok((self.to_proto(&scope, row).await?, row_count)),
            Err(error) => {
                for key in [&raw_key, &rows_key] {
                    if let Err(e) = self.objects.delete(&scope, key).await {
                        tracing::warn!(error = %e, "Could not remove an object of a failed upload.");
                    }
                }
                Err(error)
            }
        }
    }

    fn too_large(&self) -> IngestError {
        IngestError::TooLarge(format!(
            "the upload exceeds the limit of {} bytes",
            self.limits.max_upload_bytes
        ))
    }

    fn check_metadata(&self, metadata: &UploadMetadata) -> Result<Format, IngestError> {
        let format = match metadata.format() {
            DatasetFormat::Csv => Format::Csv(csv_options(metadata)?),
            DatasetFormat::Jsonl => Format::Jsonl,
            DatasetFormat::Parquet => Format::Parquet,
            DatasetFormat::Unspecified => {
                return Err(IngestError::InvalidArgument(
                    "metadata.format is required".to_owned(),
                ));
            }
            DatasetFormat::ImageZip => Format::ImageZip,
        };
        let filename = metadata.filename.as_str();
        if filename.len() > 255
            || filename.contains(['/', '\\'])
            || filename == "."
            || filename == ".."
            || filename.chars().any(char::is_control)
        {
            return Err(IngestError::InvalidArgument(
                "metadata.filename must be a base name of at most 255 bytes".to_owned(),
            ));
        }
        if metadata.size_bytes > self.limits.max_upload_bytes {
            return Err(self.too_large());
        }
        Ok(format)
    }

    async fn read_rows(
        &self,
        name: &DatasetName,
        req: &ReadRowsRequest,
    ) -> Result<(Vec<ReadRowsResponse>, u64), IngestError> {
        let scope = TenantScope::new(name.tenant.clone());
        let row = self
            .repo
            .get(&scope, name.id)
            .await?
            .ok_or_else(|| not_found(name))?;
        if row.state != state(DatasetState::Ready) {
            return Err(IngestError::FailedPrecondition("the dataset is not READY"));
        }
        let plaintext = self.objects.get(&scope, &name.rows_key()?).await?;
        let stored = StoredRows::decode(plaintext)
            .map_err(|_| IngestError::Corrupt("stored dataset rows"))?;
        let selected: Vec<&ColumnData> = if req.columns.is_empty() {
            stored.columns.iter().collect()
        } else {
            req.columns
                .iter()
                .map(|wanted| {
                    stored
                        .columns
                        .iter()
                        .find(|c| &c.name == wanted)
                        .ok_or_else(|| {
                            IngestError::InvalidArgument(format!(
                                "column \"{wanted}\" is not in the dataset"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?
        };
        let total = stored.row_count;
        if req.start_row > total {
            return Err(IngestError::InvalidArgument(
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
        let mut responses = Vec::new();
        let mut from = req.start_row;
        while from < end {
            let to = from.saturating_add(batch).min(end);
            let columns = selected
                .iter()
                .map(|c| slice(c, from, to))
                .collect::<Result<_, _>>()?;
            responses.push(ReadRowsResponse {
                batch: Some(RowBatch {
                    start_row: from,
                    row_count: u32::try_from(to - from).unwrap_or(u32::MAX),
                    columns,
                }),
            });
            from = to;
        }
        Ok((responses, end - req.start_row))
    }
}

/// How to parse an upload.
#[derive(Debug, Clone, Copy)]
enum Format {
    Csv(CsvOptions),
    Jsonl,
    Parquet,
    /// A zip of images: one folder per class, or a table at its root naming them.
    ImageZip,
}

/// The call's error for a parser's rejection: TOO_LARGE for the limits, else the rejection.
fn rejected(rejection: Rejection) -> IngestError {
    match rejection.code {
        "TOO_MANY_ROWS"
        | "TOO_MANY_COLUMNS"
        | "ARCHIVE_TOO_MANY_FILES"
        | "ARCHIVE_TOO_LARGE"
        | "IMAGE_TOO_LARGE" => IngestError::TooLarge(rejection.to_string()),
        _ => IngestError::Rejected(rejection),
    }
}

fn csv_options(metadata: &UploadMetadata) -> Result<CsvOptions, IngestError> {
    let csv = metadata.csv.clone().unwrap_or_default();
    let delimiter = match csv.delimiter.as_bytes() {
        [] => b',',
        [d] if d.is_ascii() && !matches!(d, b'"' | b'\n' | b'\r') => *d,
        _ => {
            return Err(IngestError::InvalidArgument(
                "csv.delimiter must be one ASCII character other than a quote or newline"
                    .to_owned(),
            ));
        }
    };
    Ok(CsvOptions {
        delimiter,
        has_header: csv.has_header.unwrap_or(true),
    })
}

fn value_count(column: &ColumnData) -> usize {
    match &column.values {
        Some(Values::Strings(v)) => v.values.len(),
        Some(Values::Integers(v) | Values::DatetimesMicros(v)) => v.values.len(),
        Some(Values::Floats(v)) => v.values.len(),
        Some(Values::Booleans(v)) => v.values.len(),
        Some(Values::Images(v)) => v.values.len(),
        Some(Values::FloatLists(v)) => v.values.len() / (v.list_length.max(1) as usize),
        Some(Values::StringLists(v)) => v.values.len(),
        None => 0,
    }
}

/// Rows `from..to` of a stored column.
fn slice(column: &ColumnData, from: u64, to: u64) -> Result<ColumnData, IngestError> {
    let corrupt = || IngestError::Corrupt("stored column shorter than its row count");
    let range = usize::try_from(from).map_err(|_| corrupt())?
        ..usize::try_from(to).map_err(|_| corrupt())?;
    let values = match &column.values {
        Some(Values::Strings(v)) => Values::Strings(StringValues {
            values: v.values.get(range.clone()).ok_or_else(corrupt)?.to_vec(),
        }),
        Some(Values::Integers(v)) => Values::Integers(Int64Values {
            values: v.values.get(range.clone()).ok_or_else(corrupt)?.to_vec(),
        }),
        Some(Values::Floats(v)) => Values::Floats(DoubleValues {
            values: v.values.get(range.clone()).ok_or_else(corrupt)?.to_vec(),
        }),
        Some(Values::Booleans(v)) => Values::Booleans(BoolValues {
            values: v.values.get(range.clone()).ok_or_else(corrupt)?.to_vec(),
        }),
        Some(Values::Images(v)) => Values::Images(BytesValues {
            values: v.values.get(range.clone()).ok_or_else(corrupt)?.to_vec(),
        }),
        Some(Values::DatetimesMicros(_) | Values::FloatLists(_) | Values::StringLists(_))
        | None => {
            return Err(IngestError::Corrupt(
                "a stored column of a kind no upload yields",
            ));
        }
    };
    let valid = if column.valid.is_empty() {
        Vec::new()
    } else {
        column.valid.get(range).ok_or_else(corrupt)?.to_vec()
    };
    Ok(ColumnData {
        name: column.name.clone(),
        valid,
        values: Some(values),
    })
}

fn timestamp(t: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or_default(),
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// NOT_FOUND for dataset `name`.
fn not_found(name: &DatasetName) -> IngestError {
    IngestError::NotFound {
        resource: name.to_string(),
    }
}

#[tonic::async_trait]
impl DatasetService for DatasetsHandler {
    async fn create_dataset(
        &self,
        request: Request<CreateDatasetRequest>,
    ) -> Result<Response<Dataset>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request_id = request_id(&request);
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::Ingest,
            &principal,
            "datasets.create",
            &req.parent,
            &request_id,
        );
        let result = async {
            principal.require(Scope::DatasetsWrite, "parent", &req.parent)?;
            let tenant = parse_parent(&req.parent)?;
            self.create(&tenant, req).await.map(|d| (d, 1))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }

    async fn upload_dataset(
        &self,
        request: Request<Streaming<UploadDatasetRequest>>,
    ) -> Result<Response<Dataset>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request_id = request_id(&request);
        let quota = EffectiveQuota::of(&request).cloned();
        let mut resource = None;
        let result = self
            .upload(
                &principal,
                request.into_inner(),
                &request_id,
                &mut resource,
                quota.as_ref(),
            )
            .await;
        // A successful upload recorded its audit event with the dataset, in one transaction.
        let entry = match (&result, resource) {
            (Err(_), Some(resource)) => call_entry_for(
                Service::Ingest,
                &principal,
                "datasets.upload",
                &resource,
                &request_id,
            ),
            (Ok(_) | Err(_), _) => None,
        };
        self.settle(entry, result).await.map(Response::new)
    }

    async fn get_dataset(
        &self,
        request: Request<GetDatasetRequest>,
    ) -> Result<Response<Dataset>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request_id = request_id(&request);
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::Ingest,
            &principal,
            "datasets.get",
            &req.name,
            &request_id,
        );
        let result = async {
            principal.require_or_service(Scope::DatasetsRead, "name", &req.name)?;
            let name = DatasetName::parse(&req.name)?;
            self.get(&name).await.map(|d| (d, 1))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }

    async fn list_datasets(
        &self,
        request: Request<ListDatasetsRequest>,
    ) -> Result<Response<ListDatasetsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request_id = request_id(&request);
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::Ingest,
            &principal,
            "datasets.list",
            &req.parent,
            &request_id,
        );
        let result = async {
            principal.require(Scope::DatasetsRead, "parent", &req.parent)?;
            let tenant = parse_parent(&req.parent)?;
            let response = self.list(&tenant, &req).await?;
            let n = response.datasets.len() as u64;
            Ok((response, n))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }

    type ReadRowsStream = ReadRowsStream;

    async fn read_rows(
        &self,
        request: Request<ReadRowsRequest>,
    ) -> Result<Response<Self::ReadRowsStream>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request_id = request_id(&request);
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::Ingest,
            &principal,
            "datasets.rows.read",
            &req.name,
            &request_id,
        );
        let result = async {
            principal.require_or_service(Scope::DatasetsRead, "name", &req.name)?;
            let name = DatasetName::parse(&req.name)?;
            self.read_rows(&name, &req).await
        }
        .await;
        let responses = self.settle(entry, result).await?;
        let stream: ReadRowsStream = Box::pin(tokio_stream::iter(responses.into_iter().map(Ok)));
        Ok(Response::new(stream))
    }
}
