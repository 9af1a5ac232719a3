//! DHCP for network boot: the packet codec and the proxyDHCP decision, as pure functions.
//!
//! - [`Packet`]: parse and encode DHCP/BOOTP packets (RFC 2131, 2132; long options per RFC 3396)
//!   with typed accessors for the options PXE, UEFI HTTP boot and iPXE use (RFC 4578, 3004).
//! - [`decide`]: given a request, the port it came in on and its source, answer it as a
//!   proxyDHCP server (PXE 2.1) or say why not. It never assigns an address, so it coexists with
//!   the site's DHCP server.
//!
//! The socket loop receives bytes, calls [`Packet::parse`] and [`decide`], sends
//! [`Packet::encode`] of the reply to [`Destination::socket_addr`] and publishes the
//! [`ClientInfo`] as a boot event.

mod packet;
mod proxy;

pub use packet::{
    code, ClientNdi, MacAddr, MessageType, Op, Options, Packet, ParseError, BOOTP_MIN_LEN,
    HEADER_LEN, MAGIC_COOKIE, MIN_PACKET_LEN,
};
pub use proxy::{
    decide, BootFiles, ClientArch, ClientInfo, Decision, Destination, IgnoreReason, Port,
    ProxyConfig, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, PXE_BOOT_SERVER_PORT,
};
