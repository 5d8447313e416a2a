//! Reports, rows by issue, and the cleanset export.

use futures::Stream;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use trustmesh_proto::v1::{
    ExportCleansetRequest, ExportFormat, GetReportRequest, IssueType, ListReportsRequest,
    ListRowsRequest, Report, RowOrder, RowResult,
};

use crate::client::{Client, Idempotence};
use crate::error::Error;
use crate::paging::{PAGE_SIZE, pages};

/// Which rows of a report to list, and in which order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowQuery {
    /// Only rows flagged with one of these issues (empty: every row).
    pub issue_types: Vec<IssueType>,
    /// The order (unspecified: the service's default, lowest trust score first).
    pub order_by: RowOrder,
}

impl RowQuery {
    /// Rows flagged with `issue`.
    #[must_use]
    pub fn issue(issue: IssueType) -> Self {
        Self {
            issue_types: vec![issue],
            ..Self::default()
        }
    }
}

/// How to export a cleanset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Apply the corrections recorded on the report (RELABEL, EXCLUDE).
    pub apply_corrections: bool,
    /// Keep excluded rows (marked in the `action` column).
    pub keep_excluded: bool,
    /// Append the quality columns (trust score, suggested label, per-issue flags and scores).
    pub include_quality_columns: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The media type of the content.
    pub content_type: String,
    /// The file name the service suggests.
    pub filename: String,
    /// Bytes written.
    pub bytes: u64,
}

impl Client {
    /// Report `name` (a resource name or a bare id in this client's tenant).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] and the other refusals of the service.
    pub async fn get_report(&self, name: &str) -> Result<Report, Error> {
        let name = self.resource("reports", name)?;
        self.call(Idempotence::Safe, || {
            let mut service = self.trust();
            let name = name.clone();
            async move { service.get_report(GetReportRequest { name }).await }
        })
        .await
    }

    /// Every report of this client's tenant (of `dataset` only, when given), page by page.
    pub fn list_reports<'a>(
        &'a self,
        dataset: Option<&'a str>,
    ) -> impl Stream<Item = Result<Report, Error>> + Send + 'a {
        pages(move |page_token| async move {
            let parent = self.parent()?;
            let dataset = dataset
                .map(|d| self.resource("datasets", d))
                .transpose()?
                .unwrap_or_default();
            let page = self
                .call(Idempotence::Safe, || {
                    let mut service = self.trust();
                    let request = ListReportsRequest {
                        parent: parent.clone(),
                        page_size: PAGE_SIZE,
                        page_token: page_token.clone(),
                        dataset: dataset.clone(),
                    };
                    async move { service.list_reports(request).await }
                })
                .await?;
            Ok((page.reports, page.next_page_token))
        })
    }

    /// The rows of report `report` that `query` selects, page by page.
    pub fn list_rows<'a>(
        &'a self,
        report: &'a str,
        query: RowQuery,
    ) -> impl Stream<Item = Result<RowResult, Error>> + Send + 'a {
        pages(move |page_token| {
            let query = query.clone();
            async move {
                let parent = self.resource("reports", report)?;
                let page = self
                    .call(Idempotence::Safe, || {
                        let mut service = self.trust();
                        let request = ListRowsRequest {
                            parent: parent.clone(),
                            issue_types: query.issue_types.iter().map(|&i| i.into()).collect(),
                            order_by: query.order_by.into(),
                            page_size: PAGE_SIZE,
                            page_token: page_token.clone(),
                            ..ListRowsRequest::default()
                        };
                        async move { service.list_rows(request).await }
                    })
                    .await?;
                Ok((page.rows, page.next_page_token))
            }
        })
    }

    /// Streams the cleanset of report `report` as CSV into `out`, chunk by chunk, as `options`
    /// say.
    ///
    /// # Errors
    ///
    /// The service's refusal, or [`Error::Io`] when `out` fails.
    pub async fn export_cleanset(
        &self,
        report: &str,
        options: ExportOptions,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<Exported, Error> {
        let request = ExportCleansetRequest {
            name: self.resource("reports", report)?,
            format: ExportFormat::Csv.into(),
            apply_corrections: options.apply_corrections,
            keep_excluded: options.keep_excluded,
            include_quality_columns: options.include_quality_columns,
            ..ExportCleansetRequest::default()
        };
        let mut chunks = self
            .call(Idempotence::Safe, || {
                let mut service = self.trust();
                let request = request.clone();
                async move { service.export_cleanset(request).await }
            })
            .await?;
        let mut exported = Exported {
            content_type: String::new(),
            filename: String::new(),
            bytes: 0,
        };
        while let Some(chunk) = chunks.message().await? {
            if !chunk.content_type.is_empty() {
                exported.content_type = chunk.content_type;
            }
            if !chunk.filename.is_empty() {
                exported.filename = chunk.filename;
            }
            out.write_all(&chunk.chunk)
                .await
                .map_err(|e| Error::io("cannot write the export", e))?;
            exported.bytes += chunk.chunk.len() as u64;
        }
        out.flush()
            .await
            .map_err(|e| Error::io("cannot write the export", e))?;
        Ok(exported)
    }
}
