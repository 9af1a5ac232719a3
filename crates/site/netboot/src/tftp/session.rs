//! The server side of one read transfer, as a state machine without I/O.
//!
//! The caller owns the socket, the clock and the file. It feeds the machine the datagrams that
//! came from the transfer's peer ([`ReadTransfer::on_packet`]) and the expiry of the timer it
//! armed for [`ReadTransfer::timeout`] ([`ReadTransfer::on_timeout`]), and after each call drains
//! [`ReadTransfer::poll_transmit`], which writes the next datagram to send into one reusable
//! buffer, reading DATA payloads straight from a [`BlockSource`] behind the header: a window of
//! any size costs no allocation and no copy beyond the read itself.
//!
//! Behaviour:
//! - With acknowledged options the transfer opens with an OACK and waits for ACK 0. An ERROR in
//!   answer to the OACK with code 8 (option refused) or 0 ends it as [`Outcome::Declined`]: that
//!   is how EDK2/OVMF ends the tsize probe it sends before every real download.
//! - Blocks go out a window at a time (RFC 7440; a window of one is RFC 1350's lock-step). An ACK
//!   of any block in flight moves the window to the block after it, and the next window is sent
//!   from there: an ACK of the window's last block is the normal case, an ACK of an earlier one
//!   means the blocks after it were lost.
//! - An ACK of the block before the window, or of anything older, is a duplicate and is
//!   ignored. Answering duplicates is the Sorcerer's Apprentice bug (RFC 1123 §4.2.3.1): every
//!   duplicate ACK would double the DATA sent from then on. The price is that a lost first block
//!   of a window is resent on timeout rather than at once.
//! - On timeout the whole window (or the OACK) is resent, up to `max_retries` times in a row;
//!   the next timeout fails the transfer with ERROR 0.
//! - Block numbers roll over from 65535 to 0, the convention of tftp-hpa, dnsmasq, iPXE and
//!   EDK2, so a file has no size limit (at 512-byte blocks, 65535 blocks is 32 MiB). Internally
//!   blocks are counted in `u64` from 1; the wire carries the count modulo 65536.
//! - The last block is shorter than the block size; a file whose size is a multiple of it ends
//!   with an empty block, and an empty file is one empty block.
//! - Any packet from the peer other than ACK and ERROR, or one that does not parse, fails the
//!   transfer with ERROR 4 (illegal operation). A read error fails it with ERROR 1 (not found),
//!   2 (permission denied) or 0 (anything else), without the error's details.
//! - Netascii requests are converted on the fly (LF to CR LF, CR to CR NUL) and run lock-step.
//!
//! Datagrams from any address or port other than the peer's are the caller's to answer with
//! [`super::packet::unknown_transfer_id_datagram`]; they must not reach this machine.

use std::io;
use std::time::Duration;

use super::negotiate::{negotiate, Limits, Negotiation};
use super::packet::{data_header, encode_error_into, ErrorCode, Mode, Packet, ParseError, Request};

/// Where the bytes of the file come from: a `pread`-like read at an offset.
///
/// The socket layer implements it for its open file (a newtype around `std::fs::File` calling
/// `std::os::unix::fs::FileExt::read_at`); tests use a byte slice.
pub trait BlockSource {
    /// Reads up to `buf.len()` bytes at `offset`; `Ok(0)` means the end of the source.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

impl BlockSource for [u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let available = self.get(start..).unwrap_or_default();
        let len = available.len().min(buf.len());
        if let (Some(to), Some(from)) = (buf.get_mut(..len), available.get(..len)) {
            to.copy_from_slice(from);
        }
        Ok(len)
    }
}

impl BlockSource for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.as_slice().read_at(offset, buf)
    }
}

impl<T: BlockSource + ?Sized> BlockSource for &T {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(offset, buf)
    }
}

/// Counters for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Payload bytes the client has acknowledged.
    pub bytes_acknowledged: u64,
    /// Blocks the client has acknowledged.
    pub blocks_acknowledged: u64,
    /// Datagrams handed out: OACK, DATA and ERROR, first sends and resends alike.
    pub datagrams_sent: u64,
    /// DATA datagrams that repeated a block sent before.
    pub blocks_resent: u64,
    /// Timeouts that fired.
    pub timeouts: u32,
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Completed(TransferStats),
    /// The client answered the OACK with ERROR 8 or 0: a size probe (EDK2) or options it does
    /// not like. Not a fault; count it apart from failures.
    Declined { code: ErrorCode, message: String },
    /// The client sent an ERROR during the transfer.
    AbortedByClient {
        code: ErrorCode,
        message: String,
        stats: TransferStats,
    },
    /// We gave up; the ERROR datagram telling the client is handed out by `poll_transmit`.
    Failed {
        reason: Failure,
        stats: TransferStats,
    },
}

/// Why we gave up on a transfer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("no acknowledgement after {retries} retransmissions")]
    TimedOut { retries: u32 },
    #[error("malformed packet from the client: {0}")]
    MalformedPacket(ParseError),
    #[error("unexpected packet with opcode {opcode} from the client")]
    IllegalPacket { opcode: u16 },
    #[error("reading the file failed: {message}")]
    Read {
        kind: io::ErrorKind,
        message: String,
    },
    #[error("the file ended at offset {offset}, before its announced size")]
    SourceTruncated { offset: u64 },
}

/// What a received datagram did, for logs and tests; the datagrams to send, if any, come from
/// `poll_transmit` either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// The client acknowledged new data (or the OACK).
    Progress,
    /// A duplicate, stale or out-of-range ACK, or anything after the end: dropped.
    Ignored,
    /// The transfer has ended; see [`ReadTransfer::outcome`].
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// OACK sent, waiting for ACK 0.
    AwaitingOptionAck,
    /// DATA in flight from `window_start` on.
    Sending,
    Finished,
}

/// A read position in netascii mode: the source offset, and the second byte of a CR LF or
/// CR NUL pair that did not fit in the previous block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NetasciiCursor {
    offset: u64,
    carry: Option<u8>,
}

#[derive(Debug)]
struct Netascii {
    /// Where the block at `window_start` begins.
    window_start: NetasciiCursor,
    /// Where the block after the one last produced begins.
    after_sent: NetasciiCursor,
    /// Source bytes read before conversion; conversion grows them, so they cannot be read in
    /// place into the datagram buffer.
    scratch: Vec<u8>,
}

/// One read transfer; see the module documentation.
#[derive(Debug)]
pub struct ReadTransfer {
    negotiation: Negotiation,
    size: u64,
    blksize: usize,
    windowsize: u64,
    max_retries: u32,
    phase: Phase,
    oack: Vec<u8>,
    oack_owed: bool,
    error_owed: Option<(ErrorCode, &'static str)>,
    /// First block not yet acknowledged, counted from 1.
    window_start: u64,
    /// Next block `poll_transmit` hands out.
    next_block: u64,
    /// Highest block handed out so far; 0 before the first.
    highest_sent: u64,
    /// The final block, known from the size in octet mode, found when produced in netascii.
    last_block: Option<u64>,
    /// Payload length of the block last produced (netascii byte accounting).
    last_produced_len: usize,
    /// Consecutive timeouts without progress.
    retries: u32,
    netascii: Option<Netascii>,
    stats: TransferStats,
    outcome: Option<Outcome>,
}

impl ReadTransfer {
    /// Starts serving `request` from a source of `size` bytes. The first `poll_transmit` hands
    /// out the OACK, or DATA 1 when no option was accepted.
    pub fn start(request: &Request, size: u64, limits: &Limits) -> ReadTransfer {
        let negotiation = negotiate(request.mode, &request.options, size, limits);
        let blksize = usize::from(negotiation.blksize);
        let oack = if negotiation.needs_oack() {
            Packet::Oack {
                options: negotiation.acknowledged.clone(),
            }
            .encode()
        } else {
            Vec::new()
        };
        let (phase, oack_owed) = if negotiation.needs_oack() {
            (Phase::AwaitingOptionAck, true)
        } else {
            (Phase::Sending, false)
        };
        let netascii = (request.mode == Mode::Netascii).then(|| {
            let start = NetasciiCursor {
                offset: 0,
                carry: None,
            };
            Netascii {
                window_start: start,
                after_sent: start,
                scratch: vec![0; blksize],
            }
        });
        let last_block = match request.mode {
            Mode::Octet => Some(size / blksize as u64 + 1),
            Mode::Netascii => None,
        };
        ReadTransfer {
            windowsize: u64::from(negotiation.windowsize),
            max_retries: limits.max_retries,
            negotiation,
            size,
            blksize,
            phase,
            oack,
            oack_owed,
            error_owed: None,
            window_start: 1,
            next_block: 1,
            highest_sent: 0,
            last_block,
            last_produced_len: 0,
            retries: 0,
            netascii,
            stats: TransferStats::default(),
            outcome: None,
        }
    }

    /// What was negotiated: block size, window size, timeout, the OACK's options.
    pub fn negotiation(&self) -> &Negotiation {
        &self.negotiation
    }

    /// How long to wait, after the last datagram sent, before calling `on_timeout`. Re-arm the
    /// timer only when `poll_transmit` handed something out: a client repeating an old ACK must
    /// not keep postponing the retransmission it needs.
    pub fn timeout(&self) -> Duration {
        self.negotiation.timeout
    }

    /// The largest datagram this transfer hands out, to size the caller's buffers.
    pub fn max_datagram_len(&self) -> usize {
        (4 + self.blksize).max(self.oack.len())
    }

    /// How the transfer ended, once it has. Drain `poll_transmit` first: a failure leaves an
    /// ERROR datagram to send.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Counters so far.
    pub fn stats(&self) -> TransferStats {
        self.stats
    }

    /// Writes the next datagram to send into `buf` (replacing its contents) and returns it, or
    /// returns `None` when nothing more is owed until the next event. Call it until `None`
    /// after `start`, `on_packet` and `on_timeout`.
    pub fn poll_transmit<'b, S: BlockSource + ?Sized>(
        &mut self,
        source: &S,
        buf: &'b mut Vec<u8>,
    ) -> Option<&'b [u8]> {
        if let Some((code, message)) = self.error_owed.take() {
            encode_error_into(code, message, buf);
            return Some(buf.as_slice());
        }
        match self.phase {
            Phase::Finished => None,
            Phase::AwaitingOptionAck => {
                if !self.oack_owed {
                    return None;
                }
                self.oack_owed = false;
                buf.clear();
                buf.extend_from_slice(&self.oack);
                self.stats.datagrams_sent += 1;
                Some(buf.as_slice())
            }
            Phase::Sending => {
                if self.next_block > self.window_end() {
                    return None;
                }
                let block = self.next_block;
                let filled = if self.netascii.is_some() {
                    self.fill_netascii_block(block, source, buf)
                } else {
                    self.fill_octet_block(block, source, buf)
                };
                if let Err(reason) = filled {
                    self.fail(reason);
                    let (code, message) = self.error_owed.take()?;
                    encode_error_into(code, message, buf);
                    return Some(buf.as_slice());
                }
                if block <= self.highest_sent {
                    self.stats.blocks_resent += 1;
                }
                self.highest_sent = self.highest_sent.max(block);
                self.next_block = block + 1;
                self.stats.datagrams_sent += 1;
                Some(buf.as_slice())
            }
        }
    }

    /// Handles one datagram from the transfer's peer.
    pub fn on_packet(&mut self, datagram: &[u8]) -> Reaction {
        if self.phase == Phase::Finished {
            return Reaction::Ignored;
        }
        let packet = match Packet::parse(datagram) {
            Ok(packet) => packet,
            Err(error) => {
                self.fail(Failure::MalformedPacket(error));
                return Reaction::Ended;
            }
        };
        match packet {
            Packet::Ack { block } => self.on_ack(block),
            Packet::Error { code, message } => {
                let declined = self.phase == Phase::AwaitingOptionAck
                    && matches!(code, ErrorCode::OptionRefused | ErrorCode::NotDefined);
                self.outcome = Some(if declined {
                    Outcome::Declined { code, message }
                } else {
                    Outcome::AbortedByClient {
                        code,
                        message,
                        stats: self.stats,
                    }
                });
                // Never answer an ERROR: the peer has gone (RFC 1350 §7).
                self.phase = Phase::Finished;
                Reaction::Ended
            }
            other => {
                self.fail(Failure::IllegalPacket {
                    opcode: other.opcode(),
                });
                Reaction::Ended
            }
        }
    }

    /// The timer armed for `timeout()` expired without progress: resend the window (or the
    /// OACK), or give up after `max_retries` resends in a row.
    pub fn on_timeout(&mut self) {
        if self.phase == Phase::Finished {
            return;
        }
        self.stats.timeouts = self.stats.timeouts.saturating_add(1);
        if self.retries >= self.max_retries {
            self.fail(Failure::TimedOut {
                retries: self.retries,
            });
            return;
        }
        self.retries += 1;
        match self.phase {
            Phase::AwaitingOptionAck => self.oack_owed = true,
            Phase::Sending => self.next_block = self.window_start,
            Phase::Finished => {}
        }
    }

    fn on_ack(&mut self, wire_block: u16) -> Reaction {
        if self.phase == Phase::AwaitingOptionAck {
            if wire_block != 0 {
                return Reaction::Ignored;
            }
            self.phase = Phase::Sending;
            self.retries = 0;
            return Reaction::Progress;
        }
        // Distance from the last acknowledged block, in the 16-bit space the wire uses. It is
        // unambiguous because no more than MAX_WINDOWSIZE (half that space) blocks are ever in
        // flight: anything further ahead than what was sent is older than the window.
        let acknowledged_before = self.window_start - 1;
        let distance = u64::from(wire_block.wrapping_sub(wire(acknowledged_before)));
        let in_flight = self.highest_sent.saturating_sub(acknowledged_before);
        if distance == 0 || distance > in_flight {
            return Reaction::Ignored;
        }
        let acknowledged = acknowledged_before + distance;
        self.stats.blocks_acknowledged = acknowledged;
        self.retries = 0;
        if let Some(netascii) = &mut self.netascii {
            // Lock-step, so the acknowledged block is the one last produced.
            netascii.window_start = netascii.after_sent;
            self.stats.bytes_acknowledged += self.last_produced_len as u64;
        } else {
            self.stats.bytes_acknowledged = acknowledged
                .saturating_mul(self.blksize as u64)
                .min(self.size);
        }
        self.window_start = acknowledged + 1;
        self.next_block = self.window_start;
        if self.last_block == Some(acknowledged) {
            self.phase = Phase::Finished;
            self.outcome = Some(Outcome::Completed(self.stats));
            return Reaction::Ended;
        }
        Reaction::Progress
    }

    /// Last block of the current window.
    fn window_end(&self) -> u64 {
        let end = self.window_start + (self.windowsize - 1);
        self.last_block.map_or(end, |last| end.min(last))
    }

    fn fail(&mut self, reason: Failure) {
        let error = match &reason {
            Failure::TimedOut { .. } => (ErrorCode::NotDefined, "transfer timed out"),
            Failure::MalformedPacket(_) => (ErrorCode::IllegalOperation, "malformed packet"),
            Failure::IllegalPacket { .. } => (ErrorCode::IllegalOperation, "illegal operation"),
            Failure::Read { kind, .. } => match kind {
                io::ErrorKind::NotFound => (ErrorCode::FileNotFound, "file not found"),
                io::ErrorKind::PermissionDenied => (ErrorCode::AccessViolation, "access violation"),
                _ => (ErrorCode::NotDefined, "read error"),
            },
            Failure::SourceTruncated { .. } => {
                (ErrorCode::NotDefined, "file changed during transfer")
            }
        };
        self.error_owed = Some(error);
        self.stats.datagrams_sent += 1;
        self.phase = Phase::Finished;
        self.outcome = Some(Outcome::Failed {
            reason,
            stats: self.stats,
        });
    }

    fn fill_octet_block<S: BlockSource + ?Sized>(
        &self,
        block: u64,
        source: &S,
        buf: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let offset = (block - 1).saturating_mul(self.blksize as u64);
        let len = self.size.saturating_sub(offset).min(self.blksize as u64) as usize;
        buf.clear();
        buf.extend_from_slice(&data_header(wire(block)));
        buf.resize(4 + len, 0);
        read_exact_at(source, offset, buf.get_mut(4..).unwrap_or_default())
    }

    fn fill_netascii_block<S: BlockSource + ?Sized>(
        &mut self,
        block: u64,
        source: &S,
        buf: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let blksize = self.blksize;
        let size = self.size;
        let Some(netascii) = &mut self.netascii else {
            return Ok(());
        };
        buf.clear();
        buf.extend_from_slice(&data_header(wire(block)));
        let payload_start = buf.len();
        let mut cursor = netascii.window_start;
        if let Some(carried) = cursor.carry.take() {
            buf.push(carried);
        }
        while buf.len() - payload_start < blksize && cursor.offset < size {
            let wanted = (size - cursor.offset).min(netascii.scratch.len() as u64) as usize;
            let chunk = netascii.scratch.get_mut(..wanted).unwrap_or_default();
            let read = read_some_at(source, cursor.offset, chunk)?;
            for &byte in chunk.get(..read).unwrap_or_default() {
                let room = blksize - (buf.len() - payload_start);
                if room == 0 {
                    break;
                }
                cursor.offset += 1;
                let pair = match byte {
                    b'\n' => [b'\r', b'\n'],
                    b'\r' => [b'\r', 0],
                    other => {
                        buf.push(other);
                        continue;
                    }
                };
                buf.push(pair[0]);
                if room >= 2 {
                    buf.push(pair[1]);
                } else {
                    cursor.carry = Some(pair[1]);
                }
            }
        }
        let produced = buf.len() - payload_start;
        netascii.after_sent = cursor;
        self.last_produced_len = produced;
        if produced < blksize {
            self.last_block = Some(block);
        }
        Ok(())
    }
}

/// The block number the wire carries for block `index` (counted from 1): rolls over from 65535
/// to 0.
fn wire(index: u64) -> u16 {
    (index & 0xffff) as u16
}

/// Consecutive `Interrupted` errors tolerated from a source before treating them as a failure,
/// so a broken source cannot spin the caller forever.
const MAX_INTERRUPTS: u32 = 16;

/// One read that returns at least one byte, retrying interruptions.
fn read_some_at<S: BlockSource + ?Sized>(
    source: &S,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize, Failure> {
    let mut interrupts = 0;
    loop {
        match source.read_at(offset, buf) {
            Ok(0) => return Err(Failure::SourceTruncated { offset }),
            // A source claiming more than it was given is clamped rather than trusted.
            Ok(read) => return Ok(read.min(buf.len())),
            Err(error)
                if error.kind() == io::ErrorKind::Interrupted && interrupts < MAX_INTERRUPTS =>
            {
                interrupts += 1;
            }
            Err(error) => {
                return Err(Failure::Read {
                    kind: error.kind(),
                    message: error.to_string(),
                })
            }
        }
    }
}

fn read_exact_at<S: BlockSource + ?Sized>(
    source: &S,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), Failure> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        filled += read_some_at(source, offset + filled as u64, rest)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;
    use crate::tftp::packet::ParseError;

    fn request(mode: Mode, options: &[(&str, &str)]) -> Request {
        Request {
            filename: "ipxe.efi".into(),
            mode,
            options: options
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn octet(options: &[(&str, &str)]) -> Request {
        request(Mode::Octet, options)
    }

    fn patterned_file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn ack(block: u16) -> Vec<u8> {
        Packet::Ack { block }.encode()
    }

    fn error(code: ErrorCode, message: &str) -> Vec<u8> {
        Packet::Error {
            code,
            message: message.into(),
        }
        .encode()
    }

    /// Everything `poll_transmit` owes right now.
    fn drain<S: BlockSource + ?Sized>(transfer: &mut ReadTransfer, source: &S) -> Vec<Vec<u8>> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(datagram) = transfer.poll_transmit(source, &mut buf) {
            out.push(datagram.to_vec());
            assert!(out.len() <= 70_000, "poll_transmit never ran dry");
        }
        out
    }

    /// An octet transfer of `file`, announced as `announced` bytes, whose first block the
    /// client acknowledged.
    fn first_block_acked(file: &[u8], announced: u64) -> ReadTransfer {
        let mut transfer = ReadTransfer::start(&octet(&[]), announced, &Limits::default());
        drain(&mut transfer, file);
        transfer.on_packet(&ack(1));
        transfer
    }

    fn data_block(datagram: &[u8]) -> (u16, Vec<u8>) {
        match Packet::parse(datagram) {
            Ok(Packet::Data { block, data }) => (block, data.to_vec()),
            other => panic!("expected DATA, got {other:?}"),
        }
    }

    fn data_blocks(datagrams: &[Vec<u8>]) -> Vec<u16> {
        datagrams.iter().map(|d| data_block(d).0).collect()
    }

    fn owned(datagram: &[u8]) -> Packet<'static> {
        match Packet::parse(datagram).expect("server datagrams parse") {
            Packet::Data { .. } => panic!("use data_block for DATA"),
            Packet::Rrq(r) => Packet::Rrq(r),
            Packet::Wrq(r) => Packet::Wrq(r),
            Packet::Ack { block } => Packet::Ack { block },
            Packet::Error { code, message } => Packet::Error { code, message },
            Packet::Oack { options } => Packet::Oack { options },
        }
    }

    fn pairs(options: &[(&str, &str)]) -> Vec<(String, String)> {
        options
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// A client that behaves like EDK2's Mtftp4: it ACKs after every `windowsize` blocks in
    /// order and at the last block, answers any block out of order (lost, duplicate, reordered)
    /// with an ACK of the last block it has in order, and once done re-ACKs any DATA (the
    /// dally of RFC 1350). With a window of 1 that is also how iPXE behaves.
    #[derive(Debug)]
    struct Client {
        blksize: usize,
        windowsize: u64,
        /// Next block wanted, counted from 1.
        expected: u64,
        since_ack: u64,
        heard_from_server: bool,
        data: Vec<u8>,
        done: bool,
        error_received: Option<ErrorCode>,
    }

    impl Client {
        fn new() -> Client {
            Client {
                blksize: 512,
                windowsize: 1,
                expected: 1,
                since_ack: 0,
                heard_from_server: false,
                data: Vec::new(),
                done: false,
                error_received: None,
            }
        }

        fn last_in_order(&self) -> u16 {
            wire(self.expected - 1)
        }

        fn on_datagram(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
            match Packet::parse(datagram) {
                Ok(Packet::Oack { options }) => {
                    if self.expected != 1 {
                        return None;
                    }
                    self.heard_from_server = true;
                    for (name, value) in options {
                        let value: u64 = value.parse().expect("numeric option");
                        match name.as_str() {
                            "blksize" => self.blksize = value as usize,
                            "windowsize" => self.windowsize = value,
                            _ => {}
                        }
                    }
                    Some(ack(0))
                }
                Ok(Packet::Data { block, data }) => {
                    self.heard_from_server = true;
                    if self.done || block != wire(self.expected) {
                        self.since_ack = 0;
                        return Some(ack(self.last_in_order()));
                    }
                    assert!(data.len() <= self.blksize, "block larger than blksize");
                    self.data.extend_from_slice(data);
                    self.expected += 1;
                    self.since_ack += 1;
                    if data.len() < self.blksize {
                        self.done = true;
                    }
                    if self.done || self.since_ack >= self.windowsize {
                        self.since_ack = 0;
                        return Some(ack(block));
                    }
                    None
                }
                Ok(Packet::Error { code, .. }) => {
                    self.error_received = Some(code);
                    None
                }
                other => panic!("server sent {other:?}"),
            }
        }

        /// The client's own timer: repeat the last ACK, as iPXE and EDK2 do. Before the
        /// server has answered, a real client would repeat its RRQ to port 69 instead, which
        /// is not this transfer's business.
        fn on_idle(&mut self) -> Option<Vec<u8>> {
            (self.heard_from_server && self.error_received.is_none())
                .then(|| ack(self.last_in_order()))
        }
    }

    /// Drives a transfer with `client` over a perfect network until nothing is left to send.
    fn run_clean(
        file: &[u8],
        request: &Request,
        limits: &Limits,
        client: &mut Client,
    ) -> (ReadTransfer, Vec<Vec<u8>>) {
        let mut transfer = ReadTransfer::start(request, file.len() as u64, limits);
        let sent = run_to_end(&mut transfer, file, client);
        (transfer, sent)
    }

    /// Sends what `transfer` owes and hands `client` its answers until nothing is left to send;
    /// answers every datagram sent.
    fn run_to_end<S: BlockSource + ?Sized>(
        transfer: &mut ReadTransfer,
        source: &S,
        client: &mut Client,
    ) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        for _ in 0..1_000_000 {
            let datagrams = drain(transfer, source);
            if datagrams.is_empty() {
                break;
            }
            for datagram in datagrams {
                if let Some(reply) = client.on_datagram(&datagram) {
                    transfer.on_packet(&reply);
                }
                sent.push(datagram);
            }
        }
        sent
    }

    #[test]
    fn lock_step_transfer_of_three_and_a_half_blocks() {
        let file = patterned_file(512 * 3 + 256);
        let mut transfer = ReadTransfer::start(&octet(&[]), file.len() as u64, &Limits::default());
        let mut client = Client::new();
        let mut sizes = Vec::new();
        loop {
            let datagrams = drain(&mut transfer, file.as_slice());
            if datagrams.is_empty() {
                break;
            }
            // Lock-step: exactly one datagram per ACK, and no OACK without options.
            assert_eq!(datagrams.len(), 1);
            let (_, data) = data_block(&datagrams[0]);
            sizes.push(data.len());
            let reply = client
                .on_datagram(&datagrams[0])
                .expect("client acks each block");
            transfer.on_packet(&reply);
        }
        assert_eq!(sizes, [512, 512, 512, 256]);
        assert_eq!(client.data, file);
        assert_eq!(
            transfer.outcome(),
            Some(&Outcome::Completed(TransferStats {
                bytes_acknowledged: 1792,
                blocks_acknowledged: 4,
                datagrams_sent: 4,
                blocks_resent: 0,
                timeouts: 0,
            }))
        );
    }

    #[test]
    fn ipxe_transfer_opens_with_an_oack() {
        let file = patterned_file(5000);
        let request = octet(&[("blksize", "1432"), ("tsize", "0")]);
        let (transfer, sent) = run_clean(&file, &request, &Limits::default(), &mut Client::new());
        assert_eq!(
            owned(&sent[0]),
            Packet::Oack {
                options: pairs(&[("blksize", "1432"), ("tsize", "5000")])
            }
        );
        assert_eq!(data_blocks(&sent[1..]), [1, 2, 3, 4]);
        assert_eq!(data_block(&sent[4]).1.len(), 5000 - 3 * 1432);
        assert!(matches!(transfer.outcome(), Some(Outcome::Completed(_))));
    }

    #[test]
    fn file_of_whole_blocks_ends_with_an_empty_block() {
        let file = patterned_file(1024);
        let mut client = Client::new();
        let (transfer, sent) = run_clean(&file, &octet(&[]), &Limits::default(), &mut client);
        let sizes: Vec<usize> = sent.iter().map(|d| data_block(d).1.len()).collect();
        assert_eq!(sizes, [512, 512, 0]);
        assert_eq!(client.data, file);
        assert!(
            matches!(transfer.outcome(), Some(Outcome::Completed(s)) if s.blocks_acknowledged == 3)
        );
    }

    #[test]
    fn empty_file_is_one_empty_block() {
        let mut client = Client::new();
        let (transfer, sent) = run_clean(&[], &octet(&[]), &Limits::default(), &mut client);
        assert_eq!(sent.len(), 1);
        assert_eq!(data_block(&sent[0]), (1, vec![]));
        assert!(client.done);
        assert!(
            matches!(transfer.outcome(), Some(Outcome::Completed(s)) if s.bytes_acknowledged == 0)
        );
    }

    #[test]
    fn edk2_size_probe_aborted_with_error_8_is_declined() {
        let file = patterned_file(1_000_000);
        let probe = octet(&[("tsize", "0"), ("blksize", "1468")]);
        let mut transfer = ReadTransfer::start(&probe, file.len() as u64, &Limits::default());
        let sent = drain(&mut transfer, file.as_slice());
        assert_eq!(sent.len(), 1);
        assert_eq!(
            owned(&sent[0]),
            Packet::Oack {
                options: pairs(&[("tsize", "1000000"), ("blksize", "1468")])
            }
        );
        let reaction = transfer.on_packet(&error(
            ErrorCode::OptionRefused,
            "User aborted the transfer",
        ));
        assert_eq!(reaction, Reaction::Ended);
        assert!(
            drain(&mut transfer, file.as_slice()).is_empty(),
            "an ERROR is never answered"
        );
        assert_eq!(
            transfer.outcome(),
            Some(&Outcome::Declined {
                code: ErrorCode::OptionRefused,
                message: "User aborted the transfer".into()
            })
        );

        // Then the real download, windowed.
        let download = octet(&[("blksize", "1468"), ("windowsize", "4"), ("tsize", "0")]);
        let mut client = Client::new();
        let (transfer, sent) = run_clean(&file, &download, &Limits::default(), &mut client);
        assert_eq!(client.data, file);
        assert_eq!(data_blocks(&sent[1..5]), [1, 2, 3, 4]);
        let Some(Outcome::Completed(stats)) = transfer.outcome() else {
            panic!("not completed: {:?}", transfer.outcome());
        };
        assert_eq!(stats.blocks_acknowledged, 1_000_000 / 1468 + 1);
        assert_eq!(stats.blocks_resent, 0);
    }

    #[test]
    fn error_0_in_answer_to_the_oack_is_declined_other_codes_abort() {
        let file = patterned_file(10);
        let mut transfer = ReadTransfer::start(&octet(&[("tsize", "0")]), 10, &Limits::default());
        drain(&mut transfer, file.as_slice());
        transfer.on_packet(&error(ErrorCode::NotDefined, "abort"));
        assert!(matches!(transfer.outcome(), Some(Outcome::Declined { .. })));

        let mut transfer = ReadTransfer::start(&octet(&[("tsize", "0")]), 10, &Limits::default());
        drain(&mut transfer, file.as_slice());
        transfer.on_packet(&error(
            ErrorCode::IllegalOperation,
            "Malformatted OACK packet",
        ));
        assert!(matches!(
            transfer.outcome(),
            Some(Outcome::AbortedByClient {
                code: ErrorCode::IllegalOperation,
                ..
            })
        ));
    }

    #[test]
    fn windowed_transfer_recovers_a_lost_block_from_the_ack_before_it() {
        let file = patterned_file(8 * 10 + 4);
        let request = octet(&[("blksize", "8"), ("windowsize", "4")]);
        let mut transfer = ReadTransfer::start(&request, file.len() as u64, &Limits::default());
        let mut client = Client::new();
        let oack = drain(&mut transfer, file.as_slice());
        let ack0 = client.on_datagram(&oack[0]).expect("ack 0");
        assert_eq!(transfer.on_packet(&ack0), Reaction::Progress);

        let window = drain(&mut transfer, file.as_slice());
        assert_eq!(data_blocks(&window), [1, 2, 3, 4]);
        // Block 2 is lost: the client ACKs 1 when 3 arrives, and again when 4 arrives.
        assert_eq!(client.on_datagram(&window[0]), None);
        let first_ack = client.on_datagram(&window[2]).expect("ack on gap");
        let second_ack = client.on_datagram(&window[3]).expect("ack on gap");
        assert_eq!(first_ack, ack(1));
        assert_eq!(second_ack, ack(1));

        assert_eq!(transfer.on_packet(&first_ack), Reaction::Progress);
        let resent = drain(&mut transfer, file.as_slice());
        assert_eq!(data_blocks(&resent), [2, 3, 4, 5]);
        // The repeat is a duplicate now; answering it would send the window twice.
        assert_eq!(transfer.on_packet(&second_ack), Reaction::Ignored);
        assert!(drain(&mut transfer, file.as_slice()).is_empty());

        let mut replies = Vec::new();
        for datagram in &resent {
            replies.extend(client.on_datagram(datagram));
        }
        assert_eq!(replies, [ack(5)]);
        transfer.on_packet(&replies[0]);
        run_to_end(&mut transfer, file.as_slice(), &mut client);
        assert_eq!(client.data, file);
        let Some(Outcome::Completed(stats)) = transfer.outcome() else {
            panic!("not completed: {:?}", transfer.outcome());
        };
        assert_eq!(stats.blocks_acknowledged, 11);
        assert_eq!(stats.blocks_resent, 3);
    }

    #[test]
    fn stale_and_future_acks_are_ignored() {
        let file = patterned_file(8 * 20);
        let request = octet(&[("blksize", "8"), ("windowsize", "4")]);
        let mut transfer = ReadTransfer::start(&request, file.len() as u64, &Limits::default());
        drain(&mut transfer, file.as_slice());
        transfer.on_packet(&ack(0));
        assert_eq!(
            data_blocks(&drain(&mut transfer, file.as_slice())),
            [1, 2, 3, 4]
        );
        for bogus in [5, 6, 100, 40000, 65535] {
            assert_eq!(
                transfer.on_packet(&ack(bogus)),
                Reaction::Ignored,
                "ack {bogus}"
            );
        }
        assert_eq!(transfer.on_packet(&ack(0)), Reaction::Ignored);
        assert!(drain(&mut transfer, file.as_slice()).is_empty());
        assert_eq!(transfer.on_packet(&ack(4)), Reaction::Progress);
        assert_eq!(
            data_blocks(&drain(&mut transfer, file.as_slice())),
            [5, 6, 7, 8]
        );
        // Stale: from before the window.
        for stale in [0, 1, 3, 4] {
            assert_eq!(
                transfer.on_packet(&ack(stale)),
                Reaction::Ignored,
                "ack {stale}"
            );
        }
    }

    #[test]
    fn duplicate_ack_is_ignored() {
        let file = patterned_file(2000);
        let mut transfer = ReadTransfer::start(&octet(&[]), 2000, &Limits::default());
        assert_eq!(data_blocks(&drain(&mut transfer, file.as_slice())), [1]);
        assert_eq!(transfer.on_packet(&ack(1)), Reaction::Progress);
        assert_eq!(data_blocks(&drain(&mut transfer, file.as_slice())), [2]);
        assert_eq!(transfer.on_packet(&ack(1)), Reaction::Ignored);
        assert!(
            drain(&mut transfer, file.as_slice()).is_empty(),
            "no resend on a duplicate ack"
        );
        assert_eq!(transfer.on_packet(&ack(0)), Reaction::Ignored);
        assert!(drain(&mut transfer, file.as_slice()).is_empty());
        assert_eq!(transfer.on_packet(&ack(2)), Reaction::Progress);
        assert_eq!(data_blocks(&drain(&mut transfer, file.as_slice())), [3]);
    }

    #[test]
    fn block_numbers_roll_over_from_65535_to_0() {
        // 65540 full blocks of 8 bytes and a short one: block 65541 on the wire is 5.
        let file = patterned_file(8 * 65540 + 5);
        let request = octet(&[("blksize", "8")]);
        let mut client = Client::new();
        let (transfer, sent) = run_clean(&file, &request, &Limits::default(), &mut client);
        let blocks = data_blocks(&sent[1..]);
        assert_eq!(blocks.len(), 65541);
        assert_eq!(blocks[65533..65538], [65534, 65535, 0, 1, 2]);
        assert_eq!(blocks.last(), Some(&5));
        assert_eq!(client.data, file);
        let Some(Outcome::Completed(stats)) = transfer.outcome() else {
            panic!("not completed: {:?}", transfer.outcome());
        };
        assert_eq!(stats.blocks_acknowledged, 65541);
        assert_eq!(stats.bytes_acknowledged, file.len() as u64);
    }

    #[test]
    fn windowed_rollover_with_loss() {
        let file = patterned_file(8 * 66000 + 3);
        let request = octet(&[("blksize", "8"), ("windowsize", "16")]);
        let mut network = Network::new(0x5eed, 20, 10, 50);
        let simulation = simulate(
            &file,
            &request,
            &Limits {
                max_retries: 50,
                ..Limits::default()
            },
            &mut network,
            5_000_000,
        );
        assert_eq!(simulation.client.data, file);
        assert!(
            matches!(simulation.outcome, Some(Outcome::Completed(_))),
            "{:?}",
            simulation.outcome
        );
    }

    /// A file of `len` bytes and a transfer of it that gives up after `max_retries` timeouts.
    fn retrying(len: usize, max_retries: u32) -> (Vec<u8>, ReadTransfer) {
        let file = patterned_file(len);
        let limits = Limits {
            max_retries,
            ..Limits::default()
        };
        let transfer = ReadTransfer::start(&octet(&[]), len as u64, &limits);
        (file, transfer)
    }

    #[test]
    fn timeouts_resend_then_fail_with_an_error() {
        let (file, mut transfer) = retrying(100, 3);
        assert_eq!(transfer.timeout(), Duration::from_secs(1));
        assert_eq!(data_blocks(&drain(&mut transfer, file.as_slice())), [1]);
        for _ in 0..3 {
            transfer.on_timeout();
            assert_eq!(data_blocks(&drain(&mut transfer, file.as_slice())), [1]);
        }
        transfer.on_timeout();
        let sent = drain(&mut transfer, file.as_slice());
        assert_eq!(
            sent.iter().map(|d| owned(d)).collect::<Vec<_>>(),
            [Packet::Error {
                code: ErrorCode::NotDefined,
                message: "transfer timed out".into()
            }]
        );
        assert_eq!(
            transfer.outcome(),
            Some(&Outcome::Failed {
                reason: Failure::TimedOut { retries: 3 },
                stats: TransferStats {
                    bytes_acknowledged: 0,
                    blocks_acknowledged: 0,
                    datagrams_sent: 5,
                    blocks_resent: 3,
                    timeouts: 4,
                }
            })
        );
        transfer.on_timeout();
        assert_eq!(transfer.on_packet(&ack(1)), Reaction::Ignored);
        assert!(drain(&mut transfer, file.as_slice()).is_empty());
    }

    #[test]
    fn oack_is_resent_on_timeout_with_the_negotiated_interval() {
        let limits = Limits {
            max_retries: 1,
            ..Limits::default()
        };
        let mut transfer = ReadTransfer::start(&octet(&[("timeout", "4")]), 10, &limits);
        assert_eq!(transfer.timeout(), Duration::from_secs(4));
        let first = drain(&mut transfer, [0u8; 10].as_slice());
        transfer.on_timeout();
        assert_eq!(drain(&mut transfer, [0u8; 10].as_slice()), first);
        transfer.on_timeout();
        assert!(matches!(
            transfer.outcome(),
            Some(Outcome::Failed {
                reason: Failure::TimedOut { retries: 1 },
                ..
            })
        ));
    }

    #[test]
    fn progress_resets_the_retry_count() {
        let (file, mut transfer) = retrying(2000, 2);
        drain(&mut transfer, file.as_slice());
        transfer.on_timeout();
        transfer.on_timeout();
        drain(&mut transfer, file.as_slice());
        transfer.on_packet(&ack(1));
        for _ in 0..2 {
            transfer.on_timeout();
            assert_eq!(data_blocks(&drain(&mut transfer, file.as_slice())), [2]);
        }
        assert!(transfer.outcome().is_none());
    }

    #[test]
    fn packets_other_than_ack_and_error_are_illegal() {
        let file = patterned_file(100);
        let cases: Vec<(Vec<u8>, Failure)> = vec![
            (
                Packet::Data {
                    block: 1,
                    data: b"x",
                }
                .encode(),
                Failure::IllegalPacket { opcode: 3 },
            ),
            (
                Packet::Rrq(octet(&[])).encode(),
                Failure::IllegalPacket { opcode: 1 },
            ),
            (
                Packet::Wrq(octet(&[])).encode(),
                Failure::IllegalPacket { opcode: 2 },
            ),
            (
                Packet::Oack { options: vec![] }.encode(),
                Failure::IllegalPacket { opcode: 6 },
            ),
            (
                b"\x00\x04\x00\x01\xff".to_vec(),
                Failure::MalformedPacket(ParseError::TrailingBytes),
            ),
            (
                b"\x00\x2a".to_vec(),
                Failure::MalformedPacket(ParseError::UnknownOpcode(42)),
            ),
        ];
        for (datagram, reason) in cases {
            let mut transfer = ReadTransfer::start(&octet(&[]), 100, &Limits::default());
            drain(&mut transfer, file.as_slice());
            assert_eq!(transfer.on_packet(&datagram), Reaction::Ended);
            let sent = drain(&mut transfer, file.as_slice());
            assert_eq!(sent.len(), 1);
            assert!(matches!(
                owned(&sent[0]),
                Packet::Error {
                    code: ErrorCode::IllegalOperation,
                    ..
                }
            ));
            assert!(
                matches!(
                    transfer.outcome(),
                    Some(Outcome::Failed { reason: r, .. }) if *r == reason
                ),
                "{:?}",
                transfer.outcome()
            );
        }
    }

    #[test]
    fn client_error_mid_transfer_is_an_abort() {
        let file = patterned_file(2000);
        let mut transfer = first_block_acked(&file, 2000);
        drain(&mut transfer, file.as_slice());
        assert_eq!(
            transfer.on_packet(&error(ErrorCode::DiskFull, "no room")),
            Reaction::Ended
        );
        assert!(drain(&mut transfer, file.as_slice()).is_empty());
        assert!(matches!(
            transfer.outcome(),
            Some(Outcome::AbortedByClient {
                code: ErrorCode::DiskFull,
                stats: TransferStats {
                    blocks_acknowledged: 1,
                    ..
                },
                ..
            })
        ));
    }

    /// A source whose reads fail with `kind`.
    struct FailingSource(io::ErrorKind);

    impl BlockSource for FailingSource {
        fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(self.0, "disk on fire"))
        }
    }

    #[test]
    fn read_errors_fail_with_an_error_datagram() {
        let cases = [
            (io::ErrorKind::NotFound, ErrorCode::FileNotFound),
            (io::ErrorKind::PermissionDenied, ErrorCode::AccessViolation),
            (io::ErrorKind::Other, ErrorCode::NotDefined),
        ];
        for (kind, code) in cases {
            let mut transfer = ReadTransfer::start(&octet(&[]), 100, &Limits::default());
            let sent = drain(&mut transfer, &FailingSource(kind));
            assert_eq!(sent.len(), 1);
            let Packet::Error {
                code: sent_code,
                message,
            } = owned(&sent[0])
            else {
                panic!("not an error");
            };
            assert_eq!(sent_code, code);
            assert!(!message.contains("fire"), "no internal details to clients");
            assert!(matches!(
                transfer.outcome(),
                Some(Outcome::Failed { reason: Failure::Read { kind: k, .. }, .. }) if *k == kind
            ));
        }
    }

    #[test]
    fn a_source_shorter_than_announced_fails() {
        let file = patterned_file(600);
        let mut transfer = first_block_acked(&file, 1000);
        let sent = drain(&mut transfer, file.as_slice());
        assert!(matches!(
            owned(&sent[0]),
            Packet::Error {
                code: ErrorCode::NotDefined,
                ..
            }
        ));
        assert!(matches!(
            transfer.outcome(),
            Some(Outcome::Failed {
                reason: Failure::SourceTruncated { offset: 600 },
                ..
            })
        ));
    }

    /// Returns one byte per call and an interruption every other call.
    struct TrickleSource {
        bytes: Vec<u8>,
        calls: Cell<u64>,
        always_interrupted: bool,
    }

    impl BlockSource for TrickleSource {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.calls.set(self.calls.get() + 1);
            if self.always_interrupted || self.calls.get().is_multiple_of(2) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.bytes
                .as_slice()
                .read_at(offset, buf.get_mut(..1).unwrap_or_default())
        }
    }

    #[test]
    fn short_reads_and_interruptions_are_retried() {
        let file = patterned_file(1300);
        let source = TrickleSource {
            bytes: file.clone(),
            calls: Cell::new(0),
            always_interrupted: false,
        };
        let mut transfer = ReadTransfer::start(&octet(&[]), 1300, &Limits::default());
        let mut client = Client::new();
        run_to_end(&mut transfer, &source, &mut client);
        assert_eq!(client.data, file);

        let stuck = TrickleSource {
            always_interrupted: true,
            ..source
        };
        let mut transfer = ReadTransfer::start(&octet(&[]), 1300, &Limits::default());
        drain(&mut transfer, &stuck);
        assert!(matches!(
            transfer.outcome(),
            Some(Outcome::Failed {
                reason: Failure::Read {
                    kind: io::ErrorKind::Interrupted,
                    ..
                },
                ..
            })
        ));
    }

    /// The netascii form of `bytes`, written the obvious way to check the streaming one.
    fn netascii_reference(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &byte in bytes {
            match byte {
                b'\n' => out.extend_from_slice(b"\r\n"),
                b'\r' => out.extend_from_slice(b"\r\0"),
                other => out.push(other),
            }
        }
        out
    }

    #[test]
    fn netascii_is_converted_across_block_boundaries() {
        let cases: [&[u8]; 5] = [
            b"abcdefg\nxyz", // CR LF split over blocks 1 and 2
            b"abcdefg\rxyz", // CR NUL split likewise
            b"abc\ndef",     // converts to exactly 8 bytes: an empty block follows
            b"\n\n\n\n\n\n\n\n\r\r\r",
            b"",
        ];
        for file in cases {
            let request = request(
                Mode::Netascii,
                &[("blksize", "8"), ("tsize", "0"), ("windowsize", "4")],
            );
            let mut client = Client::new();
            let (transfer, sent) = run_clean(file, &request, &Limits::default(), &mut client);
            // Only blksize is acknowledged in netascii mode.
            assert_eq!(
                owned(&sent[0]),
                Packet::Oack {
                    options: pairs(&[("blksize", "8")])
                }
            );
            let expected = netascii_reference(file);
            assert_eq!(client.data, expected, "{file:?}");
            let Some(Outcome::Completed(stats)) = transfer.outcome() else {
                panic!("not completed: {:?}", transfer.outcome());
            };
            assert_eq!(stats.bytes_acknowledged, expected.len() as u64);
            assert_eq!(stats.blocks_acknowledged, expected.len() as u64 / 8 + 1);
        }
    }

    #[test]
    fn netascii_block_resent_on_timeout_is_identical() {
        let file = b"a\nb\nc\nd\ne\nf\n".to_vec();
        let request = request(Mode::Netascii, &[("blksize", "8")]);
        let mut transfer = ReadTransfer::start(&request, file.len() as u64, &Limits::default());
        drain(&mut transfer, file.as_slice());
        transfer.on_packet(&ack(0));
        let first = drain(&mut transfer, file.as_slice());
        transfer.on_timeout();
        assert_eq!(drain(&mut transfer, file.as_slice()), first);
        transfer.on_packet(&ack(1));
        let second = drain(&mut transfer, file.as_slice());
        transfer.on_timeout();
        assert_eq!(drain(&mut transfer, file.as_slice()), second);
        assert_eq!(data_block(&first[0]).1, b"a\r\nb\r\nc\r");
        assert_eq!(data_block(&second[0]).1, b"\nd\r\ne\r\nf");
    }

    #[test]
    fn max_datagram_len_covers_what_is_sent() {
        let request = octet(&[("blksize", "1468"), ("tsize", "0")]);
        let transfer = ReadTransfer::start(&request, 10_000, &Limits::default());
        assert_eq!(transfer.max_datagram_len(), 1472);
        assert_eq!(transfer.negotiation().blksize, 1468);
    }

    /// SplitMix64: a tiny deterministic generator, seeded by proptest.
    #[derive(Debug)]
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn per_mille(&mut self, chance: u32) -> bool {
            self.next() % 1000 < u64::from(chance)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    /// A network that loses, duplicates and reorders datagrams (chances in per mille).
    #[derive(Debug)]
    struct Network {
        rng: Rng,
        loss: u32,
        duplication: u32,
        reordering: u32,
    }

    impl Network {
        fn new(seed: u64, loss: u32, duplication: u32, reordering: u32) -> Network {
            Network {
                rng: Rng(seed),
                loss,
                duplication,
                reordering,
            }
        }

        fn send(&mut self, queue: &mut VecDeque<Vec<u8>>, datagram: &[u8]) {
            if self.rng.per_mille(self.loss) {
                return;
            }
            queue.push_back(datagram.to_vec());
            if self.rng.per_mille(self.duplication) {
                queue.push_back(datagram.to_vec());
            }
        }

        fn receive(&mut self, queue: &mut VecDeque<Vec<u8>>) -> Option<Vec<u8>> {
            if queue.is_empty() {
                return None;
            }
            // Reordering: one of the next few datagrams overtakes the others.
            let index = if self.rng.per_mille(self.reordering) {
                self.rng.below(queue.len().min(4))
            } else {
                0
            };
            queue.remove(index)
        }
    }

    #[derive(Debug)]
    struct Simulation {
        outcome: Option<Outcome>,
        client: Client,
        steps: usize,
        /// The last ERROR the server sent, whether or not the network delivered it.
        error_sent: Option<ErrorCode>,
    }

    /// Runs a transfer between the server and a [`Client`] over `network`. Timers are
    /// modelled as firing only when nothing is in flight, which is what timeouts far longer
    /// than the round trip amount to: then the server's fires, and the client repeats its ACK.
    fn simulate(
        file: &[u8],
        request: &Request,
        limits: &Limits,
        network: &mut Network,
        max_steps: usize,
    ) -> Simulation {
        let mut server = ReadTransfer::start(request, file.len() as u64, limits);
        let mut client = Client::new();
        let mut to_client = VecDeque::new();
        let mut to_server = VecDeque::new();
        let mut buf = Vec::new();
        let mut steps = 0;
        let mut error_sent = None;
        while steps < max_steps {
            steps += 1;
            while let Some(datagram) = server.poll_transmit(file, &mut buf) {
                if let Ok(Packet::Error { code, .. }) = Packet::parse(datagram) {
                    error_sent = Some(code);
                }
                network.send(&mut to_client, datagram);
            }
            if to_client.is_empty() && to_server.is_empty() {
                if server.is_finished() {
                    break;
                }
                server.on_timeout();
                if let Some(reply) = client.on_idle() {
                    network.send(&mut to_server, &reply);
                }
                continue;
            }
            let towards_client = match (to_client.is_empty(), to_server.is_empty()) {
                (false, true) => true,
                (true, false) => false,
                _ => network.rng.per_mille(500),
            };
            if towards_client {
                if let Some(datagram) = network.receive(&mut to_client) {
                    if let Some(reply) = client.on_datagram(&datagram) {
                        network.send(&mut to_server, &reply);
                    }
                }
            } else if let Some(datagram) = network.receive(&mut to_server) {
                server.on_packet(&datagram);
            }
        }
        Simulation {
            outcome: server.outcome().cloned(),
            client,
            steps,
            error_sent,
        }
    }

    #[test]
    fn clean_network_simulation_completes_without_resends() {
        let file = patterned_file(3000);
        let request = octet(&[("blksize", "100"), ("windowsize", "8")]);
        let simulation = simulate(
            &file,
            &request,
            &Limits::default(),
            &mut Network::new(1, 0, 0, 0),
            10_000,
        );
        assert_eq!(simulation.client.data, file);
        assert!(matches!(
            simulation.outcome,
            Some(Outcome::Completed(TransferStats {
                blocks_resent: 0,
                timeouts: 0,
                ..
            }))
        ));
    }

    const MAX_SIMULATION_STEPS: usize = 200_000;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Loss, duplication and reordering never corrupt the file, never hang, and never
        /// end in anything but completion or a timeout after retries.
        #[test]
        fn lossy_network_never_corrupts_or_hangs(
            seed in any::<u64>(),
            blksize in 8usize..64,
            full_blocks in 0usize..12,
            tail in prop_oneof![Just(0usize), 1usize..64],
            windowsize in 1u16..8,
            loss in 0u32..300,
            duplication in 0u32..200,
            reordering in 0u32..300,
            netascii in any::<bool>(),
        ) {
            let len = full_blocks * blksize + tail.min(blksize - 1);
            let mut rng = Rng(seed ^ 0xf11e);
            // Plenty of CR and LF so netascii pairs land on block boundaries.
            let file: Vec<u8> = (0..len)
                .map(|_| match rng.below(6) {
                    0 => b'\n',
                    1 => b'\r',
                    _ => rng.next() as u8,
                })
                .collect();
            let mode = if netascii { Mode::Netascii } else { Mode::Octet };
            let blksize_text = blksize.to_string();
            let windowsize_text = windowsize.to_string();
            let request = request(
                mode,
                &[("blksize", &blksize_text), ("windowsize", &windowsize_text), ("tsize", "0")],
            );
            let expected = if netascii { netascii_reference(&file) } else { file.clone() };
            let mut network = Network::new(seed, loss, duplication, reordering);

            let limits = Limits::default();
            let simulation = simulate(&file, &request, &limits, &mut network, MAX_SIMULATION_STEPS);

            prop_assert!(
                simulation.steps < MAX_SIMULATION_STEPS,
                "did not end: {:?}",
                simulation.outcome
            );
            if simulation.client.done {
                prop_assert_eq!(&simulation.client.data, &expected);
            }
            match &simulation.outcome {
                Some(Outcome::Completed(stats)) => {
                    prop_assert!(simulation.client.done);
                    prop_assert_eq!(stats.bytes_acknowledged, expected.len() as u64);
                }
                Some(Outcome::Failed { reason: Failure::TimedOut { .. }, .. }) => {
                    // The server says goodbye; the lossy network may still drop that datagram.
                    prop_assert_eq!(simulation.error_sent, Some(ErrorCode::NotDefined));
                    if let Some(code) = simulation.client.error_received {
                        prop_assert_eq!(code, ErrorCode::NotDefined);
                    }
                }
                other => prop_assert!(false, "unexpected outcome {:?}", other),
            }
        }

        /// Whatever arrives from the peer, in any order, the machine neither panics nor
        /// stops answering: every call returns, and `poll_transmit` always runs dry.
        #[test]
        fn arbitrary_peer_datagrams_never_panic(
            datagrams in proptest::collection::vec(
                prop_oneof![
                    any::<u16>().prop_map(ack),
                    (0u16..12).prop_map(ack),
                    proptest::collection::vec(any::<u8>(), 0..12),
                ],
                0..40,
            ),
            timeouts in proptest::collection::vec(any::<bool>(), 40),
            windowsize in 1u16..6,
            len in 0usize..300,
        ) {
            let file = patterned_file(len);
            let windowsize_text = windowsize.to_string();
            let request = octet(&[("blksize", "8"), ("windowsize", &windowsize_text)]);
            let mut transfer = ReadTransfer::start(&request, len as u64, &Limits::default());
            for (datagram, timeout) in datagrams.iter().zip(timeouts) {
                drain(&mut transfer, file.as_slice());
                transfer.on_packet(datagram);
                if timeout {
                    transfer.on_timeout();
                }
            }
            drain(&mut transfer, file.as_slice());
        }
    }
}
