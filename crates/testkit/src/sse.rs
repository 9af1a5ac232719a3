//! A server-sent event stream as `curl -N` reads it: one HTTP/1.1 GET with a bearer token,
//! then the chunked body cut into blocks at blank lines. Blocking, with a bound on every wait,
//! so a test that waits for an event that never comes fails instead of hanging.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct EventStream {
    reader: BufReader<TcpStream>,
    /// Body text received and not yet handed out as a block.
    buffer: String,
    ended: bool,
}

impl EventStream {
    /// Opens `path` (with its query) on `addr`; panics unless the answer is `200` with
    /// `text/event-stream`.
    pub fn open(addr: SocketAddr, path: &str, bearer: &str) -> EventStream {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .expect("send the request");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut reader = BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read the response head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let header = |name: &str| {
            head.iter().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        assert!(
            head.first().is_some_and(|status| status.contains(" 200 ")),
            "{path}: {head:?}"
        );
        assert_eq!(
            header("content-type").as_deref(),
            Some("text/event-stream"),
            "{head:?}"
        );
        assert_eq!(
            header("transfer-encoding").as_deref(),
            Some("chunked"),
            "{head:?}"
        );
        EventStream {
            reader,
            buffer: String::new(),
            ended: false,
        }
    }

    /// The next block (an event or a comment, without its blank line), waiting at most
    /// `within`; `None` once the server ended the stream.
    pub fn next_block(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return Some(block);
            }
            if self.ended {
                return None;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .unwrap_or_else(|| panic!("nothing from the stream within {within:?}"));
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("read timeout");
            self.read_chunk();
        }
    }

    /// The next event, comments skipped: its name and its `data` text.
    pub fn next_event(&mut self, within: Duration) -> (String, String) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let block = self
                .next_block(left)
                .expect("the stream ended while an event was awaited");
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.strip_prefix(' ').unwrap_or(v).to_owned())
            };
            if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
                return (event, data);
            }
        }
    }

    /// One chunk of the body into the buffer (a zero-length one ends it).
    fn read_chunk(&mut self) {
        let mut size = String::new();
        let read = self
            .reader
            .read_line(&mut size)
            .unwrap_or_else(|e| panic!("read a chunk size: {e}"));
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if read == 0 || size == 0 {
            self.ended = true;
            return;
        }
        let mut data = vec![0; size + 2];
        self.reader
            .read_exact(&mut data)
            .unwrap_or_else(|e| panic!("read a chunk: {e}"));
        data.truncate(size);
        self.buffer.push_str(&String::from_utf8_lossy(&data));
    }
}
