//! The DHCP/BOOTP packet (RFC 2131 section 2, RFC 2132 for options): the fixed 236-byte header,
//! the magic cookie, then options as code/length/value triples.
//!
//! Parsing is strict about bounds and lenient about what does not matter to us: a missing end
//! option is accepted (the packet just stops), bytes after the end option are dropped, and option
//! overload (52, options continued in `sname`/`file`) is not followed: the option is kept like any
//! other and `sname`/`file` stay raw bytes. No PXE or iPXE client we serve overloads its requests.

use std::fmt;
use std::net::Ipv4Addr;

/// Option codes this crate reads or writes (RFC 2132 unless noted).
pub mod code {
    /// Padding between options; carries no length byte.
    pub const PAD: u8 = 0;
    /// Vendor-specific information; PXE puts its sub-options here.
    pub const VENDOR_SPECIFIC: u8 = 43;
    /// Requested IP address: a client asking for a lease (RFC 2131 section 4.3.2).
    pub const REQUESTED_IP: u8 = 50;
    /// Option overload: more options in `file` and/or `sname` (not followed by the parser).
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER_NAME: u8 = 66;
    pub const BOOTFILE_NAME: u8 = 67;
    /// User class (RFC 3004); iPXE sends it as the bare string "iPXE" instead.
    pub const USER_CLASS: u8 = 77;
    /// Client system architectures, a list of u16 (RFC 4578).
    pub const CLIENT_ARCH: u8 = 93;
    /// Client network device interface: type, major, minor (RFC 4578).
    pub const CLIENT_NDI: u8 = 94;
    /// Client machine identifier: type 0 then a 16-byte UUID (RFC 4578).
    pub const CLIENT_MACHINE_ID: u8 = 97;
    /// End of options; carries no length byte.
    pub const END: u8 = 255;
}

/// Marks the options area as DHCP (RFC 2131 section 3), as opposed to plain BOOTP vendor data.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP header, up to and without the magic cookie.
pub const HEADER_LEN: usize = 236;
/// Header plus magic cookie: nothing shorter is a DHCP packet.
pub const MIN_PACKET_LEN: usize = HEADER_LEN + MAGIC_COOKIE.len();
/// Relay agents and old BOOTP clients drop anything shorter (RFC 1542 section 2.1), so replies
/// are padded to it.
pub const BOOTP_MIN_LEN: usize = 300;
/// The longest value one option instance can carry; longer ones repeat the code (RFC 3396).
const MAX_FRAGMENT: usize = 255;

/// Why bytes are not a DHCP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("packet is {len} bytes, shorter than the {MIN_PACKET_LEN}-byte dhcp minimum")]
    TooShort { len: usize },
    #[error("magic cookie {found:02x?} is not the dhcp cookie")]
    BadMagicCookie { found: [u8; 4] },
    #[error("option {code} at offset {offset} runs past the end of the packet")]
    TruncatedOption { code: u8, offset: usize },
}

/// The BOOTP `op` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    BootRequest,
    BootReply,
    Other(u8),
}

impl From<u8> for Op {
    fn from(value: u8) -> Self {
        match value {
            1 => Op::BootRequest,
            2 => Op::BootReply,
            other => Op::Other(other),
        }
    }
}

impl From<Op> for u8 {
    fn from(op: Op) -> Self {
        match op {
            Op::BootRequest => 1,
            Op::BootReply => 2,
            Op::Other(other) => other,
        }
    }
}

/// DHCP message type, option 53 (RFC 2132 section 9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    Other(u8),
}

impl From<u8> for MessageType {
    fn from(value: u8) -> Self {
        match value {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            other => MessageType::Other(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(message_type: MessageType) -> Self {
        match message_type {
            MessageType::Discover => 1,
            MessageType::Offer => 2,
            MessageType::Request => 3,
            MessageType::Decline => 4,
            MessageType::Ack => 5,
            MessageType::Nak => 6,
            MessageType::Release => 7,
            MessageType::Inform => 8,
            MessageType::Other(other) => other,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            MessageType::Discover => "DHCPDISCOVER",
            MessageType::Offer => "DHCPOFFER",
            MessageType::Request => "DHCPREQUEST",
            MessageType::Decline => "DHCPDECLINE",
            MessageType::Ack => "DHCPACK",
            MessageType::Nak => "DHCPNAK",
            MessageType::Release => "DHCPRELEASE",
            MessageType::Inform => "DHCPINFORM",
            MessageType::Other(other) => return write!(f, "dhcp message type {other}"),
        };
        f.write_str(name)
    }
}

/// An Ethernet hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Client network device interface, option 94 (RFC 4578 section 2.2): type 1 is UNDI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientNdi {
    pub interface_type: u8,
    pub major: u8,
    pub minor: u8,
}

/// DHCP options in the order they first appear, one entry per code.
///
/// A code repeated in a packet is one option split in pieces (RFC 3396), so parsing concatenates
/// the pieces into a single entry and encoding splits values longer than 255 bytes again. Pad (0)
/// and end (255) are framing, never entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    entries: Vec<(u8, Vec<u8>)>,
}

impl Options {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a code/length/value sequence (the options area, or the sub-options inside option
    /// 43). Stops at the end option or at the end of the bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        Self::parse_at(bytes, 0)
    }

    /// `offset` is where `bytes` starts in the packet, so errors point at the right place.
    fn parse_at(mut bytes: &[u8], mut offset: usize) -> Result<Self, ParseError> {
        let mut options = Options::new();
        while let Some((&option_code, rest)) = bytes.split_first() {
            match option_code {
                code::PAD => {
                    bytes = rest;
                    offset = offset.saturating_add(1);
                }
                code::END => break,
                _ => {
                    let truncated = ParseError::TruncatedOption {
                        code: option_code,
                        offset,
                    };
                    let (&len, rest) = rest.split_first().ok_or(truncated.clone())?;
                    let (value, rest) = rest.split_at_checked(usize::from(len)).ok_or(truncated)?;
                    options.append(option_code, value);
                    bytes = rest;
                    offset = offset.saturating_add(2 + usize::from(len));
                }
            }
        }
        Ok(options)
    }

    /// Adds a piece of an option: to the existing value when the code is already there (RFC 3396).
    fn append(&mut self, option_code: u8, piece: &[u8]) {
        match self.entries.iter_mut().find(|(c, _)| *c == option_code) {
            Some((_, value)) => value.extend_from_slice(piece),
            None => self.entries.push((option_code, piece.to_vec())),
        }
    }

    pub fn get(&self, option_code: u8) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(c, _)| *c == option_code)
            .map(|(_, value)| value.as_slice())
    }

    pub fn contains(&self, option_code: u8) -> bool {
        self.get(option_code).is_some()
    }

    /// Sets an option, replacing its value in place if present, else appending it. Pad (0) and
    /// end (255) cannot carry a value; setting them does nothing.
    pub fn set(&mut self, option_code: u8, value: impl Into<Vec<u8>>) {
        if option_code == code::PAD || option_code == code::END {
            return;
        }
        let value = value.into();
        match self.entries.iter_mut().find(|(c, _)| *c == option_code) {
            Some((_, existing)) => *existing = value,
            None => self.entries.push((option_code, value)),
        }
    }

    pub fn remove(&mut self, option_code: u8) -> Option<Vec<u8>> {
        let index = self.entries.iter().position(|(c, _)| *c == option_code)?;
        Some(self.entries.remove(index).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.entries
            .iter()
            .map(|(option_code, value)| (*option_code, value.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the options as code/length/value, splitting long values, then the end option.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for (option_code, value) in &self.entries {
            if value.is_empty() {
                out.extend_from_slice(&[*option_code, 0]);
            }
            for piece in value.chunks(MAX_FRAGMENT) {
                // chunks() of at most 255 bytes: the length always fits in a u8.
                let len = u8::try_from(piece.len()).unwrap_or(u8::MAX);
                out.extend_from_slice(&[*option_code, len]);
                out.extend_from_slice(piece);
            }
        }
        out.push(code::END);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Bytes `encode` produces, end option included.
    pub fn encoded_len(&self) -> usize {
        let body: usize = self
            .entries
            .iter()
            .map(|(_, value)| value.len() + 2 * value.len().div_ceil(MAX_FRAGMENT).max(1))
            .sum();
        body + 1
    }
}

/// A DHCP packet: the BOOTP header fields, then the options (after the magic cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub op: Op,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub sname: [u8; 64],
    pub file: [u8; 128],
    pub options: Options,
}

/// Reads fixed-size fields off the front of a slice without indexing.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }
}

/// `bytes_options! { get, set = CODE; ... }`, each with its doc: options read and written as
/// their bytes on the wire.
macro_rules! bytes_options {
    ($($(#[$doc:meta])* $get:ident, $set:ident = $code:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $get(&self) -> Option<&[u8]> {
                self.options.get(code::$code)
            }

            pub fn $set(&mut self, value: &[u8]) {
                self.options.set(code::$code, value);
            }
        )*
    };
}

impl Packet {
    /// Hardware type of Ethernet in `htype` (RFC 1700 / IANA ARP parameters).
    pub const HTYPE_ETHERNET: u8 = 1;
    /// The broadcast bit of `flags` (RFC 2131 section 2).
    pub const FLAG_BROADCAST: u16 = 0x8000;

    /// A packet with every field zero and no options: a starting point for replies and tests.
    pub fn new(op: Op) -> Self {
        Packet {
            op,
            htype: 0,
            hlen: 0,
            hops: 0,
            xid: 0,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [0; 16],
            sname: [0; 64],
            file: [0; 128],
            options: Options::new(),
        }
    }

    /// A BOOTREPLY skeleton for `request` (RFC 2131 table 3): same transaction, hardware address,
    /// flags, relay and client address; no addresses assigned, no options yet.
    pub fn reply_to(request: &Packet) -> Self {
        Packet {
            htype: request.htype,
            hlen: request.hlen,
            xid: request.xid,
            flags: request.flags,
            ciaddr: request.ciaddr,
            giaddr: request.giaddr,
            chaddr: request.chaddr,
            ..Packet::new(Op::BootReply)
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let too_short = ParseError::TooShort { len: bytes.len() };
        if bytes.len() < MIN_PACKET_LEN {
            return Err(too_short);
        }
        let mut reader = Reader { rest: bytes };
        // The length check above makes every take() succeed; `?` keeps that a proof, not a panic.
        let (fixed, cookie) = reader_fields(&mut reader).ok_or(too_short)?;
        if cookie != MAGIC_COOKIE {
            return Err(ParseError::BadMagicCookie { found: cookie });
        }
        let options = Options::parse_at(reader.rest, MIN_PACKET_LEN)?;
        Ok(Packet { options, ..fixed })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(u8::from(self.op));
        out.extend_from_slice(&[self.htype, self.hlen, self.hops]);
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&self.secs.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for address in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&address.octets());
        }
        out.extend_from_slice(&self.chaddr);
        out.extend_from_slice(&self.sname);
        out.extend_from_slice(&self.file);
        out.extend_from_slice(&MAGIC_COOKIE);
        self.options.encode_into(&mut out);
        if out.len() < BOOTP_MIN_LEN {
            out.resize(BOOTP_MIN_LEN, code::PAD);
        }
        out
    }

    /// Bytes `encode` produces.
    pub fn encoded_len(&self) -> usize {
        (MIN_PACKET_LEN + self.options.encoded_len()).max(BOOTP_MIN_LEN)
    }

    /// The client's Ethernet address, when the header says it is Ethernet.
    pub fn mac(&self) -> Option<MacAddr> {
        if self.htype != Self::HTYPE_ETHERNET || self.hlen != 6 {
            return None;
        }
        let (mac, _) = self.chaddr.split_first_chunk::<6>()?;
        Some(MacAddr(*mac))
    }

    /// The `file` field up to its first NUL, if not empty.
    pub fn file_name(&self) -> Option<&[u8]> {
        until_nul(&self.file)
    }

    /// The `sname` field up to its first NUL, if not empty.
    pub fn server_name(&self) -> Option<&[u8]> {
        until_nul(&self.sname)
    }

    /// Puts `name` in the `file` field if it fits with its terminating NUL; otherwise clears the
    /// field and returns false (the caller then relies on option 67 alone).
    pub fn set_file_name(&mut self, name: &[u8]) -> bool {
        self.file = [0; 128];
        if name.len() >= self.file.len() || name.contains(&0) {
            return false;
        }
        for (slot, byte) in self.file.iter_mut().zip(name) {
            *slot = *byte;
        }
        true
    }

    /// Option 53; `None` when absent or not exactly one byte.
    pub fn message_type(&self) -> Option<MessageType> {
        match self.options.get(code::MESSAGE_TYPE)? {
            [value] => Some(MessageType::from(*value)),
            _ => None,
        }
    }

    pub fn set_message_type(&mut self, message_type: MessageType) {
        self.options
            .set(code::MESSAGE_TYPE, [u8::from(message_type)]);
    }

    /// Option 54; `None` when absent or not four bytes.
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        ipv4(self.options.get(code::SERVER_ID)?)
    }

    pub fn set_server_id(&mut self, server: Ipv4Addr) {
        self.options.set(code::SERVER_ID, server.octets());
    }

    /// Option 55: the option codes the client asks for.
    pub fn parameter_request_list(&self) -> Option<&[u8]> {
        self.options.get(code::PARAMETER_REQUEST_LIST)
    }

    /// Option 57; `None` when absent or not two bytes.
    pub fn max_message_size(&self) -> Option<u16> {
        let bytes = self.options.get(code::MAX_MESSAGE_SIZE)?;
        Some(u16::from_be_bytes(bytes.try_into().ok()?))
    }

    /// Option 61.
    pub fn client_id(&self) -> Option<&[u8]> {
        self.options.get(code::CLIENT_ID)
    }

    /// Option 77 as a list of classes. RFC 3004 encodes each class as a length byte then the
    /// bytes; iPXE sends its class as the bare string "iPXE". A value that is not a well-formed
    /// RFC 3004 list is taken as one bare class.
    pub fn user_classes(&self) -> Vec<&[u8]> {
        let Some(value) = self.options.get(code::USER_CLASS) else {
            return Vec::new();
        };
        rfc3004_classes(value).unwrap_or_else(|| vec![value])
    }

    /// Whether option 77 names `class`, read either way (RFC 3004 list or bare string), since a
    /// bare string can happen to look like a well-formed list.
    pub fn has_user_class(&self, class: &[u8]) -> bool {
        match self.options.get(code::USER_CLASS) {
            Some(value) => {
                value == class || rfc3004_classes(value).is_some_and(|list| list.contains(&class))
            }
            None => false,
        }
    }

    /// Option 93: the client's architecture types (RFC 4578 section 2.1, IANA "Processor
    /// Architecture Types"); `None` when absent, empty or of odd length.
    pub fn client_architectures(&self) -> Option<Vec<u16>> {
        let bytes = self.options.get(code::CLIENT_ARCH)?;
        let (pairs, remainder) = bytes.as_chunks::<2>();
        if pairs.is_empty() || !remainder.is_empty() {
            return None;
        }
        Some(pairs.iter().map(|pair| u16::from_be_bytes(*pair)).collect())
    }

    /// Option 94; `None` when absent or not three bytes.
    pub fn client_ndi(&self) -> Option<ClientNdi> {
        match self.options.get(code::CLIENT_NDI)? {
            [interface_type, major, minor] => Some(ClientNdi {
                interface_type: *interface_type,
                major: *major,
                minor: *minor,
            }),
            _ => None,
        }
    }

    /// The UUID in option 97 when it has the only defined form: type 0 and 16 bytes.
    pub fn client_uuid(&self) -> Option<[u8; 16]> {
        match self.client_machine_id()?.split_first() {
            Some((0, uuid)) => uuid.try_into().ok(),
            _ => None,
        }
    }

    bytes_options! {
        /// Option 60, e.g. `PXEClient:Arch:00007:UNDI:003000`.
        vendor_class, set_vendor_class = VENDOR_CLASS;
        /// Option 97 as sent: type byte then identifier. PXE clients echo-check it in replies.
        client_machine_id, set_client_machine_id = CLIENT_MACHINE_ID;
        /// Option 43.
        vendor_specific, set_vendor_specific = VENDOR_SPECIFIC;
        /// Option 66.
        tftp_server_name, set_tftp_server_name = TFTP_SERVER_NAME;
        /// Option 67.
        bootfile_name, set_bootfile_name = BOOTFILE_NAME;
    }
}

/// The fixed header and the cookie, everything but the options.
fn reader_fields(reader: &mut Reader<'_>) -> Option<(Packet, [u8; 4])> {
    let [op, htype, hlen, hops] = reader.take::<4>()?;
    let xid = u32::from_be_bytes(reader.take()?);
    let secs = u16::from_be_bytes(reader.take()?);
    let flags = u16::from_be_bytes(reader.take()?);
    let ciaddr = Ipv4Addr::from(reader.take::<4>()?);
    let yiaddr = Ipv4Addr::from(reader.take::<4>()?);
    let siaddr = Ipv4Addr::from(reader.take::<4>()?);
    let giaddr = Ipv4Addr::from(reader.take::<4>()?);
    let chaddr = reader.take()?;
    let sname = reader.take()?;
    let file = reader.take()?;
    let cookie = reader.take()?;
    let packet = Packet {
        op: Op::from(op),
        htype,
        hlen,
        hops,
        xid,
        secs,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        giaddr,
        chaddr,
        sname,
        file,
        options: Options::new(),
    };
    Some((packet, cookie))
}

fn ipv4(bytes: &[u8]) -> Option<Ipv4Addr> {
    let octets: [u8; 4] = bytes.try_into().ok()?;
    Some(Ipv4Addr::from(octets))
}

fn until_nul(field: &[u8]) -> Option<&[u8]> {
    let name = field.split(|byte| *byte == 0).next()?;
    (!name.is_empty()).then_some(name)
}

/// RFC 3004 list: each class is a non-zero length byte then that many bytes, filling the value.
fn rfc3004_classes(mut value: &[u8]) -> Option<Vec<&[u8]>> {
    let mut classes = Vec::new();
    while let Some((&len, rest)) = value.split_first() {
        if len == 0 {
            return None;
        }
        let (class, rest) = rest.split_at_checked(usize::from(len))?;
        classes.push(class);
        value = rest;
    }
    (!classes.is_empty()).then_some(classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A header written field by field, independent of `Packet::encode`.
    fn raw_header(op: u8, xid: u32, mac: [u8; 6]) -> Vec<u8> {
        let mut bytes = vec![op, 1, 6, 0];
        bytes.extend_from_slice(&xid.to_be_bytes());
        bytes.extend_from_slice(&[0, 3, 0x80, 0]); // secs 3, broadcast flag
        bytes.extend_from_slice(&[0; 16]); // ciaddr, yiaddr, siaddr, giaddr
        bytes.extend_from_slice(&mac);
        bytes.extend_from_slice(&[0; 10 + 64 + 128]);
        bytes.extend_from_slice(&MAGIC_COOKIE);
        assert_eq!(bytes.len(), MIN_PACKET_LEN);
        bytes
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    #[test]
    fn parses_the_header_and_options() {
        let mut bytes = raw_header(1, 0xdead_beef, MAC);
        bytes.extend_from_slice(&[53, 1, 1, 0, 0, 54, 4, 10, 0, 0, 1, 57, 2, 0x05, 0xc0, 255]);
        let packet = Packet::parse(&bytes).expect("valid packet");
        assert_eq!(packet.op, Op::BootRequest);
        assert_eq!(packet.xid, 0xdead_beef);
        assert_eq!(packet.secs, 3);
        assert_eq!(packet.flags, Packet::FLAG_BROADCAST);
        assert_eq!(packet.mac(), Some(MacAddr(MAC)));
        assert_eq!(
            packet.mac().map(|m| m.to_string()).as_deref(),
            Some("52:54:00:12:34:56")
        );
        assert_eq!(packet.message_type(), Some(MessageType::Discover));
        assert_eq!(packet.server_id(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(packet.max_message_size(), Some(1472));
        assert_eq!(packet.options.len(), 3, "pads are framing, not options");
    }

    #[test]
    fn rejects_short_packets_and_wrong_cookies() {
        let bytes = raw_header(1, 1, MAC);
        assert_eq!(
            Packet::parse(&bytes[..MIN_PACKET_LEN - 1]),
            Err(ParseError::TooShort { len: 239 })
        );
        assert_eq!(Packet::parse(&[]), Err(ParseError::TooShort { len: 0 }));
        let mut bootp = bytes.clone();
        bootp.truncate(HEADER_LEN);
        bootp.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            Packet::parse(&bootp),
            Err(ParseError::BadMagicCookie {
                found: [1, 2, 3, 4]
            })
        );
        // Exactly header and cookie, no options at all: valid, if useless.
        assert!(Packet::parse(&bytes).is_ok_and(|p| p.options.is_empty()));
    }

    #[test]
    fn rejects_truncated_options() {
        let mut missing_length = raw_header(1, 1, MAC);
        missing_length.extend_from_slice(&[53, 1, 1, 60]);
        assert_eq!(
            Packet::parse(&missing_length),
            Err(ParseError::TruncatedOption {
                code: 60,
                offset: 243
            })
        );
        let mut short_value = raw_header(1, 1, MAC);
        short_value.extend_from_slice(&[60, 9, b'P', b'X', b'E']);
        assert_eq!(
            Packet::parse(&short_value),
            Err(ParseError::TruncatedOption {
                code: 60,
                offset: 240
            })
        );
    }

    #[test]
    fn stops_at_end_and_tolerates_a_missing_end() {
        let mut after_end = raw_header(1, 1, MAC);
        // Garbage after the end option (here a truncated option) is padding, not an error.
        after_end.extend_from_slice(&[53, 1, 3, 255, 60, 200, 1]);
        let packet = Packet::parse(&after_end).expect("end stops parsing");
        assert_eq!(packet.options.len(), 1);

        let mut no_end = raw_header(1, 1, MAC);
        no_end.extend_from_slice(&[53, 1, 3]);
        let packet = Packet::parse(&no_end).expect("no end option");
        assert_eq!(packet.message_type(), Some(MessageType::Request));
    }

    #[test]
    fn concatenates_repeated_codes() {
        // RFC 3396: pieces of one option, even when other options sit between them.
        let mut bytes = raw_header(1, 1, MAC);
        bytes.extend_from_slice(&[60, 3, b'P', b'X', b'E', 53, 1, 1, 60, 6]);
        bytes.extend_from_slice(b"Client");
        bytes.push(255);
        let packet = Packet::parse(&bytes).expect("valid packet");
        assert_eq!(packet.vendor_class(), Some(&b"PXEClient"[..]));
        let codes: Vec<u8> = packet.options.iter().map(|(c, _)| c).collect();
        assert_eq!(codes, [60, 53], "kept in order of first appearance");
    }

    #[test]
    fn splits_long_values_and_reads_them_back() {
        let mut packet = Packet::new(Op::BootReply);
        let long: Vec<u8> = (0..600u16).map(|i| (i % 251) as u8).collect();
        packet.set_bootfile_name(&long);
        packet.set_message_type(MessageType::Ack);
        let bytes = packet.encode();
        assert_eq!(bytes.len(), packet.encoded_len());
        // 255 + 255 + 90 bytes in three instances of option 67.
        let options = bytes.get(MIN_PACKET_LEN..).expect("options");
        assert_eq!(options.first_chunk::<2>(), Some(&[67, 255]));
        assert_eq!(options.get(257..259), Some(&[67, 255][..]));
        assert_eq!(options.get(514..516), Some(&[67, 90][..]));
        assert_eq!(options.get(606..), Some(&[53, 1, 5, 255][..]));
        assert_eq!(Packet::parse(&bytes), Ok(packet));
    }

    #[test]
    fn encodes_to_at_least_the_bootp_minimum() {
        let mut packet = Packet::new(Op::BootReply);
        packet.set_message_type(MessageType::Offer);
        let bytes = packet.encode();
        assert_eq!(bytes.len(), BOOTP_MIN_LEN);
        assert_eq!(
            bytes.get(MIN_PACKET_LEN..MIN_PACKET_LEN + 4),
            Some(&[53, 1, 2, 255][..])
        );
        assert!(bytes
            .get(MIN_PACKET_LEN + 4..)
            .is_some_and(|pad| pad.iter().all(|b| *b == 0)));
        assert_eq!(Packet::parse(&bytes), Ok(packet));
    }

    #[test]
    fn zero_length_options_survive() {
        let mut packet = Packet::new(Op::BootRequest);
        packet.options.set(80, Vec::new()); // rapid commit (RFC 4039) has no value
        let parsed = Packet::parse(&packet.encode()).expect("valid");
        assert_eq!(parsed.options.get(80), Some(&[][..]));
    }

    #[test]
    fn options_set_replaces_in_place_and_refuses_framing_codes() {
        let mut options = Options::new();
        options.set(53, [1]);
        options.set(60, *b"PXEClient");
        options.set(53, [3]);
        options.set(code::PAD, [1]);
        options.set(code::END, [1]);
        let entries: Vec<(u8, &[u8])> = options.iter().collect();
        assert_eq!(entries, [(53, &[3][..]), (60, &b"PXEClient"[..])]);
        assert_eq!(options.remove(53), Some(vec![3]));
        assert_eq!(options.remove(53), None);
        assert!(!options.contains(53));
    }

    #[test]
    fn reads_user_classes_both_ways() {
        let mut packet = Packet::new(Op::BootRequest);
        assert!(packet.user_classes().is_empty());
        packet.options.set(code::USER_CLASS, *b"iPXE");
        assert_eq!(packet.user_classes(), [b"iPXE"]);
        assert!(packet.has_user_class(b"iPXE"));

        packet.options.set(
            code::USER_CLASS,
            [4, b'i', b'P', b'X', b'E', 3, b'f', b'o', b'o'],
        );
        assert_eq!(packet.user_classes(), [&b"iPXE"[..], &b"foo"[..]]);
        assert!(packet.has_user_class(b"iPXE"));
        assert!(!packet.has_user_class(b"iPX"));

        // A bare string that parses as a list ("\x01a" + ...) still matches as a whole.
        packet.options.set(code::USER_CLASS, [1, b'a']);
        assert!(packet.has_user_class(&[1, b'a']));
        assert!(packet.has_user_class(b"a"));
    }

    #[test]
    fn reads_pxe_options() {
        let mut packet = Packet::new(Op::BootRequest);
        packet.options.set(code::CLIENT_ARCH, [0, 7, 0, 0x10]);
        assert_eq!(packet.client_architectures(), Some(vec![7, 16]));
        packet.options.set(code::CLIENT_ARCH, [0, 7, 0]);
        assert_eq!(packet.client_architectures(), None, "odd length");
        packet.options.set(code::CLIENT_ARCH, []);
        assert_eq!(packet.client_architectures(), None, "empty");

        packet.options.set(code::CLIENT_NDI, [1, 3, 0]);
        assert_eq!(
            packet.client_ndi(),
            Some(ClientNdi {
                interface_type: 1,
                major: 3,
                minor: 0
            })
        );

        let mut id = vec![0];
        id.extend(1..=16u8);
        packet.set_client_machine_id(&id);
        assert_eq!(packet.client_machine_id(), Some(&id[..]));
        assert_eq!(packet.client_uuid().map(|u| u[15]), Some(16));
        id[0] = 1;
        packet.set_client_machine_id(&id);
        assert_eq!(packet.client_uuid(), None, "only type 0 is a uuid");

        packet
            .options
            .set(code::PARAMETER_REQUEST_LIST, [1, 3, 43, 60, 66, 67]);
        assert_eq!(
            packet.parameter_request_list(),
            Some(&[1, 3, 43, 60, 66, 67][..])
        );
        packet
            .options
            .set(code::CLIENT_ID, [1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(packet.client_id().map(<[u8]>::len), Some(7));
        packet.options.set(code::MAX_MESSAGE_SIZE, [2]);
        assert_eq!(packet.max_message_size(), None);
    }

    #[test]
    fn mac_only_for_ethernet() {
        let mut packet = Packet::new(Op::BootRequest);
        packet.chaddr[..6].copy_from_slice(&MAC);
        assert_eq!(packet.mac(), None);
        packet.htype = Packet::HTYPE_ETHERNET;
        packet.hlen = 6;
        assert_eq!(packet.mac(), Some(MacAddr(MAC)));
        packet.htype = 32; // InfiniBand
        assert_eq!(packet.mac(), None);
    }

    #[test]
    fn file_name_fits_with_its_nul_or_not_at_all() {
        let mut packet = Packet::new(Op::BootReply);
        assert!(packet.set_file_name(b"undionly.kpxe"));
        assert_eq!(packet.file_name(), Some(&b"undionly.kpxe"[..]));
        assert!(packet.set_file_name(&[b'a'; 127]));
        assert_eq!(packet.file_name().map(<[u8]>::len), Some(127));
        assert!(!packet.set_file_name(&[b'a'; 128]));
        assert_eq!(packet.file_name(), None, "cleared, not truncated");
        assert!(!packet.set_file_name(b"a\0b"));
        assert_eq!(packet.server_name(), None);
    }

    #[test]
    fn reply_to_copies_the_transaction() {
        let mut request = Packet::new(Op::BootRequest);
        request.htype = 1;
        request.hlen = 6;
        request.hops = 2;
        request.xid = 42;
        request.secs = 9;
        request.flags = Packet::FLAG_BROADCAST;
        request.ciaddr = Ipv4Addr::new(10, 0, 0, 7);
        request.yiaddr = Ipv4Addr::new(10, 0, 0, 8);
        request.giaddr = Ipv4Addr::new(10, 0, 1, 1);
        request.chaddr[0] = 0x52;
        request.set_message_type(MessageType::Request);
        let reply = Packet::reply_to(&request);
        assert_eq!(reply.op, Op::BootReply);
        assert_eq!((reply.htype, reply.hlen, reply.xid), (1, 6, 42));
        assert_eq!((reply.hops, reply.secs), (0, 0));
        assert_eq!(reply.flags, Packet::FLAG_BROADCAST);
        assert_eq!(reply.ciaddr, request.ciaddr);
        assert_eq!(reply.giaddr, request.giaddr);
        assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.chaddr, request.chaddr);
        assert!(reply.options.is_empty());
    }

    #[test]
    fn op_and_message_type_round_trip_through_u8() {
        for byte in 0..=u8::MAX {
            assert_eq!(u8::from(Op::from(byte)), byte);
            assert_eq!(u8::from(MessageType::from(byte)), byte);
        }
        assert_eq!(MessageType::Discover.to_string(), "DHCPDISCOVER");
    }

    prop_compose! {
        fn arb_options()(
            entries in prop::collection::vec(
                (1u8..=254, prop::collection::vec(any::<u8>(), 0..600)),
                0..12,
            )
        ) -> Options {
            let mut options = Options::new();
            for (option_code, value) in entries {
                options.set(option_code, value);
            }
            options
        }
    }

    prop_compose! {
        fn arb_packet()(
            fixed in (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u32>(),
                      any::<u16>(), any::<u16>()),
            addresses in any::<[u32; 4]>(),
            chaddr in any::<[u8; 16]>(),
            sname in prop::collection::vec(any::<u8>(), 64),
            file in prop::collection::vec(any::<u8>(), 128),
            options in arb_options(),
        ) -> Packet {
            let (op, htype, hlen, hops, xid, secs, flags) = fixed;
            let [ciaddr, yiaddr, siaddr, giaddr] = addresses.map(Ipv4Addr::from);
            Packet {
                op: Op::from(op),
                htype, hlen, hops, xid, secs, flags,
                ciaddr, yiaddr, siaddr, giaddr, chaddr,
                sname: sname.try_into().unwrap_or([0; 64]),
                file: file.try_into().unwrap_or([0; 128]),
                options,
            }
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
            let _ = Packet::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_any_options_area(
            tail in prop::collection::vec(any::<u8>(), 0..1200),
        ) {
            // Behind a valid header, so every case reaches the option parser.
            let mut bytes = raw_header(1, 7, MAC);
            bytes.extend_from_slice(&tail);
            if let Ok(packet) = Packet::parse(&bytes) {
                // What parses re-encodes to something that parses the same.
                prop_assert_eq!(Packet::parse(&packet.encode()), Ok(packet));
            }
        }

        #[test]
        fn encode_then_parse_is_identity(packet in arb_packet()) {
            let bytes = packet.encode();
            prop_assert_eq!(bytes.len(), packet.encoded_len());
            prop_assert!(bytes.len() >= BOOTP_MIN_LEN);
            prop_assert_eq!(Packet::parse(&bytes), Ok(packet));
        }
    }
}
