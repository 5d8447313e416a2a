//! The deletion service against a real nats-server and Postgres: receipts published as the other
//! services would, certificates verified with the published key, retries and failure on silence.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures::StreamExt;
use prost::Message as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use trustmesh_auth::{KeyId, KeyPrincipal, Principal, Scope as AuthScope};
use trustmesh_bus::Publisher;
use trustmesh_deletion::settings::{DatabaseSettings, DeletionSettings, KeySettings, NatsSettings};
use trustmesh_deletion::{Application, Settings, VerifyError, verify_certificate};
use trustmesh_events::{Subject, TenantId, msg_id};
use trustmesh_proto::events::v1 as ev;
use trustmesh_proto::v1::deletion_service_client::DeletionServiceClient;
use trustmesh_proto::v1::{
    DeleteDatasetRequest, DeleteTenantRequest, Deletion, DeletionState,
    GetDeletionCertificateRequest, GetDeletionRequest, JobKind, JobState,
    ListCertificateSigningKeysRequest,
};
use trustmesh_runtime::{AdminSettings, GrpcSettings, SecretString, ServerTls, TransportMode};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;
use uuid::Uuid;

struct TestApp {
    client: DeletionServiceClient<Channel>,
    jetstream: Context,
    publisher: Publisher,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    _keys: tempfile::TempDir,
    _db: TestDatabase,
    _nats: NatsServer,
}

impl TestApp {
    async fn spawn(deletion: DeletionSettings) -> Result<Self> {
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
        let keys = tempfile::tempdir()?;
        let settings = Settings {
            grpc: GrpcSettings {
                bind: "127.0.0.1:0".parse()?,
                tls: ServerTls {
                    mode: TransportMode::DevPlaintextLoopback,
                    ..ServerTls::default()
                },
                ..GrpcSettings::default()
            },
            admin: AdminSettings {
                bind: "127.0.0.1:0".parse()?,
            },
            database: DatabaseSettings {
                url: SecretString::from(db.url().to_owned()),
                max_connections: 5,
            },
            nats: NatsSettings { url: nats.url() },
            keys: KeySettings {
                signing_key_file: keys.path().join("signing-key"),
            },
            deletion,
            ..Settings::default()
        };
        let app = Application::build(settings, test_principal)
            .await
            .context("build")?;
        let addr = app.grpc_addr();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            app.run_until_stopped(stop).await.expect("the service runs");
        });
        let client = DeletionServiceClient::connect(format!("http://{addr}")).await?;
        let jetstream = nats.jetstream().await;
        Ok(Self {
            client,
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

    async fn get(&mut self, name: &str) -> Result<Deletion> {
        Ok(self
            .client
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

/// Stands in for `libs/auth`'s interceptor: `x-test-tenant: <tenant>` makes the caller an API key of
/// that tenant, with `deletion:write` unless `x-test-scope: none`; without it, no principal.
fn test_principal(mut request: Request<()>) -> Result<Request<()>, Status> {
    let metadata = request.metadata();
    let Some(tenant) = metadata.get("x-test-tenant").and_then(|v| v.to_str().ok()) else {
        return Ok(request);
    };
    let tenant = TenantId::parse(tenant).map_err(|_| Status::unauthenticated("bad test tenant"))?;
    let scopes = match metadata.get("x-test-scope").and_then(|v| v.to_str().ok()) {
        Some("none") => BTreeSet::new(),
        _ => BTreeSet::from([AuthScope::DeletionWrite]),
    };
    request
        .extensions_mut()
        .insert(Principal::ApiKey(KeyPrincipal {
            tenant,
            key_id: KeyId::generate(),
            scopes,
        }));
    Ok(request)
}

/// `message` as a request from an API key of `tenant` (with `deletion:write` if `scoped`).
fn as_key<T>(message: T, tenant: &str, scoped: bool) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-test-tenant", tenant.parse().expect("ascii"));
    if !scoped {
        request
            .metadata_mut()
            .insert("x-test-scope", "none".parse().expect("ascii"));
    }
    request
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
    let job = app
        .client
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
        .client
        .get_deletion_certificate(GetDeletionCertificateRequest {
            name: format!("{deletion}/certificate"),
        })
        .await
        .expect_err("no certificate for a failed deletion");
    assert_eq!(certificate.code(), Code::FailedPrecondition);
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

    let job = app
        .client
        .delete_dataset(as_key(request(&dataset), "acme", true))
        .await?
        .into_inner();
    let deletion = app.get(&job.output).await?;
    assert!(
        deletion.requested_by.starts_with("tenants/acme/apiKeys/"),
        "{}",
        deletion.requested_by
    );

    // Another tenant's key sees nothing: NOT_FOUND, as for a deletion that does not exist.
    let other = app
        .client
        .get_deletion(as_key(
            GetDeletionRequest {
                name: job.output.clone(),
            },
            "other",
            true,
        ))
        .await
        .expect_err("another tenant's deletion");
    assert_eq!(other.code(), Code::NotFound);
    let other = app
        .client
        .delete_dataset(as_key(request(&dataset), "other", true))
        .await
        .expect_err("another tenant's dataset");
    assert_eq!(other.code(), Code::NotFound);

    // The tenant's own key without `deletion:write` is refused, and the refusal is audited.
    let unscoped = app
        .client
        .delete_tenant(as_key(
            DeleteTenantRequest {
                name: "tenants/acme".to_owned(),
                reason: String::new(),
                confirm_tenant_id: "acme".to_owned(),
                request_id: String::new(),
            },
            "acme",
            false,
        ))
        .await
        .expect_err("no deletion:write");
    assert_eq!(unscoped.code(), Code::PermissionDenied);
    let mut denied = Vec::new();
    for _ in 0..50 {
        denied = app
            .messages("TM_AUDIT", "tm.acme.audit.deletion")
            .await?
            .iter()
            .filter_map(|m| ev::AuditEvent::decode(m.payload.as_ref()).ok())
            .filter(|e| e.outcome() == ev::Outcome::Denied)
            .collect::<Vec<_>>();
        if denied.len() >= 3 {
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
    app.stop().await
}
