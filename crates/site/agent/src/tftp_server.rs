//! The TFTP socket loops: udp/69 takes requests; each accepted read gets a
//! `bootfleet_netboot::tftp::ReadTransfer` to drive. A lock-step read goes to the one task and
//! socket of all lock-step transfers (`tftp_transfers.rs`); a read that negotiated a window
//! gets its own socket (its transfer ID) and task, where a window leaves in one send. Read-only:
//! writes are refused. Files come from the cache only.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bootfleet_netboot::tftp::{
    self, BlockSource, ErrorCode, Limits, Outcome, Packet, ReadTransfer, Request,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::cache::{Cache, OpenError};
use crate::datagram_batch::{self, Batch, Offload};
use crate::drained_recv;
use crate::machines::Machines;
use crate::reporting::{Reporting, TftpOutcome};
use crate::shared_files::{Contents, SharedFiles};
use crate::sockets::{self, Role};
use crate::tftp_transfers::{self, Handoff};

pub const TFTP_PORT: u16 = 69;

enum FileSource {
    File(std::fs::File),
    /// A per-MAC script, made from the MAC's decision when asked for.
    Memory(Vec<u8>),
    /// A cached file's one copy in memory, shared with the other transfers reading it now.
    Shared(Arc<Contents>),
}

impl BlockSource for FileSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            // pread: boot files are small and sit in the page cache, so this does not stall.
            FileSource::File(f) => f.read_at(buf, offset),
            FileSource::Memory(bytes) => bytes.as_slice().read_at(offset, buf),
            FileSource::Shared(contents) => contents.bytes().read_at(offset, buf),
        }
    }
}

#[derive(Debug)]
pub struct TftpServer {
    socket: UdpSocket,
    /// The one socket of every lock-step transfer (`tftp_transfers.rs`), until `run` takes it.
    lock_step_socket: Option<UdpSocket>,
    server_ip: Ipv4Addr,
    device: String,
    cache: Cache,
    shared: SharedFiles,
    limits: Limits,
}

impl TftpServer {
    pub fn bind(
        device: &str,
        server_ip: Ipv4Addr,
        cache: Cache,
        limits: Limits,
    ) -> std::io::Result<TftpServer> {
        Ok(TftpServer {
            socket: sockets::udp(
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, TFTP_PORT),
                Some(device),
                false,
                Role::Listener,
            )?,
            // Its queue takes the ACKs of a storm's transfers at once, as udp/69 its requests.
            lock_step_socket: Some(sockets::udp(
                SocketAddrV4::new(server_ip, 0),
                Some(device),
                false,
                Role::Listener,
            )?),
            server_ip,
            device: device.to_owned(),
            cache,
            shared: SharedFiles::default(),
            limits,
        })
    }

    /// Takes requests until `shutdown`; transfers already under way run on until they end or
    /// `transfers_stop` (the listener may be retired while its transfers finish).
    pub async fn run(
        mut self,
        reporting: Reporting,
        machines: Option<Arc<Machines>>,
        mut shutdown: watch::Receiver<bool>,
        transfers_stop: watch::Receiver<bool>,
    ) {
        let (lock_step, handoffs) = mpsc::unbounded_channel();
        if let Some(socket) = self.lock_step_socket.take() {
            tokio::spawn(tftp_transfers::run(
                socket,
                handoffs,
                transfers_stop.clone(),
            ));
        }
        let transfers = Transfers {
            live: Arc::default(),
            lock_step,
            stop: transfers_stop,
        };
        let mut buf = vec![0u8; 65_536];
        loop {
            let (len, peer) = tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "tftp receive failed");
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let SocketAddr::V4(peer) = peer else { continue };
            let Some(datagram) = buf.get(..len) else {
                continue;
            };
            match Packet::parse(datagram) {
                // Switched off: as silent as if we were not here.
                Ok(_) if !reporting.switch.is_on() => {}
                Ok(Packet::Rrq(request)) => {
                    self.start_read(request, peer, &transfers, &reporting, machines.as_deref())
                        .await
                }
                Ok(Packet::Wrq(_)) => {
                    self.refuse_with(&reporting, peer, &tftp::write_refused_datagram())
                        .await
                }
                // A stray ACK/DATA/ERROR on udp/69 belongs to no transfer; stay silent.
                Ok(_) => {}
                Err(e) => {
                    reporting.counters.tftp(TftpOutcome::Malformed, 0);
                    tracing::debug!(%peer, error = %e, "malformed tftp request dropped");
                }
            }
        }
    }

    async fn refuse(
        &self,
        reporting: &Reporting,
        peer: SocketAddrV4,
        code: ErrorCode,
        message: &str,
    ) {
        self.refuse_with(reporting, peer, &tftp::error_datagram(code, message))
            .await
    }

    /// Counts a refused request and answers it with `datagram` (an ERROR), best effort.
    async fn refuse_with(&self, reporting: &Reporting, peer: SocketAddrV4, datagram: &[u8]) {
        reporting.counters.tftp(TftpOutcome::Refused, 0);
        let _ = self.socket.send_to(datagram, peer).await;
    }

    async fn start_read(
        &self,
        request: Request,
        peer: SocketAddrV4,
        transfers: &Transfers,
        reporting: &Reporting,
        machines: Option<&Machines>,
    ) {
        let live = &transfers.live;
        if live.lock().map(|l| l.contains(&peer)).unwrap_or(false) {
            return;
        }
        let path = match tftp::normalize(&request.filename) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(%peer, file = %request.filename.escape_debug(), error = %e, "tftp request refused");
                return self
                    .refuse(
                        reporting,
                        peer,
                        ErrorCode::AccessViolation,
                        "file name not allowed",
                    )
                    .await;
            }
        };
        // A MAC's own script (its decision), before the cache's files.
        let per_mac = match machines {
            Some(m) => {
                let peer_mac = crate::neighbours::mac_of((*peer.ip()).into())
                    .and_then(|m| crate::machines::parse_mac(&m));
                match m.tftp_file(path.as_str(), peer_mac) {
                    Ok(found) => found,
                    Err(crate::machines::NotYours) => {
                        tracing::warn!(%peer, file = path.as_str(), "tftp request for another MAC's script refused");
                        return self
                            .refuse(reporting, peer, ErrorCode::AccessViolation, "not yours")
                            .await;
                    }
                }
            }
            None => None,
        };
        let (file, size) = match per_mac {
            Some(bytes) => {
                let size = bytes.len() as u64;
                (FileSource::Memory(bytes), size)
            }
            None => match self.cache.open(&path.to_path_buf()) {
                Ok((f, meta)) => match self.shared.get(&f, &meta) {
                    Some(contents) => (FileSource::Shared(contents), meta.len()),
                    None => (FileSource::File(f), meta.len()),
                },
                Err(e) => {
                    tracing::info!(%peer, file = path.as_str(), error = %e, "tftp request refused");
                    let code = match e {
                        OpenError::NotFound | OpenError::NotAFile => ErrorCode::FileNotFound,
                        OpenError::Escape => ErrorCode::AccessViolation,
                        OpenError::Io(_) => ErrorCode::NotDefined,
                    };
                    return self.refuse(reporting, peer, code, "file not found").await;
                }
            },
        };
        let transfer = ReadTransfer::start(&request, size, &self.limits);
        let ended = Ended {
            live: live.clone(),
            file_name: path.as_str().to_owned(),
            reporting: reporting.clone(),
            peer,
            started: Instant::now(),
        };
        // Lock-step transfers share one task, so only those whose blocks come from memory go
        // there: a file read block by block from disk (too big for a shared copy, or past the
        // copies' budget) would stall every one of them on a slow read.
        let from_memory = !matches!(file, FileSource::File(_));
        if transfer.negotiation().windowsize <= 1 && from_memory {
            if let Ok(mut l) = live.lock() {
                l.insert(peer);
            }
            let handoff = Handoff {
                transfer,
                peer,
                source: Box::new(file),
                on_end: Box::new(move |outcome| ended.report(outcome.as_ref())),
            };
            if let Err(e) = transfers.lock_step.send(handoff) {
                // Only while the server shuts down.
                (e.0.on_end)(None);
            }
            return;
        }
        // A window (or a file read from disk): its own socket, where the kernel segments a
        // window from one send.
        let socket = match sockets::udp(
            SocketAddrV4::new(self.server_ip, 0),
            Some(&self.device),
            false,
            Role::Peer,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a tftp transfer socket");
                return self
                    .refuse(reporting, peer, ErrorCode::NotDefined, "server busy")
                    .await;
            }
        };
        if let Ok(mut l) = live.lock() {
            l.insert(peer);
        }
        let stop = transfers.stop.clone();
        tokio::spawn(async move {
            let outcome = drive(transfer, &socket, peer, &file, stop).await;
            ended.report(outcome.as_ref());
        });
    }
}

/// What the listener hands its transfers.
struct Transfers {
    /// Peers with a live transfer: a repeated RRQ (our first answer was lost) must not start
    /// a second transfer to the same port.
    live: Arc<Mutex<HashSet<SocketAddrV4>>>,
    /// To the task of the lock-step transfers.
    lock_step: mpsc::UnboundedSender<Handoff>,
    /// Ends the transfers under way (without a report).
    stop: watch::Receiver<bool>,
}

/// What a transfer reports when it ends, and the live set it leaves.
struct Ended {
    live: Arc<Mutex<HashSet<SocketAddrV4>>>,
    file_name: String,
    reporting: Reporting,
    peer: SocketAddrV4,
    started: Instant,
}

impl Ended {
    /// Counts and logs the outcome (`None`: stopped before it ended) and reports the boot event.
    fn report(self, outcome: Option<&Outcome>) {
        let Ended {
            live,
            file_name,
            reporting,
            peer,
            started,
        } = self;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        if outcome.is_some() {
            let mac = crate::neighbours::mac_of((*peer.ip()).into()).unwrap_or_default();
            let event = |kind: &str, bytes: u64, detail: String| bootfleet_api::proto::BootEvent {
                kind: kind.into(),
                mac: mac.clone(),
                file: file_name.clone(),
                bytes,
                duration_ms: started.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
                peer: peer.to_string(),
                detail,
                ..Default::default()
            };
            let failed = |bytes: u64, detail: String| {
                reporting.counters.tftp(TftpOutcome::Failed, bytes);
                reporting.events.emit(event("tftp_failed", bytes, detail));
            };
            match outcome {
                Some(Outcome::Completed(s)) => {
                    reporting
                        .counters
                        .tftp(TftpOutcome::Completed, s.bytes_acknowledged);
                    reporting.events.emit(event(
                        "tftp_served",
                        s.bytes_acknowledged,
                        String::new(),
                    ));
                    tracing::info!(event = "tftp_served", %peer, file = %file_name, bytes = s.bytes_acknowledged, resent = s.blocks_resent, elapsed_ms, "file served");
                }
                Some(Outcome::Declined { code, message }) => {
                    // EDK2 asks for the size first and ends that transfer on purpose.
                    reporting.counters.tftp(TftpOutcome::Declined, 0);
                    tracing::debug!(%peer, file = %file_name, ?code, message = %message, "client ended after option negotiation");
                }
                Some(Outcome::AbortedByClient {
                    code,
                    message,
                    stats: s,
                }) => {
                    failed(s.bytes_acknowledged, format!("client aborted: {message}"));
                    tracing::info!(%peer, file = %file_name, ?code, message = %message, bytes = s.bytes_acknowledged, "client aborted the transfer");
                }
                Some(Outcome::Failed { reason, stats: s }) => {
                    failed(s.bytes_acknowledged, reason.to_string());
                    tracing::warn!(%peer, file = %file_name, error = %reason, bytes = s.bytes_acknowledged, "tftp transfer failed");
                }
                None => {}
            }
        }
        if let Ok(mut l) = live.lock() {
            l.remove(&peer);
        };
    }
}

/// Room for one datagram from a transfer's client: a page, far above what a client may send.
const RX_BUFFER: usize = 4096;

/// Runs one transfer to its end (or until shutdown, then `None`).
///
/// The retransmission deadline moves with every datagram sent, but the timer is not re-armed
/// per block (each registration takes the runtime's timer-wheel lock, which every transfer of a
/// boot storm shares): the sleep fires at the deadline it was armed with, and if we sent since,
/// it is armed again for the new one.
async fn drive(
    mut transfer: ReadTransfer,
    socket: &UdpSocket,
    peer: SocketAddrV4,
    source: &FileSource,
    mut shutdown: watch::Receiver<bool>,
) -> Option<Outcome> {
    let mut tx = Vec::with_capacity(transfer.max_datagram_len());
    let mut batch = Batch::default();
    let mut offload = Offload::Try;
    // A client sends a transfer ACKs and ERRORs (4 + 512 + 1 bytes at most, RFC 1350). A longer
    // datagram is cut here: an ERROR keeps the start of its message, and an ACK that long was
    // malformed anyway.
    let (mut rx, mut rx2) = (vec![0u8; RX_BUFFER], vec![0u8; RX_BUFFER]);
    let mut deadline = tokio::time::Instant::now();
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    let stopping = shutdown.changed();
    tokio::pin!(stopping);
    loop {
        let mut sent = false;
        // A window's blocks leave in one send where the kernel segments them.
        while transfer.poll_transmit(source, &mut tx).is_some() {
            if !batch.try_take(&mut tx) {
                datagram_batch::send(socket, peer, &mut batch, &mut offload).await;
                // Sent batches are empty, and an empty batch takes any datagram.
                batch.try_take(&mut tx);
            }
            sent = true;
        }
        if !batch.is_empty() {
            datagram_batch::send(socket, peer, &mut batch, &mut offload).await;
        }
        if let Some(outcome) = transfer.outcome() {
            return Some(outcome.clone());
        }
        if sent {
            // The timer restarts only when we send, never when a packet arrives.
            deadline = tokio::time::Instant::now() + transfer.timeout();
            if timer.is_elapsed() {
                timer.as_mut().reset(deadline);
            }
        }
        tokio::select! {
            biased;
            r = drained_recv::recv(socket, &mut rx, &mut rx2) => match r {
                Ok(received) => {
                    let second = received.second.map(|(len, from)| (&rx2, len, from));
                    for (buf, len, from) in std::iter::once((&rx, received.first.0, received.first.1)).chain(second) {
                        if from != peer {
                            let _ = socket.send_to(&tftp::unknown_transfer_id_datagram(), from).await;
                        } else if let Some(datagram) = buf.get(..len) {
                            transfer.on_packet(datagram);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "tftp receive failed");
                    transfer.on_timeout();
                }
            },
            () = &mut timer => {
                if tokio::time::Instant::now() >= deadline {
                    transfer.on_timeout();
                } else {
                    timer.as_mut().reset(deadline);
                }
            }
            _ = &mut stopping => return None,
        }
    }
}
