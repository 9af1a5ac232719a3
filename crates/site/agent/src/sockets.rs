//! UDP sockets for the site LAN.
//!
//! Only udp/67 shares its address: proxyDHCP binds 0.0.0.0:67 next to the site's own DHCP
//! server on the same host, and `SO_REUSEADDR` lets both receive the broadcast (LAB-NOTES).
//! Nothing else may share: on a transfer's ephemeral socket, `SO_REUSEADDR` lets the kernel hand
//! two concurrent transfers the same port, and one client's ACKs then reach the other transfer
//! (seen in the boot-storm benchmark). `SO_BINDTODEVICE` keeps every socket on its interface.

use std::net::SocketAddrV4;

use socket2::{Domain, Protocol, Socket, Type};

/// Whether another socket may bind the same address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// udp/67 only.
    SharedWithSiteDhcp,
    Exclusive,
}

pub fn udp(
    addr: SocketAddrV4,
    device: Option<&str>,
    broadcast: bool,
    sharing: Sharing,
) -> std::io::Result<tokio::net::UdpSocket> {
    tokio::net::UdpSocket::from_std(udp_std(addr, device, broadcast, sharing)?)
}

/// A bound, non-blocking socket not yet registered with any tokio runtime: for a listener that
/// runs on a runtime of its own (proxyDHCP), whose reactor must be the one that polls it.
pub fn udp_std(
    addr: SocketAddrV4,
    device: Option<&str>,
    broadcast: bool,
    sharing: Sharing,
) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if sharing == Sharing::SharedWithSiteDhcp {
        socket.set_reuse_address(true)?;
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
        sharing: Sharing,
        addr: SocketAddrV4,
    ) -> std::io::Result<(tokio::net::UdpSocket, SocketAddrV4)> {
        let s = udp(addr, None, false, sharing)?;
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
            let (s, addr) = bound(Sharing::Exclusive, any).expect("bind");
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
        let (_first, taken) = bound(Sharing::Exclusive, any).expect("bind");
        assert!(bound(Sharing::Exclusive, taken).is_err());
        let (_dhcp, shared) = bound(Sharing::SharedWithSiteDhcp, any).expect("bind");
        assert!(bound(Sharing::SharedWithSiteDhcp, shared).is_ok());
    }
}
