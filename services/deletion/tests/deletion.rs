//! The deletion service against a real nats-server and Postgres: receipts published as the other
//! services would, certificates verified with the published key, retries and failure on silence;
//! every call carries an API key minted into `tm_auth` with `libs/auth` (as `tenancy` would) or the
//! operator credential.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures::StreamExt;
use prost::Message as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use trustmesh_auth::{AuthBucket, IssuedKey, KeyRecord, Scope as AuthScope};
use trustmesh_bus::Publisher;
use trustmesh_deletion::settings::{
    AuthSettings, DatabaseSettings, DeletionSettings, KeySettings, NatsSettings,
};
use trustmesh_deletion::{Application, Settings, VerifyError, verify_certificate};
use trustmesh_events::{Subject, TenantId, msg_id};
use trustmesh_proto::events::v1 as ev;
use trustmesh_proto::v1::deletion_service_client::DeletionServiceClient;
use trustmesh_proto::v1::{
    DeleteDatasetRequest, DeleteTenantRequest, Deletion, DeletionState,
    GetDeletionCertificateRequest, GetDeletionRequest, JobKind, JobState,
    ListCertificateSigningKeysRequest,
};
use trustmesh_runtime::{AdminSettings, ExposeSecret as _, GrpcSettings, SecretString};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;
use uuid::Uuid;

/// The operator credential the test service is configured with.
const OPERATOR_CREDENTIAL: &str = "test-operator-credential-0123456789abcdef";

/// How long a key written to `tm_auth` may take to reach the service's cache.
const KEY_PROPAGATION: Duration = Duration::from_secs(2);

/// A `DeletionService` client that sends one credential with every call.
type Client = DeletionServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <credential>` to every request.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    fn new(credential: &str) -> Self {
        Self(format!("Bearer {credential}").parse().expect("ascii"))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

struct TestApp {
    /// A client with a `deletion:write` key of tenant `acme`.
    client: Client,
    /// `deletion:write` clients by tenant (minted on first use).
    writers: HashMap<String, Client>,
    channel: Channel,
    bucket: AuthBucket,
    jetstream: Context,
    publisher: Publisher,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    _keys: tempfile::TempDir,
    db: TestDatabase,
    _nats: NatsServer,
}

impl TestApp {
    async fn spawn(deletion: DeletionSettings) -> Result<Self> {
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
            keys: KeySettings {
                signing_key_file: keys.path().join("signing-key"),
            },
            deletion,
            auth: AuthSettings {
                operator_credential: Some(SecretString::from(OPERATOR_CREDENTIAL)),
                ..AuthSettings::default()
            },
            ..Settings::default()
        };
        let app = Application::build(settings).await.context("build")?;
        let addr = app.grpc_addr();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            app.run_until_stopped(stop).await.expect("the service runs");
        });
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let jetstream = nats.jetstream().await;
        let bucket = AuthBucket::open(&jetstream, 1).await?;
        let client = mint(&bucket, &channel, "acme", &[AuthScope::DeletionWrite]).await?;
        Ok(Self {
            writers: HashMap::from([("acme".to_owned(), client.clone())]),
            client,
            channel,
            bucket,
            publisher: Publisher::new(jetstream.clone()),
            jetstream,
            shutdown,
            server,
            _keys: keys,
            db,
            _nats: nats,
        })
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.server.await?;
        Ok(())
    }

    /// Publishes `service`'s receipt for `deletion`, as that service would (a fresh event id, so a
    /// repeat is a new message, as after a retry).
    async fn receipt(
        &self,
        tenant: &str,
        deletion: &str,
        scope: ev::DeletionScope,
        service: &str,
        residue: bool,
    ) -> Result<()> {
        let tenant_id = TenantId::parse(tenant)?;
        let subject = Subject::deletion_receipt(&tenant_id);
        let event_id = Uuid::now_v7();
        let receipt = ev::DeletionReceipt {
            meta: Some(ev::EventMeta {
                event_id: event_id.to_string(),
                tenant: tenant.to_owned(),
                occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
                producer: service.to_owned(),
                request_id: String::new(),
            }),
            deletion: deletion.to_owned(),
            service: service.to_owned(),
            scope: scope.into(),
            deleted: [("objects".to_owned(), 2), ("rows:datasets".to_owned(), 1)].into(),
            residue_found: residue,
            residue: if residue {
                [("objects".to_owned(), 1)].into()
            } else {
                Default::default()
            },
            deks_destroyed: u32::from(scope == ev::DeletionScope::Tenant),
        };
        self.publisher
            .publish(&subject, &receipt, &msg_id(&subject, event_id))
            .await?;
        Ok(())
    }

    /// A client with a fresh key of `tenant` holding `scopes`, once the service knows the key.
    async fn mint(&self, tenant: &str, scopes: &[AuthScope]) -> Result<Client> {
        mint(&self.bucket, &self.channel, tenant, scopes).await
    }

    /// A client with a `deletion:write` key of `tenant` (minted on first use).
    async fn writer(&mut self, tenant: &str) -> Result<Client> {
        if let Some(client) = self.writers.get(tenant) {
            return Ok(client.clone());
        }
        let client = self.mint(tenant, &[AuthScope::DeletionWrite]).await?;
        self.writers.insert(tenant.to_owned(), client.clone());
        Ok(client)
    }

    /// A client sending the operator credential.
    fn operator(&self) -> Client {
        DeletionServiceClient::with_interceptor(
            self.channel.clone(),
            Bearer::new(OPERATOR_CREDENTIAL),
        )
    }

    /// A client sending no credential at all.
    fn anonymous(&self) -> DeletionServiceClient<Channel> {
        DeletionServiceClient::new(self.channel.clone())
    }

    /// Deletion `name`, read with a `deletion:write` key of its tenant.
    async fn get(&mut self, name: &str) -> Result<Deletion> {
        let tenant = name
            .strip_prefix("tenants/")
            .and_then(|rest| rest.split('/').next())
            .context("a deletion name")?
            .to_owned();
        Ok(self
            .writer(&tenant)
            .await?
            .get_deletion(GetDeletionRequest {
                name: name.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// Polls the deletion until `done` holds (or fails after 20 s).
    async fn wait_for(&mut self, name: &str, done: impl Fn(&Deletion) -> bool) -> Result<Deletion> {
        for _ in 0..200 {
            let deletion = self.get(name).await?;
            if done(&deletion) {
                return Ok(deletion);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("deletion {name} did not reach the expected state")
    }

    /// Every message stored on `subject` in `stream` so far.
    async fn messages(
        &self,
        stream: &str,
        subject: &str,
    ) -> Result<Vec<async_nats::jetstream::Message>> {
        let consumer = self
            .jetstream
            .get_stream(stream)
            .await?
            .create_consumer(pull::Config {
                filter_subject: subject.to_owned(),
                ack_policy: AckPolicy::None,
                ..pull::Config::default()
            })
            .await?;
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(500))
            .messages()
            .await?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            out.push(message.map_err(|e| anyhow::anyhow!(e))?);
        }
        Ok(out)
    }

    /// Waits until at least `n` messages are stored on `subject` (the outbox relay is asynchronous).
    async fn wait_messages(
        &self,
        stream: &str,
        subject: &str,
        n: usize,
    ) -> Result<Vec<async_nats::jetstream::Message>> {
        for _ in 0..100 {
            let messages = self.messages(stream, subject).await?;
            if messages.len() >= n {
                return Ok(messages);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("fewer than {n} messages on {subject}")
    }
}

/// Mints a key of `tenant` with `scopes` (valid for an hour) into `tm_auth`, as `tenancy` would,
/// and returns a client sending it once the service knows it.
async fn mint(
    bucket: &AuthBucket,
    channel: &Channel,
    tenant: &str,
    scopes: &[AuthScope],
) -> Result<Client> {
    let issued = IssuedKey::generate();
    let record = KeyRecord {
        key_id: issued.key_id().clone(),
        tenant: tenant.to_owned(),
        scopes: scopes.iter().copied().collect(),
        expires_at: (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).unix_timestamp(),
        revoked: false,
        digest: issued.digest().clone(),
    };
    bucket.put(&record).await?;
    let client = DeletionServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(issued.token().expose_secret()),
    );
    // The probe names no tenant, so it touches no data and is not audited: INVALID_ARGUMENT once
    // the key is accepted.
    let deadline = tokio::time::Instant::now() + KEY_PROPAGATION;
    loop {
        let status = client
            .clone()
            .get_deletion(GetDeletionRequest::default())
            .await
            .expect_err("an empty name is refused");
        if status.code() != Code::Unauthenticated {
            return Ok(client);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the key did not become valid within {KEY_PROPAGATION:?}: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn settings(expected: &[&str]) -> DeletionSettings {
    DeletionSettings {
        expected_services: expected.iter().map(|s| (*s).to_owned()).collect(),
        sweep_interval_ms: 100,
        ..DeletionSettings::default()
    }
}

#[tokio::test]
async fn a_dataset_deletion_collects_every_receipt_and_issues_a_verifiable_certificate()
-> Result<()> {
    let mut app = TestApp::spawn(settings(&["ingest", "analysis", "notifier"])).await?;
    let dataset = format!("tenants/acme/datasets/{}", Uuid::now_v7());
    let request = DeleteDatasetRequest {
        name: dataset.clone(),
        reason: "gdpr-art-17".to_owned(),
        request_id: Uuid::new_v4().to_string(),
    };
    let job = app
        .client
        .delete_dataset(request.clone())
        .await?
        .into_inner();
    assert_eq!(job.kind(), JobKind::Deletion);
    assert_eq!(job.state(), JobState::Running);
    assert_eq!(job.target, dataset);
    assert!(
        job.output.starts_with("tenants/acme/deletions/"),
        "{}",
        job.output
    );
    let deletion = job.output.clone();

    // The same request again, and one without a request id for the same target: the same operation.
    let again = app
        .client
        .delete_dataset(request.clone())
        .await?
        .into_inner();
    assert_eq!(again.name, job.name);
    let no_id = DeleteDatasetRequest {
        request_id: String::new(),
        ..request.clone()
    };
    assert_eq!(
        app.client.delete_dataset(no_id).await?.into_inner().name,
        job.name
    );

    let requested = app
        .wait_messages("TM_DELETION", "tm.acme.deletion.requested", 1)
        .await?;
    assert_eq!(
        requested.len(),
        1,
        "one deletion.requested for one operation"
    );
    let event = ev::DeletionRequested::decode(requested[0].payload.as_ref())?;
    assert_eq!(event.deletion, deletion);
    assert_eq!(event.target, dataset);
    assert_eq!(event.scope(), ev::DeletionScope::Dataset);

    let certificate_name = format!("{deletion}/certificate");
    let early = app
        .client
        .get_deletion_certificate(GetDeletionCertificateRequest {
            name: certificate_name.clone(),
        })
        .await
        .expect_err("no certificate before every receipt");
    assert_eq!(early.code(), Code::FailedPrecondition);

    let scope = ev::DeletionScope::Dataset;
    app.receipt("acme", &deletion, scope, "ingest", false)
        .await?;
    app.receipt("acme", &deletion, scope, "analysis", false)
        .await?;
    // A redelivered receipt (new message, same service) is recorded once.
    app.receipt("acme", &deletion, scope, "ingest", false)
        .await?;
    let partial = app.wait_for(&deletion, |d| d.receipts.len() == 2).await?;
    assert_eq!(partial.state(), DeletionState::InProgress);

    app.receipt("acme", &deletion, scope, "notifier", false)
        .await?;
    let done = app
        .wait_for(&deletion, |d| d.state() != DeletionState::InProgress)
        .await?;
    assert_eq!(done.state(), DeletionState::Completed);
    assert_eq!(done.receipts.len(), 3);
    assert_eq!(
        done.job.as_ref().map(|j| j.state()),
        Some(JobState::Succeeded)
    );

    let certificate = app
        .client
        .get_deletion_certificate(GetDeletionCertificateRequest {
            name: certificate_name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(certificate.name, certificate_name);
    assert_eq!(certificate.algorithm, "ed25519");
    let keys = app
        .client
        .list_certificate_signing_keys(ListCertificateSigningKeysRequest {})
        .await?
        .into_inner()
        .keys;
    let key = keys
        .iter()
        .find(|k| k.key_id == certificate.key_id)
        .context("the signing key is published")?;
    assert!(key.retire_time.is_none());
    assert_eq!(
        verify_certificate(
            &certificate.certificate,
            &certificate.signature,
            &key.public_key
        ),
        Ok(())
    );
    let mut tampered = certificate.certificate.clone();
    let at = tampered.len() / 3;
    tampered[at] ^= 0x01;
    assert_eq!(
        verify_certificate(&tampered, &certificate.signature, &key.public_key),
        Err(VerifyError::Mismatch)
    );

    let document: serde_json::Value = serde_json::from_slice(&certificate.certificate)?;
    assert_eq!(document["deletion"], deletion.as_str());
    assert_eq!(document["tenant"], "acme");
    assert_eq!(document["scope"], "dataset");
    assert_eq!(document["target"], dataset.as_str());
    assert_eq!(document["reason"], "gdpr-art-17");
    assert_eq!(document["request_id"], request.request_id.as_str());
    assert_eq!(document["signature"]["key_id"], certificate.key_id.as_str());
    let services: Vec<&str> = document["receipts"]
        .as_array()
        .context("receipts")?
        .iter()
        .filter_map(|r| r["service"].as_str())
        .collect();
    assert_eq!(services, ["analysis", "ingest", "notifier"]);
    assert_eq!(document["receipts"][1]["deleted"]["objects"], 2);
    assert!(
        document["backups"]["statement"]
            .as_str()
            .is_some_and(|s| s.contains("expire by")),
        "{document}"
    );

    let completed = app
        .wait_messages("TM_DELETION", "tm.acme.deletion.completed", 1)
        .await?;
    let completed = ev::DeletionCompleted::decode(completed[0].payload.as_ref())?;
    assert_eq!(completed.certificate, certificate_name);
    let audits = app
        .wait_messages("TM_AUDIT", "tm.acme.audit.deletion", 3)
        .await?;
    let issued: Vec<ev::AuditEvent> = audits
        .iter()
        .filter_map(|m| ev::AuditEvent::decode(m.payload.as_ref()).ok())
        .filter(|e| e.action == "deletion.certificates.issue")
        .collect();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].resource, certificate_name);

    // After completion the same request still answers with the same, now succeeded, operation.
    let after = app.client.delete_dataset(request).await?.into_inner();
    assert_eq!(after.name, job.name);
    assert_eq!(after.state(), JobState::Succeeded);
    app.stop().await
}

#[tokio::test]
async fn missing_receipts_are_retried_then_the_deletion_fails_naming_the_silent_service()
-> Result<()> {
    let mut app = TestApp::spawn(DeletionSettings {
        receipt_timeout_ms: 400,
        max_retries: 2,
        ..settings(&["ingest", "audit"])
    })
    .await?;
    // The operator deletes the tenant; the tenant's own key follows the deletion.
    let job = app
        .operator()
        .delete_tenant(DeleteTenantRequest {
            name: "tenants/beta".to_owned(),
            reason: "offboarding".to_owned(),
            confirm_tenant_id: "beta".to_owned(),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    let deletion = job.output;
    app.wait_messages("TM_DELETION", "tm.beta.deletion.requested", 1)
        .await?;
    app.receipt(
        "beta",
        &deletion,
        ev::DeletionScope::Tenant,
        "ingest",
        false,
    )
    .await?;

    let failed = app
        .wait_for(&deletion, |d| d.state() != DeletionState::InProgress)
        .await?;
    assert_eq!(failed.state(), DeletionState::Failed);
    let job = failed.job.context("job")?;
    assert_eq!(job.state(), JobState::Failed);
    let error = job.error.context("error")?;
    assert_eq!(error.code, "RECEIPTS_MISSING");
    assert!(error.message.contains("audit"), "{}", error.message);
    assert!(!error.message.contains("ingest"), "{}", error.message);
    assert_eq!(failed.receipts.len(), 1);

    // The first publication and two retries.
    let requested = app
        .messages("TM_DELETION", "tm.beta.deletion.requested")
        .await?;
    assert_eq!(requested.len(), 3);
    let certificate = app
        .operator()
        .get_deletion_certificate(GetDeletionCertificateRequest {
            name: format!("{deletion}/certificate"),
        })
        .await
        .expect_err("no certificate for a failed deletion");
    assert_eq!(certificate.code(), Code::FailedPrecondition);
    app.stop().await
}

/// A service down when the request goes out, back later: the deletion waits for its receipt,
/// publishes the request again, and completes once the service answers the retry, with a
/// certificate holding every receipt.
#[tokio::test]
async fn a_service_down_during_the_deletion_is_retried_and_the_deletion_completes_when_it_is_back()
-> Result<()> {
    let mut app = TestApp::spawn(DeletionSettings {
        receipt_timeout_ms: 400,
        max_retries: 25,
        ..settings(&["ingest", "audit"])
    })
    .await?;
    let job = app
        .operator()
        .delete_tenant(DeleteTenantRequest {
            name: "tenants/beta".to_owned(),
            reason: "offboarding".to_owned(),
            confirm_tenant_id: "beta".to_owned(),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    let deletion = job.output;
    app.wait_messages("TM_DELETION", "tm.beta.deletion.requested", 1)
        .await?;
    app.receipt(
        "beta",
        &deletion,
        ev::DeletionScope::Tenant,
        "ingest",
        false,
    )
    .await?;

    // audit is down: the request goes out again and the deletion keeps waiting.
    app.wait_messages("TM_DELETION", "tm.beta.deletion.requested", 2)
        .await?;
    let waiting = app.get(&deletion).await?;
    assert_eq!(waiting.state(), DeletionState::InProgress);
    assert_eq!(waiting.receipts.len(), 1);

    // audit is back and answers the retried request.
    app.receipt("beta", &deletion, ev::DeletionScope::Tenant, "audit", false)
        .await?;
    let done = app
        .wait_for(&deletion, |d| d.state() != DeletionState::InProgress)
        .await?;
    assert_eq!(done.state(), DeletionState::Completed, "{done:?}");
    assert_eq!(done.job.context("job")?.state(), JobState::Succeeded);
    let certificate = app
        .operator()
        .get_deletion_certificate(GetDeletionCertificateRequest {
            name: format!("{deletion}/certificate"),
        })
        .await?
        .into_inner();
    let document: serde_json::Value = serde_json::from_slice(&certificate.certificate)?;
    let services: BTreeSet<&str> = document["receipts"]
        .as_array()
        .context("receipts")?
        .iter()
        .filter_map(|r| r["service"].as_str())
        .collect();
    // The deletion service's own receipt (the tenant's stream purge) stands next to them.
    assert_eq!(
        services,
        BTreeSet::from(["audit", "deletion", "ingest"]),
        "{document}"
    );
    app.stop().await
}

#[tokio::test]
async fn residue_fails_the_deletion_and_bad_requests_are_refused() -> Result<()> {
    let mut app = TestApp::spawn(settings(&["ingest"])).await?;
    let dataset = format!("tenants/acme/datasets/{}", Uuid::now_v7());
    let job = app
        .client
        .delete_dataset(DeleteDatasetRequest {
            name: dataset.clone(),
            reason: String::new(),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    app.receipt(
        "acme",
        &job.output,
        ev::DeletionScope::Dataset,
        "ingest",
        true,
    )
    .await?;
    let failed = app
        .wait_for(&job.output, |d| d.state() != DeletionState::InProgress)
        .await?;
    let error = failed.job.and_then(|j| j.error).context("error")?;
    assert_eq!(error.code, "RESIDUE_FOUND");
    assert!(error.message.contains("ingest"), "{}", error.message);

    let bad = [
        app.client
            .delete_tenant(DeleteTenantRequest {
                name: "tenants/acme".to_owned(),
                reason: String::new(),
                confirm_tenant_id: "other".to_owned(),
                request_id: String::new(),
            })
            .await,
        app.client
            .delete_dataset(DeleteDatasetRequest {
                name: "tenants/acme/datasets/not-a-uuid".to_owned(),
                reason: String::new(),
                request_id: String::new(),
            })
            .await,
        app.client
            .delete_dataset(DeleteDatasetRequest {
                name: dataset.clone(),
                reason: String::new(),
                request_id: "not-a-uuid".to_owned(),
            })
            .await,
    ];
    for result in bad {
        assert_eq!(result.expect_err("refused").code(), Code::InvalidArgument);
    }
    let request_id = Uuid::new_v4().to_string();
    app.client
        .delete_dataset(DeleteDatasetRequest {
            name: dataset,
            reason: String::new(),
            request_id: request_id.clone(),
        })
        .await?;
    let reused = app
        .client
        .delete_dataset(DeleteDatasetRequest {
            name: format!("tenants/acme/datasets/{}", Uuid::now_v7()),
            reason: String::new(),
            request_id,
        })
        .await
        .expect_err("a request id names one deletion");
    assert_eq!(reused.code(), Code::AlreadyExists);
    let missing = app
        .get(&format!("tenants/acme/deletions/{}", Uuid::now_v7()))
        .await
        .expect_err("unknown deletion");
    assert_eq!(
        missing.downcast_ref::<Status>().map(Status::code),
        Some(Code::NotFound)
    );
    app.stop().await
}

#[tokio::test]
async fn keys_act_only_on_their_tenant_with_the_deletion_scope_and_denials_are_audited()
-> Result<()> {
    let mut app = TestApp::spawn(settings(&["ingest"])).await?;
    let dataset = format!("tenants/acme/datasets/{}", Uuid::now_v7());
    let request = |name: &str| DeleteDatasetRequest {
        name: name.to_owned(),
        reason: String::new(),
        request_id: String::new(),
    };

    let other_key = app.mint("other", &[AuthScope::DeletionWrite]).await?;
    let unscoped_key = app.mint("acme", &[AuthScope::DatasetsWrite]).await?;

    let job = app
        .client
        .delete_dataset(request(&dataset))
        .await?
        .into_inner();
    let deletion = app.get(&job.output).await?;
    assert!(
        deletion.requested_by.starts_with("tenants/acme/apiKeys/"),
        "{}",
        deletion.requested_by
    );

    // Another tenant's key sees nothing: NOT_FOUND, as for a deletion that does not exist.
    let other = other_key
        .clone()
        .get_deletion(GetDeletionRequest {
            name: job.output.clone(),
        })
        .await
        .expect_err("another tenant's deletion");
    assert_eq!(other.code(), Code::NotFound);
    let other = other_key
        .clone()
        .delete_dataset(request(&dataset))
        .await
        .expect_err("another tenant's dataset");
    assert_eq!(other.code(), Code::NotFound);

    // The tenant's own key without `deletion:write` is refused, and the refusal is audited.
    let unscoped = unscoped_key
        .clone()
        .delete_tenant(DeleteTenantRequest {
            name: "tenants/acme".to_owned(),
            reason: String::new(),
            confirm_tenant_id: "acme".to_owned(),
            request_id: String::new(),
        })
        .await
        .expect_err("no deletion:write");
    assert_eq!(unscoped.code(), Code::PermissionDenied);

    // The operator deletes tenants but reads no tenant data: neither datasets nor deletions.
    let operator = app
        .operator()
        .delete_dataset(request(&dataset))
        .await
        .expect_err("the operator deletes no dataset");
    assert_eq!(operator.code(), Code::PermissionDenied);
    let operator = app
        .operator()
        .get_deletion(GetDeletionRequest {
            name: job.output.clone(),
        })
        .await
        .expect_err("the operator reads no deletion");
    assert_eq!(operator.code(), Code::PermissionDenied);
    let mut denied = Vec::new();
    for _ in 0..50 {
        denied = app
            .messages("TM_AUDIT", "tm.acme.audit.deletion")
            .await?
            .iter()
            .filter_map(|m| ev::AuditEvent::decode(m.payload.as_ref()).ok())
            .filter(|e| e.outcome() == ev::Outcome::Denied)
            .collect::<Vec<_>>();
        if denied.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let actions: BTreeSet<&str> = denied.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        BTreeSet::from([
            "deletion.datasets.delete",
            "deletion.deletions.get",
            "deletion.tenants.delete"
        ]),
        "every denial on acme's resources, by another tenant's key or an unscoped one, is in acme's audit log"
    );
    let by_other: BTreeSet<&str> = denied
        .iter()
        .filter(|e| e.actor_id.starts_with("tenants/other/apiKeys/"))
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        by_other,
        BTreeSet::from(["deletion.datasets.delete", "deletion.deletions.get"]),
        "another tenant's key is audited in the owner's log, under its own name"
    );
    assert!(
        denied
            .iter()
            .any(|e| e.actor_type() == ev::ActorType::Operator),
        "{denied:?}"
    );
    // Nothing was audited in the other tenant's log: it learns nothing about acme.
    assert!(
        app.messages("TM_AUDIT", "tm.other.audit.deletion")
            .await?
            .is_empty()
    );
    app.stop().await
}

#[tokio::test]
async fn calls_without_a_valid_credential_are_unauthenticated_and_change_nothing() -> Result<()> {
    let mut app = TestApp::spawn(settings(&["ingest"])).await?;
    let dataset = format!("tenants/acme/datasets/{}", Uuid::now_v7());
    let delete_dataset = DeleteDatasetRequest {
        name: dataset.clone(),
        reason: String::new(),
        request_id: String::new(),
    };
    let delete_tenant = DeleteTenantRequest {
        name: "tenants/acme".to_owned(),
        reason: String::new(),
        confirm_tenant_id: "acme".to_owned(),
        request_id: String::new(),
    };

    let mut refused = vec![
        app.anonymous()
            .delete_dataset(delete_dataset.clone())
            .await
            .map(|_| ()),
        app.anonymous()
            .delete_tenant(delete_tenant.clone())
            .await
            .map(|_| ()),
        app.anonymous()
            .list_certificate_signing_keys(ListCertificateSigningKeysRequest {})
            .await
            .map(|_| ()),
    ];
    // A key never minted, a malformed one, a wrong operator credential, another scheme.
    let unknown = IssuedKey::generate();
    for credential in [
        format!("Bearer {}", unknown.token().expose_secret()),
        "Bearer tmk_not-a-key".to_owned(),
        format!("Bearer {OPERATOR_CREDENTIAL}x"),
        format!("Basic {OPERATOR_CREDENTIAL}"),
    ] {
        let mut client = DeletionServiceClient::with_interceptor(
            app.channel.clone(),
            Bearer(credential.parse()?),
        );
        refused.push(
            client
                .delete_dataset(delete_dataset.clone())
                .await
                .map(|_| ()),
        );
        refused.push(
            client
                .delete_tenant(delete_tenant.clone())
                .await
                .map(|_| ()),
        );
    }
    for result in refused {
        assert_eq!(
            result.expect_err("no valid credential").code(),
            Code::Unauthenticated
        );
    }

    // Nothing was created, requested or audited.
    let deletions: i64 = sqlx::query_scalar("SELECT count(*) FROM deletion.deletions")
        .fetch_one(app.db.pool())
        .await?;
    assert_eq!(deletions, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        app.messages("TM_DELETION", "tm.acme.deletion.requested")
            .await?
            .is_empty()
    );
    assert!(
        app.messages("TM_AUDIT", "tm.acme.audit.deletion")
            .await?
            .is_empty()
    );

    // The same calls with the tenant's key go through.
    let job = app
        .client
        .delete_dataset(delete_dataset)
        .await?
        .into_inner();
    assert_eq!(job.target, dataset);
    assert!(app.get(&job.output).await.is_ok());
    app.stop().await
}

#[tokio::test]
async fn a_tenant_deletion_purges_the_tenants_messages_from_every_stream_but_the_audit_log()
-> Result<()> {
    let mut app = TestApp::spawn(settings(&["ingest"])).await?;
    // Messages of the tenant and of another one, as the other services would have published them.
    for subject in [
        "tm.gamma.dataset.ingested",
        "tm.gamma.dataset.ingested",
        "tm.gamma.dlq.analysis-requested",
        "tm.gamma.audit.ingest",
        "tm.other.dataset.ingested",
    ] {
        app.jetstream
            .publish(subject, "ids only".into())
            .await?
            .await?;
    }
    let job = app
        .operator()
        .delete_tenant(DeleteTenantRequest {
            name: "tenants/gamma".to_owned(),
            reason: "offboarding".to_owned(),
            confirm_tenant_id: "gamma".to_owned(),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    let deletion = job.output;
    app.wait_messages("TM_DELETION", "tm.gamma.deletion.requested", 1)
        .await?;
    app.receipt(
        "gamma",
        &deletion,
        ev::DeletionScope::Tenant,
        "ingest",
        false,
    )
    .await?;
    let done = app
        .wait_for(&deletion, |d| d.state() != DeletionState::InProgress)
        .await?;
    assert_eq!(done.state(), DeletionState::Completed, "{done:?}");

    // The deletion service's own receipt: what it purged, stream by stream; no residue.
    let purge = done
        .receipts
        .iter()
        .find(|r| r.service == "deletion")
        .context("the purge receipt")?;
    assert_eq!(
        purge.deleted.get("stream:TM_DATASET"),
        Some(&2),
        "{purge:?}"
    );
    assert_eq!(purge.deleted.get("stream:TM_DLQ"), Some(&1), "{purge:?}");
    // The request and the ingest receipt (their content is in the certificate).
    assert!(purge.deleted["stream:TM_DELETION"] >= 2, "{purge:?}");
    assert!(!purge.deleted.contains_key("stream:TM_AUDIT"), "{purge:?}");
    assert!(
        !purge.residue_found && purge.residue.is_empty(),
        "{purge:?}"
    );
    let certificate = app
        .operator()
        .get_deletion_certificate(GetDeletionCertificateRequest {
            name: format!("{deletion}/certificate"),
        })
        .await?
        .into_inner();
    let document: serde_json::Value = serde_json::from_slice(&certificate.certificate)?;
    let receipt = document["receipts"]
        .as_array()
        .context("receipts")?
        .iter()
        .find(|r| r["service"] == "deletion")
        .context("the purge receipt in the certificate")?;
    assert_eq!(receipt["deleted"]["stream:TM_DATASET"], 2, "{document}");

    // What is left: the audit log, the completion, and the other tenant's messages.
    app.wait_messages("TM_DELETION", "tm.gamma.deletion.completed", 1)
        .await?;
    for (stream, subject, expected) in [
        ("TM_DATASET", "tm.gamma.dataset.>", 0),
        ("TM_DLQ", "tm.gamma.dlq.>", 0),
        ("TM_DELETION", "tm.gamma.deletion.requested", 0),
        ("TM_DELETION", "tm.gamma.deletion.receipt", 0),
        ("TM_DELETION", "tm.gamma.deletion.completed", 1),
        // No job updates of a tenant deletion: they would only be deliveries to its webhooks.
        ("TM_JOB", "tm.gamma.job.>", 0),
        ("TM_AUDIT", "tm.gamma.audit.ingest", 1),
        ("TM_DATASET", "tm.other.dataset.>", 1),
    ] {
        let found = app.messages(stream, subject).await?.len();
        assert_eq!(found, expected, "{subject} in {stream}");
    }
    assert!(
        !app.messages("TM_AUDIT", "tm.gamma.audit.deletion")
            .await?
            .is_empty()
    );
    app.stop().await
}
