//! `kill -9` of each service of the multi-process layout (`common::layout`: every service its own
//! process over a 3-node NATS cluster at R3, Postgres and a local object directory) at random points
//! of a stream of jobs, each then restarted on the same ports and data: every job reaches a final
//! state (none lost), and no side effect happens twice.
//!
//! [`WORKERS`] clients loop upload → analysis → (every other loop) dataset deletion, riding out the
//! restarts as a client would (a call is retried with its idempotency key until the service is
//! back). Meanwhile every process is SIGKILLed once per round in a random order (trust-scoring
//! first: its consumer's ack wait is 120 s, so a message it held when killed comes back that late)
//! at random gaps, and restarted after a random pause. Afterwards:
//!
//! - every analysis succeeded and every dataset deletion COMPLETED with its six receipts: a kill in
//!   the middle of a write or of a deletion leaves no residue the deletion's scan finds;
//! - every durable consumer is idle and every service's outbox is drained;
//! - one `analysis.requested` per analysis started (retried starts included), one
//!   `analysis.completed` and one `scores.ready` per succeeded analysis, one report per kept job;
//!   one `deletion.requested`, six receipts and one `deletion.completed` per deletion;
//! - each audited consumer wrote exactly one audit event per message (redeliveries add none);
//! - each webhook event (a job's end, a deletion) reached the test's receiver under one
//!   `webhook-id` only: a redelivery of the same id (at-least-once) is counted, a second id is a
//!   doubled side effect.
//!
//! The kills, the jobs and the seed are printed (`--nocapture`); `TRUSTMESH_CHAOS_SEED` replays a
//! run, `TRUSTMESH_CHAOS_ROUNDS` kills every process more than once. The service binaries must be
//! built: `cargo build --workspace --bins && cargo test -p trustmesh-cli --test chaos_kill`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::layout::{Clients, Layout};
use common::streams::{consumers_idle, messages_on};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use trustmesh_events::streams::{TM_ANALYSIS, TM_DATASET, TM_DELETION, TM_SCORES};
use trustmesh_events::{ALL_CONSUMERS, ConsumerAudit};
use trustmesh_proto::v1::{
    DeleteDatasetRequest, Deletion, DeletionState, Job, JobState, StartAnalysisRequest, TaskType,
};
use trustmesh_sdk::{Error, is_final};
use trustmesh_testkit::data::synthetic_csv;

/// The tenant whose jobs run through the kills.
const TENANT: &str = "chaos";
/// Concurrent clients, each looping over its jobs.
const WORKERS: usize = 3;
/// Rows of each uploaded dataset (4 features, 3 classes): a job takes well under a second.
const ROWS: usize = 300;
/// Every process of the layout; trust-scoring is killed first in each round (see the module doc).
const VICTIMS: [&str; 7] = [
    "trust-scoring",
    "tenancy",
    "ingest",
    "analysis-0",
    "deletion",
    "audit",
    "notifier",
];
/// How long a client keeps retrying one call through restarts.
const CALL_DEADLINE: Duration = Duration::from_secs(90);
/// How long a started job may take to become final (a redelivery after the longest ack wait,
/// trust-scoring's 120 s, included) before it counts as lost.
const JOB_DEADLINE: Duration = Duration::from_secs(150);
/// Receipts of a dataset deletion: one per store-owning service.
const RECEIPTS: usize = 6;

/// One analysis the clients started, and how it ended (`None`: lost).
#[derive(Debug)]
struct AnalysisRecord {
    job: String,
    dataset: String,
    end: Option<Job>,
    /// Whether its dataset was deleted afterwards (then its report is gone too).
    deleted: bool,
}

/// One dataset deletion the clients started, and how it ended (`None`: lost).
#[derive(Debug)]
struct DeletionRecord {
    job: String,
    deletion: String,
    end: Option<(DeletionState, usize)>,
    /// The deletion's job error, when it has one (what a failed deletion names).
    error: Option<String>,
}

/// What the clients did.
#[derive(Debug, Default)]
struct Ledger {
    uploads: usize,
    analyses: Vec<AnalysisRecord>,
    deletions: Vec<DeletionRecord>,
}

/// Calls `call` until it succeeds, as a client riding out a restart does: every error is retried
/// after a pause until [`CALL_DEADLINE`], except refusals no retry can change.
async fn persist<T, F, Fut>(what: &str, retries: &AtomicU64, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + CALL_DEADLINE;
    loop {
        let error = match tokio::time::timeout(Duration::from_secs(30), call()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(error)) => {
                assert!(
                    !matches!(
                        error.code(),
                        Some(
                            tonic::Code::InvalidArgument
                                | tonic::Code::NotFound
                                | tonic::Code::PermissionDenied
                                | tonic::Code::AlreadyExists
                        )
                    ),
                    "{what}: {error}"
                );
                error.to_string()
            }
            Err(_) => "no answer in 30 s".to_owned(),
        };
        assert!(
            Instant::now() < deadline,
            "{what} still fails after {CALL_DEADLINE:?}: {error}"
        );
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls `get` until it answers a final value or [`JOB_DEADLINE`] passes (`None`: lost); errors
/// (a service down) are polled through.
async fn final_state<T, F, Fut>(mut get: F, done: impl Fn(&T) -> bool) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + JOB_DEADLINE;
    while Instant::now() < deadline {
        if let Ok(Ok(value)) = tokio::time::timeout(Duration::from_secs(10), get()).await
            && done(&value)
        {
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    None
}

/// One client: loops until `stop`, each loop one upload, one analysis and, every other loop, the
/// deletion of the dataset once its analysis is final.
async fn worker(
    id: usize,
    user: Arc<Clients>,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    retries: Arc<AtomicU64>,
) {
    let mut n = 0_usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let csv = synthetic_csv(ROWS, 4, (id * 10_000 + n) as u64);
        let dataset = persist("upload", &retries, || {
            user.ingest.upload_csv("chaos", csv.clone(), "row_id")
        })
        .await
        .name;
        ledger.lock().unwrap().uploads += 1;
        let request = StartAnalysisRequest {
            dataset: dataset.clone(),
            label_column: "label".to_owned(),
            task_type: TaskType::Classification.into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..StartAnalysisRequest::default()
        };
        let job = persist("start analysis", &retries, || {
            user.analysis.start_analysis(request.clone())
        })
        .await
        .name()
        .to_owned();
        let end = final_state(
            || user.analysis.get_job(&job),
            |job: &Job| is_final(job.state()),
        )
        .await;
        let analysed = end.is_some();
        let delete = n.is_multiple_of(2) && analysed;
        ledger.lock().unwrap().analyses.push(AnalysisRecord {
            job,
            dataset: dataset.clone(),
            end,
            deleted: delete,
        });
        if !delete {
            continue;
        }
        let request = DeleteDatasetRequest {
            name: dataset,
            reason: "chaos".to_owned(),
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let job = persist("delete dataset", &retries, || {
            let mut service = user.deletion.deletion();
            let request = request.clone();
            async move {
                service
                    .delete_dataset(request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(Error::from)
            }
        })
        .await;
        let deletion = final_state(
            || user.deletion.get_deletion(&job.output),
            |d: &Deletion| d.state() != DeletionState::InProgress,
        )
        .await;
        let error = deletion
            .as_ref()
            .and_then(|d| d.job.as_ref()?.error.as_ref())
            .map(|e| format!("{}: {}", e.code, e.message));
        ledger.lock().unwrap().deletions.push(DeletionRecord {
            job: job.name,
            deletion: job.output,
            end: deletion.map(|d| (d.state(), d.receipts.len())),
            error,
        });
    }
}

/// A webhook delivery the receiver got: its `webhook-id`, its type and what it is about.
#[derive(Debug, Clone)]
struct Hook {
    id: String,
    kind: String,
    about: String,
}

/// A plain-HTTP webhook receiver on loopback answering 204 to every delivery; returns its URL and
/// what it received.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Hook>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let hooks: Arc<Mutex<Vec<Hook>>> = Arc::default();
    let received = hooks.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let received = received.clone();
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push(line);
                }
                let header = |name: &str| {
                    head.iter().find_map(|line| {
                        let (key, value) = line.split_once(':')?;
                        key.eq_ignore_ascii_case(name)
                            .then(|| value.trim().to_owned())
                    })
                };
                let length = header("content-length").map_or(0, |v| v.parse().unwrap());
                let mut body = vec![0; length];
                if stream.read_exact(&mut body).await.is_err() {
                    return;
                }
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let data = &body["data"];
                let about = ["job", "deletion", "dataset"]
                    .iter()
                    .find_map(|key| data[key].as_str())
                    .unwrap_or_default()
                    .to_owned();
                received.lock().unwrap().push(Hook {
                    id: header("webhook-id").unwrap_or_default(),
                    kind: body["type"].as_str().unwrap_or_default().to_owned(),
                    about,
                });
                let _ = stream
                    .get_mut()
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, hooks)
}

/// Waits until no service's outbox holds an unpublished row.
async fn outboxes_drained(db: &sqlx::PgPool, timeout: Duration) {
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'outbox'",
    )
    .fetch_all(db)
    .await
    .unwrap();
    assert!(!schemas.is_empty(), "no outbox tables");
    let deadline = Instant::now() + timeout;
    loop {
        let mut pending = Vec::new();
        for schema in &schemas {
            let (unpublished, failed): (i64, i64) = sqlx::query_as(&format!(
                r#"SELECT count(*) FILTER (WHERE published_at IS NULL),
                          count(*) FILTER (WHERE failed_at IS NOT NULL)
                   FROM "{schema}".outbox"#
            ))
            .fetch_one(db)
            .await
            .unwrap();
            assert_eq!(failed, 0, "{schema}: outbox rows refused for good");
            if unpublished > 0 {
                pending.push(format!("{schema}: {unpublished}"));
            }
        }
        if pending.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "outboxes not drained after {timeout:?}: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_ends_once_while_each_service_is_killed_and_restarted() {
    let started = Instant::now();
    let seed: u64 = std::env::var("TRUSTMESH_CHAOS_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |v| v.parse().unwrap(),
    );
    let rounds: usize = std::env::var("TRUSTMESH_CHAOS_ROUNDS").map_or(1, |v| v.parse().unwrap());
    eprintln!("chaos seed {seed} (TRUSTMESH_CHAOS_SEED replays it), {rounds} round(s)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut layout = Layout::start(1).await;
    eprintln!("layout up in {:.1} s", started.elapsed().as_secs_f64());
    let user = Arc::new(layout.tenant(TENANT).await);
    let (hook_url, hooks) = webhook_receiver().await;
    trustmesh_sdk::once_known(|| user.tenancy.create_webhook(&hook_url, &[], "chaos"))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let retries = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            tokio::spawn(worker(
                id,
                user.clone(),
                stop.clone(),
                ledger.clone(),
                retries.clone(),
            ))
        })
        .collect();

    // The kills: every process once per round, at random gaps, each down for a random while.
    let mut kills = Vec::new();
    for _ in 0..rounds {
        let mut order = VICTIMS;
        order[1..].shuffle(&mut rng);
        for victim in order {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(2_000..5_000))).await;
            let down = Duration::from_millis(rng.gen_range(200..2_000));
            let (jobs_before, uploads_before) = {
                let ledger = ledger.lock().unwrap();
                (
                    ledger.analyses.len() + ledger.deletions.len(),
                    ledger.uploads,
                )
            };
            layout.process_mut(victim).kill();
            eprintln!(
                "t+{:.1}s kill -9 {victim} ({jobs_before} jobs ended, {uploads_before} uploads \
                 so far), restarting in {down:?}",
                started.elapsed().as_secs_f64()
            );
            tokio::time::sleep(down).await;
            layout.restart(victim).await;
            kills.push(victim);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    eprintln!(
        "t+{:.1}s {} kills done; draining",
        started.elapsed().as_secs_f64(),
        kills.len()
    );
    for worker in workers {
        worker.await.unwrap();
    }
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    eprintln!("t+{:.1}s clients done", started.elapsed().as_secs_f64());

    // Nothing lost: every job started is final.
    let lost: Vec<&str> = ledger
        .analyses
        .iter()
        .filter(|a| a.end.is_none())
        .map(|a| a.job.as_str())
        .chain(
            ledger
                .deletions
                .iter()
                .filter(|d| d.end.is_none())
                .map(|d| d.job.as_str()),
        )
        .collect();
    assert!(lost.is_empty(), "jobs lost: {lost:?}");
    let state = |a: &AnalysisRecord| a.end.as_ref().map_or(JobState::Unspecified, Job::state);
    let failed: Vec<&Job> = ledger
        .analyses
        .iter()
        .filter(|a| state(a) != JobState::Succeeded)
        .filter_map(|a| a.end.as_ref())
        .collect();
    assert!(
        failed.is_empty(),
        "analyses that did not succeed: {failed:?}"
    );
    // Every deletion COMPLETED with its six receipts: no service found residue, whatever a kill
    // interrupted (a write whose version was not yet recorded, a deletion half done, a webhook
    // delivery queued while the dataset's deletion ran).
    let not_completed: Vec<String> = ledger
        .deletions
        .iter()
        .filter(|d| !matches!(d.end, Some((DeletionState::Completed, RECEIPTS))))
        .map(|d| {
            let error = d.error.as_deref().unwrap_or("no error");
            format!("{} ({}): {:?}, {error}", d.deletion, d.job, d.end)
        })
        .collect();
    assert!(
        not_completed.is_empty(),
        "deletions not completed: {not_completed:?}"
    );
    let analyses = ledger.analyses.len();
    let deletions = ledger.deletions.len();
    assert!(analyses >= 2 * WORKERS, "too few jobs ran: {ledger:?}");

    // Quiet: every outbox published, then every consumer (the audit log's included) done.
    outboxes_drained(layout.db.pool(), Duration::from_secs(60)).await;
    let js = layout.nats.jetstream().await;
    consumers_idle(&js, Duration::from_secs(60)).await;

    // Each side effect once.
    let on = |stream: &'static str, event: &'static str| {
        let js = js.clone();
        async move { messages_on(&js, stream, &format!("tm.{TENANT}.{event}")).await }
    };
    assert_eq!(on(TM_ANALYSIS.name, "analysis.requested").await, analyses);
    assert_eq!(on(TM_ANALYSIS.name, "analysis.completed").await, analyses);
    assert_eq!(on(TM_SCORES.name, "scores.ready").await, analyses);
    assert_eq!(on(TM_DELETION.name, "deletion.requested").await, deletions);
    assert_eq!(on(TM_DELETION.name, "deletion.completed").await, deletions);
    assert_eq!(
        on(TM_DELETION.name, "deletion.receipt").await,
        RECEIPTS * deletions
    );
    let ingested = on(TM_DATASET.name, "dataset.ingested").await;
    assert!(
        ingested >= ledger.uploads,
        "{ingested} dataset.ingested for {} uploads",
        ledger.uploads
    );
    let kept: Vec<&AnalysisRecord> = ledger.analyses.iter().filter(|a| !a.deleted).collect();
    let reports: i64 =
        sqlx::query_scalar("SELECT count(*) FROM trust_scoring.reports WHERE tenant = $1")
            .bind(TENANT)
            .fetch_one(layout.db.pool())
            .await
            .unwrap();
    assert_eq!(reports, kept.len() as i64, "one report per kept job");
    for analysis in &kept {
        let output = &analysis.end.as_ref().unwrap().output;
        user.trust
            .get_report(output)
            .await
            .unwrap_or_else(|e| panic!("report of {} ({}): {e}", analysis.job, analysis.dataset));
    }

    // The audit log: each audited consumer wrote one event per message it handled.
    let audited: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT producer, action, count(*) FROM audit.events WHERE tenant = $1 \
         GROUP BY producer, action",
    )
    .bind(TENANT)
    .fetch_all(layout.db.pool())
    .await
    .unwrap();
    let mut wrong = Vec::new();
    for spec in ALL_CONSUMERS {
        let ConsumerAudit::Each { on: event, actions } = spec.audit else {
            continue;
        };
        let messages = on(spec.stream.name, event).await;
        let events: i64 = audited
            .iter()
            .filter(|(producer, action, _)| {
                producer == spec.service.as_str() && actions.contains(&action.as_str())
            })
            .map(|(_, _, count)| count)
            .sum();
        if events != messages as i64 {
            wrong.push(format!(
                "{}: {messages} messages on {event}, {events} events {actions:?}",
                spec.durable_name
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Webhooks: every job's end and every deletion arrived, each under one id.
    let mut expected: Vec<(&str, &str)> = kept
        .iter()
        .map(|a| ("job.succeeded", a.job.as_str()))
        .collect();
    for deletion in &ledger.deletions {
        expected.push(("job.succeeded", deletion.job.as_str()));
        expected.push(("deletion.completed", deletion.deletion.as_str()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let ids = loop {
        let mut ids: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for hook in hooks.lock().unwrap().iter() {
            ids.entry((hook.kind.clone(), hook.about.clone()))
                .or_default()
                .push(hook.id.clone());
        }
        let missing: Vec<&(&str, &str)> = expected
            .iter()
            .filter(|(kind, about)| !ids.contains_key(&((*kind).to_owned(), (*about).to_owned())))
            .collect();
        if missing.is_empty() {
            break ids;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks never delivered: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut repeated = 0;
    for ((kind, about), delivered) in &ids {
        let mut distinct = delivered.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            1,
            "{kind} of {about} delivered under several ids: {delivered:?}"
        );
        repeated += delivered.len() - 1;
    }

    let elapsed = started.elapsed();
    println!(
        "chaos_kill: {} kills ({}), {} jobs ({analyses} analyses, {deletions} dataset deletions), \
         all final, 0 lost, {} uploads, {} webhook events ({repeated} redelivered under the same \
         id), {} client retries, seed {seed}, {:.1} s",
        kills.len(),
        kills.join(", "),
        analyses + deletions,
        ledger.uploads,
        ids.len(),
        retries.load(Ordering::Relaxed),
        elapsed.as_secs_f64()
    );
}
