//! TenancyService over gRPC against a real nats-server and Postgres: tenants and keys are created,
//! resolved by another service's key cache, revoked everywhere, confined to their tenant, audited,
//! and their secrets are stored nowhere.

use std::net::SocketAddr;
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
use trustmesh_auth::{AuthError, Authenticator, CacheOptions, KeyCache, Principal};
use trustmesh_proto::events::v1::{AuditEvent, Outcome};
use trustmesh_proto::v1::tenancy_service_client::TenancyServiceClient;
use trustmesh_proto::v1::{
    CreateApiKeyRequest, CreateTenantRequest, GetQuotaRequest, GetTenantRequest,
    ListApiKeysRequest, RevokeApiKeyRequest, Scope,
};
use trustmesh_runtime::{AdminSettings, GrpcSettings, ServerTls, TransportMode};
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
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
        // The operator credential is a canary, so the scan below proves it is stored nowhere either.
        let operator = Canary::new();
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
                url: SecretString::from(db.url()),
                max_connections: 4,
            },
            nats: NatsSettings { url: nats.url() },
            auth: AuthSettings {
                operator_credential: Some(SecretString::from(operator.as_str())),
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
        .get_quota(authed(
            GetQuotaRequest {
                name: "tenants/acme/quota".into(),
            },
            &secret,
        ))
        .await
        .unwrap_err();
    assert_eq!(later.code(), Code::FailedPrecondition);

    // Each access to the tenant is in its audit stream.
    let events = audit_events(&app.nats, "acme", 5).await;
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
    let failed: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.outcome() != Outcome::Allowed)
        .map(|e| (e.action.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(failed, [("tenants.create", "ALREADY_EXISTS")]);
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
    let (_, encoded_secret) = secret.rsplit_once('_').unwrap();
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
