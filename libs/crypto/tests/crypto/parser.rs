//! The envelope parser and `open` on arbitrary bytes: errors, never panics.

use proptest::prelude::*;
use trustmesh_crypto::envelope::{HEADER_LEN, MAGIC};
use trustmesh_crypto::{EnvelopeError, Error, Header, inspect};

use crate::{Fixture, OBJ, runtime};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_parse_as_an_envelope(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        prop_assert!(inspect(&bytes).is_err() || bytes.starts_with(&MAGIC));
        let _ = Header::parse(&bytes);
    }
}

#[test]
fn random_bodies_behind_a_valid_header_fail_to_open() {
    let fx = Fixture::new("ingest");
    let rt = runtime();
    let sealed = rt.block_on(fx.keyring.seal(&OBJ, b"seed")).unwrap();
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..600),
        0u32..200,
        0u32..3,
    );
    proptest!(ProptestConfig::with_cases(2000), |((body, chunk_size, dek_version) in strategy)| {
        let mut forged = sealed[..HEADER_LEN].to_vec();
        forged[6..10].copy_from_slice(&dek_version.to_be_bytes());
        forged[10..14].copy_from_slice(&chunk_size.to_be_bytes());
        forged.extend_from_slice(&body);
        let _ = inspect(&forged);
        prop_assert!(rt.block_on(fx.keyring.open(&OBJ, &forged)).is_err());
    });
}

#[test]
fn the_parser_names_what_is_wrong() {
    let header = {
        let fx = Fixture::new("ingest");
        runtime().block_on(fx.keyring.seal(&OBJ, b"")).unwrap()
    };
    assert_eq!(
        inspect(&header[..HEADER_LEN - 1]),
        Err(EnvelopeError::TooShort)
    );
    assert_eq!(inspect(&header[..HEADER_LEN]), Err(EnvelopeError::TooShort));
    assert_eq!(
        inspect(&header[..HEADER_LEN + 15]),
        Err(EnvelopeError::BadLength)
    );
    let mut bad = header.clone();
    bad[0] = b'X';
    assert_eq!(inspect(&bad), Err(EnvelopeError::BadMagic));
    let mut bad = header.clone();
    bad[4] = 2;
    assert_eq!(inspect(&bad), Err(EnvelopeError::UnsupportedVersion(2)));
    let mut bad = header.clone();
    bad[5] = 7;
    assert_eq!(inspect(&bad), Err(EnvelopeError::UnsupportedAlgorithm(7)));
    let mut bad = header.clone();
    bad[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(inspect(&bad), Err(EnvelopeError::BadChunkSize(u32::MAX)));
    assert!(matches!(
        runtime().block_on(Fixture::new("ingest").keyring.open(&OBJ, &bad)),
        Err(Error::Envelope(EnvelopeError::BadChunkSize(_)))
    ));
    assert_eq!(inspect(&header).map(|i| i.plaintext_len), Ok(0));
}
