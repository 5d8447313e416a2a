//! The audit service against a real nats-server and Postgres: events published by services (with a
//! redelivered duplicate) are chained per tenant, listed in order and only to their tenant, and the
//! chain recomputes independently; tampering is found by VerifyLog. A deletion request is answered
//! with one empty receipt, however often it is delivered, and the tenant's events are kept.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use prost::Message as _;
use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};
use trustmesh_audit::settings::{DatabaseSettings, NatsSettings};
use trustmesh_audit::{Application, Settings};
use trustmesh_auth::{AuthBucket, IssuedKey, KeyRecord, Scope};
use trustmesh_bus::Publisher;
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{
    ActorType, AuditEvent, DeletionReceipt, DeletionRequested, DeletionScope, EventMeta, Outcome,
};
use trustmesh_proto::v1::audit_service_client::AuditServiceClient;
use trustmesh_proto::v1::{
    AuditFilter, AuditOutcome, AuditRecord, ListEventsRequest, VerifyLogRequest,
};
use trustmesh_runtime::{AdminSettings, GrpcSettings, ServerTls, TransportMode};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;

struct TestApp {
    addr: SocketAddr,
    nats: NatsServer,
    db: TestDatabase,
    publisher: Publisher,
    shutdown: CancellationToken,
}

impl TestApp {
    async fn spawn() -> Self {
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
        let settings = Settings {
            grpc: GrpcSettings {
                bind: "127.0.0.1:0".parse().unwrap(),
                tls: ServerTls {
                    mode: TransportMode::DevPlaintextLoopback,
                    ..ServerTls::default()
                },
                ..GrpcSettings::default()
            },
            admin: AdminSettings {
                bind: "127.0.0.1:0".parse().unwrap(),
            },
            database: DatabaseSettings {
                url: secrecy::SecretString::from(db.url()),
                max_connections: 4,
            },
            nats: NatsSettings { url: nats.url() },
            ..Settings::default()
        };
        let app = Application::build(settings).await.expect("the app builds");
        let addr = app.grpc_addr();
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let publisher = Publisher::new(nats.jetstream().await);
        Self {
            addr,
            nats,
            db,
            publisher,
            shutdown,
        }
    }

    async fn client(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("the gRPC server accepts connections")
    }

    /// A key of `tenant` with `scopes`, written to tm_auth as tenancy would.
    async fn key(&self, tenant: &str, scopes: &[Scope]) -> String {
        let issued = IssuedKey::generate();
        let bucket = AuthBucket::open(&self.nats.jetstream().await, 1)
            .await
            .unwrap();
        bucket
            .put(&KeyRecord {
                key_id: issued.key_id().clone(),
                tenant: tenant.to_owned(),
                scopes: scopes.iter().copied().collect(),
                expires_at: (OffsetDateTime::now_utc() + time::Duration::hours(1)).unix_timestamp(),
                revoked: false,
                digest: issued.digest().clone(),
            })
            .await
            .unwrap();
        issued.token().expose_secret().to_owned()
    }

    /// Publishes `event` as `service` would, with its own `Nats-Msg-Id` unless `msg` is given.
    async fn publish(&self, event: &AuditEvent, msg: Option<&str>) {
        let meta = event.meta.as_ref().unwrap();
        let subject = Subject::audit(
            &TenantId::parse(meta.tenant.as_str()).unwrap(),
            Service::Ingest,
        );
        let id = msg.map_or_else(
            || msg_id(&subject, meta.event_id.parse().unwrap()),
            str::to_owned,
        );
        self.publisher.publish(&subject, event, &id).await.unwrap();
    }

    /// Waits until the `audit-events` consumer has settled every published message.
    async fn drained(&self) {
        self.consumer_drained("audit-events", "TM_AUDIT").await;
    }

    /// Waits until the durable `consumer` of `stream` has settled every published message.
    async fn consumer_drained(&self, consumer: &str, stream: &str) {
        let js = self.nats.jetstream().await;
        let start = Instant::now();
        loop {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                js.get_consumer_from_stream(consumer, stream).await.unwrap();
            let info = consumer.info().await.unwrap();
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the consumer did not drain: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn list(
        &self,
        parent: &str,
        key: &str,
        filter: AuditFilter,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<AuditRecord>, String), tonic::Status> {
        let response = self
            .client()
            .await
            .list_events(authed(
                ListEventsRequest {
                    parent: parent.to_owned(),
                    filter: Some(filter),
                    page_size,
                    page_token: page_token.to_owned(),
                },
                key,
            ))
            .await?
            .into_inner();
        Ok((response.events, response.next_page_token))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// An audit event of `tenant` at a whole microsecond (what the store keeps).
fn event(tenant: &str, action: &str, outcome: Outcome, n: i64) -> AuditEvent {
    let at = OffsetDateTime::now_utc();
    AuditEvent {
        meta: Some(EventMeta {
            event_id: uuid::Uuid::now_v7().to_string(),
            tenant: tenant.to_owned(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: at.unix_timestamp(),
                nanos: i32::try_from(at.microsecond() * 1000).unwrap(),
            }),
            producer: "ingest".to_owned(),
            request_id: format!("req-{n}"),
        }),
        actor_type: ActorType::ApiKey as i32,
        actor_id: format!("tenants/{tenant}/apiKeys/k{n}"),
        action: action.to_owned(),
        resource: format!("tenants/{tenant}/datasets/d{n}"),
        outcome: outcome as i32,
        records_affected: u64::try_from(n).unwrap(),
        ..AuditEvent::default()
    }
}

#[tokio::test]
async fn events_are_chained_per_tenant_once_each_and_read_only_by_their_tenant()
-> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    let aaa_key = app.key("aaa", &[Scope::AuditRead]).await;
    let bbb_key = app.key("bbb", &[Scope::AuditRead]).await;
    let aaa_reader = app.key("aaa", &[Scope::DatasetsRead]).await;

    let aaa: Vec<AuditEvent> = [
        ("datasets.upload", Outcome::Allowed),
        ("datasets.get", Outcome::Allowed),
        ("datasets.get", Outcome::Denied),
        ("datasets.rows.read", Outcome::Allowed),
        ("datasets.get", Outcome::Error),
    ]
    .into_iter()
    .zip(1..)
    .map(|((action, outcome), n)| event("aaa", action, outcome, n))
    .collect();
    let bbb: Vec<AuditEvent> = (1..=3)
        .map(|n| event("bbb", "datasets.get", Outcome::Allowed, n))
        .collect();
    for e in aaa.iter().chain(&bbb) {
        app.publish(e, None).await;
    }
    // The same event again under another message id: JetStream cannot dedupe it, the consumer must.
    app.publish(&aaa[1], Some("replayed-by-an-outbox-after-a-crash"))
        .await;
    app.drained().await;

    let (records, next) = app
        .list("tenants/aaa", &aaa_key, AuditFilter::default(), 0, "")
        .await?;
    assert!(next.is_empty());
    assert_eq!(
        records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "one record per event, no gap"
    );
    let ids: BTreeSet<&str> = records.iter().map(|r| r.event_id.as_str()).collect();
    let published: BTreeSet<&str> = aaa
        .iter()
        .map(|e| e.meta.as_ref().unwrap().event_id.as_str())
        .collect();
    assert_eq!(ids, published);

    // The chain recomputes from the published events alone.
    let mut prev = [0_u8; 32].to_vec();
    for record in &records {
        let original = aaa
            .iter()
            .find(|e| e.meta.as_ref().unwrap().event_id == record.event_id)
            .unwrap();
        assert_eq!(record.prev_hash, hex::encode(&prev));
        let hash = Sha256::new()
            .chain_update(&prev)
            .chain_update(original.encode_to_vec())
            .finalize()
            .to_vec();
        assert_eq!(
            record.hash,
            hex::encode(&hash),
            "sequence {}",
            record.sequence
        );
        assert_eq!(record.service, "ingest");
        prev = hash;
    }
    let verified = app
        .client()
        .await
        .verify_log(authed(
            VerifyLogRequest {
                parent: "tenants/aaa".into(),
                ..VerifyLogRequest::default()
            },
            &aaa_key,
        ))
        .await?
        .into_inner();
    assert!(verified.valid);
    assert_eq!(verified.verified_count, 5);

    // Pages of two give the same records in the same order.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = app
            .list("tenants/aaa", &aaa_key, AuditFilter::default(), 2, &token)
            .await?;
        assert!(page.len() <= 2);
        paged.extend(page);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(paged, records);

    // Filters: outcome, action prefix, actor.
    let (denied, _) = app
        .list(
            "tenants/aaa",
            &aaa_key,
            AuditFilter {
                outcome: AuditOutcome::Denied as i32,
                ..AuditFilter::default()
            },
            0,
            "",
        )
        .await?;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].action, "datasets.get");
    let (rows, _) = app
        .list(
            "tenants/aaa",
            &aaa_key,
            AuditFilter {
                action: "datasets.r*".into(),
                ..AuditFilter::default()
            },
            0,
            "",
        )
        .await?;
    assert_eq!(
        rows.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["datasets.rows.read"]
    );
    let (by_actor, _) = app
        .list(
            "tenants/aaa",
            &aaa_key,
            AuditFilter {
                actor: "tenants/aaa/apiKeys/k1".into(),
                ..AuditFilter::default()
            },
            0,
            "",
        )
        .await?;
    assert_eq!(by_actor.len(), 1);

    // bbb sees its own three events and none of aaa's.
    let (bbb_records, _) = app
        .list("tenants/bbb", &bbb_key, AuditFilter::default(), 0, "")
        .await?;
    assert_eq!(
        bbb_records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        bbb_records
            .iter()
            .all(|r| r.resource.starts_with("tenants/bbb/"))
    );

    // aaa cannot read bbb's log, a key without audit:read cannot read its own, a page token does not
    // cross tenants, and no key is no access.
    let cross = app
        .list("tenants/bbb", &aaa_key, AuditFilter::default(), 0, "")
        .await
        .unwrap_err();
    assert_eq!(cross.code(), Code::NotFound);
    let no_scope = app
        .list("tenants/aaa", &aaa_reader, AuditFilter::default(), 0, "")
        .await
        .unwrap_err();
    assert_eq!(no_scope.code(), Code::PermissionDenied);
    let (_, aaa_token) = app
        .list("tenants/aaa", &aaa_key, AuditFilter::default(), 1, "")
        .await?;
    let replayed = app
        .list(
            "tenants/bbb",
            &bbb_key,
            AuditFilter::default(),
            1,
            &aaa_token,
        )
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), Code::InvalidArgument);
    let anonymous = app
        .client()
        .await
        .list_events(Request::new(ListEventsRequest {
            parent: "tenants/aaa".into(),
            ..ListEventsRequest::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    Ok(())
}

#[tokio::test]
async fn verify_log_names_the_first_tampered_sequence() -> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    let key = app.key("aaa", &[Scope::AuditRead]).await;
    for n in 1..=4 {
        app.publish(&event("aaa", "datasets.get", Outcome::Allowed, n), None)
            .await;
    }
    app.drained().await;
    let verify = || async {
        app.client()
            .await
            .verify_log(authed(
                VerifyLogRequest {
                    parent: "tenants/aaa".into(),
                    ..VerifyLogRequest::default()
                },
                &key,
            ))
            .await
            .unwrap()
            .into_inner()
    };
    assert!(verify().await.valid);

    // The table refuses changes; someone who gets around that is still caught.
    let pool = app.db.pool();
    let refused = sqlx::query("UPDATE audit.events SET resource = 'x' WHERE sequence = 3")
        .execute(pool)
        .await;
    assert!(refused.is_err(), "events are append-only");
    sqlx::query("ALTER TABLE audit.events DISABLE TRIGGER events_append_only")
        .execute(pool)
        .await?;
    sqlx::query("UPDATE audit.events SET resource = 'tenants/aaa/datasets/other' WHERE tenant = 'aaa' AND sequence = 3")
        .execute(pool)
        .await?;
    let modified = verify().await;
    assert!(!modified.valid);
    assert_eq!(modified.first_bad_sequence, Some(3));
    assert_eq!(modified.failure_reason, "HASH_MISMATCH");
    assert_eq!(modified.verified_count, 2);

    sqlx::query("DELETE FROM audit.events WHERE tenant = 'aaa' AND sequence = 2")
        .execute(pool)
        .await?;
    let deleted = verify().await;
    assert_eq!(deleted.first_bad_sequence, Some(2));
    assert_eq!(deleted.failure_reason, "GAP");

    sqlx::query("DELETE FROM audit.events WHERE tenant = 'aaa' AND sequence = 4")
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM audit.events WHERE tenant = 'aaa' AND sequence = 3")
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM audit.events WHERE tenant = 'aaa' AND sequence = 2")
        .execute(pool)
        .await?;
    let truncated = verify().await;
    assert_eq!(
        truncated.first_bad_sequence,
        Some(2),
        "a truncated tail is a gap"
    );
    Ok(())
}

/// Publishes a `deletion.requested` of `tenant` as the deletion service would, under a fresh
/// `Nats-Msg-Id` each time (a retry the stream cannot dedupe).
async fn request_deletion(
    app: &TestApp,
    tenant: &str,
    deletion: &str,
    scope: DeletionScope,
    target: &str,
) -> anyhow::Result<()> {
    let tenant_id = TenantId::parse(tenant)?;
    let request = DeletionRequested {
        meta: Some(EventMeta {
            event_id: uuid::Uuid::now_v7().to_string(),
            tenant: tenant.to_owned(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            producer: "deletion".to_owned(),
            request_id: "req-deletion".to_owned(),
        }),
        deletion: deletion.to_owned(),
        scope: scope.into(),
        target: target.to_owned(),
    };
    app.publisher
        .publish(
            &Subject::deletion_requested(&tenant_id),
            &request,
            &format!("test:{}", uuid::Uuid::now_v7()),
        )
        .await?;
    Ok(())
}

/// Every receipt of `tenant` in TM_DELETION.
async fn receipts(app: &TestApp, tenant: &str) -> Vec<DeletionReceipt> {
    let js = app.nats.jetstream().await;
    let stream = js
        .get_stream("TM_DELETION")
        .await
        .expect("TM_DELETION exists");
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: format!("tm.{tenant}.deletion.receipt"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut receipts = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    while let Some(Ok(message)) = batch.next().await {
        receipts.push(DeletionReceipt::decode(message.payload.as_ref()).unwrap());
    }
    receipts
}

#[tokio::test]
async fn deletions_are_answered_once_with_an_empty_receipt_and_the_log_is_kept()
-> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    let key = app.key("ccc", &[Scope::AuditRead]).await;
    for n in 1..=3 {
        app.publish(&event("ccc", "datasets.get", Outcome::Allowed, n), None)
            .await;
    }
    app.drained().await;

    // The same dataset deletion twice, under different message ids (a redelivery or a retry of
    // the deletion service), and one of another tenant's dataset on ccc's subject (poison).
    let deletion = "tenants/ccc/deletions/del-1";
    for _ in 0..2 {
        request_deletion(
            &app,
            "ccc",
            deletion,
            DeletionScope::Dataset,
            "tenants/ccc/datasets/d1",
        )
        .await?;
    }
    request_deletion(
        &app,
        "ccc",
        "tenants/ccc/deletions/del-2",
        DeletionScope::Dataset,
        "tenants/ddd/datasets/d1",
    )
    .await?;
    app.consumer_drained("audit-deletion", "TM_DELETION").await;

    let receipts = receipts(&app, "ccc").await;
    assert_eq!(receipts.len(), 1, "one receipt per deletion: {receipts:?}");
    let receipt = &receipts[0];
    assert_eq!(receipt.service, "audit");
    assert_eq!(receipt.deletion, deletion);
    assert_eq!(receipt.scope(), DeletionScope::Dataset);
    assert!(receipt.deleted.is_empty(), "{receipt:?}");
    assert!(!receipt.residue_found);
    assert!(receipt.residue.is_empty());
    assert_eq!(receipt.deks_destroyed, 0);
    let meta = receipt.meta.as_ref().unwrap();
    assert_eq!(meta.producer, "audit");
    assert_eq!(meta.tenant, "ccc");
    assert_eq!(meta.request_id, "req-deletion");
    assert!(meta.occurred_at.is_some(), "the completion time");

    // Audit events are retained, not shredded: the tenant's log is intact.
    let (records, _) = app
        .list("tenants/ccc", &key, AuditFilter::default(), 0, "")
        .await?;
    assert_eq!(
        records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let verified = app
        .client()
        .await
        .verify_log(authed(
            VerifyLogRequest {
                parent: "tenants/ccc".into(),
                ..VerifyLogRequest::default()
            },
            &key,
        ))
        .await?
        .into_inner();
    assert!(verified.valid);
    assert_eq!(verified.verified_count, 3);
    Ok(())
}
