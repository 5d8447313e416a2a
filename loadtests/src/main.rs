//! `trustmesh-loadtest`: N tenants × M concurrent clients, each running the user's loop through
//! the SDK — upload a CSV, analyse it, read the report and its rows, delete the dataset and wait
//! for the certificate — for a fixed time or a fixed number of loops, against a mesh on loopback:
//! a standalone mesh it starts (`--layout standalone`, the default), the multi-process layout it
//! starts (`--layout multi-process`: every service its own process from the binaries next to this
//! one, over a 3-node NATS cluster at R3; the same harness as `sdk/cli/tests/multiprocess.rs`), or
//! a mesh at `--endpoint`.
//!
//! It reports, per operation, the count, errors by gRPC code and latency percentiles (HDR
//! histograms, milliseconds), the sustained loops and jobs per second, and the jobs lost: every
//! analysis and deletion started must reach a final state before the run ends (a job still
//! running when the drain deadline passes is lost). `--json FILE` writes the same as JSON.

#[path = "../../sdk/cli/tests/common/layout.rs"]
mod layout;
mod quota;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use trustmesh_cli::standalone::{NatsSource, Standalone, StandaloneSettings};
use trustmesh_sdk::proto::{DeletionState, JobState, Scope};
use trustmesh_sdk::{Client, Error, RowQuery, SecretString, once_known};
use trustmesh_testkit::data::synthetic_csv;

/// Load generator for a trustmesh mesh on loopback.
#[derive(Debug, Parser)]
#[command(name = "trustmesh-loadtest")]
struct Args {
    /// Tenants, each with its own API key.
    #[arg(long, default_value_t = 2)]
    tenants: usize,
    /// Concurrent clients per tenant.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Run for this many seconds (new loops start until then; running ones finish).
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Stop each client after this many loops instead (0: no limit).
    #[arg(long, default_value_t = 0)]
    loops: u64,
    /// Rows of each uploaded dataset (4 numeric features, 3 classes).
    #[arg(long, default_value_t = 500)]
    rows: usize,
    /// How long a job may take before it counts as lost.
    #[arg(long, default_value_t = 300)]
    job_timeout_secs: u64,
    /// The mesh to start when no `--endpoint` is given.
    #[arg(long, value_enum, default_value_t = LayoutKind::Standalone)]
    layout: LayoutKind,
    /// `analysis` replicas of the multi-process layout.
    #[arg(long, default_value_t = 1)]
    analysis_replicas: usize,
    /// A running mesh's gRPC endpoint (loopback only; every service behind it); no mesh is started.
    #[arg(long, requires = "operator_credential_file")]
    endpoint: Option<String>,
    /// The operator credential of `--endpoint`.
    #[arg(long)]
    operator_credential_file: Option<PathBuf>,
    /// Postgres for the standalone mesh (a `trustmesh_loadtest` database is created).
    #[arg(
        long,
        env = "TRUSTMESH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/trustmesh_loadtest"
    )]
    database_url: String,
    /// The nats-server binary the standalone mesh starts.
    #[arg(long, env = "TRUSTMESH_NATS_SERVER_BIN")]
    nats_server: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Instead of the user's loop: one tenant floods past its request-rate quota while another
    /// keeps its pace (`quota.rs`).
    #[arg(long)]
    quota_flood: bool,
}

/// The mesh the generator starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum LayoutKind {
    /// `trustmesh standalone`'s mesh in this process (all services, one gRPC port).
    Standalone,
    /// Every service its own process, over a 3-node NATS cluster (streams at R3) and a fresh
    /// database on `TRUSTMESH_TEST_DATABASE_URL`'s server.
    MultiProcess,
}

/// The operations of one loop, in order.
const OPERATIONS: [&str; 7] = [
    "upload",
    "start_analysis",
    "analysis_job",
    "get_report",
    "list_rows",
    "delete_dataset",
    "deletion_job",
];

/// What every client records.
#[derive(Default)]
struct Recorder {
    latencies: BTreeMap<&'static str, Histogram<u64>>,
    errors: BTreeMap<&'static str, BTreeMap<String, u64>>,
    loops: u64,
    jobs_started: u64,
    jobs_finished: u64,
    jobs_lost: u64,
}

impl Recorder {
    fn record(&mut self, operation: &'static str, elapsed: Duration) {
        let histogram = self
            .latencies
            .entry(operation)
            // NOTE: bounded (1 µs to 1 h): saturating_record clamps rather than resizes.
            .or_insert_with(|| {
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
            });
        histogram.saturating_record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    fn error(&mut self, operation: &'static str, error: &Error) {
        let code = error
            .code()
            .map_or_else(|| "CLIENT".to_owned(), |c| format!("{c:?}"));
        *self
            .errors
            .entry(operation)
            .or_default()
            .entry(code)
            .or_default() += 1;
    }
}

/// Times `call` as `operation`, recording its error if it fails.
async fn timed<T>(
    recorder: &Mutex<Recorder>,
    operation: &'static str,
    call: impl Future<Output = Result<T, Error>>,
) -> Option<T> {
    let started = Instant::now();
    let outcome = call.await;
    let mut recorder = recorder.lock().expect("recorder lock");
    match outcome {
        Ok(value) => {
            recorder.record(operation, started.elapsed());
            Some(value)
        }
        Err(error) => {
            recorder.error(operation, &error);
            None
        }
    }
}

/// One client's loops until `stop` or its loop limit.
async fn client_loop(
    client: layout::Clients,
    args: Arc<Args>,
    recorder: Arc<Mutex<Recorder>>,
    stop: CancellationToken,
    seed: u64,
) {
    let job_timeout = Duration::from_secs(args.job_timeout_secs);
    let mut done = 0;
    while !stop.is_cancelled() && (args.loops == 0 || done < args.loops) {
        done += 1;
        let csv = synthetic_csv(args.rows, 4, seed.wrapping_mul(done + 1));
        let Some(uploaded) = timed(
            &recorder,
            "upload",
            client.ingest.upload_csv("load", csv, "row_id"),
        )
        .await
        else {
            continue;
        };
        let Some(analysis) = timed(
            &recorder,
            "start_analysis",
            client.analysis.analyze(&uploaded.name, "label"),
        )
        .await
        else {
            continue;
        };
        recorder.lock().expect("recorder lock").jobs_started += 1;
        let job = timed(&recorder, "analysis_job", async {
            tokio::time::timeout(job_timeout, analysis.wait())
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Server {
                        code: tonic::Code::DeadlineExceeded,
                        message: "the analysis did not finish in time".to_owned(),
                    })
                })
        })
        .await;
        let Some(job) = job else {
            recorder.lock().expect("recorder lock").jobs_lost += 1;
            continue;
        };
        recorder.lock().expect("recorder lock").jobs_finished += 1;
        if job.state() == JobState::Succeeded {
            let report = job.output.clone();
            timed(&recorder, "get_report", client.trust.get_report(&report)).await;
            timed(&recorder, "list_rows", async {
                let rows = client.trust.list_rows(&report, RowQuery::default());
                let first: Vec<_> = rows.take(1).collect().await;
                first.into_iter().next().transpose()
            })
            .await;
        }
        let Some(deletion) = timed(
            &recorder,
            "delete_dataset",
            client.deletion.delete_dataset(&uploaded.name, "load test"),
        )
        .await
        else {
            continue;
        };
        recorder.lock().expect("recorder lock").jobs_started += 1;
        let deleted = timed(
            &recorder,
            "deletion_job",
            client.deletion.wait_deletion(&deletion.output, job_timeout),
        )
        .await;
        let mut recorder = recorder.lock().expect("recorder lock");
        match deleted {
            Some(d) if d.state() != DeletionState::InProgress => recorder.jobs_finished += 1,
            _ => recorder.jobs_lost += 1,
        }
        recorder.loops += 1;
    }
}

#[derive(Debug, Serialize)]
struct OperationFigures {
    operation: &'static str,
    count: u64,
    errors: BTreeMap<String, u64>,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Figures {
    /// `standalone`, `multi-process` or `endpoint`.
    layout: String,
    /// Whether the generator (and the services it started) are an optimized build.
    release_build: bool,
    /// CPUs the machine offers (all processes, the generator's included, share them).
    cpus: usize,
    tenants: usize,
    clients_per_tenant: usize,
    rows_per_dataset: usize,
    elapsed_secs: f64,
    loops: u64,
    loops_per_sec: f64,
    jobs_started: u64,
    jobs_finished: u64,
    jobs_per_sec: f64,
    jobs_lost: u64,
    operations: Vec<OperationFigures>,
}

fn figures(args: &Args, layout: &str, recorder: &Recorder, elapsed: Duration) -> Figures {
    let secs = elapsed.as_secs_f64();
    let ms = |micros: u64| micros as f64 / 1000.0;
    let operations = OPERATIONS
        .iter()
        .map(|&operation| {
            let errors = recorder.errors.get(operation).cloned().unwrap_or_default();
            match recorder.latencies.get(operation) {
                Some(h) => OperationFigures {
                    operation,
                    count: h.len(),
                    errors,
                    p50_ms: ms(h.value_at_quantile(0.50)),
                    p90_ms: ms(h.value_at_quantile(0.90)),
                    p99_ms: ms(h.value_at_quantile(0.99)),
                    max_ms: ms(h.max()),
                },
                None => OperationFigures {
                    operation,
                    count: 0,
                    errors,
                    p50_ms: 0.0,
                    p90_ms: 0.0,
                    p99_ms: 0.0,
                    max_ms: 0.0,
                },
            }
        })
        .collect();
    Figures {
        layout: layout.to_owned(),
        release_build: !cfg!(debug_assertions),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        tenants: args.tenants,
        clients_per_tenant: args.clients,
        rows_per_dataset: args.rows,
        elapsed_secs: secs,
        loops: recorder.loops,
        loops_per_sec: recorder.loops as f64 / secs,
        jobs_started: recorder.jobs_started,
        jobs_finished: recorder.jobs_finished,
        jobs_per_sec: recorder.jobs_finished as f64 / secs,
        jobs_lost: recorder.jobs_lost,
        operations,
    }
}

fn print(figures: &Figures) {
    println!(
        "{} layout ({} build, {} CPUs), {} tenants x {} clients, {} rows per dataset, {:.1} s: {} loops ({:.2}/s), {} jobs finished ({:.2}/s), {} lost",
        figures.layout,
        if figures.release_build {
            "release"
        } else {
            "debug"
        },
        figures.cpus,
        figures.tenants,
        figures.clients_per_tenant,
        figures.rows_per_dataset,
        figures.elapsed_secs,
        figures.loops,
        figures.loops_per_sec,
        figures.jobs_finished,
        figures.jobs_per_sec,
        figures.jobs_lost
    );
    println!(
        "{:<16} {:>7} {:>10} {:>10} {:>10} {:>10}  errors",
        "operation", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for op in &figures.operations {
        println!(
            "{:<16} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  {:?}",
            op.operation, op.count, op.p50_ms, op.p90_ms, op.p99_ms, op.max_ms, op.errors
        );
    }
}

/// The mesh under load: one the generator started (stopped at the end), or one at an endpoint.
struct Target {
    /// `standalone`, `multi-process` or `endpoint`.
    kind: &'static str,
    /// Where the operator manages tenants (tenancy).
    endpoint: String,
    operator: SecretString,
    running: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
    /// The multi-process layout, its processes killed on drop.
    layout: Option<layout::Layout>,
    _data_dir: Option<tempfile::TempDir>,
}

impl Target {
    /// `user`'s clients on each service: the one endpoint of a standalone mesh, or each service's
    /// own process in the multi-process layout. Waits until every service knows the user's key.
    async fn clients(&self, user: &Client) -> anyhow::Result<layout::Clients> {
        let clients = match &self.layout {
            Some(layout) => layout.clients(user).await,
            None => layout::Clients {
                tenancy: user.clone(),
                ingest: user.clone(),
                analysis: user.clone(),
                trust: user.clone(),
                deletion: user.clone(),
                audit: user.clone(),
            },
        };
        // A new key reaches each service's cache through the `tm_auth` watch, not instantly: a
        // lookup of something missing answers NOT_FOUND once the key is known (anything but
        // UNAUTHENTICATED will do; the run reports later failures).
        let missing = "00000000-0000-0000-0000-000000000000";
        let _ = once_known(|| clients.ingest.get_dataset(missing)).await;
        let _ = once_known(|| clients.analysis.get_job(missing)).await;
        let _ = once_known(|| clients.trust.get_report(missing)).await;
        let _ = once_known(|| clients.deletion.get_deletion(missing)).await;
        Ok(clients)
    }
}

async fn target(args: &Args) -> anyhow::Result<Target> {
    if let (Some(endpoint), Some(file)) = (&args.endpoint, &args.operator_credential_file) {
        let credential =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        return Ok(Target {
            kind: "endpoint",
            endpoint: endpoint.clone(),
            operator: SecretString::from(credential.trim().to_owned()),
            running: None,
            layout: None,
            _data_dir: None,
        });
    }
    if args.layout == LayoutKind::MultiProcess {
        let layout = layout::Layout::start(args.analysis_replicas).await;
        return Ok(Target {
            kind: "multi-process",
            endpoint: layout.service("tenancy").endpoint(),
            operator: SecretString::from(layout::OPERATOR),
            running: None,
            layout: Some(layout),
            _data_dir: None,
        });
    }
    let dir = tempfile::tempdir().context("creating the mesh's data directory")?;
    let mut settings = StandaloneSettings::new(
        dir.path().to_owned(),
        SecretString::from(args.database_url.clone()),
    );
    settings.grpc.bind.set_port(0);
    settings.admin.bind.set_port(0);
    if let Some(binary) = &args.nats_server {
        settings.nats = NatsSource::Spawn {
            binary: binary.clone(),
        };
    }
    let mesh = Standalone::build(settings)
        .await
        .context("starting the standalone mesh")?;
    let endpoint = format!("http://{}", mesh.grpc_addr());
    let operator = mesh.operator_credential().clone();
    let stop = CancellationToken::new();
    let running = tokio::spawn(mesh.run_until_stopped(stop.clone()));
    Ok(Target {
        kind: "standalone",
        endpoint,
        operator,
        running: Some((stop, running)),
        layout: None,
        _data_dir: Some(dir),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    trustmesh_runtime::install_default_crypto_provider();
    let args = Arc::new(Args::parse());
    let target = target(&args).await?;
    let operator = Client::connect(&target.endpoint, &target.operator).await?;
    if args.quota_flood {
        let outcome = quota::run(&args, &target, &operator).await;
        if let Some((stop, running)) = target.running {
            stop.cancel();
            running.await??;
        }
        return outcome;
    }
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 6..];

    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let stop = CancellationToken::new();
    let mut clients = Vec::new();
    for t in 0..args.tenants {
        let tenant = format!("load-{run}-{t}");
        let (_, user) = operator
            .create_tenant_with_key(
                &tenant,
                &tenant,
                &[Scope::Admin],
                Duration::from_secs(86_400),
            )
            .await
            .with_context(|| format!("creating tenant {tenant}"))?;
        for c in 0..args.clients {
            let user = target.clients(&user).await?;
            clients.push(tokio::spawn(client_loop(
                user,
                Arc::clone(&args),
                Arc::clone(&recorder),
                stop.clone(),
                (t * 1000 + c + 1) as u64,
            )));
        }
    }
    let started = Instant::now();
    let deadline = tokio::time::sleep(Duration::from_secs(args.duration_secs));
    let all = futures::future::join_all(clients);
    tokio::pin!(all);
    tokio::select! {
        () = deadline => {
            stop.cancel();
            all.await;
        }
        _ = &mut all => {}
    }
    let elapsed = started.elapsed();

    let figures = figures(
        &args,
        target.kind,
        &recorder.lock().expect("recorder lock"),
        elapsed,
    );
    print(&figures);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some((stop, running)) = target.running {
        stop.cancel();
        running.await??;
    }
    anyhow::ensure!(figures.jobs_lost == 0, "{} jobs lost", figures.jobs_lost);
    Ok(())
}
