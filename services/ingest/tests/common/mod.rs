//! A running ingest service against real nats-server, Postgres and an object directory (or s3s-fs).

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, Context};
use futures::StreamExt;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Status};
use trustmesh_ingest::settings::{
    DatabaseSettings, KeySettings, NatsSettings, ObjectStoreSettings,
};
use trustmesh_ingest::{AppError, Application, Settings};
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::upload_dataset_request::Payload;
use trustmesh_proto::v1::{
    CreateDatasetRequest, Dataset, DatasetFormat, UploadDatasetRequest, UploadMetadata,
};
use trustmesh_runtime::{AdminSettings, GrpcSettings, SecretString, ServerTls, TransportMode};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;
use trustmesh_testkit::s3::S3Server;

/// The iris fixture shared by the repo's tests.
pub fn iris() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/cleanlab-reference/iris_10s.dataset.csv");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Where objects go in a test.
pub enum Backend {
    /// A temporary local directory.
    Local,
    /// A fresh s3s-fs server.
    S3,
}

/// A running service and the servers it uses.
pub struct TestApp {
    pub client: DatasetServiceClient<Channel>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub nats: NatsServer,
    pub jetstream: Context,
    pub db: TestDatabase,
    pub dir: TempDir,
    pub s3: Option<S3Server>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), AppError>>>,
}

fn no_auth(request: Request<()>) -> Result<Request<()>, Status> {
    Ok(request)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Backend::Local).await
}

pub async fn spawn_app_with(backend: Backend) -> TestApp {
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let s3 = match backend {
        Backend::Local => None,
        Backend::S3 => Some(S3Server::start().await),
    };
    let objects = match &s3 {
        None => ObjectStoreSettings::Local {
            dir: dir.path().join("objects"),
        },
        Some(s3) => ObjectStoreSettings::S3 {
            endpoint: Some(s3.endpoint()),
            region: s3.region().to_owned(),
            bucket: "ingest-test".to_owned(),
            access_key_id: s3.access_key().to_owned(),
            secret_access_key: SecretString::from(s3.secret_key().to_owned()),
            create_bucket: true,
        },
    };
    let settings = Settings {
        grpc: GrpcSettings {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: ServerTls {
                mode: TransportMode::DevPlaintextLoopback,
                ..ServerTls::default()
            },
            ..GrpcSettings::default()
        },
        admin: AdminSettings {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        },
        database: DatabaseSettings {
            url: SecretString::from(db.url().to_owned()),
            max_connections: 5,
        },
        nats: NatsSettings { url: nats.url() },
        objects,
        keys: KeySettings {
            kek_file: dir.path().join("kek"),
        },
        ..Settings::default()
    };
    let app = Application::build(settings, no_auth).await.expect("build");
    let addr = app.grpc_addr();
    let admin = app.admin_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = DatasetServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_decoding_message_size(64 * 1024 * 1024);
    let jetstream = nats.jetstream().await;
    TestApp {
        client,
        addr,
        admin,
        nats,
        jetstream,
        db,
        dir,
        s3,
        shutdown,
        task: Some(task),
    }
}

impl TestApp {
    /// The local object directory.
    pub fn objects_dir(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    /// Every file under the object directory (or the S3 server's root).
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let root = self
            .s3
            .as_ref()
            .map_or_else(|| self.objects_dir(), |s3| s3.root_dir().to_path_buf());
        let mut files = Vec::new();
        let mut pending = vec![root];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files
    }

    pub async fn create(&mut self, tenant: &str, display_name: &str) -> Dataset {
        self.client
            .create_dataset(CreateDatasetRequest {
                parent: format!("tenants/{tenant}"),
                display_name: display_name.to_owned(),
                description: String::new(),
                request_id: String::new(),
            })
            .await
            .expect("create")
            .into_inner()
    }

    pub async fn upload(
        &mut self,
        dataset: &str,
        format: DatasetFormat,
        filename: &str,
        bytes: &[u8],
    ) -> Result<Dataset, Status> {
        let mut messages = vec![UploadDatasetRequest {
            payload: Some(Payload::Metadata(UploadMetadata {
                dataset: dataset.to_owned(),
                format: format.into(),
                filename: filename.to_owned(),
                size_bytes: bytes.len() as u64,
                ..UploadMetadata::default()
            })),
        }];
        messages.extend(bytes.chunks(1000).map(|chunk| UploadDatasetRequest {
            payload: Some(Payload::Chunk(chunk.to_vec())),
        }));
        self.client
            .upload_dataset(tokio_stream::iter(messages))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Every message of `stream` on subjects matching `filter`, as of now.
pub async fn read_all(js: &Context, stream: &str, filter: &str) -> Vec<jetstream::Message> {
    let stream = js.get_stream(stream).await.expect("stream");
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: filter.to_owned(),
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::All,
            ..pull::Config::default()
        })
        .await
        .expect("consumer");
    let mut out = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(10_000)
        .messages()
        .await
        .expect("fetch");
    while let Some(message) = batch.next().await {
        out.push(message.expect("message"));
    }
    out
}

/// Waits (up to 20 s) until `stream` holds at least `n` messages matching `filter`, and returns them.
pub async fn wait_for(
    js: &Context,
    stream: &str,
    filter: &str,
    n: usize,
) -> Vec<jetstream::Message> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let messages = read_all(js, stream, filter).await;
        if messages.len() >= n || tokio::time::Instant::now() > deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
