//! NATS over TLS as the services connect (`nats_options` with the `nats.tls` settings) against a
//! real nats-server started with the repo's TLS config (`infra/nats/nats-server-tls.conf`: TLS 1.3,
//! client certificates of the mesh CA required, one user per service).

use std::path::Path;
use std::time::Duration;

use trustmesh_events::Service;
use trustmesh_runtime::settings::common::NatsSettings;
use trustmesh_runtime::{InvalidSetting, SettingsSource, Validate};
use trustmesh_testkit::nats_auth::SecuredNats;
use trustmesh_testkit::tls::{MESH_SERVICES, MeshPki};

#[derive(Debug, serde::Deserialize)]
struct Settings {
    nats: NatsSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.nats.validate().map_err(|e| e.within("nats"))
    }
}

/// Connects as ingest, its settings from the environment variables an operator sets.
async fn connect(
    nats: &SecuredNats,
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let service = Service::Ingest;
    let mut vars = vec![
        ("TRUSTMESH_NATS__URL".to_owned(), nats.url()),
        (
            "TRUSTMESH_NATS__USER".to_owned(),
            service.nats_user().to_owned(),
        ),
        (
            "TRUSTMESH_NATS__PASSWORD".to_owned(),
            nats.password(&service.nats_password_env()).to_owned(),
        ),
    ];
    let path = |p: &Path| p.display().to_string();
    if let Some(ca) = ca {
        vars.push(("TRUSTMESH_NATS__TLS__CA_FILE".to_owned(), path(ca)));
    }
    if let Some((cert, key)) = identity {
        vars.push(("TRUSTMESH_NATS__TLS__CERT_FILE".to_owned(), path(cert)));
        vars.push(("TRUSTMESH_NATS__TLS__KEY_FILE".to_owned(), path(key)));
    }
    let Settings { nats: settings } = SettingsSource::from_env_vars(vars)
        .load()
        .expect("nats settings");
    trustmesh_service_kit::nats_options(service.as_str(), &settings)
        .connection_timeout(Duration::from_secs(5))
        .connect(settings.url.as_str())
        .await
}

#[tokio::test]
async fn a_service_connects_over_tls_only_with_the_mesh_ca_and_its_certificate()
-> anyhow::Result<()> {
    trustmesh_runtime::install_default_crypto_provider();
    let (dir, foreign_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let pki = MeshPki::ensure(dir.path(), &MESH_SERVICES)?;
    let foreign = MeshPki::foreign(foreign_dir.path())?;
    let nats =
        SecuredNats::start_tls(Service::ALL.iter().map(|s| s.nats_password_env()), &pki).await;
    let (cert, key) = (pki.cert("ingest"), pki.key("ingest"));

    // The mesh CA and ingest's certificate: connected, and its user works over TLS.
    let client = connect(&nats, Some(&pki.ca()), Some((&cert, &key))).await?;
    client.flush().await?;
    assert!(client.server_info().tls_required, "the server requires TLS");
    drop(client);

    // Trusting another CA: the server's certificate is refused.
    let wrong_ca = connect(&nats, Some(&foreign.ca()), Some((&cert, &key))).await;
    assert!(wrong_ca.is_err(), "connected while trusting the wrong CA");

    // A client certificate from another CA, or none: the server refuses the handshake.
    let (foreign_cert, foreign_key) = (foreign.cert("ingest"), foreign.key("ingest"));
    let stranger = connect(&nats, Some(&pki.ca()), Some((&foreign_cert, &foreign_key))).await;
    assert!(
        stranger.is_err(),
        "connected with a foreign client certificate"
    );
    let anonymous = connect(&nats, Some(&pki.ca()), None).await;
    assert!(anonymous.is_err(), "connected without a client certificate");

    // No TLS settings at all: the server requires TLS, the plaintext client is refused.
    let plaintext = connect(&nats, None, None).await;
    assert!(plaintext.is_err(), "connected in plaintext");
    Ok(())
}

#[test]
fn a_client_certificate_needs_its_key_and_a_ca() {
    let load = |vars: Vec<(&str, &str)>| SettingsSource::from_env_vars(vars).load::<Settings>();
    assert!(load(vec![("TRUSTMESH_NATS__TLS__CERT_FILE", "c.pem")]).is_err());
    assert!(
        load(vec![
            ("TRUSTMESH_NATS__TLS__CERT_FILE", "c.pem"),
            ("TRUSTMESH_NATS__TLS__KEY_FILE", "c.key"),
        ])
        .is_err()
    );
    assert!(load(vec![("TRUSTMESH_NATS__TLS__CA_FILE", "ca.pem")]).is_ok());
}
