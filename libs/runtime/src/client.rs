//! Channels to other services: TLS 1.3 (optionally with a client certificate), or plaintext to a
//! loopback address in development.

use std::net::IpAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::error::ConnectError;
use crate::tls::{ClientTls, TransportMode, client_config};

/// How long one connection attempt (TCP and TLS handshake) may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to `endpoint` (e.g. `https://ingest:50051`) and returns the channel once the first
/// connection (TCP, TLS 1.3 handshake, HTTP/2) is up.
///
/// # Errors
///
/// [`ConnectError`] for a bad endpoint or TLS material, plaintext to a non-loopback host, or a
/// failed connection (including a server certificate the CA does not vouch for).
pub async fn connect_channel(endpoint: &str, tls: &ClientTls) -> Result<Channel, ConnectError> {
    let connect_error = |source| ConnectError::Connect {
        endpoint: endpoint.to_owned(),
        source,
    };
    match prepare(endpoint, tls)? {
        Prepared::Tls(endpoint, connector) => endpoint
            .connect_with_connector(connector)
            .await
            .map_err(connect_error),
        Prepared::Plaintext(endpoint) => endpoint.connect().await.map_err(connect_error),
    }
}

/// Returns a channel to `endpoint` that connects on first use (for peers that may start later).
///
/// # Errors
///
/// [`ConnectError`] for a bad endpoint or TLS material, or plaintext to a non-loopback host.
pub fn lazy_channel(endpoint: &str, tls: &ClientTls) -> Result<Channel, ConnectError> {
    Ok(match prepare(endpoint, tls)? {
        Prepared::Tls(endpoint, connector) => endpoint.connect_with_connector_lazy(connector),
        Prepared::Plaintext(endpoint) => endpoint.connect_lazy(),
    })
}

enum Prepared {
    Tls(Endpoint, TlsChannelConnector),
    Plaintext(Endpoint),
}

fn prepare(endpoint: &str, tls: &ClientTls) -> Result<Prepared, ConnectError> {
    let parsed = Endpoint::from_shared(endpoint.to_owned()).map_err(|source| {
        ConnectError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            source,
        }
    })?;
    let host = parsed
        .uri()
        .host()
        .ok_or_else(|| ConnectError::NoHost(endpoint.to_owned()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    match tls.mode {
        TransportMode::Tls => {
            let name = tls.server_name.clone().unwrap_or(host);
            let server_name =
                ServerName::try_from(name.clone()).map_err(|_| ConnectError::ServerName(name))?;
            let connector = TlsChannelConnector {
                tls: TlsConnector::from(client_config(tls)?),
                server_name: Arc::new(server_name),
            };
            // NOTE: tonic refuses an `https` URI unless its own TLS (which also allows TLS 1.2) is
            // configured, so it is handed the `http` form; the connector adds TLS 1.3 underneath.
            let parsed = match parsed.uri().scheme_str() {
                Some("https") => {
                    let port = parsed.uri().port_u16().unwrap_or(443);
                    let path = parsed
                        .uri()
                        .path_and_query()
                        .map_or("", |path| path.as_str());
                    let host = parsed.uri().host().unwrap_or_default();
                    Endpoint::from_shared(format!("http://{host}:{port}{path}")).map_err(
                        |source| ConnectError::InvalidEndpoint {
                            endpoint: endpoint.to_owned(),
                            source,
                        },
                    )?
                }
                _ => parsed,
            }
            .connect_timeout(CONNECT_TIMEOUT);
            Ok(Prepared::Tls(parsed, connector))
        }
        TransportMode::DevPlaintextLoopback => {
            let parsed = parsed.connect_timeout(CONNECT_TIMEOUT);
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(ConnectError::PlaintextNotLoopback(host));
            }
            tracing::warn!(
                server.addr = %endpoint,
                "Connecting in PLAINTEXT (dev_plaintext_loopback): traffic is not encrypted; never use this mode \
                 outside development."
            );
            Ok(Prepared::Plaintext(parsed))
        }
    }
}

/// Opens TCP then a TLS 1.3 session for each connection a channel makes.
#[derive(Clone)]
struct TlsChannelConnector {
    tls: TlsConnector,
    server_name: Arc<ServerName<'static>>,
}

impl tower::Service<Uri> for TlsChannelConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = this
                .tls
                .connect(ServerName::clone(&this.server_name), tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
