//! The bad-input corpus (issue #12, part 3): 100+ malformed, hostile or merely unusual uploads and
//! requests, each answered with a clear error (a gRPC code, and for file content a stable error
//! code naming the line and the column) or a documented handling — never a panic, a hang or an
//! effect on another tenant. Meanwhile tenant `beta` uploads a good file at every step, which
//! must succeed each time, and the service still serves at the end.
//!
//! Documented handlings (what is accepted, and how):
//! - a UTF-8 byte-order mark is dropped; CRLF line ends are read as LF; quoted fields may hold
//!   delimiters, quotes (`""`) and newlines; `NaN`, `inf`, empty and very long (1 MiB) fields are
//!   values like any other (the analysis decides what they mean);
//! - a file of another delimiter is one column unless `csv.delimiter` says otherwise (then it
//!   parses); a label column with one class or only nulls is accepted here and refused, with its
//!   reason, by the analysis;
//! - column names are trimmed, so ` a` and `a` are the same (duplicate) name; `A` and `a` differ;
//! - a quote left open takes the rest of the file into its field (CSV has no way to tell where
//!   it should have closed); the row count in the answer shows it;
//! - `size_bytes` is checked against the upload limit before any byte arrives; the file's own
//!   length is what is stored (integrity is `sha256`'s job: a mismatch is `DATA_LOSS`);
//! - another tenant's dataset is `NOT_FOUND`, exactly as one that does not exist;
//! - JSONL: blank lines are skipped, a field missing from a line (or `null`) is an empty cell, and
//!   integers and floats may share a field; Parquet: values are read as the CSV would spell them.

mod common;

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Int64Array, StringArray};
use common::{parquet_file, spawn_app};
use tonic::Code;
use trustmesh_proto::v1::{
    CreateDatasetRequest, CsvOptions, Dataset, DatasetFormat, DatasetState, GetDatasetRequest,
    ListDatasetsRequest, UploadDatasetRequest, UploadMetadata, upload_dataset_request::Payload,
};

/// What the service must answer.
#[derive(Debug, Clone)]
enum Expect {
    /// Refused with `code`, a message starting with `prefix` and holding each fragment.
    Refused {
        code: Code,
        prefix: &'static str,
        fragments: Vec<String>,
    },
    /// Accepted with this many rows and columns.
    Accepted { rows: u64, columns: usize },
}

fn refused(prefix: &'static str, fragments: &[&str]) -> Expect {
    Expect::Refused {
        code: Code::InvalidArgument,
        prefix,
        fragments: fragments.iter().map(|f| (*f).to_owned()).collect(),
    }
}

fn accepted(rows: u64, columns: usize) -> Expect {
    Expect::Accepted { rows, columns }
}

/// One upload of the corpus.
struct Case {
    name: String,
    bytes: Vec<u8>,
    format: DatasetFormat,
    csv: Option<CsvOptions>,
    expect: Expect,
}

/// A CSV upload.
fn case(name: impl Into<String>, bytes: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        bytes: bytes.into(),
        format: DatasetFormat::Csv,
        csv: None,
        expect,
    }
}

/// A JSONL upload.
fn jsonl(name: &str, bytes: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        format: DatasetFormat::Jsonl,
        ..case(format!("JSONL: {name}"), bytes, expect)
    }
}

/// A Parquet upload.
fn parquet(name: &str, bytes: Vec<u8>, expect: Expect) -> Case {
    Case {
        format: DatasetFormat::Parquet,
        ..case(format!("Parquet: {name}"), bytes, expect)
    }
}

/// `rows` rows of `a,b,c` with the header.
fn grid(rows: usize) -> String {
    let mut csv = String::from("a,b,c\n");
    for row in 0..rows {
        csv.push_str(&format!("{row},x{row},{}.5\n", row * 2));
    }
    csv
}

/// The file uploads of the corpus.
#[allow(clippy::too_many_lines)]
fn file_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // Ragged rows, short and long, on every line of a small file.
    for good in 0..10 {
        for (what, row) in [("short", "1,2"), ("long", "1,2,3,4")] {
            let bytes = format!("{}{row}\n", grid(good));
            let line = format!("line {}", good + 2);
            cases.push(case(
                format!("ragged {what} row at {line}"),
                bytes,
                refused("CSV_JAGGED_ROW", &[&line, "3 columns"]),
            ));
        }
    }
    // Invalid UTF-8 in every cell of a small file, and in the header.
    for row in 0..5 {
        for (column, name) in ["a", "b", "c"].iter().enumerate() {
            let mut bytes = grid(5).into_bytes();
            let line_start = bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .nth(row)
                .map(|(i, _)| i + 1)
                .unwrap();
            let cell_start = line_start
                + bytes[line_start..]
                    .split(|b| *b == b',')
                    .take(column)
                    .map(|cell| cell.len() + 1)
                    .sum::<usize>();
            bytes.insert(cell_start, 0xff);
            let line = format!("line {}", row + 2);
            let quoted = format!("\"{name}\"");
            cases.push(case(
                format!("invalid UTF-8 at {line} column {name}"),
                bytes,
                refused("UNSUPPORTED_ENCODING", &[&line, &quoted]),
            ));
        }
    }
    cases.push(case(
        "invalid UTF-8 in the header",
        b"a,\xffb,c\n1,2,3\n".to_vec(),
        refused("UNSUPPORTED_ENCODING", &["line 1"]),
    ));
    cases.push(case(
        "Latin-1 text",
        b"name,city\nJos\xe9,M\xe1laga\n".to_vec(),
        refused("UNSUPPORTED_ENCODING", &["line 2", "\"name\""]),
    ));
    cases.push(case(
        "UTF-16 with its byte-order mark",
        b"\xff\xfea\x00,\x00b\x00\n\x001\x00,\x002\x00\n\x00".to_vec(),
        refused("UNSUPPORTED_ENCODING", &["line 1"]),
    ));
    // Empty and header-only files.
    for (name, bytes) in [
        ("empty file", &b""[..]),
        ("only spaces and newlines", b" \n\n \r\n\t\n"),
        ("only a byte-order mark", b"\xEF\xBB\xBF"),
    ] {
        cases.push(case(
            name,
            bytes.to_vec(),
            refused("EMPTY_FILE", &["empty"]),
        ));
    }
    for (name, bytes) in [
        ("header only", &b"a,b\n"[..]),
        ("header only, no newline", b"a,b"),
        ("header and blank lines", b"a,b\n\n\n"),
    ] {
        cases.push(case(
            name,
            bytes.to_vec(),
            refused("NO_ROWS", &["no data rows"]),
        ));
    }
    // Header problems.
    for (name, header, fragments) in [
        (
            "duplicate names",
            "a,b,a",
            &["\"a\"", "columns 1 and 3"][..],
        ),
        (
            "duplicate adjacent names",
            "a,a",
            &["\"a\"", "columns 1 and 2"],
        ),
        (
            "duplicate last names",
            "x,y,z,z",
            &["\"z\"", "columns 3 and 4"],
        ),
        ("empty first name", ",b,c", &["column 1"]),
        ("empty middle name", "a,,c", &["column 2"]),
        (
            "empty last name (trailing delimiter)",
            "a,b,",
            &["column 3"],
        ),
        ("quoted empty name", "a,\"\",c", &["column 2"]),
    ] {
        let prefix = if name.starts_with("duplicate") {
            "CSV_DUPLICATE_HEADER"
        } else {
            "CSV_EMPTY_HEADER"
        };
        cases.push(case(
            format!("header: {name}"),
            format!("{header}\n1,2,3\n"),
            refused(prefix, fragments),
        ));
    }
    cases.push(case(
        "header: names differing in case are distinct",
        "a,A,b\n1,2,3\n",
        accepted(1, 3),
    ));
    cases.push(case(
        "header: names are trimmed",
        "a,b, a\n1,2,3\n",
        refused("CSV_DUPLICATE_HEADER", &["\"a\"", "columns 1 and 3"]),
    ));
    // Quoting.
    cases.push(case(
        "quoted newlines, delimiters and quotes",
        "a,b\n\"line 1\nline 2\",\"x, \"\"y\"\"\"\n3,4\n",
        accepted(2, 2),
    ));
    cases.push(case(
        "an unterminated quote runs to the end of the file",
        "a,b\n1,\"open\n2,3\n",
        accepted(1, 2),
    ));
    // Line ends, byte-order mark, delimiters.
    cases.push(case(
        "CRLF line ends",
        "a,b\r\n1,2\r\n3,4\r\n",
        accepted(2, 2),
    ));
    cases.push(case(
        "a UTF-8 byte-order mark",
        b"\xEF\xBB\xBFa,b\n1,2\n".to_vec(),
        accepted(1, 2),
    ));
    cases.push(case(
        "no newline at the end",
        "a,b\n1,2\n3,4",
        accepted(2, 2),
    ));
    cases.push(case(
        "semicolons without csv.delimiter: one column",
        "a;b;c\n1;2;3\n4;5;6\n",
        accepted(2, 1),
    ));
    for (delimiter, name) in [(";", "semicolons"), ("\t", "tabs"), ("|", "pipes")] {
        let bytes = format!("a{delimiter}b{delimiter}c\n1{delimiter}2{delimiter}3\n");
        cases.push(Case {
            csv: Some(CsvOptions {
                delimiter: delimiter.to_owned(),
                has_header: None,
            }),
            ..case(format!("{name} with csv.delimiter"), bytes, accepted(1, 3))
        });
    }
    for delimiter in ["", ",,", "é", "\n", "\""] {
        cases.push(Case {
            csv: Some(CsvOptions {
                delimiter: delimiter.to_owned(),
                has_header: None,
            }),
            ..case(
                format!("csv.delimiter {delimiter:?}"),
                "a,b\n1,2\n",
                if delimiter.is_empty() {
                    // Empty is the default, `,`.
                    accepted(1, 2)
                } else {
                    Expect::Refused {
                        code: Code::InvalidArgument,
                        prefix: "",
                        fragments: vec!["delimiter".to_owned()],
                    }
                },
            )
        });
    }
    // Values: what the analysis decides about, not the upload.
    cases.push(case(
        "NaN, inf and empty values",
        "x,y,label\nNaN,inf,a\n-inf,,b\n1e308,1e-308,\n",
        accepted(3, 3),
    ));
    cases.push(case(
        "one class",
        "x,label\n1,a\n2,a\n3,a\n",
        accepted(3, 2),
    ));
    cases.push(case(
        "all-null label column",
        "x,label\n1,\n2,\n",
        accepted(2, 2),
    ));
    cases.push(case(
        "a 1 MiB field",
        format!("a,b\n1,{}\n", "z".repeat(1 << 20)),
        accepted(1, 2),
    ));
    cases.push(case(
        "a NUL byte in a value",
        b"a,b\n1,x\x00y\n".to_vec(),
        accepted(1, 2),
    ));
    cases.push(case(
        "control characters and right-to-left marks",
        "a,b\n1,\u{202e}evil\u{7}\n",
        accepted(1, 2),
    ));
    // Width: at the limit and over it.
    let wide = |columns: usize| {
        let header: Vec<String> = (0..columns).map(|c| format!("c{c}")).collect();
        let row = vec!["1"; columns].join(",");
        format!("{}\n{row}\n", header.join(","))
    };
    cases.push(case(
        "2,048 columns (the limit)",
        wide(2048),
        accepted(1, 2048),
    ));
    cases.push(case(
        "10,000 columns",
        wide(10_000),
        Expect::Refused {
            code: Code::ResourceExhausted,
            prefix: "TOO_MANY_COLUMNS",
            fragments: vec!["10000".to_owned(), "2048".to_owned()],
        },
    ));
    cases.extend(columnar_cases());
    cases
}

/// JSONL and Parquet uploads.
fn columnar_cases() -> Vec<Case> {
    let ints = |values: Vec<i64>| Arc::new(Int64Array::from(values)) as ArrayRef;
    let mut tags = ListBuilder::new(StringBuilder::new());
    tags.values().append_value("x");
    tags.append(true);
    let good = parquet_file(vec![
        ("a", ints(vec![1, 2, 3])),
        ("b", Arc::new(StringArray::from(vec!["x", "y", "z"]))),
    ]);
    let wide: Vec<String> = (0..10_000).map(|c| format!("\"c{c}\": 1")).collect();
    vec![
        jsonl(
            "fields missing from some lines, nulls, blank lines and CRLF",
            "{\"a\": 1, \"b\": \"x\"}\r\n\r\n{\"b\": null}\r\n{\"c\": true, \"a\": 2.5}\r\n",
            accepted(3, 3),
        ),
        jsonl(
            "a line cut short",
            "{\"a\": 1}\n{\"a\": 2}\n{\"a\": \n",
            refused("JSONL_INVALID_LINE", &["line 3"]),
        ),
        jsonl(
            "a line that is a string",
            "{\"a\": 1}\n\"hello\"\n",
            refused("JSONL_INVALID_LINE", &["line 2", "not a JSON object"]),
        ),
        jsonl(
            "a number and a string in one field",
            "{\"a\": 1}\n{\"a\": \"1\"}\n",
            refused("JSONL_MIXED_TYPES", &["line 2", "field \"a\""]),
        ),
        jsonl(
            "a nested object",
            "{\"a\": 1, \"o\": {\"k\": [1]}}\n",
            refused("JSONL_UNSUPPORTED_TYPE", &["line 1", "field \"o\""]),
        ),
        jsonl(
            "10,000 fields",
            format!("{{{}}}\n", wide.join(", ")),
            Expect::Refused {
                code: Code::ResourceExhausted,
                prefix: "TOO_MANY_COLUMNS",
                fragments: vec!["line 1".to_owned(), "2048".to_owned()],
            },
        ),
        parquet("a good file", good.clone(), accepted(3, 2)),
        parquet(
            "CSV bytes",
            b"a,b\n1,2\n".to_vec(),
            refused("PARQUET_CORRUPT", &["Parquet"]),
        ),
        parquet(
            "cut short",
            good[..good.len() - 16].to_vec(),
            refused("PARQUET_CORRUPT", &["Parquet"]),
        ),
        parquet(
            "a list column",
            parquet_file(vec![
                ("a", ints(vec![1])),
                ("tags", Arc::new(tags.finish())),
            ]),
            refused("PARQUET_UNSUPPORTED_TYPE", &["column \"tags\""]),
        ),
        // Found by fuzz/ingest_parquet: each once made the reader panic or allocate gigabytes.
        parquet(
            "a negative column offset",
            fuzz_seed("negative-column-offset.parquet"),
            refused("PARQUET_CORRUPT", &["Parquet"]),
        ),
        parquet(
            "a dictionary page claiming billions of values",
            fuzz_seed("dictionary-claims-billions.parquet"),
            refused("PARQUET_CORRUPT", &["Parquet"]),
        ),
    ]
}

/// A committed seed of the `ingest_parquet` fuzz target.
fn fuzz_seed(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/ingest_parquet")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Uploads `bytes` as `dataset`'s file, its `format` and `csv` options in the metadata.
async fn upload(
    client: &mut common::Client,
    dataset: &str,
    format: DatasetFormat,
    bytes: &[u8],
    csv: Option<CsvOptions>,
) -> Result<Dataset, tonic::Status> {
    let metadata = UploadMetadata {
        dataset: dataset.to_owned(),
        format: format.into(),
        filename: "corpus".to_owned(),
        size_bytes: bytes.len() as u64,
        csv,
        ..UploadMetadata::default()
    };
    upload_requests(
        client,
        metadata,
        bytes.chunks(64 * 1024).map(<[u8]>::to_vec),
    )
    .await
}

async fn upload_requests(
    client: &mut common::Client,
    metadata: UploadMetadata,
    chunks: impl Iterator<Item = Vec<u8>>,
) -> Result<Dataset, tonic::Status> {
    let mut messages = vec![UploadDatasetRequest {
        payload: Some(Payload::Metadata(metadata)),
    }];
    messages.extend(chunks.map(|chunk| UploadDatasetRequest {
        payload: Some(Payload::Chunk(chunk)),
    }));
    client
        .upload_dataset(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

async fn create(client: &mut common::Client, tenant: &str) -> Dataset {
    client
        .create_dataset(CreateDatasetRequest {
            parent: format!("tenants/{tenant}"),
            display_name: "corpus".to_owned(),
            ..CreateDatasetRequest::default()
        })
        .await
        .expect("create")
        .into_inner()
}

/// Checks `outcome` against `expect`; returns what is wrong.
fn mismatch(outcome: &Result<Dataset, tonic::Status>, expect: &Expect) -> Option<String> {
    match (outcome, expect) {
        (
            Err(status),
            Expect::Refused {
                code,
                prefix,
                fragments,
            },
        ) => {
            let message = status.message();
            let ok = status.code() == *code
                && message.starts_with(prefix)
                && fragments.iter().all(|f| message.contains(f.as_str()));
            (!ok).then(|| format!("refused as {:?} {message:?}", status.code()))
        }
        (Ok(dataset), Expect::Accepted { rows, columns }) => {
            let got = dataset.schema.as_ref().map_or(0, |s| s.columns.len());
            let ok = dataset.state() == DatasetState::Ready
                && dataset.row_count == *rows
                && got == *columns;
            (!ok).then(|| {
                format!(
                    "accepted as {:?} with {} rows, {got} columns",
                    dataset.state(),
                    dataset.row_count
                )
            })
        }
        (Ok(dataset), Expect::Refused { .. }) => Some(format!(
            "accepted with {} rows, {} columns",
            dataset.row_count,
            dataset.schema.as_ref().map_or(0, |s| s.columns.len())
        )),
        (Err(status), Expect::Accepted { .. }) => Some(format!(
            "refused as {:?} {:?}",
            status.code(),
            status.message()
        )),
    }
}

/// Tenant `beta`'s good upload, which every step of the corpus must leave working.
async fn beta_still_works(beta: &mut common::Client) {
    let dataset = create(beta, "beta").await;
    let done = upload(
        beta,
        &dataset.name,
        DatasetFormat::Csv,
        grid(20).as_bytes(),
        None,
    )
    .await
    .expect("beta's upload");
    assert_eq!(done.row_count, 20);
}

#[tokio::test]
async fn every_bad_input_gets_a_clear_error_or_its_documented_handling() {
    let mut app = spawn_app().await;
    let mut beta = app.client_of("beta").await;
    let mut wrong = Vec::new();
    let mut count = 0;

    // File content.
    for case in file_cases() {
        let dataset = create(&mut app.client, "acme").await;
        let (outcome, ()) = tokio::join!(
            upload(
                &mut app.client,
                &dataset.name,
                case.format,
                &case.bytes,
                case.csv.clone()
            ),
            beta_still_works(&mut beta)
        );
        if let Some(what) = mismatch(&outcome, &case.expect) {
            wrong.push(format!(
                "{}: expected {:?}, got {what}",
                case.name, case.expect
            ));
        }
        count += 1;
    }

    // The upload stream itself, each case on a dataset of its own.
    let good = grid(3).into_bytes();
    let meta = |bytes: &[u8]| UploadMetadata {
        format: DatasetFormat::Csv.into(),
        filename: "x.csv".to_owned(),
        size_bytes: bytes.len() as u64,
        ..UploadMetadata::default()
    };
    let stream_cases: Vec<(&str, UploadMetadata, Vec<Vec<u8>>, Code)> = vec![
        (
            "size_bytes smaller than the file",
            UploadMetadata {
                size_bytes: 3,
                ..meta(&good)
            },
            vec![good.clone()],
            Code::Ok,
        ),
        (
            "size_bytes larger than the file",
            UploadMetadata {
                size_bytes: 10_000,
                ..meta(&good)
            },
            vec![good.clone()],
            Code::Ok,
        ),
        (
            "a wrong sha256",
            UploadMetadata {
                sha256: "0".repeat(64),
                ..meta(&good)
            },
            vec![good.clone()],
            Code::DataLoss,
        ),
        (
            "a malformed sha256",
            UploadMetadata {
                sha256: "not hex".to_owned(),
                ..meta(&good)
            },
            vec![good.clone()],
            Code::DataLoss,
        ),
        (
            "an unspecified format",
            UploadMetadata {
                format: DatasetFormat::Unspecified.into(),
                ..meta(&good)
            },
            vec![good.clone()],
            Code::InvalidArgument,
        ),
        (
            "an unknown format number",
            UploadMetadata {
                format: 99,
                ..meta(&good)
            },
            vec![good.clone()],
            Code::InvalidArgument,
        ),
        (
            "a size over the upload limit",
            UploadMetadata {
                size_bytes: u64::MAX,
                ..meta(&good)
            },
            vec![good.clone()],
            Code::ResourceExhausted,
        ),
        (
            "an unknown id column",
            UploadMetadata {
                id_column: "nope".to_owned(),
                ..meta(&good)
            },
            vec![good.clone()],
            Code::InvalidArgument,
        ),
        (
            "a chunk over the gRPC message limit",
            meta(&vec![b'a'; 5 << 20]),
            vec![vec![b'a'; 5 << 20]],
            Code::OutOfRange,
        ),
    ];
    for (name, metadata, chunks, code) in stream_cases {
        let dataset = create(&mut app.client, "acme").await.name;
        let metadata = UploadMetadata {
            dataset,
            ..metadata
        };
        let outcome = upload_requests(&mut app.client, metadata, chunks.into_iter()).await;
        match outcome {
            Ok(done) if code == Code::Ok && done.row_count == 3 => {}
            Err(status) if status.code() == code && !status.message().is_empty() => {}
            other => wrong.push(format!(
                "upload stream, {name}: expected {code:?}, got {:?}",
                other
                    .map(|d| d.state())
                    .map_err(|s| (s.code(), s.message().to_owned()))
            )),
        }
        count += 1;
    }
    // Metadata missing, or twice, or no message at all.
    let dataset = create(&mut app.client, "acme").await;
    let named = UploadMetadata {
        dataset: dataset.name.clone(),
        ..meta(&good)
    };
    let chunk = |bytes: &[u8]| UploadDatasetRequest {
        payload: Some(Payload::Chunk(bytes.to_vec())),
    };
    let metadata = || UploadDatasetRequest {
        payload: Some(Payload::Metadata(named.clone())),
    };
    for (name, messages) in [
        (
            "a chunk before the metadata",
            vec![chunk(&good), metadata()],
        ),
        ("the metadata twice", vec![metadata(), metadata()]),
        ("an empty stream", Vec::new()),
        (
            "a message without payload",
            vec![UploadDatasetRequest { payload: None }],
        ),
    ] {
        let outcome = app
            .client
            .upload_dataset(tokio_stream::iter(messages))
            .await;
        match outcome {
            Err(status) if status.code() == Code::InvalidArgument => {}
            other => wrong.push(format!(
                "upload stream, {name}: expected InvalidArgument, got {:?}",
                other
                    .map(|_| ())
                    .map_err(|s| (s.code(), s.message().to_owned()))
            )),
        }
        count += 1;
    }
    // That dataset still waits for its upload, and takes a good one once.
    match upload(
        &mut app.client,
        &dataset.name,
        DatasetFormat::Csv,
        &good,
        None,
    )
    .await
    {
        Ok(done) => assert_eq!(done.row_count, 3),
        Err(status) => wrong.push(format!("the good upload after bad streams: {status:?}")),
    }
    let again = upload(
        &mut app.client,
        &dataset.name,
        DatasetFormat::Csv,
        &good,
        None,
    )
    .await;
    if again.as_ref().map_err(tonic::Status::code).err() != Some(Code::FailedPrecondition) {
        wrong.push(format!("a second upload: {again:?}"));
    }
    count += 1;

    // Resource names, on every RPC that takes one.
    let foreign = create(&mut beta, "beta").await.name;
    let missing = format!("tenants/acme/datasets/{}", uuid::Uuid::now_v7());
    let invalid = [
        "",
        "tenants",
        "tenants/",
        "tenants/acme",
        "tenants/acme/datasets",
        "tenants/acme/datasets/",
        "tenants/acme/datasets/not-a-uuid",
        "tenants/acme/datasets/../../beta",
        "tenants/../datasets/x",
        "tenants/acme/datasets/0190a0c4-7e1c-7cc3-b5b4-5f0d3c1a2b3c/extra",
        "datasets/0190a0c4-7e1c-7cc3-b5b4-5f0d3c1a2b3c",
        "tenants/ACME/datasets/0190a0c4-7e1c-7cc3-b5b4-5f0d3c1a2b3c",
        "tenants/ac*me/datasets/0190a0c4-7e1c-7cc3-b5b4-5f0d3c1a2b3c",
        "tenants/acme>/datasets/0190a0c4-7e1c-7cc3-b5b4-5f0d3c1a2b3c",
        "tenants/ac me/datasets/0190a0c4-7e1c-7cc3-b5b4-5f0d3c1a2b3c",
        "tenants/ac\0me/datasets/0190a0c4-7e1c-7cc3-b5b4-5f0d3c1a2b3c",
        "tenants/açme/datasets/0190a0c4-7e1c-7cc3-b5b4-5f0d3c1a2b3c",
    ];
    for name in invalid {
        let status = app
            .client
            .get_dataset(GetDatasetRequest {
                name: name.to_owned(),
            })
            .await
            .unwrap_err();
        // Malformed, or a well-formed name of another tenant: never data.
        if !matches!(
            status.code(),
            Code::InvalidArgument | Code::PermissionDenied
        ) {
            wrong.push(format!("GetDataset {name:?}: {status:?}"));
        }
        let upload = upload_requests(
            &mut app.client,
            UploadMetadata {
                dataset: name.to_owned(),
                ..meta(&good)
            },
            std::iter::once(good.clone()),
        )
        .await
        .unwrap_err();
        if !matches!(
            upload.code(),
            Code::InvalidArgument | Code::PermissionDenied
        ) {
            wrong.push(format!("UploadDataset {name:?}: {upload:?}"));
        }
        count += 2;
    }
    for (name, code) in [
        (foreign.as_str(), Code::NotFound),
        (missing.as_str(), Code::NotFound),
    ] {
        let status = app
            .client
            .get_dataset(GetDatasetRequest {
                name: name.to_owned(),
            })
            .await
            .unwrap_err();
        if status.code() != code {
            wrong.push(format!("GetDataset {name}: {status:?}"));
        }
        count += 1;
    }
    // Paging.
    for (page_size, page_token, code) in [
        (-1, "", Some(Code::InvalidArgument)),
        (i32::MIN, "", Some(Code::InvalidArgument)),
        (0, "", None),
        (i32::MAX, "", None),
        (10, "garbage", Some(Code::InvalidArgument)),
        (10, "AAAA", Some(Code::InvalidArgument)),
    ] {
        let outcome = app
            .client
            .list_datasets(ListDatasetsRequest {
                parent: "tenants/acme".to_owned(),
                page_size,
                page_token: page_token.to_owned(),
                ..ListDatasetsRequest::default()
            })
            .await;
        let got = outcome.as_ref().err().map(tonic::Status::code);
        if got != code {
            wrong.push(format!(
                "ListDatasets page_size {page_size} token {page_token:?}: {:?}",
                outcome.map(|r| r.into_inner().datasets.len())
            ));
        }
        count += 1;
    }

    assert!(count >= 100, "the corpus has {count} cases");
    assert!(
        wrong.is_empty(),
        "{} of {count} cases answered otherwise:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Still serving, for both tenants.
    beta_still_works(&mut beta).await;
    app.stop().await;
}
