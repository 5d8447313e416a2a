//! The ingest-deletion consumer: dataset and tenant deletions, receipts, idempotency.

mod common;

use std::time::Duration;

use async_nats::HeaderMap;
use common::{Backend, TestApp, iris, read_all, spawn_app, spawn_app_with, wait_for};
use prost::Message;
use tonic::Code;
use trustmesh_proto::events::v1::{DeletionReceipt, DeletionRequested, DeletionScope, EventMeta};
use trustmesh_proto::v1::{DatasetFormat, GetDatasetRequest, ListDatasetsRequest};

async fn request_deletion(app: &TestApp, deletion: &str, scope: DeletionScope, target: &str) {
    let event_id = uuid::Uuid::now_v7().to_string();
    let request = DeletionRequested {
        meta: Some(EventMeta {
            event_id: event_id.clone(),
            tenant: "acme".into(),
            occurred_at: None,
            producer: "deletion".into(),
            request_id: "req-del".into(),
        }),
        deletion: deletion.to_owned(),
        scope: scope.into(),
        target: target.to_owned(),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        format!("acme.deletion.requested:{event_id}").as_str(),
    );
    app.jetstream
        .publish_with_headers(
            "tm.acme.deletion.requested",
            headers,
            request.encode_to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Waits until the ingest-deletion consumer has settled everything it was given.
async fn wait_consumer_idle(app: &TestApp) {
    let stream = app.jetstream.get_stream("TM_DELETION").await.unwrap();
    for _ in 0..200 {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("ingest-deletion").await.unwrap();
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the ingest-deletion consumer did not settle");
}

#[tokio::test]
async fn a_dataset_deletion_removes_objects_and_rows_and_answers_once() {
    let mut app = spawn_app().await;
    let keep = app.create("acme", "keep").await;
    app.upload(&keep.name, DatasetFormat::Csv, "keep.csv", b"a\n1\n")
        .await
        .unwrap();
    let dataset = app.create("acme", "iris").await;
    app.upload(&dataset.name, DatasetFormat::Csv, "iris.csv", &iris())
        .await
        .unwrap();
    let id = dataset.name.rsplit('/').next().unwrap().to_owned();
    let files_of = |app: &TestApp| {
        app.stored_files()
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&id))
            .count()
    };
    assert_eq!(files_of(&app), 2, "raw upload and parsed rows");

    let deletion = "tenants/acme/deletions/0190aaaa-0000-7000-8000-000000000001";
    request_deletion(&app, deletion, DeletionScope::Dataset, &dataset.name).await;
    let receipts = wait_for(&app.jetstream, "TM_DELETION", "tm.acme.deletion.receipt", 1).await;
    assert_eq!(receipts.len(), 1);
    let receipt = DeletionReceipt::decode(receipts[0].payload.as_ref()).unwrap();
    assert_eq!(receipt.deletion, deletion);
    assert_eq!(receipt.service, "ingest");
    assert_eq!(receipt.scope(), DeletionScope::Dataset);
    assert_eq!(receipt.deleted.get("objects"), Some(&2));
    assert_eq!(receipt.deleted.get("rows:datasets"), Some(&1));
    assert!(!receipt.residue_found, "{:?}", receipt.residue);
    assert_eq!(receipt.deks_destroyed, 0);

    assert_eq!(files_of(&app), 0);
    let gone = app
        .client
        .get_dataset(GetDatasetRequest {
            name: dataset.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    // The other dataset is untouched.
    app.client
        .get_dataset(GetDatasetRequest {
            name: keep.name.clone(),
        })
        .await
        .unwrap();

    // The same request again (a redelivery or a retry with a new message id): no second effect.
    request_deletion(&app, deletion, DeletionScope::Dataset, &dataset.name).await;
    wait_consumer_idle(&app).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        read_all(&app.jetstream, "TM_DELETION", "tm.acme.deletion.receipt")
            .await
            .len(),
        1
    );
    assert!(
        read_all(&app.jetstream, "TM_DLQ", "tm.*.dlq.>")
            .await
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_deletion_crypto_shreds_and_removes_everything() {
    let mut app = spawn_app().await;
    for name in ["one", "two"] {
        let dataset = app.create("acme", name).await;
        app.upload(&dataset.name, DatasetFormat::Csv, "x.csv", b"a,b\n1,2\n")
            .await
            .unwrap();
    }
    let other = app.create("other", "kept").await;
    request_deletion(
        &app,
        "tenants/acme/deletions/0190aaaa-0000-7000-8000-000000000002",
        DeletionScope::Tenant,
        "tenants/acme",
    )
    .await;
    let receipts = wait_for(&app.jetstream, "TM_DELETION", "tm.acme.deletion.receipt", 1).await;
    let receipt = DeletionReceipt::decode(receipts[0].payload.as_ref()).unwrap();
    assert_eq!(receipt.scope(), DeletionScope::Tenant);
    assert_eq!(receipt.deleted.get("rows:datasets"), Some(&2));
    assert_eq!(receipt.deleted.get("objects"), Some(&4));
    assert!(receipt.deks_destroyed >= 1);
    assert!(!receipt.residue_found, "{:?}", receipt.residue);

    let listed = app
        .client
        .list_datasets(ListDatasetsRequest {
            parent: "tenants/acme".into(),
            ..ListDatasetsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.datasets.is_empty());
    let live_deks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ingest.deks WHERE tenant = 'acme' AND wrapped IS NOT NULL",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(live_deks, 0);
    assert!(
        app.stored_files()
            .iter()
            .all(|p| !p.to_string_lossy().contains("/acme/"))
    );
    // Another tenant is untouched.
    app.client_of("other")
        .await
        .get_dataset(GetDatasetRequest { name: other.name })
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn datasets_live_encrypted_in_s3_and_are_deleted_there() {
    let mut app = spawn_app_with(Backend::S3).await;
    let dataset = app.create("acme", "iris").await;
    let uploaded = app
        .upload(&dataset.name, DatasetFormat::Csv, "iris.csv", &iris())
        .await
        .unwrap();
    assert_eq!(uploaded.row_count, 150);
    let files = app.stored_files();
    assert!(
        files
            .iter()
            .any(|p| p.to_string_lossy().contains("ingest/acme/datasets/")),
        "{files:?}"
    );
    let plain = iris();
    let needle = &plain[..40];
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{file:?} holds plaintext"
        );
    }
    request_deletion(
        &app,
        "tenants/acme/deletions/0190aaaa-0000-7000-8000-000000000003",
        DeletionScope::Dataset,
        &dataset.name,
    )
    .await;
    let receipts = wait_for(&app.jetstream, "TM_DELETION", "tm.acme.deletion.receipt", 1).await;
    let receipt = DeletionReceipt::decode(receipts[0].payload.as_ref()).unwrap();
    assert_eq!(receipt.deleted.get("objects"), Some(&2));
    assert!(!receipt.residue_found);
    assert!(
        app.stored_files()
            .iter()
            .all(|p| !p.to_string_lossy().contains("ingest/acme/datasets/"))
    );
    app.stop().await;
}
