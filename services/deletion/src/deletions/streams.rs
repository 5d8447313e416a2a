//! A tenant's messages in JetStream: purged by subject (`tm.<tenant>.>`) from every stream but
//! `TM_AUDIT` when a TENANT-scope deletion has all its receipts, then counted again as the residue
//! scan. Purging is idempotent: a retry purges what is left (usually nothing).
//!
//! `TM_AUDIT` is kept by design: audit events hold no customer content, and the tenant's chain stays
//! as a content-free record of what happened (the audit service retains it; its receipt says so).

use std::collections::BTreeMap;

use async_nats::jetstream;
use futures::TryStreamExt as _;
use trustmesh_events::{SubjectFilter, TenantId, tenant_purged_streams};

use crate::error::DeletionError;

/// The receipt key of `stream`: `stream:<NAME>`.
fn key(stream: &str) -> String {
    format!("stream:{stream}")
}

fn purge_error(stream: &str, error: impl std::fmt::Display) -> DeletionError {
    DeletionError::Purge(format!("{stream}: {error}"))
}

/// What a tenant purge did: messages purged, and messages still there afterwards (residue), per
/// stream (`stream:<NAME>`; residue only where some remain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Purged {
    pub(crate) purged: BTreeMap<String, u64>,
    pub(crate) residue: BTreeMap<String, u64>,
}

/// Rounds of purge-and-count per stream: a message published between a purge and its count (a
/// late event of another service) is purged by the next round.
const ROUNDS: usize = 3;

/// Purges `tm.<tenant>.>` from every stream but `TM_AUDIT`, then counts what is left (purging again,
/// up to [`ROUNDS`] times, while something is).
///
/// # Errors
///
/// [`DeletionError::Purge`] when a stream could not be reached or purged (retry).
pub(crate) async fn purge_tenant(
    jetstream: &jetstream::Context,
    tenant: &TenantId,
) -> Result<Purged, DeletionError> {
    let filter = SubjectFilter::tenant(tenant);
    let mut outcome = Purged::default();
    for spec in tenant_purged_streams() {
        let stream = jetstream
            .get_stream(spec.name)
            .await
            .map_err(|e| purge_error(spec.name, e))?;
        let mut purged = 0;
        let mut remaining = 0;
        for _ in 0..ROUNDS {
            let response = stream
                .purge()
                .filter(filter.as_str())
                .await
                .map_err(|e| purge_error(spec.name, e))?;
            purged += response.purged;
            remaining = stream
                .info_with_subjects(filter.as_str())
                .await
                .map_err(|e| purge_error(spec.name, e))?
                .try_fold(
                    0_u64,
                    |sum, (_, count)| async move { Ok(sum + count as u64) },
                )
                .await
                .map_err(|e| purge_error(spec.name, e))?;
            if remaining == 0 {
                break;
            }
        }
        outcome.purged.insert(key(spec.name), purged);
        if remaining > 0 {
            outcome.residue.insert(key(spec.name), remaining);
        }
    }
    Ok(outcome)
}
