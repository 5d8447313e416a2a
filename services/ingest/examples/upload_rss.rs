//! Measures the ingest service's peak memory on one large CSV upload: starts nats-server, Postgres
//! and s3s-fs (separate processes, via `libs/testkit`), runs the service in this process, streams a
//! generated CSV of the given size to it in 4 MiB chunks (generated on the fly, never held whole)
//! and prints the process's resident set before and at its peak (`VmHWM`).
//!
//! ```text
//! cargo run --release -p trustmesh-ingest --example upload_rss -- 100 [features]
//! /usr/bin/time -v target/release/examples/upload_rss 1024
//! ```
//!
//! The size is in MiB; `features` (default 8) numeric columns plus `row_id` and `label`.

use std::net::SocketAddr;
use std::time::Instant;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};
use trustmesh_auth::{AuthBucket, IssuedKey, KeyRecord, Scope};
use trustmesh_ingest::settings::{
    DatabaseSettings, KeySettings, Limits, NatsSettings, ObjectStoreSettings,
};
use trustmesh_ingest::{Application, Settings};
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::upload_dataset_request::Payload;
use trustmesh_proto::v1::{
    CreateDatasetRequest, DatasetFormat, GetDatasetRequest, UploadDatasetRequest, UploadMetadata,
};
use trustmesh_runtime::{AdminSettings, ExposeSecret as _, GrpcSettings, SecretString};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;
use trustmesh_testkit::s3::S3Server;

const CHUNK: usize = 4 * 1024 * 1024;

/// Adds the bearer key to every request.
type Bearer = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send>;

type Client = DatasetServiceClient<InterceptedService<Channel, Bearer>>;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map_or(100, |a| a.parse().expect("size in MiB"));
    let features: usize = args.next().map_or(8, |a| a.parse().expect("features"));
    let target = mib * 1024 * 1024;

    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        grpc: GrpcSettings::dev_plaintext_loopback(),
        admin: AdminSettings::any_loopback_port(),
        database: DatabaseSettings {
            url: SecretString::from(db.url().to_owned()),
            max_connections: 5,
        },
        nats: NatsSettings::at(nats.url()),
        objects: ObjectStoreSettings::S3 {
            endpoint: Some(s3.endpoint()),
            region: s3.region().to_owned(),
            bucket: "ingest-rss".to_owned(),
            access_key_id: s3.access_key().to_owned(),
            secret_access_key: SecretString::from(s3.secret_key().to_owned()),
            create_bucket: true,
        },
        keys: KeySettings {
            kek_file: dir.path().join("kek"),
        },
        limits: Limits {
            max_upload_bytes: target + (64 << 20),
            max_rows: u64::MAX,
            max_columns: 2048,
        },
        ..Settings::default()
    };
    let app = Application::build(settings).await.expect("build");
    let addr = app.grpc_addr();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let mut client = client(addr, &nats).await;

    let dataset = client
        .create_dataset(CreateDatasetRequest {
            parent: "tenants/acme".to_owned(),
            display_name: "rss".to_owned(),
            ..CreateDatasetRequest::default()
        })
        .await
        .expect("create")
        .into_inner();
    let before = status_kib("VmRSS");
    let metadata = UploadDatasetRequest {
        payload: Some(Payload::Metadata(UploadMetadata {
            dataset: dataset.name.clone(),
            format: DatasetFormat::Csv.into(),
            filename: "big.csv".to_owned(),
            ..UploadMetadata::default()
        })),
    };
    let mut generator = Generator::new(features);
    let chunks = futures::stream::iter(std::iter::from_fn(move || {
        (generator.written < target).then(|| UploadDatasetRequest {
            payload: Some(Payload::Chunk(generator.chunk())),
        })
    }));
    let started = Instant::now();
    let uploaded = client
        .upload_dataset(futures::StreamExt::chain(
            futures::stream::iter([metadata]),
            chunks,
        ))
        .await
        .expect("upload")
        .into_inner();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"upload_mib\":{:.1},\"rows\":{},\"columns\":{},\"seconds\":{seconds:.1},\
         \"rss_before_mib\":{},\"peak_rss_mib\":{}}}",
        uploaded.size_bytes as f64 / 1_048_576.0,
        uploaded.row_count,
        features + 2,
        before / 1024,
        status_kib("VmHWM") / 1024,
    );
    shutdown.cancel();
    task.await.expect("join").expect("service");
}

/// Mints an `acme` key with `datasets:write` + `datasets:read` and waits until the service knows it.
async fn client(addr: SocketAddr, nats: &NatsServer) -> Client {
    let bucket = AuthBucket::open(&nats.jetstream().await, 1)
        .await
        .expect("tm_auth");
    let issued = IssuedKey::generate();
    let record = KeyRecord {
        key_id: issued.key_id().clone(),
        tenant: "acme".to_owned(),
        scopes: [Scope::DatasetsWrite, Scope::DatasetsRead]
            .into_iter()
            .collect(),
        expires_at: (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).unix_timestamp(),
        revoked: false,
        digest: issued.digest().clone(),
    };
    bucket.put(&record).await.expect("put the key");
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", issued.token().expose_secret())
            .parse()
            .expect("header");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let interceptor: Bearer = Box::new(move |mut request: Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        Ok(request)
    });
    let mut client = DatasetServiceClient::with_interceptor(channel, interceptor);
    for _ in 0..200 {
        let status = client
            .get_dataset(GetDatasetRequest::default())
            .await
            .expect_err("a nameless get fails");
        if status.code() != tonic::Code::Unauthenticated {
            return client;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the service did not learn the key");
}

/// `row_id`, `features` numbers in [-1, 2.5) with 4 decimals and a `label` of three classes.
struct Generator {
    features: usize,
    row: u64,
    state: u64,
    written: u64,
}

impl Generator {
    fn new(features: usize) -> Self {
        Self {
            features,
            row: 0,
            state: 0x2545_f491_4f6c_dd1d,
            written: 0,
        }
    }

    /// The next ~4 MiB of whole rows (the header first).
    fn chunk(&mut self) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(CHUNK + 256);
        if self.row == 0 && self.written == 0 {
            out.push_str("row_id");
            for f in 0..self.features {
                let _ = write!(out, ",f{f}");
            }
            out.push_str(",label\n");
        }
        while out.len() < CHUNK {
            let class = self.row % 3;
            let _ = write!(out, "{}", self.row);
            for f in 0..self.features {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                let center = if f as u64 % 3 == class { 1.5 } else { 0.0 };
                let noise = (self.state % 10_000) as f64 / 5_000.0 - 1.0;
                let _ = write!(out, ",{:.4}", center + noise);
            }
            let _ = writeln!(out, ",c{class}");
            self.row += 1;
        }
        self.written += out.len() as u64;
        out.into_bytes()
    }
}

/// A `/proc/self/status` figure, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a status field")
}
