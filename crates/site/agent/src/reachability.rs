//! Is a node up? A TCP connect to its SSH port. ICMP echo would need a raw socket (CAP_NET_RAW)
//! or a `ping` process; a TCP handshake needs neither and also says whether SSH can be tried.
//!
//! The rule: a node is reachable when it answered. An accepted connection (then closed at once)
//! and a refused one (RST: the host is up, the port closed) both count; only silence (timeout)
//! and "no route / host unreachable / network unreachable" errors count as down. One caveat: a
//! firewall in front of a node that rejects with RST or ICMP port-unreachable makes a powered-off
//! node look up.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;

/// How many probes `probe_all` keeps in flight at once.
pub const MAX_CONCURRENT_PROBES: usize = 64;

/// TCP connect to ip:port within `timeout` (no `ping` process spawned; ICMP needs raw sockets, so
/// TCP/22 is the probe). True if the host answered: accepted or refused.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        // Dropped right away: the probe only needed the handshake.
        Ok(Ok(_stream)) => true,
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => true,
        Ok(Err(e)) => {
            tracing::trace!(%addr, error = %e, "probe: unreachable");
            false
        }
        Err(_) => {
            tracing::trace!(%addr, timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX), "probe: no answer");
            false
        }
    }
}

/// Probes many addresses concurrently (at most [`MAX_CONCURRENT_PROBES`] at once), returning
/// (addr, reachable) in input order. Takes about `ceil(n / 64) * timeout` at worst.
pub async fn probe_all(addrs: &[SocketAddr], timeout: Duration) -> Vec<(SocketAddr, bool)> {
    futures_util::stream::iter(addrs.iter().copied())
        .map(|addr| async move { (addr, probe(addr, timeout).await) })
        // `buffered`, not `buffer_unordered`: results come back in input order.
        .buffered(MAX_CONCURRENT_PROBES)
        .collect()
        .await
}
