//! The notifier against a real nats-server, Postgres and a local HTTP receiver (allow-listed):
//! endpoints are managed through `WebhookService` with the mesh credential; each deliverable event
//! reaches each subscribed endpoint once, signed (Standard Webhooks); a failing receiver gets
//! retries on the schedule with the same `webhook-id`; HTTP 410 disables the endpoint; deletions
//! remove deliveries, endpoints and DEKs and are answered with a receipt; every attempt continues
//! the trace of its event and sends it to the receiver (`traceparent`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use prost::Message as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument as _;
use trustmesh_bus::Publisher;
use trustmesh_events::{ConsumerSpec, NOTIFIER_DATASET, NOTIFIER_JOB, Subject, TenantId};
use trustmesh_notifier::settings::{
    DatabaseSettings, KeySettings, MeshSettings, NatsSettings, WebhookSettings,
};
use trustmesh_notifier::{Application, Deliveries, Settings};
use trustmesh_proto::events::v1 as ev;
use trustmesh_proto::v1::webhook_service_client::WebhookServiceClient;
use trustmesh_proto::v1::{
    CreateWebhookEndpointRequest, GetWebhookEndpointRequest, JobKind, JobState,
    ListWebhookDeliveriesRequest, WebhookDelivery, WebhookDeliveryState, WebhookEndpoint,
    WebhookEventType,
};
use trustmesh_runtime::{AdminSettings, GrpcSettings, SecretString};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;
use trustmesh_webhooks::{SigningSecret, verify};
use uuid::Uuid;

const MESH: &str = "mesh-credential-for-notifier-tests-0123456789";
/// The retry schedule under test: 300 ms doubling (plus up to 100% jitter), 4 attempts in all.
const FIRST_RETRY: Duration = Duration::from_millis(300);
const MAX_ATTEMPTS: u32 = 4;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    /// The W3C `traceparent` header, if sent.
    traceparent: String,
    at: Instant,
}

/// A local webhook receiver answering from a script (then 200).
#[derive(Debug, Default)]
struct Receiver {
    script: Mutex<VecDeque<u16>>,
    got: Mutex<Vec<Received>>,
}

/// Answers from the script; a 429 asks to wait 1 s (`Retry-After: 1`).
async fn hook(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    r.got.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        traceparent: header("traceparent"),
        at: Instant::now(),
    });
    let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
    let mut answer = HeaderMap::new();
    if status == 429 {
        answer.insert("retry-after", "1".parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), answer)
}

impl Receiver {
    /// Serves on 127.0.0.1 at `path` answering from `script`; returns it and its URL.
    async fn start(script: &[u16]) -> Result<(Arc<Self>, String)> {
        let receiver = Arc::new(Self {
            script: Mutex::new(script.iter().copied().collect()),
            got: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(hook))
            .with_state(Arc::clone(&receiver));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((receiver, url))
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait(&self, n: usize) -> Result<Vec<Received>> {
        for _ in 0..200 {
            let got = self.got();
            if got.len() >= n {
                return Ok(got);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "the receiver never got {n} requests (got {})",
            self.got().len()
        )
    }
}

/// Checks the request's signature with `secret`, as a receiver would.
fn assert_signed(received: &Received, secret: &SigningSecret) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    verify(
        secret,
        &received.id,
        &received.timestamp,
        &received.signature,
        &received.body,
        now,
        300,
    )
    .expect("the delivery is correctly signed");
}

#[derive(Clone)]
struct Mesh(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Mesh {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = WebhookServiceClient<InterceptedService<Channel, Mesh>>;

struct TestApp {
    deliveries: Deliveries,
    client: Client,
    channel: Channel,
    jetstream: Context,
    publisher: Publisher,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    _keys: tempfile::TempDir,
    _db: TestDatabase,
    _nats: NatsServer,
}

fn meta(tenant: &str) -> ev::EventMeta {
    ev::EventMeta {
        event_id: Uuid::now_v7().to_string(),
        tenant: tenant.to_owned(),
        occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        producer: "test".to_owned(),
        request_id: String::new(),
    }
}

fn job(tenant: &str, state: JobState, dataset: &str) -> ev::JobUpdated {
    ev::JobUpdated {
        meta: Some(meta(tenant)),
        job: format!("tenants/{tenant}/jobs/{}", Uuid::now_v7()),
        kind: JobKind::Analysis.into(),
        state: state.into(),
        progress: 1.0,
        step: "done".to_owned(),
        error_code: String::new(),
        target: dataset.to_owned(),
        output: String::new(),
        version: 3,
    }
}

fn ingested(tenant: &str, dataset: &str) -> ev::DatasetIngested {
    ev::DatasetIngested {
        meta: Some(meta(tenant)),
        dataset: dataset.to_owned(),
        row_count: 10,
        column_count: 3,
        size_bytes: 100,
    }
}

impl TestApp {
    async fn spawn() -> Result<Self> {
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
        let keys = tempfile::tempdir()?;
        let settings = Settings {
            grpc: GrpcSettings::dev_plaintext_loopback(),
            admin: AdminSettings::any_loopback_port(),
            database: DatabaseSettings {
                url: SecretString::from(db.url().to_owned()),
                max_connections: 5,
            },
            nats: NatsSettings::at(nats.url()),
            mesh: MeshSettings {
                service_credential: Some(SecretString::from(MESH.to_owned())),
            },
            keys: KeySettings {
                kek_file: keys.path().join("kek"),
            },
            webhooks: WebhookSettings {
                allow_destinations: vec!["127.0.0.1/32".parse()?],
                allow_http: true,
                timeout_secs: 5,
                max_attempts: MAX_ATTEMPTS,
                first_retry_delay_ms: u64::try_from(FIRST_RETRY.as_millis())?,
                max_retry_delay_ms: 2_000,
                poll_interval_ms: 50,
            },
            ..Settings::default()
        };
        let app = Application::build(settings).await.context("build")?;
        let deliveries = app.deliveries();
        let channel = Channel::from_shared(format!("http://{}", app.grpc_addr()))?
            .connect()
            .await?;
        let bearer = format!("Bearer {MESH}").parse()?;
        let client =
            WebhookServiceClient::new(InterceptedService::new(channel.clone(), Mesh(bearer)));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            app.run_until_stopped(stop).await.expect("the service runs");
        });
        let jetstream = nats.jetstream().await;
        Ok(Self {
            deliveries,
            client,
            channel,
            publisher: Publisher::new(jetstream.clone()),
            jetstream,
            shutdown,
            server,
            _keys: keys,
            _db: db,
            _nats: nats,
        })
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.server.await?;
        Ok(())
    }

    async fn create_endpoint(
        &self,
        tenant: &str,
        url: &str,
        types: &[WebhookEventType],
    ) -> Result<(WebhookEndpoint, SigningSecret)> {
        let response = self
            .client
            .clone()
            .create_webhook_endpoint(CreateWebhookEndpointRequest {
                parent: format!("tenants/{tenant}"),
                webhook_endpoint: Some(WebhookEndpoint {
                    url: url.to_owned(),
                    event_types: types.iter().map(|t| *t as i32).collect(),
                    ..WebhookEndpoint::default()
                }),
                request_id: String::new(),
            })
            .await?
            .into_inner();
        let secret = SigningSecret::parse(&response.signing_secret)?;
        Ok((response.webhook_endpoint.context("endpoint")?, secret))
    }

    async fn deliveries_of(&self, endpoint: &str) -> Result<Vec<WebhookDelivery>> {
        Ok(self
            .client
            .clone()
            .list_webhook_deliveries(ListWebhookDeliveriesRequest {
                parent: endpoint.to_owned(),
                ..ListWebhookDeliveriesRequest::default()
            })
            .await?
            .into_inner()
            .webhook_deliveries)
    }

    /// Waits until every delivery to `endpoint` has left PENDING and there are `n`.
    async fn settled(&self, endpoint: &str, n: usize) -> Result<Vec<WebhookDelivery>> {
        for _ in 0..200 {
            let all = self.deliveries_of(endpoint).await?;
            if all.len() == n
                && all
                    .iter()
                    .all(|d| d.state() != WebhookDeliveryState::Pending)
            {
                return Ok(all);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{endpoint} never had {n} settled deliveries")
    }

    /// Publishes `message` on `subject` twice under two message ids, so JetStream keeps both: the
    /// consumer sees the same event twice, as after a redelivery or a republish past the dedupe window.
    async fn publish_twice(&self, subject: &Subject, message: &impl prost::Message) -> Result<()> {
        for _ in 0..2 {
            let id = format!("test:{}", Uuid::now_v7());
            self.publisher.publish(subject, message, &id).await?;
        }
        Ok(())
    }

    /// Every receipt stored on `tm.<tenant>.deletion.receipt` so far.
    async fn receipts(&self, tenant: &str) -> Result<Vec<ev::DeletionReceipt>> {
        let consumer = self
            .jetstream
            .get_stream("TM_DELETION")
            .await?
            .create_consumer(pull::Config {
                filter_subject: format!("tm.{tenant}.deletion.receipt"),
                ack_policy: AckPolicy::None,
                ..pull::Config::default()
            })
            .await?;
        let mut batch = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(300))
            .messages()
            .await?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!(e))?;
            out.push(ev::DeletionReceipt::decode(message.payload.as_ref())?);
        }
        Ok(out)
    }

    async fn wait_receipt(&self, tenant: &str, deletion: &str) -> Result<ev::DeletionReceipt> {
        for _ in 0..100 {
            if let Some(r) = self
                .receipts(tenant)
                .await?
                .into_iter()
                .find(|r| r.deletion == deletion)
            {
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("no receipt for {deletion}")
    }

    /// Waits until the notifier has handled (acked) everything published to `consumers`.
    async fn handled(&self, consumers: &[&ConsumerSpec]) -> Result<()> {
        for spec in consumers {
            let mut consumer: PullConsumer = self
                .jetstream
                .get_consumer_from_stream(spec.durable_name, spec.stream.name)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            let mut idle = false;
            for _ in 0..200 {
                let info = consumer.info().await.map_err(|e| anyhow::anyhow!(e))?;
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    idle = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !idle {
                bail!("{} never caught up", spec.durable_name);
            }
        }
        Ok(())
    }

    async fn request_deletion(
        &self,
        tenant: &TenantId,
        scope: ev::DeletionScope,
        target: &str,
    ) -> Result<String> {
        let deletion = format!("tenants/{tenant}/deletions/{}", Uuid::now_v7());
        let request = ev::DeletionRequested {
            meta: Some(meta(tenant.as_str())),
            deletion: deletion.clone(),
            scope: scope.into(),
            target: target.to_owned(),
        };
        let id = format!("test:{}", Uuid::now_v7());
        self.publisher
            .publish(&Subject::deletion_requested(tenant), &request, &id)
            .await?;
        Ok(deletion)
    }
}

#[tokio::test]
async fn each_event_reaches_each_subscribed_endpoint_once_signed() -> Result<()> {
    let app = TestApp::spawn().await?;
    let acme = TenantId::parse("acme")?;
    let (all_rx, all_url) = Receiver::start(&[]).await?;
    let (failed_rx, failed_url) = Receiver::start(&[]).await?;
    let (all, all_secret) = app.create_endpoint("acme", &all_url, &[]).await?;
    let (only_failed, _) = app
        .create_endpoint("acme", &failed_url, &[WebhookEventType::JobFailed])
        .await?;
    let dataset = format!("tenants/acme/datasets/{}", Uuid::now_v7());

    let ingest = ingested("acme", &dataset);
    app.publish_twice(&Subject::dataset_ingested(&acme), &ingest)
        .await?;
    let succeeded = job("acme", JobState::Succeeded, &dataset);
    app.publish_twice(&Subject::job_updated(&acme), &succeeded)
        .await?;
    // Not webhooks: a running job's progress, and a report (announced by its job).
    app.publish_twice(
        &Subject::job_updated(&acme),
        &job("acme", JobState::Running, &dataset),
    )
    .await?;

    let got = all_rx.wait(2).await?;
    let settled = app.settled(&all.name, 2).await?;
    assert_eq!(
        all_rx.got().len(),
        2,
        "one request per event, however often it arrived"
    );
    for received in &got {
        assert_signed(received, &all_secret);
    }
    let bodies: Vec<serde_json::Value> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body))
        .collect::<Result<_, _>>()?;
    let mut types: Vec<&str> = bodies.iter().filter_map(|b| b["type"].as_str()).collect();
    types.sort_unstable();
    assert_eq!(types, ["dataset.ingested", "job.succeeded"]);
    let job_body = bodies
        .iter()
        .find(|b| b["type"] == "job.succeeded")
        .unwrap();
    assert_eq!(job_body["data"]["job"], succeeded.job.as_str());
    for delivery in &settled {
        assert_eq!(delivery.state(), WebhookDeliveryState::Succeeded);
        assert_eq!(
            (delivery.attempt_count, delivery.last_http_status),
            (1, 200)
        );
        assert!(got.iter().any(|r| r.id == delivery.webhook_id));
    }
    assert!(failed_rx.got().is_empty(), "not subscribed to these types");

    let failed = job("acme", JobState::Failed, &dataset);
    app.publish_twice(&Subject::job_updated(&acme), &failed)
        .await?;
    let got = failed_rx.wait(1).await?;
    assert!(String::from_utf8(got[0].body.clone())?.contains("job.failed"));
    app.settled(&only_failed.name, 1).await?;
    app.settled(&all.name, 3).await?;
    app.stop().await
}

#[tokio::test]
async fn a_failing_receiver_gets_retries_on_schedule_with_one_id_and_410_disables() -> Result<()> {
    let app = TestApp::spawn().await?;
    let acme = TenantId::parse("acme")?;
    let dataset = format!("tenants/acme/datasets/{}", Uuid::now_v7());

    // Fails twice, then accepts: three attempts, one webhook-id, gaps on the schedule.
    let (flaky_rx, flaky_url) = Receiver::start(&[500, 503]).await?;
    let (flaky, secret) = app.create_endpoint("acme", &flaky_url, &[]).await?;
    app.publisher
        .publish(
            &Subject::dataset_ingested(&acme),
            &ingested("acme", &dataset),
            &format!("test:{}", Uuid::now_v7()),
        )
        .await?;
    let got = flaky_rx.wait(3).await?;
    let [first, second, third] = &got[..] else {
        bail!("expected 3 attempts, got {}", got.len());
    };
    assert!(
        first.id == second.id && second.id == third.id,
        "one webhook-id across retries"
    );
    for attempt in &got {
        assert_signed(attempt, &secret);
    }
    // Retry n waits at least FIRST_RETRY * 2^(n-1) (jitter only adds).
    assert!(
        second.at - first.at >= FIRST_RETRY,
        "{:?}",
        second.at - first.at
    );
    assert!(
        third.at - second.at >= FIRST_RETRY * 2,
        "{:?}",
        third.at - second.at
    );
    let settled = app.settled(&flaky.name, 1).await?;
    assert_eq!(settled[0].state(), WebhookDeliveryState::Succeeded);
    assert_eq!(
        (settled[0].attempt_count, settled[0].last_http_status),
        (3, 200)
    );

    // Always failing: exactly MAX_ATTEMPTS attempts, then FAILED.
    let (down_rx, down_url) = Receiver::start(&[500; 10]).await?;
    let (down, _) = app.create_endpoint("acme", &down_url, &[]).await?;
    // 410 Gone: one attempt, and the endpoint is disabled.
    let (gone_rx, gone_url) = Receiver::start(&[410]).await?;
    let (gone, _) = app.create_endpoint("acme", &gone_url, &[]).await?;
    app.publisher
        .publish(
            &Subject::job_updated(&acme),
            &job("acme", JobState::Cancelled, &dataset),
            &format!("test:{}", Uuid::now_v7()),
        )
        .await?;
    let settled = app.settled(&down.name, 1).await?;
    assert_eq!(settled[0].state(), WebhookDeliveryState::Failed);
    assert_eq!(
        (settled[0].attempt_count, settled[0].last_http_status),
        (MAX_ATTEMPTS, 500)
    );
    assert_eq!(down_rx.got().len(), MAX_ATTEMPTS as usize);

    let settled = app.settled(&gone.name, 1).await?;
    assert_eq!(settled[0].state(), WebhookDeliveryState::Failed);
    assert_eq!(
        (settled[0].attempt_count, settled[0].last_http_status),
        (1, 410)
    );
    let endpoint = app
        .client
        .clone()
        .get_webhook_endpoint(GetWebhookEndpointRequest {
            name: gone.name.clone(),
        })
        .await?
        .into_inner();
    assert!(endpoint.disabled, "410 disables the endpoint");
    // A disabled endpoint gets nothing more.
    app.publisher
        .publish(
            &Subject::job_updated(&acme),
            &job("acme", JobState::Succeeded, &dataset),
            &format!("test:{}", Uuid::now_v7()),
        )
        .await?;
    app.settled(&flaky.name, 3).await?;
    assert_eq!(app.deliveries_of(&gone.name).await?.len(), 1);
    assert_eq!(gone_rx.got().len(), 1);
    app.stop().await
}

#[tokio::test]
async fn a_throttling_receiver_is_retried_no_sooner_than_it_asked() -> Result<()> {
    let app = TestApp::spawn().await?;
    let acme = TenantId::parse("acme")?;
    let (rx, url) = Receiver::start(&[429]).await?;
    let (endpoint, _) = app.create_endpoint("acme", &url, &[]).await?;
    let dataset = format!("tenants/acme/datasets/{}", Uuid::now_v7());
    app.publisher
        .publish(
            &Subject::dataset_ingested(&acme),
            &ingested("acme", &dataset),
            &format!("test:{}", Uuid::now_v7()),
        )
        .await?;
    let got = rx.wait(2).await?;
    // The schedule alone would retry within 2 x 300 ms; the receiver asked for 1 s.
    assert!(
        got[1].at - got[0].at >= Duration::from_secs(1),
        "{:?}",
        got[1].at - got[0].at
    );
    let settled = app.settled(&endpoint.name, 1).await?;
    assert_eq!(
        (settled[0].attempt_count, settled[0].last_http_status),
        (2, 200)
    );
    app.stop().await
}

#[tokio::test]
async fn endpoints_refuse_internal_urls_and_callers_other_than_the_mesh() -> Result<()> {
    let app = TestApp::spawn().await?;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        // 127.0.0.2 (127.0.0.1 is allow-listed here): decimal and IPv4-mapped spellings.
        "http://2130706434:9/",
        "http://[::ffff:127.0.0.2]/",
        "ftp://example.com/",
        "http://user:pw@example.com/",
    ] {
        let status = app
            .create_endpoint("acme", url, &[])
            .await
            .expect_err(url)
            .downcast::<tonic::Status>()?;
        assert_eq!(status.code(), Code::InvalidArgument, "{url}");
    }
    // No credential, or not the mesh's: refused.
    let status = WebhookServiceClient::new(app.channel.clone())
        .get_webhook_endpoint(GetWebhookEndpointRequest {
            name: format!("tenants/acme/webhookEndpoints/{}", Uuid::now_v7()),
        })
        .await
        .expect_err("no credential");
    assert_eq!(status.code(), Code::Unauthenticated);
    app.stop().await
}

#[tokio::test]
async fn deletions_remove_deliveries_endpoints_and_keys_with_a_receipt() -> Result<()> {
    let app = TestApp::spawn().await?;
    let acme = TenantId::parse("acme")?;
    let other = TenantId::parse("other")?;
    let (_rx, url) = Receiver::start(&[]).await?;
    let (endpoint, _) = app.create_endpoint("acme", &url, &[]).await?;
    let (other_endpoint, _) = app.create_endpoint("other", &url, &[]).await?;
    let dataset_a = format!("tenants/acme/datasets/{}", Uuid::now_v7());
    let dataset_b = format!("tenants/acme/datasets/{}", Uuid::now_v7());
    app.publish_twice(
        &Subject::dataset_ingested(&acme),
        &ingested("acme", &dataset_a),
    )
    .await?;
    app.publish_twice(
        &Subject::job_updated(&acme),
        &job("acme", JobState::Succeeded, &dataset_a),
    )
    .await?;
    app.publish_twice(
        &Subject::dataset_ingested(&acme),
        &ingested("acme", &dataset_b),
    )
    .await?;
    let other_dataset = format!("tenants/other/datasets/{}", Uuid::now_v7());
    app.publish_twice(
        &Subject::dataset_ingested(&other),
        &ingested("other", &other_dataset),
    )
    .await?;
    app.settled(&endpoint.name, 3).await?;
    app.settled(&other_endpoint.name, 1).await?;

    // Dataset A: its two deliveries go, B's stays.
    let deletion = app
        .request_deletion(&acme, ev::DeletionScope::Dataset, &dataset_a)
        .await?;
    let receipt = app.wait_receipt("acme", &deletion).await?;
    assert_eq!(receipt.service, "notifier");
    assert_eq!(receipt.deleted.get("rows:webhook_deliveries"), Some(&2));
    assert!(!receipt.residue_found);
    assert_eq!(app.deliveries_of(&endpoint.name).await?.len(), 1);

    // Events about dataset A that arrive after its deletion (a redelivery, a consumer catching up
    // after a restart) queue nothing: the deletion left no record of A and none comes back.
    app.publish_twice(
        &Subject::dataset_ingested(&acme),
        &ingested("acme", &dataset_a),
    )
    .await?;
    app.publish_twice(
        &Subject::job_updated(&acme),
        &job("acme", JobState::Succeeded, &dataset_a),
    )
    .await?;
    app.handled(&[&NOTIFIER_DATASET, &NOTIFIER_JOB]).await?;
    let left = app.deliveries_of(&endpoint.name).await?;
    assert_eq!(left.len(), 1, "only dataset B's: {left:?}");
    // A second deletion of A (another request for it) finds nothing.
    let deletion = app
        .request_deletion(&acme, ev::DeletionScope::Dataset, &dataset_a)
        .await?;
    let receipt = app.wait_receipt("acme", &deletion).await?;
    assert_eq!(receipt.deleted.get("rows:webhook_deliveries"), Some(&0));
    assert!(!receipt.residue_found);

    // The tenant: its endpoints, deliveries and DEKs; the other tenant keeps everything.
    let deletion = app
        .request_deletion(&acme, ev::DeletionScope::Tenant, "tenants/acme")
        .await?;
    let receipt = app.wait_receipt("acme", &deletion).await?;
    assert_eq!(receipt.deleted.get("rows:webhook_deliveries"), Some(&1));
    assert_eq!(receipt.deleted.get("rows:webhook_endpoints"), Some(&1));
    assert!(
        receipt.deks_destroyed >= 1,
        "the sealed secrets' DEK is destroyed"
    );
    assert!(!receipt.residue_found);
    assert_eq!(app.deliveries.count(&acme).await?, 0);
    let status = app
        .client
        .clone()
        .get_webhook_endpoint(GetWebhookEndpointRequest {
            name: endpoint.name.clone(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(app.deliveries.count(&other).await?, 1);
    app.stop().await
}

#[tokio::test]
async fn every_attempt_continues_the_trace_of_its_event_and_sends_it_to_the_receiver() -> Result<()>
{
    // Spans get trace ids only with the OpenTelemetry layer: install it (process-wide; the other
    // tests are unaffected), logging to a file read below. The filter keeps the spans on the way:
    // this test's, the consumer's (`trustmesh_bus`) and the dispatcher's.
    let logs = tempfile::NamedTempFile::new()?;
    let _telemetry = trustmesh_telemetry::init(
        "notifier",
        &trustmesh_telemetry::TelemetrySettings {
            log_filter: Some(
                "warn,notifier=info,trustmesh_bus=info,trustmesh_notifier=info".to_owned(),
            ),
            log_file: Some(logs.path().to_owned()),
            ..trustmesh_telemetry::TelemetrySettings::default()
        },
    )?;
    let app = TestApp::spawn().await?;
    let acme = TenantId::parse("acme")?;
    let (rx, url) = Receiver::start(&[500]).await?;
    app.create_endpoint("acme", &url, &[]).await?;
    let dataset = format!("tenants/acme/datasets/{}", Uuid::now_v7());

    // The publisher's trace goes with the event in its NATS headers.
    let publish = tracing::info_span!("test.publish");
    let trace_id = trustmesh_telemetry::trace_id(&publish).context("a trace")?;
    app.publisher
        .publish(
            &Subject::dataset_ingested(&acme),
            &ingested("acme", &dataset),
            &format!("test:{}", Uuid::now_v7()),
        )
        .instrument(publish)
        .await?;

    // A failed attempt and its retry: both in that trace, each its own span.
    let got = rx.wait(2).await?;
    for attempt in &got {
        assert!(
            attempt.traceparent.starts_with(&format!("00-{trace_id}-")),
            "{:?} is not in trace {trace_id}",
            attempt.traceparent
        );
    }
    assert_ne!(got[0].traceparent, got[1].traceparent);

    // The dispatcher's log line of each attempt carries the trace id of its span.
    let attempts = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = std::fs::read_to_string(logs.path()).unwrap_or_default();
            let attempts = text
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|event| {
                    event["message"] == "Webhook attempt made."
                        && event["span"]["name"] == "webhook.deliver"
                        && event["span"]["trace_id"] == trace_id.as_str()
                })
                .count();
            if attempts >= 2 {
                return attempts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("the attempts' log lines")?;
    assert_eq!(attempts, 2);
    app.stop().await
}
