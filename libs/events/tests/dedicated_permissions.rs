//! The NATS user of a dedicated analysis deployment (`analysis-<tenant>`, from
//! `nats_authorization_config_with_dedicated`) against a real nats-server started with the repo's
//! `nats-server.conf` beside that generated `permissions.conf`: it binds, pulls from and acks its
//! tenant's durables (jobs, folds, scores, deletions: every analysis consumer) and publishes their
//! dead letters; the server refuses it the shared durables and its durables with another filter
//! than its tenant's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use trustmesh_bus::{ConsumerRunner, Delivery, HandlerError, Publisher};
use trustmesh_events::permissions::{
    DEDICATED_CONSUMERS, dedicated_analysis_password_env, dedicated_analysis_user,
    dedicated_durable_name, nats_authorization_config_with_dedicated,
};
use trustmesh_events::{ConsumerSpec, EventKind, Service, Subject, TenantId, msg_id};
use trustmesh_runtime::settings::common::NatsSettings;
use trustmesh_testkit::nats_auth::{SecuredNats, repo_nats_config};

/// `spec` as `tenant`'s dedicated deployment binds it (as `services/analysis/src/app.rs` does).
fn dedicated(spec: &ConsumerSpec, tenant: &TenantId) -> &'static ConsumerSpec {
    let durable: &'static str = dedicated_durable_name(spec, tenant).leak();
    let filter: &'static str = spec.filter_for_tenant(tenant).as_str().to_owned().leak();
    Box::leak(Box::new(ConsumerSpec {
        durable_name: durable,
        filter_subject: filter,
        ..*spec
    }))
}

/// The service that publishes what `spec` reads, and that event kind: analysis itself for jobs and
/// folds, trust-scoring for `scores.ready`, the deletion service for `deletion.requested`.
fn producer(spec: &ConsumerSpec) -> (Service, EventKind) {
    Service::ALL
        .into_iter()
        .flat_map(|service| service.publishes().iter().map(move |kind| (service, *kind)))
        .find(|(_, kind)| spec.filter_subject == format!("tm.*.{kind}"))
        .unwrap_or_else(|| panic!("no service publishes what {} reads", spec.durable_name))
}

/// `spec`'s consumer, read back (for its info).
async fn pull_info(js: &jetstream::Context, spec: &ConsumerSpec) -> PullConsumer {
    js.get_stream(spec.stream.name)
        .await
        .expect("stream")
        .get_consumer(spec.durable_name)
        .await
        .expect("consumer")
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("trustmesh-nats-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_analysis_user_uses_its_tenants_durables_only() {
    let vip = TenantId::parse("vip").expect("valid");
    let dir = TempDir::new();
    std::fs::copy(repo_nats_config(), dir.path().join("nats-server.conf")).expect("copy config");
    std::fs::write(
        dir.path().join("permissions.conf"),
        nats_authorization_config_with_dedicated(std::slice::from_ref(&vip)),
    )
    .expect("write permissions");
    let envs: Vec<String> = Service::ALL
        .map(Service::nats_password_env)
        .into_iter()
        .chain([dedicated_analysis_password_env(&vip)])
        .collect();
    let nats = SecuredNats::start_with_config(dir.path().join("nats-server.conf"), envs).await;

    // The shared services set up the streams, as at a mesh's start.
    // Server errors (`-ERR 'Permissions Violation ...'`) sent to either client.
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    // Every user as the service it belongs to (its inbox prefix).
    let connect = |service: Service, user: String, password: String| {
        let errors = Arc::clone(&errors);
        let settings = NatsSettings {
            user: Some(user),
            password: Some(password.into()),
            ..NatsSettings::at(nats.url())
        };
        async move {
            let sink = Arc::clone(&errors);
            trustmesh_service_kit::nats_options(service.as_str(), &settings)
                .event_callback(move |event| {
                    let sink = Arc::clone(&sink);
                    async move {
                        if let async_nats::Event::ServerError(error) = event {
                            sink.lock().expect("not poisoned").push(error.to_string());
                        }
                    }
                })
                .connect(settings.url.as_str())
                .await
                .expect("connects as its user")
        }
    };
    let shared = connect(
        Service::Analysis,
        Service::Analysis.nats_user().to_owned(),
        nats.password(&Service::Analysis.nats_password_env())
            .to_owned(),
    )
    .await;
    trustmesh_bus::ensure_streams(&jetstream::new(shared))
        .await
        .expect("analysis ensures the streams");

    let client = connect(
        Service::Analysis,
        dedicated_analysis_user(&vip),
        nats.password(&dedicated_analysis_password_env(&vip))
            .to_owned(),
    )
    .await;
    let js = jetstream::new(client.clone());
    trustmesh_bus::ensure_streams(&js)
        .await
        .expect("the dedicated user ensures the streams too");
    // A refused API request gets no answer, only a server error: wait for it briefly.
    let mut refused_js = js.clone();
    refused_js.set_timeout(Duration::from_secs(2));
    for spec in DEDICATED_CONSUMERS {
        let own = dedicated(spec, &vip);
        let pull = trustmesh_bus::ensure_consumer(&js, own)
            .await
            .unwrap_or_else(|e| panic!("binds {}: {e}\n{}", own.durable_name, nats.log()));
        // A message of its tenant, published by its producer's user, reaches it and is acked.
        // (Analysis publishes jobs and folds: the shared deployment requests folds of a fanned-out
        // job.)
        let (service, kind) = producer(spec);
        let subject = Subject::new(&vip, kind);
        let producer_js = if service == Service::Analysis {
            js.clone()
        } else {
            jetstream::new(
                connect(
                    service,
                    service.nats_user().to_owned(),
                    nats.password(&service.nats_password_env()).to_owned(),
                )
                .await,
            )
        };
        Publisher::new(producer_js)
            .publish_bytes(
                &subject,
                Bytes::from_static(b"\x08\x01"),
                &msg_id(&subject, uuid::Uuid::new_v4()),
            )
            .await
            .unwrap_or_else(|e| panic!("publishes {subject}: {e}"));
        // Pulled and acked by the consumer runner, as in the service.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let handler = move |delivery: Delivery| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(delivery.subject().to_owned());
                Ok::<(), HandlerError>(())
            }
        };
        let stop = CancellationToken::new();
        let runner = ConsumerRunner::new(pull, own, Publisher::new(js.clone()), handler);
        let running = tokio::spawn(runner.run(stop.clone()));
        let delivered = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing pulled from {}\n{}", own.durable_name, nats.log()))
            .expect("the runner runs");
        assert_eq!(delivered, subject.as_str());
        let acked = async {
            let mut pull = pull_info(&js, own).await;
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
            .unwrap_or_else(|_| panic!("{} did not ack\n{}", own.durable_name, nats.log()));
        stop.cancel();
        running
            .await
            .expect("runner task")
            .expect("runner stops cleanly");
        // Its dead letters.
        js.publish(
            format!("tm.vip.dlq.{}", own.durable_name),
            Bytes::from_static(b"x"),
        )
        .await
        .expect("dead letter published")
        .await
        .unwrap_or_else(|e| panic!("dead letter stored: {e}\n{}", nats.log()));

        // Refused: the shared durable, and its own durable with every tenant's filter.
        assert!(
            trustmesh_bus::ensure_consumer(&refused_js, spec)
                .await
                .is_err(),
            "bound the shared {}",
            spec.durable_name
        );
        let wide = Box::leak(Box::new(ConsumerSpec {
            filter_subject: spec.filter_subject,
            ..*own
        }));
        assert!(
            refused_js
                .get_stream(spec.stream.name)
                .await
                .expect("stream info")
                .create_consumer(trustmesh_bus::consumer_config(wide))
                .await
                .is_err(),
            "bound {} on every tenant",
            own.durable_name
        );
    }
    // The refusals above were the server's, not another failure.
    let errors = errors.lock().expect("not poisoned").clone();
    for spec in DEDICATED_CONSUMERS {
        let shared_create = format!(
            "$JS.API.CONSUMER.CREATE.{}.{}",
            spec.stream.name, spec.durable_name
        );
        assert!(
            errors
                .iter()
                .any(|e| e.to_lowercase().contains("permissions violation")
                    && e.contains(&shared_create)),
            "{shared_create} was not refused: {errors:?}"
        );
    }
}
