//! The SSRF guard: which destinations a webhook may reach.
//!
//! A URL is refused unless its scheme is `https` (or `http` where the operator allows it), it has
//! no user info, and every address its host names or resolves to is public, or inside the
//! operator's allow-list. The URL parser (WHATWG rules) turns every IPv4 spelling (`2130706433`,
//! `0177.0.0.1`, `0x7f.1`, `127.1`) into the address before the check, and IPv6 forms that embed an
//! IPv4 address (`::ffff:127.0.0.1`, NAT64, 6to4) are judged by the address they embed.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use ipnet::IpNet;
use url::{Host, Url};

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The URL does not parse.
    #[error("the URL is malformed")]
    Malformed,
    /// The scheme is not `https` (or an allowed `http`).
    #[error("scheme `{0}` is not allowed")]
    Scheme(String),
    /// The URL carries a user name or password.
    #[error("URLs with credentials are not allowed")]
    Credentials,
    /// The URL has no host.
    #[error("the URL has no host")]
    NoHost,
    /// The host is, or resolves to, a non-public address outside the allow-list.
    #[error("destination {address} is {range}")]
    Address {
        /// The refused address.
        address: IpAddr,
        /// The range it falls in, e.g. `loopback`.
        range: &'static str,
    },
    /// The host does not resolve.
    #[error("the host does not resolve")]
    Unresolvable,
}

/// The non-public range `ip` falls in, if any (`None`: a public address).
#[must_use]
pub fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private (10.0.0.0/8)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (169, 254, _) => "link-local (169.254.0.0/16, cloud metadata)",
        (100, 64..=127, _) => "shared address space (CGNAT 100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4).map(|_| "an IPv4-mapped non-public address");
    }
    let s = ip.segments();
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified",
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback",
        // IPv4-compatible (deprecated): never a valid public destination.
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible (::/96)",
        // NAT64 and 6to4 embed an IPv4 address that the gateway would reach.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] | [0x2002, hi, lo, _, _, _, _, _]
            if forbidden_v4(v4_of(hi, lo)).is_some() =>
        {
            "an IPv6 embedding of a non-public IPv4 address"
        }
        [0x64, 0xff9b, 1, ..] => "NAT64 local-use (64:ff9b:1::/48)",
        [0x2001, 0, ..] => "Teredo (2001::/32)",
        [0x2001, 0xdb8, ..] => "documentation (2001:db8::/32)",
        [first, ..] if first & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        [first, ..] if first & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        [first, ..] if first & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        [first, ..] if first & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

fn v4_of(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Which destinations deliveries may reach.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allow: Vec<IpNet>,
    allow_http: bool,
}

impl EgressPolicy {
    /// Public `https` destinations only.
    #[must_use]
    pub fn public_https() -> Self {
        Self::default()
    }

    /// Also permits the addresses in `ranges` (e.g. `127.0.0.1/32` for a local test receiver).
    #[must_use]
    pub fn allowing(mut self, ranges: impl IntoIterator<Item = IpNet>) -> Self {
        self.allow.extend(ranges);
        self
    }

    /// Also permits plain `http` URLs.
    #[must_use]
    pub fn allowing_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Whether plain `http` is permitted.
    #[must_use]
    pub fn http_allowed(&self) -> bool {
        self.allow_http
    }

    /// Checks one address: public, or inside the allow-list.
    ///
    /// # Errors
    /// [`Refusal::Address`] naming the range it falls in.
    pub fn check_ip(&self, address: IpAddr) -> Result<(), Refusal> {
        let canonical = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            IpAddr::V4(_) => address,
        };
        if self
            .allow
            .iter()
            .any(|net| net.contains(&address) || net.contains(&canonical))
        {
            return Ok(());
        }
        match forbidden_range(address) {
            Some(range) => Err(Refusal::Address { address, range }),
            None => Ok(()),
        }
    }

    /// Parses and checks `raw`: scheme, no credentials, and, when the host is an address, the
    /// address. A host name is checked when it is resolved (see [`crate::WebhookClient`]).
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn check_url(&self, raw: &str) -> Result<Url, Refusal> {
        let url = Url::parse(raw).map_err(|_| Refusal::Malformed)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(Refusal::Scheme(other.to_owned())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        match url.host() {
            None => return Err(Refusal::NoHost),
            Some(Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4))?,
            Some(Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6))?,
            Some(Host::Domain(domain)) => {
                if domain.is_empty() {
                    return Err(Refusal::NoHost);
                }
            }
        }
        Ok(url)
    }

    /// Checks every address `host` resolved to: all must pass, so one private answer among
    /// public ones refuses the host.
    ///
    /// # Errors
    /// The first [`Refusal`], or [`Refusal::Unresolvable`] for no address.
    pub fn check_resolved(&self, addresses: &[IpAddr]) -> Result<(), Refusal> {
        if addresses.is_empty() {
            return Err(Refusal::Unresolvable);
        }
        addresses.iter().try_for_each(|a| self.check_ip(*a))
    }
}

/// A boxed lookup future.
pub type LookupFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// Resolves host names to addresses: the system resolver in production, a fixed table in tests.
pub trait Lookup: Send + Sync + fmt::Debug {
    /// The addresses of `host`.
    fn lookup(&self, host: &str) -> LookupFuture;
}

/// The operating system's resolver (`getaddrinfo` through Tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// The resolver the HTTP client connects through: one lookup, every answer checked, and only the
/// checked addresses returned, so the connection goes to exactly what was vetted.
#[derive(Debug)]
pub(crate) struct GuardedResolver {
    pub(crate) policy: Arc<EgressPolicy>,
    pub(crate) lookup: Arc<dyn Lookup>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let lookup = Arc::clone(&self.lookup);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // NOTE: boxed as the trait object itself, so the client finds the `Refusal` in the
            // error's source chain (a `Box<Refusal>` would be boxed again and hide it).
            let refuse = |refusal: Refusal| -> Box<dyn std::error::Error + Send + Sync> {
                Box::new(refusal)
            };
            let addresses = lookup
                .lookup(&host)
                .await
                .map_err(|_| refuse(Refusal::Unresolvable))?;
            policy.check_resolved(&addresses).map_err(refuse)?;
            let vetted: reqwest::dns::Addrs = Box::new(
                addresses
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(vetted)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &EgressPolicy, url: &str) -> Refusal {
        policy.check_url(url).expect_err(url)
    }

    #[test]
    fn public_addresses_pass_and_non_public_ones_do_not() {
        for ok in [
            "93.184.215.14",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert_eq!(forbidden_range(ok.parse().unwrap()), None, "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:0101::1",
        ] {
            assert!(forbidden_range(bad.parse().unwrap()).is_some(), "{bad}");
        }
    }

    #[test]
    fn ipv4_spellings_are_normalised_before_the_check() {
        let policy = EgressPolicy::public_https();
        for url in [
            "https://2130706433/",
            "https://0177.0.0.1/",
            "https://0x7f.0.0.1/",
            "https://0x7f000001/",
            "https://127.1/",
            "https://017700000001/",
            "https://[::ffff:7f00:1]/",
            "https://[::ffff:127.0.0.1]/",
        ] {
            assert!(
                matches!(refused(&policy, url), Refusal::Address { .. }),
                "{url}"
            );
        }
    }

    #[test]
    fn schemes_and_credentials_are_checked() {
        let policy = EgressPolicy::public_https();
        assert_eq!(
            refused(&policy, "http://example.com/"),
            Refusal::Scheme("http".into())
        );
        assert_eq!(
            refused(&policy, "ftp://example.com/"),
            Refusal::Scheme("ftp".into())
        );
        assert_eq!(
            refused(&policy, "https://user:pw@example.com/"),
            Refusal::Credentials
        );
        assert_eq!(refused(&policy, "not a url"), Refusal::Malformed);
        assert!(policy.check_url("https://example.com/hooks?x=1").is_ok());
        let http = EgressPolicy::public_https().allowing_http(true);
        assert!(http.check_url("http://example.com/").is_ok());
    }

    #[test]
    fn the_allow_list_permits_only_its_ranges() {
        let policy = EgressPolicy::public_https().allowing(["127.0.0.1/32".parse().unwrap()]);
        assert!(policy.check_url("https://127.0.0.1:8443/").is_ok());
        assert!(policy.check_url("https://[::ffff:127.0.0.1]/").is_ok());
        assert!(matches!(
            refused(&policy, "https://127.0.0.2/"),
            Refusal::Address { .. }
        ));
        assert!(matches!(
            refused(&policy, "https://[::1]/"),
            Refusal::Address { .. }
        ));
    }

    #[test]
    fn one_private_answer_among_public_ones_refuses_the_host() {
        let policy = EgressPolicy::public_https();
        let mixed = [
            "93.184.215.14".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
        ];
        assert!(matches!(
            policy.check_resolved(&mixed),
            Err(Refusal::Address { .. })
        ));
        assert_eq!(policy.check_resolved(&[]), Err(Refusal::Unresolvable));
        assert_eq!(policy.check_resolved(&mixed[..1]), Ok(()));
    }
}
