//! The notifier against a real nats-server and Postgres: each event is recorded once however often
//! it arrives, and a deletion request removes the target's records and is answered with a receipt.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use futures::StreamExt;
use prost::Message as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trustmesh_bus::Publisher;
use trustmesh_events::{Subject, TenantId};
use trustmesh_notifier::settings::{DatabaseSettings, NatsSettings};
use trustmesh_notifier::{Application, DeliveryLog, Settings};
use trustmesh_proto::events::v1 as ev;
use trustmesh_proto::v1::{JobKind, JobState};
use trustmesh_runtime::{AdminSettings, GrpcSettings, SecretString, ServerTls, TransportMode};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;
use uuid::Uuid;

struct TestApp {
    log: DeliveryLog,
    jetstream: Context,
    publisher: Publisher,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
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

impl TestApp {
    async fn spawn() -> Result<Self> {
        let nats = NatsServer::start().await;
        let db = TestDatabase::create().await;
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
            ..Settings::default()
        };
        let app = Application::build(settings).await.context("build")?;
        let log = app.delivery_log();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            app.run_until_stopped(stop).await.expect("the service runs");
        });
        let jetstream = nats.jetstream().await;
        Ok(Self {
            log,
            publisher: Publisher::new(jetstream.clone()),
            jetstream,
            shutdown,
            server,
            _db: db,
            _nats: nats,
        })
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.server.await?;
        Ok(())
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

    async fn wait_records(
        &self,
        tenant: &TenantId,
        n: usize,
    ) -> Result<Vec<trustmesh_notifier::DeliveryRecord>> {
        for _ in 0..100 {
            let records = self.log.list(tenant).await?;
            if records.len() == n {
                return Ok(records);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{tenant} never had {n} records")
    }

    /// Waits until every notifier consumer has handled (and acked) everything stored so far.
    async fn wait_idle(&self) -> Result<()> {
        let consumers = [
            ("TM_JOB", "notifier-job"),
            ("TM_SCORES", "notifier-scores"),
            ("TM_DATASET", "notifier-dataset"),
            ("TM_DELETION", "notifier-deletion"),
        ];
        for _ in 0..100 {
            let mut idle = true;
            for (stream, name) in consumers {
                let mut consumer: async_nats::jetstream::consumer::PullConsumer = self
                    .jetstream
                    .get_stream(stream)
                    .await?
                    .get_consumer(name)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                let info = consumer.info().await.map_err(|e| anyhow::anyhow!(e))?;
                idle &= info.num_pending == 0 && info.num_ack_pending == 0;
            }
            if idle {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the notifier consumers never became idle")
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

    async fn wait_receipts(&self, tenant: &str, n: usize) -> Result<Vec<ev::DeletionReceipt>> {
        for _ in 0..100 {
            let receipts = self.receipts(tenant).await?;
            if receipts.len() >= n {
                return Ok(receipts);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("no receipt {n} for {tenant}")
    }

    async fn request_deletion(
        &self,
        tenant: &TenantId,
        deletion: &str,
        scope: ev::DeletionScope,
        target: &str,
    ) -> Result<()> {
        let request = ev::DeletionRequested {
            meta: Some(meta(tenant.as_str())),
            deletion: deletion.to_owned(),
            scope: scope.into(),
            target: target.to_owned(),
        };
        let id = format!("test:{}", Uuid::now_v7());
        self.publisher
            .publish(&Subject::deletion_requested(tenant), &request, &id)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn events_are_recorded_once_each_and_deletions_remove_them_with_a_receipt() -> Result<()> {
    let app = TestApp::spawn().await?;
    let acme = TenantId::parse("acme")?;
    let other = TenantId::parse("other")?;
    let dataset_a = format!("tenants/acme/datasets/{}", Uuid::now_v7());
    let dataset_b = format!("tenants/acme/datasets/{}", Uuid::now_v7());
    let job = format!("tenants/acme/jobs/{}", Uuid::now_v7());
    let report = format!("tenants/acme/reports/{}", Uuid::now_v7());

    app.publish_twice(
        &Subject::dataset_ingested(&acme),
        &ev::DatasetIngested {
            meta: Some(meta("acme")),
            dataset: dataset_a.clone(),
            row_count: 10,
            column_count: 3,
            size_bytes: 100,
        },
    )
    .await?;
    app.publish_twice(
        &Subject::job_updated(&acme),
        &ev::JobUpdated {
            meta: Some(meta("acme")),
            job: job.clone(),
            kind: JobKind::Analysis.into(),
            state: JobState::Succeeded.into(),
            progress: 1.0,
            step: "done".to_owned(),
            error_code: String::new(),
            target: dataset_a.clone(),
            output: report.clone(),
            version: 3,
        },
    )
    .await?;
    app.publish_twice(
        &Subject::scores_ready(&acme),
        &ev::ScoresReady {
            meta: Some(meta("acme")),
            job: job.clone(),
            dataset: dataset_a.clone(),
            report: report.clone(),
            row_count: 10,
            flagged_row_count: 2,
            health_score: 0.8,
        },
    )
    .await?;
    app.publish_twice(
        &Subject::dataset_failed(&acme),
        &ev::DatasetFailed {
            meta: Some(meta("acme")),
            dataset: dataset_b.clone(),
            error_code: "CSV_JAGGED_ROW".to_owned(),
        },
    )
    .await?;
    app.publish_twice(
        &Subject::dataset_ingested(&other),
        &ev::DatasetIngested {
            meta: Some(meta("other")),
            dataset: format!("tenants/other/datasets/{}", Uuid::now_v7()),
            row_count: 1,
            column_count: 1,
            size_bytes: 1,
        },
    )
    .await?;

    let records = app.wait_records(&acme, 4).await?;
    let mut kinds: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.event_type.as_str(), r.resource.as_str()))
        .collect();
    kinds.sort_unstable();
    let mut expected = vec![
        ("dataset.failed", dataset_b.as_str()),
        ("dataset.ingested", dataset_a.as_str()),
        ("job.updated", job.as_str()),
        ("scores.ready", report.as_str()),
    ];
    expected.sort_unstable();
    assert_eq!(kinds, expected);
    app.wait_records(&other, 1).await?;
    // Once every copy has been handled and acked: still one record each.
    app.wait_idle().await?;
    assert_eq!(app.log.list(&acme).await?.len(), 4);

    // Deleting dataset A removes its three records and nothing else, with one receipt.
    let deletion = format!("tenants/acme/deletions/{}", Uuid::now_v7());
    app.request_deletion(&acme, &deletion, ev::DeletionScope::Dataset, &dataset_a)
        .await?;
    let receipts = app.wait_receipts("acme", 1).await?;
    let receipt = &receipts[0];
    assert_eq!(receipt.service, "notifier");
    assert_eq!(receipt.deletion, deletion);
    assert_eq!(receipt.scope(), ev::DeletionScope::Dataset);
    assert_eq!(receipt.deleted.get("rows:deliveries"), Some(&3));
    assert!(!receipt.residue_found);
    let left = app.log.list(&acme).await?;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].resource, dataset_b);

    // The same request again (a retry): no second effect, no second receipt.
    app.request_deletion(&acme, &deletion, ev::DeletionScope::Dataset, &dataset_a)
        .await?;
    app.wait_idle().await?;
    // NOTE: a second receipt would have been committed to the outbox by now; give the relay time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.receipts("acme").await?.len(), 1);

    // Deleting the tenant removes the rest of it; the other tenant keeps its record.
    let tenant_deletion = format!("tenants/acme/deletions/{}", Uuid::now_v7());
    app.request_deletion(
        &acme,
        &tenant_deletion,
        ev::DeletionScope::Tenant,
        "tenants/acme",
    )
    .await?;
    let receipts = app.wait_receipts("acme", 2).await?;
    let receipt = receipts
        .iter()
        .find(|r| r.deletion == tenant_deletion)
        .context("tenant receipt")?;
    assert_eq!(receipt.deleted.get("rows:deliveries"), Some(&1));
    assert!(!receipt.residue_found);
    assert!(app.log.list(&acme).await?.is_empty());
    assert_eq!(app.log.list(&other).await?.len(), 1);
    app.stop().await
}
