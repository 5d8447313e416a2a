//! JSONL and Parquet uploads (issue #6): read back by ReadRows with the same schema and rows as
//! the equivalent CSV; bad files refused with a stable code naming the line and field (JSONL) or
//! the column (Parquet), nothing stored.

mod common;

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, BinaryArray, Float64Array, Int64Array, StringArray, StructArray};
use arrow_schema::{DataType, Field};
use common::{TestApp, iris, parquet_file, spawn_app};
use futures::StreamExt;
use tonic::Code;
use trustmesh_proto::v1::{
    ColumnData, DatasetFormat, DatasetState, GetDatasetRequest, ReadRowsRequest, Schema,
};

/// The iris fixture as JSONL: one object per row, fields in the CSV's column order, numbers as
/// JSON numbers (written as the CSV spells them), labels as strings.
fn iris_jsonl(csv: &[u8]) -> Vec<u8> {
    let mut reader = csv::Reader::from_reader(csv);
    let header = reader.headers().unwrap().clone();
    let mut out = String::new();
    for record in reader.records() {
        let fields: Vec<String> = header
            .iter()
            .zip(record.unwrap().iter())
            .map(|(name, value)| {
                let value = if value.parse::<f64>().is_ok() {
                    value.to_owned()
                } else {
                    serde_json::to_string(value).unwrap()
                };
                format!("{}: {value}", serde_json::to_string(name).unwrap())
            })
            .collect();
        out.push_str(&format!("{{{}}}\n", fields.join(", ")));
    }
    out.into_bytes()
}

/// The iris fixture as Parquet: `row_id` 64-bit integers, the features doubles, labels strings.
fn iris_parquet(csv: &[u8]) -> Vec<u8> {
    let mut reader = csv::Reader::from_reader(csv);
    let header = reader.headers().unwrap().clone();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let columns = header
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let cells = records.iter().map(|r| &r[i]);
            let array: ArrayRef = match name {
                "row_id" => Arc::new(Int64Array::from_iter_values(
                    cells.map(|c| c.parse().unwrap()),
                )),
                "label" => Arc::new(StringArray::from_iter_values(cells)),
                _ => Arc::new(Float64Array::from_iter_values(
                    cells.map(|c| c.parse().unwrap()),
                )),
            };
            (name, array)
        })
        .collect();
    parquet_file(columns)
}

/// Uploads `bytes`, then returns the dataset's format, schema and every row (one ReadRows batch).
async fn upload_and_read(
    app: &mut TestApp,
    format: DatasetFormat,
    filename: &str,
    bytes: &[u8],
) -> (DatasetFormat, Schema, Vec<ColumnData>) {
    let dataset = app.create("acme", filename).await;
    let uploaded = app
        .upload(&dataset.name, format, filename, bytes)
        .await
        .unwrap_or_else(|e| panic!("{filename}: {e:?}"));
    assert_eq!(uploaded.state(), DatasetState::Ready, "{filename}");
    let got = app
        .client
        .get_dataset(GetDatasetRequest {
            name: dataset.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut stream = app
        .client
        .read_rows(ReadRowsRequest {
            name: dataset.name,
            ..ReadRowsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let batch = stream.next().await.unwrap().unwrap().batch.unwrap();
    assert!(stream.next().await.is_none(), "{filename}: one batch");
    (got.format(), got.schema.unwrap(), batch.columns)
}

#[tokio::test]
async fn jsonl_and_parquet_read_back_as_the_equivalent_csv() {
    let mut app = spawn_app().await;
    let csv = iris();
    let (format, schema, rows) =
        upload_and_read(&mut app, DatasetFormat::Csv, "iris.csv", &csv).await;
    assert_eq!(format, DatasetFormat::Csv);
    assert_eq!(schema.columns.len(), 6);
    assert_eq!(schema.id_column, "row_id");
    for (format, filename, bytes) in [
        (DatasetFormat::Jsonl, "iris.jsonl", iris_jsonl(&csv)),
        (DatasetFormat::Parquet, "iris.parquet", iris_parquet(&csv)),
    ] {
        let got = upload_and_read(&mut app, format, filename, &bytes).await;
        assert_eq!(got.0, format);
        assert_eq!(got.1, schema, "{filename}");
        assert_eq!(got.2, rows, "{filename}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_jsonl_field_of_image_data_uris_is_stored_as_an_image_column() {
    use base64::Engine as _;
    use trustmesh_proto::v1::ColumnType;
    use trustmesh_proto::v1::column_data::Values;

    let mut app = spawn_app().await;
    let images = trustmesh_quality::modality::synth::bench_images(3, 16, 1);
    let jsonl: String = images
        .iter()
        .enumerate()
        .map(|(row, image)| {
            let payload = base64::engine::general_purpose::STANDARD.encode(image);
            format!("{{\"row_id\": {row}, \"label\": \"a\", \"photo\": \"data:image/png;base64,{payload}\"}}\n")
        })
        .collect();
    let (_, schema, rows) = upload_and_read(
        &mut app,
        DatasetFormat::Jsonl,
        "photos.jsonl",
        jsonl.as_bytes(),
    )
    .await;
    let photo = schema.columns.iter().find(|c| c.name == "photo").unwrap();
    assert_eq!(photo.r#type(), ColumnType::Image);
    let stored = rows.iter().find(|c| c.name == "photo").unwrap();
    let Some(Values::Images(stored)) = &stored.values else {
        panic!("the photos are stored as image bytes");
    };
    assert_eq!(stored.values, images);
    app.stop().await;
}

#[tokio::test]
async fn bad_jsonl_and_parquet_files_name_line_field_or_column_and_store_nothing() {
    let mut app = spawn_app().await;
    let good = parquet_file(vec![(
        "a",
        Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
    )]);
    let mut tags = ListBuilder::new(StringBuilder::new());
    tags.values().append_value("red");
    tags.append(true);
    let point = StructArray::from(vec![(
        Arc::new(Field::new("x", DataType::Float64, false)),
        Arc::new(Float64Array::from(vec![0.5])) as ArrayRef,
    )]);
    let id = || Arc::new(Int64Array::from(vec![1])) as ArrayRef;
    let cases: Vec<(DatasetFormat, Vec<u8>, &str, &[&str])> = vec![
        (
            DatasetFormat::Jsonl,
            b"{\"a\": 1}\n{\"a\": 2,\n{\"a\": 3}\n".to_vec(),
            "JSONL_INVALID_LINE",
            &["line 2", "not valid JSON"],
        ),
        (
            DatasetFormat::Jsonl,
            b"{\"a\": 1}\n\n[1, 2]\n".to_vec(),
            "JSONL_INVALID_LINE",
            &["line 3", "not a JSON object"],
        ),
        (
            DatasetFormat::Jsonl,
            b"{\"a\": 1, \"b\": \"x\"}\n{\"a\": null}\n{\"a\": \"seven\"}\n".to_vec(),
            "JSONL_MIXED_TYPES",
            &["line 3", "field \"a\"", "a string", "line 1 holds a number"],
        ),
        (
            DatasetFormat::Jsonl,
            b"{\"a\": 1, \"o\": {\"k\": 2}}\n".to_vec(),
            "JSONL_UNSUPPORTED_TYPE",
            &["line 1", "field \"o\""],
        ),
        (
            DatasetFormat::Jsonl,
            b"{\"a\": 1}\n{\"a\": 2, \"tags\": [\"x\"]}\n".to_vec(),
            "JSONL_UNSUPPORTED_TYPE",
            &["line 2", "field \"tags\""],
        ),
        (
            DatasetFormat::Jsonl,
            b"{\"a\": 1, \"photo\": \"data:image/png;base64,@@@\"}\n".to_vec(),
            "JSONL_INVALID_IMAGE",
            &["line 1", "field \"photo\"", "not valid base64"],
        ),
        (
            DatasetFormat::Parquet,
            b"a,b\n1,2\n".to_vec(),
            "PARQUET_CORRUPT",
            &["not a readable Parquet file"],
        ),
        (
            DatasetFormat::Parquet,
            good[..good.len() / 2].to_vec(),
            "PARQUET_CORRUPT",
            &["not a readable Parquet file"],
        ),
        (
            DatasetFormat::Parquet,
            parquet_file(vec![("id", id()), ("tags", Arc::new(tags.finish()))]),
            "PARQUET_UNSUPPORTED_TYPE",
            &["column \"tags\"", "List"],
        ),
        (
            DatasetFormat::Parquet,
            parquet_file(vec![("id", id()), ("point", Arc::new(point))]),
            "PARQUET_UNSUPPORTED_TYPE",
            &["column \"point\"", "Struct"],
        ),
        (
            DatasetFormat::Parquet,
            parquet_file(vec![(
                "blob",
                Arc::new(BinaryArray::from_vec(vec![b"\x00\x01"])) as ArrayRef,
            )]),
            // A binary column must hold encoded images.
            "UNSUPPORTED_BINARY_COLUMN",
            &["column \"blob\"", "row 1"],
        ),
    ];
    for (format, bytes, code, fragments) in cases {
        let dataset = app.create("acme", "bad").await;
        let status = app
            .upload(&dataset.name, format, "bad", &bytes)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{code}: {status:?}");
        assert!(status.message().starts_with(code), "{code}: {status:?}");
        for fragment in fragments {
            assert!(
                status.message().contains(fragment),
                "{fragment}: {status:?}"
            );
        }
        // Rejections name positions, never values.
        assert!(!status.message().contains("seven"), "{status:?}");
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
    assert_eq!(app.stored_files(), Vec::<std::path::PathBuf>::new());
    app.stop().await;
}
