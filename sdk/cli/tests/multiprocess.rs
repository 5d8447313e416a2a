//! The multi-process layout on one machine: every service its own process (the real service
//! binaries, with two `analysis` replicas behind a connection balancer standing in for a Kubernetes
//! Service), over a 3-node NATS JetStream cluster on loopback (streams at R3, `sync_interval:
//! always`), Postgres and a local object directory, driven through the SDK. One NATS node is killed
//! during the flow and no acknowledged message is lost; the `analysis` replica running a job is
//! killed (SIGKILL) mid-job and the other replica completes it. Every process connects to Postgres
//! as its own role (`tm_<schema>`, no superuser, no BYPASSRLS), so the flow runs under the
//! row-level security the tenant tables FORCE.
//!
//! The layout itself is `common::layout` (shared with `chaos_kill.rs` and the load generator). The
//! service binaries belong to other packages, so Cargo gives this test no `CARGO_BIN_EXE_*` for
//! them: they are looked up in `target/<profile>/`. `cargo test --workspace` builds them; to run this
//! test alone, build them first:
//!
//! ```text
//! cargo build --workspace --bins && cargo test -p trustmesh-cli --test multiprocess
//! ```
//!
//! The ignored test `jobs_per_second_with_one_and_two_analysis_replicas` prints the throughput of a
//! batch of concurrent analyses with one, then two `analysis` replicas (README, Performance).

mod common;

use std::time::{Duration, Instant};

use common::layout::{Clients, Layout, Process, REPLICAS, log_tail};
use futures::StreamExt as _;
use trustmesh_events::{
    ALL_STREAMS, AUTH_KV_BUCKET,
    consumers::{ANALYSIS_FOLDS, ANALYSIS_REQUESTED},
};
use trustmesh_proto::v1::{
    AnalysisOptions, DeletionState, IssueType, JobState, StartAnalysisRequest, TaskType,
};
use trustmesh_sdk::once_known;
use trustmesh_testkit::data::synthetic_csv;

/// How long an analysis may take, a redelivery after a killed replica included (ack wait 30 s).
const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// Rows of the analyzed dataset: the most that still get AutoML's whole model suite, so that with
/// [`JOB_FOLDS`] folds a job trains for a few seconds, long enough to kill its replica mid-job.
const JOB_ROWS: usize = 20_000;
/// Cross-validation folds of every analysis (the most the API allows).
const JOB_FOLDS: u32 = 20;
/// The step of a job that keeps its `analysis` replica busy.
const TRAIN_FOLDS: &str = "train-folds";
/// What the replica coordinating a job logs once its folds are out as work items.
const FOLDS_FANNED_OUT: &str = "The job's folds are out as work items.";

/// A classification analysis of `dataset`'s `label`, with [`JOB_FOLDS`] folds.
fn analysis_request(dataset: &str) -> StartAnalysisRequest {
    StartAnalysisRequest {
        dataset: dataset.to_owned(),
        label_column: "label".to_owned(),
        task_type: TaskType::Classification.into(),
        options: Some(AnalysisOptions {
            cv_folds: JOB_FOLDS,
            ..AnalysisOptions::default()
        }),
        ..StartAnalysisRequest::default()
    }
}

/// Each stream's name and the sequence numbers of the messages it holds.
async fn stream_contents(js: &async_nats::jetstream::Context) -> Vec<(String, Vec<u64>)> {
    let mut contents = Vec::new();
    for spec in ALL_STREAMS {
        let mut stream = js.get_stream(spec.name).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let mut seqs = Vec::new();
        if state.messages > 0 {
            for seq in state.first_sequence..=state.last_sequence {
                if stream.get_raw_message(seq).await.is_ok() {
                    seqs.push(seq);
                }
            }
        }
        contents.push((spec.name.to_owned(), seqs));
    }
    contents
}

/// The NATS nodes holding a stream (leader and replicas).
fn hosts(info: &async_nats::jetstream::stream::Info) -> Vec<String> {
    let cluster = info.cluster.clone().unwrap_or_default();
    cluster
        .leader
        .into_iter()
        .chain(cluster.replicas.into_iter().map(|r| r.name))
        .collect()
}

/// The services' schemas in the shared database.
const SCHEMAS: [&str; 7] = [
    "tenancy",
    "ingest",
    "analysis",
    "trust_scoring",
    "deletion",
    "audit",
    "notifier",
];

/// Every service process made its tables connected as its own role: each table of a service's
/// schema in `db` belongs to `tm_<schema>`, a role that is neither superuser nor BYPASSRLS (read
/// with the administrator's pool).
async fn assert_services_own_their_tables(db: &sqlx::PgPool) {
    let tables: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, pg_get_userbyid(c.relowner)::text
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p')",
    )
    .bind(SCHEMAS)
    .fetch_all(db)
    .await
    .unwrap();
    for schema in SCHEMAS {
        assert!(
            tables.iter().any(|(s, ..)| s == schema),
            "{schema} has no tables"
        );
    }
    let others: Vec<_> = tables
        .iter()
        .filter(|(schema, _, owner)| *owner != format!("tm_{schema}"))
        .collect();
    assert!(
        others.is_empty(),
        "not made by their service's role: {others:?}"
    );
    let privileged: Vec<String> = sqlx::query_scalar(
        "SELECT rolname::text FROM pg_roles
         WHERE rolname = ANY($1) AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb)",
    )
    .bind(SCHEMAS.map(|schema| format!("tm_{schema}")))
    .fetch_all(db)
    .await
    .unwrap();
    assert!(
        privileged.is_empty(),
        "privileged service roles: {privileged:?}"
    );
}

/// The whole flow on the multi-process layout, with a NATS node and an `analysis` replica killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_survives_a_killed_nats_node_and_a_killed_analysis_replica() {
    let started = Instant::now();
    let mut layout = Layout::start(2).await;
    eprintln!("layout up in {:.1} s", started.elapsed().as_secs_f64());
    let js = layout.nats.jetstream().await;
    assert_services_own_their_tables(layout.db.pool()).await;

    // Every stream the services ensured has three replicas, on all three nodes.
    for spec in ALL_STREAMS {
        let mut stream = js.get_stream(spec.name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.num_replicas, REPLICAS, "{}", spec.name);
        assert_eq!(
            hosts(info).len(),
            REPLICAS,
            "{}: {:?}",
            spec.name,
            info.cluster
        );
    }
    // NOTE: the `tm_auth` bucket is created by tenancy with `CacheOptions::default().replicas` (1),
    // not `nats.stream_replicas`; its node must not be the one killed (reported, not asserted).
    let mut auth = js.get_stream(format!("KV_{AUTH_KV_BUCKET}")).await.unwrap();
    let auth = auth.info().await.unwrap();
    let mut unreplicated_hosts = Vec::new();
    if auth.config.num_replicas < REPLICAS {
        eprintln!(
            "tm_auth has {} replica(s) on {:?}",
            auth.config.num_replicas,
            hosts(auth)
        );
        unreplicated_hosts.extend(hosts(auth));
    }

    let user = layout.tenant("acme").await;
    let dataset = once_known(|| {
        user.ingest
            .upload_csv("synthetic", synthetic_csv(JOB_ROWS, 8, 0), "row_id")
    })
    .await
    .unwrap();
    assert_eq!(dataset.row_count, JOB_ROWS as u64);

    // Kill a NATS node: the leader of the analysis stream unless it holds an unreplicated stream.
    let mut analysis_stream = js.get_stream(ANALYSIS_REQUESTED.stream.name).await.unwrap();
    let analysis_info = analysis_stream.info().await.unwrap().clone();
    let leader = analysis_info.cluster.clone().unwrap().leader.unwrap();
    let victim_name = hosts(&analysis_info)
        .into_iter()
        .find(|node| !unreplicated_hosts.contains(node))
        .expect("a node holds no unreplicated stream");
    eprintln!("analysis stream leader {leader}; killing NATS node {victim_name}");
    let acknowledged = stream_contents(&js).await;
    let victim = layout.nats.node_named(&victim_name).unwrap();
    layout.nats.kill(victim);
    // The test's own client may have been on the killed node: a fresh one is on a live node.
    let js = layout.nats.jetstream().await;

    // An analysis; the replica running it is killed once it trains.
    let analysis = tokio::time::timeout(
        JOB_TIMEOUT,
        user.analysis
            .start_analysis(analysis_request(&dataset.name)),
    )
    .await
    .expect("the analysis starts")
    .unwrap();
    let job_name = analysis.name().to_owned();
    let mut updates = std::pin::pin!(user.analysis.watch_job(&job_name));
    tokio::time::timeout(JOB_TIMEOUT, async {
        while let Some(update) = updates.next().await {
            let Ok(job) = update else { continue };
            eprintln!(
                "t+{:.1}s {:?} {} {:.2}",
                started.elapsed().as_secs_f64(),
                job.state(),
                job.step,
                job.progress
            );
            if job.state() == JobState::Running && job.step == TRAIN_FOLDS {
                return;
            }
        }
        panic!("the watch ended before the job ran");
    })
    .await
    .expect("the job trains");
    // The replica that took the request coordinates the job: it fans the folds out and keeps the
    // request's delivery until every fold is stored and combined, so killing it mid-training always
    // leaves a delivery to come back (a replica that only trains folds may be between two of them).
    let worker = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(coordinator) = layout.analysis.iter().position(|p| {
                std::fs::read_to_string(&p.log)
                    .unwrap_or_default()
                    .contains(FOLDS_FANNED_OUT)
            }) {
                return coordinator;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("an analysis replica fans the job's folds out");
    let job = user.analysis.get_job(&job_name).await.unwrap();
    assert_eq!(
        job.step, TRAIN_FOLDS,
        "the job trained before a replica was killed: {job:?}"
    );
    eprintln!(
        "t+{:.1}s killing {} (it coordinates the job)",
        started.elapsed().as_secs_f64(),
        layout.analysis[worker].name
    );
    layout.analysis[worker].kill();

    // The other replica gets the killed one's work (the job's request, and the fold it was
    // training if any) once the ack wait runs out, and completes the job.
    let mut consumers = Vec::new();
    for spec in [ANALYSIS_REQUESTED, ANALYSIS_FOLDS] {
        let consumer: async_nats::jetstream::consumer::PullConsumer = js
            .get_stream(spec.stream.name)
            .await
            .unwrap()
            .get_consumer(spec.durable_name)
            .await
            .unwrap();
        consumers.push(consumer);
    }
    let mut redelivered = 0;
    let done = tokio::time::timeout(JOB_TIMEOUT, async {
        loop {
            for consumer in &mut consumers {
                if let Ok(info) = consumer.info().await {
                    redelivered = redelivered.max(info.num_redelivered);
                }
            }
            if let Ok(job) = user.analysis.get_job(&job_name).await
                && trustmesh_sdk::is_final(job.state())
            {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let survivor = &layout.analysis[1 - worker];
        panic!(
            "the job did not complete on {}:\n{}",
            survivor.name,
            log_tail(&survivor.log)
        )
    });
    eprintln!("t+{:.1}s job done", started.elapsed().as_secs_f64());
    assert_eq!(done.state(), JobState::Succeeded, "{done:?}");
    // The killed coordinator's request came back to the other replica only through a redelivery.
    assert!(
        redelivered >= 1,
        "the killed coordinator's request was not redelivered"
    );

    // The report, through trust-scoring (which read the outputs from the surviving replica).
    let report = user.trust.get_report(&done.output).await.unwrap();
    assert_eq!(report.analyzed_row_count, JOB_ROWS as u64);
    assert!(
        report
            .issue_summaries
            .iter()
            .any(|s| s.issue_type() == IssueType::Label),
        "{report:?}"
    );

    // Deletion with receipts from every store-owning service and a certificate that verifies.
    let deletion_job = user
        .deletion
        .delete_dataset(&dataset.name, "gdpr-art-17")
        .await
        .unwrap();
    let deletion = user
        .deletion
        .wait_deletion(&deletion_job.output, Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(deletion.state(), DeletionState::Completed, "{deletion:?}");
    assert_eq!(deletion.receipts.len(), 6, "{deletion:?}");
    assert!(
        deletion.receipts.iter().all(|r| !r.residue_found),
        "{deletion:?}"
    );
    let certificate = user.deletion.get_certificate(&deletion.name).await.unwrap();
    let keys = user.deletion.certificate_signing_keys().await.unwrap();
    let key = keys
        .iter()
        .find(|k| k.key_id == certificate.key_id)
        .expect("the signing key is published");
    trustmesh_deletion::verify_certificate(
        &certificate.certificate,
        &certificate.signature,
        &key.public_key,
    )
    .unwrap();
    let verified = user.audit.verify_audit_log().await.unwrap();
    assert!(verified.valid, "{verified:?}");
    assert!(verified.verified_count > 0, "{verified:?}");

    // Nothing acknowledged before the node died is lost: every message is still in its stream.
    let now = stream_contents(&js).await;
    for ((name, before), (_, after)) in acknowledged.iter().zip(&now) {
        let lost: Vec<&u64> = before.iter().filter(|seq| !after.contains(seq)).collect();
        assert!(lost.is_empty(), "{name} lost messages {lost:?}");
    }
    assert!(acknowledged.iter().map(|(_, s)| s.len()).sum::<usize>() > 0);
    let elapsed = started.elapsed();
    eprintln!("flow done in {:.1} s", elapsed.as_secs_f64());
    assert!(elapsed < Duration::from_secs(180), "took {elapsed:?}");
}

/// Jobs per second over `jobs` concurrent analyses of `dataset`, start to SUCCEEDED.
async fn batch_throughput(user: &Clients, dataset: &str, jobs: usize) -> f64 {
    let started = Instant::now();
    let mut names = Vec::new();
    for _ in 0..jobs {
        names.push(
            user.analysis
                .start_analysis(analysis_request(dataset))
                .await
                .unwrap()
                .name()
                .to_owned(),
        );
    }
    for name in &names {
        let job = tokio::time::timeout(
            Duration::from_secs(600),
            user.analysis.wait_job(name, |_| {}),
        )
        .await
        .expect("the batch completes")
        .unwrap();
        assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

/// A batch of concurrent analyses with one `analysis` replica, then the same batch with two: every
/// job succeeds on either layout, and the throughput of each is printed. CI runs a small batch; the
/// figures of README's "Multi-process layout" come from
/// `TRUSTMESH_BENCH_ROWS=20000 TRUSTMESH_BENCH_JOBS=8 cargo test -p trustmesh-cli --test multiprocess
/// jobs_per_second -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_per_second_with_one_and_two_analysis_replicas() {
    let rows: usize = std::env::var("TRUSTMESH_BENCH_ROWS").map_or(2_000, |v| v.parse().unwrap());
    let jobs: usize = std::env::var("TRUSTMESH_BENCH_JOBS").map_or(2, |v| v.parse().unwrap());
    let mut layout = Layout::start(1).await;
    let user = layout.tenant("bench").await;
    let dataset = once_known(|| {
        user.ingest
            .upload_csv("bench", synthetic_csv(rows, 8, 0), "row_id")
    })
    .await
    .unwrap();
    // A first job warms every service (connections, caches) outside the measurement.
    batch_throughput(&user, &dataset.name, 1).await;
    let one = batch_throughput(&user, &dataset.name, jobs).await;
    layout.add_analysis_replica().await;
    let before: Vec<u64> = layout.analysis.iter().map(Process::cpu_ticks).collect();
    let two = batch_throughput(&user, &dataset.name, jobs).await;
    // How the work was shared: each replica's CPU time over the batch.
    let shares: Vec<String> = layout
        .analysis
        .iter()
        .zip(&before)
        .map(|(p, b)| format!("{} {} ticks", p.name, p.cpu_ticks() - b))
        .collect();
    println!(
        "{jobs} concurrent analyses ({rows} rows x 8 features, {JOB_FOLDS} folds): \
         1 analysis replica {one:.3} jobs/s, 2 replicas {two:.3} jobs/s ({:.2}x); \
         CPU of the two-replica batch: {}",
        two / one,
        shares.join(", ")
    );
}
