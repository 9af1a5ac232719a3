//! A small TFTP read client (RFC 1350 with RFC 2347 options, 2348 blksize, 2349 tsize and 7440
//! windowsize), enough to fetch a file the way PXE firmware does and check every byte.
//!
//! - RRQ with the options asked for; an OACK sets the block and window size and is answered by
//!   ACK 0; a DATA 1 instead means no option was accepted (512-byte blocks, lock-step).
//! - Lock-step: ACK every block. With a window: ACK the last block of each window, the final
//!   block, and, on a gap, the last block received in order (RFC 7440 section 4), once.
//! - A duplicate block means our ACK was lost: repeat the last ACK, once until progress.
//! - Nothing for `timeout`: repeat the last datagram sent (RRQ, or last ACK), at most
//!   `max_retries` times in a row; the whole transfer is bounded by `deadline`.
//! - ERROR from the server ends the transfer; datagrams from another port than the transfer's
//!   get ERROR 5 and are otherwise ignored.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use bootfleet_netboot::tftp::{self, ErrorCode, Mode, Packet, Request};
use tokio::net::UdpSocket;

#[derive(Debug, Clone, Copy)]
pub struct GetOptions {
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    pub tsize: bool,
    pub timeout: Duration,
    pub max_retries: u32,
    pub deadline: Duration,
}

#[derive(Debug, Clone)]
pub struct GetResult {
    pub bytes: u64,
    pub elapsed: Duration,
    pub blksize: u16,
    pub windowsize: u16,
    /// Whether the server answered with an OACK (accepted at least one option).
    pub oack: bool,
    /// Our retransmissions (RRQ or ACK) after a timeout.
    pub timeouts: u32,
    /// Blocks received more than once or out of order.
    pub unexpected_blocks: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetError {
    Io(String),
    Server { code: u16, message: String },
    TimedOut { retries: u32, bytes: u64 },
    Deadline { bytes: u64 },
    Mismatch { offset: u64 },
    TooLong { bytes: u64 },
    Protocol(String),
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GetError::Io(e) => write!(f, "i/o: {e}"),
            GetError::Server { code, message } => write!(f, "server error {code}: {message}"),
            GetError::TimedOut { retries, bytes } => {
                write!(f, "timed out after {retries} retries at byte {bytes}")
            }
            GetError::Deadline { bytes } => write!(f, "transfer deadline passed at byte {bytes}"),
            GetError::Mismatch { offset } => write!(f, "content differs at byte {offset}"),
            GetError::TooLong { bytes } => write!(f, "more data than expected ({bytes} bytes)"),
            GetError::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

fn io(e: std::io::Error) -> GetError {
    GetError::Io(e.to_string())
}

fn ack(block: u16) -> Vec<u8> {
    Packet::Ack { block }.encode()
}

/// Reads `file` from `server` (udp/69) and checks it equals `expected`.
pub async fn get(
    server: SocketAddrV4,
    file: &str,
    expected: &[u8],
    opts: GetOptions,
) -> Result<GetResult, GetError> {
    let socket = UdpSocket::bind("0.0.0.0:0").await.map_err(io)?;
    let mut options = Vec::new();
    if let Some(b) = opts.blksize {
        options.push(("blksize".to_owned(), b.to_string()));
    }
    if let Some(w) = opts.windowsize {
        options.push(("windowsize".to_owned(), w.to_string()));
    }
    if opts.tsize {
        options.push(("tsize".to_owned(), "0".to_owned()));
    }
    let rrq = Packet::Rrq(Request {
        filename: file.to_owned(),
        mode: Mode::Octet,
        options,
    })
    .encode();

    let started = Instant::now();
    let deadline = started + opts.deadline;
    socket.send_to(&rrq, server).await.map_err(io)?;
    let mut last_sent = rrq;
    let mut last_sent_to = SocketAddr::V4(server);
    let mut peer: Option<SocketAddr> = None;
    let mut negotiated = false;
    let mut blksize: u16 = tftp::DEFAULT_BLKSIZE;
    let mut windowsize: u16 = 1;
    let mut next_block: u16 = 1;
    let mut received: u64 = 0;
    let mut in_window: u16 = 0;
    let mut retries: u32 = 0;
    let mut timeouts: u32 = 0;
    let mut unexpected_blocks: u32 = 0;
    let mut repeated_ack = false;
    let mut buf = vec![0u8; tftp::MAX_DATAGRAM_LEN + 1];

    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Err(GetError::Deadline { bytes: received });
        };
        let wait = opts.timeout.min(left);
        let (len, from) = match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
            Err(_elapsed) => {
                if retries >= opts.max_retries {
                    return Err(GetError::TimedOut {
                        retries,
                        bytes: received,
                    });
                }
                retries += 1;
                timeouts += 1;
                in_window = 0;
                socket.send_to(&last_sent, last_sent_to).await.map_err(io)?;
                continue;
            }
            Ok(Err(e)) => return Err(io(e)),
            Ok(Ok(r)) => r,
        };
        if from.ip() != std::net::IpAddr::V4(*server.ip()) {
            continue;
        }
        match peer {
            None => peer = Some(from),
            Some(p) if p != from => {
                let _ = socket
                    .send_to(
                        &tftp::error_datagram(ErrorCode::UnknownTransferId, "unknown transfer id"),
                        from,
                    )
                    .await;
                continue;
            }
            Some(_) => {}
        }
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        let packet = Packet::parse(datagram).map_err(|e| GetError::Protocol(e.to_string()))?;
        match packet {
            Packet::Oack { options } if !negotiated && received == 0 && next_block == 1 => {
                negotiated = true;
                for (name, value) in &options {
                    let Ok(n) = value.parse::<u16>() else {
                        continue;
                    };
                    match name.as_str() {
                        "blksize" => blksize = n,
                        "windowsize" => windowsize = n.max(1),
                        _ => {}
                    }
                }
                last_sent = ack(0);
                last_sent_to = from;
                retries = 0;
                socket.send_to(&last_sent, from).await.map_err(io)?;
            }
            // Our ACK 0 was lost and the OACK came again.
            Packet::Oack { .. } if negotiated && received == 0 => {
                socket.send_to(&last_sent, from).await.map_err(io)?;
            }
            Packet::Data { block, data } => {
                if block == next_block {
                    let offset = received;
                    let end = offset + data.len() as u64;
                    let want = usize::try_from(offset)
                        .ok()
                        .zip(usize::try_from(end).ok())
                        .and_then(|(a, b)| expected.get(a..b));
                    match want {
                        None => return Err(GetError::TooLong { bytes: end }),
                        Some(want) if want != data => {
                            let at = want.iter().zip(data).position(|(a, b)| a != b);
                            return Err(GetError::Mismatch {
                                offset: offset + at.unwrap_or(0) as u64,
                            });
                        }
                        Some(_) => {}
                    }
                    received = end;
                    retries = 0;
                    repeated_ack = false;
                    in_window += 1;
                    let last = data.len() < usize::from(blksize);
                    last_sent_to = from;
                    if last || in_window >= windowsize {
                        last_sent = ack(block);
                        in_window = 0;
                        socket.send_to(&last_sent, from).await.map_err(io)?;
                    }
                    if last {
                        if received != expected.len() as u64 {
                            return Err(GetError::Protocol(format!(
                                "file ended at {received} bytes, expected {}",
                                expected.len()
                            )));
                        }
                        return Ok(GetResult {
                            bytes: received,
                            elapsed: started.elapsed(),
                            blksize,
                            windowsize,
                            oack: negotiated,
                            timeouts,
                            unexpected_blocks,
                        });
                    }
                    next_block = next_block.wrapping_add(1);
                } else {
                    unexpected_blocks += 1;
                    if !repeated_ack {
                        // Behind: our ACK was lost. Ahead: a gap. Either way the right answer
                        // is an ACK of the last block received in order (ACK 0 before any).
                        repeated_ack = true;
                        in_window = 0;
                        last_sent = ack(next_block.wrapping_sub(1));
                        last_sent_to = from;
                        socket.send_to(&last_sent, from).await.map_err(io)?;
                    }
                }
            }
            Packet::Error { code, message } => {
                return Err(GetError::Server {
                    code: code.as_u16(),
                    message,
                })
            }
            other => {
                return Err(GetError::Protocol(format!(
                    "unexpected opcode {}",
                    other.opcode()
                )))
            }
        }
    }
}
