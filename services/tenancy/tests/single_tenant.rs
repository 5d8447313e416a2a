//! The single-tenant install (`single_tenant` settings) against a real nats-server and Postgres: the
//! tenant and its first admin key are created at start, the key into a 0600 file and only once; no
//! operator credential is needed, and every operator RPC is refused, so no second tenant can be
//! created.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};
use trustmesh_proto::v1::tenancy_service_client::TenancyServiceClient;
use trustmesh_proto::v1::{
    CreateApiKeyRequest, CreateSupportAccessGrantRequest, CreateTenantRequest,
    DisableTenantRequest, GetTenantRequest, ListApiKeysRequest, ListTenantsRequest, Quota, Scope,
    UpdateQuotaRequest,
};
use trustmesh_runtime::{AdminSettings, GrpcSettings};
use trustmesh_tenancy::settings::{DatabaseSettings, NatsSettings, SingleTenantSettings};
use trustmesh_tenancy::{Application, Settings};
use trustmesh_testkit::nats::NatsServer;
use trustmesh_testkit::postgres::TestDatabase;

/// Starts tenancy as a single-tenant install of tenant `solo`, its first key going to `key_file`; the
/// gRPC address.
async fn start(
    nats: &NatsServer,
    db: &TestDatabase,
    key_file: &Path,
    shutdown: &CancellationToken,
) -> String {
    let settings = Settings {
        grpc: GrpcSettings::dev_plaintext_loopback(),
        admin: AdminSettings::any_loopback_port(),
        database: DatabaseSettings {
            url: SecretString::from(db.url()),
            max_connections: 4,
        },
        nats: NatsSettings::at(nats.url()),
        single_tenant: Some(SingleTenantSettings {
            tenant: "solo".to_owned(),
            display_name: None,
            first_key_file: key_file.to_owned(),
        }),
        ..Settings::default()
    };
    let app = Application::build(settings).await.expect("the app builds");
    let addr = format!("http://{}", app.grpc_addr());
    tokio::spawn(app.run_until_stopped(shutdown.child_token()));
    addr
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("trustmesh-single-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_tenant_install_has_its_tenant_and_first_key_and_no_operator_surface() {
    let nats = NatsServer::start().await;
    let db = TestDatabase::create().await;
    let dir = TempDir::new();
    let key_file = dir.0.join("first-admin.key");
    let shutdown = CancellationToken::new();
    let addr = start(&nats, &db, &key_file, &shutdown).await;

    // The first admin key, readable by the owner only, works as the tenant's admin.
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(!key.is_empty());
    let mut client = TenancyServiceClient::<Channel>::connect(addr.clone())
        .await
        .unwrap();
    let tenant = client
        .get_tenant(authed(
            GetTenantRequest {
                name: "tenants/solo".to_owned(),
            },
            &key,
        ))
        .await
        .expect("the first key is the tenant's admin")
        .into_inner();
    assert_eq!(tenant.display_name, "solo");
    let expire = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    client
        .create_api_key(authed(
            CreateApiKeyRequest {
                parent: "tenants/solo".to_owned(),
                display_name: "ci".to_owned(),
                scopes: vec![Scope::ReportsRead as i32],
                expire_time: Some(prost_types::Timestamp {
                    seconds: expire.unix_timestamp(),
                    nanos: 0,
                }),
                ..CreateApiKeyRequest::default()
            },
            &key,
        ))
        .await
        .expect("the tenant's admin issues keys");

    // No operator surface: each operator RPC is refused, whoever calls.
    let refused = |result: Result<(), tonic::Status>, what: &str| {
        let status = result.expect_err(what);
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    };
    refused(
        client
            .create_tenant(authed(
                CreateTenantRequest {
                    tenant_id: "second".to_owned(),
                    display_name: "Second".to_owned(),
                    ..CreateTenantRequest::default()
                },
                &key,
            ))
            .await
            .map(drop),
        "a second tenant",
    );
    refused(
        client
            .list_tenants(authed(ListTenantsRequest::default(), &key))
            .await
            .map(drop),
        "ListTenants",
    );
    refused(
        client
            .disable_tenant(authed(
                DisableTenantRequest {
                    name: "tenants/solo".to_owned(),
                    ..DisableTenantRequest::default()
                },
                &key,
            ))
            .await
            .map(drop),
        "DisableTenant",
    );
    refused(
        client
            .update_quota(authed(
                UpdateQuotaRequest {
                    quota: Some(Quota {
                        name: "tenants/solo/quota".to_owned(),
                        ..Quota::default()
                    }),
                    ..UpdateQuotaRequest::default()
                },
                &key,
            ))
            .await
            .map(drop),
        "UpdateQuota",
    );
    refused(
        client
            .create_support_access_grant(authed(
                CreateSupportAccessGrantRequest {
                    parent: "tenants/solo".to_owned(),
                    ..CreateSupportAccessGrantRequest::default()
                },
                &key,
            ))
            .await
            .map(drop),
        "a support grant for an operator there is none of",
    );
    // No credential but a key is recognized: a would-be operator's bearer is not.
    let status = client
        .list_tenants(authed(
            ListTenantsRequest::default(),
            "an-operator-credential-of-forty-characters",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // A second start (a restart, another replica) issues no second first key.
    let again = start(&nats, &db, &key_file, &shutdown).await;
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        key,
        "the first key is issued once"
    );
    let keys = TenancyServiceClient::<Channel>::connect(again)
        .await
        .unwrap()
        .list_api_keys(authed(
            ListApiKeysRequest {
                parent: "tenants/solo".to_owned(),
                ..ListApiKeysRequest::default()
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        keys.api_keys.len(),
        2,
        "the first key and the one issued: {keys:?}"
    );
    shutdown.cancel();
}
