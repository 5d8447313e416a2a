//! Backups hold no keys (infra/backup): a backup taken before a tenant's deletion, restored after it
//! with the live keys, decrypts nothing of that tenant and everything of the other tenants.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::mesh::Mesh;
use sqlx::Connection as _;
use trustmesh_crypto::{Keyring, LocalKeyFile};
use trustmesh_events::TenantId;
use trustmesh_proto::v1::{
    DeleteTenantRequest, GetDeletionCertificateRequest, JobState, StartAnalysisRequest, TaskType,
};
use trustmesh_sdk::{Client, once_known};
use trustmesh_store::{
    EncryptedObjects, LocalDirStore, ObjectKey, ObjectsRepo, PgDekStore, PgSettings, SchemaName,
    TenantScope,
};
use trustmesh_testkit::postgres::server_url;

const WINE: &str = include_str!("../../../examples/wine-noisy.csv");

/// The repository's `infra/backup/<script>`, run with `args` and `env`; panics unless it succeeds.
fn script(name: &str, args: &[&str], env: &[(&str, &str)]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../infra/backup")
        .join(name);
    let output = Command::new("bash")
        .arg(&path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Uploads the wine dataset for `user` and analyses it, so every store holds the tenant's data.
async fn upload_and_analyse(user: &Client) {
    let dataset = once_known(|| user.upload_csv("wine", WINE.as_bytes().to_vec(), "row_id"))
        .await
        .unwrap();
    let job = user
        .analysis()
        .start_analysis(StartAnalysisRequest {
            dataset: dataset.name,
            label_column: "label".to_owned(),
            task_type: TaskType::Classification.into(),
            ..StartAnalysisRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let job = tokio::time::timeout(Duration::from_secs(300), user.wait_job(&job.name, |_| {}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
}

/// For each object of `service` in the restored database: whether it decrypts, by tenant.
async fn decryptable(
    url: &str,
    schema: &str,
    service: &str,
    keys: &Path,
    objects: &Path,
) -> Vec<(String, bool)> {
    let settings = PgSettings::new(url, SchemaName::new(schema).unwrap());
    let pool = trustmesh_store::connect(&settings).await.unwrap();
    let keyring = Arc::new(Keyring::new(
        service,
        Arc::new(LocalKeyFile::open_or_create(keys.join(format!("{service}.kek"))).unwrap()),
        Arc::new(PgDekStore::new(pool.clone())),
    ));
    let store = Arc::new(LocalDirStore::open(objects).await.unwrap());
    let encrypted = EncryptedObjects::new(store, keyring, ObjectsRepo::new(pool.clone()));
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT tenant, object FROM objects")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut out = Vec::new();
    for (tenant, object) in rows {
        let scope = TenantScope::new(TenantId::parse(&tenant).unwrap());
        let key = ObjectKey::new(object).unwrap();
        out.push((tenant, encrypted.get(&scope, &key).await.is_ok()));
    }
    pool.close().await;
    out
}

#[tokio::test]
async fn a_backup_restored_after_a_tenant_deletion_decrypts_nothing_of_that_tenant() {
    let mut mesh = Mesh::start().await;
    let operator = mesh.operator.clone();
    let work = tempfile::tempdir().unwrap();
    let mut users = Vec::new();
    for tenant in ["acme", "beta"] {
        let user = mesh.tenant_with_key(tenant).await;
        upload_and_analyse(&user).await;
        users.push(user);
    }

    let objects = mesh.data_dir.path().join("objects");
    let backup = work.path().join("backup");
    let key_backup = work.path().join("keys.sql");
    let env = [
        ("TRUSTMESH_DATABASE_URL", mesh.db.url()),
        ("TRUSTMESH_OBJECTS_DIR", objects.to_str().unwrap()),
    ];
    script("backup.sh", &[backup.to_str().unwrap()], &env);
    script("backup.sh", &["--keys", key_backup.to_str().unwrap()], &env);
    let dump = std::fs::read(backup.join("postgres.dump")).unwrap();
    assert!(!dump.is_empty());

    let deletion = users[0]
        .deletion()
        .delete_tenant(DeleteTenantRequest {
            name: "tenants/acme".to_owned(),
            confirm_tenant_id: "acme".to_owned(),
            ..DeleteTenantRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .output;
    let mut certified = false;
    for _ in 0..600 {
        let certificate = operator
            .deletion()
            .get_deletion_certificate(GetDeletionCertificateRequest {
                name: format!("{deletion}/certificate"),
            })
            .await;
        if certificate.is_ok() {
            certified = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(certified, "no certificate for {deletion}");
    mesh.stop().await;
    let (db, data_dir) = (&mesh.db, &mesh.data_dir);

    // Restored with the live keys: acme's were destroyed, so nothing of acme opens; beta's open.
    let restored_name = format!("{}_restored", db.name());
    let restored_url = db.url().replace(db.name(), &restored_name);
    let restored_objects = work.path().join("restored-objects");
    script(
        "restore.sh",
        &[
            backup.to_str().unwrap(),
            &restored_url,
            restored_objects.to_str().unwrap(),
            "--keys-from",
            db.url(),
        ],
        &[],
    );
    let keys = data_dir.path().join("keys");
    for (schema, service) in [
        ("ingest", "ingest"),
        ("analysis", "analysis"),
        ("trust_scoring", "trust-scoring"),
    ] {
        let objects = decryptable(&restored_url, schema, service, &keys, &restored_objects).await;
        let acme: Vec<bool> = objects
            .iter()
            .filter(|(t, _)| t == "acme")
            .map(|(_, ok)| *ok)
            .collect();
        let beta: Vec<bool> = objects
            .iter()
            .filter(|(t, _)| t == "beta")
            .map(|(_, ok)| *ok)
            .collect();
        assert!(
            !acme.is_empty() && !beta.is_empty(),
            "{service}: {objects:?}"
        );
        assert!(
            acme.iter().all(|ok| !ok),
            "{service}: an object of the deleted tenant decrypts"
        );
        assert!(
            beta.iter().all(|ok| *ok),
            "{service}: another tenant's object does not decrypt"
        );
    }

    // The key backup taken before the deletion is what could still open acme: it is the one thing
    // the retention in the certificate must bound (infra/backup/README.md).
    let keys_sql = std::fs::read_to_string(&key_backup).unwrap();
    assert!(
        keys_sql.contains("acme"),
        "the key backup holds the tenant's wrapped keys"
    );
    let mut admin = sqlx::PgConnection::connect(&server_url()).await.unwrap();
    sqlx::query(&format!(r#"DROP DATABASE "{restored_name}" WITH (FORCE)"#))
        .execute(&mut admin)
        .await
        .unwrap();
}
