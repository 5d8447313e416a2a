//! The audit of the auth layer's own refusals: a request refused before its handler runs (a
//! revoked, expired or wrong-secret key, or a tenant over its request rate) is recorded in the
//! tenant's audit log (`tm.<tenant>.audit.<service>`, action [`ACTION`], outcome DENIED, the
//! refusal's reason, resource `tenants/{tenant}`, actor the key).
//!
//! # Aggregation
//!
//! A tenant flooding a service would otherwise write one audit event per refused call. So per
//! tenant, reason and actor, the first refusal of a one-second window is audited at once
//! (`records_affected` 1), and the others of that window are counted and audited together as one
//! event when the window closes (`records_affected` = how many), within a second or two. Every
//! refusal is accounted for; a flood costs at most two events a second per tenant and reason.
//!
//! Refusals that name no tenant (no credential, a malformed one, an unknown key id) cannot go in
//! any tenant's log: they are logged only. Refusals made by handlers (missing scope, another
//! tenant's resource, the operator on tenant data, quotas of jobs and bytes) are audited by the
//! handlers with the call's resource.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_nats::HeaderMap;
use async_nats::jetstream;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{ActorType, AuditEvent, EventMeta, Outcome};
use uuid::Uuid;

/// The audit action of a request the auth layer refused.
pub const ACTION: &str = "requests.refused";

/// How long refusals are gathered into one audit event after the first is audited.
pub const WINDOW: Duration = Duration::from_secs(1);

/// One refusal, as the interceptor saw it.
#[derive(Debug, Clone)]
pub(crate) struct Denial {
    pub(crate) tenant: TenantId,
    pub(crate) actor_id: String,
    pub(crate) reason: &'static str,
    pub(crate) grpc_code: i32,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    /// Refusals after the first, not audited yet.
    pending: u64,
    grpc_code: i32,
}

/// Publishes the auth layer's refusals to the audit log, aggregated per window.
#[derive(Debug)]
pub(crate) struct DenialAudit {
    service: Service,
    jetstream: jetstream::Context,
    windows: Mutex<HashMap<(TenantId, &'static str, String), Window>>,
}

impl DenialAudit {
    pub(crate) fn new(service: Service, jetstream: jetstream::Context) -> Arc<Self> {
        Arc::new(Self {
            service,
            jetstream,
            windows: Mutex::new(HashMap::new()),
        })
    }

    /// Records `denial`: audited now if it opens a window, counted otherwise.
    pub(crate) fn record(&self, denial: Denial) {
        let key = (
            denial.tenant.clone(),
            denial.reason,
            denial.actor_id.clone(),
        );
        {
            let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(window) = windows.get_mut(&key)
                && window.opened.elapsed() < WINDOW
            {
                window.pending += 1;
                return;
            }
            // A closed window whose pending refusals `flush` has not audited yet is audited now.
            if let Some(old) = windows.remove(&key)
                && old.pending > 0
            {
                self.publish(&key, old.grpc_code, old.pending);
            }
            windows.insert(
                key.clone(),
                Window {
                    opened: Instant::now(),
                    pending: 0,
                    grpc_code: denial.grpc_code,
                },
            );
        }
        self.publish(&key, denial.grpc_code, 1);
    }

    /// Audits every closed window's pending refusals, every [`WINDOW`], until `shutdown`.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(WINDOW);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => self.flush(),
            }
        }
    }

    fn flush(&self) {
        let closed: Vec<_> = {
            let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<_> = windows
                .iter()
                .filter(|(_, w)| w.opened.elapsed() >= WINDOW)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| windows.remove(&k).map(|w| (k, w)))
                .filter(|(_, w)| w.pending > 0)
                .collect()
        };
        for (key, window) in closed {
            self.publish(&key, window.grpc_code, window.pending);
        }
    }

    /// Publishes one audit event standing for `count` refusals, without waiting for it.
    fn publish(&self, key: &(TenantId, &'static str, String), grpc_code: i32, count: u64) {
        let (tenant, reason, actor_id) = key;
        let event_id = Uuid::now_v7();
        let subject = Subject::audit(tenant, self.service);
        let id = msg_id(&subject, event_id);
        let event = AuditEvent {
            meta: Some(EventMeta {
                event_id: event_id.to_string(),
                tenant: tenant.as_str().to_owned(),
                occurred_at: Some(prost_types::Timestamp::from(SystemTime::now())),
                producer: self.service.as_str().to_owned(),
                request_id: String::new(),
            }),
            actor_type: ActorType::ApiKey.into(),
            actor_id: actor_id.clone(),
            action: ACTION.to_owned(),
            resource: format!("tenants/{tenant}"),
            outcome: Outcome::Denied.into(),
            grpc_code,
            reason: (*reason).to_owned(),
            records_affected: count,
            ..AuditEvent::default()
        };
        let jetstream = self.jetstream.clone();
        let subject = subject.as_str().to_owned();
        tokio::spawn(async move {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let published = jetstream
                .publish_with_headers(subject, headers, event.encode_to_vec().into())
                .await;
            let acked = match published {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = acked {
                tracing::error!(error = %error, audit.action = ACTION, "The audit event of refused requests could not be published.");
            }
        });
    }
}
