//! The TLS accept loop feeding a gRPC server: each handshake runs in its own task (bounded by a
//! timeout), so a slow or hostile client never holds up the others; failed handshakes are dropped.

use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// Handshaken connections waiting for the server to pick them up.
const QUEUE: usize = 64;

/// Returns the stream of TLS connections accepted on `listener`. The accept loop ends (and the
/// listener closes) once the stream is dropped.
pub(crate) fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // NOTE: e.g. EMFILE; back off briefly instead of spinning (as mini-redis does).
                    tracing::warn!(error.message = %error, "Cannot accept a gRPC connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(client.addr = %peer, error.message = %error, "Cannot set TCP_NODELAY.");
            }
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        // A send error means the server stopped accepting: the connection is dropped.
                        let _ = sender.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(client.addr = %peer, error.message = %error, "TLS handshake failed.");
                    }
                    Err(_) => tracing::debug!(client.addr = %peer, "TLS handshake timed out."),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
