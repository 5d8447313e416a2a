//! TLS 1.3 only, mTLS, and the loopback-only plaintext mode.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;
use trustmesh_runtime::{
    ClientTls, ConnectError, GrpcServer, GrpcSettings, InvalidSetting, Readiness, ServerError,
    ServerTls, TransportMode, Validate as _, connect_channel, lazy_channel,
};

use crate::helpers::{BOUND, Pki, health_status};

/// Starts a server with `settings` and no dependencies (so it is ready); returns its address and stop token.
async fn start(settings: GrpcSettings) -> anyhow::Result<(SocketAddr, CancellationToken)> {
    let server = GrpcServer::builder(settings, Readiness::new())
        .build()
        .await?;
    let addr = server.local_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run_until_stopped(shutdown.clone()));
    Ok((addr, shutdown))
}

/// A rustls client config trusting `pki`'s CA and speaking only `versions`.
fn raw_client(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&pki.ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[tokio::test]
async fn health_check_over_tls13_succeeds_with_the_trusted_ca() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let (addr, shutdown) = start(pki.grpc_settings()).await?;

    let channel = connect_channel(&format!("https://{addr}"), &pki.client_tls()).await?;
    assert_eq!(health_status(&channel, "").await?, ServingStatus::Serving);

    // By name too (the certificate has a `localhost` SAN).
    let by_name = connect_channel(
        &format!("https://localhost:{}", addr.port()),
        &pki.client_tls(),
    )
    .await?;
    assert_eq!(health_status(&by_name, "").await?, ServingStatus::Serving);
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_client_offering_tls12_and_tls13_gets_tls13() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let (addr, shutdown) = start(pki.grpc_settings()).await?;

    let connector = raw_client(&pki, &[&rustls::version::TLS12, &rustls::version::TLS13])?;
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio::time::timeout(
        BOUND,
        connector.connect(ServerName::try_from("localhost")?, tcp),
    )
    .await??;
    let (_, session) = tls.get_ref();
    assert_eq!(
        session.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_tls12_only_client_is_refused() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let (addr, shutdown) = start(pki.grpc_settings()).await?;

    let connector = raw_client(&pki, &[&rustls::version::TLS12])?;
    let tcp = TcpStream::connect(addr).await?;
    let handshake = tokio::time::timeout(
        BOUND,
        connector.connect(ServerName::try_from("localhost")?, tcp),
    )
    .await?;
    let error = handshake
        .err()
        .ok_or_else(|| anyhow::anyhow!("a TLS 1.2 handshake succeeded"))?;
    assert!(
        error.to_string().contains("ProtocolVersion"),
        "unexpected handshake error: {error}"
    );

    // The server is still fine for TLS 1.3 clients afterwards.
    let channel = connect_channel(&format!("https://{addr}"), &pki.client_tls()).await?;
    assert_eq!(health_status(&channel, "").await?, ServingStatus::Serving);
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_client_refuses_a_server_its_ca_did_not_sign() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let other = Pki::generate()?;
    let (addr, shutdown) = start(pki.grpc_settings()).await?;

    let result = connect_channel(&format!("https://{addr}"), &other.client_tls()).await;
    assert!(
        matches!(result, Err(ConnectError::Connect { .. })),
        "connected: {result:?}"
    );
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn mtls_serves_only_clients_with_a_certificate_from_the_client_ca() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let mut settings = pki.grpc_settings();
    settings.tls.client_ca_file = Some(pki.ca.clone());
    settings.tls.require_client_cert = true;
    let (addr, shutdown) = start(settings).await?;
    let endpoint = format!("https://{addr}");

    // Without a client certificate: the server aborts the handshake, so no call can succeed.
    let anonymous = match connect_channel(&endpoint, &pki.client_tls()).await {
        Ok(channel) => health_status(&channel, "").await.err(),
        Err(error) => Some(error.into()),
    };
    assert!(
        anonymous.is_some(),
        "a client without a certificate was served"
    );

    // A certificate from another CA is refused too.
    let stranger = Pki::generate()?;
    let foreign =
        ClientTls::tls(&pki.ca).with_identity(&stranger.client_cert, &stranger.client_key);
    let foreign = match connect_channel(&endpoint, &foreign).await {
        Ok(channel) => health_status(&channel, "").await.err(),
        Err(error) => Some(error.into()),
    };
    assert!(
        foreign.is_some(),
        "a client with a foreign certificate was served"
    );

    let trusted = pki
        .client_tls()
        .with_identity(&pki.client_cert, &pki.client_key);
    let channel = connect_channel(&endpoint, &trusted).await?;
    assert_eq!(health_status(&channel, "").await?, ServingStatus::Serving);
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn optional_mtls_serves_anonymous_clients_and_refuses_a_foreign_certificate()
-> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let mut settings = pki.grpc_settings();
    settings.tls.client_ca_file = Some(pki.ca.clone());
    let (addr, shutdown) = start(settings).await?;
    let endpoint = format!("https://{addr}");

    // A tenant's SDK presents no certificate: served.
    let anonymous = connect_channel(&endpoint, &pki.client_tls()).await?;
    assert_eq!(health_status(&anonymous, "").await?, ServingStatus::Serving);

    // A certificate from an unknown CA fails the handshake, although none is required.
    let stranger = Pki::generate()?;
    let foreign =
        ClientTls::tls(&pki.ca).with_identity(&stranger.client_cert, &stranger.client_key);
    let foreign = match connect_channel(&endpoint, &foreign).await {
        Ok(channel) => health_status(&channel, "").await.err(),
        Err(error) => Some(error.into()),
    };
    assert!(
        foreign.is_some(),
        "a client with a foreign certificate was served"
    );

    let trusted = pki
        .client_tls()
        .with_identity(&pki.client_cert, &pki.client_key);
    let channel = connect_channel(&endpoint, &trusted).await?;
    assert_eq!(health_status(&channel, "").await?, ServingStatus::Serving);
    shutdown.cancel();
    Ok(())
}

fn plaintext(bind: SocketAddr) -> GrpcSettings {
    GrpcSettings {
        bind,
        tls: ServerTls {
            mode: TransportMode::DevPlaintextLoopback,
            ..ServerTls::default()
        },
        ..GrpcSettings::default()
    }
}

#[tokio::test]
async fn plaintext_on_a_non_loopback_address_is_refused() -> anyhow::Result<()> {
    for bind in ["0.0.0.0:0", "[::]:0", "192.0.2.10:50051"] {
        let settings = plaintext(bind.parse()?);
        let result = GrpcServer::builder(settings.clone(), Readiness::new())
            .build()
            .await;
        assert!(
            matches!(result, Err(ServerError::PlaintextNotLoopback { addr }) if addr == settings.bind),
            "{bind}: {result:?}"
        );
        let invalid = settings
            .validate()
            .err()
            .map(|error: InvalidSetting| error.key);
        assert_eq!(invalid.as_deref(), Some("bind"), "{bind}");
    }
    Ok(())
}

#[tokio::test]
async fn plaintext_on_loopback_serves_and_clients_refuse_plaintext_elsewhere() -> anyhow::Result<()>
{
    let (addr, shutdown) = start(plaintext(SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
    let channel = connect_channel(
        &format!("http://{addr}"),
        &ClientTls::dev_plaintext_loopback(),
    )
    .await?;
    assert_eq!(health_status(&channel, "").await?, ServingStatus::Serving);
    shutdown.cancel();

    let remote = connect_channel(
        "http://192.0.2.10:50051",
        &ClientTls::dev_plaintext_loopback(),
    )
    .await;
    assert!(
        matches!(remote, Err(ConnectError::PlaintextNotLoopback(ref host)) if host == "192.0.2.10"),
        "{remote:?}"
    );
    Ok(())
}

#[tokio::test]
async fn tls_mode_without_a_certificate_fails_validation_and_build() -> anyhow::Result<()> {
    let settings = GrpcSettings {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..GrpcSettings::default()
    };
    let invalid = settings.validate().err().map(|error| error.key);
    assert_eq!(invalid.as_deref(), Some("tls.cert_file"));
    let result = GrpcServer::builder(settings, Readiness::new())
        .build()
        .await;
    assert!(matches!(result, Err(ServerError::Tls(_))), "{result:?}");
    Ok(())
}

#[tokio::test]
async fn a_lazy_channel_connects_on_first_call() -> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let server = GrpcServer::builder(pki.grpc_settings(), Readiness::new())
        .build()
        .await?;
    let addr = server.local_addr();
    // Made before the server serves: nothing is dialled until the first call.
    let channel = lazy_channel(&format!("https://{addr}"), &pki.client_tls())?;
    let shutdown = CancellationToken::new();
    tokio::spawn(server.run_until_stopped(shutdown.clone()));
    assert_eq!(health_status(&channel, "").await?, ServingStatus::Serving);
    shutdown.cancel();

    // Bad TLS material is reported when the channel is made, not on first use.
    let missing = lazy_channel(
        &format!("https://{addr}"),
        &ClientTls::tls("/nonexistent/ca.pem"),
    );
    assert!(matches!(missing, Err(ConnectError::Tls(_))), "{missing:?}");
    Ok(())
}
