//! Webhooks as trustmesh sends them: Standard Webhooks 1.0 signatures, and the one guarded HTTP
//! client that every delivery to a customer URL goes through.
//!
//! Layout:
//! - [`signing`]: [`SigningSecret`] (`whsec_` + base64), [`sign`] (`v1,` + base64 HMAC-SHA256 of
//!   `{id}.{timestamp}.{body}`) and [`verify`] (constant-time, one valid signature among several,
//!   timestamp window), for the receiver side and tests.
//! - [`guard`]: the SSRF guard. [`EgressPolicy`] refuses URLs that are not `https` (unless allowed),
//!   carry credentials, or name or resolve to a non-public address (loopback, private, link-local
//!   with the cloud metadata address, CGNAT, multicast, unspecified, ULA, IPv4-mapped and other
//!   embeddings), unless the operator's allow-list permits the address. IPv4 spellings
//!   (`2130706433`, `0177.0.0.1`, `0x7f.1`) are normalised by the URL parser before the check.
//! - [`client`]: [`WebhookClient`]: resolves each host once through the guard and connects only to
//!   the addresses it vetted (no second lookup, so DNS rebinding cannot swap them), follows no
//!   redirect, uses no proxy, reads no response body.

pub mod client;
pub mod guard;
pub mod signing;

pub use client::{Answer, ClientError, Outbound, SendError, WebhookClient};
pub use guard::{EgressPolicy, Lookup, Refusal, SystemLookup, forbidden_range};
pub use signing::{
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SecretError, SigningSecret, VerifyError, sign,
    verify,
};
