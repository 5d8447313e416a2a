//! Images in JSONL uploads: a field whose every value is an image data URI
//! (`data:image/<type>;base64,<payload>`, RFC 2397) holds encoded images. Its values are decoded
//! into the table's binary columns, which schema inference makes an IMAGE column (as a Parquet
//! binary column), the same reading `trustmesh check` makes (`trustmesh_quality::modality`).
// NOTE: a step after `jsonl::parse`, not inside it: `jsonl.rs` is also compiled into the fuzz crate
// (fuzz/src/lib.rs), which does not build the quality crate.

use trustmesh_quality::modality::{decode_image_uri, holds_image_uris};

use super::csv::{Cells, Rejection, Table};

/// `table` with every column of image data URIs moved into its binary columns, decoded (an empty
/// cell stays a null). A column of data URIs with a payload that is not base64 is rejected
/// (`JSONL_INVALID_IMAGE`), naming the line and field.
pub(crate) fn decode_image_uris(mut table: Table) -> Result<Table, Rejection> {
    for (index, cells) in table.columns.iter_mut().enumerate() {
        if !holds_image_uris(cells.iter()) {
            continue;
        }
        let field = table.names[index].as_str();
        let mut bytes = Vec::with_capacity(table.lines.len());
        for (cell, &line) in cells.iter().zip(&table.lines) {
            bytes.push(decode_image_uri(cell).ok_or_else(|| {
                Rejection::new(
                    "JSONL_INVALID_IMAGE",
                    format!(
                        "line {line}, field \"{field}\" is an image data URI whose payload is \
                         not valid base64"
                    ),
                )
                .at(Some(line), Some(field))
            })?);
        }
        let mut nulls = Cells::default();
        nulls.fill_to(bytes.len());
        *cells = nulls;
        table.binary.insert(index, bytes);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use trustmesh_proto::v1::column_data::Values;
    use trustmesh_proto::v1::{ColumnType, Modality};

    use super::super::{jsonl, schema};
    use super::*;

    fn parse(text: &str) -> Result<Table, Rejection> {
        jsonl::parse(text.as_bytes(), 100, 100).and_then(decode_image_uris)
    }

    fn uri(bytes: &[u8]) -> String {
        let payload = base64::engine::general_purpose::STANDARD.encode(bytes);
        format!("data:image/png;base64,{payload}")
    }

    #[test]
    fn a_field_of_image_data_uris_is_an_image_column() {
        let images = trustmesh_quality::modality::synth::bench_images(2, 16, 1);
        let text = format!(
            "{{\"label\": \"a\", \"photo\": \"{}\"}}\n{{\"label\": \"b\", \"photo\": null}}\n\
             {{\"label\": \"a\", \"photo\": \"{}\"}}\n",
            uri(&images[0]),
            uri(&images[1])
        );
        let inferred = schema::infer(parse(&text).unwrap(), &[], "").unwrap();
        assert_eq!(inferred.modality, Modality::Image);
        let photo = &inferred.schema.columns[1];
        assert_eq!((photo.r#type(), photo.null_count), (ColumnType::Image, 1));
        let Some(Values::Images(stored)) = &inferred.columns[1].values else {
            panic!("images are bytes");
        };
        assert_eq!(stored.values[2], images[1]);
    }

    #[test]
    fn a_text_field_mentioning_a_data_uri_once_stays_text() {
        let images = trustmesh_quality::modality::synth::bench_images(1, 16, 1);
        let mixed = format!(
            "{{\"note\": \"{}\"}}\n{{\"note\": \"hello\"}}\n",
            uri(&images[0])
        );
        assert!(parse(&mixed).unwrap().binary.is_empty());
    }

    #[test]
    fn a_payload_that_is_not_base64_is_rejected_with_its_line_and_field() {
        let broken = parse("{\"photo\": \"data:image/png;base64,@@@\"}\n").unwrap_err();
        assert_eq!(
            (broken.code, broken.line, broken.column.as_deref()),
            ("JSONL_INVALID_IMAGE", Some(1), Some("photo"))
        );
    }
}
