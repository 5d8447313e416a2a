//! Image archive uploads (issue #6): a folder-per-class zip becomes one row per file (`path`,
//! `label` = its folder, `image` = its bytes), read back by ReadRows in batches; a file that is no
//! image keeps its row; no image's bytes reach storage in the clear; an image declaring too many
//! pixels refuses the upload naming the file. A table archive (a table at the root naming each
//! row's image by its path) becomes one row per table row, its bad paths kept as missing images.

mod common;

use std::io::Write;
use std::path::PathBuf;

use common::spawn_app;
use futures::StreamExt;
use tonic::Code;
use trustmesh_proto::v1::column_data::Values;
use trustmesh_proto::v1::{ColumnType, DatasetFormat, DatasetState, Modality, ReadRowsRequest};
use zip::write::SimpleFileOptions;

/// The quality engine's image fixtures (folder per class), sorted by path.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../libs/quality/fixtures/modality/images");
    let mut files = Vec::new();
    for class in std::fs::read_dir(&root).unwrap() {
        let class = class.unwrap().path();
        let label = class.file_name().unwrap().to_string_lossy().into_owned();
        for file in std::fs::read_dir(&class).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            files.push((format!("{label}/{name}"), std::fs::read(&file).unwrap()));
        }
    }
    files.sort();
    files
}

fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        writer
            .start_file(name.as_str(), SimpleFileOptions::default())
            .unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A PNG declaring `w`×`h` grey pixels: its signature, header, an empty data chunk and its end.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let crc32 = |bytes: &[u8]| {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    };
    let mut header = w.to_be_bytes().to_vec();
    header.extend(h.to_be_bytes());
    header.extend([8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", header),
        (b"IDAT", Vec::new()),
        (b"IEND", Vec::new()),
    ] {
        png.extend(u32::try_from(data.len()).unwrap().to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend(data);
        png.extend(&chunk);
        png.extend(crc32(&chunk).to_be_bytes());
    }
    png
}

#[tokio::test]
async fn an_image_archive_is_one_row_per_file_stored_encrypted() {
    let mut app = spawn_app().await;
    let mut files = fixtures();
    let canary = b"CANARY-7f3a9c-not-an-image-but-kept".to_vec();
    files.push(("cat/zz_notes.txt".to_owned(), canary.clone()));
    files.push(("dog/zz_broken.png".to_owned(), files[0].1[..40].to_vec()));
    files.sort();
    let dataset = app.create("acme", "images").await;
    let uploaded = app
        .upload(
            &dataset.name,
            DatasetFormat::ImageZip,
            "images.zip",
            &zip_of(&files),
        )
        .await
        .unwrap();
    assert_eq!(uploaded.state(), DatasetState::Ready);
    assert_eq!(uploaded.modality(), Modality::Image);
    assert_eq!(uploaded.format(), DatasetFormat::ImageZip);
    assert_eq!(uploaded.row_count, files.len() as u64);
    let schema = uploaded.schema.unwrap();
    let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["path", "label", "image"]);
    assert_eq!(schema.columns[2].r#type(), ColumnType::Image);
    assert_eq!(schema.id_column, "path");

    let mut stream = app
        .client
        .read_rows(ReadRowsRequest {
            name: dataset.name.clone(),
            batch_rows: 50,
            ..ReadRowsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (mut paths, mut labels, mut images, mut batches) = (vec![], vec![], vec![], 0);
    while let Some(message) = stream.next().await {
        let batch = message.unwrap().batch.unwrap();
        batches += 1;
        for column in batch.columns {
            match (column.name.as_str(), column.values) {
                ("path", Some(Values::Strings(v))) => paths.extend(v.values),
                ("label", Some(Values::Strings(v))) => labels.extend(v.values),
                ("image", Some(Values::Images(v))) => images.extend(v.values),
                (name, values) => panic!("unexpected column {name}: {values:?}"),
            }
        }
    }
    assert_eq!(batches, files.len().div_ceil(50));
    let expected_paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, expected_paths);
    for ((path, bytes), (label, image)) in files.iter().zip(labels.iter().zip(&images)) {
        assert_eq!(path.split('/').next().unwrap(), label);
        assert_eq!(bytes, image, "{path}");
    }

    // The non-image file kept its row; no stored object holds its bytes in the clear.
    assert!(images.contains(&canary));
    for file in app.stored_files() {
        let stored = std::fs::read(&file).unwrap();
        assert!(
            !stored.windows(canary.len()).any(|w| w == canary.as_slice()),
            "{} holds an archive file in the clear",
            file.display()
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn an_image_over_the_pixel_limit_refuses_the_upload_naming_it() {
    let mut app = spawn_app().await;
    let mut files = fixtures();
    files.truncate(3);
    files.push(("cat/huge.png".to_owned(), png_header(100_000, 100_000)));
    let dataset = app.create("acme", "bomb").await;
    let status = app
        .upload(
            &dataset.name,
            DatasetFormat::ImageZip,
            "bomb.zip",
            &zip_of(&files),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("IMAGE_TOO_LARGE")
            && status.message().contains("cat/huge.png")
            && status.message().contains("100000×100000"),
        "{status:?}"
    );
    let flat = zip_of(&[("loose.png".to_owned(), png_header(2, 2))]);
    let dataset = app.create("acme", "flat").await;
    let status = app
        .upload(&dataset.name, DatasetFormat::ImageZip, "flat.zip", &flat)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("ARCHIVE_NOT_FOLDER_PER_CLASS")
            && status.message().contains("loose.png"),
        "{status:?}"
    );
    assert!(app.stored_files().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_table_archive_is_one_row_per_table_row_with_bad_paths_missing() {
    let mut app = spawn_app().await;
    let files = fixtures();
    let mut csv = String::from("image,label,camera\n");
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, (path, bytes)) in files.iter().take(6).enumerate() {
        let label = path.split('/').next().unwrap();
        csv.push_str(&format!("pics/{path},{label},cam{}\n", i % 2));
        entries.push((format!("pics/{path}"), bytes.clone()));
    }
    csv.push_str("pics/cat/gone.png,cat,cam0\n../../etc/passwd,dog,cam1\n");
    entries.push(("metadata.csv".to_owned(), csv.into_bytes()));
    let dataset = app.create("acme", "table").await;
    let uploaded = app
        .upload(
            &dataset.name,
            DatasetFormat::ImageZip,
            "table.zip",
            &zip_of(&entries),
        )
        .await
        .unwrap();
    assert_eq!(uploaded.state(), DatasetState::Ready);
    assert_eq!(uploaded.modality(), Modality::Image);
    assert_eq!(uploaded.row_count, 8);
    let schema = uploaded.schema.unwrap();
    let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["path", "image", "label", "camera"]);
    assert_eq!(schema.columns[1].r#type(), ColumnType::Image);
    assert_eq!(schema.columns[1].null_count, 2);
    assert_eq!(schema.id_column, "path");

    let mut stream = app
        .client
        .read_rows(ReadRowsRequest {
            name: dataset.name.clone(),
            ..ReadRowsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let batch = stream.next().await.unwrap().unwrap().batch.unwrap();
    let image = batch.columns.iter().find(|c| c.name == "image").unwrap();
    assert_eq!(
        image.valid,
        [true, true, true, true, true, true, false, false]
    );
    let Some(Values::Images(images)) = &image.values else {
        panic!("images are bytes");
    };
    for (i, (_, bytes)) in entries.iter().take(6).enumerate() {
        assert_eq!(&images.values[i], bytes);
    }

    // A table naming no file of the archive refuses the upload, naming the table.
    let nowhere = zip_of(&[
        ("m.csv".to_owned(), b"image,label\nx.png,cat\n".to_vec()),
        ("a.png".to_owned(), png_header(2, 2)),
    ]);
    let dataset = app.create("acme", "nowhere").await;
    let status = app
        .upload(&dataset.name, DatasetFormat::ImageZip, "n.zip", &nowhere)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("ARCHIVE_NO_PATH_COLUMN")
            && status.message().contains("m.csv"),
        "{status:?}"
    );
    app.stop().await;
}
