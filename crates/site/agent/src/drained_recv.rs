//! A receive that also tells whether the socket is now empty, so a lock-step TFTP transfer does
//! not pay a second system call per ACK only to learn that nothing else came (issue 19).
//!
//! tokio learns a socket is drained only from a receive that fails with `EWOULDBLOCK`; with
//! `recv_from` every ACK costs one receive that succeeds and one that fails. `recvmmsg` asking
//! for two datagrams does both in one call: one datagram back means the queue was empty after
//! it, and the readiness is cleared then (tokio clears it only if no newer readiness event has
//! been seen since, so a datagram that arrives meanwhile still wakes the task). This module
//! calls `recvmmsg(2)` itself, so it allows `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One or two datagrams: their lengths and senders, in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub first: (usize, SocketAddrV4),
    pub second: Option<(usize, SocketAddrV4)>,
}

/// Waits for datagrams on `socket` and returns one or two of them (into `first` and `second`),
/// leaving the socket's readiness cleared when the queue was empty after the last one.
/// Datagrams from other address families cannot arrive on an IPv4 socket. Cancel-safe: a
/// datagram is never read and then dropped, as the read and the return happen in one poll.
pub async fn recv(socket: &UdpSocket, first: &mut [u8], second: &mut [u8]) -> io::Result<Received> {
    loop {
        socket.readable().await?;
        let mut drained = None;
        let result = socket.try_io(Interest::READABLE, || {
            let received = recv_two(socket.as_raw_fd(), first, second)?;
            if received.second.is_some() {
                return Ok(received);
            }
            // Tells tokio the queue is empty: it clears the readiness it saw.
            drained = Some(received);
            Err(io::ErrorKind::WouldBlock.into())
        });
        match (result, drained) {
            (Ok(received), _) | (Err(_), Some(received)) => return Ok(received),
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (Err(e), None) => return Err(e),
        }
    }
}

/// `recvmmsg` for at most two datagrams, without waiting.
fn recv_two(fd: i32, first: &mut [u8], second: &mut [u8]) -> io::Result<Received> {
    // SAFETY: all-zero bytes are valid values of these plain C structs.
    let mut addrs: [libc::sockaddr_in; 2] = unsafe { std::mem::zeroed() };
    let mut iovs = [
        libc::iovec {
            iov_base: first.as_mut_ptr().cast(),
            iov_len: first.len(),
        },
        libc::iovec {
            iov_base: second.as_mut_ptr().cast(),
            iov_len: second.len(),
        },
    ];
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; 2] = unsafe { std::mem::zeroed() };
    for (i, msg) in msgs.iter_mut().enumerate() {
        msg.msg_hdr.msg_name = std::ptr::from_mut(&mut addrs[i]).cast();
        msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_hdr.msg_iov = std::ptr::from_mut(&mut iovs[i]);
        msg.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `msgs` holds two headers whose name and iovec pointers point at `addrs`, `iovs`
    // and the caller's buffers, all alive and exclusively borrowed for the call, with their
    // true lengths; the kernel writes at most that much. MSG_DONTWAIT: never blocks.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            2,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let datagram = |i: usize| {
        let addr = addrs[i];
        let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        (
            msgs[i].msg_len as usize,
            SocketAddrV4::new(ip, u16::from_be(addr.sin_port)),
        )
    };
    match n {
        1 => Ok(Received {
            first: datagram(0),
            second: None,
        }),
        2 => Ok(Received {
            first: datagram(0),
            second: Some(datagram(1)),
        }),
        _ => Err(io::Error::other("recvmmsg returned no datagram")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (std::net::UdpSocket, UdpSocket, SocketAddrV4) {
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let receiver = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let std::net::SocketAddr::V4(from) = sender.local_addr().expect("addr") else {
            unreachable!("IPv4")
        };
        (sender, receiver, from)
    }

    /// The next `recv` on `receiver`, within 5 s.
    async fn next(receiver: &UdpSocket, a: &mut [u8], b: &mut [u8]) -> Received {
        tokio::time::timeout(std::time::Duration::from_secs(5), recv(receiver, a, b))
            .await
            .expect("in time")
            .expect("recv")
    }

    fn one(len: usize, from: SocketAddrV4) -> Received {
        Received {
            first: (len, from),
            second: None,
        }
    }

    /// One queued datagram comes back alone; the next one, sent after the readiness was cleared,
    /// still wakes the receiver (no lost wake-up).
    #[tokio::test]
    async fn one_datagram_then_a_later_one_still_wakes_the_receiver() {
        let (sender, receiver, from) = pair().await;
        let to = receiver.local_addr().expect("addr");
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        sender.send_to(b"ack 1", to).expect("send");
        let got = next(&receiver, &mut a, &mut b).await;
        assert_eq!(got, one(5, from));
        assert_eq!(&a[..5], b"ack 1");
        let late = async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            sender.send_to(b"ack 22", to).expect("send");
        };
        let (got, ()) = tokio::join!(next(&receiver, &mut a, &mut b), late);
        assert_eq!(got, one(6, from));
        assert_eq!(&a[..6], b"ack 22");
    }

    /// Two queued datagrams come back together, in order; a third queued behind them is read
    /// by the next call without a new arrival to wake it.
    #[tokio::test]
    async fn queued_datagrams_are_all_read() {
        let (sender, receiver, from) = pair().await;
        let to = receiver.local_addr().expect("addr");
        for d in [&b"one"[..], b"two", b"three"] {
            sender.send_to(d, to).expect("send");
        }
        // Let all three reach the queue before the first read.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        let got = next(&receiver, &mut a, &mut b).await;
        assert_eq!(
            got,
            Received {
                first: (3, from),
                second: Some((3, from))
            }
        );
        assert_eq!((&a[..3], &b[..3]), (&b"one"[..], &b"two"[..]));
        let got = next(&receiver, &mut a, &mut b).await;
        assert_eq!(got, one(5, from));
        assert_eq!(&a[..5], b"three");
    }
}
