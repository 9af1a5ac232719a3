//! The lock-step TFTP transfers of one server, on one socket driven by one task (issue 19).
//!
//! A transfer with its own socket and task costs, per block, a wake-up of its task and two
//! system calls (the ACK's receive, the block's send), each on its own socket. In a boot storm
//! hundreds of transfers are waiting at once; here the ACKs that arrived for all of them come
//! in with one `recvmmsg`, each transfer takes its ACK, and the blocks they owe leave with one
//! `sendmmsg`. Every transfer still has its own transfer ID on the client's side (its address
//! and port); the server's side is this socket's port, shared by the transfers, which is what
//! a client checks (RFC 1350 §4: a datagram from another port is a stranger's, answered with
//! ERROR 5 and ignored). Transfers that negotiated a window keep their own socket, where the
//! kernel segments a window's blocks from one send (`datagram_batch.rs`), and so do lock-step
//! transfers of a file read from disk block by block (a slow read here would stall every
//! transfer of the task; `tftp_server.rs` sends only those whose blocks are in memory). This
//! module calls `recvmmsg(2)` and `sendmmsg(2)` itself, so it allows `unsafe`.
#![allow(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use bootfleet_netboot::tftp::{self, BlockSource, Outcome, ReadTransfer};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Datagrams read or sent by one system call at most.
const BATCH: usize = 64;
/// Room for one datagram from a client: an ERROR with a 512-byte message (RFC 1350's longest)
/// fits. A longer datagram is cut: an ERROR keeps the start of its message, and an ACK that
/// long was malformed anyway.
const RX_BUFFER: usize = 1024;
/// Send buffers kept for reuse at most; a storm's peak beyond them is freed once sent.
const SPARE_BUFFERS: usize = 2 * BATCH;

/// A transfer handed to the task: started (nothing sent yet), with where its blocks come
/// from and what to do when it ends (`None`: stopped before it ended).
pub struct Handoff {
    pub transfer: ReadTransfer,
    pub peer: SocketAddrV4,
    pub source: Box<dyn BlockSource + Send + Sync>,
    pub on_end: Box<dyn FnOnce(Option<Outcome>) + Send>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff").field("peer", &self.peer).finish()
    }
}

struct Live {
    transfer: ReadTransfer,
    source: Box<dyn BlockSource + Send + Sync>,
    on_end: Box<dyn FnOnce(Option<Outcome>) + Send>,
    /// When the transfer times out: its last send plus its timeout.
    deadline: Instant,
    /// The deadline its timer entry was queued with, if one is queued.
    armed: Option<Instant>,
}

/// Datagrams waiting to be sent, each with its own buffer; sent buffers are kept for reuse.
#[derive(Default)]
struct Outbox {
    queued: Vec<(SocketAddrV4, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

impl Outbox {
    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    fn push(&mut self, peer: SocketAddrV4, datagram: Vec<u8>) {
        self.queued.push((peer, datagram));
    }

    /// Sends everything queued, waiting for room in the socket's buffer when it is full.
    /// A datagram the kernel refuses (no route, ...) is dropped: its transfer's timer resends.
    async fn flush(&mut self, socket: &UdpSocket) {
        let mut start = 0;
        while start < self.queued.len() {
            let end = (start + BATCH).min(self.queued.len());
            let batch = self.queued.get(start..end).unwrap_or_default();
            match socket.try_io(Interest::WRITABLE, || send_many(socket.as_raw_fd(), batch)) {
                Ok(sent) => start += sent.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let peer = batch.first().map(|(peer, _)| *peer);
                    tracing::debug!(?peer, error = %e, "tftp send failed; the timer will resend");
                    start += 1;
                }
            }
        }
        for (_, mut buf) in self.queued.drain(..) {
            if self.spare.len() < SPARE_BUFFERS {
                buf.clear();
                self.spare.push(buf);
            }
        }
    }
}

/// Serves the transfers handed over until every one has ended after `handoffs` closed, or
/// until `stop` (transfers under way then end without a report of their outcome).
pub async fn run(
    socket: UdpSocket,
    mut handoffs: mpsc::UnboundedReceiver<Handoff>,
    mut stop: watch::Receiver<bool>,
) {
    let mut live: HashMap<SocketAddrV4, Live> = HashMap::new();
    let mut timers: BinaryHeap<Reverse<(Instant, SocketAddrV4)>> = BinaryHeap::new();
    let mut outbox = Outbox::default();
    // Made when transfers run, dropped when none does: an idle distributor holds no buffers.
    let mut inbox: Option<Box<Inbox>> = None;
    let mut accepting = true;
    let stopping = stop.changed();
    tokio::pin!(stopping);
    // One sleep for the earliest deadline, moved only when that changes: registering a timer
    // takes the runtime's timer-wheel lock, which a new sleep per wake-up would pay each time.
    let timer = tokio::time::sleep(std::time::Duration::from_secs(3600));
    tokio::pin!(timer);
    let mut timer_at: Option<Instant> = None;
    loop {
        outbox.flush(&socket).await;
        if live.is_empty() {
            if !accepting {
                return;
            }
            inbox = None;
            outbox.spare = Vec::new();
        }
        let next_timer = timers.peek().map(|Reverse((at, _))| *at);
        if next_timer != timer_at {
            if let Some(at) = next_timer {
                timer.as_mut().reset(at);
            }
            timer_at = next_timer;
        }
        tokio::select! {
            biased;
            _ = &mut stopping => {
                for (_, l) in live.drain() {
                    (l.on_end)(None);
                }
                return;
            }
            // New transfers and timeouts first: in a storm the socket is ready again by the
            // time a batch is handled, and neither may wait behind it.
            handoff = handoffs.recv(), if accepting => match handoff {
                Some(h) => {
                    let peer = h.peer;
                    if let Some(old) = live.remove(&peer) {
                        // The client's port started a new transfer: the old one is over.
                        (old.on_end)(None);
                    }
                    let now = Instant::now();
                    let l = live.entry(peer).or_insert(Live {
                        transfer: h.transfer,
                        source: h.source,
                        on_end: h.on_end,
                        deadline: now,
                        armed: None,
                    });
                    pump(peer, l, &mut outbox, &mut timers);
                    end_if_done(peer, &mut live);
                }
                None => accepting = false,
            },
            () = &mut timer, if timer_at.is_some() => {
                timer_at = None;
                let now = Instant::now();
                while let Some(Reverse((at, peer))) = timers.peek().copied() {
                    if at > now {
                        break;
                    }
                    timers.pop();
                    let Some(l) = live.get_mut(&peer) else { continue };
                    if l.armed != Some(at) {
                        continue;
                    }
                    l.armed = None;
                    if l.deadline > now {
                        // It sent since this entry was queued: wait for its newer deadline.
                        l.armed = Some(l.deadline);
                        timers.push(Reverse((l.deadline, peer)));
                        continue;
                    }
                    l.transfer.on_timeout();
                    pump(peer, l, &mut outbox, &mut timers);
                    end_if_done(peer, &mut live);
                }
            }
            ready = socket.readable() => {
                if let Err(e) = ready {
                    // Only when the runtime is going away; no hot loop meanwhile.
                    tracing::warn!(error = %e, "tftp transfer socket failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                // Everything queued now, a batch at a time. A short batch means the queue was
                // empty after it: the readiness is cleared then (as `drained_recv.rs` does), so
                // no receive is spent only to learn that.
                let inbox = inbox.get_or_insert_with(|| Box::new(Inbox::new()));
                loop {
                    let mut drained = None;
                    let received = socket.try_io(Interest::READABLE, || {
                        let count = inbox.recv(socket.as_raw_fd())?;
                        if count == BATCH {
                            return Ok(count);
                        }
                        drained = Some(count);
                        Err(io::ErrorKind::WouldBlock.into())
                    });
                    let count = match (received, drained) {
                        (Ok(count), _) | (Err(_), Some(count)) => count,
                        (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => break,
                        (Err(e), None) => {
                            tracing::debug!(error = %e, "tftp receive failed");
                            break;
                        }
                    };
                    for (datagram, from) in inbox.datagrams(count) {
                        match live.get_mut(&from) {
                            Some(l) => {
                                l.transfer.on_packet(datagram);
                                pump(from, l, &mut outbox, &mut timers);
                                end_if_done(from, &mut live);
                            }
                            None => {
                                let mut buf = outbox.buffer();
                                buf.extend_from_slice(&tftp::unknown_transfer_id_datagram());
                                outbox.push(from, buf);
                            }
                        }
                    }
                    if count < BATCH {
                        break;
                    }
                }
            }
        }
    }
}

/// Queues what the transfer owes now; a send moves its deadline and arms its timer if none is.
fn pump(
    peer: SocketAddrV4,
    l: &mut Live,
    outbox: &mut Outbox,
    timers: &mut BinaryHeap<Reverse<(Instant, SocketAddrV4)>>,
) {
    let mut sent = false;
    loop {
        let mut buf = outbox.buffer();
        if l.transfer.poll_transmit(&*l.source, &mut buf).is_none() {
            outbox.spare.push(buf);
            break;
        }
        outbox.push(peer, buf);
        sent = true;
    }
    if sent {
        l.deadline = Instant::now() + l.transfer.timeout();
        if l.armed.is_none() {
            l.armed = Some(l.deadline);
            timers.push(Reverse((l.deadline, peer)));
        }
    }
}

fn end_if_done(peer: SocketAddrV4, live: &mut HashMap<SocketAddrV4, Live>) {
    let done = live.get(&peer).and_then(|l| l.transfer.outcome().cloned());
    if let Some(outcome) = done {
        if let Some(l) = live.remove(&peer) {
            (l.on_end)(Some(outcome));
        }
    }
}

/// `BATCH` receive buffers and their senders' addresses.
struct Inbox {
    bufs: Vec<Vec<u8>>,
    addrs: [libc::sockaddr_in; BATCH],
    lens: Vec<usize>,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            bufs: (0..BATCH).map(|_| vec![0u8; RX_BUFFER]).collect(),
            // SAFETY: all-zero bytes are a valid value of this plain C struct.
            addrs: unsafe { std::mem::zeroed() },
            lens: vec![0; BATCH],
        }
    }

    /// `recvmmsg` for up to `BATCH` datagrams without waiting; how many came.
    fn recv(&mut self, fd: i32) -> io::Result<usize> {
        // SAFETY: all-zero bytes are valid values of these plain C structs.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        for (iov, buf) in iovs.iter_mut().zip(&mut self.bufs) {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = buf.len();
        }
        let mut msgs = headers(&mut iovs, &mut self.addrs);
        // SAFETY: `msgs` holds BATCH headers whose name and iovec pointers point at
        // `self.addrs`, `iovs` and `self.bufs`, all alive and exclusively borrowed for the
        // call, with their true lengths; the kernel writes at most that much. MSG_DONTWAIT:
        // never blocks.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0);
        for (len, msg) in self.lens.iter_mut().zip(&msgs).take(n) {
            *len = msg.msg_len as usize;
        }
        Ok(n)
    }

    /// The first `count` datagrams received, with their senders.
    fn datagrams(&self, count: usize) -> impl Iterator<Item = (&[u8], SocketAddrV4)> {
        self.bufs
            .iter()
            .zip(&self.lens)
            .zip(&self.addrs)
            .take(count)
            .map(|((buf, len), addr)| {
                let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
                (
                    buf.get(..*len).unwrap_or_default(),
                    SocketAddrV4::new(ip, u16::from_be(addr.sin_port)),
                )
            })
    }
}

/// Message headers, the i-th pointing at `iovs[i]` and `addrs[i]`: they are valid while
/// both arrays are, and only for the system call the caller makes at once.
fn headers(
    iovs: &mut [libc::iovec; BATCH],
    addrs: &mut [libc::sockaddr_in; BATCH],
) -> [libc::mmsghdr; BATCH] {
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for ((msg, iov), addr) in msgs.iter_mut().zip(iovs).zip(addrs) {
        msg.msg_hdr.msg_name = std::ptr::from_mut(addr).cast();
        msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_hdr.msg_iov = std::ptr::from_mut(iov);
        msg.msg_hdr.msg_iovlen = 1;
    }
    msgs
}

/// `sendmmsg` of `batch` (its first `BATCH`) without waiting; how many datagrams left.
fn send_many(fd: i32, batch: &[(SocketAddrV4, Vec<u8>)]) -> io::Result<usize> {
    let count = batch.len().min(BATCH);
    // SAFETY: all-zero bytes are valid values of these plain C structs.
    let mut addrs: [libc::sockaddr_in; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    for ((addr, iov), (peer, datagram)) in addrs.iter_mut().zip(&mut iovs).zip(batch) {
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = peer.port().to_be();
        addr.sin_addr.s_addr = u32::from(*peer.ip()).to_be();
        iov.iov_base = datagram.as_ptr().cast_mut().cast();
        iov.iov_len = datagram.len();
    }
    let mut msgs = headers(&mut iovs, &mut addrs);
    // SAFETY: `msgs` holds one header per datagram whose name and iovec pointers point at
    // `addrs`, `iovs` and the datagrams, all alive for the call, with their true lengths; the
    // kernel only reads them. MSG_DONTWAIT: never blocks.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            msgs.as_mut_ptr(),
            libc::c_uint::try_from(count).unwrap_or(0),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}
