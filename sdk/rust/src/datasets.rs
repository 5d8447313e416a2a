//! Datasets: streamed uploads (from a path or any reader, in bounded memory, with progress), and
//! reading datasets back.

use std::path::Path;

use futures::{Stream, StreamExt as _};
use tokio::io::AsyncRead;
use tokio_util::io::ReaderStream;
use trustmesh_proto::v1::upload_dataset_request::Payload;
use trustmesh_proto::v1::{
    CreateDatasetRequest, Dataset, DatasetFormat, GetDatasetRequest, ListDatasetsRequest,
    UploadDatasetRequest, UploadMetadata,
};

use crate::client::{Client, Idempotence, request_id};
use crate::error::Error;
use crate::paging::{PAGE_SIZE, pages};

/// Upload chunk size: well under the 4 MiB message limit. At most a few chunks are in memory at
/// once (HTTP/2 flow control pulls the next one only when the previous ones are sent).
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// What to upload as: the dataset's display name, format and id column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The dataset's display name.
    pub display_name: String,
    /// The file format.
    pub format: DatasetFormat,
    /// The file name recorded with the upload.
    pub filename: String,
    /// The column holding row ids (empty: none).
    pub id_column: String,
}

impl Upload {
    /// A CSV upload named `display_name`.
    #[must_use]
    pub fn csv(display_name: impl Into<String>) -> Self {
        let display_name = display_name.into();
        Self {
            filename: format!("{display_name}.csv"),
            display_name,
            format: DatasetFormat::Csv,
            id_column: String::new(),
        }
    }

    /// This upload in `format` (the file name's extension follows it).
    #[must_use]
    pub fn format(mut self, format: DatasetFormat) -> Self {
        self.format = format;
        self.filename = format!("{}.{}", self.display_name, extension(format));
        self
    }

    /// This upload with `column` as the row id column.
    #[must_use]
    pub fn id_column(mut self, column: impl Into<String>) -> Self {
        self.id_column = column.into();
        self
    }

    /// This upload recorded as file `filename`.
    #[must_use]
    pub fn filename(mut self, filename: impl Into<String>) -> Self {
        self.filename = filename.into();
        self
    }
}

/// The format a file name's extension names (`.csv`, `.jsonl`, `.parquet`, `.zip`).
#[must_use]
pub fn format_of(path: &Path) -> Option<DatasetFormat> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "csv" => Some(DatasetFormat::Csv),
        "jsonl" | "ndjson" => Some(DatasetFormat::Jsonl),
        "parquet" => Some(DatasetFormat::Parquet),
        "zip" => Some(DatasetFormat::ImageZip),
        _ => None,
    }
}

fn extension(format: DatasetFormat) -> &'static str {
    match format {
        DatasetFormat::Csv | DatasetFormat::Unspecified => "csv",
        DatasetFormat::Jsonl => "jsonl",
        DatasetFormat::Parquet => "parquet",
        DatasetFormat::ImageZip => "zip",
    }
}

/// Upload progress: the bytes handed to the connection so far, and the total when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes sent so far.
    pub sent: u64,
    /// The size of the upload, when known (uploads from a path).
    pub total: Option<u64>,
}

impl Client {
    /// Creates a dataset as `upload` says and streams the file at `path` into it in
    /// [`CHUNK_BYTES`] chunks, calling `progress` after each; returns the dataset as ingest
    /// left it (READY, or FAILED with the reason).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read; the service's refusal otherwise, e.g.
    /// [`Error::Invalid`] naming the row and column of bad input.
    pub async fn upload_path(
        &self,
        path: &Path,
        upload: Upload,
        progress: impl FnMut(Progress) + Send + 'static,
    ) -> Result<Dataset, Error> {
        let context = || format!("cannot read {}", path.display());
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io(context(), e))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| Error::io(context(), e))?
            .len();
        self.upload_reader(file, Some(size), upload, progress).await
    }

    /// Creates a dataset as `upload` says and streams `reader` into it (`size` is its length
    /// when known), calling `progress` after each chunk.
    ///
    /// An upload is not retried (a reader cannot be rewound); creating the dataset is.
    ///
    /// # Errors
    ///
    /// As [`Client::upload_path`].
    pub async fn upload_reader<R>(
        &self,
        reader: R,
        size: Option<u64>,
        upload: Upload,
        mut progress: impl FnMut(Progress) + Send + 'static,
    ) -> Result<Dataset, Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let parent = self.parent()?;
        let create = CreateDatasetRequest {
            parent,
            display_name: upload.display_name.clone(),
            request_id: request_id(),
            ..CreateDatasetRequest::default()
        };
        let dataset = self
            .call(Idempotence::Safe, || {
                let mut service = self.datasets();
                let create = create.clone();
                async move { service.create_dataset(create).await }
            })
            .await?;
        let metadata = UploadDatasetRequest {
            payload: Some(Payload::Metadata(UploadMetadata {
                dataset: dataset.name,
                format: upload.format.into(),
                filename: upload.filename,
                size_bytes: size.unwrap_or_default(),
                id_column: upload.id_column,
                ..UploadMetadata::default()
            })),
        };
        // NOTE: a read error ends the stream early; ingest then sees a short upload (and
        // `size_bytes` disagreeing when known), and the error is reported from here.
        let read_error = std::sync::Arc::new(std::sync::Mutex::new(None::<std::io::Error>));
        let failed = read_error.clone();
        let mut sent = 0_u64;
        let chunks = ReaderStream::with_capacity(reader, CHUNK_BYTES).scan((), move |(), chunk| {
            let next = match chunk {
                Ok(bytes) => {
                    sent += bytes.len() as u64;
                    progress(Progress { sent, total: size });
                    Some(UploadDatasetRequest {
                        payload: Some(Payload::Chunk(bytes.to_vec())),
                    })
                }
                Err(error) => {
                    if let Ok(mut slot) = failed.lock() {
                        *slot = Some(error);
                    }
                    None
                }
            };
            futures::future::ready(next)
        });
        let messages = futures::stream::once(futures::future::ready(metadata)).chain(chunks);
        let answer = self.datasets().upload_dataset(messages).await;
        if let Some(error) = read_error.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(Error::io("cannot read the upload", error));
        }
        Ok(answer.map_err(Error::from)?.into_inner())
    }

    /// Uploads `csv` (in memory) as dataset `display_name`, with `id_column` as the row id
    /// column if not empty.
    ///
    /// # Errors
    ///
    /// As [`Client::upload_path`].
    pub async fn upload_csv(
        &self,
        display_name: &str,
        csv: Vec<u8>,
        id_column: &str,
    ) -> Result<Dataset, Error> {
        let size = csv.len() as u64;
        self.upload_reader(
            std::io::Cursor::new(csv),
            Some(size),
            Upload::csv(display_name).id_column(id_column),
            |_| {},
        )
        .await
    }

    /// Dataset `name` (a resource name or a bare id in this client's tenant).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] and the other refusals of the service.
    pub async fn get_dataset(&self, name: &str) -> Result<Dataset, Error> {
        let name = self.resource("datasets", name)?;
        self.call(Idempotence::Safe, || {
            let mut service = self.datasets();
            let name = name.clone();
            async move { service.get_dataset(GetDatasetRequest { name }).await }
        })
        .await
    }

    /// Every dataset of this client's tenant, page by page.
    pub fn list_datasets(&self) -> impl Stream<Item = Result<Dataset, Error>> + Send + '_ {
        pages(move |page_token| async move {
            let parent = self.parent()?;
            let page = self
                .call(Idempotence::Safe, || {
                    let mut service = self.datasets();
                    let request = ListDatasetsRequest {
                        parent: parent.clone(),
                        page_size: PAGE_SIZE,
                        page_token: page_token.clone(),
                        ..ListDatasetsRequest::default()
                    };
                    async move { service.list_datasets(request).await }
                })
                .await?;
            Ok((page.datasets, page.next_page_token))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_extensions() {
        assert_eq!(format_of(Path::new("a/b.CSV")), Some(DatasetFormat::Csv));
        assert_eq!(format_of(Path::new("b.jsonl")), Some(DatasetFormat::Jsonl));
        assert_eq!(format_of(Path::new("b.txt")), None);
        let upload = Upload::csv("wine").format(DatasetFormat::Parquet);
        assert_eq!(upload.filename, "wine.parquet");
    }
}
