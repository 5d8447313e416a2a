//! API keys in front of DatasetService: no key is UNAUTHENTICATED, another tenant's key finds nothing
//! (and its attempts are in the owner's audit log), scopes are enforced per method, and a revoked
//! key stops working.

mod common;

use common::{iris, read_all, spawn_app, upload_as, wait_for};
use futures::StreamExt as _;
use prost::Message as _;
use tonic::Code;
use trustmesh_auth::Scope;
use trustmesh_proto::events::v1::{ActorType, AuditEvent, Outcome};
use trustmesh_proto::v1::{
    CreateDatasetRequest, DatasetFormat, DatasetState, GetDatasetRequest, ListDatasetsRequest,
    ReadRowsRequest,
};

/// The audit events of `tenant` recorded by ingest, once there are at least `n`.
async fn audit_events(app: &common::TestApp, tenant: &str, n: usize) -> Vec<AuditEvent> {
    wait_for(
        &app.jetstream,
        "TM_AUDIT",
        &format!("tm.{tenant}.audit.ingest"),
        n,
    )
    .await
    .iter()
    .map(|m| AuditEvent::decode(m.payload.as_ref()).unwrap())
    .collect()
}

#[tokio::test]
async fn calls_without_a_valid_key_are_unauthenticated_and_touch_nothing() {
    let mut app = spawn_app().await;
    let dataset = app.create("acme", "iris").await;
    let mut anonymous = app.anonymous_client();
    let create = anonymous
        .create_dataset(CreateDatasetRequest {
            parent: "tenants/acme".into(),
            display_name: "sneaky".into(),
            ..CreateDatasetRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(create.code(), Code::Unauthenticated, "{create:?}");
    let get = anonymous
        .get_dataset(GetDatasetRequest {
            name: dataset.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::Unauthenticated, "{get:?}");

    // A well-formed key that was never issued, and a credential that is not a key, fare the same.
    for token in [
        format!("tmk_{}_{}", "0".repeat(32), "A".repeat(43)),
        "not-a-key".to_owned(),
    ] {
        let mut request = tonic::Request::new(GetDatasetRequest {
            name: dataset.name.clone(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let status = anonymous.get_dataset(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token}: {status:?}");
        assert_eq!(status.message(), get.message());
    }

    // Nothing was created: the tenant still has its one dataset.
    let listed = app
        .client
        .list_datasets(ListDatasetsRequest {
            parent: "tenants/acme".into(),
            ..ListDatasetsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.datasets.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_key_gets_not_found_like_a_missing_dataset_and_is_audited_in_the_owners_log()
 {
    let mut app = spawn_app().await;
    let dataset = app.create("acme", "iris").await;
    app.upload(&dataset.name, DatasetFormat::Csv, "iris.csv", &iris())
        .await
        .expect("upload");
    let awaiting = app.create("acme", "empty").await;
    // Even an admin key of another tenant.
    let intruder = app.mint_key("beta", &[Scope::Admin]).await;
    let mut beta = app.client_with(&intruder);

    // What acme itself is told about a dataset that does not exist.
    let missing_name = "tenants/acme/datasets/01900000-0000-7000-8000-000000000001";
    let missing = app
        .client
        .get_dataset(GetDatasetRequest {
            name: missing_name.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let looks_missing = |status: &tonic::Status, name: &str| {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(
            status.message().replace(name, "{name}"),
            missing.message().replace(missing_name, "{name}"),
        );
    };

    let get = beta
        .get_dataset(GetDatasetRequest {
            name: dataset.name.clone(),
        })
        .await
        .unwrap_err();
    looks_missing(&get, &dataset.name);
    let read = beta
        .read_rows(ReadRowsRequest {
            name: dataset.name.clone(),
            ..ReadRowsRequest::default()
        })
        .await
        .unwrap_err();
    looks_missing(&read, &dataset.name);
    let upload = upload_as(
        &mut beta,
        &awaiting.name,
        DatasetFormat::Csv,
        "x.csv",
        b"a\n1\n",
    )
    .await
    .unwrap_err();
    looks_missing(&upload, &awaiting.name);
    let list = beta
        .list_datasets(ListDatasetsRequest {
            parent: "tenants/acme".into(),
            ..ListDatasetsRequest::default()
        })
        .await
        .unwrap_err();
    looks_missing(&list, "tenants/acme");

    // The upload changed nothing.
    let after = app
        .client
        .get_dataset(GetDatasetRequest {
            name: awaiting.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.state(), DatasetState::AwaitingUpload);

    // Four denials in acme's log, naming the intruding key; nothing in beta's.
    let audit = audit_events(&app, "acme", 8).await;
    let mut denied: Vec<(String, String)> = audit
        .iter()
        .filter(|e| e.outcome() == Outcome::Denied)
        .map(|e| {
            assert_eq!(e.meta.as_ref().unwrap().tenant, "acme");
            assert_eq!(e.actor_type(), ActorType::ApiKey);
            assert_eq!(e.actor_id, intruder.actor_id());
            assert_eq!(e.grpc_code, Code::NotFound as i32);
            assert_eq!(e.reason, "OTHER_TENANT");
            (e.action.clone(), e.resource.clone())
        })
        .collect();
    denied.sort();
    assert_eq!(
        denied,
        [
            ("datasets.get".to_owned(), dataset.name.clone()),
            ("datasets.list".to_owned(), "tenants/acme".to_owned()),
            ("datasets.rows.read".to_owned(), dataset.name.clone()),
            ("datasets.upload".to_owned(), awaiting.name.clone()),
        ]
    );
    assert!(
        read_all(&app.jetstream, "TM_AUDIT", "tm.beta.audit.ingest")
            .await
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_key_without_datasets_write_reads_but_cannot_create_or_upload() {
    let mut app = spawn_app().await;
    let dataset = app.create("acme", "iris").await;
    let reader_key = app.mint_key("acme", &[Scope::DatasetsRead]).await;
    let mut reader = app.client_with(&reader_key);

    let upload = upload_as(
        &mut reader,
        &dataset.name,
        DatasetFormat::Csv,
        "iris.csv",
        &iris(),
    )
    .await
    .unwrap_err();
    assert_eq!(upload.code(), Code::PermissionDenied, "{upload:?}");
    let create = reader
        .create_dataset(CreateDatasetRequest {
            parent: "tenants/acme".into(),
            display_name: "nope".into(),
            ..CreateDatasetRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(create.code(), Code::PermissionDenied, "{create:?}");

    // It may read: the dataset is there, still awaiting its upload.
    let got = reader
        .get_dataset(GetDatasetRequest {
            name: dataset.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state(), DatasetState::AwaitingUpload);

    // A key with neither read scope cannot read rows either.
    let runner_key = app.mint_key("acme", &[Scope::AnalysisRun]).await;
    let mut runner = app.client_with(&runner_key);
    let mut writer = app.client.clone();
    upload_as(
        &mut writer,
        &dataset.name,
        DatasetFormat::Csv,
        "iris.csv",
        &iris(),
    )
    .await
    .expect("the writer uploads");
    let read = runner
        .read_rows(ReadRowsRequest {
            name: dataset.name.clone(),
            ..ReadRowsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::PermissionDenied, "{read:?}");

    // create, upload (by the writer), get, then the three denials.
    let audit = audit_events(&app, "acme", 6).await;
    let mut denied: Vec<(String, String)> = audit
        .iter()
        .filter(|e| e.outcome() == Outcome::Denied)
        .map(|e| {
            assert_eq!(e.reason, "MISSING_SCOPE");
            assert_eq!(e.grpc_code, Code::PermissionDenied as i32);
            (e.action.clone(), e.actor_id.clone())
        })
        .collect();
    denied.sort();
    assert_eq!(
        denied,
        [
            ("datasets.create".to_owned(), reader_key.actor_id()),
            ("datasets.rows.read".to_owned(), runner_key.actor_id()),
            ("datasets.upload".to_owned(), reader_key.actor_id()),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused() {
    let mut app = spawn_app().await;
    let dataset = app.create("acme", "iris").await;
    app.upload(&dataset.name, DatasetFormat::Csv, "iris.csv", &iris())
        .await
        .expect("upload");
    let mut key = app.mint_key("acme", &[Scope::DatasetsRead]).await;
    let mut client = app.client_with(&key);
    let mut rows = client
        .read_rows(ReadRowsRequest {
            name: dataset.name.clone(),
            ..ReadRowsRequest::default()
        })
        .await
        .expect("the key reads before it is revoked")
        .into_inner();
    assert!(rows.next().await.unwrap().is_ok());

    app.revoke(&mut key).await;
    let read = client
        .read_rows(ReadRowsRequest {
            name: dataset.name.clone(),
            ..ReadRowsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::Unauthenticated, "{read:?}");
    let get = client
        .get_dataset(GetDatasetRequest {
            name: dataset.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::Unauthenticated, "{get:?}");
    // Other keys of the tenant still work.
    app.client
        .get_dataset(GetDatasetRequest {
            name: dataset.name.clone(),
        })
        .await
        .expect("another key still reads");
    app.stop().await;
}
