//! `AuditService`: ListEvents and VerifyLog over a tenant's chain (`audit:read`).

use std::pin::Pin;

use futures::Stream;
use prost::Message as _;
use sqlx::PgPool;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use trustmesh_auth::{PageToken, Principal, Scope, page_size};
use trustmesh_events::TenantId;
use trustmesh_proto::v1::audit_service_server::AuditService;
use trustmesh_proto::v1::{
    AuditFilter, ExportEventsRequest, ExportEventsResponse, ListEventsRequest, ListEventsResponse,
    VerifyLogRequest, VerifyLogResponse,
};

use crate::chain::{self, GENESIS, Verdict, outcome_filter};
use crate::error::AuditError;
use crate::repo::{self, Filter, Match};

/// Default and largest `ListEvents` page.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Events VerifyLog reads at a time.
const VERIFY_BATCH: i64 = 1000;

/// The `AuditService` implementation.
#[derive(Debug, Clone)]
pub struct AuditHandler {
    pool: PgPool,
}

impl AuditHandler {
    /// A handler over the `audit` schema.
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn list_events_inner(
        &self,
        principal: &Principal,
        request: ListEventsRequest,
    ) -> Result<ListEventsResponse, AuditError> {
        let tenant = authorize(principal, &request.parent)?;
        let size = page_size(request.page_size, DEFAULT_PAGE, MAX_PAGE)?;
        let filter_proto = request.filter.unwrap_or_default();
        let filter = filter(&filter_proto)?;
        let query = hex_query(&filter_proto);
        let after = match PageToken::decode(&request.page_token, &tenant, &query)? {
            Some(cursor) => cursor
                .parse::<i64>()
                .map_err(|_| AuditError::Page(trustmesh_auth::PageError::InvalidToken))?,
            None => 0,
        };
        let limit = i64::try_from(size + 1).unwrap_or(i64::MAX);
        let mut rows = repo::list(&self.pool, tenant.as_str(), &filter, after, limit).await?;
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|row| PageToken::encode(&tenant, &query, &row.sequence.to_string()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ListEventsResponse {
            events: rows.iter().map(chain::EventRow::to_record).collect(),
            next_page_token,
        })
    }

    async fn verify_log_inner(
        &self,
        principal: &Principal,
        request: VerifyLogRequest,
    ) -> Result<VerifyLogResponse, AuditError> {
        let tenant = authorize(principal, &request.parent)?;
        let (head, _) = repo::head(&self.pool, tenant.as_str()).await?;
        let start = i64::try_from(request.start_sequence.max(1)).map_err(|_| {
            AuditError::InvalidArgument {
                field: "start_sequence",
                message: "out of range",
            }
        })?;
        let end = match request.end_sequence {
            0 => head,
            n => i64::try_from(n).map_err(|_| AuditError::InvalidArgument {
                field: "end_sequence",
                message: "out of range",
            })?,
        };
        if end < start && request.end_sequence != 0 {
            return Err(AuditError::InvalidArgument {
                field: "end_sequence",
                message: "must not be below start_sequence",
            });
        }
        let mut prev_sequence = start - 1;
        let mut prev_hash = if prev_sequence == 0 {
            GENESIS.to_vec()
        } else {
            match repo::hash_at(&self.pool, tenant.as_str(), prev_sequence).await? {
                Some(hash) => hash,
                None => return Ok(broken(0, u64::try_from(prev_sequence).unwrap_or(0), "GAP")),
            }
        };
        let mut verified = 0_u64;
        while prev_sequence < end {
            let rows = repo::range(
                &self.pool,
                tenant.as_str(),
                prev_sequence + 1,
                end,
                VERIFY_BATCH,
            )
            .await?;
            // Missing rows before `end` (a deletion or a truncated tail) are a gap at the first one.
            let Some(last) = rows.last() else {
                return Ok(broken(
                    verified,
                    u64::try_from(prev_sequence + 1).unwrap_or(0),
                    "GAP",
                ));
            };
            match chain::verify(tenant.as_str(), prev_sequence, &prev_hash, &rows) {
                Verdict::Valid { checked } => verified += checked,
                Verdict::Broken {
                    checked,
                    sequence,
                    reason,
                } => return Ok(broken(verified + checked, sequence, reason)),
            }
            prev_sequence = last.sequence;
            prev_hash.clone_from(&last.hash);
        }
        Ok(VerifyLogResponse {
            valid: true,
            verified_count: verified,
            first_bad_sequence: None,
            failure_reason: String::new(),
            checkpoint: None,
        })
    }
}

fn broken(verified: u64, sequence: u64, reason: &str) -> VerifyLogResponse {
    VerifyLogResponse {
        valid: false,
        verified_count: verified,
        first_bad_sequence: Some(sequence),
        failure_reason: reason.to_owned(),
        checkpoint: None,
    }
}

/// Checks `audit:read` on `parent`, which must be exactly `tenants/{tenant}`.
fn authorize(principal: &Principal, parent: &str) -> Result<TenantId, AuditError> {
    let tenant = principal.require(Scope::AuditRead, "parent", parent)?;
    if parent != format!("tenants/{tenant}") {
        return Err(AuditError::InvalidArgument {
            field: "parent",
            message: "expected `tenants/{tenant}`",
        });
    }
    Ok(tenant)
}

/// The page-token fingerprint of a filter: its canonical protobuf encoding.
fn hex_query(filter: &AuditFilter) -> String {
    hex::encode(filter.encode_to_vec())
}

fn filter(proto: &AuditFilter) -> Result<Filter, AuditError> {
    let time = |field: &'static str, t: Option<&prost_types::Timestamp>| {
        t.map(|t| {
            OffsetDateTime::from_unix_timestamp(t.seconds)
                .ok()
                .and_then(|at| at.checked_add(time::Duration::nanoseconds(i64::from(t.nanos))))
                .ok_or(AuditError::InvalidArgument {
                    field,
                    message: "out of range",
                })
        })
        .transpose()
    };
    Ok(Filter {
        actor: Some(proto.actor.clone()).filter(|a| !a.is_empty()),
        action: Match::parse(&proto.action),
        resource: Match::parse(&proto.resource),
        outcome: outcome_filter(proto.outcome),
        start: time("filter.start_time", proto.start_time.as_ref())?,
        end: time("filter.end_time", proto.end_time.as_ref())?,
    })
}

/// The stream type of `ExportEvents`.
type ExportStream = Pin<Box<dyn Stream<Item = Result<ExportEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditHandler {
    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        Ok(Response::new(
            self.list_events_inner(&principal, request.into_inner())
                .await?,
        ))
    }

    async fn verify_log(
        &self,
        request: Request<VerifyLogRequest>,
    ) -> Result<Response<VerifyLogResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        Ok(Response::new(
            self.verify_log_inner(&principal, request.into_inner())
                .await?,
        ))
    }

    type ExportEventsStream = ExportStream;

    async fn export_events(
        &self,
        _: Request<ExportEventsRequest>,
    ) -> Result<Response<Self::ExportEventsStream>, Status> {
        Err(AuditError::NotAvailable("ExportEvents").into())
    }
}
