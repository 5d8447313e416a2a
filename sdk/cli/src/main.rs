//! The `trustmesh` command line.

mod audit;
mod certificate;
mod check;
mod dev_certs;
mod remote;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use trustmesh_cli::demo::{self, DemoSettings};
use trustmesh_cli::standalone::{NatsSource, Standalone, StandaloneSettings};
use trustmesh_runtime::{SecretString, ServerTls, TransportMode};
use trustmesh_store::ObjectStoreSettings;
use trustmesh_telemetry::{LogFormat, TelemetrySettings};

/// Exit codes, in `--help`.
const EXIT_CODES: &str = "\
Profiles: `trustmesh login --endpoint URL --tenant TENANT` reads the API key from
$TRUSTMESH_API_KEY or stdin and saves it in ~/.config/trustmesh/config.toml ($TRUSTMESH_CONFIG),
mode 0600; the key is never printed. TRUSTMESH_API_KEY, TRUSTMESH_ENDPOINT, TRUSTMESH_TENANT,
TRUSTMESH_PROFILE and TRUSTMESH_CA_FILE override the profile. Add --json for scripts.

Exit codes:
  0  success
  1  a check failed (INVALID log or certificate), a job or deletion did not succeed
  2  usage: bad arguments, profile or local file, or a request the server refused as invalid
     (INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, OUT_OF_RANGE)
  3  authentication or permission (no key, UNAUTHENTICATED, PERMISSION_DENIED)
  4  not found (NOT_FOUND)
  5  server or transport error (UNAVAILABLE, INTERNAL, ... after retries; cannot connect)";

/// trustmesh: self-hostable, security-first data quality.
#[derive(Parser)]
#[command(name = "trustmesh", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
enum Command {
    /// Save a profile: endpoint, tenant and API key (from $TRUSTMESH_API_KEY or stdin).
    Login(remote::admin::LoginArgs),
    /// Upload, list and show datasets.
    Datasets(remote::datasets::DatasetsArgs),
    /// Start an analysis of a dataset (with --wait: follow it with live progress).
    Analyze(remote::jobs::AnalyzeArgs),
    /// List, show, follow and cancel jobs.
    Jobs(remote::jobs::JobsArgs),
    /// Show a report: health score and issues found.
    Report(remote::results::ReportArgs),
    /// List a report's rows, lowest trust first, optionally by issue.
    Rows(remote::results::RowsArgs),
    /// Export a report's cleanset as CSV.
    Export(remote::results::ExportArgs),
    /// Delete a dataset or the whole tenant, with a signed certificate.
    Delete(remote::admin::DeleteArgs),
    /// Create, list and revoke API keys.
    Keys(remote::admin::KeysArgs),
    /// Create tenants (the operator's command).
    Tenants(remote::admin::TenantsArgs),
    /// Show a tenant's quota, or change it (the operator's command).
    Quota(remote::quota::QuotaArgs),
    /// Add, list and remove webhook endpoints.
    Webhooks(remote::admin::WebhooksArgs),
    /// List, verify and export the audit log (or verify an export offline).
    Audit(audit::AuditArgs),
    /// Fetch and verify deletion certificates (online, or a file offline).
    Certificate(certificate::CertificateArgs),
    /// Find label errors, outliers, duplicates, ... in a CSV file, without the mesh.
    Check(check::CheckArgs),
    /// Start the whole mesh, upload a noisy dataset, show its issues, delete it with a
    /// certificate, show the audit log, and stop.
    Demo(DemoArgs),
    /// Run every service in one process on one gRPC port.
    Standalone(StandaloneArgs),
    /// Issue a local mesh CA and per-service certificates (development), idempotently.
    DevCerts(dev_certs::DevCertsArgs),
}

/// `trustmesh demo`.
#[derive(Args)]
struct DemoArgs {
    /// Postgres URL (the database is created if missing).
    #[arg(
        long,
        env = "TRUSTMESH_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/trustmesh_demo",
        hide_env_values = true
    )]
    database_url: String,
    /// Do not run infra/dev/up.sh (nats-server and Postgres are already installed).
    #[arg(long)]
    skip_setup: bool,
}

/// `trustmesh standalone`.
#[derive(Args)]
struct StandaloneArgs {
    /// The gRPC listener of every service.
    #[arg(long, env = "TRUSTMESH_GRPC_BIND", default_value = "127.0.0.1:50051")]
    grpc_bind: SocketAddr,
    /// The admin listener (/livez, /readyz, /metrics).
    #[arg(long, env = "TRUSTMESH_ADMIN_BIND", default_value = "127.0.0.1:9464")]
    admin_bind: SocketAddr,
    /// TLS certificate chain (PEM) of the gRPC listener; without it, plaintext on loopback only.
    #[arg(long, env = "TRUSTMESH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "TRUSTMESH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Keys, the operator credential, objects and the NATS store live here.
    #[arg(long, env = "TRUSTMESH_DATA_DIR", default_value = "trustmesh-data")]
    data_dir: PathBuf,
    /// Postgres URL (the database is created if missing).
    #[arg(
        long,
        env = "TRUSTMESH_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/trustmesh",
        hide_env_values = true
    )]
    database_url: String,
    /// A running NATS server; without it, a nats-server child process is started.
    #[arg(long, env = "TRUSTMESH_NATS_URL")]
    nats_url: Option<String>,
    /// The S3-compatible endpoint for objects (path-style); without it, `<data-dir>/objects`.
    #[arg(long, env = "TRUSTMESH_S3_ENDPOINT", requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    /// The S3 bucket (created if missing).
    #[arg(long, env = "TRUSTMESH_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// The S3 region.
    #[arg(long, env = "TRUSTMESH_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// The S3 access key id.
    #[arg(long, env = "TRUSTMESH_S3_ACCESS_KEY_ID", default_value = "")]
    s3_access_key_id: String,
    /// The S3 secret access key.
    #[arg(
        long,
        env = "TRUSTMESH_S3_SECRET_ACCESS_KEY",
        default_value = "",
        hide_env_values = true
    )]
    s3_secret_access_key: String,
    /// The largest upload ingest accepts, in bytes (default 256 MiB).
    #[arg(long, env = "TRUSTMESH_MAX_UPLOAD_BYTES")]
    max_upload_bytes: Option<u64>,
    /// The most rows ingest accepts in a dataset (default 1,000,000).
    #[arg(long, env = "TRUSTMESH_MAX_ROWS")]
    max_rows: Option<u64>,
    /// Log lines on stderr: `json` (one object per line, with the span's `trace_id`) or `pretty`.
    /// The filter is $RUST_LOG (default `info`).
    #[arg(long, env = "TRUSTMESH_LOG_FORMAT", default_value = "json", value_parser = log_format)]
    log_format: LogFormat,
    /// An OTLP/gRPC collector (e.g. `http://127.0.0.1:4317`) to export spans and metrics to;
    /// without it, nothing is exported (`/metrics` is served either way).
    #[arg(long, env = "TRUSTMESH_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

fn log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        other => Err(format!("`{other}` is not `json` or `pretty`")),
    }
}

fn main() -> ExitCode {
    trustmesh_runtime::install_default_crypto_provider();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(remote::exit::FAILED),
        Err(error) => {
            eprintln!("error: {}", trustmesh_runtime::cause_chain(error.as_ref()));
            ExitCode::from(remote::exit_code(&error))
        }
    }
}

/// Runs `command`; `Ok(false)` when it ran but its check failed (exit code 1).
fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Login(args) => remote::block_on(remote::admin::login(args)).map(|()| true),
        Command::Datasets(args) => remote::block_on(remote::datasets::run(args)).map(|()| true),
        Command::Analyze(args) => remote::block_on(remote::jobs::analyze(args)).map(|()| true),
        Command::Jobs(args) => remote::block_on(remote::jobs::run(args)).map(|()| true),
        Command::Report(args) => remote::block_on(remote::results::report(args)).map(|()| true),
        Command::Rows(args) => remote::block_on(remote::results::rows(args)).map(|()| true),
        Command::Export(args) => remote::block_on(remote::results::export(args)).map(|()| true),
        Command::Delete(args) => remote::block_on(remote::admin::delete(args)).map(|()| true),
        Command::Keys(args) => remote::block_on(remote::admin::keys(args)).map(|()| true),
        Command::Tenants(args) => remote::block_on(remote::admin::tenants(args)).map(|()| true),
        Command::Quota(args) => remote::block_on(remote::quota::run(args)).map(|()| true),
        Command::Webhooks(args) => remote::block_on(remote::admin::webhooks(args)).map(|()| true),
        Command::Audit(args) => audit::run(&args),
        Command::Certificate(args) => certificate::run(&args),
        Command::Check(args) => check::run(&args).map(|()| true),
        Command::DevCerts(args) => dev_certs::run(&args).map(|()| true),
        Command::Demo(args) => {
            let settings = demo_settings(&args)?;
            remote::block_on(async {
                // The demo's own output tells the story; the mesh's dev-mode warnings would drown it.
                let telemetry = trustmesh_telemetry::init(
                    "standalone",
                    &TelemetrySettings {
                        log_format: LogFormat::Pretty,
                        log_filter: Some(
                            std::env::var("RUST_LOG").unwrap_or_else(|_| "error".to_owned()),
                        ),
                        ..TelemetrySettings::default()
                    },
                )?;
                let mut out = std::io::stdout();
                let ran = demo::run(settings, &mut out).await.map(|_| true);
                telemetry.shutdown().await;
                ran
            })
        }
        Command::Standalone(args) => remote::block_on(async {
            // Inside the runtime: the OTLP exporters run on it.
            let telemetry = trustmesh_telemetry::init(
                "standalone",
                &TelemetrySettings {
                    log_format: args.log_format,
                    otlp_endpoint: args.otlp_endpoint.clone(),
                    ..TelemetrySettings::default()
                },
            )?;
            let ran = standalone(args).await;
            telemetry.shutdown().await;
            ran.map(|()| true)
        }),
    }
}

/// The development home `infra/dev/up.sh` installs into.
fn dev_home() -> PathBuf {
    std::env::var_os("TRUSTMESH_DEV_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".trustmesh-dev"),
        PathBuf::from,
    )
}

/// The `nats-server` to start: `$TRUSTMESH_NATS_SERVER_BIN`, the one `infra/dev/up.sh` installed,
/// or the one on `PATH`.
fn nats_server() -> PathBuf {
    if let Some(bin) = std::env::var_os("TRUSTMESH_NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let installed = dev_home().join("bin/nats-server");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("nats-server")
    }
}

fn demo_settings(args: &DemoArgs) -> anyhow::Result<DemoSettings> {
    if !args.skip_setup {
        setup()?;
    }
    Ok(DemoSettings {
        database: SecretString::from(args.database_url.clone()),
        nats_server: nats_server(),
    })
}

/// Runs `infra/dev/up.sh` (installs nats-server and Postgres if missing; starts Postgres) when
/// the demo runs from a source tree.
fn setup() -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/dev/up.sh");
    if !script.exists() {
        eprintln!(
            "(no infra/dev/up.sh here: using the nats-server and Postgres already installed)"
        );
        return Ok(());
    }
    eprintln!("Checking nats-server and Postgres (infra/dev/up.sh) ...");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .env("TRUSTMESH_DEV_START", "0")
        .env("TRUSTMESH_DEV_S3", "0")
        .status()
        .context("cannot run infra/dev/up.sh")?;
    anyhow::ensure!(status.success(), "infra/dev/up.sh failed ({status})");
    Ok(())
}

async fn standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    let mut settings =
        StandaloneSettings::new(args.data_dir.clone(), SecretString::from(args.database_url));
    settings.grpc.bind = args.grpc_bind;
    settings.admin.bind = args.admin_bind;
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        settings.grpc.tls = ServerTls {
            mode: TransportMode::Tls,
            cert_file: Some(cert),
            key_file: Some(key),
            client_ca_file: None,
            require_client_cert: false,
        };
    }
    settings.nats = match args.nats_url {
        Some(url) => NatsSource::Url(url),
        None => NatsSource::Spawn {
            binary: nats_server(),
        },
    };
    if let (Some(endpoint), Some(bucket)) = (args.s3_endpoint, args.s3_bucket) {
        settings.objects = ObjectStoreSettings::S3 {
            endpoint: Some(endpoint),
            region: args.s3_region,
            bucket,
            access_key_id: args.s3_access_key_id,
            secret_access_key: SecretString::from(args.s3_secret_access_key),
            create_bucket: true,
        };
    }
    if let Some(bytes) = args.max_upload_bytes {
        settings.ingest_limits.max_upload_bytes = bytes;
    }
    if let Some(rows) = args.max_rows {
        settings.ingest_limits.max_rows = rows;
    }
    settings.operator_credential = std::env::var("TRUSTMESH_OPERATOR_CREDENTIAL")
        .ok()
        .map(SecretString::from);
    let mesh = Standalone::build(settings).await?;
    // One line a script can parse, then the human-readable rest.
    println!(
        "trustmesh standalone: grpc={} admin={} nats={}",
        mesh.grpc_addr(),
        mesh.admin_addr(),
        mesh.nats_url()
    );
    eprintln!(
        "The operator credential is in {} (unless $TRUSTMESH_OPERATOR_CREDENTIAL is set).",
        args.data_dir.join("operator-credential").display()
    );
    let shutdown = CancellationToken::new();
    trustmesh_runtime::cancel_on(trustmesh_runtime::shutdown_signal(), shutdown.clone());
    mesh.run_until_stopped(shutdown).await
}
