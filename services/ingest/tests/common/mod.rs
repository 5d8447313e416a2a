//! A running ingest service against real nats-server, Postgres and an object directory (or s3s-fs),
//! and API keys minted into `tm_auth` with `libs/auth` as `tenancy` would.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::{ArrayRef, RecordBatch};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, Context};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use trustmesh_auth::{AuthBucket, IssuedKey, KeyPrincipal, KeyRecord, Scope};
use trustmesh_ingest::settings::{
    DatabaseSettings, KeySettings, NatsSettings, ObjectStoreSettings,
};
use trustmesh_ingest::{AppError, Application, Settings};
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::upload_dataset_request::Payload;
use trustmesh_proto::v1::{
    CreateDatasetRequest, Dataset, DatasetFormat, GetDatasetRequest, UploadDatasetRequest,
    UploadMetadata,
};
use trustmesh_runtime::{AdminSettings, ExposeSecret as _, GrpcSettings, SecretString};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;
use trustmesh_testkit::s3::S3Server;

/// The iris fixture shared by the repo's tests.
pub fn iris() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/cleanlab-reference/iris_10s.dataset.csv");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A Parquet file (Snappy-compressed, pyarrow's default) of one batch of `columns`.
pub fn parquet_file(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    out
}

/// Where objects go in a test.
pub enum Backend {
    /// A temporary local directory.
    Local,
    /// A fresh s3s-fs server.
    S3,
}

/// How long a key written to (or revoked in) `tm_auth` may take to reach the service's cache.
const KEY_PROPAGATION: Duration = Duration::from_secs(2);

/// A `DatasetService` client that sends one API key with every call.
pub type Client = DatasetServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <key>` to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// An API key minted into `tm_auth`.
pub struct TestKey {
    token: SecretString,
    record: KeyRecord,
}

impl TestKey {
    /// The key's audit actor id (its resource name), as `libs/auth` names it.
    pub fn actor_id(&self) -> String {
        KeyPrincipal {
            tenant: self.record.tenant_id().unwrap(),
            key_id: self.record.key_id.clone(),
            scopes: self.record.scopes.clone(),
        }
        .name()
    }

    fn bearer(&self) -> Bearer {
        Bearer(
            format!("Bearer {}", self.token.expose_secret())
                .parse()
                .unwrap(),
        )
    }
}

/// A running service and the servers it uses.
pub struct TestApp {
    /// A client with a `datasets:write` + `datasets:read` key of tenant `acme`.
    pub client: Client,
    /// That key.
    pub key: TestKey,
    clients: HashMap<String, Client>,
    bucket: AuthBucket,
    channel: Channel,
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
        grpc: GrpcSettings::dev_plaintext_loopback(),
        admin: AdminSettings::any_loopback_port(),
        database: DatabaseSettings {
            url: SecretString::from(db.url().to_owned()),
            max_connections: 5,
        },
        nats: NatsSettings::at(nats.url()),
        objects,
        keys: KeySettings {
            kek_file: dir.path().join("kek"),
        },
        ..Settings::default()
    };
    let app = Application::build(settings).await.expect("build");
    let addr = app.grpc_addr();
    let admin = app.admin_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let jetstream = nats.jetstream().await;
    let bucket = AuthBucket::open(&jetstream, 1).await.expect("tm_auth");
    let (key, client) = mint(
        &bucket,
        &channel,
        "acme",
        &[Scope::DatasetsWrite, Scope::DatasetsRead],
    )
    .await;
    TestApp {
        client: client.clone(),
        key,
        clients: HashMap::from([("acme".to_owned(), client)]),
        bucket,
        channel,
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

/// Mints a key of `tenant` with `scopes` (valid for an hour) and waits until the service knows it.
async fn mint(
    bucket: &AuthBucket,
    channel: &Channel,
    tenant: &str,
    scopes: &[Scope],
) -> (TestKey, Client) {
    let issued = IssuedKey::generate();
    let record = KeyRecord {
        key_id: issued.key_id().clone(),
        tenant: tenant.to_owned(),
        scopes: scopes.iter().copied().collect(),
        expires_at: (time::OffsetDateTime::now_utc() + time::Duration::hours(1)).unix_timestamp(),
        revoked: false,
        digest: issued.digest().clone(),
    };
    bucket.put(&record).await.expect("put the key");
    let key = TestKey {
        token: issued.token().clone(),
        record,
    };
    let client = client_with(channel, &key);
    wait_until_known(&client, true).await;
    (key, client)
}

/// A client of `channel` sending `key`.
fn client_with(channel: &Channel, key: &TestKey) -> Client {
    DatasetServiceClient::with_interceptor(channel.clone(), key.bearer())
        .max_decoding_message_size(64 * 1024 * 1024)
}

/// Waits until the service accepts (`known`) or refuses `client`'s key. The probe names no tenant,
/// so it touches no data and is not audited: INVALID_ARGUMENT once the key is accepted.
async fn wait_until_known(client: &Client, known: bool) {
    let deadline = tokio::time::Instant::now() + KEY_PROPAGATION;
    loop {
        let status = client
            .clone()
            .get_dataset(GetDatasetRequest::default())
            .await
            .unwrap_err();
        let accepted = status.code() != Code::Unauthenticated;
        if accepted == known {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key did not become {} within {KEY_PROPAGATION:?}: {status:?}",
            if known { "valid" } else { "refused" }
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl TestApp {
    /// Mints a key of `tenant` with `scopes` into `tm_auth` and returns it once the service knows it.
    pub async fn mint_key(&self, tenant: &str, scopes: &[Scope]) -> TestKey {
        mint(&self.bucket, &self.channel, tenant, scopes).await.0
    }

    /// A client sending `key`.
    pub fn client_with(&self, key: &TestKey) -> Client {
        client_with(&self.channel, key)
    }

    /// A client with no credentials at all.
    pub fn anonymous_client(&self) -> DatasetServiceClient<Channel> {
        DatasetServiceClient::new(self.channel.clone())
    }

    /// A client with a `datasets:write` + `datasets:read` key of `tenant` (minted on first use).
    pub async fn client_of(&mut self, tenant: &str) -> Client {
        if let Some(client) = self.clients.get(tenant) {
            return client.clone();
        }
        let (_, client) = mint(
            &self.bucket,
            &self.channel,
            tenant,
            &[Scope::DatasetsWrite, Scope::DatasetsRead],
        )
        .await;
        self.clients.insert(tenant.to_owned(), client.clone());
        client
    }

    /// Revokes `key` in `tm_auth`, as `tenancy` does, and returns once the service refuses it.
    pub async fn revoke(&self, key: &mut TestKey) {
        key.record.revoked = true;
        self.bucket.put(&key.record).await.expect("revoke the key");
        wait_until_known(&self.client_with(key), false).await;
    }

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

    /// Creates a dataset in `tenant` with that tenant's writer key.
    pub async fn create(&mut self, tenant: &str, display_name: &str) -> Dataset {
        self.client_of(tenant)
            .await
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

    /// Uploads `bytes` to `dataset` with the `acme` writer key.
    pub async fn upload(
        &mut self,
        dataset: &str,
        format: DatasetFormat,
        filename: &str,
        bytes: &[u8],
    ) -> Result<Dataset, Status> {
        upload_as(&mut self.client, dataset, format, filename, bytes).await
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

/// Uploads `bytes` to `dataset` in 1000-byte chunks with `client`.
pub async fn upload_as(
    client: &mut Client,
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
    client
        .upload_dataset(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}
