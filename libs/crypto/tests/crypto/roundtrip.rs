//! Round trips: whole-object and incremental, 0 B to 64 MiB.

use proptest::prelude::*;
use trustmesh_crypto::envelope::{HEADER_LEN, TAG_LEN};
use trustmesh_crypto::{inspect, sealed_len};

use crate::{Fixture, OBJ, data, runtime};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any size from 0 B to 3 MB, under several chunk sizes, opens to the same bytes, and the envelope
    /// says the right sizes.
    #[test]
    fn seal_then_open_returns_the_plaintext(
        len in prop_oneof![0usize..300, 0usize..3_000_000],
        seed in any::<u64>(),
        chunk_size in prop_oneof![Just(64u32), Just(1000), Just(65_536)],
    ) {
        let fx = Fixture::new("ingest").with_chunk_size(chunk_size);
        let plaintext = data(len, seed);
        let rt = runtime();
        let sealed = rt.block_on(fx.keyring.seal(&OBJ, &plaintext)).unwrap();
        prop_assert_eq!(sealed.len() as u64, sealed_len(len as u64, chunk_size));
        let info = inspect(&sealed).unwrap();
        prop_assert_eq!(info.plaintext_len, len as u64);
        prop_assert_eq!(info.chunk_size, chunk_size);
        prop_assert_eq!(info.dek_version, 1);
        let opened = rt.block_on(fx.keyring.open(&OBJ, &sealed)).unwrap();
        prop_assert_eq!(opened, plaintext);
    }

    /// Feeding the encryptor and the decryptor in pieces of any sizes gives the same envelope layout
    /// and plaintext as the whole-object calls.
    #[test]
    fn incremental_seal_and_open_match_whole_object(
        len in 0usize..200_000,
        seed in any::<u64>(),
        pieces in prop::collection::vec(0usize..5_000, 1..40),
    ) {
        let fx = Fixture::new("ingest").with_chunk_size(1024);
        let plaintext = data(len, seed);
        let rt = runtime();

        let mut encryptor = rt.block_on(fx.keyring.encryptor(&OBJ)).unwrap();
        let mut sealed = Vec::new();
        let mut rest = plaintext.as_slice();
        for &piece in pieces.iter().cycle().take(10_000) {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at(piece.min(rest.len()));
            encryptor.update(head, &mut sealed).unwrap();
            rest = tail;
        }
        encryptor.update(rest, &mut sealed).unwrap();
        encryptor.finish(&mut sealed).unwrap();
        prop_assert_eq!(sealed.len() as u64, sealed_len(len as u64, 1024));
        prop_assert_eq!(rt.block_on(fx.keyring.open(&OBJ, &sealed)).unwrap(), plaintext.clone());

        let mut decryptor = rt.block_on(fx.keyring.decryptor(&OBJ, &sealed[..HEADER_LEN])).unwrap();
        let mut opened = Vec::new();
        let mut rest = &sealed[HEADER_LEN..];
        for &piece in pieces.iter().rev().cycle().take(10_000) {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at(piece.min(rest.len()));
            decryptor.update(head, &mut opened).unwrap();
            rest = tail;
        }
        decryptor.update(rest, &mut opened).unwrap();
        decryptor.finish(&mut opened).unwrap();
        prop_assert_eq!(opened, plaintext);
    }
}

#[tokio::test]
async fn a_64_mib_object_round_trips() {
    let fx = Fixture::new("ingest");
    let plaintext = data(64 << 20, 64);
    let sealed = fx.keyring.seal(&OBJ, &plaintext).await.unwrap();
    assert_eq!(inspect(&sealed).unwrap().chunks, 1024);
    assert_ne!(&sealed[HEADER_LEN..HEADER_LEN + 4096], &plaintext[..4096]);
    assert_eq!(fx.keyring.open(&OBJ, &sealed).await.unwrap(), plaintext);
}

#[tokio::test]
async fn an_empty_object_is_one_empty_last_chunk() {
    let fx = Fixture::new("ingest");
    let sealed = fx.keyring.seal(&OBJ, b"").await.unwrap();
    assert_eq!(sealed.len(), HEADER_LEN + TAG_LEN);
    assert_eq!(inspect(&sealed).unwrap().chunks, 1);
    assert!(fx.keyring.open(&OBJ, &sealed).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_exact_multiple_of_the_chunk_size_has_no_extra_chunk() {
    let fx = Fixture::new("ingest").with_chunk_size(64);
    let plaintext = data(192, 7);
    let sealed = fx.keyring.seal(&OBJ, &plaintext).await.unwrap();
    assert_eq!(inspect(&sealed).unwrap().chunks, 3);
    assert_eq!(fx.keyring.open(&OBJ, &sealed).await.unwrap(), plaintext);
}

#[tokio::test]
async fn sealing_twice_uses_a_fresh_salt_and_nonce_prefix() {
    let fx = Fixture::new("ingest");
    let a = fx.keyring.seal(&OBJ, b"same plaintext").await.unwrap();
    let b = fx.keyring.seal(&OBJ, b"same plaintext").await.unwrap();
    // Bytes 14..53 of the header are the salt and the nonce prefix.
    assert_ne!(a[14..HEADER_LEN], b[14..HEADER_LEN]);
    assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    assert_eq!(fx.keyring.open(&OBJ, &a).await.unwrap(), b"same plaintext");
    assert_eq!(fx.keyring.open(&OBJ, &b).await.unwrap(), b"same plaintext");
}
