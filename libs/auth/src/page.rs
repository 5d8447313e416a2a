//! Paging: page sizes, and page tokens bound to the tenant and the query they were issued for.
//!
//! A token is opaque to clients and only carries a cursor; it grants nothing (every page is
//! authorised again and every query is scoped to the caller's tenant), but a token issued for one
//! tenant or one filter is refused for another with INVALID_ARGUMENT.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tonic::Status;
use trustmesh_events::TenantId;

/// Why paging parameters are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// `page_size` is negative.
    #[error("page_size must not be negative")]
    NegativePageSize,
    /// The token is not one this service issued for this tenant and query.
    #[error("page_token is invalid for this request")]
    InvalidToken,
}

impl From<PageError> for Status {
    fn from(error: PageError) -> Self {
        match error {
            PageError::NegativePageSize => {
                Status::invalid_argument("`page_size` must not be negative")
            }
            PageError::InvalidToken => Status::invalid_argument(
                "`page_token` is not valid for this request (it belongs to another query or tenant)",
            ),
        }
    }
}

/// The page size to use for `requested`: `default` for 0, at most `max`.
///
/// # Errors
/// [`PageError::NegativePageSize`].
pub fn page_size(requested: i32, default: usize, max: usize) -> Result<usize, PageError> {
    match usize::try_from(requested) {
        Ok(0) => Ok(default),
        Ok(n) => Ok(n.min(max)),
        Err(_) => Err(PageError::NegativePageSize),
    }
}

/// A page token: tenant, a fingerprint of the query, and the cursor after which the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageToken {
    #[serde(rename = "t")]
    tenant: String,
    #[serde(rename = "q")]
    query: String,
    #[serde(rename = "c")]
    cursor: String,
}

impl PageToken {
    /// The token continuing after `cursor` in `query` (any stable rendering of the filter) of `tenant`.
    #[must_use]
    pub fn encode(tenant: &TenantId, query: &str, cursor: &str) -> String {
        let token = Self {
            tenant: tenant.as_str().to_owned(),
            query: fingerprint(query),
            cursor: cursor.to_owned(),
        };
        // NOTE: serializing three strings cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
    }

    /// The cursor of `token` if it was issued for `tenant` and `query`; `None` for an empty token
    /// (the first page).
    ///
    /// # Errors
    /// [`PageError::InvalidToken`] if it does not decode or belongs to another tenant or query.
    pub fn decode(
        token: &str,
        tenant: &TenantId,
        query: &str,
    ) -> Result<Option<String>, PageError> {
        if token.is_empty() {
            return Ok(None);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| PageError::InvalidToken)?;
        let token: Self = serde_json::from_slice(&bytes).map_err(|_| PageError::InvalidToken)?;
        if token.tenant != tenant.as_str() || token.query != fingerprint(query) {
            return Err(PageError::InvalidToken);
        }
        Ok(Some(token.cursor))
    }
}

fn fingerprint(query: &str) -> String {
    hex::encode(&Sha256::digest(query.as_bytes())[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_tenant_and_query() {
        let a = TenantId::parse("aaa").unwrap();
        let b = TenantId::parse("bbb").unwrap();
        let token = PageToken::encode(&a, "filter=x", "42");
        assert_eq!(
            PageToken::decode(&token, &a, "filter=x"),
            Ok(Some("42".to_owned()))
        );
        assert_eq!(
            PageToken::decode(&token, &b, "filter=x"),
            Err(PageError::InvalidToken)
        );
        assert_eq!(
            PageToken::decode(&token, &a, "filter=y"),
            Err(PageError::InvalidToken)
        );
        assert_eq!(
            PageToken::decode("not a token", &a, ""),
            Err(PageError::InvalidToken)
        );
        assert_eq!(PageToken::decode("", &a, ""), Ok(None));
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0, 50, 1000), Ok(50));
        assert_eq!(page_size(7, 50, 1000), Ok(7));
        assert_eq!(page_size(5000, 50, 1000), Ok(1000));
        assert_eq!(page_size(-1, 50, 1000), Err(PageError::NegativePageSize));
    }
}
