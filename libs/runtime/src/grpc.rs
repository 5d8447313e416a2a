//! The gRPC server every service runs: the caller's services plus `grpc.health.v1` (following
//! [`Readiness`]) and server reflection, over TLS 1.3 (or plaintext on loopback in development),
//! served until a token is cancelled and then drained within a grace period. Every call runs in a
//! `rpc` span and is reported to an optional recorder (see [`crate::observe`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::http::Request;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::Service;
use tower::layer::util::{Identity, Stack};

use crate::error::ServerError;
use crate::observe::{Observer, RpcLayer, RpcRecorder, SpanParent};
use crate::readiness::{Readiness, ReadinessWatch};
use crate::settings::{InvalidSetting, Validate};
use crate::shutdown::drain_within;
use crate::tls::{ServerTls, TransportMode, server_config};
use crate::tls_incoming::tls_incoming;

/// The full method path of the call being served (`/trustmesh.v1.DatasetService/ReadRows`), which
/// the server puts in each request's extensions: tonic hands interceptors the metadata and
/// extensions but not the URI, and per-method checks (the mesh allow-list of `trustmesh_auth::peer`)
/// need it. A client's TLS certificate, if it presented one, is there too (tonic's
/// `Request::peer_certs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcMethodPath(pub String);

/// Puts the [`GrpcMethodPath`] into each request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MethodPathLayer;

impl<S> tower::Layer<S> for MethodPathLayer {
    type Service = MethodPathService<S>;

    fn layer(&self, inner: S) -> MethodPathService<S> {
        MethodPathService { inner }
    }
}

/// The routes, each request carrying its [`GrpcMethodPath`].
#[derive(Clone, Debug)]
pub(crate) struct MethodPathService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for MethodPathService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let path = GrpcMethodPath(request.uri().path().to_owned());
        request.extensions_mut().insert(path);
        self.inner.call(request)
    }
}

/// A gRPC listener's settings (the `grpc` section of a service's settings).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSettings {
    /// Address to listen on; port 0 picks a free port. Default `127.0.0.1:50051`.
    pub bind: SocketAddr,
    /// TLS material, or development plaintext on loopback.
    pub tls: ServerTls,
    /// Seconds a client has to finish its TLS handshake. Default 10.
    pub handshake_timeout_secs: u64,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 50051)),
            tls: ServerTls::default(),
            handshake_timeout_secs: 10,
        }
    }
}

impl GrpcSettings {
    /// Development plaintext on a free loopback port (tests, examples): what `validate` accepts of
    /// plaintext, with the start-up warning it brings.
    #[must_use]
    pub fn dev_plaintext_loopback() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: ServerTls {
                mode: TransportMode::DevPlaintextLoopback,
                ..ServerTls::default()
            },
            ..Self::default()
        }
    }
}

impl Validate for GrpcSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.tls.validate().map_err(|error| error.within("tls"))?;
        if self.tls.mode == TransportMode::DevPlaintextLoopback && !self.bind.ip().is_loopback() {
            return Err(InvalidSetting::new(
                "bind",
                format!(
                    "{} is not a loopback address, and `tls.mode` is `dev_plaintext_loopback`",
                    self.bind
                ),
            ));
        }
        if self.handshake_timeout_secs == 0 {
            return Err(InvalidSetting::new(
                "handshake_timeout_secs",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }
}

/// Collects the services of a [`GrpcServer`] before it binds.
pub struct GrpcServerBuilder {
    settings: GrpcSettings,
    readiness: Readiness,
    routes: RoutesBuilder,
    service_names: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
    grace_period: Duration,
    recorder: Option<RpcRecorder>,
    span_parent: Option<SpanParent>,
}

/// A bound gRPC server, ready to [`run_until_stopped`](Self::run_until_stopped).
pub struct GrpcServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: Option<(TlsAcceptor, Duration)>,
    router: Router<Stack<MethodPathLayer, Stack<RpcLayer, Identity>>>,
    health: HealthReporter,
    service_names: Vec<&'static str>,
    readiness: Readiness,
    grace_period: Duration,
}

impl std::fmt::Debug for GrpcServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServerBuilder")
            .field("settings", &self.settings)
            .field("service_names", &self.service_names)
            .field("grace_period", &self.grace_period)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.acceptor.is_some())
            .field("service_names", &self.service_names)
            .field("grace_period", &self.grace_period)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// Starts building a server with `settings` whose health follows `readiness`.
    pub fn builder(settings: GrpcSettings, readiness: Readiness) -> GrpcServerBuilder {
        GrpcServerBuilder {
            settings,
            readiness,
            routes: RoutesBuilder::default(),
            service_names: Vec::new(),
            descriptor_sets: Vec::new(),
            grace_period: Duration::from_secs(25),
            recorder: None,
            span_parent: None,
        }
    }

    /// Returns the address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then: readiness is lost and every health status turns
    /// `NOT_SERVING`, the listener closes, and in-flight calls get the grace period to finish.
    ///
    /// # Errors
    ///
    /// [`ServerError::Grpc`] when the server fails while serving.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let Self {
            listener,
            local_addr,
            acceptor,
            router,
            health,
            service_names,
            readiness,
            grace_period,
        } = self;
        let health_sync = tokio::spawn(follow_readiness(readiness.watch(), health, service_names));
        let health_sync_abort = health_sync.abort_handle();
        let signal = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                readiness.begin_shutdown();
                // The follower writes NOT_SERVING and ends; draining starts only after that.
                if let Err(error) = health_sync.await {
                    tracing::warn!(error.message = %error, "The gRPC health follower ended abnormally.");
                }
                tracing::info!(server.addr = %local_addr, "gRPC server draining.");
            }
        };
        let serve = async move {
            match acceptor {
                Some((acceptor, handshake_timeout)) => {
                    router
                        .serve_with_incoming_shutdown(
                            tls_incoming(listener, acceptor, handshake_timeout),
                            signal,
                        )
                        .await
                }
                None => {
                    // Without NODELAY, Nagle's algorithm holds a response's last frames until the
                    // client's delayed ACK: ~40 ms added to every small call (the TLS path sets it
                    // in `tls_incoming`).
                    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                    router.serve_with_incoming_shutdown(incoming, signal).await
                }
            }
        };
        tokio::pin!(serve);
        let result = tokio::select! {
            result = &mut serve => result,
            () = shutdown.cancelled() => {
                drain_within("gRPC server", grace_period, &mut serve).await.unwrap_or(Ok(()))
            }
        };
        // Only still running if serving failed before shutdown.
        health_sync_abort.abort();
        tracing::info!(server.addr = %local_addr, "gRPC server stopped.");
        result.map_err(ServerError::from)
    }
}

impl GrpcServerBuilder {
    /// Adds a tonic service (e.g. `DatasetServiceServer::new(handler)`); its health status follows
    /// readiness under its full name.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.service_names.push(S::NAME);
        self
    }

    /// Adds an encoded `FileDescriptorSet` (e.g. `trustmesh_proto::FILE_DESCRIPTOR_SET`) to reflection.
    pub fn file_descriptor_set(mut self, encoded: &'static [u8]) -> Self {
        self.descriptor_sets.push(encoded);
        self
    }

    /// Sets how long in-flight calls may take once shutdown starts (default 25 s).
    pub fn grace_period(mut self, grace_period: Duration) -> Self {
        self.grace_period = grace_period;
        self
    }

    /// Calls `recorder` once per finished RPC with its method path (`unknown` outside the
    /// registered services), status code and duration, e.g. to feed the service's RPC metrics.
    pub fn on_rpc(
        mut self,
        recorder: impl Fn(&str, tonic::Code, Duration) + Send + Sync + 'static,
    ) -> Self {
        self.recorder = Some(std::sync::Arc::new(recorder));
        self
    }

    /// Lets `span_parent` set each RPC span's parent from the request headers (trace context).
    pub fn span_parent(
        mut self,
        span_parent: impl Fn(&tracing::Span, &tonic::codegen::http::HeaderMap) + Send + Sync + 'static,
    ) -> Self {
        self.span_parent = Some(std::sync::Arc::new(span_parent));
        self
    }

    /// Loads TLS material, binds the listener and sets every health status to `NOT_SERVING`.
    ///
    /// # Errors
    ///
    /// [`ServerError::PlaintextNotLoopback`] for plaintext on a non-loopback address,
    /// [`ServerError::Tls`], [`ServerError::Reflection`] or [`ServerError::Bind`].
    pub async fn build(self) -> Result<GrpcServer, ServerError> {
        let Self {
            settings,
            readiness,
            mut routes,
            service_names,
            descriptor_sets,
            grace_period,
            recorder,
            span_parent,
        } = self;
        let acceptor = match settings.tls.mode {
            TransportMode::Tls => {
                let handshake_timeout = Duration::from_secs(settings.handshake_timeout_secs);
                Some((
                    TlsAcceptor::from(server_config(&settings.tls)?),
                    handshake_timeout,
                ))
            }
            TransportMode::DevPlaintextLoopback => {
                if !settings.bind.ip().is_loopback() {
                    return Err(ServerError::PlaintextNotLoopback {
                        addr: settings.bind,
                    });
                }
                None
            }
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        for name in std::iter::once("").chain(service_names.iter().copied()) {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let mut known_services = service_names.clone();
        known_services.push(name_of(&health_service));
        routes.add_service(health_service);
        let reflection = || {
            descriptor_sets.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |builder, set| builder.register_encoded_file_descriptor_set(set),
            )
        };
        // Both versions: v1 for current tools, v1alpha for older grpcurl/grpcui.
        let (reflection_v1, reflection_v1alpha) =
            (reflection().build_v1()?, reflection().build_v1alpha()?);
        known_services.extend([name_of(&reflection_v1), name_of(&reflection_v1alpha)]);
        routes.add_service(reflection_v1);
        routes.add_service(reflection_v1alpha);

        let listener =
            TcpListener::bind(settings.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: settings.bind,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: settings.bind,
            source,
        })?;
        match (&acceptor, &settings.tls.client_ca_file) {
            (Some(_), None) => {
                tracing::info!(server.addr = %local_addr, "gRPC server listening with TLS 1.3.")
            }
            (Some(_), Some(ca)) => tracing::info!(
                server.addr = %local_addr,
                tls.client_ca = %ca.display(),
                tls.client_cert_required = settings.tls.require_client_cert,
                "gRPC server listening with TLS 1.3; client certificates are verified against the mesh CA."
            ),
            (None, _) => tracing::warn!(
                server.addr = %local_addr,
                "gRPC server listening in PLAINTEXT (dev_plaintext_loopback): traffic is not encrypted; \
                 never use this mode outside development."
            ),
        }
        let observer = Observer {
            recorder,
            span_parent,
            known_prefixes: known_services
                .iter()
                .map(|name| format!("/{name}/"))
                .collect(),
        };
        let router = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(RpcLayer::new(observer))
            .layer(MethodPathLayer)
            .add_routes(routes.routes());
        Ok(GrpcServer {
            listener,
            local_addr,
            acceptor,
            router,
            health,
            service_names,
            readiness,
            grace_period,
        })
    }
}

/// Returns the full gRPC name of `service`'s type.
fn name_of<S: NamedService>(_: &S) -> &'static str {
    S::NAME
}

/// Keeps every health status (overall `""` and each service) equal to readiness; writes
/// `NOT_SERVING` and ends once shutdown starts.
async fn follow_readiness(
    mut watch: ReadinessWatch,
    health: HealthReporter,
    service_names: Vec<&'static str>,
) {
    // `build` wrote NOT_SERVING everywhere; write again only on a change, so watchers see each
    // transition once.
    let mut written = ServingStatus::NotServing;
    let mut status = watch.current();
    loop {
        let serving = if status.is_ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if serving != written {
            for name in std::iter::once("").chain(service_names.iter().copied()) {
                health.set_service_status(name, serving).await;
            }
            written = serving;
            tracing::info!(readiness = %status, "gRPC health is now {serving:?}.");
        }
        if matches!(status, crate::ReadinessStatus::ShuttingDown) {
            return;
        }
        status = watch.changed().await;
    }
}
