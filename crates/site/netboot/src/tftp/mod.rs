//! TFTP for a read-only boot server, as pure code: the packet codec ([`packet`]), the mapping
//! of requested names onto the cache ([`path`]), option negotiation ([`negotiate`]) and the
//! read-transfer state machine ([`session`]). RFC 1350 with the option extension (RFC 2347),
//! blksize (RFC 2348), timeout and tsize (RFC 2349) and windowsize (RFC 7440).
//!
//! The socket layer stays thin. On udp/69 it parses each datagram: an RRQ's file name goes
//! through [`normalize`] and is opened inside the cache (without following symlinks out of it);
//! a WRQ gets [`write_refused_datagram`]; failures get an ERROR from [`error_datagram`]. Each
//! accepted RRQ gets its own socket (its transfer ID) and a [`ReadTransfer`], driven like this:
//!
//! ```ignore
//! let mut transfer = ReadTransfer::start(&request, file_len, &limits);
//! let (mut tx, mut rx) = (Vec::with_capacity(transfer.max_datagram_len()), vec![0; 65536]);
//! let mut deadline = Instant::now();
//! loop {
//!     let mut sent = false;
//!     while let Some(datagram) = transfer.poll_transmit(&file, &mut tx) {
//!         socket.send_to(datagram, peer).await?;
//!         sent = true;
//!     }
//!     if let Some(outcome) = transfer.outcome() {
//!         break report(outcome); // Completed, Declined (EDK2's probe), AbortedByClient, Failed
//!     }
//!     if sent {
//!         deadline = Instant::now() + transfer.timeout(); // only on sends, never on receipts
//!     }
//!     match timeout_at(deadline, socket.recv_from(&mut rx)).await {
//!         Err(_elapsed) => transfer.on_timeout(),
//!         Ok(Ok((len, from))) if from == peer => { transfer.on_packet(&rx[..len]); }
//!         Ok(Ok((_, from))) => { socket.send_to(&unknown_transfer_id_datagram(), from).await?; }
//!         Ok(Err(error)) => break fail(error),
//!     }
//! }
//! ```
//!
//! A client that repeats its RRQ to udp/69 because our first answer was lost must not start a
//! second transfer: the socket layer keeps the (address, port) pairs of live transfers and drops
//! repeated requests from them.

pub mod negotiate;
pub mod packet;
pub mod path;
pub mod session;

pub use negotiate::{negotiate, Limits, Negotiation, DEFAULT_BLKSIZE, MAX_WINDOWSIZE, MIN_BLKSIZE};
pub use packet::{
    data_header, encode_data_into, encode_error_into, error_datagram, unknown_transfer_id_datagram,
    write_refused_datagram, ErrorCode, Field, Mode, Packet, ParseError, Request, MAX_BLKSIZE,
    MAX_DATAGRAM_LEN, MAX_OPTIONS, MAX_REQUEST_LEN,
};
pub use path::{normalize, PathError, RelativePath, MAX_PATH_LEN};
pub use session::{BlockSource, Failure, Outcome, Reaction, ReadTransfer, TransferStats};

/// `[("blksize", "1432")]` as a request's options, for the tests.
#[cfg(test)]
fn options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}
