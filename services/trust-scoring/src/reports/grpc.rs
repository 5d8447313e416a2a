//! `TrustService`: GetReport, ListReports, ListRows (filtered, ordered, paged), SetCorrections,
//! ExportCleanset (the dataset read from ingest, rendered by [`super::export`]).
//!
//! Every call comes through `trustmesh_auth::Authenticator` (no valid API key: UNAUTHENTICATED) and
//! is checked with [`Principal::require`] before anything is read:
//! - `reports:read` for GetReport, ListReports and ListRows;
//! - `reports:read` and `datasets:read` for ExportCleanset: it is the dataset's data;
//! - `datasets:write` for SetCorrections: corrections change what the dataset's cleanset is (its
//!   labels and which rows are kept), so they need the right to change the dataset, not just to
//!   read its report;
//! - `analysis:run` for ScoreRows: scoring new rows runs the report's models, an analysis.
//!
//! A key of another tenant gets NOT_FOUND, word for word what a missing report gets.
//!
//! Every call is audited (allowed, denied or failed) through the outbox on
//! `tm.<tenant>.audit.trust-scoring` of the tenant the resource name names, that is the owner's log
//! even when another tenant's key is refused; the actor is the calling key.

use prost::Message as _;
use tonic::{Request, Response, Status};
use trustmesh_auth::{PageError, PageToken, Principal, Scope, page_size};
use trustmesh_bus::audit::AuditEntry;
use trustmesh_events::{Service, TenantId};
use trustmesh_proto::v1::trust_service_server::TrustService;
use trustmesh_proto::v1::{
    CorrectionAction, DatasetFormat, ExportCleansetRequest, GetReportRequest, ListReportsRequest,
    ListReportsResponse, ListRowsRequest, ListRowsResponse, Report, ScoreRowsRequest,
    ScoreRowsResponse, SetCorrectionsRequest, SetCorrectionsResponse,
};
use trustmesh_service_kit::{call_entry_for, request_id, settle};
use trustmesh_store::{EncryptedObjects, TenantScope};
use uuid::Uuid;

use super::export::{self, Cleanset, ExportStream, Format, Ingest};
use super::repo::{ReportRepo, ReportRow};
use super::{ResourceName, StoredRows, parse_parent, rows, rows_key};
use crate::error::TrustError;

/// Default and largest `ListReports` page.
const REPORTS_PAGE_DEFAULT: usize = 50;
const REPORTS_PAGE_MAX: usize = 1000;
/// Default and largest `ListRows` page.
const ROWS_PAGE_DEFAULT: usize = 100;
const ROWS_PAGE_MAX: usize = 1000;
/// Most corrections per call, and the longest corrected label.
const CORRECTIONS_MAX: usize = 10_000;
const LABEL_MAX_BYTES: usize = 1024;

/// The `TrustService` handler.
#[derive(Debug, Clone)]
pub(crate) struct ReportsHandler {
    repo: ReportRepo,
    objects: EncryptedObjects,
    ingest: Ingest,
}

impl ReportsHandler {
    pub(crate) fn new(repo: ReportRepo, objects: EncryptedObjects, ingest: Ingest) -> Self {
        Self {
            repo,
            objects,
            ingest,
        }
    }

    /// Audits the call and turns the result into the RPC's answer ([`settle`]).
    async fn settle<T>(
        &self,
        entry: Option<AuditEntry>,
        result: Result<(T, u64), TrustError>,
    ) -> Result<T, Status> {
        settle(entry, result, |entry| self.repo.audit(entry)).await
    }

    async fn row(&self, name: &ResourceName) -> Result<ReportRow, TrustError> {
        self.repo
            .get(&TenantScope::new(name.tenant.clone()), name.id)
            .await?
            .ok_or_else(|| TrustError::NotFound {
                resource: ResourceName::format(&name.tenant, "reports", name.id),
            })
    }

    async fn report(&self, name: &ResourceName) -> Result<Report, TrustError> {
        let row = self.row(name).await?;
        self.repo
            .open_report(&TenantScope::new(name.tenant.clone()), &row)
            .await
    }

    async fn list_reports(
        &self,
        tenant: &TenantId,
        req: &ListReportsRequest,
    ) -> Result<ListReportsResponse, TrustError> {
        let size = page_size(req.page_size, REPORTS_PAGE_DEFAULT, REPORTS_PAGE_MAX)?;
        let dataset = match req.dataset.as_str() {
            "" => None,
            name => {
                let dataset = ResourceName::parse("dataset", "datasets", name)?;
                if &dataset.tenant != tenant {
                    return Err(TrustError::InvalidArgument(
                        "dataset must be of the parent tenant".to_owned(),
                    ));
                }
                Some(dataset.id)
            }
        };
        let query = format!("dataset={}", req.dataset);
        let before = PageToken::decode(&req.page_token, tenant, &query)?
            .map(|cursor| Uuid::try_parse(&cursor).map_err(|_| PageError::InvalidToken))
            .transpose()?;
        let scope = TenantScope::new(tenant.clone());
        let limit = i64::try_from(size + 1).unwrap_or(i64::MAX);
        let mut found = self.repo.list(&scope, dataset, before, limit).await?;
        let more = found.len() > size;
        found.truncate(size);
        let next_page_token = match found.last() {
            Some(last) if more => PageToken::encode(tenant, &query, &last.id.to_string()),
            Some(_) | None => String::new(),
        };
        let mut reports = Vec::with_capacity(found.len());
        for row in &found {
            reports.push(self.repo.open_report(&scope, row).await?);
        }
        Ok(ListReportsResponse {
            reports,
            next_page_token,
        })
    }

    async fn list_rows(
        &self,
        name: &ResourceName,
        req: &ListRowsRequest,
    ) -> Result<ListRowsResponse, TrustError> {
        let size = page_size(req.page_size, ROWS_PAGE_DEFAULT, ROWS_PAGE_MAX)?;
        let query = rows::query(req);
        let offset = PageToken::decode(&req.page_token, &name.tenant, &query)?
            .map(|cursor| cursor.parse::<usize>().map_err(|_| PageError::InvalidToken))
            .transpose()?
            .unwrap_or_default();
        let row = self.row(name).await?;
        let scope = TenantScope::new(name.tenant.clone());
        let stored = self.stored_rows(&row, &scope).await?;
        let corrections = self.repo.corrections(&scope, row.id).await?;
        let page = rows::select(stored.rows, corrections, req, offset, size)?;
        Ok(ListRowsResponse {
            rows: page.rows,
            next_page_token: page
                .next
                .map(|next| PageToken::encode(&name.tenant, &query, &next.to_string()))
                .unwrap_or_default(),
            total_size: page.total,
        })
    }

    /// The report's stored rows.
    async fn stored_rows(
        &self,
        row: &ReportRow,
        scope: &TenantScope,
    ) -> Result<StoredRows, TrustError> {
        let plaintext = self.objects.get(scope, &rows_key(row.id)?).await?;
        StoredRows::decode(plaintext).map_err(|_| TrustError::Corrupt("stored report rows"))
    }

    /// Everything an export needs before its first byte: the report, its rows and corrections,
    /// the dataset's schema and the stream of its rows; with the number of rows read.
    async fn export(
        &self,
        name: &ResourceName,
        req: &ExportCleansetRequest,
    ) -> Result<(ExportStream, u64), TrustError> {
        let row = self.row(name).await?;
        let scope = TenantScope::new(name.tenant.clone());
        let report = self.repo.open_report(&scope, &row).await?;
        let dataset = self.ingest.dataset(&report.dataset).await?;
        let format = Format::choose(
            req.format,
            DatasetFormat::try_from(dataset.format).unwrap_or_default(),
        )?;
        let columns: Vec<String> = dataset
            .schema
            .unwrap_or_default()
            .columns
            .into_iter()
            .map(|c| c.name)
            .collect();
        let stored = self.stored_rows(&row, &scope).await?;
        let corrections = self.repo.corrections(&scope, row.id).await?;
        let cleanset = Cleanset::new(req, format, columns.clone(), stored.rows, corrections)?;
        let rows = self.ingest.rows(&report.dataset, columns).await?;
        let filename = format!("cleanset-{}.{}", row.id, format.extension());
        Ok((export::stream(cleanset, filename, rows)?, dataset.row_count))
    }

    async fn set_corrections(
        &self,
        name: &ResourceName,
        req: &SetCorrectionsRequest,
    ) -> Result<SetCorrectionsResponse, TrustError> {
        if req.corrections.len() > CORRECTIONS_MAX {
            return Err(TrustError::InvalidArgument(format!(
                "at most {CORRECTIONS_MAX} corrections per call"
            )));
        }
        let row = self.row(name).await?;
        let rows = u64::try_from(row.row_count).unwrap_or_default();
        for (i, c) in req.corrections.iter().enumerate() {
            if c.row_index >= rows {
                return Err(TrustError::InvalidArgument(format!(
                    "corrections[{i}].row_index is past the last row"
                )));
            }
            let relabel = CorrectionAction::try_from(c.action) == Ok(CorrectionAction::Relabel);
            if CorrectionAction::try_from(c.action).is_err()
                || relabel == c.corrected_label.is_empty()
                || c.corrected_label.len() > LABEL_MAX_BYTES
            {
                return Err(TrustError::InvalidArgument(format!(
                    "corrections[{i}]: corrected_label is required for RELABEL (at most {LABEL_MAX_BYTES} bytes) and only for it"
                )));
            }
        }
        let scope = TenantScope::new(name.tenant.clone());
        let updated_count = self
            .repo
            .set_corrections(&scope, row.id, &req.corrections)
            .await?;
        Ok(SetCorrectionsResponse { updated_count })
    }
}

#[tonic::async_trait]
impl TrustService for ReportsHandler {
    async fn get_report(
        &self,
        request: Request<GetReportRequest>,
    ) -> Result<Response<Report>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::TrustScoring,
            &principal,
            "reports.get",
            &req.name,
            &request_id,
        );
        let result = async {
            principal.require(Scope::ReportsRead, "name", &req.name)?;
            let name = ResourceName::parse("name", "reports", &req.name)?;
            self.report(&name).await.map(|r| (r, 1))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }

    async fn list_reports(
        &self,
        request: Request<ListReportsRequest>,
    ) -> Result<Response<ListReportsResponse>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::TrustScoring,
            &principal,
            "reports.list",
            &req.parent,
            &request_id,
        );
        let result = async {
            principal.require(Scope::ReportsRead, "parent", &req.parent)?;
            let tenant = parse_parent(&req.parent)?;
            let listed = self.list_reports(&tenant, &req).await?;
            let n = listed.reports.len() as u64;
            Ok((listed, n))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }

    async fn list_rows(
        &self,
        request: Request<ListRowsRequest>,
    ) -> Result<Response<ListRowsResponse>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::TrustScoring,
            &principal,
            "reports.rows.list",
            &req.parent,
            &request_id,
        );
        let result = async {
            principal.require(Scope::ReportsRead, "parent", &req.parent)?;
            let name = ResourceName::parse("parent", "reports", &req.parent)?;
            let listed = self.list_rows(&name, &req).await?;
            let n = listed.rows.len() as u64;
            Ok((listed, n))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }

    async fn set_corrections(
        &self,
        request: Request<SetCorrectionsRequest>,
    ) -> Result<Response<SetCorrectionsResponse>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::TrustScoring,
            &principal,
            "reports.corrections.set",
            &req.parent,
            &request_id,
        );
        let result = async {
            principal.require(Scope::DatasetsWrite, "parent", &req.parent)?;
            let name = ResourceName::parse("parent", "reports", &req.parent)?;
            let set = self.set_corrections(&name, &req).await?;
            let n = set.updated_count;
            Ok((set, n))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }

    type ExportCleansetStream = ExportStream;

    async fn export_cleanset(
        &self,
        request: Request<ExportCleansetRequest>,
    ) -> Result<Response<Self::ExportCleansetStream>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::TrustScoring,
            &principal,
            "reports.export",
            &req.name,
            &request_id,
        );
        let result = async {
            principal.require(Scope::ReportsRead, "name", &req.name)?;
            principal.require(Scope::DatasetsRead, "name", &req.name)?;
            let name = ResourceName::parse("name", "reports", &req.name)?;
            self.export(&name, &req).await
        }
        .await;
        let stream = self.settle(entry, result).await?;
        Ok(Response::new(stream))
    }

    async fn score_rows(
        &self,
        request: Request<ScoreRowsRequest>,
    ) -> Result<Response<ScoreRowsResponse>, Status> {
        let request_id = request_id(&request);
        let principal = Principal::of(&request)?.clone();
        let req = request.into_inner();
        let entry = call_entry_for(
            Service::TrustScoring,
            &principal,
            "reports.score",
            &req.report,
            &request_id,
        );
        let result = async {
            principal.require(Scope::AnalysisRun, "report", &req.report)?;
            let name = ResourceName::parse("report", "reports", &req.report)?;
            self.row(&name).await?;
            Err(TrustError::FailedPrecondition(
                "this report's models were not kept, so new rows cannot be scored against it",
            ))
        }
        .await;
        self.settle(entry, result).await.map(Response::new)
    }
}
