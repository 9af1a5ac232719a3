//! The TFTP server alone on a namespaced LAN (no guest, no NATS): lock-step transfers share
//! one server port and one task (`tftp_transfers.rs`), windowed ones (and lock-step reads of a
//! file too big to keep in memory) keep a socket each, and
//! both kinds run at once with every byte checked; a stranger writing to the shared port gets
//! ERROR 5 while the transfer it interrupted goes on; an ACK that never comes is answered with
//! the block again after the timeout.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bootfleet_netboot::tftp::Limits;
use bootfleet_site_agent::cache::Cache;
use bootfleet_site_agent::reporting::{Counters, Events, Reporting, Switch};
use bootfleet_site_agent::tftp_server::TftpServer;
use bootfleet_testkit::netlab::NetLab;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const BLKSIZE: usize = 1468;
/// Not a multiple of the block size, so the last block is short.
const FILE_LEN: usize = 300_000;

/// Over the size of a file kept in memory for its transfers (`shared_files::MAX_FILE`, 8 MiB):
/// read from disk block by block.
const BIG_FILE_LEN: usize = (8 << 20) + 1000;

fn file_bytes() -> Vec<u8> {
    bytes_of(FILE_LEN)
}

fn bytes_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// A client socket with a receive timeout long enough for a loaded CI machine.
fn client() -> UdpSocket {
    let socket = UdpSocket::bind("10.77.0.10:0").expect("bind client");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket
}

fn rrq(file: &str, windowsize: u16) -> Vec<u8> {
    let mut rrq = vec![0, 1];
    let mut field = |s: &str| {
        rrq.extend_from_slice(s.as_bytes());
        rrq.push(0);
    };
    field(file);
    field("octet");
    field("blksize");
    field(&BLKSIZE.to_string());
    if windowsize > 1 {
        field("windowsize");
        field(&windowsize.to_string());
    }
    rrq
}

fn ack(block: u16) -> [u8; 4] {
    let [hi, lo] = block.to_be_bytes();
    [0, 4, hi, lo]
}

/// The next datagram and where it came from.
fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddrV4) {
    let mut buf = vec![0u8; 65_536];
    let (len, from) = socket.recv_from(&mut buf).expect("a datagram in time");
    let SocketAddr::V4(from) = from else {
        panic!("IPv4 only")
    };
    buf.truncate(len);
    (buf, from)
}

/// Sends the RRQ, takes the OACK and acknowledges it: the socket and the transfer's port.
fn open(file: &str, windowsize: u16) -> (UdpSocket, SocketAddrV4) {
    let socket = client();
    socket
        .send_to(&rrq(file, windowsize), SocketAddrV4::new(SERVER, 69))
        .expect("rrq");
    let (oack, port) = receive(&socket);
    assert_eq!(
        oack.get(..2),
        Some(&[0u8, 6][..]),
        "an OACK first: {oack:?}"
    );
    assert_ne!(port.port(), 69, "a transfer answers from its own port");
    socket.send_to(&ack(0), port).expect("ack 0");
    (socket, port)
}

/// Reads `file` to its end, acknowledging every `windowsize` blocks; the bytes and the
/// transfer's port.
fn read(file: &str, windowsize: u16) -> (Vec<u8>, SocketAddrV4) {
    let (socket, port) = open(file, windowsize);
    let mut bytes = Vec::with_capacity(FILE_LEN);
    let mut expected: u16 = 1;
    loop {
        let (data, from) = receive(&socket);
        assert_eq!(from, port, "every block from the transfer's port");
        assert_eq!(
            data.get(..2),
            Some(&[0u8, 3][..]),
            "DATA: {:?}",
            data.get(..4)
        );
        let block = u16::from_be_bytes([data[2], data[3]]);
        assert_eq!(block, expected, "blocks in order on a bridge");
        let payload = &data[4..];
        bytes.extend_from_slice(payload);
        let last = payload.len() < BLKSIZE;
        if last || block % windowsize == 0 {
            socket.send_to(&ack(block), port).expect("ack");
        }
        if last {
            return (bytes, port);
        }
        expected = expected.wrapping_add(1);
    }
}

#[test]
fn lock_step_transfers_share_a_port_windowed_ones_do_not_and_all_arrive_whole() {
    let mut lab = NetLab::new();
    let srv = lab.host("srv", "i0", "10.77.0.2/24", None);
    let cli = lab.host("cli", "c0", "10.77.0.10/24", None);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("boot.bin"), file_bytes()).expect("write");
    std::fs::write(dir.path().join("big.bin"), bytes_of(BIG_FILE_LEN)).expect("write");

    // The server's runtime lives in its namespace: its workers open every socket there.
    let runtime = lab.run_in(&srv, || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    });
    let counters = Arc::new(Counters::default());
    let reporting = Reporting {
        events: Events::log_only(),
        switch: Switch::default(),
        counters: counters.clone(),
    };
    let cache = Cache::new(dir.path()).expect("cache");
    let server = runtime
        .block_on(
            runtime.spawn(async move { TftpServer::bind("i0", SERVER, cache, Limits::default()) }),
        )
        .expect("join")
        .expect("bind the TFTP server");
    let (_shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    runtime.spawn(server.run(reporting, None, shutdown_rx, stop_rx));

    let expected = file_bytes();
    let (lock_step, windowed, from_disk) = lab.run_in(&cli, || {
        // Both kinds at once, and a lock-step read of a file too big to be kept in memory.
        let big = std::thread::spawn(|| read("big.bin", 1));
        let readers: Vec<_> = (0..12)
            .map(|i| {
                std::thread::spawn(move || {
                    (i % 2 == 0, read("boot.bin", if i % 2 == 0 { 1 } else { 8 }))
                })
            })
            .collect();
        let mut lock_step = Vec::new();
        let mut windowed = Vec::new();
        for reader in readers {
            let (is_lock_step, (bytes, port)) = reader.join().expect("reader");
            assert!(bytes == expected, "a transfer arrived whole");
            if is_lock_step {
                lock_step.push(port);
            } else {
                windowed.push(port);
            }
        }
        let (bytes, from_disk) = big.join().expect("big reader");
        assert!(
            bytes == bytes_of(BIG_FILE_LEN),
            "the big file arrived whole"
        );
        (lock_step, windowed, from_disk)
    });
    let shared = lock_step[0];
    assert!(
        lock_step.iter().all(|p| *p == shared),
        "lock-step transfers share one port: {lock_step:?}"
    );
    let mut distinct = windowed.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        windowed.len(),
        "a port per window: {windowed:?}"
    );
    assert!(!windowed.contains(&shared), "{windowed:?} vs {shared}");
    // A file read from disk block by block keeps its own task and port: a slow read of it
    // must not stall the transfers that share one.
    assert_ne!(
        from_disk, shared,
        "the big file's transfer has its own port"
    );

    lab.run_in(&cli, || {
        // A stranger writing to the shared port gets ERROR 5; the transfer goes on.
        let (socket, port) = open("boot.bin", 1);
        let stranger = client();
        stranger.send_to(&ack(0), port).expect("stranger");
        let (error, from) = receive(&stranger);
        assert_eq!(from, port);
        assert_eq!(
            error.get(..4),
            Some(&[0u8, 5, 0, 5][..]),
            "ERROR 5: {error:?}"
        );
        let (data, _) = receive(&socket);
        assert_eq!(
            data.get(..4),
            Some(&[0u8, 3, 0, 1][..]),
            "DATA 1 still comes"
        );

        // No ACK for DATA 1: it comes again after the one-second timeout, then the
        // transfer ends normally.
        let quiet = Instant::now();
        let (again, from) = receive(&socket);
        let waited = quiet.elapsed();
        assert_eq!(from, port);
        assert_eq!(again, data, "the same block again");
        assert!(
            waited >= Duration::from_millis(800),
            "resent after the timeout, not at once ({waited:?})"
        );
        let mut block: u16 = 1;
        loop {
            socket.send_to(&ack(block), port).expect("ack");
            let (data, _) = receive(&socket);
            block = u16::from_be_bytes([data[2], data[3]]);
            if data.len() - 4 < BLKSIZE {
                socket.send_to(&ack(block), port).expect("last ack");
                break;
            }
        }
    });

    // 12 + the big one + the one interrupted and resent; each counted once it ended.
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters
        .tftp_completed
        .load(std::sync::atomic::Ordering::Relaxed)
        < 14
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        counters
            .tftp_completed
            .load(std::sync::atomic::Ordering::Relaxed),
        14
    );
    assert_eq!(
        counters
            .tftp_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    runtime.shutdown_timeout(Duration::from_secs(2));
}
