//! Personally identifiable information and secrets in text: e-mail addresses, phone numbers, payment
//! card numbers (Luhn check), US social security numbers (SSA's invalid ranges excluded), IBANs
//! (ISO 13616 mod-97 check), IP addresses (v4 and v6) and secrets (AWS access keys, private key
//! blocks, GitHub / Slack / Stripe / Google tokens, `api_key = ...` style assignments).
//!
//! Patterns run from the most specific to the least; a match masks its span for the later ones, so
//! a card number is not also reported as a phone number.

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex::Regex;

/// A kind of PII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiType {
    /// A private key block, cloud access key or API token.
    Secret,
    /// An e-mail address.
    Email,
    /// An IBAN with a valid check.
    Iban,
    /// A payment card number passing the Luhn check.
    CreditCard,
    /// A US social security number (`AAA-GG-SSSS`).
    Ssn,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// A phone number (10 to 15 digits with separators, or `+` and a country code).
    Phone,
}

impl PiiType {
    /// Every type, in matching order.
    pub const ALL: [Self; 7] = [
        Self::Secret,
        Self::Email,
        Self::Iban,
        Self::CreditCard,
        Self::Ssn,
        Self::IpAddress,
        Self::Phone,
    ];

    /// The name in `PII_types` (`email`, `credit_card`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Email => "email",
            Self::Iban => "iban",
            Self::CreditCard => "credit_card",
            Self::Ssn => "ssn",
            Self::IpAddress => "ip_address",
            Self::Phone => "phone",
        }
    }

    /// How much finding it weighs in the `PII` score (`1 − severity` of the worst item).
    pub fn severity(self) -> f64 {
        match self {
            Self::Secret | Self::CreditCard | Self::Ssn | Self::Iban => 1.0,
            Self::Email | Self::Phone => 0.7,
            Self::IpAddress => 0.5,
        }
    }
}

/// One PII item found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiiMatch {
    /// Its kind.
    pub pii_type: PiiType,
    /// The matched text.
    pub text: String,
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a valid built-in pattern")
}

static SECRET: LazyLock<Regex> = LazyLock::new(|| {
    regex(concat!(
        r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----(?s:.*?)(?:-----END (?:[A-Z]+ )*PRIVATE KEY-----|$)",
        r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        r"|\bgh[pousr]_[A-Za-z0-9]{36}\b",
        r"|\bxox[baprs]-[A-Za-z0-9-]{10,}",
        r"|\b[sr]k_(?:live|test)_[0-9A-Za-z]{16,}",
        r"|\bAIza[0-9A-Za-z_-]{35}",
        r#"|(?i:\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password|passwd)\b\s*[:=]\s*["']?)[A-Za-z0-9_\-+/=]{12,}"#,
    ))
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    )
});
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| regex(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b"));
static CARD: LazyLock<Regex> = LazyLock::new(|| regex(r"\b[0-9](?:[ -]?[0-9]){12,18}\b"));
static SSN: LazyLock<Regex> = LazyLock::new(|| regex(r"\b([0-9]{3})-([0-9]{2})-([0-9]{4})\b"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b",
    )
});
static IPV6: LazyLock<Regex> = LazyLock::new(|| regex(r"(?i)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}"));
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{2,4}(?:[ .-][0-9]{2,4}){1,4}\b|\+[0-9]{10,15}\b",
    )
});

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// The Luhn check of a card number.
fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d = 2 * d;
                if d > 9 { d - 9 } else { d }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616: move the first four characters to the end, letters to 10..35, the number mod 97 is 1.
fn iban_valid(candidate: &str) -> bool {
    let compact: String = candidate.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].chars().chain(compact[..4].chars());
    let mut rem = 0u32;
    for c in rearranged {
        let Some(v) = c.to_digit(36) else {
            return false;
        };
        rem = if v < 10 {
            (rem * 10 + v) % 97
        } else {
            (rem * 100 + v) % 97
        };
    }
    rem == 1
}

/// SSA never issues area 000, 666 or 900–999, group 00 or serial 0000.
fn ssn_valid(caps: &regex::Captures<'_>) -> bool {
    let (area, group, serial) = (&caps[1], &caps[2], &caps[3]);
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// Every PII item in `text`, most specific kinds first, each span reported once.
pub fn find_pii(text: &str) -> Vec<PiiMatch> {
    let mut found = Vec::new();
    let mut taken: Vec<(usize, usize)> = Vec::new();
    let mut take = |pii_type: PiiType, m: regex::Match<'_>, found: &mut Vec<PiiMatch>| {
        if taken.iter().any(|&(s, e)| m.start() < e && s < m.end()) {
            return;
        }
        taken.push((m.start(), m.end()));
        found.push(PiiMatch {
            pii_type,
            text: m.as_str().to_owned(),
        });
    };
    for m in SECRET.find_iter(text) {
        take(PiiType::Secret, m, &mut found);
    }
    for m in EMAIL.find_iter(text) {
        take(PiiType::Email, m, &mut found);
    }
    for m in IBAN.find_iter(text) {
        if iban_valid(m.as_str()) {
            take(PiiType::Iban, m, &mut found);
        }
    }
    for m in CARD.find_iter(text) {
        let d = digits(m.as_str());
        if (13..=19).contains(&d.len()) && luhn(&d) {
            take(PiiType::CreditCard, m, &mut found);
        }
    }
    for caps in SSN.captures_iter(text) {
        if ssn_valid(&caps) {
            take(PiiType::Ssn, caps.get(0).expect("group 0"), &mut found);
        }
    }
    for m in IPV4.find_iter(text) {
        take(PiiType::IpAddress, m, &mut found);
    }
    for m in IPV6.find_iter(text) {
        if m.as_str().matches(':').count() >= 2 && m.as_str().parse::<Ipv6Addr>().is_ok() {
            take(PiiType::IpAddress, m, &mut found);
        }
    }
    for m in PHONE.find_iter(text) {
        let n = digits(m.as_str()).len();
        let international = m.as_str().starts_with('+');
        if (10..=15).contains(&n) || (international && n >= 8) {
            take(PiiType::Phone, m, &mut found);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(text: &str) -> Vec<PiiType> {
        find_pii(text).into_iter().map(|m| m.pii_type).collect()
    }

    #[test]
    fn checksums_separate_real_numbers_from_lookalikes() {
        assert!(luhn(&digits("4111 1111 1111 1111")));
        assert!(!luhn(&digits("4111 1111 1111 1112")));
        assert!(iban_valid("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban_valid("GB82 WEST 1234 5698 7654 33"));
        assert_eq!(types("card 4111 1111 1111 1111 ok"), [PiiType::CreditCard]);
        assert!(types("order 4111 1111 1111 1112 shipped").is_empty());
        assert_eq!(types("IBAN DE89 3704 0044 0532 0130 00."), [PiiType::Iban]);
        assert_eq!(types("ssn 123-45-6789"), [PiiType::Ssn]);
        assert!(types("ssn 666-45-6789").is_empty());
    }

    #[test]
    fn every_kind_is_found_once() {
        assert_eq!(types("mail jane.doe@example.com now"), [PiiType::Email]);
        assert_eq!(types("call (555) 123-4567"), [PiiType::Phone]);
        assert_eq!(types("call +44 20 7946 0958"), [PiiType::Phone]);
        assert_eq!(types("from 192.168.1.20 today"), [PiiType::IpAddress]);
        assert_eq!(types("from 2001:db8::8a2e:370:7334"), [PiiType::IpAddress]);
        assert_eq!(types("key AKIAIOSFODNN7EXAMPLE"), [PiiType::Secret]);
        assert_eq!(
            types("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"),
            [PiiType::Secret]
        );
        assert_eq!(types("api_key=sk9f8a7d6s5a4f3g2h1j"), [PiiType::Secret]);
        assert!(types("We met at 10:30 on 2024-05-01, 3 of 12 tickets.").is_empty());
    }
}
