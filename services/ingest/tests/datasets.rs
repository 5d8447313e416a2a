//! DatasetService end to end: upload → Get → ReadRows → events and audit; bad input; canary;
//! idempotency and limits. (Keys, scopes and tenant isolation: `auth.rs`.)

mod common;

use std::collections::HashMap;

use common::{iris, read_all, spawn_app, wait_for};
use futures::StreamExt;
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::Code;
use trustmesh_proto::events::v1::{ActorType, AuditEvent, DatasetIngested, Outcome};
use trustmesh_proto::v1::column_data::Values;
use trustmesh_proto::v1::{
    ColumnRole, ColumnType, DatasetFormat, DatasetState, GetDatasetRequest, ListDatasetsRequest,
    ReadRowsRequest,
};
use trustmesh_testkit::canary::Canary;

fn expected_iris() -> (Vec<i64>, Vec<f64>, Vec<String>) {
    let bytes = iris();
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let mut ids = Vec::new();
    let mut f0 = Vec::new();
    let mut labels = Vec::new();
    for record in reader.records() {
        let record = record.unwrap();
        ids.push(record[0].parse().unwrap());
        f0.push(record[1].parse().unwrap());
        labels.push(record[5].to_owned());
    }
    (ids, f0, labels)
}

#[tokio::test]
async fn an_uploaded_csv_is_described_read_back_in_order_announced_and_audited() {
    let mut app = spawn_app().await;
    let created = app.create("acme", "iris").await;
    assert_eq!(created.state(), DatasetState::AwaitingUpload);
    let bytes = iris();
    let uploaded = app
        .upload(&created.name, DatasetFormat::Csv, "iris.csv", &bytes)
        .await
        .expect("upload");
    assert_eq!(uploaded.state(), DatasetState::Ready);
    assert_eq!(uploaded.row_count, 150);
    assert_eq!(uploaded.size_bytes, bytes.len() as u64);
    assert_eq!(uploaded.sha256, hex::encode(Sha256::digest(&bytes)));

    let got = app
        .client
        .get_dataset(GetDatasetRequest {
            name: created.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.display_name, "iris");
    assert_eq!(got.filename, "iris.csv");
    assert_eq!(got.row_count, 150);
    let schema = got.schema.unwrap();
    let columns: Vec<(&str, ColumnType, ColumnRole)> = schema
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.r#type(), c.role()))
        .collect();
    assert_eq!(
        columns,
        [
            ("row_id", ColumnType::Integer, ColumnRole::Id),
            ("f0", ColumnType::Float, ColumnRole::Numeric),
            ("f1", ColumnType::Float, ColumnRole::Numeric),
            ("f2", ColumnType::Float, ColumnRole::Numeric),
            ("f3", ColumnType::Float, ColumnRole::Numeric),
            ("label", ColumnType::String, ColumnRole::Categorical),
        ]
    );
    assert_eq!(schema.id_column, "row_id");
    assert_eq!(schema.columns[5].distinct_count, 3);

    // Every row, in order, in batches of 64.
    let mut stream = app
        .client
        .read_rows(ReadRowsRequest {
            name: created.name.clone(),
            batch_rows: 64,
            ..ReadRowsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (mut ids, mut f0, mut labels, mut starts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while let Some(response) = stream.next().await {
        let batch = response.unwrap().batch.unwrap();
        starts.push(batch.start_row);
        assert_eq!(batch.columns.len(), 6);
        for column in batch.columns {
            match (column.name.as_str(), column.values.unwrap()) {
                ("row_id", Values::Integers(v)) => ids.extend(v.values),
                ("f0", Values::Floats(v)) => f0.extend(v.values),
                ("label", Values::Strings(v)) => labels.extend(v.values),
                (name, _) => assert!(["f1", "f2", "f3"].contains(&name), "{name}"),
            }
        }
    }
    assert_eq!(starts, [0, 64, 128]);
    assert_eq!((ids, f0, labels), expected_iris());

    // A window of one column.
    let mut window = app
        .client
        .read_rows(ReadRowsRequest {
            name: created.name.clone(),
            columns: vec!["label".into()],
            start_row: 48,
            row_count: 4,
            batch_rows: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let batch = window.next().await.unwrap().unwrap().batch.unwrap();
    assert!(window.next().await.is_none());
    assert_eq!(
        (batch.start_row, batch.row_count, batch.columns.len()),
        (48, 4, 1)
    );
    let Some(Values::Strings(labels)) = batch.columns[0].values.clone() else {
        panic!("labels are strings");
    };
    assert_eq!(labels.values, expected_iris().2[48..52]);

    // Uploading twice is refused.
    let again = app
        .upload(&created.name, DatasetFormat::Csv, "iris.csv", &bytes)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // Pages, newest first, tokens bound to tenant and query.
    let second = app.create("acme", "second").await;
    let page = app
        .client
        .list_datasets(ListDatasetsRequest {
            parent: "tenants/acme".into(),
            page_size: 1,
            ..ListDatasetsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.datasets[0].name, second.name);
    assert!(!page.next_page_token.is_empty());
    let next = app
        .client
        .list_datasets(ListDatasetsRequest {
            parent: "tenants/acme".into(),
            page_size: 1,
            page_token: page.next_page_token.clone(),
            ..ListDatasetsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.datasets[0].name, created.name);
    assert!(next.next_page_token.is_empty());
    // Reused by another tenant (with its own key) or for another filter.
    for (tenant, state) in [("other", 0), ("acme", DatasetState::Ready as i32)] {
        let parent = format!("tenants/{tenant}");
        let reused = app
            .client_of(tenant)
            .await
            .list_datasets(ListDatasetsRequest {
                parent: parent.clone(),
                page_size: 1,
                page_token: page.next_page_token.clone(),
                state,
            })
            .await
            .unwrap_err();
        assert_eq!(reused.code(), Code::InvalidArgument, "{parent}");
    }

    // One dataset.ingested, with ids and counts only.
    let ingested = wait_for(&app.jetstream, "TM_DATASET", "tm.acme.dataset.>", 1).await;
    assert_eq!(ingested.len(), 1);
    assert_eq!(ingested[0].subject.as_str(), "tm.acme.dataset.ingested");
    assert!(
        ingested[0]
            .headers
            .as_ref()
            .unwrap()
            .get("Nats-Msg-Id")
            .is_some()
    );
    let event = DatasetIngested::decode(ingested[0].payload.as_ref()).unwrap();
    assert_eq!(event.dataset, created.name);
    assert_eq!((event.row_count, event.column_count), (150, 6));

    // An audit event per call: create x2, upload x2 (one failed), get, read x2, list x3 (one failed; the other failure is under tenant `other`).
    let audit = wait_for(&app.jetstream, "TM_AUDIT", "tm.acme.audit.ingest", 10).await;
    let mut seen: HashMap<(String, i32), usize> = HashMap::new();
    for message in &audit {
        let event = AuditEvent::decode(message.payload.as_ref()).unwrap();
        assert_eq!(event.meta.as_ref().unwrap().tenant, "acme");
        assert!(!event.request_id.is_empty());
        // Every event names the calling key.
        assert_eq!(
            (event.actor_type(), event.actor_id.as_str()),
            (ActorType::ApiKey, app.key.actor_id().as_str())
        );
        *seen
            .entry((event.action.clone(), event.outcome))
            .or_default() += 1;
    }
    let allowed = Outcome::Allowed as i32;
    let error = Outcome::Error as i32;
    let expected: HashMap<(String, i32), usize> = [
        (("datasets.create".into(), allowed), 2),
        (("datasets.upload".into(), allowed), 1),
        (("datasets.upload".into(), error), 1),
        (("datasets.get".into(), allowed), 1),
        (("datasets.rows.read".into(), allowed), 2),
        (("datasets.list".into(), allowed), 2),
        (("datasets.list".into(), error), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(seen, expected);
    app.stop().await;
}

#[tokio::test]
async fn bad_uploads_are_invalid_argument_naming_row_and_column_and_store_nothing() {
    let mut app = spawn_app().await;
    let cases: [(&[u8], &str, &[&str]); 6] = [
        (
            b"a,b,c\n1,2,3\n4,5\n",
            "CSV_JAGGED_ROW",
            &["line 3", "3 columns"],
        ),
        (b"", "EMPTY_FILE", &["empty"]),
        (
            b"a,b\n1,2\n3,\xff\xfe\n",
            "UNSUPPORTED_ENCODING",
            &["line 3", "\"b\""],
        ),
        (
            b"a,b,a\n1,2,3\n",
            "CSV_DUPLICATE_HEADER",
            &["\"a\"", "columns 1 and 3"],
        ),
        (b"a,,c\n1,2,3\n", "CSV_EMPTY_HEADER", &["column 2"]),
        (b"a,b\n", "NO_ROWS", &["no data rows"]),
    ];
    for (bytes, code, fragments) in cases {
        let dataset = app.create("acme", "bad").await;
        let status = app
            .upload(&dataset.name, DatasetFormat::Csv, "bad.csv", bytes)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{code}: {status:?}");
        assert!(status.message().starts_with(code), "{status:?}");
        for fragment in fragments {
            assert!(
                status.message().contains(fragment),
                "{fragment}: {status:?}"
            );
        }
        let after = app
            .client
            .get_dataset(GetDatasetRequest {
                name: dataset.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(after.state(), DatasetState::AwaitingUpload, "{code}");
    }
    // JSONL and Parquet are read (tests/formats.rs), image archives too (tests/images.rs); a zip
    // that is cut short is not.
    let dataset = app.create("acme", "zip").await;
    let status = app
        .upload(
            &dataset.name,
            DatasetFormat::ImageZip,
            "x.zip",
            b"PK\x03\x04",
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("ARCHIVE_UNREADABLE: image archive: not a readable zip archive"),
        "{status:?}"
    );

    // Nothing stored: no object file, no object row, no dataset event; failed uploads are audited.
    assert_eq!(app.stored_files(), Vec::<std::path::PathBuf>::new());
    let objects: i64 = sqlx::query_scalar("SELECT count(*) FROM ingest.objects")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(objects, 0);
    let audit = wait_for(
        &app.jetstream,
        "TM_AUDIT",
        "tm.acme.audit.ingest",
        7 + 7 + 6,
    )
    .await;
    let failed_uploads = audit
        .iter()
        .map(|m| AuditEvent::decode(m.payload.as_ref()).unwrap())
        .filter(|e| e.action == "datasets.upload" && e.outcome() == Outcome::Error)
        .count();
    assert_eq!(failed_uploads, 7);
    assert!(
        read_all(&app.jetstream, "TM_DATASET", "tm.*.dataset.>")
            .await
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_canary_in_the_csv_appears_in_no_table_no_object_and_no_stream() {
    let mut app = spawn_app().await;
    let canary = Canary::new();
    let dataset = app.create("acme", canary.as_str()).await;
    let csv = format!("id,{canary},label\n1,{canary},a\n2,x,b\n");
    app.upload(
        &dataset.name,
        DatasetFormat::Csv,
        &format!("{canary}.csv"),
        csv.as_bytes(),
    )
    .await
    .expect("upload");
    wait_for(&app.jetstream, "TM_DATASET", "tm.acme.dataset.ingested", 1).await;
    wait_for(&app.jetstream, "TM_AUDIT", "tm.acme.audit.ingest", 2).await;

    // It was stored (encrypted): it reads back.
    let mut rows = app
        .client
        .read_rows(ReadRowsRequest {
            name: dataset.name.clone(),
            columns: vec![canary.to_string()],
            ..ReadRowsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let batch = rows.next().await.unwrap().unwrap().batch.unwrap();
    let Some(Values::Strings(values)) = batch.columns[0].values.clone() else {
        panic!("strings");
    };
    assert_eq!(values.values, [canary.to_string(), "x".to_owned()]);

    assert_eq!(canary.scan_postgres(app.db.pool()).await.unwrap(), []);
    assert_eq!(canary.scan_dir(&app.objects_dir()).unwrap(), []);
    assert_eq!(canary.scan_dir(&app.nats.store_dir()).unwrap(), []);
    app.stop().await;
}

#[tokio::test]
async fn create_is_idempotent_by_request_id_and_limits_are_resource_exhausted() {
    use trustmesh_proto::v1::upload_dataset_request::Payload;
    use trustmesh_proto::v1::{CreateDatasetRequest, UploadDatasetRequest, UploadMetadata};

    let mut app = spawn_app().await;
    let request = CreateDatasetRequest {
        parent: "tenants/acme".into(),
        display_name: "once".into(),
        description: String::new(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let first = app
        .client
        .create_dataset(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app
        .client
        .create_dataset(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.name, again.name);
    let bad_id = app
        .client
        .create_dataset(CreateDatasetRequest {
            request_id: "not-a-uuid".into(),
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);

    // Announced as larger than the limit: refused before any chunk is read.
    let messages = vec![
        UploadDatasetRequest {
            payload: Some(Payload::Metadata(UploadMetadata {
                dataset: first.name.clone(),
                format: DatasetFormat::Csv.into(),
                filename: "big.csv".into(),
                size_bytes: 1 << 40,
                ..UploadMetadata::default()
            })),
        },
        UploadDatasetRequest {
            payload: Some(Payload::Chunk(b"a\n1\n".to_vec())),
        },
    ];
    let status = app
        .client
        .upload_dataset(tokio_stream::iter(messages))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    // A path as file name is refused.
    let status = app
        .upload(&first.name, DatasetFormat::Csv, "../etc/passwd", b"a\n1\n")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
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
    assert_eq!(listed.datasets[0].state(), DatasetState::AwaitingUpload);
    app.stop().await;
}

#[tokio::test]
async fn the_admin_port_reports_ready_once_built() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let mut answers = Vec::new();
    for path in ["/livez", "/readyz", "/metrics"] {
        let mut conn = tokio::net::TcpStream::connect(app.admin).await.unwrap();
        conn.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).await.unwrap();
        answers.push(response);
    }
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert!(answers[1].contains("ready"), "{}", answers[1]);
    app.stop().await;
}
