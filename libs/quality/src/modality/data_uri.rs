//! Images carried in a text format (a JSONL field) as data URIs (RFC 2397):
//! `data:image/<type>;base64,<payload>`. A field whose every non-empty value is one holds encoded
//! images; ingest and `trustmesh check` both recognise and decode it through here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// What starts an image data URI, and what separates its media type from its base64 payload.
const IMAGE_URI: &str = "data:image/";
const BASE64_PAYLOAD: &str = ";base64,";

/// The base64 payload of `cell` when it is an image data URI.
fn payload(cell: &str) -> Option<&str> {
    let (_, payload) = cell.strip_prefix(IMAGE_URI)?.split_once(BASE64_PAYLOAD)?;
    Some(payload)
}

/// Whether `cells` hold images as data URIs: at least one non-empty cell, and every non-empty one
/// an image data URI.
pub fn holds_image_uris<'a>(cells: impl IntoIterator<Item = &'a str>) -> bool {
    let mut filled = cells.into_iter().filter(|cell| !cell.is_empty()).peekable();
    filled.peek().is_some() && filled.all(|cell| payload(cell).is_some())
}

/// The image bytes of a cell of such a column: empty for an empty cell (a missing image), `None`
/// for a cell that is not an image data URI with a valid base64 payload.
#[must_use]
pub fn decode_image_uri(cell: &str) -> Option<Vec<u8>> {
    if cell.is_empty() {
        return Some(Vec::new());
    }
    STANDARD.decode(payload(cell)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_and_decodes_image_uris_only() {
        let uri = format!("data:image/png;base64,{}", STANDARD.encode(b"\x89PNG"));
        assert!(holds_image_uris([uri.as_str(), "", uri.as_str()]));
        assert!(!holds_image_uris(["", ""]));
        assert!(!holds_image_uris([uri.as_str(), "hello"]));
        assert!(!holds_image_uris(["data:text/plain;base64,aGk="]));
        assert_eq!(decode_image_uri(&uri).unwrap(), b"\x89PNG");
        assert_eq!(decode_image_uri("").unwrap(), b"");
        assert_eq!(decode_image_uri("data:image/png;base64,@@@"), None);
    }
}
