//! `AuditService`: ListEvents, VerifyLog and ExportEvents over a tenant's chain (`audit:read`).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use prost::Message as _;
use sqlx::PgPool;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use trustmesh_auth::{PageToken, Principal, Scope, page_size, resource_tenant};
use trustmesh_bus::Publisher;
use trustmesh_bus::audit::AuditEntry;
use trustmesh_events::{Service, TenantId};
use trustmesh_proto::events::v1::Outcome;
use trustmesh_proto::v1::audit_service_server::AuditService;
use trustmesh_proto::v1::{
    AuditFilter, AuditSigningKey, ExportEventsRequest, ExportEventsResponse, ListEventsRequest,
    ListEventsResponse, VerifyLogRequest, VerifyLogResponse,
};

use crate::chain::{self, CheckpointRow, GENESIS, Verdict, outcome_filter};
use crate::error::AuditError;
use crate::export::{checkpoint_line, record_line};
use crate::repo::{self, Filter, Match};
use crate::signing::{ALGORITHM, CheckpointSigner};

/// Default and largest `ListEvents` page.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Events VerifyLog reads at a time.
const VERIFY_BATCH: i64 = 1000;
/// Events ExportEvents reads at a time, and the size a chunk is sent at.
const EXPORT_BATCH: i64 = 1000;
const EXPORT_CHUNK: usize = 64 * 1024;

/// The `AuditService` implementation.
#[derive(Debug, Clone)]
pub struct AuditHandler {
    pool: PgPool,
    signer: Arc<CheckpointSigner>,
    publisher: Publisher,
}

impl AuditHandler {
    /// A handler over the `audit` schema, verifying checkpoints with `signer`'s key and auditing
    /// exports through `publisher`.
    pub(crate) fn new(pool: PgPool, signer: Arc<CheckpointSigner>, publisher: Publisher) -> Self {
        Self {
            pool,
            signer,
            publisher,
        }
    }

    /// The public keys checkpoints are checked against.
    fn verification_keys(&self) -> Vec<AuditSigningKey> {
        vec![AuditSigningKey {
            key_id: self.signer.key_id().to_owned(),
            algorithm: ALGORITHM.to_owned(),
            public_key: self.signer.public_key().to_vec(),
        }]
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
        let explicit_end = match request.end_sequence {
            0 => None,
            n => Some(i64::try_from(n).map_err(|_| AuditError::InvalidArgument {
                field: "end_sequence",
                message: "out of range",
            })?),
        };
        if explicit_end.is_some_and(|end| end < start) {
            return Err(AuditError::InvalidArgument {
                field: "end_sequence",
                message: "must not be below start_sequence",
            });
        }
        let checkpoints = repo::checkpoints(
            &self.pool,
            tenant.as_str(),
            start,
            explicit_end.unwrap_or(i64::MAX),
        )
        .await?;
        // To the end means to the head or the last checkpoint, whichever is further: a head row
        // rolled back together with a truncated tail still leaves the checkpoint behind.
        let end = explicit_end
            .unwrap_or_else(|| head.max(checkpoints.last().map_or(0, |cp| cp.sequence)));
        let public = self.signer.public_key();
        let keys = [(self.signer.key_id(), public.as_slice())];
        let mut response = self
            .walk(tenant.as_str(), start, end, &checkpoints, &keys)
            .await?;
        response.checkpoint = checkpoints.last().map(CheckpointRow::to_proto);
        response.verification_keys = self.verification_keys();
        Ok(response)
    }

    /// Verifies `tenant`'s events `start..=end` and the `checkpoints` among them.
    async fn walk(
        &self,
        tenant: &str,
        start: i64,
        end: i64,
        checkpoints: &[CheckpointRow],
        keys: &[(&str, &[u8])],
    ) -> Result<VerifyLogResponse, AuditError> {
        let mut prev_sequence = start - 1;
        let mut prev_hash = if prev_sequence == 0 {
            GENESIS.to_vec()
        } else {
            match repo::hash_at(&self.pool, tenant, prev_sequence).await? {
                Some(hash) => hash,
                None => return Ok(broken(0, u64::try_from(prev_sequence).unwrap_or(0), "GAP")),
            }
        };
        let mut pending = checkpoints.iter().peekable();
        let mut verified = 0_u64;
        while prev_sequence < end {
            let rows =
                repo::range(&self.pool, tenant, prev_sequence + 1, end, VERIFY_BATCH).await?;
            // Missing rows before `end` (a deletion or a truncated tail) are a gap at the first one.
            let Some(last) = rows.last() else {
                let first_missing = u64::try_from(prev_sequence + 1).unwrap_or(0);
                return Ok(match checkpoints.last() {
                    Some(cp) if cp.sequence > prev_sequence => broken(
                        verified,
                        first_missing,
                        &chain::truncated(cp.sequence, prev_sequence),
                    ),
                    _ => broken(verified, first_missing, "GAP"),
                });
            };
            let verdict = chain::verify(tenant, prev_sequence, &prev_hash, &rows);
            let bad = match verdict {
                Verdict::Valid { .. } => i64::MAX,
                Verdict::Broken { sequence, .. } => i64::try_from(sequence).unwrap_or(i64::MAX),
            };
            // Checkpoints before the first broken event, within this batch.
            while let Some(cp) = pending.next_if(|cp| cp.sequence <= last.sequence) {
                if cp.sequence >= bad {
                    break;
                }
                let hash = rows
                    .iter()
                    .find(|r| r.sequence == cp.sequence)
                    .map(|r| r.hash.as_slice());
                if let Some(reason) = cp.fault(tenant, hash, keys) {
                    let checked = u64::try_from(cp.sequence - prev_sequence - 1).unwrap_or(0);
                    return Ok(broken(
                        verified + checked,
                        u64::try_from(cp.sequence).unwrap_or(0),
                        &reason,
                    ));
                }
            }
            match verdict {
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
            verification_keys: Vec::new(),
        })
    }

    /// Audits `principal`'s `action` on `parent`'s log (access to audit data is itself audited)
    /// when it was denied or failed, and also when allowed if `allowed_too`; turns `result` into
    /// the RPC's answer.
    // NOTE: allowed ListEvents/VerifyLog calls are not logged yet: each would add an event to the
    // log it reads (a reader polling the log grows it); they need their own access log first.
    async fn audited<T>(
        &self,
        principal: &Principal,
        action: &'static str,
        parent: &str,
        allowed_too: bool,
        result: Result<T, AuditError>,
    ) -> Result<T, Status> {
        if result.is_ok() && !allowed_too {
            return result.map_err(Status::from);
        }
        let (outcome, reason) = match &result {
            Ok(_) => (Outcome::Allowed, ""),
            Err(error) => (
                if matches!(error, AuditError::Auth(_)) {
                    Outcome::Denied
                } else {
                    Outcome::Error
                },
                error.reason(),
            ),
        };
        let result = result.map_err(Status::from);
        if let Ok(tenant) = resource_tenant("parent", parent) {
            let mut entry = AuditEntry::new(Service::Audit, tenant, action, parent);
            entry.actor_type = principal.actor_type();
            entry.actor_id = principal.actor_id();
            entry.outcome = outcome;
            if let Err(status) = &result {
                entry.grpc_code = status.code() as i32;
                reason.clone_into(&mut entry.reason);
            }
            if let Err(error) = trustmesh_bus::audit::publish(&self.publisher, entry).await {
                tracing::warn!(
                    error.cause_chain = %trustmesh_runtime::cause_chain(&error),
                    "Could not publish an audit event of an audit-log access."
                );
            }
        }
        result
    }

    /// `tenant`'s head sequence and every checkpoint, now.
    async fn snapshot(&self, tenant: &TenantId) -> Result<(i64, Vec<CheckpointRow>), AuditError> {
        let (head, _) = repo::head(&self.pool, tenant.as_str()).await?;
        let checkpoints = repo::checkpoints(&self.pool, tenant.as_str(), 1, i64::MAX).await?;
        Ok((head, checkpoints))
    }

    async fn export_inner(
        &self,
        principal: &Principal,
        request: ExportEventsRequest,
    ) -> Result<ExportStream, Status> {
        let checked = authorize(principal, &request.parent)
            .and_then(|tenant| Ok((tenant, filter(&request.filter.clone().unwrap_or_default())?)));
        // The export is the log as it stands when asked: its head and checkpoints are read before
        // the export's own audit event is published, so that event (and any later one) is left out.
        let checked = match checked {
            Ok((tenant, filter)) => self
                .snapshot(&tenant)
                .await
                .map(|(head, checkpoints)| (tenant, filter, head, checkpoints)),
            Err(error) => Err(error),
        };
        let (tenant, filter, head, checkpoints) = self
            .audited(
                principal,
                "audit.events.export",
                &request.parent,
                true,
                checked,
            )
            .await?;
        let (mut tx, rx) = futures::channel::mpsc::channel(4);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            use futures::SinkExt as _;
            let tenant = tenant.as_str();
            let mut pending = checkpoints.iter().peekable();
            let mut chunk = Vec::with_capacity(EXPORT_CHUNK);
            let mut after = 0;
            loop {
                let rows = match repo::list(&pool, tenant, &filter, after, EXPORT_BATCH).await {
                    Ok(rows) => rows,
                    Err(error) => {
                        let _ = tx.send(Err(Status::from(AuditError::from(error)))).await;
                        return;
                    }
                };
                for row in rows.iter().filter(|row| row.sequence <= head) {
                    chunk.extend(record_line(tenant, row));
                    while let Some(cp) = pending.next_if(|cp| cp.sequence <= row.sequence) {
                        chunk.extend(checkpoint_line(tenant, cp));
                    }
                    if chunk.len() >= EXPORT_CHUNK {
                        let jsonl_chunk = std::mem::take(&mut chunk);
                        if tx
                            .send(Ok(ExportEventsResponse { jsonl_chunk }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                match rows.last() {
                    Some(last)
                        if i64::try_from(rows.len()).unwrap_or(0) == EXPORT_BATCH
                            && last.sequence < head =>
                    {
                        after = last.sequence;
                    }
                    _ => break,
                }
            }
            // Checkpoints past the last exported event (a truncated tail) are exported too.
            for cp in pending {
                chunk.extend(checkpoint_line(tenant, cp));
            }
            if !chunk.is_empty() {
                let _ = tx
                    .send(Ok(ExportEventsResponse { jsonl_chunk: chunk }))
                    .await;
            }
        });
        Ok(Box::pin(rx))
    }
}

fn broken(verified: u64, sequence: u64, reason: &str) -> VerifyLogResponse {
    VerifyLogResponse {
        valid: false,
        verified_count: verified,
        first_bad_sequence: Some(sequence),
        failure_reason: reason.to_owned(),
        checkpoint: None,
        verification_keys: Vec::new(),
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
        let request = request.into_inner();
        let parent = request.parent.clone();
        let result = self.list_events_inner(&principal, request).await;
        self.audited(&principal, "audit.events.list", &parent, false, result)
            .await
            .map(Response::new)
    }

    async fn verify_log(
        &self,
        request: Request<VerifyLogRequest>,
    ) -> Result<Response<VerifyLogResponse>, Status> {
        let principal = Principal::of(&request)?.clone();
        let request = request.into_inner();
        let parent = request.parent.clone();
        let result = self.verify_log_inner(&principal, request).await;
        self.audited(&principal, "audit.log.verify", &parent, false, result)
            .await
            .map(Response::new)
    }

    type ExportEventsStream = ExportStream;

    async fn export_events(
        &self,
        request: Request<ExportEventsRequest>,
    ) -> Result<Response<Self::ExportEventsStream>, Status> {
        let principal = Principal::of(&request)?.clone();
        Ok(Response::new(
            self.export_inner(&principal, request.into_inner()).await?,
        ))
    }
}
