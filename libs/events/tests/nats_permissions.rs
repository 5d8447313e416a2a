//! Each service's NATS user against a real nats-server started with the repo's config
//! (`infra/nats/nats-server.conf` + the generated `permissions.conf`): the service's own flows work
//! (streams, `tm_auth`, its consumers, its publishes, pull and ack, dead letters, the deletion
//! purge), and everything outside its subjects is refused by the server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trustmesh_auth::{AuthBucket, CacheOptions, KeyCache, RateLimit};
use trustmesh_bus::{ConsumerRunner, Delivery, HandlerError, Publisher, RunnerOptions};
use trustmesh_events::{
    ALL_CONSUMERS, AUTH_KV_BUCKET, EventKind, Service, Subject, SubjectFilter, TenantId,
    filter_matches, msg_id, tenant_purged_streams,
};
use trustmesh_runtime::settings::common::NatsSettings;
use trustmesh_runtime::settings::{InvalidSetting, SettingsSource, Validate};
use trustmesh_testkit::nats_auth::SecuredNats;

/// Server errors (`-ERR ...`) a client was sent, lowercased.
type Errors = Arc<Mutex<Vec<String>>>;

struct ServiceClient {
    service: Service,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    errors: Errors,
}

async fn start_server() -> SecuredNats {
    SecuredNats::start(Service::ALL.map(Service::nats_password_env)).await
}

/// The `nats` section of a service's settings.
#[derive(serde::Deserialize)]
struct Settings {
    nats: NatsSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        Ok(())
    }
}

/// Connects as `service` the way the service does: its settings from the environment variables the
/// operator sets (`TRUSTMESH_NATS__USER`, `TRUSTMESH_NATS__PASSWORD`) and its client options
/// (`trustmesh_service_kit::nats_options`).
async fn connect(nats: &SecuredNats, service: Service) -> ServiceClient {
    let Settings { nats: settings } = SettingsSource::from_env_vars([
        ("TRUSTMESH_NATS__URL", nats.url()),
        ("TRUSTMESH_NATS__USER", service.nats_user().to_owned()),
        (
            "TRUSTMESH_NATS__PASSWORD",
            nats.password(&service.nats_password_env()).to_owned(),
        ),
    ])
    .load()
    .expect("nats settings");
    let errors = Errors::default();
    let sink = Arc::clone(&errors);
    let client = trustmesh_service_kit::nats_options(service.as_str(), &settings)
        .event_callback(move |event| {
            let sink = Arc::clone(&sink);
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    sink.lock()
                        .expect("not poisoned")
                        .push(error.to_string().to_lowercase());
                }
            }
        })
        .connect(settings.url.as_str())
        .await
        .unwrap_or_else(|e| panic!("{service} cannot connect as its user: {e}"));
    let jetstream = jetstream::new(client.clone());
    ServiceClient {
        service,
        client,
        jetstream,
        errors,
    }
}

impl ServiceClient {
    /// The permissions violations this client was told about, for failure messages.
    fn refusals(&self) -> String {
        format!(
            "{} was refused: {:#?}",
            self.service,
            violations(&self.errors)
        )
    }
}

fn acme() -> TenantId {
    TenantId::parse("acme").expect("valid tenant")
}

fn violations(errors: &Errors) -> Vec<String> {
    errors
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|e| e.contains("permissions violation"))
        .cloned()
        .collect()
}

/// Every event kind of the mesh.
fn every_kind() -> Vec<EventKind> {
    EventKind::FIXED
        .into_iter()
        .chain(Service::ALL.map(EventKind::Audit))
        .chain(ALL_CONSUMERS.iter().copied().map(EventKind::DeadLetter))
        .collect()
}

fn own_kind(service: Service, kind: EventKind) -> bool {
    service.publishes().contains(&kind)
        || matches!(kind, EventKind::DeadLetter(c) if c.service == service)
}

fn fast_runner() -> RunnerOptions {
    RunnerOptions {
        pull_expires: Duration::from_secs(1),
        lag_interval: Duration::from_millis(200),
        ..RunnerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_runs_its_own_flows_under_its_user() {
    let nats = start_server().await;
    let tenant = acme();
    let mut clients = Vec::new();
    for service in Service::ALL {
        clients.push(connect(&nats, service).await);
    }

    // Tenancy sets up and writes tm_auth (and purges a key, as on a tenant's deletion).
    let tenancy = &clients[0];
    assert_eq!(tenancy.service, Service::Tenancy);
    trustmesh_bus::ensure_streams(&tenancy.jetstream)
        .await
        .unwrap_or_else(|e| panic!("tenancy ensures the streams: {e}; {}", tenancy.refusals()));
    let bucket = AuthBucket::open(&tenancy.jetstream, 1)
        .await
        .unwrap_or_else(|e| panic!("tenancy opens tm_auth: {e}; {}", tenancy.refusals()));
    bucket
        .put_limits(&RateLimit::default())
        .await
        .unwrap_or_else(|e| panic!("tenancy writes tm_auth: {e}; {}", tenancy.refusals()));
    let kv = tenancy
        .jetstream
        .get_key_value(AUTH_KV_BUCKET)
        .await
        .expect("tm_auth");
    assert!(
        bucket
            .get_grant(&uuid::Uuid::new_v4())
            .await
            .unwrap_or_else(|e| panic!("tenancy reads tm_auth: {e}; {}", tenancy.refusals()))
            .is_none()
    );
    // Enough history that each watch below is flow-controlled by the server while it loads.
    let filler = Bytes::from(vec![b'x'; 64 * 1024]);
    for i in 0..200 {
        kv.put(format!("filler.{i}"), filler.clone())
            .await
            .expect("put");
    }
    kv.put("keys.gone", Bytes::from_static(b"x"))
        .await
        .expect("put");
    kv.purge("keys.gone")
        .await
        .unwrap_or_else(|e| panic!("tenancy purges a key: {e}; {}", tenancy.refusals()));

    let shutdown = CancellationToken::new();
    let mut runners = Vec::new();
    let mut consumers: Vec<(&'static trustmesh_events::ConsumerSpec, PullConsumer)> = Vec::new();
    let (delivered_tx, mut delivered_rx) = mpsc::unbounded_channel::<(String, String)>();
    for c in &clients {
        let service = c.service;
        trustmesh_bus::ensure_streams(&c.jetstream)
            .await
            .unwrap_or_else(|e| panic!("{service} ensures the streams: {e}; {}", c.refusals()));
        // The bucket is not empty, so this returns only once the watch has delivered its history.
        KeyCache::start(&c.jetstream, CacheOptions::default(), shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("{service} loads the key cache: {e}; {}", c.refusals()));
        for spec in service.consumers() {
            let mut pull = trustmesh_bus::ensure_consumer(&c.jetstream, spec)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{service} ensures {}: {e}; {}",
                        spec.durable_name,
                        c.refusals()
                    )
                });
            pull.info().await.unwrap_or_else(|e| {
                panic!(
                    "{service} reads {} info: {e}; {}",
                    spec.durable_name,
                    c.refusals()
                )
            });
            consumers.push((spec, pull.clone()));
            let tx = delivered_tx.clone();
            let handler = move |delivery: Delivery| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((
                        delivery.consumer().to_owned(),
                        delivery.subject().to_owned(),
                    ));
                    Ok::<(), HandlerError>(())
                }
            };
            let publisher = Publisher::new(c.jetstream.clone());
            let runner =
                ConsumerRunner::new(pull, spec, publisher, handler).with_options(fast_runner());
            runners.push(tokio::spawn(runner.run(shutdown.clone())));
        }
    }

    // Each service publishes each kind it publishes (and its dead letters), as itself.
    let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in &clients {
        let publisher = Publisher::new(c.jetstream.clone());
        for kind in every_kind().into_iter().filter(|&k| own_kind(c.service, k)) {
            let subject = Subject::new(&tenant, kind);
            publisher
                .publish_bytes(
                    &subject,
                    Bytes::from_static(b"\x08\x01"),
                    &msg_id(&subject, uuid::Uuid::new_v4()),
                )
                .await
                .unwrap_or_else(|e| {
                    panic!("{} publishes {subject}: {e}; {}", c.service, c.refusals())
                });
            for spec in ALL_CONSUMERS {
                if filter_matches(spec.filter_subject, subject.as_str()) {
                    expected
                        .entry(spec.durable_name)
                        .or_default()
                        .push(subject.to_string());
                }
            }
        }
    }
    assert_eq!(
        expected.len(),
        ALL_CONSUMERS.len(),
        "every consumer gets something"
    );

    // Every consumer pulls what it should, and the runner's acks land.
    let total: usize = expected.values().map(Vec::len).sum();
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..total {
        let left = deadline.saturating_duration_since(Instant::now());
        let (consumer, subject) = tokio::time::timeout(left, delivered_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("deliveries missing; so far {got:?}, expected {expected:?}"))
            .expect("runners alive");
        got.entry(consumer).or_default().push(subject);
    }
    for (consumer, subjects) in &expected {
        let mut want = subjects.clone();
        want.sort();
        let mut have = got.get(*consumer).cloned().unwrap_or_default();
        have.sort();
        assert_eq!(have, want, "{consumer}");
    }
    for (spec, mut pull) in consumers {
        let acked = async {
            loop {
                let info = pull.info().await.expect("consumer info").clone();
                if info.num_ack_pending == 0 && info.num_pending == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), acked)
            .await
            .unwrap_or_else(|_| panic!("{} did not ack", spec.durable_name));
    }

    // Deletion purges the tenant from every stream but the audit log.
    let deletion = &clients[4];
    assert_eq!(deletion.service, Service::Deletion);
    for spec in tenant_purged_streams() {
        let stream = deletion
            .jetstream
            .get_stream(spec.name)
            .await
            .unwrap_or_else(|e| {
                panic!("deletion opens {}: {e}; {}", spec.name, deletion.refusals())
            });
        stream
            .purge()
            .filter(SubjectFilter::tenant(&tenant).as_str())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "deletion purges {}: {e}; {}",
                    spec.name,
                    deletion.refusals()
                )
            });
    }

    shutdown.cancel();
    for runner in runners {
        runner
            .await
            .expect("runner task")
            .expect("runner stops cleanly");
    }
    for c in &clients {
        c.client.flush().await.expect("flush");
        assert_eq!(
            violations(&c.errors),
            Vec::<String>::new(),
            "{} was refused something it needs",
            c.service
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_is_refused_everything_else() {
    let nats = start_server().await;
    let tenant = acme();
    for service in Service::ALL {
        let c = connect(&nats, service).await;
        let mut publish: Vec<String> = every_kind()
            .into_iter()
            .filter(|&k| !own_kind(service, k))
            .map(|k| Subject::new(&tenant, k).to_string())
            .collect();
        for spec in ALL_CONSUMERS.iter().filter(|c| c.service != service) {
            let (stream, durable) = (spec.stream.name, spec.durable_name);
            publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"));
            publish.push(format!("$JS.ACK.{stream}.{durable}.1.1.1.1.1"));
            publish.push(format!(
                "$JS.API.CONSUMER.CREATE.{stream}.{durable}.{}",
                spec.filter_subject
            ));
        }
        publish.extend(
            [
                "$JS.API.CONSUMER.CREATE.TM_AUDIT",
                "$JS.API.CONSUMER.CREATE.TM_DATASET.spy.tm.*.dataset.>",
                "$JS.API.STREAM.DELETE.TM_AUDIT",
                "$JS.API.STREAM.PURGE.TM_AUDIT",
                "$JS.API.STREAM.MSG.DELETE.TM_DELETION",
                "$JS.API.CONSUMER.DELETE.TM_DELETION.deletion-receipt",
                "tm.acme.dataset.exploded",
                "other.subject",
                "_INBOX.somebody",
            ]
            .map(str::to_owned),
        );
        // Messages are read by sequence only from the streams its own consumers read.
        publish.extend(
            trustmesh_events::ALL_STREAMS
                .iter()
                .filter(|stream| !service.consumers().any(|c| c.stream.name == stream.name))
                .map(|stream| format!("$JS.API.STREAM.MSG.GET.{}", stream.name)),
        );
        if service != Service::Tenancy {
            publish.push(format!("$KV.{AUTH_KV_BUCKET}.keys.forged"));
        }
        if service != Service::Deletion {
            publish.push("$JS.API.STREAM.PURGE.TM_DATASET".to_owned());
        }
        let mut subscribe: Vec<String> = [
            "tm.>",
            "tm.acme.>",
            "tm.*.audit.>",
            ">",
            "_INBOX.>",
            "$JS.API.>",
            "$JS.EVENT.ADVISORY.>",
            "$KV.tm_auth.>",
        ]
        .map(str::to_owned)
        .to_vec();
        subscribe.extend(
            Service::ALL
                .into_iter()
                .filter(|&s| s != service)
                .map(|s| format!("{}.>", s.nats_inbox_prefix())),
        );

        for subject in &publish {
            c.client
                .publish(subject.clone(), Bytes::from_static(b"x"))
                .await
                .expect("queued");
        }
        let mut subscriptions = Vec::new();
        for subject in &subscribe {
            subscriptions.push(c.client.subscribe(subject.clone()).await.expect("queued"));
        }
        c.client.flush().await.expect("flush");

        let refused = |verb: &str, subject: &str| {
            let needle =
                format!("permissions violation for {verb} to \"{subject}\"").to_lowercase();
            violations(&c.errors).iter().any(|e| e.contains(&needle))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let missing: Vec<String> = publish
                .iter()
                .filter(|s| !refused("publish", s))
                .map(|s| format!("publish {s}"))
                .chain(
                    subscribe
                        .iter()
                        .filter(|s| !refused("subscription", s))
                        .map(|s| format!("subscribe {s}")),
                )
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{service} was not refused: {missing:#?}\nrefusals: {:#?}",
                violations(&c.errors)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(subscriptions);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_and_wrong_passwords_are_refused() {
    let nats = start_server().await;
    let anonymous = async_nats::connect(nats.url()).await;
    assert!(anonymous.is_err(), "an anonymous client was let in");
    let swapped = async_nats::ConnectOptions::with_user_and_password(
        Service::Ingest.nats_user().to_owned(),
        nats.password(&Service::Tenancy.nats_password_env())
            .to_owned(),
    )
    .connect(nats.url())
    .await;
    assert!(swapped.is_err(), "ingest got in with tenancy's password");
}
