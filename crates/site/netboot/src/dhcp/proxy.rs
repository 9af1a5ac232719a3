//! The proxyDHCP decision: given one request, answer it or stay silent.
//!
//! A proxyDHCP server (PXE 2.1) never hands out addresses: the site's DHCP server
//! does that. It answers only network-boot clients, with the boot server (`siaddr`) and the boot
//! file, on two ports:
//!
//! - udp/67, next to the site's DHCP server: DHCPDISCOVER gets a DHCPOFFER. A DHCPREQUEST there
//!   almost always belongs to the site server's exchange and gets nothing (see
//!   [`dhcp_port_request`] for the rule and why).
//! - udp/4011, the PXE boot-server port: once they have an address, UEFI firmware (EDK2/OVMF,
//!   which reads a proxy offer without option 43 as "ask the boot server") and iPXE (which
//!   confirms every proxy offer) come back here with a DHCPREQUEST (or DHCPINFORM). The ACK goes
//!   back to the exact source address and port (68 for iPXE, 4011 for EDK2).
//!
//! Which file: a client that already runs iPXE (user class "iPXE") gets the iPXE script URL, so a
//! prebuilt iPXE runs our script instead of downloading itself again; every other client gets the
//! file for its architecture (option 93, else the `Arch:` field of option 60, else BIOS).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::packet::{code, MacAddr, MessageType, Op, Options, Packet};

pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;
/// The PXE boot-server ("BINL") port.
pub const PXE_BOOT_SERVER_PORT: u16 = 4011;

/// Option 60 prefixes of the clients we answer (PXE 2.1; UEFI 2.5 HTTP boot).
const PXE_CLIENT: &[u8] = b"PXEClient";
const HTTP_CLIENT: &[u8] = b"HTTPClient";
/// Option 77 as iPXE sends it.
const IPXE_USER_CLASS: &[u8] = b"iPXE";

/// PXE 2.1 option 43 sub-options.
const PXE_DISCOVERY_CONTROL: u8 = 6;
const PXE_BOOT_ITEM: u8 = 71;
/// PXE_DISCOVERY_CONTROL bit 3: "if a boot file name is present in the offer, download it; no
/// prompt, no menu, no boot-server discovery". dnsmasq sends 8 when it has no menu, smee always.
const DISCOVERY_USE_BOOT_FILE: u8 = 0b1000;

/// Without option 57, a client only promises to take 576-byte IP datagrams (RFC 2131 section 2).
const DEFAULT_MAX_DATAGRAM: usize = 576;
/// Option 57 is read as a whole IP datagram size (RFC 2132 sets its floor at 576, the IP
/// minimum), so the IP and UDP headers come off it. Clients that meant the DHCP message alone
/// (iPXE sends 1472) just get 28 bytes less than they could take.
const IP_AND_UDP_HEADERS: usize = 28;

/// Which socket a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// udp/67, shared with the site's DHCP server.
    Dhcp,
    /// udp/4011, the PXE boot-server port.
    Binl,
}

impl Port {
    pub fn number(self) -> u16 {
        match self {
            Port::Dhcp => DHCP_SERVER_PORT,
            Port::Binl => PXE_BOOT_SERVER_PORT,
        }
    }
}

/// Boot file per kind of client; `None` (or empty) means clients of that kind are not answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootFiles {
    /// BIOS PXE, over TFTP, e.g. `undionly.kpxe`.
    pub bios: Option<String>,
    /// x86-64 UEFI PXE (arch 7 and 9), over TFTP, e.g. `ipxe.efi`.
    pub uefi_x64: Option<String>,
    /// 32-bit x86 UEFI PXE (arch 6), over TFTP.
    pub uefi_ia32: Option<String>,
    /// ARM64 UEFI PXE (arch 11), over TFTP, e.g. `ipxe-arm64.efi`.
    pub uefi_arm64: Option<String>,
    /// x86-64 UEFI HTTP boot: a full `http://` URL.
    pub http_x64: Option<String>,
    /// ARM64 UEFI HTTP boot: a full `http://` URL.
    pub http_arm64: Option<String>,
    /// The `http://` URL of the iPXE script, for clients already running iPXE.
    pub ipxe_script: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Our address on the client's network: server identifier, next server, TFTP server.
    pub server_ip: Ipv4Addr,
    pub boot: BootFiles,
}

/// Client system architecture (RFC 4578 section 2.1 and the IANA "Processor Architecture Types"
/// registry, which corrected RFC 4578's swapped 7 and 9: both are x86-64 UEFI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientArch {
    /// 0: x86 BIOS.
    Bios,
    /// 6: x86 UEFI (32-bit).
    EfiIa32,
    /// 7: x64 UEFI ("EFI BC" in RFC 4578); what EDK2/OVMF sends.
    EfiBc,
    /// 9: x64 UEFI.
    EfiX64,
    /// 10: ARM 32-bit UEFI.
    EfiArm32,
    /// 11: ARM 64-bit UEFI.
    EfiArm64,
    /// 15: x86 UEFI HTTP boot.
    HttpX86,
    /// 16: x64 UEFI HTTP boot.
    HttpX64,
    /// 19: ARM 64-bit UEFI HTTP boot.
    HttpArm64,
    Other(u16),
}

impl From<u16> for ClientArch {
    fn from(value: u16) -> Self {
        match value {
            0 => ClientArch::Bios,
            6 => ClientArch::EfiIa32,
            7 => ClientArch::EfiBc,
            9 => ClientArch::EfiX64,
            10 => ClientArch::EfiArm32,
            11 => ClientArch::EfiArm64,
            15 => ClientArch::HttpX86,
            16 => ClientArch::HttpX64,
            19 => ClientArch::HttpArm64,
            other => ClientArch::Other(other),
        }
    }
}

impl From<ClientArch> for u16 {
    fn from(arch: ClientArch) -> Self {
        match arch {
            ClientArch::Bios => 0,
            ClientArch::EfiIa32 => 6,
            ClientArch::EfiBc => 7,
            ClientArch::EfiX64 => 9,
            ClientArch::EfiArm32 => 10,
            ClientArch::EfiArm64 => 11,
            ClientArch::HttpX86 => 15,
            ClientArch::HttpX64 => 16,
            ClientArch::HttpArm64 => 19,
            ClientArch::Other(other) => other,
        }
    }
}

impl ClientArch {
    /// The UEFI HTTP boot architecture types.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            ClientArch::HttpX86 | ClientArch::HttpX64 | ClientArch::HttpArm64
        )
    }
}

impl ClientArch {
    /// The architecture's name without its number: one of a fixed few (a metric label).
    pub fn name(self) -> &'static str {
        match self {
            ClientArch::Bios => "x86 bios",
            ClientArch::EfiIa32 => "x86 uefi",
            ClientArch::EfiBc | ClientArch::EfiX64 => "x64 uefi",
            ClientArch::EfiArm32 => "arm32 uefi",
            ClientArch::EfiArm64 => "arm64 uefi",
            ClientArch::HttpX86 => "x86 uefi http",
            ClientArch::HttpX64 => "x64 uefi http",
            ClientArch::HttpArm64 => "arm64 uefi http",
            ClientArch::Other(_) => "other",
        }
    }
}

impl fmt::Display for ClientArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), u16::from(*self))
    }
}

/// What the socket layer publishes as a boot event when it sends a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub mac: MacAddr,
    pub arch: ClientArch,
    /// The client already runs iPXE (option 77 "iPXE").
    pub ipxe: bool,
    /// From option 97; `None` when absent, malformed, or all zeros (EDK2 sends zeros when the
    /// machine has no SMBIOS UUID).
    pub uuid: Option<[u8; 16]>,
    pub boot_file: String,
}

/// Where to send a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// 255.255.255.255:68: the client has no address yet.
    Broadcast,
    /// Straight to the client: `ciaddr:68`, or the source of a udp/4011 request.
    Unicast(SocketAddrV4),
    /// To the relay agent in `giaddr`, on port 67 (RFC 2131 section 4.1).
    Relay(Ipv4Addr),
}

impl Destination {
    pub fn socket_addr(self) -> SocketAddrV4 {
        match self {
            Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_CLIENT_PORT),
            Destination::Unicast(address) => address,
            Destination::Relay(relay) => SocketAddrV4::new(relay, DHCP_SERVER_PORT),
        }
    }
}

/// Why a request gets no answer. Most traffic on udp/67 is `NotNetbootClient`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreReason {
    /// `op` is not BOOTREQUEST: a server's reply, ours or another's.
    NotBootRequest,
    /// Option 60 is absent or starts with neither "PXEClient" nor "HTTPClient".
    NotNetbootClient,
    /// No usable option 53: plain BOOTP, or broken.
    NotDhcp,
    /// A message type this port does not answer.
    UnhandledMessageType {
        port: Port,
        message_type: MessageType,
    },
    /// A DHCPREQUEST on udp/67 that asks for an address (option 50, or no `ciaddr` yet): the
    /// client selecting or confirming the site server's lease. Whatever its option 54 says: on
    /// a host shared with the site's DHCP server, that server's identifier is our address too.
    RequestForAddress { server_id: Option<Ipv4Addr> },
    /// A DHCPREQUEST on udp/67 from a client that has its address, naming another server, or
    /// no server at all (renewing or rebinding with the site server).
    RequestForAnotherServer { server_id: Option<Ipv4Addr> },
    /// A udp/4011 request from 0.0.0.0: there is nowhere to send the answer.
    UnspecifiedSource,
    /// Not an Ethernet hardware address.
    NotEthernet { htype: u8, hlen: u8 },
    /// An option we need is malformed (e.g. option 93 of odd length).
    MalformedOption { code: u8 },
    /// No boot file is configured for this kind of client.
    NoBootFile { arch: ClientArch, http: bool },
    /// The reply would not fit in what the client accepts (option 57, default 576).
    ReplyTooLarge { size: usize, limit: usize },
}

impl IgnoreReason {
    /// The reason as a fixed snake_case name, without addresses or sizes (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            IgnoreReason::NotBootRequest => "not_boot_request",
            IgnoreReason::NotNetbootClient => "not_netboot_client",
            IgnoreReason::NotDhcp => "not_dhcp",
            IgnoreReason::UnhandledMessageType { .. } => "unhandled_message_type",
            IgnoreReason::RequestForAddress { .. } => "request_for_address",
            IgnoreReason::RequestForAnotherServer { .. } => "request_for_another_server",
            IgnoreReason::UnspecifiedSource => "unspecified_source",
            IgnoreReason::NotEthernet { .. } => "not_ethernet",
            IgnoreReason::MalformedOption { .. } => "malformed_option",
            IgnoreReason::NoBootFile { .. } => "no_boot_file",
            IgnoreReason::ReplyTooLarge { .. } => "reply_too_large",
        }
    }
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IgnoreReason::NotBootRequest => f.write_str("not a boot request"),
            IgnoreReason::NotNetbootClient => f.write_str("not a pxe or http boot client"),
            IgnoreReason::NotDhcp => f.write_str("no dhcp message type"),
            IgnoreReason::UnhandledMessageType { port, message_type } => {
                write!(f, "port {} does not answer {message_type}", port.number())
            }
            IgnoreReason::RequestForAddress {
                server_id: Some(server),
            } => write!(f, "request for an address from {server}"),
            IgnoreReason::RequestForAddress { server_id: None } => {
                f.write_str("request for an address")
            }
            IgnoreReason::RequestForAnotherServer {
                server_id: Some(server),
            } => write!(f, "request for another server ({server})"),
            IgnoreReason::RequestForAnotherServer { server_id: None } => {
                f.write_str("request names no server")
            }
            IgnoreReason::UnspecifiedSource => f.write_str("request from an unspecified address"),
            IgnoreReason::NotEthernet { htype, hlen } => {
                write!(f, "hardware type {htype} length {hlen} is not ethernet")
            }
            IgnoreReason::MalformedOption { code } => write!(f, "option {code} is malformed"),
            IgnoreReason::NoBootFile { arch, http } => {
                let kind = if *http { "http" } else { "pxe" };
                write!(f, "no {kind} boot file configured for {arch}")
            }
            IgnoreReason::ReplyTooLarge { size, limit } => {
                write!(
                    f,
                    "reply of {size} bytes exceeds the client's limit of {limit}"
                )
            }
        }
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
// One decision per received packet, moved once to the socket loop: boxing the packet would
// buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    Ignore(IgnoreReason),
    Reply {
        packet: Packet,
        to: Destination,
        client: ClientInfo,
    },
}

/// Decides how to answer `request`, which arrived on `port` from `source`.
pub fn decide(
    request: &Packet,
    port: Port,
    source: SocketAddrV4,
    config: &ProxyConfig,
) -> Decision {
    match reply(request, port, source, config) {
        Ok((packet, to, client)) => Decision::Reply { packet, to, client },
        Err(reason) => Decision::Ignore(reason),
    }
}

fn reply(
    request: &Packet,
    port: Port,
    source: SocketAddrV4,
    config: &ProxyConfig,
) -> Result<(Packet, Destination, ClientInfo), IgnoreReason> {
    if request.op != Op::BootRequest {
        return Err(IgnoreReason::NotBootRequest);
    }
    let vendor_class = request.vendor_class().unwrap_or_default();
    let asks_http = if vendor_class.starts_with(HTTP_CLIENT) {
        true
    } else if vendor_class.starts_with(PXE_CLIENT) {
        false
    } else {
        return Err(IgnoreReason::NotNetbootClient);
    };
    let message_type = request.message_type().ok_or(IgnoreReason::NotDhcp)?;
    let unhandled = IgnoreReason::UnhandledMessageType { port, message_type };
    let (reply_type, to) = match port {
        Port::Dhcp => match message_type {
            MessageType::Discover => (MessageType::Offer, dhcp_port_destination(request)),
            MessageType::Request => {
                dhcp_port_request(request, config.server_ip)?;
                (MessageType::Ack, dhcp_port_destination(request))
            }
            _ => return Err(unhandled),
        },
        Port::Binl => match message_type {
            MessageType::Request | MessageType::Inform => {
                if source.ip().is_unspecified() {
                    return Err(IgnoreReason::UnspecifiedSource);
                }
                (MessageType::Ack, Destination::Unicast(source))
            }
            _ => return Err(unhandled),
        },
    };
    let mac = request.mac().ok_or(IgnoreReason::NotEthernet {
        htype: request.htype,
        hlen: request.hlen,
    })?;
    let arch = client_arch(request, vendor_class)?;
    let ipxe = request.has_user_class(IPXE_USER_CLASS);
    // An HTTP boot client says so in option 60, its architecture type, or both.
    let http = asks_http || arch.is_http();
    let boot_file = choose_boot_file(&config.boot, arch, ipxe, http)
        .ok_or(IgnoreReason::NoBootFile { arch, http })?;

    let mut packet = Packet::reply_to(request);
    packet.siaddr = config.server_ip;
    packet.set_file_name(boot_file.as_bytes());
    packet.set_message_type(reply_type);
    packet.set_server_id(config.server_ip);
    // Clients only take a proxy reply that names their own kind in option 60.
    packet.set_vendor_class(if http { HTTP_CLIENT } else { PXE_CLIENT });
    // PXE 2.1 has servers hand the client's machine id (option 97) back in their replies.
    if let Some(machine_id) = request.client_machine_id() {
        packet.set_client_machine_id(machine_id);
    }
    if !boot_file.contains("://") {
        packet.set_tftp_server_name(config.server_ip.to_string().as_bytes());
    }
    packet.set_bootfile_name(boot_file.as_bytes());
    // BIOS PXE ROMs are told to boot the file rather than look for boot servers. UEFI clients
    // get no option 43: EDK2 then asks us again on udp/4011, the path seen working with OVMF.
    // iPXE needs no telling.
    if arch == ClientArch::Bios && !http && !ipxe {
        packet.set_vendor_specific(&pxe_vendor_options(request));
    }

    let size = packet.encoded_len();
    let limit = reply_size_limit(request);
    if size > limit {
        return Err(IgnoreReason::ReplyTooLarge { size, limit });
    }
    let client = ClientInfo {
        mac,
        arch,
        ipxe,
        uuid: request.client_uuid().filter(|uuid| *uuid != [0; 16]),
        boot_file: boot_file.to_owned(),
    };
    Ok((packet, to, client))
}

/// Whether a DHCPREQUEST on udp/67 is ours to answer; `Err` says whose it is.
///
/// A proxyDHCP server has no part in the exchange that grants the address. RFC 2131 section
/// 4.3.2 tells it apart: a client SELECTING an offer or in INIT-REBOOT asks for an address in
/// option 50 and has no `ciaddr` yet; RENEWING and REBINDING clients have a `ciaddr` and name no
/// server (option 54 is forbidden there). PXE 2.1 sends the request that follows a proxy offer to
/// the boot server port, udp/4011, never to udp/67; dnsmasq in proxy mode answers only
/// DHCPDISCOVER on udp/67 and smee's proxy ACKs every request (which breaks clients the same way).
/// An ACK from us to the address exchange carries `yiaddr` 0.0.0.0: on a host shared with the
/// site's DHCP server (one address, so one server identifier for both) EDK2 takes it for the
/// server's ACK, declines the lease and stops with PXE-E07. So, in this order:
///
/// 1. option 50 present, or no `ciaddr`: the address exchange, whatever server it names;
/// 2. option 54 names another server: that server's;
/// 3. option 54 names us: a client that holds its address and asks us for its boot file here
///    rather than on udp/4011. Answered: no lease exchange looks like this;
/// 4. no option 54: a renewal with the site server, unless option 43 carries a PXE boot item,
///    which makes it PXE 2.1 boot server discovery by broadcast (EDK2 sends it to udp/67 when a
///    proxy offer tells it to discover by broadcast). Answered, as on udp/4011.
fn dhcp_port_request(request: &Packet, server_ip: Ipv4Addr) -> Result<(), IgnoreReason> {
    let server_id = request.server_id();
    if request.options.contains(code::REQUESTED_IP) || request.ciaddr.is_unspecified() {
        return Err(IgnoreReason::RequestForAddress { server_id });
    }
    if request.options.contains(code::SERVER_ID) {
        return match server_id {
            Some(server) if server == server_ip => Ok(()),
            server_id => Err(IgnoreReason::RequestForAnotherServer { server_id }),
        };
    }
    if requested_boot_item(request).is_some() {
        Ok(())
    } else {
        Err(IgnoreReason::RequestForAnotherServer { server_id: None })
    }
}

/// RFC 2131 section 4.1 for a server that assigns no address: via the relay if there is one,
/// else to the client's own address if it has one, else broadcast.
fn dhcp_port_destination(request: &Packet) -> Destination {
    if !request.giaddr.is_unspecified() {
        Destination::Relay(request.giaddr)
    } else if !request.ciaddr.is_unspecified() {
        Destination::Unicast(SocketAddrV4::new(request.ciaddr, DHCP_CLIENT_PORT))
    } else {
        Destination::Broadcast
    }
}

fn client_arch(request: &Packet, vendor_class: &[u8]) -> Result<ClientArch, IgnoreReason> {
    if request.options.contains(code::CLIENT_ARCH) {
        // Clients list one type in practice; the first is the one they boot as.
        let first = request
            .client_architectures()
            .and_then(|types| types.first().copied())
            .ok_or(IgnoreReason::MalformedOption {
                code: code::CLIENT_ARCH,
            })?;
        return Ok(ClientArch::from(first));
    }
    match arch_from_vendor_class(vendor_class) {
        Ok(Some(arch)) => Ok(ClientArch::from(arch)),
        // PXE 2.1 clients all send an architecture; one that sends none is an old BIOS ROM.
        Ok(None) => Ok(ClientArch::Bios),
        Err(()) => Err(IgnoreReason::MalformedOption {
            code: code::VENDOR_CLASS,
        }),
    }
}

/// The `xxxxx` of `PXEClient:Arch:xxxxx:UNDI:yyyzzz` (five decimal digits); `Ok(None)` when the
/// class has no `Arch` field, `Err` when the field is there but not a number.
fn arch_from_vendor_class(vendor_class: &[u8]) -> Result<Option<u16>, ()> {
    let mut fields = vendor_class.split(|byte| *byte == b':').skip(1);
    match (fields.next(), fields.next()) {
        (Some(b"Arch"), Some(digits)) => {
            if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let number = digits
                .iter()
                .fold(0u32, |sum, digit| sum * 10 + u32::from(digit - b'0'));
            u16::try_from(number).map(Some).map_err(|_| ())
        }
        _ => Ok(None),
    }
}

fn choose_boot_file(files: &BootFiles, arch: ClientArch, ipxe: bool, http: bool) -> Option<&str> {
    fn configured(file: &Option<String>) -> Option<&str> {
        file.as_deref().filter(|name| !name.is_empty())
    }
    if ipxe {
        if let Some(script) = configured(&files.ipxe_script) {
            return Some(script);
        }
    }
    let file = if http {
        match arch {
            ClientArch::HttpX64 | ClientArch::EfiBc | ClientArch::EfiX64 => &files.http_x64,
            ClientArch::HttpArm64 | ClientArch::EfiArm64 => &files.http_arm64,
            _ => return None,
        }
    } else {
        match arch {
            ClientArch::Bios => &files.bios,
            ClientArch::EfiIa32 => &files.uefi_ia32,
            ClientArch::EfiBc | ClientArch::EfiX64 => &files.uefi_x64,
            ClientArch::EfiArm64 => &files.uefi_arm64,
            _ => return None,
        }
    };
    configured(file)
}

/// Option 43 for BIOS PXE ROMs: discovery control "just boot the file", and the boot item back
/// if the request named one (PXE 2.1 has a boot-server ACK repeat it).
fn pxe_vendor_options(request: &Packet) -> Vec<u8> {
    let mut suboptions = Options::new();
    suboptions.set(PXE_DISCOVERY_CONTROL, [DISCOVERY_USE_BOOT_FILE]);
    if let Some(item) = requested_boot_item(request) {
        suboptions.set(PXE_BOOT_ITEM, item);
    }
    suboptions.encode()
}

/// The PXE boot item (option 43, sub-option 71) a boot server request names.
fn requested_boot_item(request: &Packet) -> Option<Vec<u8>> {
    request
        .vendor_specific()
        .and_then(|value| Options::parse(value).ok())
        .and_then(|requested| requested.get(PXE_BOOT_ITEM).map(<[u8]>::to_vec))
}

fn reply_size_limit(request: &Packet) -> usize {
    let datagram = request
        .max_message_size()
        .map_or(DEFAULT_MAX_DATAGRAM, |size| {
            usize::from(size).max(DEFAULT_MAX_DATAGRAM)
        });
    datagram.saturating_sub(IP_AND_UDP_HEADERS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const SITE_DHCP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const SCRIPT: &str = "http://192.168.1.5:8080/api/mainscripts/3f2a?token=abc";
    const UUID: [u8; 16] = [
        0x8c, 0x1d, 0x2f, 0x3e, 0x4a, 0x5b, 0x46, 0x7c, 0x9d, 0x0e, 0x1f, 0x2a, 0x3b, 0x4c, 0x5d,
        0x6e,
    ];

    fn config() -> ProxyConfig {
        let some = |name: &str| Some(name.to_owned());
        ProxyConfig {
            server_ip: SERVER,
            boot: BootFiles {
                bios: some("undionly.kpxe"),
                uefi_x64: some("ipxe.efi"),
                uefi_ia32: some("ipxe-ia32.efi"),
                uefi_arm64: some("ipxe-arm64.efi"),
                http_x64: some("http://192.168.1.10:8080/boot/ipxe.efi"),
                http_arm64: some("http://192.168.1.10:8080/boot/ipxe-arm64.efi"),
                ipxe_script: some(SCRIPT),
            },
        }
    }

    /// Header fields that differ between the fixtures.
    struct Header {
        xid: u32,
        flags: u16,
        ciaddr: [u8; 4],
        giaddr: [u8; 4],
    }

    const FRESH: Header = Header {
        xid: 0x0012_3456,
        flags: 0,
        ciaddr: [0; 4],
        giaddr: [0; 4],
    };

    /// Writes a request byte by byte, as the wire has it, without `Packet::encode`.
    /// A fresh DISCOVER with only its client architecture (option 93) and vendor class (60).
    fn discover(arch: u16, vendor_class: &[u8]) -> Vec<u8> {
        wire(
            FRESH,
            &[(53, &[1]), (93, &arch.to_be_bytes()), (60, vendor_class)],
        )
    }

    fn wire(header: Header, options: &[(u8, &[u8])]) -> Vec<u8> {
        let mut bytes = vec![1, 1, 6, 0]; // BOOTREQUEST, Ethernet, 6-byte address, no hops
        bytes.extend_from_slice(&header.xid.to_be_bytes());
        bytes.extend_from_slice(&[0, 4]); // secs
        bytes.extend_from_slice(&header.flags.to_be_bytes());
        bytes.extend_from_slice(&header.ciaddr);
        bytes.extend_from_slice(&[0; 8]); // yiaddr, siaddr
        bytes.extend_from_slice(&header.giaddr);
        bytes.extend_from_slice(&MAC);
        bytes.extend_from_slice(&[0; 10 + 64 + 128]); // chaddr padding, sname, file
        bytes.extend_from_slice(&[99, 130, 83, 99]);
        for (option_code, value) in options {
            bytes.push(*option_code);
            bytes.push(u8::try_from(value.len()).expect("short option"));
            bytes.extend_from_slice(value);
        }
        bytes.push(255);
        bytes
    }

    fn parse(bytes: &[u8]) -> Packet {
        Packet::parse(bytes).expect("fixture parses")
    }

    fn machine_id() -> Vec<u8> {
        let mut id = vec![0];
        id.extend_from_slice(&UUID);
        id
    }

    fn client_id() -> Vec<u8> {
        let mut id = vec![1];
        id.extend_from_slice(&MAC);
        id
    }

    /// iPXE's DHCPDISCOVER (net/udp/dhcp.c): max size 1472, arch, NDI UNDI 2.1, the PXE vendor
    /// class, user class as the bare string "iPXE", its feature list (175), client id, UUID.
    fn ipxe_discover(arch: u16) -> Vec<u8> {
        let vendor_class = format!("PXEClient:Arch:{arch:05}:UNDI:002001");
        wire(
            FRESH,
            &[
                (53, &[1]),
                (57, &[0x05, 0xc0]),
                (93, &arch.to_be_bytes()),
                (94, &[1, 2, 1]),
                (60, vendor_class.as_bytes()),
                (77, b"iPXE"),
                (
                    55,
                    &[
                        1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132,
                        133, 134, 135, 175, 203,
                    ],
                ),
                (
                    175,
                    &[
                        0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e, 0xeb, 0x03, 0x01, 0x00, 0x00,
                        0x17, 0x01, 0x01, 0x13, 0x01, 0x01,
                    ],
                ),
                (61, &client_id()),
                (97, &machine_id()),
            ],
        )
    }

    /// A BIOS vendor PXE ROM (Intel/Realtek style): no user class, 43 not asked for explicitly.
    fn bios_rom_discover() -> Vec<u8> {
        wire(
            FRESH,
            &[
                (53, &[1]),
                (57, &[0x04, 0xec]),
                (
                    55,
                    &[
                        1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67, 128, 129,
                        130, 131, 132, 133, 134, 135,
                    ],
                ),
                (97, &machine_id()),
                (94, &[1, 2, 1]),
                (93, &[0, 0]),
                (60, b"PXEClient:Arch:00000:UNDI:002001"),
            ],
        )
    }

    /// EDK2/OVMF's DHCPDISCOVER (NetworkPkg/UefiPxeBcDxe, PxeBcBuildDhcp4Options): its 35-entry
    /// request list, UUID, NDI UNDI 3.0, arch 7, vendor class with UNDI 003000.
    fn ovmf_discover() -> Vec<u8> {
        wire(FRESH, &ovmf_options(1))
    }

    fn ovmf_options(message_type: u8) -> Vec<(u8, &'static [u8])> {
        const ID: &[u8] = &[
            0, 0x8c, 0x1d, 0x2f, 0x3e, 0x4a, 0x5b, 0x46, 0x7c, 0x9d, 0x0e, 0x1f, 0x2a, 0x3b, 0x4c,
            0x5d, 0x6e,
        ];
        let message: &'static [u8] = match message_type {
            1 => &[1],
            3 => &[3],
            _ => &[8],
        };
        vec![
            (53, message),
            (57, &[0x05, 0xc0]),
            (
                55,
                &[
                    1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54,
                    58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135,
                ],
            ),
            (97, ID),
            (94, &[1, 3, 0]),
            (93, &[0, 7]),
            (60, b"PXEClient:Arch:00007:UNDI:003000"),
        ]
    }

    /// An ordinary client (dhclient): no vendor class at all.
    fn dhclient_discover() -> Vec<u8> {
        wire(
            FRESH,
            &[
                (53, &[1]),
                (50, &[192, 168, 1, 77]),
                (12, b"debian"),
                (55, &[1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42]),
            ],
        )
    }

    /// Windows: a vendor class, but not a boot client's.
    fn windows_discover() -> Vec<u8> {
        wire(
            FRESH,
            &[
                (53, &[1]),
                (61, &client_id()),
                (12, b"DESKTOP-1"),
                (60, b"MSFT 5.0"),
                (
                    55,
                    &[1, 3, 6, 15, 31, 33, 43, 44, 46, 47, 119, 121, 249, 252],
                ),
            ],
        )
    }

    fn from_client() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT)
    }

    fn decide_on(bytes: &[u8], port: Port, source: SocketAddrV4) -> Decision {
        decide(&parse(bytes), port, source, &config())
    }

    /// The reply, as a client would read it off the wire.
    fn expect_reply(decision: Decision) -> (Packet, Destination, ClientInfo) {
        match decision {
            Decision::Reply { packet, to, client } => {
                let wire = packet.encode();
                assert_eq!(
                    Packet::parse(&wire).as_ref(),
                    Ok(&packet),
                    "reply round-trips"
                );
                (packet, to, client)
            }
            Decision::Ignore(reason) => panic!("expected a reply, got ignored: {reason}"),
        }
    }

    fn expect_ignore(decision: Decision) -> IgnoreReason {
        match decision {
            Decision::Ignore(reason) => reason,
            Decision::Reply { packet, .. } => panic!("expected ignore, got a reply {packet:?}"),
        }
    }

    fn suboptions(packet: &Packet) -> Option<Options> {
        packet
            .vendor_specific()
            .map(|value| Options::parse(value).expect("option 43"))
    }

    #[test]
    fn ipxe_is_sent_to_the_script_instead_of_itself() {
        let request = parse(&ipxe_discover(0));
        let (reply, to, client) =
            expect_reply(decide(&request, Port::Dhcp, from_client(), &config()));
        assert_eq!(reply.message_type(), Some(MessageType::Offer));
        assert_eq!(reply.bootfile_name(), Some(SCRIPT.as_bytes()));
        assert_eq!(reply.file_name(), Some(SCRIPT.as_bytes()));
        assert_eq!(reply.tftp_server_name(), None, "a url needs no tftp server");
        assert_eq!(
            reply.vendor_specific(),
            None,
            "ipxe needs no discovery control"
        );
        assert_eq!(reply.vendor_class(), Some(&b"PXEClient"[..]));
        assert_eq!(reply.server_id(), Some(SERVER));
        assert_eq!(reply.siaddr, SERVER);
        assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.xid, request.xid);
        assert_eq!(reply.chaddr, request.chaddr);
        assert_eq!(to, Destination::Broadcast);
        assert_eq!(
            client,
            ClientInfo {
                mac: MacAddr(MAC),
                arch: ClientArch::Bios,
                ipxe: true,
                uuid: Some(UUID),
                boot_file: SCRIPT.to_owned(),
            }
        );
    }

    #[test]
    fn ipxe_on_uefi_gets_the_script_too() {
        let (reply, _, client) =
            expect_reply(decide_on(&ipxe_discover(7), Port::Dhcp, from_client()));
        assert_eq!(reply.bootfile_name(), Some(SCRIPT.as_bytes()));
        assert_eq!(client.arch, ClientArch::EfiBc);
    }

    #[test]
    fn ipxe_without_a_script_gets_its_arch_file_and_no_option_43() {
        let mut config = config();
        config.boot.ipxe_script = None;
        let request = parse(&ipxe_discover(0));
        let (reply, _, client) = expect_reply(decide(&request, Port::Dhcp, from_client(), &config));
        assert_eq!(reply.bootfile_name(), Some(&b"undionly.kpxe"[..]));
        assert_eq!(reply.vendor_specific(), None);
        assert!(client.ipxe);
        // An empty script is no script.
        config.boot.ipxe_script = Some(String::new());
        let (reply, _, _) = expect_reply(decide(&request, Port::Dhcp, from_client(), &config));
        assert_eq!(reply.bootfile_name(), Some(&b"undionly.kpxe"[..]));
    }

    #[test]
    fn bios_pxe_rom_gets_tftp_file_and_discovery_control() {
        let (reply, to, client) =
            expect_reply(decide_on(&bios_rom_discover(), Port::Dhcp, from_client()));
        assert_eq!(reply.bootfile_name(), Some(&b"undionly.kpxe"[..]));
        assert_eq!(reply.file_name(), Some(&b"undionly.kpxe"[..]));
        assert_eq!(reply.tftp_server_name(), Some(&b"192.168.1.10"[..]));
        assert_eq!(reply.vendor_specific(), Some(&[6, 1, 8, 255][..]));
        assert_eq!(reply.client_machine_id(), Some(&machine_id()[..]));
        assert_eq!(to, Destination::Broadcast);
        assert!(!client.ipxe);
        assert_eq!(client.arch, ClientArch::Bios);
    }

    #[test]
    fn ovmf_gets_ipxe_efi_without_option_43() {
        let request = parse(&ovmf_discover());
        assert_eq!(
            request.client_ndi().map(|ndi| (ndi.major, ndi.minor)),
            Some((3, 0))
        );
        let (reply, to, client) =
            expect_reply(decide(&request, Port::Dhcp, from_client(), &config()));
        assert_eq!(reply.message_type(), Some(MessageType::Offer));
        assert_eq!(reply.bootfile_name(), Some(&b"ipxe.efi"[..]));
        assert_eq!(reply.file_name(), Some(&b"ipxe.efi"[..]));
        assert_eq!(reply.tftp_server_name(), Some(&b"192.168.1.10"[..]));
        assert_eq!(reply.vendor_specific(), None);
        assert_eq!(reply.vendor_class(), Some(&b"PXEClient"[..]));
        assert_eq!(reply.client_machine_id(), request.client_machine_id());
        assert_eq!(to, Destination::Broadcast);
        assert_eq!(client.arch, ClientArch::EfiBc);
        assert_eq!(client.uuid, Some(UUID));
        // The option order a client sees: type, server, class, machine id, tftp, file.
        let codes: Vec<u8> = reply.options.iter().map(|(c, _)| c).collect();
        assert_eq!(codes, [53, 54, 60, 97, 66, 67]);
    }

    #[test]
    fn ordinary_clients_are_ignored() {
        for request in [dhclient_discover(), windows_discover()] {
            assert_eq!(
                expect_ignore(decide_on(&request, Port::Dhcp, from_client())),
                IgnoreReason::NotNetbootClient
            );
            assert_eq!(
                expect_ignore(decide_on(&request, Port::Binl, from_client())),
                IgnoreReason::NotNetbootClient
            );
        }
    }

    #[test]
    fn every_arch_gets_its_file() {
        let cases: [(u16, Option<&str>); 12] = [
            (0, Some("undionly.kpxe")),
            (6, Some("ipxe-ia32.efi")),
            (7, Some("ipxe.efi")),
            (9, Some("ipxe.efi")),
            (11, Some("ipxe-arm64.efi")),
            (16, Some("http://192.168.1.10:8080/boot/ipxe.efi")),
            (19, Some("http://192.168.1.10:8080/boot/ipxe-arm64.efi")),
            (10, None), // arm32 uefi: nothing configured for it
            (15, None), // x86 uefi http: nothing configured for it
            (2, None),  // itanium
            (41, None),
            (0xffff, None),
        ];
        for (arch, expected) in cases {
            let vendor_class = format!("PXEClient:Arch:{arch:05}:UNDI:003000");
            let request = discover(arch, vendor_class.as_bytes());
            let decision = decide_on(&request, Port::Dhcp, from_client());
            match expected {
                Some(file) => {
                    let (reply, _, client) = expect_reply(decision);
                    assert_eq!(reply.bootfile_name(), Some(file.as_bytes()), "arch {arch}");
                    assert_eq!(client.arch, ClientArch::from(arch));
                    assert_eq!(client.boot_file, file);
                    let is_url = file.starts_with("http://");
                    assert_eq!(reply.tftp_server_name().is_some(), !is_url, "arch {arch}");
                    let class: &[u8] = if is_url { b"HTTPClient" } else { b"PXEClient" };
                    assert_eq!(reply.vendor_class(), Some(class), "arch {arch}");
                    assert_eq!(reply.vendor_specific().is_some(), arch == 0, "arch {arch}");
                }
                None => assert!(
                    matches!(
                        expect_ignore(decision),
                        IgnoreReason::NoBootFile { arch: a, .. } if u16::from(a) == arch
                    ),
                    "arch {arch}"
                ),
            }
        }
    }

    #[test]
    fn uefi_http_client_gets_a_url_and_http_client_class() {
        let request = wire(
            FRESH,
            &[
                (53, &[1]),
                (57, &[0x05, 0xc0]),
                (97, &machine_id()),
                (94, &[1, 3, 1]),
                (93, &[0, 16]),
                (60, b"HTTPClient:Arch:00016:UNDI:003001"),
            ],
        );
        let (reply, _, client) = expect_reply(decide_on(&request, Port::Dhcp, from_client()));
        let url = b"http://192.168.1.10:8080/boot/ipxe.efi";
        assert_eq!(reply.bootfile_name(), Some(&url[..]));
        assert_eq!(reply.file_name(), Some(&url[..]));
        assert_eq!(reply.vendor_class(), Some(&b"HTTPClient"[..]));
        assert_eq!(reply.tftp_server_name(), None);
        assert_eq!(reply.vendor_specific(), None);
        assert_eq!(client.arch, ClientArch::HttpX64);

        // HTTPClient in option 60 with a plain x64 UEFI type still means HTTP boot.
        let request = discover(7, b"HTTPClient:Arch:00007:UNDI:003001");
        let (reply, _, _) = expect_reply(decide_on(&request, Port::Dhcp, from_client()));
        assert_eq!(reply.bootfile_name(), Some(&url[..]));
    }

    #[test]
    fn arch_falls_back_to_the_vendor_class_then_to_bios() {
        let request = wire(
            FRESH,
            &[(53, &[1]), (60, b"PXEClient:Arch:00011:UNDI:003000")],
        );
        let (_, _, client) = expect_reply(decide_on(&request, Port::Dhcp, from_client()));
        assert_eq!(client.arch, ClientArch::EfiArm64);

        let request = wire(FRESH, &[(53, &[1]), (60, b"PXEClient")]);
        let (reply, _, client) = expect_reply(decide_on(&request, Port::Dhcp, from_client()));
        assert_eq!(client.arch, ClientArch::Bios);
        assert_eq!(reply.bootfile_name(), Some(&b"undionly.kpxe"[..]));

        // Option 93 wins over the text.
        let request = discover(9, b"PXEClient:Arch:00000:UNDI:002001");
        let (_, _, client) = expect_reply(decide_on(&request, Port::Dhcp, from_client()));
        assert_eq!(client.arch, ClientArch::EfiX64);
    }

    #[test]
    fn malformed_arch_is_ignored() {
        let odd = wire(FRESH, &[(53, &[1]), (93, &[0, 7, 0]), (60, b"PXEClient")]);
        assert_eq!(
            expect_ignore(decide_on(&odd, Port::Dhcp, from_client())),
            IgnoreReason::MalformedOption { code: 93 }
        );
        for text in [
            &b"PXEClient:Arch:0x007:UNDI"[..],
            b"PXEClient:Arch:",
            b"PXEClient:Arch:99999",
        ] {
            let request = wire(FRESH, &[(53, &[1]), (60, text)]);
            assert_eq!(
                expect_ignore(decide_on(&request, Port::Dhcp, from_client())),
                IgnoreReason::MalformedOption { code: 60 },
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    /// A DHCPREQUEST on udp/67 with these options, from a client that holds `ciaddr`.
    fn port_67_request(ciaddr: [u8; 4], extra: &[(u8, &'static [u8])]) -> Packet {
        let mut options = ovmf_options(3);
        options.extend_from_slice(extra);
        parse(&wire(Header { ciaddr, ..FRESH }, &options))
    }

    const NO_ADDRESS: [u8; 4] = [0; 4];
    const HELD: [u8; 4] = [192, 168, 1, 77];

    #[test]
    fn selecting_the_site_servers_offer_is_left_alone() {
        // The client took the site server's offer; answering would confuse the exchange.
        let request = port_67_request(NO_ADDRESS, &[(54, &[192, 168, 1, 1]), (50, &HELD)]);
        assert_eq!(
            expect_ignore(decide(&request, Port::Dhcp, from_client(), &config())),
            IgnoreReason::RequestForAddress {
                server_id: Some(SITE_DHCP)
            }
        );
    }

    #[test]
    fn selecting_on_a_host_shared_with_the_site_server_is_left_alone() {
        // One address for both: the site server's identifier is ours. OVMF took our old ACK
        // (yiaddr 0.0.0.0) for the server's, declined its lease and stopped with PXE-E07.
        let mut shared = config();
        shared.server_ip = SITE_DHCP;
        let request = port_67_request(NO_ADDRESS, &[(54, &[192, 168, 1, 1]), (50, &HELD)]);
        assert_eq!(
            expect_ignore(decide(&request, Port::Dhcp, from_client(), &shared)),
            IgnoreReason::RequestForAddress {
                server_id: Some(SITE_DHCP)
            }
        );
        // iPXE's request for the same lease: the same.
        let mut ipxe = parse(&ipxe_discover(0));
        ipxe.set_message_type(MessageType::Request);
        ipxe.set_server_id(SITE_DHCP);
        ipxe.options.set(code::REQUESTED_IP, HELD);
        assert!(matches!(
            expect_ignore(decide(&ipxe, Port::Dhcp, from_client(), &shared)),
            IgnoreReason::RequestForAddress { .. }
        ));
        // A request that asks for an address is never ours, even with a ciaddr, even naming us.
        let odd = port_67_request(HELD, &[(54, &[192, 168, 1, 1]), (50, &HELD)]);
        assert!(matches!(
            expect_ignore(decide(&odd, Port::Dhcp, from_client(), &shared)),
            IgnoreReason::RequestForAddress { .. }
        ));
        let no_ciaddr = port_67_request(NO_ADDRESS, &[(54, &[192, 168, 1, 1])]);
        assert!(matches!(
            expect_ignore(decide(&no_ciaddr, Port::Dhcp, from_client(), &shared)),
            IgnoreReason::RequestForAddress { .. }
        ));
    }

    #[test]
    fn init_reboot_is_left_alone() {
        // Rebooting with a remembered lease: option 50, no server named, no ciaddr.
        let request = port_67_request(NO_ADDRESS, &[(50, &HELD)]);
        assert_eq!(
            expect_ignore(decide(&request, Port::Dhcp, from_client(), &config())),
            IgnoreReason::RequestForAddress { server_id: None }
        );
    }

    #[test]
    fn renewing_and_rebinding_are_left_alone() {
        // RENEWING: unicast from the client's address; REBINDING: the same, broadcast. Neither
        // names a server nor asks for an address.
        let source = SocketAddrV4::new(Ipv4Addr::from(HELD), DHCP_CLIENT_PORT);
        for flags in [0, Packet::FLAG_BROADCAST] {
            let mut request = port_67_request(HELD, &[]);
            request.flags = flags;
            assert_eq!(
                expect_ignore(decide(&request, Port::Dhcp, source, &config())),
                IgnoreReason::RequestForAnotherServer { server_id: None }
            );
        }
        // Clients that name their server in a renewal anyway: the site server's.
        let request = port_67_request(HELD, &[(54, &[192, 168, 1, 1])]);
        assert_eq!(
            expect_ignore(decide(&request, Port::Dhcp, source, &config())),
            IgnoreReason::RequestForAnotherServer {
                server_id: Some(SITE_DHCP)
            }
        );
        // A malformed option 54 is nobody we know.
        let request = port_67_request(HELD, &[(54, &[192, 168, 1])]);
        assert_eq!(
            expect_ignore(decide(&request, Port::Dhcp, source, &config())),
            IgnoreReason::RequestForAnotherServer { server_id: None }
        );
    }

    #[test]
    fn a_client_with_its_address_asking_us_on_port_67_is_acked() {
        let request = port_67_request(HELD, &[(54, &[192, 168, 1, 10])]);
        let source = SocketAddrV4::new(Ipv4Addr::from(HELD), DHCP_CLIENT_PORT);
        let (reply, to, client) = expect_reply(decide(&request, Port::Dhcp, source, &config()));
        assert_eq!(reply.message_type(), Some(MessageType::Ack));
        assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.bootfile_name(), Some(&b"ipxe.efi"[..]));
        assert_eq!(
            to,
            Destination::Unicast(SocketAddrV4::new(Ipv4Addr::from(HELD), 68))
        );
        assert_eq!(client.arch, ClientArch::EfiBc);
    }

    #[test]
    fn broadcast_boot_server_discovery_on_port_67_is_acked() {
        // PXE 2.1 discovery by broadcast: the client has its address, names no server, and
        // asks for a boot item (type 0x8000, layer 0) in option 43.
        let request = port_67_request(HELD, &[(43, &[71, 4, 0x80, 0x00, 0x00, 0x00, 255])]);
        let (reply, to, _) = expect_reply(decide(&request, Port::Dhcp, from_client(), &config()));
        assert_eq!(reply.message_type(), Some(MessageType::Ack));
        assert_eq!(reply.bootfile_name(), Some(&b"ipxe.efi"[..]));
        assert_eq!(
            to,
            Destination::Unicast(SocketAddrV4::new(Ipv4Addr::from(HELD), 68))
        );
        // Asking for an address as well makes it the lease exchange again.
        let request = port_67_request(
            HELD,
            &[(43, &[71, 4, 0x80, 0x00, 0x00, 0x00, 255]), (50, &HELD)],
        );
        assert!(matches!(
            expect_ignore(decide(&request, Port::Dhcp, from_client(), &config())),
            IgnoreReason::RequestForAddress { server_id: None }
        ));
    }

    #[test]
    fn other_message_types_are_ignored() {
        for (message_type, port) in [
            (4u8, Port::Dhcp), // decline
            (7, Port::Dhcp),   // release
            (8, Port::Dhcp),   // inform on 67
            (1, Port::Binl),   // discover on 4011
            (2, Port::Dhcp),   // offer (from a confused peer)
            (42, Port::Binl),
        ] {
            let request = wire(FRESH, &[(53, &[message_type]), (60, b"PXEClient")]);
            assert_eq!(
                expect_ignore(decide_on(
                    &request,
                    port,
                    SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 77), 68)
                )),
                IgnoreReason::UnhandledMessageType {
                    port,
                    message_type: MessageType::from(message_type)
                }
            );
        }
    }

    #[test]
    fn port_4011_answers_edk2_at_its_source_port() {
        let header = Header {
            ciaddr: [192, 168, 1, 77],
            ..FRESH
        };
        let request = parse(&wire(header, &ovmf_options(3)));
        let source = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 77), PXE_BOOT_SERVER_PORT);
        let (reply, to, client) = expect_reply(decide(&request, Port::Binl, source, &config()));
        assert_eq!(reply.message_type(), Some(MessageType::Ack));
        assert_eq!(to, Destination::Unicast(source));
        assert_eq!(to.socket_addr().port(), 4011);
        assert_eq!(reply.ciaddr, Ipv4Addr::new(192, 168, 1, 77));
        assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.bootfile_name(), Some(&b"ipxe.efi"[..]));
        assert_eq!(reply.vendor_specific(), None);
        assert_eq!(reply.client_machine_id(), request.client_machine_id());
        assert_eq!(client.boot_file, "ipxe.efi");
    }

    #[test]
    fn port_4011_answers_ipxe_at_port_68() {
        // iPXE's ProxyDHCPREQUEST: unicast to our server id, from its own address and port 68.
        let header = Header {
            ciaddr: [192, 168, 1, 78],
            ..FRESH
        };
        let request = wire(
            header,
            &[
                (53, &[3]),
                (54, &[192, 168, 1, 10]),
                (57, &[0x05, 0xc0]),
                (93, &[0, 7]),
                (94, &[1, 2, 1]),
                (60, b"PXEClient:Arch:00007:UNDI:002001"),
                (77, b"iPXE"),
                (61, &client_id()),
            ],
        );
        let source = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 78), DHCP_CLIENT_PORT);
        let (reply, to, client) = expect_reply(decide_on(&request, Port::Binl, source));
        assert_eq!(reply.message_type(), Some(MessageType::Ack));
        assert_eq!(to, Destination::Unicast(source));
        assert_eq!(reply.bootfile_name(), Some(SCRIPT.as_bytes()));
        assert!(client.ipxe);
        assert_eq!(client.uuid, None);

        // Inform is answered the same way.
        let inform = wire(
            Header {
                ciaddr: [192, 168, 1, 78],
                ..FRESH
            },
            &[(53, &[8]), (60, b"PXEClient:Arch:00007:UNDI:002001")],
        );
        let (reply, to, _) = expect_reply(decide_on(&inform, Port::Binl, source));
        assert_eq!(reply.message_type(), Some(MessageType::Ack));
        assert_eq!(to, Destination::Unicast(source));
    }

    #[test]
    fn port_4011_needs_a_source_to_answer() {
        let request = wire(FRESH, &ovmf_options(3));
        assert_eq!(
            expect_ignore(decide_on(&request, Port::Binl, from_client())),
            IgnoreReason::UnspecifiedSource
        );
    }

    #[test]
    fn bios_boot_server_request_gets_its_boot_item_back() {
        let mut options = vec![
            (53u8, &[3u8][..]),
            (93, &[0, 0]),
            (60, b"PXEClient:Arch:00000:UNDI:002001"),
        ];
        // Boot item type 0x8000, layer 0, then end.
        options.push((43, &[71, 4, 0x80, 0x00, 0x00, 0x00, 255]));
        let request = wire(
            Header {
                ciaddr: [192, 168, 1, 79],
                ..FRESH
            },
            &options,
        );
        let source = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 79), PXE_BOOT_SERVER_PORT);
        let (reply, _, _) = expect_reply(decide_on(&request, Port::Binl, source));
        let suboptions = suboptions(&reply).expect("option 43");
        assert_eq!(suboptions.get(6), Some(&[8][..]));
        assert_eq!(suboptions.get(71), Some(&[0x80, 0, 0, 0][..]));
    }

    #[test]
    fn relayed_requests_go_back_through_the_relay() {
        // OVMF's DISCOVER with `header`.
        let answer = |header| {
            expect_reply(decide_on(
                &wire(header, &ovmf_options(1)),
                Port::Dhcp,
                from_client(),
            ))
        };
        let (reply, to, _) = answer(Header {
            giaddr: [10, 20, 0, 1],
            ..FRESH
        });
        assert_eq!(to, Destination::Relay(Ipv4Addr::new(10, 20, 0, 1)));
        assert_eq!(
            to.socket_addr(),
            SocketAddrV4::new(Ipv4Addr::new(10, 20, 0, 1), 67)
        );
        assert_eq!(reply.giaddr, Ipv4Addr::new(10, 20, 0, 1));

        // A client that has an address is answered there.
        let (_, to, _) = answer(Header {
            ciaddr: [192, 168, 1, 80],
            ..FRESH
        });
        assert_eq!(
            to.socket_addr(),
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 80), 68)
        );
        assert_eq!(
            Destination::Broadcast.socket_addr(),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
        );
    }

    #[test]
    fn yiaddr_stays_zero_and_flags_are_kept() {
        let mut request = parse(&ovmf_discover());
        request.yiaddr = Ipv4Addr::new(192, 168, 1, 99);
        request.flags = Packet::FLAG_BROADCAST;
        let (reply, _, _) = expect_reply(decide(&request, Port::Dhcp, from_client(), &config()));
        assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.flags, Packet::FLAG_BROADCAST);
        assert_eq!(reply.op, Op::BootReply);
    }

    #[test]
    fn no_machine_id_no_echo() {
        let request = wire(FRESH, &[(53, &[1]), (93, &[0, 7]), (60, b"PXEClient")]);
        let (reply, _, client) = expect_reply(decide_on(&request, Port::Dhcp, from_client()));
        assert_eq!(reply.client_machine_id(), None);
        assert_eq!(client.uuid, None);
        // An all-zero UUID (EDK2 without SMBIOS) is echoed but is no identity.
        let zero = [0u8; 17];
        let request = wire(
            FRESH,
            &[(53, &[1]), (93, &[0, 7]), (97, &zero), (60, b"PXEClient")],
        );
        let (reply, _, client) = expect_reply(decide_on(&request, Port::Dhcp, from_client()));
        assert_eq!(reply.client_machine_id(), Some(&zero[..]));
        assert_eq!(client.uuid, None);
    }

    #[test]
    fn no_file_configured_means_silence() {
        let config = ProxyConfig {
            server_ip: SERVER,
            boot: BootFiles::default(),
        };
        let request = parse(&ovmf_discover());
        assert_eq!(
            expect_ignore(decide(&request, Port::Dhcp, from_client(), &config)),
            IgnoreReason::NoBootFile {
                arch: ClientArch::EfiBc,
                http: false
            }
        );
    }

    #[test]
    fn long_file_names_go_in_option_67_within_the_size_limit() {
        let mut config = config();
        let long = format!(
            "http://192.168.1.5:8080/api/mainscripts/abc?token={}",
            "t".repeat(150)
        );
        config.boot.ipxe_script = Some(long.clone());
        // iPXE allows 1472 bytes: the name is too long for `file` but fits as an option.
        let request = parse(&ipxe_discover(7));
        let (reply, _, _) = expect_reply(decide(&request, Port::Dhcp, from_client(), &config));
        assert_eq!(reply.file_name(), None);
        assert_eq!(reply.bootfile_name(), Some(long.as_bytes()));

        // A client that allows 576 bytes cannot take a 300-byte name on top of the rest.
        let huge = format!("http://192.168.1.5/{}", "x".repeat(300));
        config.boot.uefi_x64 = Some(huge);
        let request = wire(FRESH, &[(53, &[1]), (93, &[0, 7]), (60, b"PXEClient")]);
        let reason = expect_ignore(decide(&parse(&request), Port::Dhcp, from_client(), &config));
        assert!(
            matches!(reason, IgnoreReason::ReplyTooLarge { limit: 548, size } if size > 548),
            "{reason:?}"
        );
        // Allowing more in option 57 lets it through; values under 576 do not shrink the floor.
        let with_max_size = |max: u16| {
            let max = max.to_be_bytes();
            let request = wire(
                FRESH,
                &[(53, &[1]), (57, &max), (93, &[0, 7]), (60, b"PXEClient")],
            );
            decide(&parse(&request), Port::Dhcp, from_client(), &config)
        };
        assert!(matches!(with_max_size(0x05c0), Decision::Reply { .. }));
        assert!(matches!(
            expect_ignore(with_max_size(0x0100)),
            IgnoreReason::ReplyTooLarge { limit: 548, .. }
        ));
    }

    #[test]
    fn replies_and_oddities_are_ignored() {
        let mut reply = parse(&ovmf_discover());
        reply.op = Op::BootReply;
        assert_eq!(
            expect_ignore(decide(&reply, Port::Dhcp, from_client(), &config())),
            IgnoreReason::NotBootRequest
        );
        let bootp = wire(FRESH, &[(60, b"PXEClient")]);
        assert_eq!(
            expect_ignore(decide_on(&bootp, Port::Dhcp, from_client())),
            IgnoreReason::NotDhcp
        );
        let mut infiniband = parse(&ovmf_discover());
        infiniband.htype = 32;
        infiniband.hlen = 0;
        assert_eq!(
            expect_ignore(decide(&infiniband, Port::Dhcp, from_client(), &config())),
            IgnoreReason::NotEthernet { htype: 32, hlen: 0 }
        );
    }

    #[test]
    fn reasons_read_as_lowercase_sentences() {
        let reasons = [
            IgnoreReason::NotBootRequest,
            IgnoreReason::NotNetbootClient,
            IgnoreReason::NotDhcp,
            IgnoreReason::UnhandledMessageType {
                port: Port::Binl,
                message_type: MessageType::Discover,
            },
            IgnoreReason::RequestForAddress {
                server_id: Some(SITE_DHCP),
            },
            IgnoreReason::RequestForAddress { server_id: None },
            IgnoreReason::RequestForAnotherServer {
                server_id: Some(SITE_DHCP),
            },
            IgnoreReason::RequestForAnotherServer { server_id: None },
            IgnoreReason::UnspecifiedSource,
            IgnoreReason::NotEthernet { htype: 32, hlen: 0 },
            IgnoreReason::MalformedOption { code: 93 },
            IgnoreReason::NoBootFile {
                arch: ClientArch::EfiArm32,
                http: false,
            },
            IgnoreReason::ReplyTooLarge {
                size: 600,
                limit: 548,
            },
        ];
        for reason in reasons {
            assert!(
                reason
                    .kind()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                reason.kind()
            );
            let text = reason.to_string();
            assert!(
                text.chars().next().is_some_and(|c| !c.is_uppercase()),
                "{text}"
            );
        }
        assert_eq!(
            IgnoreReason::NoBootFile {
                arch: ClientArch::EfiArm32,
                http: false
            }
            .to_string(),
            "no pxe boot file configured for arm32 uefi (10)"
        );
    }

    #[test]
    fn arch_codes_round_trip() {
        for code in 0..=u16::MAX {
            assert_eq!(u16::from(ClientArch::from(code)), code);
        }
    }

    fn arb_config() -> impl Strategy<Value = ProxyConfig> {
        let file = || {
            prop_oneof![
                1 => Just(None),
                1 => Just(Some(String::new())),
                4 => Just(Some("undionly.kpxe".to_owned())),
                4 => Just(Some("http://10.0.0.1/boot/ipxe.efi".to_owned())),
                2 => (0usize..700)
                    .prop_map(|len| Some(format!("http://10.0.0.1/{}", "x".repeat(len)))),
            ]
        };
        let server = prop_oneof![3 => Just(SERVER), 1 => any::<[u8; 4]>().prop_map(Ipv4Addr::from)];
        (
            server,
            [file(), file(), file(), file(), file(), file(), file()],
        )
            .prop_map(
                |(
                    server_ip,
                    [bios, uefi_x64, uefi_ia32, uefi_arm64, http_x64, http_arm64, ipxe_script],
                )| {
                    ProxyConfig {
                        server_ip,
                        boot: BootFiles {
                            bios,
                            uefi_x64,
                            uefi_ia32,
                            uefi_arm64,
                            http_x64,
                            http_arm64,
                            ipxe_script,
                        },
                    }
                },
            )
    }

    /// Requests weighted towards boot clients, so that every branch, replies included, is hit.
    fn arb_request() -> impl Strategy<Value = Packet> {
        fn bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
            prop::collection::vec(any::<u8>(), 0..max).boxed()
        }
        fn mostly<T: fmt::Debug + Clone + 'static>(
            likely: T,
            other: BoxedStrategy<T>,
        ) -> BoxedStrategy<T> {
            prop_oneof![4 => Just(likely), 1 => other].boxed()
        }
        fn usually_some(value: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Option<Vec<u8>>> {
            prop_oneof![4 => value.prop_map(Some), 1 => Just(None)].boxed()
        }
        let header = (
            mostly(1u8, any::<u8>().boxed()),
            mostly(1u8, any::<u8>().boxed()),
            mostly(6u8, any::<u8>().boxed()),
            any::<u32>(),
            any::<u16>(),
            mostly(0u32, any::<u32>().boxed()),
            any::<u32>(),
            mostly(0u32, any::<u32>().boxed()),
        );
        let message_type = usually_some(
            prop_oneof![
                3 => prop::sample::select(vec![1u8, 3, 8]).prop_map(|t| vec![t]),
                1 => (0u8..=20).prop_map(|t| vec![t]),
                1 => bytes(3),
            ]
            .boxed(),
        );
        let vendor_class = usually_some(
            prop_oneof![
                4 => prop::sample::select(vec![
                    &b"PXEClient:Arch:00000:UNDI:002001"[..],
                    b"PXEClient:Arch:00007:UNDI:003000",
                    b"HTTPClient:Arch:00016:UNDI:003001",
                    b"PXEClient",
                    b"PXEClient:Arch:",
                    b"MSFT 5.0",
                ])
                .prop_map(<[u8]>::to_vec),
                1 => bytes(40).prop_map(|tail| [&b"PXEClient:Arch:"[..], &tail].concat()),
            ]
            .boxed(),
        );
        let arch = prop::option::of(prop_oneof![
            4 => (0u16..=20).prop_map(|a| a.to_be_bytes().to_vec()),
            1 => bytes(7),
        ]);
        let user_class = prop::option::of(prop_oneof![
            Just(b"iPXE".to_vec()),
            Just(b"\x04iPXE".to_vec()),
            bytes(20),
        ]);
        let server_id = prop::option::of(mostly(SERVER.octets().to_vec(), bytes(6)));
        let rest = (
            prop::option::of(bytes(20)),
            prop::option::of(bytes(3)),
            prop::option::of(bytes(300)),
            prop::option::of(bytes(5)),
        );
        (
            header,
            message_type,
            vendor_class,
            arch,
            user_class,
            server_id,
            rest,
        )
            .prop_map(
                |(
                    (op, htype, hlen, xid, flags, ciaddr, yiaddr, giaddr),
                    message_type,
                    vendor_class,
                    arch,
                    user_class,
                    server_id,
                    (machine_id, max_size, vendor_specific, requested_ip),
                )| {
                    let mut packet = Packet::new(Op::from(op));
                    packet.htype = htype;
                    packet.hlen = hlen;
                    packet.xid = xid;
                    packet.flags = flags;
                    packet.ciaddr = Ipv4Addr::from(ciaddr);
                    packet.yiaddr = Ipv4Addr::from(yiaddr);
                    packet.giaddr = Ipv4Addr::from(giaddr);
                    let options = [
                        (53, message_type),
                        (60, vendor_class),
                        (93, arch),
                        (77, user_class),
                        (54, server_id),
                        (97, machine_id),
                        (57, max_size),
                        (43, vendor_specific),
                        (50, requested_ip),
                    ];
                    for (option_code, value) in options {
                        if let Some(value) = value {
                            packet.options.set(option_code, value);
                        }
                    }
                    packet
                },
            )
    }

    fn arb_port() -> impl Strategy<Value = Port> {
        prop_oneof![Just(Port::Dhcp), Just(Port::Binl)]
    }

    fn check_decision(
        request: &Packet,
        port: Port,
        source: SocketAddrV4,
        decision: &Decision,
    ) -> Result<(), TestCaseError> {
        if let Decision::Reply { packet, to, client } = decision {
            prop_assert_eq!(packet.yiaddr, Ipv4Addr::UNSPECIFIED);
            prop_assert_eq!(packet.op, Op::BootReply);
            prop_assert_eq!(packet.xid, request.xid);
            prop_assert!(packet.encoded_len() <= reply_size_limit(request));
            prop_assert_eq!(packet.bootfile_name(), Some(client.boot_file.as_bytes()));
            if port == Port::Binl {
                prop_assert_eq!(*to, Destination::Unicast(source));
            }
            // Never a part in the exchange that grants the address.
            if port == Port::Dhcp && request.message_type() == Some(MessageType::Request) {
                prop_assert!(!request.options.contains(code::REQUESTED_IP));
                prop_assert!(!request.ciaddr.is_unspecified());
            }
            let reparsed = Packet::parse(&packet.encode());
            prop_assert_eq!(reparsed.as_ref(), Ok(packet));
        }
        Ok(())
    }

    proptest! {
        // About one generated request in twenty earns a reply; enough cases to see dozens.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn decide_never_panics_on_parsed_bytes(
            bytes in prop::collection::vec(any::<u8>(), 240..700),
            port in arb_port(),
            source in any::<([u8; 4], u16)>(),
            config in arb_config(),
        ) {
            let source = SocketAddrV4::new(Ipv4Addr::from(source.0), source.1);
            // Force the cookie so the bytes get past the header into the decision.
            let mut bytes = bytes;
            if let Some(cookie) = bytes.get_mut(236..240) {
                cookie.copy_from_slice(&crate::dhcp::packet::MAGIC_COOKIE);
            }
            if let Ok(request) = Packet::parse(&bytes) {
                let decision = decide(&request, port, source, &config);
                check_decision(&request, port, source, &decision)?;
            }
        }

        #[test]
        fn decide_never_panics_and_never_assigns(
            request in arb_request(),
            port in arb_port(),
            source in any::<([u8; 4], u16)>(),
            config in arb_config(),
        ) {
            let source = SocketAddrV4::new(Ipv4Addr::from(source.0), source.1);
            let decision = decide(&request, port, source, &config);
            check_decision(&request, port, source, &decision)?;
        }
    }
}
