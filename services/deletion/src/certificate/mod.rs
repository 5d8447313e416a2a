//! Deletion certificates: the canonical JSON document (`document`), its Ed25519 signature
//! (`trustmesh_crypto::signing`, [`CertificateSigner`]) and [`verify_certificate`], which needs nothing but the
//! bytes, the signature and the public key (the `trustmesh certificate verify FILE` command uses it).
//!
//! The document is canonical JSON (RFC 8785 for the values it holds: object keys sorted, no
//! whitespace, integers, strings escaped by `serde_json`), so the signed bytes are reproducible from
//! its content.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use trustmesh_crypto::signing::{
    ALGORITHM, Ed25519Signer as CertificateSigner, SigningKeyError,
};

/// Version of the certificate document's layout.
pub const DOCUMENT_VERSION: u64 = 1;

/// Why a certificate does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The public key is not a valid 32-byte Ed25519 key.
    #[error("the public key is not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// The signature is not 64 bytes.
    #[error("the signature is not a 64-byte Ed25519 signature")]
    InvalidSignature,
    /// The signature does not match the certificate and key: it was altered or signed by another key.
    #[error(
        "the signature does not match the certificate: it was altered or signed by another key"
    )]
    Mismatch,
}

/// Checks that `signature` is the Ed25519 signature of `certificate` by `public_key` (strict
/// verification: no malleable or small-order forms).
///
/// # Errors
///
/// [`VerifyError`] saying why it does not verify.
pub fn verify_certificate(
    certificate: &[u8],
    signature: &[u8],
    public_key: &[u8],
) -> Result<(), VerifyError> {
    let public_key: &[u8; 32] = public_key
        .try_into()
        .map_err(|_| VerifyError::InvalidPublicKey)?;
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| VerifyError::InvalidPublicKey)?;
    let signature = Signature::from_slice(signature).map_err(|_| VerifyError::InvalidSignature)?;
    key.verify_strict(certificate, &signature)
        .map_err(|_| VerifyError::Mismatch)
}

/// One service's receipt, as the certificate states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReceiptFacts {
    pub(crate) service: String,
    pub(crate) deleted: BTreeMap<String, u64>,
    pub(crate) residue: BTreeMap<String, u64>,
    pub(crate) residue_found: bool,
    pub(crate) deks_destroyed: u64,
    pub(crate) complete_time: OffsetDateTime,
}

/// What a certificate states about a deletion.
#[derive(Debug, Clone)]
pub(crate) struct DeletionFacts<'a> {
    pub(crate) deletion: &'a str,
    pub(crate) tenant: &'a str,
    /// `dataset` or `tenant`.
    pub(crate) scope: &'a str,
    pub(crate) target: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) requested_by: &'a str,
    pub(crate) request_id: Option<&'a str>,
    pub(crate) requested_at: OffsetDateTime,
    pub(crate) completed_at: OffsetDateTime,
    pub(crate) issued_at: OffsetDateTime,
    pub(crate) receipts: &'a [ReceiptFacts],
    pub(crate) backup_retention_days: u32,
    pub(crate) key_id: &'a str,
}

fn rfc3339(t: OffsetDateTime) -> String {
    // NOTE: formatting a UTC `OffsetDateTime` as RFC 3339 cannot fail for years 0..=9999.
    t.format(&Rfc3339).unwrap_or_default()
}

/// The certificate document of `facts`, as canonical JSON bytes (what is signed).
pub(crate) fn document(facts: &DeletionFacts<'_>) -> Vec<u8> {
    let mut receipts: Vec<&ReceiptFacts> = facts.receipts.iter().collect();
    receipts.sort_by(|a, b| a.service.cmp(&b.service));
    let deks_destroyed: u64 = receipts.iter().map(|r| r.deks_destroyed).sum();
    let expire_by =
        facts.completed_at + time::Duration::days(i64::from(facts.backup_retention_days));
    let statement = if facts.scope == "tenant" {
        format!(
            "Every data-encryption key of the tenant was destroyed ({deks_destroyed} in all), so backups and snapshots taken before {} hold only ciphertext that can no longer be decrypted; they expire by {} under the {}-day backup retention.",
            rfc3339(facts.completed_at),
            rfc3339(expire_by),
            facts.backup_retention_days
        )
    } else {
        format!(
            "Backups taken before {} may still hold the dataset's encrypted objects; they are never restored into service and expire by {} under the {}-day backup retention.",
            rfc3339(facts.completed_at),
            rfc3339(expire_by),
            facts.backup_retention_days
        )
    };
    let value = json!({
        "version": DOCUMENT_VERSION,
        "deletion": facts.deletion,
        "tenant": facts.tenant,
        "scope": facts.scope,
        "target": facts.target,
        "reason": facts.reason,
        "requested_by": facts.requested_by,
        "request_id": facts.request_id,
        "requested_at": rfc3339(facts.requested_at),
        "completed_at": rfc3339(facts.completed_at),
        "issued_at": rfc3339(facts.issued_at),
        "receipts": receipts.iter().map(|r| json!({
            "service": r.service,
            "deleted": r.deleted,
            "residue_found": r.residue_found,
            "residue": r.residue,
            "deks_destroyed": r.deks_destroyed,
            "completed_at": rfc3339(r.complete_time),
        })).collect::<Vec<_>>(),
        "backups": {
            "retention_days": facts.backup_retention_days,
            "expire_by": rfc3339(expire_by),
            "statement": statement,
        },
        "signature": {
            "algorithm": ALGORITHM,
            "key_id": facts.key_id,
        },
    });
    let mut out = String::new();
    canonical(&value, &mut out);
    out.into_bytes()
}

/// Writes `value` as canonical JSON: object keys sorted, no insignificant whitespace.
///
/// NOTE: keys are sorted here rather than relying on `serde_json::Map`'s order, which becomes
/// insertion order if any crate in the build enables `preserve_order`. Keys are ASCII, so byte order
/// equals RFC 8785's UTF-16 order.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            out.push_str(&value.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(receipts: &[ReceiptFacts]) -> DeletionFacts<'_> {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        DeletionFacts {
            deletion: "tenants/acme/deletions/x",
            tenant: "acme",
            scope: "tenant",
            target: "tenants/acme",
            reason: "gdpr-art-17",
            requested_by: "operator",
            request_id: None,
            requested_at: t,
            completed_at: t,
            issued_at: t,
            receipts,
            backup_retention_days: 35,
            key_id: "ed25519-00",
        }
    }

    fn receipt(service: &str) -> ReceiptFacts {
        ReceiptFacts {
            service: service.to_owned(),
            deleted: BTreeMap::from([("rows:z".to_owned(), 2), ("objects".to_owned(), 3)]),
            residue: BTreeMap::new(),
            residue_found: false,
            deks_destroyed: 1,
            complete_time: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        }
    }

    #[test]
    fn documents_are_canonical_and_independent_of_receipt_order() {
        let a = [receipt("ingest"), receipt("analysis")];
        let b = [receipt("analysis"), receipt("ingest")];
        let doc = document(&facts(&a));
        assert_eq!(doc, document(&facts(&b)));
        let text = String::from_utf8(doc.clone()).unwrap();
        assert!(text.starts_with("{\"backups\":{\"expire_by\":"), "{text}");
        assert!(
            text.contains("\"deleted\":{\"objects\":3,\"rows:z\":2}"),
            "{text}"
        );
        assert!(
            text.find("\"analysis\"") < text.find("\"ingest\""),
            "{text}"
        );
        assert!(text.contains("2 in all"), "{text}");
        let parsed: Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(parsed["receipts"][0]["service"], "analysis");
    }

    #[test]
    fn signatures_verify_and_any_flipped_bit_fails() {
        let dir = tempfile::tempdir().unwrap();
        let signer = CertificateSigner::open_or_create(&dir.path().join("k")).unwrap();
        let doc = document(&facts(&[receipt("ingest")]));
        let sig = signer.sign(&doc);
        let public = signer.public_key();
        assert_eq!(verify_certificate(&doc, &sig, &public), Ok(()));
        for i in [0, doc.len() / 2, doc.len() - 1] {
            let mut tampered = doc.clone();
            tampered[i] ^= 1;
            assert_eq!(
                verify_certificate(&tampered, &sig, &public),
                Err(VerifyError::Mismatch)
            );
        }
        let mut bad_sig = sig;
        bad_sig[10] ^= 0x80;
        assert_eq!(
            verify_certificate(&doc, &bad_sig, &public),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify_certificate(&doc, &sig[..63], &public),
            Err(VerifyError::InvalidSignature)
        );
        assert_eq!(
            verify_certificate(&doc, &sig, &public[..31]),
            Err(VerifyError::InvalidPublicKey)
        );
    }
}
