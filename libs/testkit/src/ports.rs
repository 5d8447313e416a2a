//! Loopback ports for servers a test starts as child processes.
//!
//! A port found by binding port 0 and closing the listener is free only "a moment ago": the kernel
//! hands the same ephemeral range to every outgoing connection (NATS clients, Postgres pools) and
//! to the next `bind(0)` of a test running in parallel, so a server started on it a second later
//! can fail with "Address already in use" (it did, in CI: a service of the multi-process layout
//! lost its admin port). Ports here come from below the ephemeral range, from a per-process
//! sequence that never repeats a port (a restarted server keeps its own), starting at an offset
//! taken from the process id so test binaries running side by side start far apart; each is
//! checked bindable before it is handed out.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The ports handed out: above the well-known and common service ports, below Linux's default
/// ephemeral range (32768–60999).
const FIRST: u32 = 12_000;
const LAST: u32 = 32_000;

/// How many ports this process has looked at so far.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback port nothing listens on, not handed out before by this process and outside the
/// kernel's ephemeral range.
///
/// # Panics
///
/// If every port of the range is taken.
#[must_use]
pub fn free_port() -> u16 {
    let span = LAST - FIRST;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + step) % span).expect("the range fits in u16");
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{LAST}");
}

/// `count` distinct free loopback ports (see [`free_port`]).
#[must_use]
pub fn free_ports(count: usize) -> Vec<u16> {
    (0..count).map(|_| free_port()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports = free_ports(50);
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "no port twice: {ports:?}");
        for port in ports {
            assert!((12_000..32_000).contains(&u32::from(port)), "{port}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("still free");
        }
    }
}
