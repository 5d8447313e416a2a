//! The `tenancy-deletion` consumer: on `deletion.requested` for a tenant, revokes and deletes every
//! API key of the tenant (its Postgres row and its `tm_auth` record, so no service accepts it any
//! more) and the tenant's row, scans for residue and answers with a `deletion.receipt`, once per
//! deletion however often the request is delivered. A dataset scope holds nothing here: it is
//! answered with an empty receipt.
//!
//! Order matters for crash safety: the keys are revoked in Postgres (and the tenant marked
//! `deleting`, so no key is created for it any more) and committed before `tm_auth` is touched, so
//! a restart's reconciliation can only ever republish them as revoked; the rows go last, in the
//! transaction that records the deletion and queues the receipt and the audit event.

use std::collections::BTreeSet;

use async_nats::jetstream::kv;
use sqlx::PgPool;
use trustmesh_auth::{AuthBucket, KeyId};
use trustmesh_bus::{Delivery, Handler, HandlerError, Outbox, ProcessedMessages};
use trustmesh_events::{Service, TenantId};
use trustmesh_service_kit::{Answer, CheckedDeletion, log_outcome};

use crate::repo;

/// Receipt keys.
const ROWS_KEYS: &str = "rows:api_keys";
const ROWS_TENANTS: &str = "rows:tenants";
const KV_KEYS: &str = "kv:tm_auth";

/// The `tenancy-deletion` handler.
#[derive(Debug, Clone)]
pub(crate) struct DeletionHandler {
    pub(crate) pool: PgPool,
    pub(crate) bucket: AuthBucket,
    /// `tm_auth` itself, to purge records (values and history) that [`AuthBucket`] only writes.
    pub(crate) kv: kv::Store,
    pub(crate) processed: ProcessedMessages,
    pub(crate) outbox: Outbox,
}

fn retry(error: impl std::fmt::Display) -> HandlerError {
    HandlerError::retryable(error)
}

/// What the tenant-scope deletion did outside the final transaction.
#[derive(Default)]
struct KeysPurged {
    /// Every key id of the tenant that was revoked.
    handled: BTreeSet<String>,
    /// `tm_auth` records purged.
    purged: u64,
    /// `tm_auth` records still there afterwards.
    left: u64,
}

impl DeletionHandler {
    /// Revokes the tenant's keys and support grants in Postgres, then revokes and purges their
    /// `tm_auth` records, and checks that none is left in the bucket.
    async fn purge_keys(&self, tenant: &str) -> Result<KeysPurged, HandlerError> {
        let (rows, grants) = repo::begin_tenant_deletion(&self.pool, tenant)
            .await
            .map_err(retry)?;
        let mut outcome = KeysPurged::default();
        // Support grants too: their records name the tenant and its resources. Their rows go with
        // the tenant's row (ON DELETE CASCADE).
        for grant in grants {
            let record = grant.to_record();
            self.bucket.put_grant(&record).await.map_err(retry)?;
            self.kv.purge(record.bucket_key()).await.map_err(retry)?;
            outcome.purged += 1;
            if self
                .bucket
                .get_grant(&grant.grant_id)
                .await
                .map_err(retry)?
                .is_some()
            {
                outcome.left += 1;
            }
        }
        // The tenant's quota record names it too (its row goes with the tenant's).
        if let Ok(tenant) = TenantId::parse(tenant) {
            self.kv
                .purge(trustmesh_auth::quota_bucket_key(&tenant))
                .await
                .map_err(retry)?;
        }
        for row in rows {
            outcome.handled.insert(row.key_id.clone());
            // NOTE: a corrupt row was never replicated (tenancy refuses to), so has no record.
            if let Some(record) = row.to_record() {
                // Revoked first, so every cache refuses the key even if the purge has to be retried.
                self.bucket.put(&record).await.map_err(retry)?;
                self.kv.purge(record.bucket_key()).await.map_err(retry)?;
                outcome.purged += 1;
            }
            if let Ok(key_id) = KeyId::parse(&row.key_id)
                && self.bucket.get(&key_id).await.map_err(retry)?.is_some()
            {
                outcome.left += 1;
            }
        }
        Ok(outcome)
    }

    async fn apply(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let checked = CheckedDeletion::from_delivery(&delivery)?;
        // NOTE: keyed on the deletion, not the message: a repeated request for the same deletion
        // (any Nats-Msg-Id) has one effect and one receipt, which the outbox delivers durably.
        if self
            .processed
            .is_processed(&checked.request.deletion)
            .await
            .map_err(retry)?
        {
            return Ok(());
        }
        let tenant = checked.tenant.clone();
        let whole_tenant = checked.dataset.is_none();

        // A dataset scope: tenancy holds nothing of a dataset, so the receipt is empty.
        let keys = if whole_tenant {
            Some(self.purge_keys(tenant.as_str()).await?)
        } else {
            None
        };

        let deletion = checked.request.deletion.clone();
        let outbox = self.outbox.clone();
        let outcome = self
            .processed
            .process_once(&deletion, move |tx| {
                Box::pin(async move {
                    // Tenancy holds no DEKs: key digests and tenant rows are not encrypted data.
                    let mut answer = Answer::default();
                    if let Some(keys) = &keys {
                        // A key created while the tenant was being marked `deleting` has a record
                        // that was not purged: start over, which revokes and purges it too.
                        let current = repo::lock_tenant_keys(tx, tenant.as_str()).await?;
                        if current.iter().any(|id| !keys.handled.contains(id)) {
                            return Err(retry("a key was created during the tenant's deletion"));
                        }
                        let (key_rows, tenant_rows) =
                            repo::delete_tenant(tx, tenant.as_str()).await?;
                        answer.deleted.insert(ROWS_KEYS.to_owned(), key_rows);
                        answer.deleted.insert(ROWS_TENANTS.to_owned(), tenant_rows);
                        answer.deleted.insert(KV_KEYS.to_owned(), keys.purged);
                        let (key_rows, tenant_rows) =
                            repo::count_tenant_rows(tx, tenant.as_str()).await?;
                        for (what, left) in [
                            (ROWS_KEYS, key_rows),
                            (ROWS_TENANTS, tenant_rows),
                            (KV_KEYS, keys.left),
                        ] {
                            if left > 0 {
                                answer.residue.insert(what.to_owned(), left);
                            }
                        }
                    }
                    // One event for every deletion handled, with what it deleted (nothing of a
                    // dataset): the log shows each service answered.
                    let action = if keys.is_some() {
                        "tenants.delete"
                    } else {
                        "datasets.delete"
                    };
                    let records = answer.deleted.values().sum();
                    checked
                        .answer(&outbox, tx, Service::Tenancy, action, records, answer)
                        .await
                })
            })
            .await?;
        log_outcome(&outcome);
        Ok(())
    }
}

impl Handler for DeletionHandler {
    async fn handle(&self, delivery: Delivery) -> Result<(), HandlerError> {
        self.apply(delivery).await
    }
}
