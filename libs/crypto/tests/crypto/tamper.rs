//! Tamper rejection: bit flips, chunk swaps and reorders, truncation, wrong AAD, tenant and key version.

use trustmesh_crypto::envelope::{HEADER_LEN, TAG_LEN};
use trustmesh_crypto::{Error, ObjectRef};

use crate::{Fixture, OBJ, data};

const SMALL_CHUNK: usize = 64;
const SEGMENT: usize = SMALL_CHUNK + TAG_LEN;

/// A fixture with 64-byte chunks and a 4-chunk ciphertext (3 full chunks and a 20-byte last one).
async fn four_chunks() -> (Fixture, Vec<u8>, Vec<u8>) {
    let fx = Fixture::new("ingest").with_chunk_size(SMALL_CHUNK as u32);
    let plaintext = data(3 * SMALL_CHUNK + 20, 1);
    let sealed = fx.keyring.seal(&OBJ, &plaintext).await.unwrap();
    assert_eq!(sealed.len(), HEADER_LEN + 3 * SEGMENT + 20 + TAG_LEN);
    assert_eq!(fx.keyring.open(&OBJ, &sealed).await.unwrap(), plaintext);
    (fx, plaintext, sealed)
}

fn segment(sealed: &[u8], i: usize) -> &[u8] {
    let start = HEADER_LEN + i * SEGMENT;
    &sealed[start..(start + SEGMENT).min(sealed.len())]
}

fn assemble(sealed: &[u8], order: &[usize]) -> Vec<u8> {
    let mut out = sealed[..HEADER_LEN].to_vec();
    for &i in order {
        out.extend_from_slice(segment(sealed, i));
    }
    out
}

async fn assert_decrypt_fails(fx: &Fixture, obj: &ObjectRef<'_>, bytes: &[u8]) {
    let result = fx.keyring.open(obj, bytes).await;
    assert!(
        matches!(result, Err(Error::Decrypt)),
        "expected Decrypt, got {result:?}"
    );
}

#[tokio::test]
async fn every_single_bit_flip_of_a_small_ciphertext_fails() {
    let (fx, _, sealed) = four_chunks().await;
    for bit in 0..sealed.len() * 8 {
        let mut tampered = sealed.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        assert!(
            fx.keyring.open(&OBJ, &tampered).await.is_err(),
            "flipping bit {bit} went unnoticed"
        );
    }
}

#[tokio::test]
async fn sampled_bit_flips_of_a_large_ciphertext_fail() {
    let fx = Fixture::new("ingest");
    let sealed = fx.keyring.seal(&OBJ, &data(1 << 20, 2)).await.unwrap();
    let random = data(256 * 8, 3);
    let positions = random
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()) % (sealed.len() as u64 * 8))
        .chain([0, 8 * HEADER_LEN as u64, sealed.len() as u64 * 8 - 1]);
    for bit in positions {
        let bit = usize::try_from(bit).unwrap();
        let mut tampered = sealed.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        assert!(
            fx.keyring.open(&OBJ, &tampered).await.is_err(),
            "flipping bit {bit} went unnoticed"
        );
    }
}

#[tokio::test]
async fn swapping_or_reordering_or_repeating_chunks_fails() {
    let (fx, _, sealed) = four_chunks().await;
    assert_eq!(assemble(&sealed, &[0, 1, 2, 3]), sealed);
    for order in [
        [1, 0, 2, 3],
        [0, 2, 1, 3],
        [2, 0, 1, 3],
        [0, 0, 2, 3],
        [0, 1, 1, 3],
    ] {
        assert_decrypt_fails(&fx, &OBJ, &assemble(&sealed, &order)).await;
    }
}

#[tokio::test]
async fn dropping_chunks_or_cutting_mid_chunk_fails() {
    let (fx, _, sealed) = four_chunks().await;
    // Drop the last chunk (the one before it is not marked last), or the last two.
    assert_decrypt_fails(&fx, &OBJ, &assemble(&sealed, &[0, 1, 2])).await;
    assert_decrypt_fails(&fx, &OBJ, &assemble(&sealed, &[0, 1])).await;
    // Drop a middle chunk.
    assert_decrypt_fails(&fx, &OBJ, &assemble(&sealed, &[0, 2, 3])).await;
    // Cut anywhere (mid-chunk, mid-tag, at a boundary): an error, never a shorter plaintext.
    for len in HEADER_LEN..sealed.len() {
        assert!(
            fx.keyring.open(&OBJ, &sealed[..len]).await.is_err(),
            "cut at {len} went unnoticed"
        );
    }
    // Appending a chunk also fails.
    assert_decrypt_fails(&fx, &OBJ, &assemble(&sealed, &[0, 1, 2, 3, 3])).await;
}

#[tokio::test]
async fn the_incremental_decryptor_rejects_a_truncated_stream_at_finish() {
    let (fx, plaintext, sealed) = four_chunks().await;
    let truncated = assemble(&sealed, &[0, 1, 2]);
    let mut decryptor = fx.keyring.decryptor(&OBJ, &truncated).await.unwrap();
    let mut out = Vec::new();
    decryptor
        .update(&truncated[HEADER_LEN..], &mut out)
        .unwrap();
    // The first two chunks authenticated and were released; the third is held back...
    assert_eq!(out, plaintext[..2 * SMALL_CHUNK]);
    // ...and fails as a last chunk.
    assert!(matches!(decryptor.finish(&mut out), Err(Error::Decrypt)));
    assert_eq!(out.len(), 2 * SMALL_CHUNK);
}

#[tokio::test]
async fn a_chunk_or_header_from_another_object_fails() {
    let (fx, _, sealed) = four_chunks().await;
    let other = ObjectRef {
        object: "datasets/2/raw",
        ..OBJ
    };
    let other_sealed = fx
        .keyring
        .seal(&other, &data(3 * SMALL_CHUNK + 20, 1))
        .await
        .unwrap();
    // Same tenant, same DEK, same position: chunk 1 of the other object does not fit in.
    let mut spliced = assemble(&sealed, &[0]);
    spliced.extend_from_slice(segment(&other_sealed, 1));
    spliced.extend_from_slice(&assemble(&sealed, &[2, 3])[HEADER_LEN..]);
    assert_decrypt_fails(&fx, &OBJ, &spliced).await;
    // Another object's header (its salt and nonce prefix) over this body.
    let mut reheaded = other_sealed[..HEADER_LEN].to_vec();
    reheaded.extend_from_slice(&sealed[HEADER_LEN..]);
    assert_decrypt_fails(&fx, &OBJ, &reheaded).await;
    assert_decrypt_fails(&fx, &other, &reheaded).await;
}

#[tokio::test]
async fn opening_as_another_object_version_tenant_or_service_fails() {
    let fx = Fixture::new("ingest");
    let sealed = fx.keyring.seal(&OBJ, b"row 17: alice, 42").await.unwrap();

    assert_decrypt_fails(
        &fx,
        &ObjectRef {
            object: "datasets/1/parsed",
            ..OBJ
        },
        &sealed,
    )
    .await;
    assert_decrypt_fails(&fx, &ObjectRef { version: 2, ..OBJ }, &sealed).await;

    // Another tenant without a DEK: nothing to open with.
    let globex = ObjectRef {
        tenant: "globex",
        ..OBJ
    };
    assert!(matches!(
        fx.keyring.open(&globex, &sealed).await,
        Err(Error::DekNotFound { dek_version: 1 })
    ));
    // Another tenant with its own DEK version 1: wrong key.
    fx.keyring.seal(&globex, b"globex data").await.unwrap();
    assert_decrypt_fails(&fx, &globex, &sealed).await;

    // Another service over the same KEK and DEK store, whose DEK for the same tenant exists.
    let analysis = fx.keyring("analysis");
    analysis.seal(&OBJ, b"analysis data").await.unwrap();
    assert!(matches!(
        analysis.open(&OBJ, &sealed).await,
        Err(Error::Decrypt)
    ));

    // The right object still opens.
    assert_eq!(
        fx.keyring.open(&OBJ, &sealed).await.unwrap(),
        b"row 17: alice, 42"
    );
}

#[tokio::test]
async fn relabelling_the_dek_version_fails() {
    let fx = Fixture::new("ingest");
    let v1 = fx.keyring.seal(&OBJ, b"under dek 1").await.unwrap();
    assert_eq!(fx.keyring.rotate_dek("acme").await.unwrap(), 2);
    let v2 = fx.keyring.seal(&OBJ, b"under dek 2").await.unwrap();
    assert_eq!(trustmesh_crypto::inspect(&v2).unwrap().dek_version, 2);
    // Bytes 6..10 of the header are the DEK version.
    let mut relabelled = v1.clone();
    relabelled[6..10].copy_from_slice(&2u32.to_be_bytes());
    assert_decrypt_fails(&fx, &OBJ, &relabelled).await;
    let mut relabelled = v2.clone();
    relabelled[6..10].copy_from_slice(&1u32.to_be_bytes());
    assert_decrypt_fails(&fx, &OBJ, &relabelled).await;
    relabelled[6..10].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(
        fx.keyring.open(&OBJ, &relabelled).await,
        Err(Error::DekNotFound { dek_version: 3 })
    ));
    // Both versions still open as sealed.
    assert_eq!(fx.keyring.open(&OBJ, &v1).await.unwrap(), b"under dek 1");
    assert_eq!(fx.keyring.open(&OBJ, &v2).await.unwrap(), b"under dek 2");
}
