//! The DHCP side of simulated PXE clients (BIOS and x64 UEFI), many at once on one address.
//!
//! A proxyDHCP server answers a DISCOVER from an address-less client with a broadcast to
//! 255.255.255.255:68, so every simulated client shares one socket bound to 0.0.0.0:68
//! (SO_REUSEADDR, SO_BROADCAST, SO_BINDTODEVICE on the lab interface) and a receiver task hands
//! each reply to the client waiting for its transaction id. UEFI clients send their udp/4011
//! boot-server REQUEST from port 4011, as EDK2 does, so a second shared socket is bound to
//! 0.0.0.0:4011 and feeds the same demultiplexer.
//!
//! Every reply carries the kernel's receive time (SO_TIMESTAMPNS) besides the time the receiver
//! task read it: the first is when the server's answer reached the client's socket, the second
//! adds the client runtime's own scheduling delay, which a storm of TFTP clients makes large.
//!
//! The exchange is what PXE firmware does: DISCOVER (option 60 `PXEClient:Arch:0000N`, option
//! 93 = N; N = 0 BIOS, 7 x64 UEFI), take the proxy OFFER; then
//! - a BIOS ROM boots the file the OFFER names (our distributor: PXE discovery control 8), or,
//!   if it carries a boot-server list and menu instead (dnsmasq's `pxe-service`: discovery
//!   control 3), sends a boot-server REQUEST with the first menu item (option 43 sub-option 71)
//!   to the listed server on udp/4011 and takes the file from its ACK;
//! - EDK2 (UEFI) always asks the proxy again on udp/4011 (from port 4011) and boots the file
//!   named in that ACK (LAB-NOTES: what OVMF was seen doing).
//!
//! `BinlRound::Always` makes BIOS clients take the udp/4011 round too.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bootfleet_netboot::dhcp::{
    code, MessageType, Op, Options, Packet, DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
    PXE_BOOT_SERVER_PORT,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const BIOS_VENDOR_CLASS: &[u8] = b"PXEClient:Arch:00000:UNDI:002001";
/// What OVMF sends (LAB-NOTES; the distributor's tests use the same string).
const UEFI_X64_VENDOR_CLASS: &[u8] = b"PXEClient:Arch:00007:UNDI:003000";
/// A BIOS PXE ROM's request list (what Intel/Realtek ROMs send).
const PARAMETER_REQUEST_LIST: &[u8] = &[
    1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67, 128, 129, 130, 131, 132, 133,
    134, 135,
];
const PXE_DISCOVERY_CONTROL: u8 = 6;
const PXE_BOOT_SERVERS: u8 = 8;
const PXE_BOOT_MENU: u8 = 9;
const PXE_BOOT_ITEM: u8 = 71;

/// One reply as received, stamped when the receiver task read it and when the kernel queued it.
#[derive(Debug)]
pub struct Reply {
    pub packet: Packet,
    pub at: Instant,
    /// The kernel's receive timestamp (SO_TIMESTAMPNS, wall clock), when it gave one.
    pub kernel_at: Option<SystemTime>,
}

/// The firmware a simulated client plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// BIOS PXE ROM, client architecture 0.
    Bios,
    /// x64 UEFI (EDK2), client architecture 7.
    UefiX64,
}

impl Firmware {
    fn arch(self) -> u16 {
        match self {
            Firmware::Bios => 0,
            Firmware::UefiX64 => 7,
        }
    }

    fn vendor_class(self) -> &'static [u8] {
        match self {
            Firmware::Bios => BIOS_VENDOR_CLASS,
            Firmware::UefiX64 => UEFI_X64_VENDOR_CLASS,
        }
    }

    fn network_interface(self) -> [u8; 3] {
        match self {
            Firmware::Bios => [1, 2, 1],
            Firmware::UefiX64 => [1, 3, 0],
        }
    }
}

/// When a client takes the udp/4011 boot-server round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BinlRound {
    /// As firmware does: UEFI always; BIOS only when the OFFER names no boot file.
    Firmware,
    /// Every client, BIOS too.
    Always,
}

type Waiting = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Reply>>>>;

/// The shared client socket and its demultiplexer. Dropping it stops the receiver task.
#[derive(Debug)]
pub struct DhcpClient {
    socket: Arc<UdpSocket>,
    /// 0.0.0.0:4011, where UEFI clients send their boot-server REQUEST from.
    binl: Arc<UdpSocket>,
    waiting: Waiting,
    client_ip: Ipv4Addr,
    binl_round: BinlRound,
    receivers: [tokio::task::JoinHandle<()>; 2],
    /// Replies whose xid nobody was waiting for (late answers to a client that gave up).
    pub unclaimed: Arc<AtomicU64>,
}

/// One simulated PXE client's identity.
#[derive(Debug, Clone, Copy)]
pub struct PxeIdentity {
    pub mac: [u8; 6],
    pub xid: u32,
    pub uuid: [u8; 16],
    pub firmware: Firmware,
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
    /// First DISCOVER sent to the OFFER read by the client's receiver task (including
    /// retransmissions and the client runtime's scheduling delay).
    pub offer_after: Duration,
    /// First DISCOVER sent to the OFFER queued on the client's socket by the kernel: the
    /// server's share without the client's own delay (`None` without a kernel timestamp).
    pub offer_wire: Option<Duration>,
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
    /// Binds 0.0.0.0:68 and 0.0.0.0:4011 on `device`. Must run inside a tokio runtime, in the
    /// client namespace.
    pub fn bind(
        device: &str,
        client_ip: Ipv4Addr,
        binl_round: BinlRound,
    ) -> std::io::Result<DhcpClient> {
        let socket = Arc::new(shared_socket(device, DHCP_CLIENT_PORT)?);
        let binl = Arc::new(shared_socket(device, PXE_BOOT_SERVER_PORT)?);
        let waiting: Waiting = Arc::default();
        let unclaimed = Arc::new(AtomicU64::new(0));
        let receivers = [socket.clone(), binl.clone()]
            .map(|s| tokio::spawn(receive(s, waiting.clone(), unclaimed.clone())));
        Ok(DhcpClient {
            socket,
            binl,
            waiting,
            client_ip,
            binl_round,
            receivers,
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

    async fn send(
        &self,
        socket: &UdpSocket,
        packet: &Packet,
        to: SocketAddrV4,
    ) -> Result<(), DhcpFailure> {
        socket
            .send_to(&packet.encode(), to)
            .await
            .map(|_| ())
            .map_err(|e| DhcpFailure::Send(e.to_string()))
    }

    /// The whole proxyDHCP exchange of one PXE client.
    pub async fn exchange(&self, who: &PxeIdentity, retry: Retry) -> Result<Exchange, DhcpFailure> {
        let mut registration = self.register(who.xid);
        let discover = discover(who);
        let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT);
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let mut offer = None;
        let mut discovers_sent = 0;
        for _ in 0..retry.attempts.max(1) {
            self.send(&self.socket, &discover, broadcast).await?;
            discovers_sent += 1;
            let deadline = Instant::now() + retry.timeout;
            if let Some(reply) = registration.wait_for(MessageType::Offer, deadline).await {
                offer = Some(reply);
                break;
            }
        }
        let offer = offer.ok_or(DhcpFailure::NoOffer)?;
        let offer_after = offer.at.saturating_duration_since(started);
        let offer_wire = offer
            .kernel_at
            .and_then(|at| at.duration_since(started_wall).ok());
        let server = offer
            .packet
            .server_id()
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(offer.packet.siaddr);
        let file = boot_file(&offer.packet);
        let uefi = who.firmware == Firmware::UefiX64;
        let round = uefi || self.binl_round == BinlRound::Always;
        if let (Some(file), false) = (&file, round) {
            return Ok(Exchange {
                offer_after,
                offer_wire,
                boot_file_after: offer_after,
                boot_file: file.clone(),
                tftp_server: tftp_server(&offer.packet, server),
                used_boot_server: false,
                discovers_sent,
            });
        }
        // A menu names the item to ask for (dnsmasq); an OFFER that names the file has none, and
        // firmware then asks its server without option 43 (OVMF).
        let (item, boot_server) = match boot_item(&offer.packet, server) {
            Some((item, at)) => (Some(item), at),
            None if file.is_some() || uefi => (None, server),
            None => return Err(DhcpFailure::NothingToBoot),
        };
        let request = boot_server_request(who, self.client_ip, item);
        let to = SocketAddrV4::new(boot_server, PXE_BOOT_SERVER_PORT);
        // EDK2 sends from udp/4011; a BIOS ROM (and iPXE) from udp/68.
        let from = if uefi { &self.binl } else { &self.socket };
        for _ in 0..retry.attempts.max(1) {
            self.send(from, &request, to).await?;
            let deadline = Instant::now() + retry.timeout;
            if let Some(ack) = registration.wait_for(MessageType::Ack, deadline).await {
                let Some(file) = boot_file(&ack.packet) else {
                    return Err(DhcpFailure::NothingToBoot);
                };
                return Ok(Exchange {
                    offer_after,
                    offer_wire,
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

/// A socket every simulated client shares: broadcast, on `device`, kernel receive timestamps.
fn shared_socket(device: &str, port: u16) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind_device(Some(device.as_bytes()))?;
    // Hundreds of offers can land within a second; do not let the client drop them.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::ReceiveTimestampns,
        &true,
    )
    .map_err(std::io::Error::from)?;
    let any: SocketAddr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into();
    socket.bind(&any.into())?;
    UdpSocket::from_std(socket.into())
}

/// One datagram and the kernel's receive timestamp, without blocking (`WouldBlock` when empty).
fn recv_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<SystemTime>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn};
    let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let mut at = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
                let since_epoch = Duration::new(
                    u64::try_from(ts.tv_sec()).unwrap_or(0),
                    u32::try_from(ts.tv_nsec()).unwrap_or(0),
                );
                at = SystemTime::UNIX_EPOCH.checked_add(since_epoch);
            }
        }
    }
    Ok((msg.bytes, at))
}

impl Drop for DhcpClient {
    fn drop(&mut self) {
        for receiver in &self.receivers {
            receiver.abort();
        }
    }
}

async fn receive(socket: Arc<UdpSocket>, waiting: Waiting, unclaimed: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, kernel_at)) = socket
            .async_io(Interest::READABLE, || recv_stamped(&socket, &mut buf))
            .await
        else {
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
                let _ = tx.send(Reply {
                    packet,
                    at,
                    kernel_at,
                });
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
    p.options
        .set(code::CLIENT_NDI, who.firmware.network_interface());
    p.options
        .set(code::CLIENT_ARCH, who.firmware.arch().to_be_bytes());
    p.set_vendor_class(who.firmware.vendor_class());
    p
}

/// A PXE client's DISCOVER. The broadcast flag is set, as PXE ROMs do, so every server
/// answers to 255.255.255.255.
pub fn discover(who: &PxeIdentity) -> Packet {
    let mut p = base_request(who, MessageType::Discover);
    p.flags = Packet::FLAG_BROADCAST;
    p
}

/// The boot-server REQUEST PXE firmware unicasts to udp/4011 (PXE 2.1 section 2.2.6), naming
/// the menu item when the OFFER had a menu.
fn boot_server_request(who: &PxeIdentity, client_ip: Ipv4Addr, item_type: Option<u16>) -> Packet {
    let mut p = base_request(who, MessageType::Request);
    p.ciaddr = client_ip;
    if let Some(item_type) = item_type {
        let mut vendor = Options::new();
        let [hi, lo] = item_type.to_be_bytes();
        vendor.set(PXE_BOOT_ITEM, [hi, lo, 0, 0]);
        p.set_vendor_specific(&vendor.encode());
    }
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
    fn discover_is_a_pxe_discover_of_its_firmware() {
        for (firmware, arch, class) in [
            (Firmware::Bios, 0, BIOS_VENDOR_CLASS),
            (Firmware::UefiX64, 7, UEFI_X64_VENDOR_CLASS),
        ] {
            let who = PxeIdentity {
                mac: [2, 0xbf, 0, 0, 0, 1],
                xid: 42,
                uuid: [7; 16],
                firmware,
            };
            let p = Packet::parse(&discover(&who).encode()).expect("parses");
            assert_eq!(p.message_type(), Some(MessageType::Discover));
            assert_eq!(p.client_architectures(), Some(vec![arch]));
            assert_eq!(p.vendor_class(), Some(class));
            assert_eq!(p.xid, 42);
            assert_eq!(p.flags, Packet::FLAG_BROADCAST);
            let request = boot_server_request(&who, Ipv4Addr::new(10, 77, 0, 10), None);
            let p = Packet::parse(&request.encode()).expect("parses");
            assert_eq!(p.message_type(), Some(MessageType::Request));
            assert_eq!(p.vendor_specific(), None);
        }
    }
}
