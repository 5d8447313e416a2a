//! Where the call a task serves came from: the client's address and user agent, as the gRPC server
//! layer saw them, for the audit events the handlers record.
//!
//! The server layer runs each call inside [`CallOrigin::scope`]; code under it (the handler, not
//! tasks it spawns) reads [`CallOrigin::current`].

use std::future::Future;
use std::net::IpAddr;

/// Longest user agent kept, in characters.
const USER_AGENT_MAX: usize = 256;

/// The origin of the call being served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOrigin {
    /// The peer's IP address (behind a proxy, the proxy's).
    pub source_ip: Option<IpAddr>,
    /// The client's `user-agent`, printable ASCII only, truncated.
    pub user_agent: String,
}

tokio::task_local! {
    static ORIGIN: CallOrigin;
}

impl CallOrigin {
    /// The origin of a call from `source_ip` with the `user-agent` header `user_agent`.
    #[must_use]
    pub fn new(source_ip: Option<IpAddr>, user_agent: Option<&[u8]>) -> Self {
        let user_agent = user_agent
            .unwrap_or_default()
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '?'
                }
            })
            .take(USER_AGENT_MAX)
            .collect();
        Self {
            source_ip,
            user_agent,
        }
    }

    /// Runs `future` with this as the current origin.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        ORIGIN.scope(self, future).await
    }

    /// The origin of the call this task serves, if it serves one.
    #[must_use]
    pub fn current() -> Option<Self> {
        ORIGIN.try_with(Clone::clone).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_origin_is_seen_inside_its_scope_only() {
        assert_eq!(CallOrigin::current(), None);
        let origin = CallOrigin::new(Some([10, 0, 0, 7].into()), Some(b"sdk/1.0\n\x01"));
        assert_eq!(origin.user_agent, "sdk/1.0??");
        let seen = origin.clone().scope(async { CallOrigin::current() }).await;
        assert_eq!(seen, Some(origin));
        assert_eq!(CallOrigin::current(), None);
    }

    #[test]
    fn long_user_agents_are_truncated() {
        let long = vec![b'a'; 1000];
        assert_eq!(
            CallOrigin::new(None, Some(&long)).user_agent.len(),
            USER_AGENT_MAX
        );
    }
}
