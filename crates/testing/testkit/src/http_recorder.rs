//! A tiny HTTP/1.1 server on 127.0.0.1 that records every request it gets and answers each with
//! the same fixed body. Guests reach it through QEMU's restricted user network (see
//! [`crate::qemu::Qemu::local`]), so a test can observe "the guest asked for X" without any traffic
//! leaving loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as sent (`/boot?x=1`).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub struct HttpRecorder {
    port: u16,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl HttpRecorder {
    /// Starts serving on a free loopback port; every request is answered `200` with `body`.
    pub fn start(body: &str) -> HttpRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let body = Arc::new(body.as_bytes().to_vec());
        let seen = requests.clone();
        // The thread lives as long as the test process; the listener is cheap and loopback-only.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (seen, body) = (seen.clone(), body.clone());
                std::thread::spawn(move || serve(stream, &seen, &body));
            }
        });
        HttpRecorder { port, requests }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().expect("recorder lock").clone()
    }

    /// Waits until a request whose target starts with `prefix` arrived, at most `within`.
    pub fn wait_for(&self, prefix: &str, within: Duration) -> Option<RecordedRequest> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(r) = self
                .requests()
                .into_iter()
                .find(|r| r.target.starts_with(prefix))
            {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<RecordedRequest>>, body: &[u8]) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_owned(), target.to_owned());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(1 << 20);
        let mut req_body = vec![0; len];
        if reader.read_exact(&mut req_body).is_err() {
            return;
        }
        seen.lock().expect("recorder lock").push(RecordedRequest {
            method,
            target,
            headers,
            body: req_body,
        });
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(body).is_err() {
            return;
        }
    }
}
