//! `--quota-flood`: one tenant over its request-rate quota while another keeps its latency, on the
//! standalone mesh or at `--endpoint`.
//!
//! Tenant `steady` uploads one small dataset, then [`STEADY_CLIENTS`] clients each read it
//! (`GetDataset`, on ingest) [`STEADY_RATE`] times a second, paced, for `--duration-secs`: first
//! alone (the baseline), then while tenant `flood`, whose quota the operator lowers to
//! [`FLOOD_PER_MINUTE`] requests a minute, sends `GetDataset` to the same ingest from
//! [`FLOOD_TASKS`] tasks as fast as answers come back. Neither client retries, so every refusal is
//! counted.
//!
//! It reports the steady tenant's latency percentiles in both phases and its errors, and the flood's
//! answers by gRPC code: RESOURCE_EXHAUSTED for all but the quota's worth.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use trustmesh_sdk::proto::Scope;
use trustmesh_sdk::{Client, Error, QuotaChange, RetryPolicy, once_known};
use trustmesh_testkit::data::synthetic_csv;

use super::{Args, Target};

/// The flooding tenant's quota, requests per minute (10 a second, bursts of 20).
const FLOOD_PER_MINUTE: u32 = 600;
/// Concurrent flooding tasks.
const FLOOD_TASKS: usize = 16;
/// The steady tenant's clients and each one's requests per second (well under the default quota).
const STEADY_CLIENTS: usize = 4;
const STEADY_RATE: u32 = 10;

/// A dataset id no tenant has.
const MISSING: &str = "00000000-0000-0000-0000-000000000000";

/// What one phase measured.
#[derive(Debug, Serialize)]
struct Phase {
    phase: &'static str,
    secs: f64,
    steady_requests: u64,
    steady_errors: BTreeMap<String, u64>,
    steady_p50_ms: f64,
    steady_p90_ms: f64,
    steady_p99_ms: f64,
    steady_max_ms: f64,
    flood_requests: u64,
    flood_by_code: BTreeMap<String, u64>,
    flood_admitted_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct Figures {
    layout: &'static str,
    cpus: usize,
    flood_quota_per_minute: u32,
    flood_tasks: usize,
    steady_clients: usize,
    steady_rate_per_client: u32,
    phases: Vec<Phase>,
}

#[derive(Default)]
struct Tally {
    latencies: Option<Histogram<u64>>,
    by_code: BTreeMap<String, u64>,
    requests: u64,
}

impl Tally {
    fn record(&mut self, outcome: Result<(), Error>, elapsed: Option<Duration>) {
        self.requests += 1;
        let code = match outcome {
            Ok(()) => "OK".to_owned(),
            Err(error) => error
                .code()
                .map_or_else(|| "CLIENT".to_owned(), |c| format!("{c:?}")),
        };
        *self.by_code.entry(code).or_default() += 1;
        if let Some(elapsed) = elapsed {
            self.latencies
                .get_or_insert_with(|| {
                    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
                })
                .saturating_record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        }
    }
}

/// A client of `user`'s tenant that does not retry.
fn no_retry(client: &Client) -> Client {
    client.clone().with_retry(RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    })
}

/// Runs the two phases against `target` and prints (and with `--json`, writes) the figures.
pub(super) async fn run(args: &Args, target: &Target, operator: &Client) -> anyhow::Result<()> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 6..];
    let lifetime = Duration::from_secs(86_400);
    let (steady_name, flood_name) = (format!("steady-{run}"), format!("flood-{run}"));
    let (_, steady) = operator
        .create_tenant_with_key(&steady_name, &steady_name, &[Scope::Admin], lifetime)
        .await
        .context("creating the steady tenant")?;
    let (_, flood) = operator
        .create_tenant_with_key(&flood_name, &flood_name, &[Scope::Admin], lifetime)
        .await
        .context("creating the flood tenant")?;
    let quota = operator
        .clone()
        .with_tenant(&flood_name)
        .update_quota(QuotaChange {
            max_requests_per_minute: Some(FLOOD_PER_MINUTE),
            ..QuotaChange::default()
        })
        .await
        .context("lowering the flood tenant's quota")?;
    anyhow::ensure!(quota.max_requests_per_minute == FLOOD_PER_MINUTE);
    anyhow::ensure!(
        target.layout.is_none(),
        "--quota-flood runs against the standalone mesh or --endpoint"
    );
    for user in [&steady, &flood] {
        // A new key reaches ingest's cache through the `tm_auth` watch, not instantly.
        match once_known(|| user.get_dataset(MISSING)).await {
            Err(e) if e.code() != Some(tonic::Code::NotFound) => return Err(e.into()),
            Ok(_) | Err(_) => {}
        }
    }
    let flood = no_retry(&flood);
    let dataset = steady
        .upload_csv("steady", synthetic_csv(200, 4, 7), "row_id")
        .await
        .context("uploading the steady tenant's dataset")?
        .name;
    let steady = no_retry(&steady);
    // The quota's bucket starts full: let the flood tenant's key-check calls' tokens come back.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let duration = Duration::from_secs(args.duration_secs);
    let mut phases = Vec::new();
    for (phase, flooding) in [("baseline", false), ("flood", true)] {
        phases.push(
            measure(
                phase,
                &steady,
                &dataset,
                flooding.then_some(&flood),
                duration,
            )
            .await,
        );
    }
    let figures = Figures {
        layout: target.kind,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        flood_quota_per_minute: FLOOD_PER_MINUTE,
        flood_tasks: FLOOD_TASKS,
        steady_clients: STEADY_CLIENTS,
        steady_rate_per_client: STEADY_RATE,
        phases,
    };
    print(&figures);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let flood = figures.phases.iter().find(|p| p.phase == "flood");
    anyhow::ensure!(
        flood.is_some_and(|p| p.flood_by_code.contains_key("ResourceExhausted")),
        "the flood tenant was never refused"
    );
    anyhow::ensure!(
        figures.phases.iter().all(|p| p.steady_errors.is_empty()),
        "the steady tenant got errors"
    );
    Ok(())
}

/// One phase: the steady clients for `duration`, with the flood beside them if given.
async fn measure(
    phase: &'static str,
    steady: &Client,
    dataset: &str,
    flood: Option<&Client>,
    duration: Duration,
) -> Phase {
    let stop = CancellationToken::new();
    let steady_tally = Arc::new(Mutex::new(Tally::default()));
    let flood_tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for _ in 0..STEADY_CLIENTS {
        let (client, tally, stop) = (steady.clone(), Arc::clone(&steady_tally), stop.clone());
        let dataset = dataset.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / STEADY_RATE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.is_cancelled() {
                tick.tick().await;
                let started = Instant::now();
                let outcome = client.get_dataset(&dataset).await.map(drop);
                let elapsed = started.elapsed();
                tally
                    .lock()
                    .expect("tally lock")
                    .record(outcome, Some(elapsed));
            }
        }));
    }
    if let Some(flood) = flood {
        for _ in 0..FLOOD_TASKS {
            let (client, tally, stop) = (flood.clone(), Arc::clone(&flood_tally), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let outcome = client.get_dataset(MISSING).await.map(drop);
                    tally.lock().expect("tally lock").record(outcome, None);
                }
            }));
        }
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let steady = steady_tally.lock().expect("tally lock");
    let flood = flood_tally.lock().expect("tally lock");
    let ms = |q: f64| {
        steady
            .latencies
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    };
    let refused = flood.by_code.get("ResourceExhausted").copied().unwrap_or(0);
    Phase {
        phase,
        secs,
        steady_requests: steady.requests,
        steady_errors: steady
            .by_code
            .iter()
            .filter(|(code, _)| code.as_str() != "OK")
            .map(|(code, n)| (code.clone(), *n))
            .collect(),
        steady_p50_ms: ms(0.5),
        steady_p90_ms: ms(0.9),
        steady_p99_ms: ms(0.99),
        steady_max_ms: ms(1.0),
        flood_requests: flood.requests,
        flood_by_code: flood.by_code.clone(),
        flood_admitted_per_sec: (flood.requests - refused) as f64 / secs,
    }
}

fn print(figures: &Figures) {
    println!(
        "quota flood on {} ({} CPUs): flood tenant at {} requests/min from {} tasks; steady tenant {} clients x {}/s",
        figures.layout,
        figures.cpus,
        figures.flood_quota_per_minute,
        figures.flood_tasks,
        figures.steady_clients,
        figures.steady_rate_per_client
    );
    println!(
        "{:<9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}  {:>9} {:>10}  flood by code",
        "phase", "secs", "steady", "p50 ms", "p90 ms", "p99 ms", "max ms", "flood", "admitted/s"
    );
    for p in &figures.phases {
        println!(
            "{:<9} {:>6.1} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {:>9} {:>10.1}  {:?}",
            p.phase,
            p.secs,
            p.steady_requests,
            p.steady_p50_ms,
            p.steady_p90_ms,
            p.steady_p99_ms,
            p.steady_max_ms,
            p.flood_requests,
            p.flood_admitted_per_sec,
            p.flood_by_code
        );
        if !p.steady_errors.is_empty() {
            println!("          steady errors: {:?}", p.steady_errors);
        }
    }
}
