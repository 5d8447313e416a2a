//! [`WebhookClient`]: the one HTTP client that reaches customer URLs, behind the SSRF guard.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use crate::guard::{EgressPolicy, GuardedResolver, Lookup, Refusal, SystemLookup};
use crate::signing::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SigningSecret, sign};

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("the webhook HTTP client could not be built")]
pub struct ClientError(#[from] reqwest::Error);

/// Why an attempt got no HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The SSRF guard refused the destination; nothing was connected to.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The connection (TCP or TLS) failed.
    #[error("connection failed")]
    Connect,
    /// The request failed otherwise.
    #[error("request failed")]
    Request,
}

impl SendError {
    /// Whether a later attempt might succeed (a refusal will not).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Refused(_) => false,
            Self::Timeout | Self::Connect | Self::Request => true,
        }
    }

    fn of(error: &reqwest::Error) -> Self {
        let mut source = error.source();
        while let Some(cause) = source {
            if let Some(refusal) = cause.downcast_ref::<Refusal>() {
                return Self::Refused(refusal.clone());
            }
            source = cause.source();
        }
        if error.is_timeout() {
            Self::Timeout
        } else if error.is_connect() {
            Self::Connect
        } else {
            Self::Request
        }
    }
}

/// One attempt's message: its id (the same on every attempt), this attempt's timestamp, the body.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`, Unix seconds of this attempt.
    pub timestamp: i64,
    /// The JSON body, signed as sent.
    pub body: &'a [u8],
}

/// What the endpoint answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After` in seconds, if the endpoint sent one (HTTP dates are ignored).
    pub retry_after: Option<Duration>,
}

/// Sends signed webhooks to destinations the [`EgressPolicy`] permits; cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl WebhookClient {
    /// A client resolving through the system resolver, giving up on an attempt after `timeout`.
    ///
    /// # Errors
    /// [`ClientError`] if the TLS stack cannot be set up.
    pub fn new(policy: EgressPolicy, timeout: Duration) -> Result<Self, ClientError> {
        Self::with_lookup(policy, timeout, Arc::new(SystemLookup))
    }

    /// A client resolving host names through `lookup`.
    ///
    /// # Errors
    /// [`ClientError`] if the TLS stack cannot be set up.
    pub fn with_lookup(
        policy: EgressPolicy,
        timeout: Duration,
        lookup: Arc<dyn Lookup>,
    ) -> Result<Self, ClientError> {
        let policy = Arc::new(policy);
        let resolver = GuardedResolver {
            policy: Arc::clone(&policy),
            lookup,
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // NOTE: a proxy from the environment would resolve the host itself, past the guard.
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .https_only(!policy.http_allowed())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("trustmesh-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, policy })
    }

    /// Posts `message` to `url`, signed with `secret`, and returns the HTTP status (with any
    /// `Retry-After`), with the current span's `traceparent` (and `tracestate`) when it is in a
    /// trace. Redirects are not followed (a 3xx is returned as is); the response body is
    /// not read.
    ///
    /// # Errors
    /// [`SendError`]; [`SendError::Refused`] when the guard refused the destination.
    pub async fn send(
        &self,
        url: &str,
        message: Outbound<'_>,
        secret: &SigningSecret,
    ) -> Result<Answer, SendError> {
        let url = self.policy.check_url(url)?;
        let signature = sign(secret, message.id, message.timestamp, message.body);
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_ID, message.id)
            .header(HEADER_TIMESTAMP, message.timestamp.to_string())
            .header(HEADER_SIGNATURE, signature);
        // The current span's W3C trace context, so the receiver can join the trace.
        for (name, value) in trustmesh_telemetry::trace_headers() {
            request = request.header(name, value);
        }
        let response = request
            .body(message.body.to_vec())
            .send()
            .await
            .map_err(|e| SendError::of(&e))?;
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Ok(Answer {
            status: response.status().as_u16(),
            retry_after,
        })
    }
}
