//! End to end through the public API: a tenant's admin key registers a webhook endpoint through
//! `TenancyService` (tenancy authorizes, audits and forwards to the notifier), an event is
//! published, the local receiver (allow-listed) gets one correctly signed delivery, and
//! `ListWebhookDeliveries` through tenancy shows it succeeded. Every webhook call is in the tenant's
//! audit stream, and the signing secret is in no Postgres column (sealed only).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};
use trustmesh_bus::Publisher;
use trustmesh_events::{Subject, TenantId};
use trustmesh_proto::events::v1 as ev;
use trustmesh_proto::v1::tenancy_service_client::TenancyServiceClient;
use trustmesh_proto::v1::{
    CreateApiKeyRequest, CreateTenantRequest, CreateWebhookEndpointRequest,
    ListWebhookDeliveriesRequest, ListWebhookEndpointsRequest, Scope, WebhookDeliveryState,
    WebhookEndpoint, WebhookEventType,
};
use trustmesh_runtime::settings::common::PeerSettings;
use trustmesh_runtime::{AdminSettings, ClientTls, GrpcSettings, SecretString};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;
use trustmesh_webhooks::{SigningSecret, verify};
use uuid::Uuid;

const MESH: &str = "mesh-credential-for-end-to-end-tests-0123456789";
const OPERATOR: &str = "operator-credential-for-end-to-end-tests-0123";

fn grpc() -> Result<GrpcSettings> {
    Ok(GrpcSettings::dev_plaintext_loopback())
}

fn authed<T>(message: T, bearer: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    request
}

type Got = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

async fn hook(State(got): State<Got>, headers: HeaderMap, body: Bytes) -> StatusCode {
    got.lock().unwrap().push((headers, body.to_vec()));
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn an_endpoint_created_through_tenancy_receives_a_signed_delivery_it_can_list() -> Result<()>
{
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let keys = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();

    let notifier = trustmesh_notifier::Application::build(trustmesh_notifier::Settings {
        grpc: grpc()?,
        admin: AdminSettings::any_loopback_port(),
        database: trustmesh_notifier::settings::DatabaseSettings {
            url: SecretString::from(db.url().to_owned()),
            max_connections: 5,
        },
        nats: trustmesh_notifier::settings::NatsSettings::at(nats.url()),
        mesh: trustmesh_notifier::settings::MeshSettings {
            service_credential: Some(SecretString::from(MESH.to_owned())),
        },
        keys: trustmesh_notifier::settings::KeySettings {
            kek_file: keys.path().join("notifier.kek"),
        },
        webhooks: trustmesh_notifier::settings::WebhookSettings {
            allow_destinations: vec!["127.0.0.1/32".parse()?],
            allow_http: true,
            poll_interval_ms: 50,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .context("notifier")?;
    let notifier_addr = notifier.grpc_addr();
    tokio::spawn(notifier.run_until_stopped(shutdown.clone()));

    let tenancy = trustmesh_tenancy::Application::build(trustmesh_tenancy::Settings {
        grpc: grpc()?,
        admin: AdminSettings::any_loopback_port(),
        database: trustmesh_tenancy::settings::DatabaseSettings {
            url: SecretString::from(db.url().to_owned()),
            max_connections: 5,
        },
        nats: trustmesh_tenancy::settings::NatsSettings::at(nats.url()),
        auth: trustmesh_tenancy::settings::AuthSettings {
            operator_credential: Some(SecretString::from(OPERATOR.to_owned())),
            ..Default::default()
        },
        mesh: trustmesh_tenancy::settings::MeshSettings {
            service_credential: Some(SecretString::from(MESH.to_owned())),
        },
        notifier: Some(PeerSettings {
            endpoint: format!("http://{notifier_addr}"),
            tls: ClientTls::dev_plaintext_loopback(),
        }),
        ..Default::default()
    })
    .await
    .context("tenancy")?;
    let tenancy_addr = tenancy.grpc_addr();
    tokio::spawn(tenancy.run_until_stopped(shutdown.clone()));
    let _stop = shutdown.clone().drop_guard();

    let channel = Channel::from_shared(format!("http://{tenancy_addr}"))?
        .connect()
        .await?;
    let mut client = TenancyServiceClient::new(channel);
    client
        .create_tenant(authed(
            CreateTenantRequest {
                tenant_id: "acme".to_owned(),
                display_name: "Acme".to_owned(),
                ..CreateTenantRequest::default()
            },
            OPERATOR,
        ))
        .await?;
    let key = client
        .create_api_key(authed(
            CreateApiKeyRequest {
                parent: "tenants/acme".to_owned(),
                display_name: "admin".to_owned(),
                scopes: vec![Scope::Admin as i32],
                expire_time: Some(prost_types::Timestamp::from(
                    std::time::SystemTime::now() + Duration::from_secs(3600),
                )),
                request_id: String::new(),
            },
            OPERATOR,
        ))
        .await?
        .into_inner()
        .secret;

    let got: Got = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/trustmesh", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/trustmesh", axum::routing::post(hook))
        .with_state(Arc::clone(&got));
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The admin key, once tenancy's cache has it: an internal URL is refused, the receiver's taken.
    let create = |url: &str| {
        authed(
            CreateWebhookEndpointRequest {
                parent: "tenants/acme".to_owned(),
                webhook_endpoint: Some(WebhookEndpoint {
                    url: url.to_owned(),
                    event_types: vec![WebhookEventType::JobSucceeded as i32],
                    ..WebhookEndpoint::default()
                }),
                request_id: String::new(),
            },
            &key,
        )
    };
    let mut created = None;
    for _ in 0..50 {
        match client.create_webhook_endpoint(create(&url)).await {
            Ok(response) => {
                created = Some(response.into_inner());
                break;
            }
            Err(status) if status.code() == Code::Unauthenticated => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => bail!("create failed: {status}"),
        }
    }
    let created = created.context("the admin key never authenticated")?;
    let endpoint = created.webhook_endpoint.context("endpoint")?;
    let secret = SigningSecret::parse(&created.signing_secret)?;
    let refused = client
        .create_webhook_endpoint(create("http://169.254.169.254/latest/meta-data/"))
        .await
        .expect_err("the metadata address is refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let listed = client
        .list_webhook_endpoints(authed(
            ListWebhookEndpointsRequest {
                parent: "tenants/acme".to_owned(),
                ..ListWebhookEndpointsRequest::default()
            },
            &key,
        ))
        .await?
        .into_inner();
    assert_eq!(listed.webhook_endpoints, vec![endpoint.clone()]);

    // An analysis job succeeds.
    let acme = TenantId::parse("acme")?;
    let job = format!("tenants/acme/jobs/{}", Uuid::now_v7());
    let event = ev::JobUpdated {
        meta: Some(ev::EventMeta {
            event_id: Uuid::now_v7().to_string(),
            tenant: "acme".to_owned(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            producer: "analysis".to_owned(),
            request_id: String::new(),
        }),
        job: job.clone(),
        kind: trustmesh_proto::v1::JobKind::Analysis.into(),
        state: trustmesh_proto::v1::JobState::Succeeded.into(),
        progress: 1.0,
        step: "done".to_owned(),
        error_code: String::new(),
        target: format!("tenants/acme/datasets/{}", Uuid::now_v7()),
        output: format!("tenants/acme/reports/{}", Uuid::now_v7()),
        version: 5,
    };
    Publisher::new(nats.jetstream().await)
        .publish(&Subject::job_updated(&acme), &event, "test:e2e")
        .await?;

    let mut deliveries = Vec::new();
    for _ in 0..100 {
        deliveries = client
            .list_webhook_deliveries(authed(
                ListWebhookDeliveriesRequest {
                    parent: endpoint.name.clone(),
                    ..ListWebhookDeliveriesRequest::default()
                },
                &key,
            ))
            .await?
            .into_inner()
            .webhook_deliveries;
        if deliveries
            .iter()
            .any(|d| d.state() == WebhookDeliveryState::Succeeded)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let [delivery] = &deliveries[..] else {
        bail!("expected one delivery, got {deliveries:?}");
    };
    assert_eq!(delivery.state(), WebhookDeliveryState::Succeeded);
    assert_eq!(delivery.event_type(), WebhookEventType::JobSucceeded);
    assert_eq!(
        (delivery.attempt_count, delivery.last_http_status),
        (1, 204)
    );

    let got = got.lock().unwrap().clone();
    let [(headers, body)] = &got[..] else {
        bail!("expected one request, got {}", got.len());
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    assert_eq!(header("webhook-id"), delivery.webhook_id);
    verify(
        &secret,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        body,
        time::OffsetDateTime::now_utc().unix_timestamp(),
        300,
    )?;
    let body: serde_json::Value = serde_json::from_slice(body)?;
    assert_eq!(body["type"], "job.succeeded");
    assert_eq!(body["data"]["job"], job.as_str());

    // Tenancy audited each webhook call, the refused one as an error.
    let audit = audit_actions(&nats, "acme", 6).await?;
    for expected in [
        ("webhookEndpoints.create", ev::Outcome::Allowed),
        ("webhookEndpoints.create", ev::Outcome::Error),
        ("webhookEndpoints.list", ev::Outcome::Allowed),
        ("webhookDeliveries.list", ev::Outcome::Allowed),
    ] {
        assert!(
            audit.iter().any(|(a, o)| (a.as_str(), *o) == expected),
            "{expected:?} not in {audit:?}"
        );
    }

    // The secret is sealed: neither its bytes nor its shown form are in any column.
    // (The base64 part, so a copy stored with or without the `whsec_` prefix is found.)
    let encoded = created.signing_secret.trim_start_matches("whsec_");
    let hits = scan_postgres(db.pool(), encoded, secret.as_bytes()).await?;
    assert!(
        hits.is_empty(),
        "the signing secret is stored in the clear: {hits:?}"
    );
    Ok(())
}

/// `(action, outcome)` of every event on `tm.<tenant>.audit.tenancy`, once there are `at_least`.
async fn audit_actions(
    nats: &NatsServer,
    tenant: &str,
    at_least: usize,
) -> Result<Vec<(String, ev::Outcome)>> {
    use futures::StreamExt as _;
    use prost::Message as _;
    let stream = nats.jetstream().await.get_stream("TM_AUDIT").await?;
    let mut events = Vec::new();
    for _ in 0..50 {
        let consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                filter_subject: format!("tm.{tenant}.audit.tenancy"),
                ..Default::default()
            })
            .await?;
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(300))
            .messages()
            .await?;
        events.clear();
        while let Some(Ok(message)) = batch.next().await {
            let event = ev::AuditEvent::decode(message.payload.as_ref())?;
            events.push((event.action.clone(), event.outcome()));
        }
        if events.len() >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(events)
}

/// Every `schema.table.column` of the database holding `text` (as text) or `bytes` (in a bytea).
async fn scan_postgres(pool: &sqlx::PgPool, text: &str, bytes: &[u8]) -> Result<Vec<String>> {
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT c.table_schema::text, c.table_name::text, c.column_name::text, c.data_type::text
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE t.table_type = 'BASE TABLE'
           AND c.table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(pool)
    .await?;
    let mut hits = Vec::new();
    for (schema, table, column, data_type) in columns {
        let condition = if data_type == "bytea" {
            format!("strpos(\"{column}\"::text, $1) > 0 OR position($2::bytea IN \"{column}\") > 0")
        } else {
            format!("strpos(\"{column}\"::text, $1) > 0")
        };
        let sql = format!("SELECT count(*) FROM \"{schema}\".\"{table}\" WHERE {condition}");
        let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(text);
        if data_type == "bytea" {
            query = query.bind(bytes);
        }
        if query.fetch_one(pool).await? > 0 {
            hits.push(format!("{schema}.{table}.{column}"));
        }
    }
    Ok(hits)
}
