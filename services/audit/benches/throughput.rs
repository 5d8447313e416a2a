//! Sustained audit throughput: N events (default 20,000, `AUDIT_BENCH_EVENTS`) across 10 tenants are
//! published to a real nats-server as a backlog, then the audit service (in process, against a fresh
//! Postgres database) is started and timed until every event is chained and checkpointed.
//!
//! `. ~/.trustmesh-dev/env && cargo bench -p trustmesh-audit --bench throughput`

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use trustmesh_audit::settings::{DatabaseSettings, KeySettings, NatsSettings};
use trustmesh_audit::{Application, Settings};
use trustmesh_bus::Publisher;
use trustmesh_events::{Service, Subject, TenantId, msg_id};
use trustmesh_proto::events::v1::{ActorType, AuditEvent, EventMeta, Outcome};
use trustmesh_runtime::{AdminSettings, GrpcSettings};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;

const TENANTS: usize = 10;

fn event(tenant: &str, n: usize) -> AuditEvent {
    let at = OffsetDateTime::now_utc();
    AuditEvent {
        meta: Some(EventMeta {
            event_id: uuid::Uuid::now_v7().to_string(),
            tenant: tenant.to_owned(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: at.unix_timestamp(),
                nanos: i32::try_from(at.microsecond() * 1000).unwrap_or(0),
            }),
            producer: "ingest".to_owned(),
            request_id: format!("req-{n}"),
        }),
        actor_type: ActorType::ApiKey as i32,
        actor_id: format!("tenants/{tenant}/apiKeys/bench"),
        action: "datasets.rows.read".to_owned(),
        resource: format!("tenants/{tenant}/datasets/d{n}"),
        outcome: Outcome::Allowed as i32,
        records_affected: 100,
        ..AuditEvent::default()
    }
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("AUDIT_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let keys = tempfile::tempdir().expect("a temporary directory");
    let jetstream = nats.jetstream().await;
    trustmesh_bus::ensure_streams(&jetstream)
        .await
        .expect("the streams");
    let publisher = Publisher::new(jetstream);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TENANTS {
        let publisher = publisher.clone();
        let per_tenant = total / TENANTS;
        tasks.push(tokio::spawn(async move {
            let tenant = format!("bench{t}");
            let subject =
                Subject::audit(&TenantId::parse(&tenant).expect("tenant"), Service::Ingest);
            for n in 0..per_tenant {
                let e = event(&tenant, n);
                let id = msg_id(
                    &subject,
                    e.meta
                        .as_ref()
                        .map(|m| m.event_id.parse().expect("uuid"))
                        .expect("meta"),
                );
                publisher
                    .publish(&subject, &e, &id)
                    .await
                    .expect("published");
            }
        }));
    }
    for task in tasks {
        task.await.expect("the publisher task");
    }
    let total = total / TENANTS * TENANTS;
    println!(
        "published {total} events across {TENANTS} tenants in {:.2?}",
        started.elapsed()
    );

    let settings = Settings {
        grpc: GrpcSettings::dev_plaintext_loopback(),
        admin: AdminSettings::any_loopback_port(),
        database: DatabaseSettings {
            url: secrecy::SecretString::from(db.url()),
            max_connections: 8,
        },
        nats: NatsSettings::at(nats.url()),
        keys: KeySettings {
            signing_key_file: keys.path().join("signing-key"),
        },
        ..Settings::default()
    };
    let started = Instant::now();
    let app = Application::build(settings).await.expect("the app builds");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let pool = db.pool();
    loop {
        let chained: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events")
            .fetch_one(pool)
            .await
            .expect("count");
        if usize::try_from(chained).unwrap_or(0) >= total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "too slow: {chained} chained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let checkpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.checkpoints")
        .fetch_one(pool)
        .await
        .expect("count");
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "chained {total} events ({checkpoints} signed checkpoints) in {elapsed:.2?}: {rate:.0} events/s"
    );
    shutdown.cancel();
    let _ = running.await;
}
