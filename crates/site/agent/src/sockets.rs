//! UDP sockets for the site LAN.
//!
//! Only udp/67 shares its address: proxyDHCP binds 0.0.0.0:67 next to the site's own DHCP
//! server on the same host, and `SO_REUSEADDR` lets both receive the broadcast (LAB-NOTES).
//! Nothing else may share: on a transfer's ephemeral socket, `SO_REUSEADDR` lets the kernel hand
//! two concurrent transfers the same port, and one client's ACKs then reach the other transfer
//! (seen in the boot-storm benchmark). `SO_BINDTODEVICE` keeps every socket on its interface.
//!
//! The listeners (udp/67, udp/4011, udp/69, and the one socket of every lock-step TFTP
//! transfer) ask for a larger receive queue than the kernel's default: when a rack powers on,
//! every client's request can arrive within a millisecond, and the default queue (208 KiB, a
//! few hundred small datagrams) overflowed on udp/69 when 500 clients started at once; each
//! lost request cost its client a one-second retry (BENCHMARKS.md).

use std::net::SocketAddrV4;

use socket2::{Domain, Protocol, Socket, Type};

/// What a socket is for: whether it shares its address and how long its receive queue is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// udp/67: shares its address with the site's DHCP server; a storm's requests arrive at once.
    DhcpListener,
    /// udp/4011, udp/69 and the lock-step TFTP transfers' shared socket: a storm's requests
    /// (or ACKs) arrive at once.
    Listener,
    /// A socket of one peer (a TFTP transfer's own: one client, one ACK at a time): its
    /// address alone, the default queue.
    Peer,
}

/// The receive queue a listener asks for: room for the requests of about 1500 clients arriving
/// at once (a small datagram takes 768 bytes to 2.3 KiB of queue). The kernel grants at most
/// twice `net.core.rmem_max` (2 x 208 KiB by default); raising that sysctl lets it grant this.
pub const LISTENER_RECEIVE_BUFFER: usize = 4 << 20;

pub fn udp(
    addr: SocketAddrV4,
    device: Option<&str>,
    broadcast: bool,
    role: Role,
) -> std::io::Result<tokio::net::UdpSocket> {
    tokio::net::UdpSocket::from_std(udp_std(addr, device, broadcast, role)?)
}

/// A bound, non-blocking socket not yet registered with any tokio runtime: for a listener that
/// runs on a runtime of its own (proxyDHCP), whose reactor must be the one that polls it.
pub fn udp_std(
    addr: SocketAddrV4,
    device: Option<&str>,
    broadcast: bool,
    role: Role,
) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if role == Role::DhcpListener {
        socket.set_reuse_address(true)?;
    }
    if role != Role::Peer {
        socket.set_recv_buffer_size(LISTENER_RECEIVE_BUFFER)?;
        tracing::debug!(
            port = addr.port(),
            granted = ?socket.recv_buffer_size().ok(),
            "listener receive queue"
        );
    }
    if broadcast {
        socket.set_broadcast(true)?;
    }
    if let Some(device) = device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, SocketAddr};

    fn bound(
        role: Role,
        addr: SocketAddrV4,
    ) -> std::io::Result<(tokio::net::UdpSocket, SocketAddrV4)> {
        let s = udp(addr, None, false, role)?;
        match s.local_addr()? {
            SocketAddr::V4(a) => Ok((s, a)),
            SocketAddr::V6(a) => Err(std::io::Error::other(format!("bound to v6 {a}"))),
        }
    }

    /// Many live transfers must each get a port of their own (loopback bind only, no traffic).
    #[tokio::test]
    async fn concurrent_transfer_sockets_never_share_a_port() {
        let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let mut sockets = Vec::new();
        let mut ports = HashSet::new();
        for _ in 0..1000 {
            let (s, addr) = bound(Role::Peer, any).expect("bind");
            assert!(
                ports.insert(addr.port()),
                "port {} handed out twice",
                addr.port()
            );
            sockets.push(s);
        }
    }

    #[tokio::test]
    async fn only_the_dhcp_socket_shares_its_address() {
        let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        for role in [Role::Peer, Role::Listener] {
            let (_first, taken) = bound(role, any).expect("bind");
            assert!(bound(role, taken).is_err(), "{role:?}");
        }
        let (_dhcp, shared) = bound(Role::DhcpListener, any).expect("bind");
        assert!(bound(Role::DhcpListener, shared).is_ok());
    }

    /// A listener asks for the large queue and gets what the kernel allows: twice the smaller
    /// of the request and `net.core.rmem_max` (Linux doubles it for its bookkeeping), above
    /// the default a transfer's socket keeps.
    #[tokio::test]
    async fn a_listener_gets_the_largest_receive_queue_the_kernel_allows() {
        let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .expect("rmem_max")
            .trim()
            .parse()
            .expect("a number");
        let (listener, _) = bound(Role::Listener, any).expect("bind");
        let granted = socket2::SockRef::from(&listener)
            .recv_buffer_size()
            .expect("size");
        assert_eq!(granted, 2 * LISTENER_RECEIVE_BUFFER.min(rmem_max));
        let (transfer, _) = bound(Role::Peer, any).expect("bind");
        let default = socket2::SockRef::from(&transfer)
            .recv_buffer_size()
            .expect("size");
        assert!(granted > default, "{granted} <= {default}");
    }
}
