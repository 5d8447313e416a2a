//! Standard Webhooks 1.0 symmetric signatures: `webhook-signature: v1,<base64 HMAC-SHA256(secret,
//! "{webhook-id}.{webhook-timestamp}.{body}")>`, with the secret shown as `whsec_<base64>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use secrecy::SecretString;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The header carrying the message id, the same on every attempt of one delivery.
pub const HEADER_ID: &str = "webhook-id";
/// The header carrying this attempt's Unix time in seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the space-separated signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The prefix of a shown secret.
const SECRET_PREFIX: &str = "whsec_";
/// The version tag of a symmetric signature.
const SIGNATURE_PREFIX: &str = "v1,";
/// Bytes of a generated secret (the spec asks for 24 to 64).
const GENERATED_LEN: usize = 32;
/// Accepted secret lengths, in bytes.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 24..=64;

type HmacSha256 = Hmac<Sha256>;

/// Why a shown secret was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// It is not `whsec_` + standard base64.
    #[error("a signing secret is `whsec_` followed by base64")]
    Format,
    /// It decodes to fewer than 24 or more than 64 bytes.
    #[error("a signing secret is 24 to 64 bytes")]
    Length,
}

/// An endpoint's signing secret: 24 to 64 random bytes, zeroized on drop, never printed.
#[derive(Clone)]
pub struct SigningSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    /// A fresh secret of 32 bytes from the operating system's generator.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0_u8; GENERATED_LEN]);
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The secret of `bytes` (as stored, once decrypted).
    ///
    /// # Errors
    /// [`SecretError::Length`] outside 24 to 64 bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        let bytes = Zeroizing::new(bytes);
        if SECRET_LEN.contains(&bytes.len()) {
            Ok(Self(bytes))
        } else {
            Err(SecretError::Length)
        }
    }

    /// Parses a shown secret, `whsec_<base64>`.
    ///
    /// # Errors
    /// [`SecretError`] if it is malformed or of the wrong length.
    pub fn parse(shown: &str) -> Result<Self, SecretError> {
        let encoded = shown
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Format)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| SecretError::Format)?;
        Self::from_bytes(bytes)
    }

    /// The raw bytes (to seal for storage).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as shown to its owner once: `whsec_<base64>`.
    #[must_use]
    pub fn to_shown(&self) -> SecretString {
        SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(&*self.0)))
    }

    fn mac(&self, msg_id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        // NOTE: HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// The `webhook-signature` value of `body` sent as message `msg_id` at `timestamp` (Unix seconds).
#[must_use]
pub fn sign(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret
        .mac(msg_id, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("{SIGNATURE_PREFIX}{}", STANDARD.encode(tag))
}

/// Why a received webhook did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// `webhook-id` is empty or contains a `.`.
    #[error("the message id is empty or contains a dot")]
    MessageId,
    /// `webhook-timestamp` is not an integer.
    #[error("the timestamp is not Unix seconds")]
    Timestamp,
    /// The timestamp is further from now than the tolerance.
    #[error("the timestamp is outside the tolerance window")]
    Expired,
    /// No `v1,` signature in the header matches.
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a received webhook: `timestamp` within `tolerance_secs` of `now` (Unix seconds), and one
/// of the space-separated `signatures` a `v1,` signature of `{msg_id}.{timestamp}.{body}`, compared
/// in constant time on the decoded bytes (so an empty or truncated signature never matches).
///
/// # Errors
/// [`VerifyError`] naming the first check that failed.
pub fn verify(
    secret: &SigningSecret,
    msg_id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    if msg_id.is_empty() || msg_id.contains('.') {
        return Err(VerifyError::MessageId);
    }
    let sent: i64 = timestamp.parse().map_err(|_| VerifyError::Timestamp)?;
    if sent.abs_diff(now) > tolerance_secs.unsigned_abs() {
        return Err(VerifyError::Expired);
    }
    let mac = secret.mac(msg_id, timestamp, body);
    let matched = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix(SIGNATURE_PREFIX))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|tag| mac.clone().verify_slice(&tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    /// The spec's own test vector (standard-webhooks `spec/standard-webhooks.md`).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const TOLERANCE: i64 = 300;

    fn spec_secret() -> SigningSecret {
        SigningSecret::parse(SPEC_SECRET).unwrap()
    }

    fn check(secret: &SigningSecret, ts: &str, sigs: &str, body: &[u8]) -> Result<(), VerifyError> {
        verify(secret, SPEC_ID, ts, sigs, body, SPEC_TS, TOLERANCE)
    }

    #[test]
    fn the_spec_test_vector_signs_and_verifies() {
        let secret = spec_secret();
        assert_eq!(sign(&secret, SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIGNATURE);
        assert_eq!(
            check(&secret, "1614265330", SPEC_SIGNATURE, SPEC_BODY),
            Ok(())
        );
    }

    #[test]
    fn the_reference_libraries_vector_signs_too() {
        // The vector of the reference libraries' own tests.
        let secret = SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            sign(
                &secret,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                body
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn an_empty_or_truncated_signature_is_rejected() {
        let secret = spec_secret();
        let ts = "1614265330";
        for bad in [
            "v1,",
            "v1",
            "",
            " ",
            "v1,g0hM",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1O",
        ] {
            assert_eq!(
                check(&secret, ts, bad, SPEC_BODY),
                Err(VerifyError::NoMatch),
                "{bad:?}"
            );
        }
        // Another scheme's tag with the right bytes is not a `v1` signature.
        let v2 = SPEC_SIGNATURE.replacen("v1,", "v2,", 1);
        assert_eq!(
            check(&secret, ts, &v2, SPEC_BODY),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn a_wrong_secret_or_an_altered_body_is_rejected() {
        let ts = "1614265330";
        let other = SigningSecret::generate();
        assert_eq!(
            check(&other, ts, SPEC_SIGNATURE, SPEC_BODY),
            Err(VerifyError::NoMatch)
        );
        let altered = br#"{"test": 2432232315}"#;
        assert_eq!(
            check(&spec_secret(), ts, SPEC_SIGNATURE, altered),
            Err(VerifyError::NoMatch)
        );
        // The signature of another id or timestamp does not carry over.
        assert_eq!(
            check(&spec_secret(), "1614265331", SPEC_SIGNATURE, SPEC_BODY),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn a_timestamp_outside_the_window_is_rejected() {
        let secret = spec_secret();
        for offset in [-301, 301, -100_000] {
            let ts = SPEC_TS + offset;
            let sig = sign(&secret, SPEC_ID, ts, SPEC_BODY);
            assert_eq!(
                check(&secret, &ts.to_string(), &sig, SPEC_BODY),
                Err(VerifyError::Expired),
                "{offset}"
            );
        }
        for offset in [-300, 300] {
            let ts = SPEC_TS + offset;
            let sig = sign(&secret, SPEC_ID, ts, SPEC_BODY);
            assert_eq!(
                check(&secret, &ts.to_string(), &sig, SPEC_BODY),
                Ok(()),
                "{offset}"
            );
        }
        assert_eq!(
            check(&secret, "soon", SPEC_SIGNATURE, SPEC_BODY),
            Err(VerifyError::Timestamp)
        );
    }

    #[test]
    fn one_valid_signature_among_several_verifies() {
        let secret = spec_secret();
        let header = format!("v1,Zm9v v1a,bm90IHRoaXM= {SPEC_SIGNATURE} v1,");
        assert_eq!(check(&secret, "1614265330", &header, SPEC_BODY), Ok(()));
    }

    #[test]
    fn an_id_with_a_dot_is_refused() {
        let secret = spec_secret();
        let res = verify(
            &secret,
            "msg.1",
            "1614265330",
            SPEC_SIGNATURE,
            SPEC_BODY,
            SPEC_TS,
            TOLERANCE,
        );
        assert_eq!(res, Err(VerifyError::MessageId));
    }

    #[test]
    fn secrets_round_trip_through_their_shown_form_and_are_never_printed() {
        let secret = SigningSecret::generate();
        assert_eq!(secret.as_bytes().len(), 32);
        let shown = secret.to_shown();
        assert!(shown.expose_secret().starts_with("whsec_"));
        let parsed = SigningSecret::parse(shown.expose_secret()).unwrap();
        assert_eq!(parsed.as_bytes(), secret.as_bytes());
        assert_eq!(format!("{secret:?}"), "SigningSecret(<redacted>)");
        assert_eq!(
            SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::Format
        );
        assert_eq!(
            SigningSecret::parse("whsec_AAAA").unwrap_err(),
            SecretError::Length
        );
    }
}
