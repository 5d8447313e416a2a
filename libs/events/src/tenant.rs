//! Validated tenant ids: the only way a tenant reaches a subject.

use std::fmt;
use std::str::FromStr;

/// Shortest valid tenant id, in bytes.
pub const TENANT_ID_MIN_LEN: usize = 3;
/// Longest valid tenant id, in bytes.
pub const TENANT_ID_MAX_LEN: usize = 63;

/// A tenant id matching `^[a-z0-9][a-z0-9-]{2,62}$`, safe to embed as one subject token.
///
/// It can never contain `.`, `*`, `>`, `/`, whitespace or non-ASCII characters, so a tenant can
/// never address another tenant's subjects or widen a filter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

/// Why a string is not a valid tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    /// The string is empty.
    #[error("tenant id is empty; expected 3 to 63 characters of [a-z0-9-]")]
    Empty,
    /// The string is shorter than [`TENANT_ID_MIN_LEN`].
    #[error("tenant id is {len} characters long; expected at least {TENANT_ID_MIN_LEN}")]
    TooShort {
        /// Length of the rejected string, in characters.
        len: usize,
    },
    /// The string is longer than [`TENANT_ID_MAX_LEN`].
    #[error("tenant id is {len} characters long; expected at most {TENANT_ID_MAX_LEN}")]
    TooLong {
        /// Length of the rejected string, in characters.
        len: usize,
    },
    /// The string contains a character outside `[a-z0-9-]`.
    #[error(
        "tenant id contains {ch:?} at character {index}; only lowercase ASCII letters, digits and '-' are allowed"
    )]
    ForbiddenChar {
        /// The first offending character.
        ch: char,
        /// Its position, counted in characters from 0.
        index: usize,
    },
    /// The string starts with `-`.
    #[error("tenant id starts with '-'; it must start with a lowercase ASCII letter or digit")]
    LeadingHyphen,
}

impl TenantId {
    /// Validates `id` as a tenant id.
    ///
    /// # Errors
    /// [`TenantIdError`] naming the first rule `id` breaks.
    pub fn parse(id: impl Into<String>) -> Result<Self, TenantIdError> {
        let id = id.into();
        validate(&id)?;
        Ok(Self(id))
    }

    /// The id as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }
}

fn validate(id: &str) -> Result<(), TenantIdError> {
    if id.is_empty() {
        return Err(TenantIdError::Empty);
    }
    // Characters are checked before length so that "a.b" reports the '.', which is the real problem.
    if let Some((index, ch)) = id
        .chars()
        .enumerate()
        .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        return Err(TenantIdError::ForbiddenChar { ch, index });
    }
    // Only ASCII is left, so bytes and characters agree.
    let len = id.len();
    if len < TENANT_ID_MIN_LEN {
        return Err(TenantIdError::TooShort { len });
    }
    if len > TENANT_ID_MAX_LEN {
        return Err(TenantIdError::TooLong { len });
    }
    if id.starts_with('-') {
        return Err(TenantIdError::LeadingHyphen);
    }
    Ok(())
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = TenantIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantIdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl TryFrom<&str> for TenantId {
    type Error = TenantIdError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_examples() {
        for ok in [
            "acme",
            "a-1",
            "000",
            "tenant-with-hyphens-",
            &"a".repeat(63),
        ] {
            assert_eq!(
                TenantId::parse(ok).map(|t| t.into_string()),
                Ok(ok.to_owned())
            );
        }
    }

    #[test]
    fn rejects_each_forbidden_character_with_its_position() {
        for (bad, ch, index) in [
            ("ac.me", '.', 2),
            ("acme*", '*', 4),
            (">acme", '>', 0),
            ("ac/me", '/', 2),
            ("ac me", ' ', 2),
            ("acme\n", '\n', 4),
            ("Acme", 'A', 0),
            ("acmé", 'é', 3),
            ("ac_me", '_', 2),
        ] {
            assert_eq!(
                TenantId::parse(bad),
                Err(TenantIdError::ForbiddenChar { ch, index }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_lengths_and_leading_hyphen() {
        assert_eq!(TenantId::parse(""), Err(TenantIdError::Empty));
        assert_eq!(
            TenantId::parse("ab"),
            Err(TenantIdError::TooShort { len: 2 })
        );
        assert_eq!(
            TenantId::parse("a".repeat(64)),
            Err(TenantIdError::TooLong { len: 64 })
        );
        assert_eq!(TenantId::parse("-acme"), Err(TenantIdError::LeadingHyphen));
    }

    #[test]
    fn error_messages_name_the_problem() {
        let msg = TenantId::parse("ac.me").unwrap_err().to_string();
        assert!(msg.contains("'.'") && msg.contains("character 2"), "{msg}");
    }
}
