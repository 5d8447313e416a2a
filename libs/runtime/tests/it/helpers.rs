//! Test PKI (rcgen), server spawning and a tiny HTTP/1.1 client for the admin port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use trustmesh_runtime::{ClientTls, GrpcSettings, ServerTls, TransportMode};

/// Upper bound on any wait in these tests: only ever reached when something is broken.
pub(crate) const BOUND: Duration = Duration::from_secs(10);

/// A CA, a server certificate (localhost, 127.0.0.1, ::1) and a client certificate, as PEM files.
pub(crate) struct Pki {
    _dir: tempfile::TempDir,
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
}

impl Pki {
    /// Generates a fresh PKI in a temporary directory.
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "trustmesh test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut server_params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = server_params.signed_by(&server_key, &ca)?;

        let mut client_params = CertificateParams::new(vec!["ingest.trustmesh.test".to_owned()])?;
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        let client_cert = client_params.signed_by(&client_key, &ca)?;

        let write = |name: &str, pem: String| -> anyhow::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).with_context(|| format!("writing {name}"))?;
            Ok(path)
        };
        Ok(Self {
            ca: write("ca.pem", ca.as_ref().pem())?,
            server_cert: write("server.pem", server_cert.pem())?,
            server_key: write("server.key", server_key.serialize_pem())?,
            client_cert: write("client.pem", client_cert.pem())?,
            client_key: write("client.key", client_key.serialize_pem())?,
            _dir: dir,
        })
    }

    /// gRPC settings for TLS on 127.0.0.1 with a free port.
    pub(crate) fn grpc_settings(&self) -> GrpcSettings {
        GrpcSettings {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: ServerTls {
                mode: TransportMode::Tls,
                cert_file: Some(self.server_cert.clone()),
                key_file: Some(self.server_key.clone()),
                client_ca_file: None,
                require_client_cert: false,
            },
            ..GrpcSettings::default()
        }
    }

    /// Client settings trusting this PKI's CA.
    pub(crate) fn client_tls(&self) -> ClientTls {
        ClientTls::tls(&self.ca)
    }
}

/// A stand-in application service: answers every call with `UNIMPLEMENTED`.
#[derive(Clone)]
pub(crate) struct Probe;

impl NamedService for Probe {
    const NAME: &'static str = "trustmesh.test.Probe";
}

impl tower::Service<Request<Body>> for Probe {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        std::future::ready(Ok(tonic::Status::unimplemented("probe").into_http()))
    }
}

/// Returns the health status of `service` ("" for the whole server).
pub(crate) async fn health_status(
    channel: &Channel,
    service: &str,
) -> anyhow::Result<ServingStatus> {
    let response = tokio::time::timeout(
        BOUND,
        HealthClient::new(channel.clone()).check(HealthCheckRequest {
            service: service.to_owned(),
        }),
    )
    .await??;
    Ok(response.into_inner().status())
}

/// Polls the health status of `service` until it is `expected` (bounded by [`BOUND`]).
pub(crate) async fn wait_for_health(
    channel: &Channel,
    service: &str,
    expected: ServingStatus,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let status = health_status(channel, service).await?;
        if status == expected {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{service:?} stayed {status:?}, wanted {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP response from the admin port: status code and body.
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) content_type: Option<String>,
    pub(crate) body: String,
}

/// Sends `GET path` over HTTP/1.1 to `addr` and reads the whole response.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    let mut stream = tokio::time::timeout(BOUND, TcpStream::connect(addr)).await??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = String::new();
    tokio::time::timeout(BOUND, stream.read_to_string(&mut raw)).await??;
    let (head, body) = raw.split_once("\r\n\r\n").context("no end of headers")?;
    let mut lines = head.lines();
    let status_line = lines.next().context("no status line")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .context("no status code")?
        .parse()?;
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_owned());
    Ok(HttpResponse {
        status,
        content_type,
        body: body.to_owned(),
    })
}
