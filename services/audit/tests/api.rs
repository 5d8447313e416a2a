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
use trustmesh_audit::settings::{CheckpointSettings, DatabaseSettings, KeySettings, NatsSettings};
use trustmesh_audit::{Application, Settings};
use trustmesh_auth::{AuthBucket, IssuedKey, KeyRecord, Scope};
use trustmesh_bus::Publisher;
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{
    ActorType, AuditEvent, DeletionReceipt, DeletionRequested, DeletionScope, EventMeta, Outcome,
};
use trustmesh_proto::v1::audit_service_client::AuditServiceClient;
use trustmesh_proto::v1::{
    AuditFilter, AuditOutcome, AuditRecord, AuditSigningKey, ExportEventsRequest,
    ListEventsRequest, VerifyLogRequest, VerifyLogResponse,
};
use trustmesh_runtime::{AdminSettings, GrpcSettings};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;

struct TestApp {
    addr: SocketAddr,
    nats: NatsServer,
    db: TestDatabase,
    publisher: Publisher,
    shutdown: CancellationToken,
    _keys: tempfile::TempDir,
}

impl TestApp {
    async fn spawn() -> Self {
        Self::spawn_with(CheckpointSettings::default()).await
    }

    /// The service with `checkpoints` and a fresh signing key in a temporary directory.
    async fn spawn_with(checkpoints: CheckpointSettings) -> Self {
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
        let keys = tempfile::tempdir().unwrap();
        let settings = Settings {
            keys: KeySettings {
                signing_key_file: keys.path().join("signing-key"),
            },
            checkpoints,
            grpc: GrpcSettings::dev_plaintext_loopback(),
            admin: AdminSettings::any_loopback_port(),
            database: DatabaseSettings {
                url: secrecy::SecretString::from(db.url()),
                max_connections: 4,
            },
            nats: NatsSettings::at(nats.url()),
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
            _keys: keys,
        }
    }

    async fn client(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("the gRPC server accepts connections")
    }

    /// A key of `tenant` with `scopes`, written to tm_auth as tenancy would.
    async fn key(&self, tenant: &str, scopes: &[Scope]) -> String {
        put_key(&self.nats, tenant, scopes).await
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

/// A key of `tenant` with `scopes`, written to tm_auth as tenancy would.
async fn put_key(nats: &NatsServer, tenant: &str, scopes: &[Scope]) -> String {
    let issued = IssuedKey::generate();
    let bucket = AuthBucket::open(&nats.jetstream().await, 1).await.unwrap();
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
            "tenants/ccc/datasets/0190a0c4-7e1c-7cc3-b5b4-5f0d3c1a2b3c",
        )
        .await?;
    }
    request_deletion(
        &app,
        "ccc",
        "tenants/ccc/deletions/del-2",
        DeletionScope::Dataset,
        "tenants/ddd/datasets/0190a0c4-7e1c-7cc3-b5b4-5f0d3c1a2b3c",
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

    // Audit events are retained, not shredded: the tenant's log is intact, and holds the poison
    // request's dead letter (it travels through the bus, so wait for it).
    let mut records = Vec::new();
    for _ in 0..100 {
        records = app
            .list("tenants/ccc", &key, AuditFilter::default(), 0, "")
            .await?
            .0;
        if records.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(records[3].action, "messages.deadLetter", "{records:?}");
    assert_eq!(
        records[3].resource, "tm.ccc.dlq.audit-deletion",
        "{records:?}"
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
    assert_eq!(verified.verified_count, 4);
    Ok(())
}

/// The whole `ExportEvents` stream of `parent`.
async fn export(app: &TestApp, parent: &str, key: &str) -> Vec<u8> {
    let mut stream = app
        .client()
        .await
        .export_events(authed(
            ExportEventsRequest {
                parent: parent.to_owned(),
                filter: None,
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut jsonl = Vec::new();
    while let Some(chunk) = stream.next().await {
        jsonl.extend(chunk.unwrap().jsonl_chunk);
    }
    jsonl
}

async fn verify_log(app: &TestApp, parent: &str, key: &str) -> VerifyLogResponse {
    app.client()
        .await
        .verify_log(authed(
            VerifyLogRequest {
                parent: parent.to_owned(),
                ..VerifyLogRequest::default()
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// The offline verdict on `jsonl` with the keys VerifyLog publishes.
fn offline(
    jsonl: &[u8],
    keys: &[AuditSigningKey],
) -> Result<trustmesh_audit::VerifiedExport, trustmesh_audit::ExportFailure> {
    let keys: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|k| (k.key_id.as_str(), k.public_key.as_slice()))
        .collect();
    trustmesh_audit::verify_export(jsonl, &keys)
}

#[tokio::test]
async fn checkpoints_are_signed_every_n_events_and_a_bad_signature_is_found() -> anyhow::Result<()>
{
    let app = TestApp::spawn_with(CheckpointSettings {
        every_events: 100,
        every_secs: 3600,
    })
    .await;
    let key = app.key("cpt", &[Scope::AuditRead]).await;
    for n in 1..=250 {
        app.publish(&event("cpt", "datasets.get", Outcome::Allowed, n), None)
            .await;
    }
    app.drained().await;

    let verified = verify_log(&app, "tenants/cpt", &key).await;
    assert!(verified.valid, "{verified:?}");
    assert_eq!(verified.verified_count, 250);
    let checkpoint = verified.checkpoint.clone().unwrap();
    assert_eq!(checkpoint.sequence, 200);
    assert_eq!(verified.verification_keys.len(), 1);
    let public = &verified.verification_keys[0];
    assert_eq!(public.algorithm, "ed25519");
    assert_eq!(public.key_id, trustmesh_audit::key_id(&public.public_key));
    assert_eq!(checkpoint.key_id, public.key_id);

    let pool = app.db.pool();
    let stored: Vec<(i64,)> =
        sqlx::query_as("SELECT sequence FROM audit.checkpoints WHERE tenant = 'cpt' ORDER BY 1")
            .fetch_all(pool)
            .await?;
    assert_eq!(stored, [(100,), (200,)]);

    let jsonl = export(&app, "tenants/cpt", &key).await;
    let offline_ok = offline(&jsonl, &verified.verification_keys).unwrap();
    // 250, and the export's own audit event if it was chained before the export read the log.
    assert!((250..=251).contains(&offline_ok.events), "{offline_ok:?}");
    assert_eq!(offline_ok.checkpoints, 2);
    assert_eq!(offline_ok.tenant, "cpt");
    // Another key does not vouch for them.
    let other = AuditSigningKey {
        key_id: public.key_id.clone(),
        public_key: vec![7; 32],
        ..public.clone()
    };
    assert_eq!(
        offline(&jsonl, &[other]).unwrap_err().first_bad_sequence,
        100
    );

    // The export is audited as an access of the tenant's log.
    app.drained().await;
    let (records, _) = app
        .list(
            "tenants/cpt",
            &key,
            AuditFilter {
                action: "audit.events.export".into(),
                ..AuditFilter::default()
            },
            0,
            "",
        )
        .await?;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].service, "audit");

    // A flipped signature byte is named at its checkpoint.
    sqlx::query("ALTER TABLE audit.checkpoints DISABLE TRIGGER checkpoints_append_only")
        .execute(pool)
        .await?;
    sqlx::query(
        "UPDATE audit.checkpoints SET signature = set_byte(signature, 0, get_byte(signature, 0) # 1)
         WHERE tenant = 'cpt' AND sequence = 100",
    )
    .execute(pool)
    .await?;
    let flipped = verify_log(&app, "tenants/cpt", &key).await;
    assert!(!flipped.valid);
    assert_eq!(flipped.first_bad_sequence, Some(100));
    assert_eq!(flipped.failure_reason, "CHECKPOINT_SIGNATURE");
    let failure = offline(
        &export(&app, "tenants/cpt", &key).await,
        &verified.verification_keys,
    )
    .unwrap_err();
    assert_eq!(failure.first_bad_sequence, 100);
    assert_eq!(failure.reason, "CHECKPOINT_SIGNATURE");
    Ok(())
}

#[tokio::test]
async fn every_kind_of_tampering_is_named_by_verify_log_and_the_offline_verifier()
-> anyhow::Result<()> {
    let app = TestApp::spawn_with(CheckpointSettings {
        every_events: 3,
        every_secs: 3600,
    })
    .await;
    let tenants = ["modt", "delt", "swpt", "inst", "trct", "tail"];
    let mut keys = Vec::new();
    for tenant in tenants {
        keys.push(app.key(tenant, &[Scope::AuditRead]).await);
        for n in 1..=10 {
            app.publish(&event(tenant, "datasets.get", Outcome::Allowed, n), None)
                .await;
        }
    }
    app.drained().await;
    let mut public = Vec::new();
    for (tenant, key) in tenants.iter().zip(&keys) {
        let verified = verify_log(&app, &format!("tenants/{tenant}"), key).await;
        assert!(verified.valid, "{tenant}: {verified:?}");
        assert_eq!(verified.checkpoint.unwrap().sequence, 9);
        public = verified.verification_keys;
    }

    let pool = app.db.pool();
    sqlx::query("ALTER TABLE audit.events DISABLE TRIGGER events_append_only")
        .execute(pool)
        .await?;
    let run = |sql: &'static str| async move {
        for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::query(statement).execute(pool).await.unwrap();
        }
    };
    // Modify one field of event 5.
    run("UPDATE audit.events SET actor_id = 'someone-else' WHERE tenant = 'modt' AND sequence = 5")
        .await;
    // Delete event 5.
    run("DELETE FROM audit.events WHERE tenant = 'delt' AND sequence = 5").await;
    // Swap events 4 and 5 (rows and all).
    run(
        "UPDATE audit.events SET sequence = 1000 WHERE tenant = 'swpt' AND sequence = 4;
         UPDATE audit.events SET sequence = 4 WHERE tenant = 'swpt' AND sequence = 5;
         UPDATE audit.events SET sequence = 5 WHERE tenant = 'swpt' AND sequence = 1000",
    )
    .await;
    // Insert an event after 5 (a copy of 5 under a new id), shifting the rest up.
    run(
        "UPDATE audit.events SET sequence = sequence + 100 WHERE tenant = 'inst' AND sequence > 5;
         UPDATE audit.events SET sequence = sequence - 99 WHERE tenant = 'inst' AND sequence > 100;
         INSERT INTO audit.events SELECT tenant, 6, event_id || '-forged', occurred_at, producer,
            meta_request_id, actor_type, actor_id, on_behalf_of, action, resource, outcome,
            grpc_code, reason, request_id, trace_id, source_ip, user_agent, records_affected,
            hash, hash FROM audit.events WHERE tenant = 'inst' AND sequence = 5",
    )
    .await;
    // Truncate the tail behind the last checkpoint (9), head row and all.
    run(
        "DELETE FROM audit.events WHERE tenant = 'trct' AND sequence > 7;
         UPDATE audit.chain_heads SET (sequence, hash) = (SELECT 7, hash FROM audit.events
            WHERE tenant = 'trct' AND sequence = 7) WHERE tenant = 'trct'",
    )
    .await;
    // Delete only the event after the last checkpoint: the head row still names it.
    run("DELETE FROM audit.events WHERE tenant = 'tail' AND sequence = 10").await;

    let expected: [(&str, u64, &str); 6] = [
        ("modt", 5, "HASH_MISMATCH"),
        ("delt", 5, "GAP"),
        ("swpt", 4, "LINK_MISMATCH"),
        ("inst", 6, "HASH_MISMATCH"),
        (
            "trct",
            8,
            "TRUNCATED: checkpoint at 9 but the log ends at 7",
        ),
        ("tail", 10, "GAP"),
    ];
    for ((tenant, sequence, reason), key) in expected.into_iter().zip(&keys) {
        let parent = format!("tenants/{tenant}");
        let online = verify_log(&app, &parent, key).await;
        assert!(!online.valid, "{tenant}");
        assert_eq!(
            online.first_bad_sequence,
            Some(sequence),
            "{tenant}: {online:?}"
        );
        assert_eq!(online.failure_reason, reason, "{tenant}");
        let jsonl = export(&app, &parent, key).await;
        match offline(&jsonl, &public) {
            // An export cannot show an event removed after the last checkpoint.
            Ok(verified) if tenant == "tail" => assert_eq!(verified.events, 9),
            Ok(verified) => panic!("{tenant}: the offline verifier passed {verified:?}"),
            Err(failure) => {
                assert_eq!(
                    failure.first_bad_sequence, sequence,
                    "{tenant}: {failure:?}"
                );
                assert_eq!(failure.reason, reason, "{tenant}");
            }
        }
    }
    Ok(())
}

/// Waits until the `audit-events` consumer on `nats` has settled every published message.
async fn wait_drained(nats: &NatsServer, limit: Duration) {
    let js = nats.jetstream().await;
    let start = Instant::now();
    loop {
        if let Ok(mut consumer) = js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                "audit-events",
                "TM_AUDIT",
            )
            .await
        {
            let info = consumer.info().await.unwrap();
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "the consumer did not drain: {info:?}"
            );
        }
        assert!(start.elapsed() < limit, "no consumer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The audit binary on `port`, against `db` and `nats`, signing with the key in `keys`.
fn start_process(
    db: &TestDatabase,
    nats: &NatsServer,
    port: u16,
    keys: &std::path::Path,
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_trustmesh-audit"))
        .env("TRUSTMESH_DATABASE__URL", db.url())
        .env("TRUSTMESH_NATS__URL", nats.url())
        .env("TRUSTMESH_GRPC__BIND", format!("127.0.0.1:{port}"))
        .env("TRUSTMESH_GRPC__TLS__MODE", "dev_plaintext_loopback")
        .env("TRUSTMESH_ADMIN__BIND", "127.0.0.1:0")
        .env("TRUSTMESH_KEYS__SIGNING_KEY_FILE", keys.join("signing-key"))
        .env("TRUSTMESH_CHECKPOINTS__EVERY_EVENTS", "50")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the audit binary starts")
}

#[tokio::test]
async fn a_kill_9_during_a_burst_leaves_a_complete_chain_without_gaps_or_duplicates()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let keys = tempfile::tempdir()?;
    let port = trustmesh_testkit::ports::free_port();
    let mut process = start_process(&db, &nats, port, keys.path());

    let publisher = Publisher::new(nats.jetstream().await);
    let events: Vec<AuditEvent> = (1..=500)
        .map(|n| event("kil", "datasets.rows.read", Outcome::Allowed, n))
        .collect();
    let burst = {
        let events = events.clone();
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let subject = Subject::audit(&TenantId::parse("kil").unwrap(), Service::Ingest);
            for e in &events {
                let id = msg_id(&subject, e.meta.as_ref().unwrap().event_id.parse().unwrap());
                publisher.publish(&subject, e, &id).await.unwrap();
            }
        })
    };
    // SIGKILL once the service is part-way through the burst.
    let pool = db.pool();
    let start = Instant::now();
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events")
            .fetch_one(pool)
            .await
            .unwrap_or(0);
        if stored >= 50 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing was appended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    process.start_kill()?;
    process.wait().await?;
    let at_kill: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events")
        .fetch_one(pool)
        .await?;
    burst.await?;
    assert!(
        at_kill < 500,
        "the kill came after the burst ({at_kill} stored)"
    );

    let _process = start_process(&db, &nats, port, keys.path());
    wait_drained(&nats, Duration::from_secs(60)).await;
    let key = put_key(&nats, "kil", &[Scope::AuditRead]).await;
    let start = Instant::now();
    let mut client = loop {
        match AuditServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(client) => break client,
            Err(_) if start.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the restarted service does not answer: {error}"),
        }
    };
    let mut records = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_events(authed(
                ListEventsRequest {
                    parent: "tenants/kil".into(),
                    filter: None,
                    page_size: 1000,
                    page_token: token.clone(),
                },
                &key,
            ))
            .await?
            .into_inner();
        records.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        (1..=500).collect::<Vec<u64>>(),
        "no gap, no duplicate (killed at {at_kill})"
    );
    let ids: BTreeSet<&str> = records.iter().map(|r| r.event_id.as_str()).collect();
    let published: BTreeSet<&str> = events
        .iter()
        .map(|e| e.meta.as_ref().unwrap().event_id.as_str())
        .collect();
    assert_eq!(ids, published);
    let verified = client
        .verify_log(authed(
            VerifyLogRequest {
                parent: "tenants/kil".into(),
                ..VerifyLogRequest::default()
            },
            &key,
        ))
        .await?
        .into_inner();
    assert!(verified.valid, "{verified:?}");
    assert_eq!(verified.verified_count, 500);
    // Checkpoints (every 50 events, or 10 s) survived the kill and still match the chain.
    assert!(verified.checkpoint.is_some_and(|cp| cp.sequence >= 450));
    Ok(())
}
