//! TenancyService over gRPC against a real nats-server and Postgres: tenants and keys are created,
//! resolved by another service's key cache, revoked everywhere, confined to their tenant, audited,
//! and their secrets are stored nowhere; a tenant's deletion removes its keys everywhere, with one
//! receipt. Support grants let the operator read only what they name, only until they end, and a
//! tenant over its request rate is refused without slowing another.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt as _;
use prost::Message as _;
use secrecy::SecretString;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request};
use trustmesh_auth::{
    AuthError, Authenticator, CacheOptions, GRANT_HEADER, KeyCache, Principal, RateLimit,
    Scope as AuthScope, TenantUsage, UsageBucket,
};
use trustmesh_bus::Publisher;
use trustmesh_events::{Service, Subject, TenantId};
use trustmesh_proto::events::v1::{
    AuditEvent, DeletionReceipt, DeletionRequested, DeletionScope, EventMeta, Outcome,
};
use trustmesh_proto::v1::tenancy_service_client::TenancyServiceClient;
use trustmesh_proto::v1::{
    CreateApiKeyRequest, CreateSupportAccessGrantRequest, CreateTenantRequest, EnableTenantRequest,
    GetQuotaRequest, GetTenantRequest, ListApiKeysRequest, ListSupportAccessGrantsRequest, Quota,
    QuotaUsage, RevokeApiKeyRequest, RevokeSupportAccessGrantRequest, Scope, SupportAccessGrant,
    UpdateQuotaRequest,
};
use trustmesh_runtime::{AdminSettings, GrpcSettings};
use trustmesh_tenancy::settings::{AuthSettings, DatabaseSettings, NatsSettings};
use trustmesh_tenancy::{Application, Settings};
use trustmesh_testkit::canary::Canary;
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;

/// What the tests allow a revocation to take to reach another service's cache.
const REVOCATION_BOUND: Duration = Duration::from_secs(2);

struct TestApp {
    addr: SocketAddr,
    nats: NatsServer,
    db: TestDatabase,
    operator: Canary,
    shutdown: CancellationToken,
}

impl TestApp {
    async fn spawn() -> Self {
        Self::spawn_with(RateLimit::default()).await
    }

    /// The app with `tenant_rate_limit` as the deployment's per-tenant request rate.
    async fn spawn_with(tenant_rate_limit: RateLimit) -> Self {
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
        // The operator credential is a canary, so the scan below proves it is stored nowhere either.
        let operator = Canary::new();
        let settings = Settings {
            grpc: GrpcSettings::dev_plaintext_loopback(),
            admin: AdminSettings::any_loopback_port(),
            database: DatabaseSettings {
                url: SecretString::from(db.url()),
                max_connections: 4,
            },
            nats: NatsSettings::at(nats.url()),
            auth: AuthSettings {
                operator_credential: Some(SecretString::from(operator.as_str())),
                tenant_rate_limit,
                ..AuthSettings::default()
            },
            ..Settings::default()
        };
        let app = Application::build(settings).await.expect("the app builds");
        let addr = app.grpc_addr();
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            addr,
            nats,
            db,
            operator,
            shutdown,
        }
    }

    async fn client(&self) -> TenancyServiceClient<Channel> {
        TenancyServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("the gRPC server accepts connections")
    }

    async fn create_tenant(&self, id: &str) {
        self.client()
            .await
            .create_tenant(authed(
                CreateTenantRequest {
                    tenant_id: id.to_owned(),
                    display_name: format!("Tenant {id}"),
                    ..CreateTenantRequest::default()
                },
                self.operator.as_str(),
            ))
            .await
            .expect("the operator creates a tenant");
    }

    /// Creates a key of `tenant` with `scopes` as the operator; returns its name and secret.
    async fn create_key(&self, tenant: &str, scopes: &[Scope]) -> (String, String) {
        let response = self
            .client()
            .await
            .create_api_key(authed(key_request(tenant, scopes), self.operator.as_str()))
            .await
            .expect("the operator creates a key")
            .into_inner();
        (response.api_key.unwrap().name, response.secret)
    }

    /// Another service's view of `tm_auth`.
    async fn other_service_cache(&self) -> Authenticator {
        let cache = KeyCache::start(
            &self.nats.jetstream().await,
            CacheOptions::default(),
            self.shutdown.clone(),
        )
        .await
        .expect("a second cache loads tm_auth");
        Authenticator::new(cache)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn key_request(tenant: &str, scopes: &[Scope]) -> CreateApiKeyRequest {
    let expire = OffsetDateTime::now_utc() + time::Duration::days(30);
    CreateApiKeyRequest {
        parent: format!("tenants/{tenant}"),
        display_name: "ci".to_owned(),
        scopes: scopes.iter().map(|s| *s as i32).collect(),
        expire_time: Some(prost_types::Timestamp {
            seconds: expire.unix_timestamp(),
            nanos: 0,
        }),
        request_id: String::new(),
    }
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn bearer(token: &str) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    metadata
}

/// Every audit event published for `tenant`, waiting until at least `at_least` are in.
async fn audit_events(nats: &NatsServer, tenant: &str, at_least: usize) -> Vec<AuditEvent> {
    let js = nats.jetstream().await;
    let stream = js.get_stream("TM_AUDIT").await.expect("TM_AUDIT exists");
    let start = Instant::now();
    loop {
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject: format!("tm.{tenant}.audit.tenancy"),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut events = Vec::new();
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .unwrap();
        while let Some(Ok(message)) = batch.next().await {
            events.push(AuditEvent::decode(message.payload.as_ref()).unwrap());
        }
        if events.len() >= at_least || start.elapsed() > Duration::from_secs(10) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_operator_creates_a_tenant_and_a_key_that_another_service_resolves()
-> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let (name, secret) = app
        .create_key("acme", &[Scope::Admin, Scope::AuditRead])
        .await;
    assert!(secret.starts_with("tmk_"), "the secret is returned once");

    // Another service resolves the key locally from tm_auth.
    let other = app.other_service_cache().await;
    let principal = other.authenticate(&bearer(&secret), OffsetDateTime::now_utc())?;
    let Principal::ApiKey(key) = principal else {
        panic!("the key resolved to {principal:?}");
    };
    assert_eq!(key.tenant.as_str(), "acme");
    assert_eq!(key.name(), name);

    // The key works on tenancy itself: it reads its tenant and lists keys, never with secrets.
    let mut client = app.client().await;
    let tenant = client
        .get_tenant(authed(
            GetTenantRequest {
                name: "tenants/acme".into(),
            },
            &secret,
        ))
        .await?
        .into_inner();
    assert_eq!(tenant.display_name, "Tenant acme");
    let listed = client
        .list_api_keys(authed(
            ListApiKeysRequest {
                parent: "tenants/acme".into(),
                ..ListApiKeysRequest::default()
            },
            &secret,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.api_keys.len(), 1);
    assert_eq!(listed.api_keys[0].name, name);
    assert!(!format!("{listed:?}").contains(&secret[secret.len() - 20..]));

    // A duplicate tenant is refused; a missing credential is unauthenticated.
    let duplicate = client
        .create_tenant(authed(
            CreateTenantRequest {
                tenant_id: "acme".into(),
                ..CreateTenantRequest::default()
            },
            app.operator.as_str(),
        ))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let anonymous = client
        .get_tenant(Request::new(GetTenantRequest {
            name: "tenants/acme".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    // Later versions' RPCs say so, without pretending to be unimplemented.
    let later = client
        .enable_tenant(authed(
            EnableTenantRequest {
                name: "tenants/acme".into(),
            },
            &secret,
        ))
        .await
        .unwrap_err();
    assert_eq!(later.code(), Code::FailedPrecondition);

    // Each access to the tenant is in its audit stream.
    let events = audit_events(&app.nats, "acme", 7).await;
    // Allowed calls go through the outbox in order; the failed one is published at once, so it is
    // checked on its own.
    let allowed: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.outcome() == Outcome::Allowed)
        .map(|e| (e.action.as_str(), e.actor_id.as_str()))
        .collect();
    assert_eq!(
        allowed,
        [
            ("tenants.create", "operator"),
            ("apiKeys.create", "operator"),
            ("tenants.get", name.as_str()),
            ("apiKeys.list", name.as_str()),
        ]
    );
    let mut failed: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.outcome() != Outcome::Allowed)
        .map(|e| (e.action.as_str(), e.reason.as_str()))
        .collect();
    failed.sort_unstable();
    assert_eq!(
        failed,
        [
            ("tenants.create", "ALREADY_EXISTS"),
            ("tenants.enable", "NOT_AVAILABLE")
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_revoked_key_is_refused_by_every_service_within_the_bound() -> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let (name, secret) = app.create_key("acme", &[Scope::Admin]).await;
    let other = app.other_service_cache().await;
    assert!(
        other
            .authenticate(&bearer(&secret), OffsetDateTime::now_utc())
            .is_ok()
    );

    // The key revokes itself (an admin key may).
    let mut client = app.client().await;
    let revoked = client
        .revoke_api_key(authed(RevokeApiKeyRequest { name: name.clone() }, &secret))
        .await?
        .into_inner();
    assert!(revoked.revoke_time.is_some());
    let revoked_at = Instant::now();
    loop {
        match other.authenticate(&bearer(&secret), OffsetDateTime::now_utc()) {
            Err(AuthError::Revoked) => break,
            other => assert!(
                revoked_at.elapsed() < REVOCATION_BOUND,
                "still {other:?} after {REVOCATION_BOUND:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = client
        .get_tenant(authed(
            GetTenantRequest {
                name: "tenants/acme".into(),
            },
            &secret,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Revoked keys are listed only when asked for.
    let mut client = app.client().await;
    let active = client
        .list_api_keys(authed(
            ListApiKeysRequest {
                parent: "tenants/acme".into(),
                ..ListApiKeysRequest::default()
            },
            app.operator.as_str(),
        ))
        .await?
        .into_inner();
    assert!(active.api_keys.is_empty());
    let all = client
        .list_api_keys(authed(
            ListApiKeysRequest {
                parent: "tenants/acme".into(),
                show_inactive: true,
                ..ListApiKeysRequest::default()
            },
            app.operator.as_str(),
        ))
        .await?
        .into_inner();
    assert_eq!(all.api_keys.len(), 1);
    Ok(())
}

#[tokio::test]
async fn keys_are_confined_to_their_tenant_and_scopes() -> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_tenant("beta").await;
    let (_, acme_admin) = app.create_key("acme", &[Scope::Admin]).await;
    let (_, acme_reader) = app.create_key("acme", &[Scope::DatasetsRead]).await;
    let (beta_key, _) = app.create_key("beta", &[Scope::Admin]).await;
    let mut client = app.client().await;

    // Another tenant's keys, tenant and revocation answer like things that do not exist.
    for status in [
        client
            .list_api_keys(authed(
                ListApiKeysRequest {
                    parent: "tenants/beta".into(),
                    ..ListApiKeysRequest::default()
                },
                &acme_admin,
            ))
            .await
            .unwrap_err(),
        client
            .get_tenant(authed(
                GetTenantRequest {
                    name: "tenants/beta".into(),
                },
                &acme_admin,
            ))
            .await
            .unwrap_err(),
        client
            .revoke_api_key(authed(
                RevokeApiKeyRequest {
                    name: beta_key.clone(),
                },
                &acme_admin,
            ))
            .await
            .unwrap_err(),
        client
            .get_tenant(authed(
                GetTenantRequest {
                    name: "tenants/nope".into(),
                },
                &acme_admin,
            ))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(!status.message().contains("beta key"), "{status:?}");
    }
    // Missing scope, and tenant management without the operator credential.
    let no_scope = client
        .create_api_key(authed(key_request("acme", &[Scope::Admin]), &acme_reader))
        .await
        .unwrap_err();
    assert_eq!(no_scope.code(), Code::PermissionDenied);
    let not_operator = client
        .create_tenant(authed(
            CreateTenantRequest {
                tenant_id: "gamma".into(),
                ..CreateTenantRequest::default()
            },
            &acme_admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(not_operator.code(), Code::PermissionDenied);
    // Bad input is named.
    let mut no_expiry = key_request("acme", &[Scope::Admin]);
    no_expiry.expire_time = None;
    let invalid = client
        .create_api_key(authed(no_expiry, &acme_admin))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().contains("expire_time"));

    // beta's untouched key still works, and the denial is in beta's audit stream.
    let beta_events = audit_events(&app.nats, "beta", 5).await;
    assert!(
        beta_events
            .iter()
            .any(|e| e.outcome() == Outcome::Denied && e.reason == "OTHER_TENANT"),
        "{beta_events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn no_secret_is_stored_in_postgres_or_on_the_bus() -> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let (_, secret) = app.create_key("acme", &[Scope::Admin]).await;
    // `tmk_<key id>_<secret>`: the secret is base64url, so it may itself hold a `_`.
    let (_, encoded_secret) = secret["tmk_".len()..].split_once('_').unwrap();
    let raw_secret = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        encoded_secret,
    )?;
    audit_events(&app.nats, "acme", 2).await;

    // The operator credential (a testkit canary) is in no table.
    assert_eq!(app.operator.scan_postgres(app.db.pool()).await?, []);
    // Nor is the key's secret, as text or as bytes, in any column of any table.
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(app.db.pool())
    .await?;
    assert!(!columns.is_empty());
    for (schema, table, column) in columns {
        let hits: i64 = sqlx::query_scalar(&format!(
            r#"SELECT count(*) FROM "{schema}"."{table}"
               WHERE strpos("{column}"::text, $1) > 0 OR strpos("{column}"::text, $2) > 0"#
        ))
        .bind(encoded_secret)
        .bind(hex::encode(&raw_secret))
        .fetch_one(app.db.pool())
        .await?;
        assert_eq!(hits, 0, "the secret is in {schema}.{table}.{column}");
    }

    // Nor in any message of any stream (tm_auth's KV_tm_auth and TM_AUDIT included).
    let js = app.nats.jetstream().await;
    let mut names = js.stream_names();
    let mut scanned = 0;
    while let Some(name) = names.next().await {
        let stream = js.get_stream(name?).await?;
        let last = stream.cached_info().state.last_sequence;
        for seq in 1..=last {
            let Ok(message) = stream.get_raw_message(seq).await else {
                continue;
            };
            let payload = message.payload.to_vec();
            scanned += 1;
            assert!(
                !contains(&payload, encoded_secret.as_bytes()) && !contains(&payload, &raw_secret),
                "the secret is in stream {} message {seq}",
                stream.cached_info().config.name
            );
            assert!(!contains(&payload, app.operator.as_bytes()));
        }
    }
    assert!(scanned >= 3, "tm_auth and TM_AUDIT hold messages to scan");
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Publishes a `DeletionRequested` for `tenant` under a fresh message id (so a repeat is stored
/// again, as a retry by the deletion service would be).
async fn request_deletion(
    nats: &NatsServer,
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
            producer: "test".to_owned(),
            request_id: String::new(),
        }),
        deletion: deletion.to_owned(),
        scope: scope.into(),
        target: target.to_owned(),
    };
    Publisher::new(nats.jetstream().await)
        .publish(
            &Subject::deletion_requested(&tenant_id),
            &request,
            &format!("test:{}", uuid::Uuid::now_v7()),
        )
        .await?;
    Ok(())
}

/// Every receipt on `tm.<tenant>.deletion.receipt`, waiting until at least `at_least` are in.
async fn wait_receipts(nats: &NatsServer, tenant: &str, at_least: usize) -> Vec<DeletionReceipt> {
    let js = nats.jetstream().await;
    let stream = js
        .get_stream("TM_DELETION")
        .await
        .expect("TM_DELETION exists");
    let start = Instant::now();
    loop {
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject: format!("tm.{tenant}.deletion.receipt"),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut receipts = Vec::new();
        let mut batch = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .unwrap();
        while let Some(Ok(message)) = batch.next().await {
            receipts.push(DeletionReceipt::decode(message.payload.as_ref()).unwrap());
        }
        if receipts.len() >= at_least || start.elapsed() > Duration::from_secs(10) {
            return receipts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `tenancy-deletion` has handled and acked everything stored so far.
async fn wait_deletion_idle(nats: &NatsServer) {
    let js = nats.jetstream().await;
    let start = Instant::now();
    loop {
        let mut consumer: jetstream::consumer::PullConsumer = js
            .get_stream("TM_DELETION")
            .await
            .unwrap()
            .get_consumer("tenancy-deletion")
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tenancy-deletion never became idle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tenant_rows(app: &TestApp, tenant: &str) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM tenancy.api_keys WHERE tenant = $1),
                (SELECT count(*) FROM tenancy.tenants WHERE id = $1)",
    )
    .bind(tenant)
    .fetch_one(app.db.pool())
    .await?)
}

#[tokio::test]
async fn deleting_a_tenant_deletes_its_keys_everywhere_with_one_receipt() -> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_tenant("beta").await;
    let (_, acme_admin) = app.create_key("acme", &[Scope::Admin]).await;
    let (_, acme_reader) = app.create_key("acme", &[Scope::DatasetsRead]).await;
    let (_, beta_admin) = app.create_key("beta", &[Scope::Admin]).await;
    // A live support grant of acme: its tm_auth record names the tenant and a dataset.
    let dataset = format!("tenants/acme/datasets/{}", uuid::Uuid::now_v7());
    let grant = app
        .client()
        .await
        .create_support_access_grant(authed(
            grant_request(
                "acme",
                &[Scope::DatasetsRead],
                &[dataset.as_str()],
                time::Duration::hours(1),
            ),
            &acme_admin,
        ))
        .await?
        .into_inner();
    let grant_key = format!("grants.{}", grant.name.rsplit('/').next().unwrap());
    let tm_auth = app.nats.jetstream().await.get_key_value("tm_auth").await?;
    assert!(tm_auth.get(&grant_key).await?.is_some());

    let deletion = format!("tenants/acme/deletions/{}", uuid::Uuid::now_v7());
    request_deletion(
        &app.nats,
        "acme",
        &deletion,
        DeletionScope::Tenant,
        "tenants/acme",
    )
    .await?;
    let receipts = wait_receipts(&app.nats, "acme", 1).await;
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    let receipt = &receipts[0];
    assert_eq!(receipt.service, "tenancy");
    assert_eq!(receipt.deletion, deletion);
    assert_eq!(receipt.scope(), DeletionScope::Tenant);
    assert_eq!(receipt.deleted.get("rows:api_keys"), Some(&2));
    assert_eq!(receipt.deleted.get("rows:tenants"), Some(&1));
    // Two keys and the grant.
    assert_eq!(receipt.deleted.get("kv:tm_auth"), Some(&3));
    assert!(!receipt.residue_found, "{receipt:?}");
    assert!(receipt.residue.is_empty());
    assert_eq!(receipt.deks_destroyed, 0);

    // A service starting now resolves neither key; the other tenant's still works.
    let fresh = app.other_service_cache().await;
    let now = OffsetDateTime::now_utc();
    for secret in [&acme_admin, &acme_reader] {
        assert!(matches!(
            fresh.authenticate(&bearer(secret), now),
            Err(AuthError::UnknownKey)
        ));
    }
    assert!(fresh.authenticate(&bearer(&beta_admin), now).is_ok());
    // The grant's record is purged (value and history), its row gone with the tenant's.
    assert!(tm_auth.get(&grant_key).await?.is_none());
    let history: Vec<_> = tm_auth.history(&grant_key).await?.collect().await;
    assert!(
        history.iter().all(|entry| entry
            .as_ref()
            .is_ok_and(|e| e.operation == jetstream::kv::Operation::Purge && e.value.is_empty())),
        "only the purge marker is left: {history:?}"
    );
    // No row of acme is left; beta's are untouched.
    assert_eq!(tenant_rows(&app, "acme").await?, (0, 0));
    assert_eq!(tenant_rows(&app, "beta").await?, (1, 1));
    // The deletion is audited.
    let events = audit_events(&app.nats, "acme", 6).await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "tenants.delete" && e.records_affected == 6),
        "{events:?}"
    );

    // The same request again: no second effect, no second receipt.
    request_deletion(
        &app.nats,
        "acme",
        &deletion,
        DeletionScope::Tenant,
        "tenants/acme",
    )
    .await?;
    wait_deletion_idle(&app.nats).await;
    // NOTE: a second receipt would have been committed to the outbox by now; give the relay time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wait_receipts(&app.nats, "acme", 2).await.len(), 1);

    // A dataset: tenancy holds nothing of it, so an empty receipt, and beta keeps everything.
    let deletion = format!("tenants/beta/deletions/{}", uuid::Uuid::now_v7());
    let dataset = format!("tenants/beta/datasets/{}", uuid::Uuid::now_v7());
    request_deletion(
        &app.nats,
        "beta",
        &deletion,
        DeletionScope::Dataset,
        &dataset,
    )
    .await?;
    let receipts = wait_receipts(&app.nats, "beta", 1).await;
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0].deletion, deletion);
    assert_eq!(receipts[0].scope(), DeletionScope::Dataset);
    assert!(receipts[0].deleted.is_empty());
    assert!(!receipts[0].residue_found);
    assert_eq!(tenant_rows(&app, "beta").await?, (1, 1));
    let fresh = app.other_service_cache().await;
    assert!(
        fresh
            .authenticate(&bearer(&beta_admin), OffsetDateTime::now_utc())
            .is_ok()
    );
    Ok(())
}

/// A support grant of `tenant` for `scopes` on `resources`, ending `lifetime` from now.
fn grant_request(
    tenant: &str,
    scopes: &[Scope],
    resources: &[&str],
    lifetime: time::Duration,
) -> CreateSupportAccessGrantRequest {
    let expire = OffsetDateTime::now_utc() + lifetime;
    CreateSupportAccessGrantRequest {
        parent: format!("tenants/{tenant}"),
        support_access_grant: Some(SupportAccessGrant {
            grantee: "support@operator.example".to_owned(),
            reason: "ticket 42: dataset fails to ingest".to_owned(),
            scopes: scopes.iter().map(|s| *s as i32).collect(),
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            expire_time: Some(prost_types::Timestamp {
                seconds: expire.unix_timestamp(),
                nanos: 0,
            }),
            ..SupportAccessGrant::default()
        }),
        request_id: String::new(),
    }
}

/// The operator credential plus the support grant `grant` (its name's last segment) in the header.
fn operator_with_grant(operator: &str, grant: &str) -> MetadataMap {
    let mut metadata = bearer(operator);
    let id = grant.rsplit('/').next().unwrap();
    metadata.insert(GRANT_HEADER, id.parse().unwrap());
    metadata
}

/// Waits until `check` holds, at most `bound`.
async fn within(what: &str, bound: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < bound, "{what} not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_operator_reads_only_what_a_support_grant_names_until_it_ends() -> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_tenant("beta").await;
    let (admin_name, admin) = app.create_key("acme", &[Scope::Admin]).await;
    let mut client = app.client().await;
    // A data service that is not configured with the operator credential: it knows it from tm_auth.
    let other = app.other_service_cache().await;
    let operator = app.operator.as_str();
    let (d1, d2) = ("tenants/acme/datasets/d1", "tenants/acme/datasets/d2");
    let read = |metadata: &MetadataMap, resource: &str| {
        other
            .authenticate(metadata, OffsetDateTime::now_utc())
            .and_then(|p| p.require(AuthScope::DatasetsRead, "name", resource))
    };

    // Without a grant the operator is recognized, and denied every data RPC.
    assert_eq!(
        other.authenticate(&bearer(operator), OffsetDateTime::now_utc()),
        Ok(Principal::Operator)
    );
    assert!(matches!(
        read(&bearer(operator), d1),
        Err(AuthError::OperatorDenied { .. })
    ));
    // Only the tenant's admin grants: not the operator, and not beyond the tenant or 7 days.
    let by_operator = client
        .create_support_access_grant(authed(
            grant_request(
                "acme",
                &[Scope::DatasetsRead],
                &[d1],
                time::Duration::hours(1),
            ),
            operator,
        ))
        .await
        .unwrap_err();
    assert_eq!(by_operator.code(), Code::PermissionDenied);
    for invalid in [
        grant_request("acme", &[Scope::Admin], &[d1], time::Duration::hours(1)),
        grant_request(
            "acme",
            &[Scope::DatasetsRead],
            &["tenants/beta/datasets/d1"],
            time::Duration::hours(1),
        ),
        grant_request(
            "acme",
            &[Scope::DatasetsRead],
            &["tenants/acme/datasets/d1/../d2"],
            time::Duration::hours(1),
        ),
        grant_request(
            "acme",
            &[Scope::DatasetsRead],
            &[d1],
            time::Duration::days(8),
        ),
    ] {
        let status = client
            .create_support_access_grant(authed(invalid, &admin))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }

    // The admin grants datasets:read on d1 for an hour.
    let grant = client
        .create_support_access_grant(authed(
            grant_request(
                "acme",
                &[Scope::DatasetsRead],
                &[d1],
                time::Duration::hours(1),
            ),
            &admin,
        ))
        .await?
        .into_inner();
    assert_eq!(grant.resources, [d1]);
    let with_grant = operator_with_grant(operator, &grant.name);
    within(
        "the grant reaching another service",
        REVOCATION_BOUND,
        || read(&with_grant, d1).is_ok(),
    )
    .await;
    // It reads d1 and what is under it; nothing else, and nothing of another tenant.
    assert!(read(&with_grant, &format!("{d1}/rows")).is_ok());
    for denied in [d2, "tenants/beta/datasets/d1", "tenants/acme"] {
        assert!(
            matches!(
                read(&with_grant, denied),
                Err(AuthError::OperatorDenied { .. })
            ),
            "{denied}"
        );
    }
    let support = other.authenticate(&with_grant, OffsetDateTime::now_utc())?;
    assert!(matches!(
        support.require(AuthScope::DatasetsWrite, "name", d1),
        Err(AuthError::OperatorDenied { .. })
    ));
    // Each use is audited as the grant's.
    let actor = format!("operator:{}", grant.name);
    assert_eq!(support.actor_id(), actor);
    let mut used = authed(
        GetTenantRequest {
            name: "tenants/acme".into(),
        },
        operator,
    );
    *used.metadata_mut() = with_grant.clone();
    client.get_tenant(used).await?;

    // Admin and operator see it listed.
    for token in [admin.as_str(), operator] {
        let listed = client
            .list_support_access_grants(authed(
                ListSupportAccessGrantsRequest {
                    parent: "tenants/acme".into(),
                    ..ListSupportAccessGrantsRequest::default()
                },
                token,
            ))
            .await?
            .into_inner();
        assert_eq!(listed.support_access_grants, std::slice::from_ref(&grant));
    }

    // Revoked, it stops working on every service within the revocation bound.
    let revoked = client
        .revoke_support_access_grant(authed(
            RevokeSupportAccessGrantRequest {
                name: grant.name.clone(),
            },
            &admin,
        ))
        .await?
        .into_inner();
    assert!(revoked.revoke_time.is_some());
    within(
        "the revocation reaching another service",
        REVOCATION_BOUND,
        || matches!(read(&with_grant, d1), Err(AuthError::OperatorDenied { .. })),
    )
    .await;
    assert_eq!(
        other.authenticate(&with_grant, OffsetDateTime::now_utc()),
        Ok(Principal::Operator)
    );

    // A short grant ends by itself.
    let short = client
        .create_support_access_grant(authed(
            grant_request(
                "acme",
                &[Scope::DatasetsRead],
                &[],
                time::Duration::seconds(2),
            ),
            &admin,
        ))
        .await?
        .into_inner();
    let with_short = operator_with_grant(operator, &short.name);
    within(
        "the short grant reaching another service",
        REVOCATION_BOUND,
        || read(&with_short, d2).is_ok(),
    )
    .await;
    within("the short grant's expiry", Duration::from_secs(4), || {
        matches!(read(&with_short, d2), Err(AuthError::OperatorDenied { .. }))
    })
    .await;

    // Creation, use and revocation are in the tenant's audit log.
    let events = audit_events(&app.nats, "acme", 12).await;
    let seen: Vec<(&str, &str, Outcome)> = events
        .iter()
        .filter(|e| e.action.starts_with("supportAccessGrants.") || e.action == "tenants.get")
        .map(|e| (e.action.as_str(), e.actor_id.as_str(), e.outcome()))
        .collect();
    for expected in [
        ("supportAccessGrants.create", "operator", Outcome::Denied),
        (
            "supportAccessGrants.create",
            admin_name.as_str(),
            Outcome::Allowed,
        ),
        ("tenants.get", actor.as_str(), Outcome::Allowed),
        (
            "supportAccessGrants.revoke",
            admin_name.as_str(),
            Outcome::Allowed,
        ),
    ] {
        assert!(seen.contains(&expected), "{expected:?} not in {seen:?}");
    }
    let created = events
        .iter()
        .find(|e| e.action == "supportAccessGrants.create" && e.outcome() == Outcome::Allowed)
        .unwrap();
    assert_eq!(created.resource, grant.name);
    Ok(())
}

#[tokio::test]
async fn a_tenant_over_its_request_rate_is_refused_with_retry_info_and_others_are_not()
-> anyhow::Result<()> {
    let burst = 5;
    let app = TestApp::spawn_with(RateLimit {
        requests_per_second: NonZeroU32::new(2).unwrap(),
        burst: NonZeroU32::new(burst).unwrap(),
    })
    .await;
    app.create_tenant("acme").await;
    app.create_tenant("beta").await;
    let (_, acme) = app.create_key("acme", &[Scope::Admin]).await;
    let (_, beta) = app.create_key("beta", &[Scope::Admin]).await;
    let mut client = app.client().await;
    let get = |tenant: &str, token: &str| {
        authed(
            GetTenantRequest {
                name: format!("tenants/{tenant}"),
            },
            token,
        )
    };

    // acme hammers: its burst passes, then it is told when to retry.
    let mut refused = None;
    for _ in 0..(burst * 3) {
        if let Err(status) = client.get_tenant(get("acme", &acme)).await {
            refused = Some(status);
            break;
        }
    }
    let refused = refused.expect("acme is refused once over its rate");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let retry = tonic_types::StatusExt::get_details_retry_info(&refused)
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo with a delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );

    // beta, meanwhile, has its whole burst; the operator is not limited.
    for _ in 0..burst {
        client.get_tenant(get("beta", &beta)).await?;
    }
    for _ in 0..(burst * 3) {
        client
            .get_tenant(get("acme", app.operator.as_str()))
            .await?;
    }
    // Once acme waits as told, it is served again.
    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    client.get_tenant(get("acme", &acme)).await?;
    Ok(())
}

#[tokio::test]
async fn quotas_are_read_by_the_tenant_set_by_the_operator_and_reach_every_service()
-> anyhow::Result<()> {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_tenant("beta").await;
    let (acme_key, acme) = app.create_key("acme", &[Scope::Admin]).await;
    let (_, beta) = app.create_key("beta", &[Scope::Admin]).await;
    let other = app.other_service_cache().await;
    let mut client = app.client().await;
    let get = |token: &str, name: &str| {
        authed(
            GetQuotaRequest {
                name: name.to_owned(),
            },
            token,
        )
    };
    let update = |token: &str, quota: Quota, paths: &[&str]| {
        authed(
            UpdateQuotaRequest {
                quota: Some(quota),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                }),
            },
            token,
        )
    };

    // The tenant's admin reads the deployment's defaults; another tenant's admin finds nothing.
    let quota = client
        .get_quota(get(&acme, "tenants/acme/quota"))
        .await?
        .into_inner();
    assert_eq!(quota.name, "tenants/acme/quota");
    assert_eq!(
        (
            quota.max_requests_per_minute,
            quota.max_concurrent_jobs,
            quota.max_storage_bytes
        ),
        (6000, 20, 100 << 30)
    );
    let foreign = client
        .get_quota(get(&beta, "tenants/acme/quota"))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);

    // Only the operator changes it, and only the per-tenant quotas.
    let lowered = Quota {
        name: "tenants/acme/quota".to_owned(),
        max_requests_per_minute: 60,
        max_concurrent_jobs: 3,
        ..Quota::default()
    };
    let denied = client
        .update_quota(update(&acme, lowered.clone(), &[]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let unknown = client
        .update_quota(update(
            app.operator.as_str(),
            lowered.clone(),
            &["max_datasets"],
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    let updated = client
        .update_quota(update(
            app.operator.as_str(),
            lowered,
            &["max_requests_per_minute", "max_concurrent_jobs"],
        ))
        .await?
        .into_inner();
    assert_eq!(
        (
            updated.max_requests_per_minute,
            updated.max_concurrent_jobs,
            updated.max_storage_bytes
        ),
        (60, 3, 100 << 30)
    );
    let read = client
        .get_quota(get(app.operator.as_str(), "tenants/acme/quota"))
        .await?
        .into_inner();
    assert_eq!(read, updated);

    // Usage: what ingest and analysis last reported for the tenant, together; nothing reported
    // reads as zero, and another tenant's reports never show.
    assert_eq!(read.usage, Some(QuotaUsage::default()));
    let usage = UsageBucket::open(&app.nats.jetstream().await, 1).await?;
    let acme_id = TenantId::parse("acme")?;
    let beta_id = TenantId::parse("beta")?;
    usage
        .report(
            &acme_id,
            Service::Ingest,
            &TenantUsage {
                datasets: 2,
                storage_bytes: 4096,
                ..TenantUsage::default()
            },
        )
        .await?;
    usage
        .report(
            &acme_id,
            Service::Analysis,
            &TenantUsage {
                concurrent_jobs: 1,
                ..TenantUsage::default()
            },
        )
        .await?;
    usage
        .report(
            &beta_id,
            Service::Ingest,
            &TenantUsage {
                datasets: 7,
                storage_bytes: 1,
                ..TenantUsage::default()
            },
        )
        .await?;
    let acme_usage = |quota: Quota| quota.usage.expect("usage filled");
    let read = client
        .get_quota(get(&acme, "tenants/acme/quota"))
        .await?
        .into_inner();
    assert_eq!(
        acme_usage(read),
        QuotaUsage {
            datasets: 2,
            storage_bytes: 4096,
            concurrent_jobs: 1
        }
    );
    // A later report replaces the earlier one (a job ended).
    usage
        .report(&acme_id, Service::Analysis, &TenantUsage::default())
        .await?;
    let read = client
        .get_quota(get(app.operator.as_str(), "tenants/acme/quota"))
        .await?
        .into_inner();
    assert_eq!(acme_usage(read).concurrent_jobs, 0);
    let beta_read = client
        .get_quota(get(&beta, "tenants/beta/quota"))
        .await?
        .into_inner();
    assert_eq!(
        acme_usage(beta_read),
        QuotaUsage {
            datasets: 7,
            storage_bytes: 1,
            concurrent_jobs: 0
        }
    );

    // Another service's cache applies it within the revocation bound: acme at 60 a minute (a
    // burst of 2), beta on the default.
    let now = OffsetDateTime::now_utc();
    let acme_principal = other.authenticate(&bearer(&acme), now)?;
    let beta_principal = other.authenticate(&bearer(&beta), now)?;
    let start = Instant::now();
    while other
        .quota(&acme_principal)
        .is_none_or(|q| q.max_concurrent_jobs != 3)
    {
        assert!(
            start.elapsed() < REVOCATION_BOUND,
            "the quota did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let quota = other.quota(&acme_principal).unwrap();
    assert_eq!(quota.max_requests_per_minute, 60);
    assert_eq!(quota.max_storage_bytes, 100 << 30);
    assert!(other.admit(&acme_principal).is_ok());
    assert!(other.admit(&acme_principal).is_ok());
    assert!(matches!(
        other.admit(&acme_principal),
        Err(AuthError::RateLimited { .. })
    ));
    for _ in 0..100 {
        other.admit(&beta_principal)?;
    }

    // Back to the default: 0 means the deployment's.
    let restored = client
        .update_quota(update(
            app.operator.as_str(),
            Quota {
                name: "tenants/acme/quota".to_owned(),
                ..Quota::default()
            },
            &["max_requests_per_minute"],
        ))
        .await?
        .into_inner();
    assert_eq!(restored.max_requests_per_minute, 6000);
    assert_eq!(restored.max_concurrent_jobs, 3);

    // Reads and changes are audited, denials too.
    let events = audit_events(&app.nats, "acme", 9).await;
    let quota_events: Vec<(&str, &str, Outcome)> = events
        .iter()
        .filter(|e| e.action.starts_with("quotas."))
        .map(|e| (e.action.as_str(), e.actor_id.as_str(), e.outcome()))
        .collect();
    for expected in [
        ("quotas.get", acme_key.as_str(), Outcome::Allowed),
        ("quotas.update", acme_key.as_str(), Outcome::Denied),
        ("quotas.update", "operator", Outcome::Error),
        ("quotas.update", "operator", Outcome::Allowed),
        ("quotas.get", "operator", Outcome::Allowed),
    ] {
        assert!(
            quota_events.contains(&expected),
            "{expected:?} in {quota_events:?}"
        );
    }
    Ok(())
}
