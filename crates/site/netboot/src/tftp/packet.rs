//! The TFTP wire format (RFC 1350, with the OACK of RFC 2347), parsed and encoded by hand.
//!
//! Parsing is strict where a loose reading could change meaning (requests must NUL-terminate
//! every string; an ACK is exactly four bytes) and bounded everywhere: requests and OACKs to
//! [`MAX_REQUEST_LEN`] bytes and [`MAX_OPTIONS`] options, any datagram to [`MAX_DATAGRAM_LEN`].
//! DATA borrows its payload; strings are the only allocations. Option names are lowercased
//! (RFC 2347 makes them case-insensitive); unknown options are kept for the negotiator to ignore.

use std::fmt;

/// Largest block size any peer may negotiate (RFC 2348).
pub const MAX_BLKSIZE: usize = 65464;

/// Largest datagram we parse: a DATA packet of [`MAX_BLKSIZE`] bytes plus its 4-byte header.
pub const MAX_DATAGRAM_LEN: usize = 4 + MAX_BLKSIZE;

/// Largest request (RRQ/WRQ) or OACK we parse. RFC 2347 caps requests at 512 octets; twice that
/// tolerates long names from clients that ignore the cap while still bounding the work.
pub const MAX_REQUEST_LEN: usize = 1024;

/// Most options we keep from one request or OACK. Real clients send at most five.
pub const MAX_OPTIONS: usize = 32;

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// Transfer mode of a request. `mail` (obsolete since RFC 1350) is refused by the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lines end in CR LF on the wire, and a bare CR is sent as CR NUL.
    Netascii,
    /// Bytes as they are.
    Octet,
}

impl Mode {
    /// The name as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Netascii => "netascii",
            Mode::Octet => "octet",
        }
    }
}

/// An RRQ or WRQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The file name exactly as sent; see [`super::path::normalize`] before using it.
    pub filename: String,
    pub mode: Mode,
    /// Options in the order sent, names lowercased, duplicates and unknown names kept.
    pub options: Vec<(String, String)>,
}

/// TFTP error codes (RFC 1350, plus 8 from RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined,
    FileNotFound,
    AccessViolation,
    DiskFull,
    IllegalOperation,
    UnknownTransferId,
    FileAlreadyExists,
    NoSuchUser,
    /// The peer refuses the negotiated options and ends the transfer (RFC 2347).
    OptionRefused,
    /// Any other code, kept so a peer's unusual code is reported rather than lost.
    Other(u16),
}

impl ErrorCode {
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileAlreadyExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            other => ErrorCode::Other(other),
        }
    }

    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileAlreadyExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionRefused => 8,
            ErrorCode::Other(code) => code,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// One TFTP datagram. DATA borrows its payload from the parsed buffer, so receiving costs no copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request),
    Wrq(Request),
    Data { block: u16, data: &'a [u8] },
    Ack { block: u16 },
    Error { code: ErrorCode, message: String },
    Oack { options: Vec<(String, String)> },
}

/// Which string of a request a parse error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Filename,
    Mode,
    OptionName,
    OptionValue,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Filename => "file name",
            Field::Mode => "mode",
            Field::OptionName => "option name",
            Field::OptionValue => "option value",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("packet too short")]
    TooShort,
    #[error("packet of {len} bytes exceeds {max}")]
    TooLong { len: usize, max: usize },
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("{0} is not NUL-terminated")]
    Unterminated(Field),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(Field),
    #[error("unsupported mode {0:?}")]
    UnsupportedMode(String),
    #[error("empty option name")]
    EmptyOptionName,
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
    #[error("trailing bytes after the packet")]
    TrailingBytes,
}

impl<'a> Packet<'a> {
    /// Parses one datagram. Never panics; every length is checked before use.
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, ParseError> {
        if bytes.len() > MAX_DATAGRAM_LEN {
            return Err(ParseError::TooLong {
                len: bytes.len(),
                max: MAX_DATAGRAM_LEN,
            });
        }
        let (opcode, body) = split_u16(bytes).ok_or(ParseError::TooShort)?;
        match opcode {
            OP_RRQ => parse_request(bytes.len(), body).map(Packet::Rrq),
            OP_WRQ => parse_request(bytes.len(), body).map(Packet::Wrq),
            OP_DATA => {
                let (block, data) = split_u16(body).ok_or(ParseError::TooShort)?;
                Ok(Packet::Data { block, data })
            }
            OP_ACK => {
                let (block, rest) = split_u16(body).ok_or(ParseError::TooShort)?;
                if !rest.is_empty() {
                    return Err(ParseError::TrailingBytes);
                }
                Ok(Packet::Ack { block })
            }
            OP_ERROR => {
                let (code, rest) = split_u16(body).ok_or(ParseError::TooShort)?;
                // Lenient on purpose: an ERROR ends the transfer either way, and reading a
                // missing NUL or trailing bytes as "malformed" would turn a client's clean abort
                // into a protocol failure in our counts.
                let text = match rest.iter().position(|&b| b == 0) {
                    Some(nul) => rest.get(..nul).unwrap_or(rest),
                    None => rest,
                };
                Ok(Packet::Error {
                    code: ErrorCode::from_u16(code),
                    message: String::from_utf8_lossy(text).into_owned(),
                })
            }
            OP_OACK => {
                if bytes.len() > MAX_REQUEST_LEN {
                    return Err(ParseError::TooLong {
                        len: bytes.len(),
                        max: MAX_REQUEST_LEN,
                    });
                }
                Ok(Packet::Oack {
                    options: parse_options(body)?,
                })
            }
            other => Err(ParseError::UnknownOpcode(other)),
        }
    }

    /// The opcode this packet is sent with.
    pub fn opcode(&self) -> u16 {
        match self {
            Packet::Rrq(_) => OP_RRQ,
            Packet::Wrq(_) => OP_WRQ,
            Packet::Data { .. } => OP_DATA,
            Packet::Ack { .. } => OP_ACK,
            Packet::Error { .. } => OP_ERROR,
            Packet::Oack { .. } => OP_OACK,
        }
    }

    /// Encodes into a fresh buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Encodes into `out`, replacing its contents, so a caller can reuse one buffer.
    ///
    /// Strings are cut at their first NUL, the one byte the format cannot carry inside a string.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        match self {
            Packet::Rrq(request) | Packet::Wrq(request) => {
                out.extend_from_slice(&self.opcode().to_be_bytes());
                put_string(out, &request.filename);
                put_string(out, request.mode.as_str());
                put_options(out, &request.options);
            }
            Packet::Data { block, data } => encode_data_into(*block, data, out),
            Packet::Ack { block } => {
                out.extend_from_slice(&OP_ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => encode_error_into(*code, message, out),
            Packet::Oack { options } => {
                out.extend_from_slice(&OP_OACK.to_be_bytes());
                put_options(out, options);
            }
        }
    }
}

/// Writes a DATA datagram into `out`, replacing its contents.
pub fn encode_data_into(block: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(4 + payload.len());
    out.extend_from_slice(&data_header(block));
    out.extend_from_slice(payload);
}

/// The 4-byte header of a DATA datagram, for callers that read the payload straight into the
/// buffer behind it.
pub fn data_header(block: u16) -> [u8; 4] {
    let [op_hi, op_lo] = OP_DATA.to_be_bytes();
    let [block_hi, block_lo] = block.to_be_bytes();
    [op_hi, op_lo, block_hi, block_lo]
}

/// Writes an ERROR datagram into `out`, replacing its contents.
pub fn encode_error_into(code: ErrorCode, message: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&code.as_u16().to_be_bytes());
    put_string(out, message);
}

/// An ERROR datagram as a fresh buffer.
pub fn error_datagram(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    encode_error_into(code, message, &mut out);
    out
}

/// The answer to any WRQ: this server is read-only (ERROR 2, access violation).
pub fn write_refused_datagram() -> Vec<u8> {
    error_datagram(ErrorCode::AccessViolation, "read-only server")
}

/// The answer to a datagram from an address/port that is not the transfer's peer (RFC 1350 §4:
/// ERROR 5, and the transfer it was aimed at goes on undisturbed).
pub fn unknown_transfer_id_datagram() -> Vec<u8> {
    error_datagram(ErrorCode::UnknownTransferId, "unknown transfer id")
}

fn split_u16(bytes: &[u8]) -> Option<(u16, &[u8])> {
    match bytes {
        [hi, lo, rest @ ..] => Some((u16::from_be_bytes([*hi, *lo]), rest)),
        _ => None,
    }
}

/// Takes one NUL-terminated UTF-8 string off the front of `bytes`.
fn take_string(bytes: &[u8], field: Field) -> Result<(&str, &[u8]), ParseError> {
    let nul = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::Unterminated(field))?;
    let (text, rest) = bytes.split_at(nul);
    let rest = rest.get(1..).unwrap_or_default();
    let text = std::str::from_utf8(text).map_err(|_| ParseError::NotUtf8(field))?;
    Ok((text, rest))
}

fn parse_request(total_len: usize, body: &[u8]) -> Result<Request, ParseError> {
    if total_len > MAX_REQUEST_LEN {
        return Err(ParseError::TooLong {
            len: total_len,
            max: MAX_REQUEST_LEN,
        });
    }
    let (filename, rest) = take_string(body, Field::Filename)?;
    let (mode, rest) = take_string(rest, Field::Mode)?;
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else {
        return Err(ParseError::UnsupportedMode(mode.to_owned()));
    };
    Ok(Request {
        filename: filename.to_owned(),
        mode,
        options: parse_options(rest)?,
    })
}

fn parse_options(mut bytes: &[u8]) -> Result<Vec<(String, String)>, ParseError> {
    let mut options = Vec::new();
    while !bytes.is_empty() {
        // NUL padding after the last option is unambiguous, so it is tolerated rather than
        // failing a request over it.
        if bytes.iter().all(|&b| b == 0) {
            break;
        }
        let (name, rest) = take_string(bytes, Field::OptionName)?;
        if name.is_empty() {
            return Err(ParseError::EmptyOptionName);
        }
        // Values may be empty: iPXE sends "multicast" with an empty value (RFC 2090).
        let (value, rest) = take_string(rest, Field::OptionValue)?;
        if options.len() == MAX_OPTIONS {
            return Err(ParseError::TooManyOptions);
        }
        options.push((name.to_ascii_lowercase(), value.to_owned()));
        bytes = rest;
    }
    Ok(options)
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    out.extend_from_slice(bytes.get(..end).unwrap_or_default());
    out.push(0);
}

fn put_options(out: &mut Vec<u8>, options: &[(String, String)]) {
    for (name, value) in options {
        put_string(out, name);
        put_string(out, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::options;
    use proptest::prelude::*;

    /// An RRQ of these NUL-terminated fields (filename, mode, option names and values).
    fn rrq(fields: &[&[u8]]) -> Vec<u8> {
        let mut bytes = vec![0x00, 0x01];
        for field in fields {
            bytes.extend_from_slice(field);
            bytes.push(0);
        }
        bytes
    }

    /// Parses `bytes`, which must be an octet RRQ of `filename` with `pairs` as its options.
    fn parses_as_rrq<'a>(bytes: &'a [u8], filename: &str, pairs: &[(&str, &str)]) -> Packet<'a> {
        let packet = Packet::parse(bytes).expect("valid rrq");
        assert_eq!(
            packet,
            Packet::Rrq(Request {
                filename: filename.into(),
                mode: Mode::Octet,
                options: options(pairs),
            })
        );
        packet
    }

    #[test]
    fn parses_an_ipxe_rrq() {
        // What iPXE's tftp_send_rrq builds: path, "octet", blksize and tsize.
        let bytes = rrq(&[
            b"undionly.kpxe",
            b"octet",
            b"blksize",
            b"1432",
            b"tsize",
            b"0",
        ]);
        let packet = parses_as_rrq(
            &bytes,
            "undionly.kpxe",
            &[("blksize", "1432"), ("tsize", "0")],
        );
        assert_eq!(packet.encode(), bytes);
    }

    #[test]
    fn parses_an_ipxe_rrq_with_the_empty_multicast_option() {
        let mut bytes = vec![0x00, 0x01];
        bytes.extend_from_slice(b"/ipxe.efi\0octet\0blksize\x001432\0tsize\x000\0multicast\0\0");
        let Ok(Packet::Rrq(request)) = Packet::parse(&bytes) else {
            panic!("not an rrq");
        };
        assert_eq!(request.filename, "/ipxe.efi");
        assert_eq!(
            request.options,
            options(&[("blksize", "1432"), ("tsize", "0"), ("multicast", "")])
        );
    }

    #[test]
    fn parses_an_edk2_rrq() {
        // OVMF's PXE: blksize 1468 and windowsize 4 with a tsize request, octet in upper case
        // to check the mode is case-insensitive, option names mixed case to check lowercasing.
        let bytes = rrq(&[
            b"ipxe.efi",
            b"OCTET",
            b"blksize",
            b"1468",
            b"WindowSize",
            b"4",
            b"tsize",
            b"0",
        ]);
        parses_as_rrq(
            &bytes,
            "ipxe.efi",
            &[("blksize", "1468"), ("windowsize", "4"), ("tsize", "0")],
        );
    }

    #[test]
    fn parses_an_edk2_abort_with_error_8() {
        let mut bytes = vec![0x00, 0x05, 0x00, 0x08];
        bytes.extend_from_slice(b"User aborted the transfer\0");
        assert_eq!(
            Packet::parse(&bytes),
            Ok(Packet::Error {
                code: ErrorCode::OptionRefused,
                message: "User aborted the transfer".into(),
            })
        );
    }

    #[test]
    fn error_without_nul_or_with_trailing_bytes_is_read() {
        assert_eq!(
            Packet::parse(b"\x00\x05\x00\x00bye"),
            Ok(Packet::Error {
                code: ErrorCode::NotDefined,
                message: "bye".into()
            })
        );
        assert_eq!(
            Packet::parse(b"\x00\x05\x00\x63bye\0junk"),
            Ok(Packet::Error {
                code: ErrorCode::Other(99),
                message: "bye".into()
            })
        );
    }

    #[test]
    fn round_trips_every_kind() {
        let packets = [
            Packet::Rrq(Request {
                filename: "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff".into(),
                mode: Mode::Netascii,
                options: vec![],
            }),
            Packet::Wrq(Request {
                filename: "x".into(),
                mode: Mode::Octet,
                options: options(&[("blksize", "512")]),
            }),
            Packet::Data {
                block: 65535,
                data: b"hello",
            },
            Packet::Data {
                block: 0,
                data: b"",
            },
            Packet::Ack { block: 7 },
            Packet::Error {
                code: ErrorCode::FileNotFound,
                message: "file not found".into(),
            },
            Packet::Oack {
                options: options(&[("tsize", "123"), ("blksize", "1468")]),
            },
        ];
        for packet in packets {
            assert_eq!(Packet::parse(&packet.encode()), Ok(packet.clone()));
        }
    }

    #[test]
    fn refuses_malformed_packets() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::TooShort),
            (b"\x00", ParseError::TooShort),
            (b"\x00\x03\x00", ParseError::TooShort),
            (b"\x00\x04\x00", ParseError::TooShort),
            (b"\x00\x04\x00\x01\x00", ParseError::TrailingBytes),
            (b"\x00\x09", ParseError::UnknownOpcode(9)),
            (b"\x00\x00", ParseError::UnknownOpcode(0)),
            (b"\x00\x01file", ParseError::Unterminated(Field::Filename)),
            (
                b"\x00\x01file\0octet",
                ParseError::Unterminated(Field::Mode),
            ),
            (
                b"\x00\x01file\0mail\0",
                ParseError::UnsupportedMode("mail".into()),
            ),
            (
                b"\x00\x01file\0binary\0",
                ParseError::UnsupportedMode("binary".into()),
            ),
            (
                b"\x00\x01file\0octet\0blksize",
                ParseError::Unterminated(Field::OptionName),
            ),
            (
                b"\x00\x01file\0octet\0blksize\0",
                ParseError::Unterminated(Field::OptionValue),
            ),
            (b"\x00\x01file\0octet\0\0x\0", ParseError::EmptyOptionName),
            (
                b"\x00\x01\xff\0octet\0",
                ParseError::NotUtf8(Field::Filename),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Packet::parse(bytes).as_ref(), Err(expected), "{bytes:?}");
        }
    }

    #[test]
    fn tolerates_nul_padding_after_options() {
        let Ok(Packet::Rrq(request)) = Packet::parse(b"\x00\x01f\0octet\0tsize\x000\0\0\0\0")
        else {
            panic!("not an rrq");
        };
        assert_eq!(request.options, options(&[("tsize", "0")]));
    }

    #[test]
    fn bounds_sizes() {
        let mut long_request = b"\x00\x01".to_vec();
        long_request.extend(std::iter::repeat_n(b'a', MAX_REQUEST_LEN));
        long_request.extend_from_slice(b"\0octet\0");
        assert!(matches!(
            Packet::parse(&long_request),
            Err(ParseError::TooLong { .. })
        ));

        let mut many_options = b"\x00\x01f\0octet\0".to_vec();
        for i in 0..=MAX_OPTIONS {
            many_options.extend_from_slice(format!("o{i}\0v\0").as_bytes());
        }
        assert_eq!(
            Packet::parse(&many_options),
            Err(ParseError::TooManyOptions)
        );

        let mut big_data = vec![0x00, 0x03, 0x00, 0x01];
        big_data.resize(MAX_DATAGRAM_LEN, 0xaa);
        assert!(matches!(Packet::parse(&big_data), Ok(Packet::Data { .. })));
        big_data.push(0);
        assert!(matches!(
            Packet::parse(&big_data),
            Err(ParseError::TooLong { .. })
        ));
    }

    #[test]
    fn encoding_cuts_strings_at_nul() {
        let packet = Packet::Error {
            code: ErrorCode::NotDefined,
            message: "a\0b".into(),
        };
        assert_eq!(packet.encode(), b"\x00\x05\x00\x00a\0");
    }

    #[test]
    fn helper_datagrams() {
        assert_eq!(
            Packet::parse(&write_refused_datagram()),
            Ok(Packet::Error {
                code: ErrorCode::AccessViolation,
                message: "read-only server".into()
            })
        );
        assert_eq!(
            Packet::parse(&unknown_transfer_id_datagram()),
            Ok(Packet::Error {
                code: ErrorCode::UnknownTransferId,
                message: "unknown transfer id".into()
            })
        );
        let mut buf = vec![9; 3];
        encode_data_into(258, b"xy", &mut buf);
        assert_eq!(buf, b"\x00\x03\x01\x02xy");
    }

    #[test]
    fn error_codes_round_trip() {
        for code in 0..=20u16 {
            assert_eq!(ErrorCode::from_u16(code).as_u16(), code);
        }
        assert_eq!(ErrorCode::from_u16(8), ErrorCode::OptionRefused);
    }

    fn text() -> impl Strategy<Value = String> {
        // Any characters but NUL, the one the wire format cannot carry in a string.
        "[^\u{0}]{0,20}"
    }

    fn option_list() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec(("[a-z][a-z0-9]{0,10}", text()), 0..4)
    }

    fn any_packet() -> impl Strategy<Value = Packet<'static>> {
        let mode = prop_oneof![Just(Mode::Octet), Just(Mode::Netascii)];
        let request = (text(), mode, option_list())
            .prop_map(|(filename, mode, options)| Request {
                filename,
                mode,
                options,
            })
            .boxed();
        prop_oneof![
            request.clone().prop_map(Packet::Rrq),
            request.prop_map(Packet::Wrq),
            any::<u16>().prop_map(|block| Packet::Ack { block }),
            (any::<u16>(), text()).prop_map(|(code, message)| Packet::Error {
                code: ErrorCode::from_u16(code),
                message,
            }),
            option_list().prop_map(|options| Packet::Oack { options }),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = Packet::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_plausible_requests(
            opcode in 0u16..8,
            body in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(b'a'), any::<u8>()],
                0..64,
            ),
        ) {
            let mut bytes = opcode.to_be_bytes().to_vec();
            bytes.extend_from_slice(&body);
            let _ = Packet::parse(&bytes);
        }

        #[test]
        fn encode_then_parse_round_trips(packet in any_packet()) {
            let bytes = packet.encode();
            prop_assert_eq!(Packet::parse(&bytes), Ok(packet));
        }

        #[test]
        fn data_round_trips(
            block in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let packet = Packet::Data { block, data: &data };
            let bytes = packet.encode();
            prop_assert_eq!(Packet::parse(&bytes), Ok(packet));
        }
    }
}
