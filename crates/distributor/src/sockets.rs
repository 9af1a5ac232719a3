//! UDP sockets for the site LAN. proxyDHCP binds 0.0.0.0:67 next to the site's own DHCP server
//! on the same host: `SO_REUSEADDR` lets both receive the broadcast (LAB-NOTES), and
//! `SO_BINDTODEVICE` keeps us on the configured interface only.

use std::net::SocketAddrV4;

use socket2::{Domain, Protocol, Socket, Type};

pub fn udp(
    addr: SocketAddrV4,
    device: Option<&str>,
    broadcast: bool,
) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if broadcast {
        socket.set_broadcast(true)?;
    }
    if let Some(device) = device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}
