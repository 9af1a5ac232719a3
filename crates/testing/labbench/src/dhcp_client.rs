//! The DHCP side of simulated BIOS PXE clients, many at once on one address.
//!
//! A proxyDHCP server answers a DISCOVER from an address-less client with a broadcast to
//! 255.255.255.255:68, so every simulated client shares one socket bound to 0.0.0.0:68
//! (SO_REUSEADDR, SO_BROADCAST, SO_BINDTODEVICE on the lab interface) and a receiver task hands
//! each reply to the client waiting for its transaction id.
//!
//! The exchange is what a BIOS PXE ROM does: DISCOVER (option 60 `PXEClient:Arch:00000`,
//! option 93 = 0), take the proxy OFFER; if it names a boot file, done (our distributor: PXE
//! discovery control 8, "boot the file"); if it carries a boot-server list and menu instead
//! (dnsmasq's `pxe-service`: discovery control 3), send a boot-server REQUEST with the first
//! menu item (option 43 sub-option 71) to the listed server on udp/4011 and take the file from
//! its ACK.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bootfleet_netboot::dhcp::{
    code, MessageType, Op, Options, Packet, DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
    PXE_BOOT_SERVER_PORT,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const BIOS_VENDOR_CLASS: &[u8] = b"PXEClient:Arch:00000:UNDI:002001";
/// A BIOS PXE ROM's request list (what Intel/Realtek ROMs send).
const PARAMETER_REQUEST_LIST: &[u8] = &[
    1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67, 128, 129, 130, 131, 132, 133,
    134, 135,
];
const PXE_DISCOVERY_CONTROL: u8 = 6;
const PXE_BOOT_SERVERS: u8 = 8;
const PXE_BOOT_MENU: u8 = 9;
const PXE_BOOT_ITEM: u8 = 71;

/// One reply as received, stamped when the receiver task read it.
#[derive(Debug)]
pub struct Reply {
    pub packet: Packet,
    pub at: Instant,
}

type Waiting = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Reply>>>>;

/// The shared client socket and its demultiplexer. Dropping it stops the receiver task.
#[derive(Debug)]
pub struct DhcpClient {
    socket: Arc<UdpSocket>,
    waiting: Waiting,
    client_ip: Ipv4Addr,
    receiver: tokio::task::JoinHandle<()>,
    /// Replies whose xid nobody was waiting for (late answers to a client that gave up).
    pub unclaimed: Arc<AtomicU64>,
}

/// One simulated PXE client's identity.
#[derive(Debug, Clone, Copy)]
pub struct PxeIdentity {
    pub mac: [u8; 6],
    pub xid: u32,
    pub uuid: [u8; 16],
}

/// Retransmission policy for DISCOVER and the boot-server REQUEST.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub timeout: Duration,
    pub attempts: u32,
}

/// What an exchange found out, and when.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// First DISCOVER sent to the OFFER received (including retransmissions).
    pub offer_after: Duration,
    /// First DISCOVER sent to the boot file known (OFFER, or boot-server ACK on udp/4011).
    pub boot_file_after: Duration,
    pub boot_file: String,
    pub tftp_server: Ipv4Addr,
    /// Whether a udp/4011 boot-server round trip was needed.
    pub used_boot_server: bool,
    pub discovers_sent: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpFailure {
    NoOffer,
    /// The OFFER named no boot file and no boot server/menu to ask.
    NothingToBoot,
    NoBootServerAck,
    Send(String),
}

impl std::fmt::Display for DhcpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DhcpFailure::NoOffer => f.write_str("no proxy offer"),
            DhcpFailure::NothingToBoot => f.write_str("offer names no boot file or boot server"),
            DhcpFailure::NoBootServerAck => f.write_str("no boot-server ack on udp/4011"),
            DhcpFailure::Send(e) => write!(f, "send failed: {e}"),
        }
    }
}

/// Removes a transaction from the demultiplexer when the client is done with it.
struct Registration<'a> {
    waiting: &'a Waiting,
    xid: u32,
    rx: mpsc::UnboundedReceiver<Reply>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&self.xid);
        }
    }
}

impl Registration<'_> {
    /// The next reply of `kind` before `deadline`; replies of other kinds are skipped.
    async fn wait_for(&mut self, kind: MessageType, deadline: Instant) -> Option<Reply> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(reply)) if reply.packet.message_type() == Some(kind) => return Some(reply),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

impl DhcpClient {
    /// Binds 0.0.0.0:68 on `device`. Must run inside a tokio runtime, in the client namespace.
    pub fn bind(device: &str, client_ip: Ipv4Addr) -> std::io::Result<DhcpClient> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_broadcast(true)?;
        socket.bind_device(Some(device.as_bytes()))?;
        // Hundreds of offers can land within a second; do not let the client drop them.
        let _ = socket.set_recv_buffer_size(4 << 20);
        socket.set_nonblocking(true)?;
        let any: SocketAddr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT).into();
        socket.bind(&any.into())?;
        let socket = Arc::new(UdpSocket::from_std(socket.into())?);
        let waiting: Waiting = Arc::default();
        let unclaimed = Arc::new(AtomicU64::new(0));
        let receiver = tokio::spawn(receive(socket.clone(), waiting.clone(), unclaimed.clone()));
        Ok(DhcpClient {
            socket,
            waiting,
            client_ip,
            receiver,
            unclaimed,
        })
    }

    fn register(&self, xid: u32) -> Registration<'_> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(xid, tx);
        }
        Registration {
            waiting: &self.waiting,
            xid,
            rx,
        }
    }

    async fn send(&self, packet: &Packet, to: SocketAddrV4) -> Result<(), DhcpFailure> {
        self.socket
            .send_to(&packet.encode(), to)
            .await
            .map(|_| ())
            .map_err(|e| DhcpFailure::Send(e.to_string()))
    }

    /// The whole proxyDHCP exchange of one BIOS PXE client.
    pub async fn exchange(&self, who: &PxeIdentity, retry: Retry) -> Result<Exchange, DhcpFailure> {
        let mut registration = self.register(who.xid);
        let discover = discover(who);
        let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT);
        let started = Instant::now();
        let mut offer = None;
        let mut discovers_sent = 0;
        for _ in 0..retry.attempts.max(1) {
            self.send(&discover, broadcast).await?;
            discovers_sent += 1;
            let deadline = Instant::now() + retry.timeout;
            if let Some(reply) = registration.wait_for(MessageType::Offer, deadline).await {
                offer = Some(reply);
                break;
            }
        }
        let offer = offer.ok_or(DhcpFailure::NoOffer)?;
        let offer_after = offer.at.saturating_duration_since(started);
        let server = offer
            .packet
            .server_id()
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(offer.packet.siaddr);
        if let Some(file) = boot_file(&offer.packet) {
            return Ok(Exchange {
                offer_after,
                boot_file_after: offer_after,
                boot_file: file,
                tftp_server: tftp_server(&offer.packet, server),
                used_boot_server: false,
                discovers_sent,
            });
        }
        let (item_type, boot_server) =
            boot_item(&offer.packet, server).ok_or(DhcpFailure::NothingToBoot)?;
        let request = boot_server_request(who, self.client_ip, item_type);
        let to = SocketAddrV4::new(boot_server, PXE_BOOT_SERVER_PORT);
        for _ in 0..retry.attempts.max(1) {
            self.send(&request, to).await?;
            let deadline = Instant::now() + retry.timeout;
            if let Some(ack) = registration.wait_for(MessageType::Ack, deadline).await {
                let Some(file) = boot_file(&ack.packet) else {
                    return Err(DhcpFailure::NothingToBoot);
                };
                return Ok(Exchange {
                    offer_after,
                    boot_file_after: ack.at.saturating_duration_since(started),
                    boot_file: file,
                    tftp_server: tftp_server(&ack.packet, boot_server),
                    used_boot_server: true,
                    discovers_sent,
                });
            }
        }
        Err(DhcpFailure::NoBootServerAck)
    }
}

impl Drop for DhcpClient {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

async fn receive(socket: Arc<UdpSocket>, waiting: Waiting, unclaimed: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, _from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let at = Instant::now();
        let Some(bytes) = buf.get(..len) else {
            continue;
        };
        let Ok(packet) = Packet::parse(bytes) else {
            continue;
        };
        if packet.op != Op::BootReply {
            continue;
        }
        let tx = waiting
            .lock()
            .ok()
            .and_then(|w| w.get(&packet.xid).cloned());
        match tx {
            Some(tx) => {
                let _ = tx.send(Reply { packet, at });
            }
            None => {
                unclaimed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn base_request(who: &PxeIdentity, message_type: MessageType) -> Packet {
    let mut p = Packet::new(Op::BootRequest);
    p.htype = Packet::HTYPE_ETHERNET;
    p.hlen = 6;
    p.xid = who.xid;
    p.secs = 4;
    for (slot, byte) in p.chaddr.iter_mut().zip(who.mac) {
        *slot = byte;
    }
    p.set_message_type(message_type);
    p.options.set(code::MAX_MESSAGE_SIZE, 1260u16.to_be_bytes());
    p.options
        .set(code::PARAMETER_REQUEST_LIST, PARAMETER_REQUEST_LIST);
    let mut machine_id = vec![0u8];
    machine_id.extend_from_slice(&who.uuid);
    p.set_client_machine_id(&machine_id);
    p.options.set(code::CLIENT_NDI, [1, 2, 1]);
    p.options.set(code::CLIENT_ARCH, [0, 0]);
    p.set_vendor_class(BIOS_VENDOR_CLASS);
    p
}

/// A BIOS PXE ROM's DISCOVER. The broadcast flag is set, as PXE ROMs do, so every server
/// answers to 255.255.255.255.
pub fn discover(who: &PxeIdentity) -> Packet {
    let mut p = base_request(who, MessageType::Discover);
    p.flags = Packet::FLAG_BROADCAST;
    p
}

/// The boot-server REQUEST a PXE ROM unicasts to udp/4011 (PXE 2.1 section 2.2.6).
fn boot_server_request(who: &PxeIdentity, client_ip: Ipv4Addr, item_type: u16) -> Packet {
    let mut p = base_request(who, MessageType::Request);
    p.ciaddr = client_ip;
    let mut vendor = Options::new();
    let [hi, lo] = item_type.to_be_bytes();
    vendor.set(PXE_BOOT_ITEM, [hi, lo, 0, 0]);
    p.set_vendor_specific(&vendor.encode());
    p
}

fn text(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let name = String::from_utf8_lossy(bytes.get(..end)?).into_owned();
    (!name.is_empty()).then_some(name)
}

fn boot_file(reply: &Packet) -> Option<String> {
    reply
        .bootfile_name()
        .and_then(text)
        .or_else(|| reply.file_name().and_then(text))
}

fn tftp_server(reply: &Packet, fallback: Ipv4Addr) -> Ipv4Addr {
    if let Some(ip) = reply
        .tftp_server_name()
        .and_then(text)
        .and_then(|name| name.parse().ok())
    {
        return ip;
    }
    if !reply.siaddr.is_unspecified() {
        return reply.siaddr;
    }
    fallback
}

/// The first menu item's type and the boot server to ask for it, from option 43.
fn boot_item(offer: &Packet, default_server: Ipv4Addr) -> Option<(u16, Ipv4Addr)> {
    let vendor = Options::parse(offer.vendor_specific()?).ok()?;
    let menu = vendor.get(PXE_BOOT_MENU);
    let item_type = match menu {
        Some([hi, lo, ..]) => u16::from_be_bytes([*hi, *lo]),
        _ => match vendor.get(PXE_BOOT_SERVERS) {
            Some([hi, lo, ..]) => u16::from_be_bytes([*hi, *lo]),
            _ => return None,
        },
    };
    // Discovery control bit 3 would mean "boot the file in this offer"; we only get here when
    // there is no file, so whatever the bits say the boot server list is all we can use.
    let _control = vendor.get(PXE_DISCOVERY_CONTROL);
    let server = vendor
        .get(PXE_BOOT_SERVERS)
        .and_then(|list| servers_for(list, item_type))
        .unwrap_or(default_server);
    Some((item_type, server))
}

/// PXE sub-option 8: entries of type (2), count (1), then count IPv4 addresses.
fn servers_for(mut list: &[u8], wanted: u16) -> Option<Ipv4Addr> {
    while let [hi, lo, count, rest @ ..] = list {
        let n = usize::from(*count) * 4;
        let addresses = rest.get(..n)?;
        if u16::from_be_bytes([*hi, *lo]) == wanted {
            if let Some([a, b, c, d]) = addresses.first_chunk::<4>() {
                return Some(Ipv4Addr::new(*a, *b, *c, *d));
            }
        }
        list = rest.get(n..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_server_list_is_read() {
        let list = [0, 0, 1, 10, 77, 0, 2, 0x80, 0, 1, 1, 2, 3, 4];
        assert_eq!(servers_for(&list, 0), Some(Ipv4Addr::new(10, 77, 0, 2)));
        assert_eq!(servers_for(&list, 0x8000), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(servers_for(&list, 7), None);
        assert_eq!(servers_for(&list[..5], 0), None);
    }

    #[test]
    fn discover_is_a_bios_pxe_discover() {
        let who = PxeIdentity {
            mac: [2, 0xbf, 0, 0, 0, 1],
            xid: 42,
            uuid: [7; 16],
        };
        let p = Packet::parse(&discover(&who).encode()).expect("parses");
        assert_eq!(p.message_type(), Some(MessageType::Discover));
        assert_eq!(p.client_architectures(), Some(vec![0]));
        assert_eq!(p.vendor_class(), Some(BIOS_VENDOR_CLASS));
        assert_eq!(p.xid, 42);
        assert_eq!(p.flags, Packet::FLAG_BROADCAST);
    }
}
