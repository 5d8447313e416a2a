//! mTLS between services against real listeners (the runtime's gRPC server behind the interceptor)
//! and a real nats-server for the key cache: a client certificate from an unknown CA is refused at
//! the handshake; a mesh service reaches a mesh-internal method by its certificate only if the
//! method's allow-list names it; the shared service credential is not enough over TLS; tenants'
//! clients without a certificate are still served (and authenticate with their bearer).

use std::convert::Infallible;
use std::net::SocketAddr;

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use trustmesh_auth::{Authenticator, CacheOptions, KeyCache, Principal, ServiceCredential};
use trustmesh_proto::v1::dataset_service_client::DatasetServiceClient;
use trustmesh_proto::v1::webhook_service_client::WebhookServiceClient;
use trustmesh_proto::v1::{GetWebhookEndpointRequest, ListDatasetsRequest, ReadRowsRequest};
use trustmesh_runtime::{
    ClientTls, GrpcServer, GrpcSettings, Readiness, ServerTls, TransportMode, connect_channel,
};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::tls::{MESH_SERVICES, MeshPki};

const SERVICE_CREDENTIAL: &str = "mesh-credential-0123456789abcdefghijklmnop";

/// Answers every call with UNIMPLEMENTED naming the principal the interceptor attached: reaching
/// it means the call was let through.
macro_rules! probe {
    ($name:ident, $full:literal) => {
        #[derive(Clone)]
        struct $name;

        impl NamedService for $name {
            const NAME: &'static str = $full;
        }

        impl tonic::codegen::Service<Request<Body>> for $name {
            type Response = Response<Body>;
            type Error = Infallible;
            type Future = std::future::Ready<Result<Self::Response, Infallible>>;

            fn poll_ready(
                &mut self,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Infallible>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: Request<Body>) -> Self::Future {
                let principal = request.extensions().get::<Principal>().cloned();
                std::future::ready(Ok(Status::unimplemented(format!(
                    "reached as {principal:?}"
                ))
                .into_http()))
            }
        }
    };
}

probe!(Webhooks, "trustmesh.v1.WebhookService");
probe!(Datasets, "trustmesh.v1.DatasetService");

struct Mesh {
    _nats: NatsServer,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    pki: MeshPki,
    foreign: MeshPki,
    addr: SocketAddr,
    stop: CancellationToken,
}

/// A listener serving both probes behind the interceptor (with the service credential), as
/// `notifier` with the mesh's certificates, or in development plaintext.
async fn start(tls: bool) -> anyhow::Result<Mesh> {
    let nats = NatsServer::start().await;
    let stop = CancellationToken::new();
    let cache = KeyCache::start(
        &nats.jetstream().await,
        CacheOptions::default(),
        stop.clone(),
    )
    .await?;
    let credential = ServiceCredential::new(&SecretString::from(SERVICE_CREDENTIAL))?;
    let authenticator = Authenticator::new(cache).with_service(Some(credential));
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);
    let pki = MeshPki::ensure(dirs.0.path(), &MESH_SERVICES)?;
    let foreign = MeshPki::foreign(dirs.1.path())?;
    let settings = GrpcSettings {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: if tls {
            ServerTls {
                mode: TransportMode::Tls,
                cert_file: Some(pki.cert("notifier")),
                key_file: Some(pki.key("notifier")),
                client_ca_file: Some(pki.ca()),
                require_client_cert: false,
            }
        } else {
            ServerTls {
                mode: TransportMode::DevPlaintextLoopback,
                ..ServerTls::default()
            }
        },
        ..GrpcSettings::default()
    };
    let server = GrpcServer::builder(settings, Readiness::new())
        .add_service(InterceptedService::new(Webhooks, authenticator.clone()))
        .add_service(InterceptedService::new(Datasets, authenticator))
        .build()
        .await?;
    let addr = server.local_addr();
    tokio::spawn(server.run_until_stopped(stop.clone()));
    Ok(Mesh {
        _nats: nats,
        _dirs: dirs,
        pki,
        foreign,
        addr,
        stop,
    })
}

impl Mesh {
    /// A channel trusting the mesh CA, presenting `identity`'s certificate from `pki` if given.
    async fn channel(&self, identity: Option<(&MeshPki, &str)>) -> anyhow::Result<Channel> {
        let tls = ClientTls::tls(self.pki.ca());
        let tls = match identity {
            Some((pki, name)) => tls.with_identity(pki.cert(name), pki.key(name)),
            None => tls,
        };
        let endpoint = format!("https://localhost:{}", self.addr.port());
        Ok(connect_channel(&endpoint, &tls).await?)
    }
}

fn with_bearer<T>(message: T, bearer: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(bearer) = bearer {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    }
    request
}

async fn get_webhook(channel: Channel, bearer: Option<&str>) -> Status {
    let request = with_bearer(
        GetWebhookEndpointRequest {
            name: "tenants/acme/webhookEndpoints/w1".to_owned(),
        },
        bearer,
    );
    WebhookServiceClient::new(channel)
        .get_webhook_endpoint(request)
        .await
        .expect_err("the probe never answers OK")
}

async fn read_rows(channel: Channel, bearer: Option<&str>) -> Status {
    let request = with_bearer(
        ReadRowsRequest {
            name: "tenants/acme/datasets/d1".to_owned(),
            ..ReadRowsRequest::default()
        },
        bearer,
    );
    DatasetServiceClient::new(channel)
        .read_rows(request)
        .await
        .expect_err("the probe never answers OK")
}

fn assert_reached_as_service(status: &Status, what: &str) {
    assert_eq!(status.code(), Code::Unimplemented, "{what}: {status:?}");
    assert_eq!(status.message(), "reached as Some(Service)", "{what}");
}

fn assert_denied(status: &Status, what: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
}

#[tokio::test]
async fn a_client_certificate_from_an_unknown_ca_is_refused_at_the_handshake() -> anyhow::Result<()>
{
    let mesh = start(true).await?;
    // The same service name, issued by another CA (named like the mesh's): the listener aborts the
    // handshake (in TLS 1.3 the client may finish its side first, so the refusal can surface at
    // the first call), and no call reaches the interceptor, whatever it sends.
    if let Ok(channel) = mesh.channel(Some((&mesh.foreign, "tenancy"))).await {
        let status = get_webhook(channel, Some(SERVICE_CREDENTIAL)).await;
        assert!(
            matches!(status.code(), Code::Unavailable | Code::Unknown)
                && status.message().contains("transport error"),
            "{status:?}"
        );
    }
    // The mesh CA's own certificate of the same name gets through.
    let tenancy = mesh.channel(Some((&mesh.pki, "tenancy"))).await?;
    assert_reached_as_service(&get_webhook(tenancy, None).await, "tenancy");
    mesh.stop.cancel();
    Ok(())
}

#[tokio::test]
async fn mesh_methods_admit_only_the_services_on_their_allow_list() -> anyhow::Result<()> {
    let mesh = start(true).await?;
    // WebhookService: tenancy only.
    let tenancy = mesh.channel(Some((&mesh.pki, "tenancy"))).await?;
    assert_reached_as_service(&get_webhook(tenancy.clone(), None).await, "tenancy");
    for other in ["analysis", "ingest", "trust-scoring", "deletion", "audit"] {
        let channel = mesh.channel(Some((&mesh.pki, other))).await?;
        // Neither the shared credential nor nothing helps a service off the list.
        for bearer in [None, Some(SERVICE_CREDENTIAL)] {
            assert_denied(&get_webhook(channel.clone(), bearer).await, other);
        }
    }
    // ReadRows: analysis and trust-scoring.
    for caller in ["analysis", "trust-scoring"] {
        let channel = mesh.channel(Some((&mesh.pki, caller))).await?;
        assert_reached_as_service(&read_rows(channel, None).await, caller);
    }
    for other in ["tenancy", "deletion", "notifier"] {
        let channel = mesh.channel(Some((&mesh.pki, other))).await?;
        assert_denied(&read_rows(channel, None).await, other);
    }
    mesh.stop.cancel();
    Ok(())
}

#[tokio::test]
async fn over_tls_the_service_credential_alone_is_denied_and_tenants_need_no_certificate()
-> anyhow::Result<()> {
    let mesh = start(true).await?;
    let anonymous = mesh.channel(None).await?;
    // The shared credential without a certificate: denied on the mesh methods and elsewhere.
    assert_denied(
        &get_webhook(anonymous.clone(), Some(SERVICE_CREDENTIAL)).await,
        "webhooks",
    );
    assert_denied(
        &read_rows(anonymous.clone(), Some(SERVICE_CREDENTIAL)).await,
        "rows",
    );
    // A tenant's client (no certificate) completes the handshake and meets the bearer check.
    let status = DatasetServiceClient::new(anonymous)
        .list_datasets(ListDatasetsRequest {
            parent: "tenants/acme".to_owned(),
            ..ListDatasetsRequest::default()
        })
        .await
        .expect_err("no credential");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // A mesh certificate on a method that is not mesh-internal: a client like any other.
    let analysis = mesh.channel(Some((&mesh.pki, "analysis"))).await?;
    let status = DatasetServiceClient::new(analysis)
        .list_datasets(ListDatasetsRequest {
            parent: "tenants/acme".to_owned(),
            ..ListDatasetsRequest::default()
        })
        .await
        .expect_err("no credential");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    mesh.stop.cancel();
    Ok(())
}

#[tokio::test]
async fn in_development_plaintext_the_service_credential_is_the_mesh() -> anyhow::Result<()> {
    let mesh = start(false).await?;
    let channel = trustmesh_runtime::connect_channel(
        &format!("http://{}", mesh.addr),
        &ClientTls::dev_plaintext_loopback(),
    )
    .await?;
    assert_reached_as_service(
        &get_webhook(channel.clone(), Some(SERVICE_CREDENTIAL)).await,
        "webhooks",
    );
    assert_reached_as_service(&read_rows(channel, Some(SERVICE_CREDENTIAL)).await, "rows");
    mesh.stop.cancel();
    Ok(())
}

/// The mesh CA's certificate naming no service (`nats`) is refused on a mesh method.
#[tokio::test]
async fn a_mesh_certificate_naming_no_service_is_denied() -> anyhow::Result<()> {
    let mesh = start(true).await?;
    let pki = MeshPki::ensure(mesh.pki.dir(), &["nats"])?;
    let channel = mesh.channel(Some((&pki, "nats"))).await?;
    assert_denied(&get_webhook(channel, None).await, "nats");
    mesh.stop.cancel();
    Ok(())
}
