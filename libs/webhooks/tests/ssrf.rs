//! The SSRF table: every destination class is refused, with a listener proving that nothing
//! connected; the allow-list lets a local receiver through; redirects are not followed; a host
//! is resolved once and the connection goes to the address that was checked (no DNS rebinding).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::net::TcpListener;
use trustmesh_webhooks::guard::LookupFuture;
use trustmesh_webhooks::{
    EgressPolicy, Lookup, Outbound, Refusal, SendError, SigningSecret, WebhookClient,
};

/// A resolver answering from a table, one answer list per call (the last repeats), counting calls.
#[derive(Debug, Default)]
struct TableLookup {
    answers: Mutex<HashMap<String, Vec<Vec<IpAddr>>>>,
    calls: AtomicUsize,
}

impl TableLookup {
    fn with(host: &str, answers: &[&[&str]]) -> Arc<Self> {
        let parsed = answers
            .iter()
            .map(|a| a.iter().map(|ip| ip.parse().unwrap()).collect())
            .collect();
        let lookup = Self::default();
        lookup
            .answers
            .lock()
            .unwrap()
            .insert(host.to_owned(), parsed);
        Arc::new(lookup)
    }
}

impl Lookup for TableLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut table = self.answers.lock().unwrap();
        let answer = match table.get_mut(host) {
            Some(list) if list.len() > 1 => list.remove(0),
            Some(list) => list.first().cloned().unwrap_or_default(),
            None => Vec::new(),
        };
        Box::pin(async move { Ok(answer) })
    }
}

/// A TCP listener that must never see a connection.
struct Sink(TcpListener);

impl Sink {
    async fn bind(ip: &str) -> Result<Self> {
        Ok(Self(TcpListener::bind((ip.parse::<IpAddr>()?, 0)).await?))
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    /// Fails if a connection is waiting (a connect made during `send` is queued by the time it
    /// returns, so a short wait suffices).
    async fn assert_untouched(&self, what: &str) {
        let accepted = tokio::time::timeout(Duration::from_millis(200), self.0.accept()).await;
        assert!(accepted.is_err(), "{what}: something connected to the sink");
    }
}

fn message() -> Outbound<'static> {
    Outbound {
        id: "msg_0190",
        timestamp: 1_700_000_000,
        body: br#"{"type":"job.succeeded"}"#,
    }
}

fn client(policy: EgressPolicy, lookup: Arc<dyn Lookup>) -> WebhookClient {
    WebhookClient::with_lookup(policy, Duration::from_secs(5), lookup).unwrap()
}

async fn refused_with_sink(url: &str, lookup: Arc<dyn Lookup>, sink: &Sink) -> Refusal {
    let client = client(EgressPolicy::public_https().allowing_http(true), lookup);
    let secret = SigningSecret::generate();
    match client.send(url, message(), &secret).await {
        Err(SendError::Refused(refusal)) => {
            sink.assert_untouched(url).await;
            refusal
        }
        other => panic!("{url}: expected a refusal, got {other:?}"),
    }
}

/// Each row: a URL naming a loopback listener in another spelling; refused, never connected.
#[tokio::test]
async fn loopback_in_every_spelling_is_refused() -> Result<()> {
    let sink = Sink::bind("127.0.0.1").await?;
    let port = sink.port();
    let none: Arc<dyn Lookup> = Arc::new(TableLookup::default());
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://0x7f.0.0.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
    ] {
        let refusal = refused_with_sink(&url, Arc::clone(&none), &sink).await;
        assert!(
            matches!(refusal, Refusal::Address { .. }),
            "{url}: {refusal:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn ipv6_loopback_is_refused() -> Result<()> {
    let Ok(sink) = Sink::bind("::1").await else {
        // NOTE: no IPv6 loopback on this host: the address check itself is covered in unit tests.
        return Ok(());
    };
    let url = format!("http://[::1]:{}/", sink.port());
    let refusal = refused_with_sink(&url, Arc::new(TableLookup::default()), &sink).await;
    assert!(matches!(
        refusal,
        Refusal::Address {
            range: "loopback",
            ..
        }
    ));
    Ok(())
}

/// `localhost` through the real system resolver.
#[tokio::test]
async fn localhost_resolved_by_the_system_is_refused() -> Result<()> {
    let sink = Sink::bind("127.0.0.1").await?;
    let client = WebhookClient::new(
        EgressPolicy::public_https().allowing_http(true),
        Duration::from_secs(5),
    )?;
    let url = format!("http://localhost:{}/", sink.port());
    let result = client
        .send(&url, message(), &SigningSecret::generate())
        .await;
    assert!(
        matches!(result, Err(SendError::Refused(Refusal::Address { .. }))),
        "{result:?}"
    );
    sink.assert_untouched(&url).await;
    Ok(())
}

/// Each row: a name resolving to a non-public address (the table's rows); the sink stands for
/// the internal service, bound where it can be (loopback) and proving no connection went out.
#[tokio::test]
async fn names_resolving_to_non_public_ranges_are_refused() -> Result<()> {
    let sink = Sink::bind("127.0.0.1").await?;
    let port = sink.port();
    for (address, range) in [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private (10.0.0.0/8)"),
        ("172.16.5.4", "private (172.16.0.0/12)"),
        ("192.168.1.10", "private (192.168.0.0/16)"),
        (
            "169.254.169.254",
            "link-local (169.254.0.0/16, cloud metadata)",
        ),
        ("100.64.0.1", "shared address space (CGNAT 100.64.0.0/10)"),
        ("224.0.0.251", "multicast"),
        ("0.0.0.0", "unspecified (0.0.0.0/8)"),
        ("::1", "loopback"),
        ("fe80::1", "link-local (fe80::/10)"),
        ("fd00::1", "unique local (fc00::/7)"),
        ("fd00:ec2::254", "unique local (fc00::/7)"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "an IPv4-mapped non-public address"),
        (
            "::ffff:169.254.169.254",
            "an IPv4-mapped non-public address",
        ),
    ] {
        let lookup = TableLookup::with("hooks.example.com", &[&[address]]);
        let url = format!("http://hooks.example.com:{port}/");
        let refusal = refused_with_sink(&url, lookup, &sink).await;
        assert_eq!(
            refusal,
            Refusal::Address {
                address: address.parse()?,
                range
            },
            "{address}"
        );
    }
    Ok(())
}

/// Address literals of the same ranges never reach the resolver or the network.
#[tokio::test]
async fn address_literals_of_non_public_ranges_are_refused() -> Result<()> {
    let sink = Sink::bind("127.0.0.1").await?;
    let lookup = Arc::new(TableLookup::default());
    for url in [
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://0251.0376.0251.0376/",
        "http://2852039166/",
    ] {
        let refusal = refused_with_sink(url, lookup.clone(), &sink).await;
        assert!(
            matches!(refusal, Refusal::Address { .. }),
            "{url}: {refusal:?}"
        );
    }
    assert_eq!(lookup.calls.load(Ordering::SeqCst), 0);
    Ok(())
}

/// A host answering one public and one private address is refused as a whole.
#[tokio::test]
async fn a_mixed_answer_is_refused() -> Result<()> {
    let sink = Sink::bind("127.0.0.1").await?;
    let lookup = TableLookup::with("mixed.example.com", &[&["93.184.215.14", "127.0.0.1"]]);
    let url = format!("http://mixed.example.com:{}/", sink.port());
    let refusal = refused_with_sink(&url, lookup, &sink).await;
    assert!(matches!(refusal, Refusal::Address { .. }));
    Ok(())
}

/// DNS rebinding: the name is resolved once per connection and the connection goes to the address
/// that passed the check. 127.0.0.2 stands for a public address (allow-listed), 127.0.0.1 for the
/// internal one the name re-binds to after the first answer.
#[tokio::test]
async fn a_rebinding_name_connects_only_to_the_vetted_address() -> Result<()> {
    let vetted = TcpListener::bind("127.0.0.2:0").await?;
    let port = vetted.local_addr()?.port();
    let internal = Sink(TcpListener::bind(("127.0.0.1", port)).await?);
    let app = axum::Router::new().route("/", axum::routing::post(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(vetted, app).await });
    let lookup = TableLookup::with("rebind.example.com", &[&["127.0.0.2"], &["127.0.0.1"]]);
    let policy = EgressPolicy::public_https()
        .allowing_http(true)
        .allowing(["127.0.0.2/32".parse()?]);
    let url = format!("http://rebind.example.com:{port}/");
    let secret = SigningSecret::generate();

    let answer = client(policy.clone(), lookup.clone())
        .send(&url, message(), &secret)
        .await?;
    assert_eq!(answer.status, 200);
    assert_eq!(lookup.calls.load(Ordering::SeqCst), 1, "resolved once");
    internal.assert_untouched("first delivery").await;

    // The name now answers the internal address: a new connection is refused, not made.
    let result = client(policy, lookup.clone())
        .send(&url, message(), &secret)
        .await;
    assert!(matches!(result, Err(SendError::Refused(_))), "{result:?}");
    internal.assert_untouched("after rebinding").await;
    Ok(())
}

/// A 302 to an internal URL is returned as a 302: the redirect is not followed.
#[tokio::test]
async fn redirects_are_not_followed() -> Result<()> {
    let internal = Sink::bind("127.0.0.1").await?;
    let target = format!("http://127.0.0.1:{}/internal", internal.port());
    let receiver = TcpListener::bind("127.0.0.2:0").await?;
    let addr: SocketAddr = receiver.local_addr()?;
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move || {
            let target = target.clone();
            async move {
                (
                    axum::http::StatusCode::FOUND,
                    [(axum::http::header::LOCATION, target)],
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(receiver, app).await });
    let policy = EgressPolicy::public_https()
        .allowing_http(true)
        .allowing(["127.0.0.2/32".parse()?]);
    let answer = client(policy, Arc::new(TableLookup::default()))
        .send(
            &format!("http://{addr}/"),
            message(),
            &SigningSecret::generate(),
        )
        .await?;
    assert_eq!(answer.status, 302);
    internal.assert_untouched("redirect target").await;
    Ok(())
}

/// Without `allowing_http`, plain http is refused before any connection.
#[tokio::test]
async fn plain_http_is_refused_by_default() -> Result<()> {
    let sink = Sink::bind("127.0.0.1").await?;
    let policy = EgressPolicy::public_https().allowing(["127.0.0.1/32".parse()?]);
    let url = format!("http://127.0.0.1:{}/", sink.port());
    let result = client(policy, Arc::new(TableLookup::default()))
        .send(&url, message(), &SigningSecret::generate())
        .await;
    assert!(
        matches!(result, Err(SendError::Refused(Refusal::Scheme(_)))),
        "{result:?}"
    );
    sink.assert_untouched(&url).await;
    Ok(())
}
