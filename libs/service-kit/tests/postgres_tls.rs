//! Postgres over TLS as the services connect (`trustmesh_store::connect` with the URL's `sslmode`),
//! against a private Postgres serving a certificate from a throw-away CA: `sslmode=verify-full`
//! connects with that CA and is refused with another; off loopback, anything weaker than
//! `verify-full` is refused before connecting.

use std::path::Path;

use trustmesh_store::{PgError, PgSettings, SchemaName};
use trustmesh_testkit::pg_cluster::PgCluster;
use trustmesh_testkit::tls::MeshPki;

fn settings(port: u16, ca: &Path) -> PgSettings {
    PgSettings::new(
        format!(
            "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ),
        SchemaName::new("tls_check").unwrap(),
    )
}

#[tokio::test]
async fn verify_full_connects_with_the_servers_ca_and_is_refused_with_another() {
    let dir = tempfile::tempdir().unwrap();
    let pki = MeshPki::ensure(dir.path().join("mesh"), &["postgres"]).unwrap();
    let foreign = MeshPki::foreign(dir.path().join("foreign")).unwrap();
    let cluster = PgCluster::start_with_tls(&pki.cert("postgres"), &pki.key("postgres")).await;

    let pool = trustmesh_store::connect(&settings(cluster.port(), &pki.ca()))
        .await
        .unwrap_or_else(|e| panic!("verify-full with the server's CA: {e:?}\n{}", cluster.log()));
    let (ssl, version): (bool, Option<String>) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(ssl, "the session is encrypted");
    assert_eq!(version.as_deref(), Some("TLSv1.3"));
    pool.close().await;

    let refused = trustmesh_store::connect(&settings(cluster.port(), &foreign.ca())).await;
    match refused {
        Err(PgError::Database(e)) => {
            let message = format!("{e:?}").to_lowercase();
            assert!(
                message.contains("certificate") || message.contains("tls"),
                "refused for the certificate: {message}"
            );
        }
        other => panic!("a server certificate from another CA must be refused, got {other:?}"),
    }
}

#[test]
fn off_loopback_only_verify_full_is_accepted() {
    let schema = SchemaName::new("tls_check").unwrap();
    for mode in ["disable", "prefer", "require", "verify-ca"] {
        let settings = PgSettings::new(
            format!("postgres://tm_ingest:pw@db.example.com/trustmesh?sslmode={mode}"),
            schema.clone(),
        );
        assert!(
            matches!(settings.connect_options(), Err(PgError::InsecureTls { .. })),
            "sslmode={mode} off loopback"
        );
    }
    let settings = PgSettings::new(
        "postgres://tm_ingest:pw@db.example.com/trustmesh?sslmode=verify-full",
        schema,
    );
    assert!(settings.connect_options().is_ok());
}
