//! A TFTP window sent with one system call: UDP generic segmentation offload (`UDP_SEGMENT`,
//! Linux 4.18+) takes one buffer of equal-length datagrams (the last may be shorter) and the
//! kernel cuts it into datagrams as late as it can (in the NIC, or after the bridge on a
//! veth), so a window of 16 blocks crosses the stack once instead of 16 times (issue 19).
//! Where the kernel or the route refuses it, the transfer sends datagram by datagram.

use std::io::IoSlice;
use std::net::SocketAddrV4;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The kernel's limit on segments per send (UDP_MAX_SEGMENTS, 64 before Linux 6.10).
const MAX_SEGMENTS: usize = 64;
/// The largest UDP payload of one send: 65535 less the IPv4 and UDP headers.
const MAX_BYTES: usize = 65_507;

/// Datagrams waiting to be sent together: all as long as the first, but the last.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the batch: nothing may follow it.
    closed: bool,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Like [`Batch::try_push`] for a datagram that fills `datagram`, but an empty batch takes
    /// the buffer itself (and leaves its own, emptied, in its place): the datagram of a
    /// lock-step transfer is never copied.
    pub fn try_take(&mut self, datagram: &mut Vec<u8>) -> bool {
        if self.count != 0 {
            return self.try_push(datagram);
        }
        std::mem::swap(&mut self.buf, datagram);
        datagram.clear();
        self.segment = self.buf.len();
        self.count = 1;
        self.closed = self.buf.is_empty();
        true
    }

    /// Adds `datagram` if it can travel in the same send as those already here.
    pub fn try_push(&mut self, datagram: &[u8]) -> bool {
        if self.count == 0 {
            self.buf.clear();
            self.buf.extend_from_slice(datagram);
            self.segment = datagram.len();
            self.count = 1;
            self.closed = datagram.is_empty();
            return true;
        }
        let fits = !self.closed
            && datagram.len() <= self.segment
            && !datagram.is_empty()
            && self.count < MAX_SEGMENTS
            && self.buf.len() + datagram.len() <= MAX_BYTES;
        if fits {
            self.buf.extend_from_slice(datagram);
            self.count += 1;
            self.closed = datagram.len() < self.segment;
        }
        fits
    }

    /// The datagrams, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.buf.chunks(self.segment.max(1)).take(self.count)
    }

    fn clear(&mut self) {
        self.count = 0;
        self.closed = false;
    }
}

/// Whether a transfer still tries segmentation offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    Try,
    Off,
}

/// Sends `batch` to `peer` and empties it: one send with `UDP_SEGMENT` when it holds more than
/// one datagram and `offload` allows, else one send per datagram. A refusal of the offload
/// turns it off for this transfer (`offload` becomes `Off`) and the datagrams go one by one.
/// Other send errors are logged and left to the retransmission timer, as for single sends.
pub async fn send(
    socket: &UdpSocket,
    peer: SocketAddrV4,
    batch: &mut Batch,
    offload: &mut Offload,
) {
    if batch.count > 1 && *offload == Offload::Try {
        match send_segmented(socket, peer, batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) if refuses_offload(e) => {
                tracing::debug!(%peer, error = %e, "udp segmentation offload refused; sending datagram by datagram");
                *offload = Offload::Off;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "tftp send failed; the timer will resend");
                batch.clear();
                return;
            }
        }
    }
    for datagram in batch.datagrams() {
        if let Err(e) = socket.send_to(datagram, peer).await {
            tracing::debug!(%peer, error = %e, "tftp send failed; the timer will resend");
        }
    }
    batch.clear();
}

async fn send_segmented(
    socket: &UdpSocket,
    peer: SocketAddrV4,
    batch: &Batch,
) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let segment = u16::try_from(batch.segment).map_err(|_| Errno::EMSGSIZE)?;
    let addr = SockaddrIn::from(peer);
    let fd = socket.as_raw_fd();
    socket
        .async_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(&batch.buf)];
            let cmsgs = [ControlMessage::UdpGsoSegments(&segment)];
            nix::sys::socket::sendmsg(fd, &iov, &cmsgs, MsgFlags::empty(), Some(&addr))
                .map_err(std::io::Error::from)
        })
        .await
        .map(|_| ())
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// The errors by which a kernel, a device or a route says it will not segment: an old kernel
/// (ENOPROTOOPT, EOPNOTSUPP), no checksum offload or IPsec on the route (EIO), a segment larger
/// than the path MTU, as a big negotiated blksize gives (EMSGSIZE), or a socket without UDP
/// checksums (EINVAL).
fn refuses_offload(e: Errno) -> bool {
    matches!(
        e,
        Errno::EIO | Errno::EINVAL | Errno::EMSGSIZE | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(len: usize, fill: u8) -> Vec<u8> {
        vec![fill; len]
    }

    #[test]
    fn equal_datagrams_and_a_shorter_last_one_travel_together() {
        let mut batch = Batch::default();
        assert!(batch.try_push(&datagram(1472, 1)));
        assert!(batch.try_push(&datagram(1472, 2)));
        assert!(batch.try_push(&datagram(100, 3)));
        assert!(
            !batch.try_push(&datagram(100, 4)),
            "nothing follows a shorter one"
        );
        let sent: Vec<Vec<u8>> = batch.datagrams().map(<[u8]>::to_vec).collect();
        assert_eq!(
            sent,
            [datagram(1472, 1), datagram(1472, 2), datagram(100, 3)]
        );
    }

    #[test]
    fn an_empty_batch_takes_the_buffer_and_a_full_one_copies() {
        let mut batch = Batch::default();
        let mut tx = datagram(1472, 1);
        let pointer = tx.as_ptr();
        assert!(batch.try_take(&mut tx));
        assert!(tx.is_empty(), "the caller gets an empty buffer back");
        assert_eq!(batch.buf.as_ptr(), pointer, "not copied");
        tx.extend_from_slice(&datagram(1472, 2));
        assert!(batch.try_take(&mut tx));
        assert_eq!(
            tx,
            datagram(1472, 2),
            "a second datagram is copied, its buffer kept"
        );
        let sent: Vec<Vec<u8>> = batch.datagrams().map(<[u8]>::to_vec).collect();
        assert_eq!(sent, [datagram(1472, 1), datagram(1472, 2)]);
    }

    #[test]
    fn a_longer_datagram_starts_another_send() {
        let mut batch = Batch::default();
        assert!(batch.try_push(&datagram(30, 1)), "an OACK");
        assert!(!batch.try_push(&datagram(1472, 2)));
        assert_eq!(batch.datagrams().count(), 1);
    }

    #[test]
    fn a_send_stays_within_the_kernels_limits() {
        let mut batch = Batch::default();
        let mut taken = 0;
        while batch.try_push(&datagram(1472, 0)) {
            taken += 1;
        }
        assert_eq!(taken, MAX_BYTES / 1472, "bytes bound it at blksize 1468");
        let mut small = Batch::default();
        let mut taken = 0;
        while small.try_push(&datagram(516, 0)) {
            taken += 1;
        }
        assert_eq!(taken, MAX_SEGMENTS, "segments bound it at blksize 512");
    }

    /// A sender and a receiver on loopback, and the receiver's address.
    async fn pair() -> (UdpSocket, std::net::UdpSocket, SocketAddrV4) {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let std::net::SocketAddr::V4(peer) = receiver.local_addr().expect("addr") else {
            unreachable!("bound to IPv4")
        };
        let sender = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        (sender, receiver, peer)
    }

    /// Each of `window` arrives as a datagram of its own, in order, bytes intact.
    fn assert_arrive(receiver: &std::net::UdpSocket, window: &[Vec<u8>]) {
        let mut buf = [0u8; 65_536];
        for expected in window {
            let n = receiver.recv(&mut buf).expect("a datagram");
            assert_eq!(&buf[..n], expected.as_slice());
        }
    }

    /// The offload on a real socket: a window of datagrams, one of them short, arrives as
    /// separate datagrams with their bytes intact (loopback inside this process, no server).
    #[tokio::test]
    async fn a_segmented_send_arrives_as_separate_datagrams() {
        let (sender, receiver, peer) = pair().await;
        let window: Vec<Vec<u8>> = (0..16u8)
            .map(|i| datagram(if i == 15 { 7 } else { 1472 }, i))
            .collect();
        let mut batch = Batch::default();
        for d in &window {
            assert!(batch.try_push(d));
        }
        let mut offload = Offload::Try;
        send(&sender, peer, &mut batch, &mut offload).await;
        assert!(batch.is_empty());
        assert_eq!(offload, Offload::Try, "loopback segments");
        assert_arrive(&receiver, &window);
    }

    /// A socket the kernel will not segment for (no UDP checksums: EINVAL) still gets every
    /// datagram, one send each, and the transfer stops trying.
    #[tokio::test]
    #[allow(unsafe_code)]
    async fn a_refused_offload_falls_back_to_one_send_per_datagram() {
        use std::os::fd::AsRawFd;
        let (sender, receiver, peer) = pair().await;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option value that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                sender.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                std::ptr::from_ref(&one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        let window: Vec<Vec<u8>> = (0..4u8).map(|i| datagram(1472, i)).collect();
        let mut batch = Batch::default();
        for d in &window {
            assert!(batch.try_push(d));
        }
        let mut offload = Offload::Try;
        send(&sender, peer, &mut batch, &mut offload).await;
        assert_eq!(offload, Offload::Off);
        assert_arrive(&receiver, &window);
    }
}
