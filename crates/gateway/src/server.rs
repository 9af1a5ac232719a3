//! Serving connections: what `axum::serve` does, plus the bounds an API on a LAN needs. A
//! client gets `header_read_timeout` to send a request's head (this also closes keep-alive
//! connections left idle that long: hyper starts the same timer while waiting for the next
//! request), and no more than `max_connections` are served at once: beyond that the listener
//! is not accepted from until one closes, so the kernel's backlog holds the rest instead of
//! the gateway spending a task and buffers on each. Request bodies have their own deadline
//! (see [`crate::http::JsonBody`]), and so does producing a response's head (see
//! [`crate::http::edge`]). A client that stops reading its response is disconnected once
//! the gateway's writes have made no progress for `write_timeout`: otherwise it would hold its
//! connection slot (and a graceful shutdown) for as long as it likes. Accepted connections are
//! served on [`Lanes`], one single-threaded runtime per CPU.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};

/// How many headers hyper parses before it refuses a request itself (431, no body): well
/// above [`crate::http::MAX_HEADERS`], which the gateway refuses in its envelope.
const HYPER_MAX_HEADERS: usize = 1000;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Semaphore};

/// Bounds on what a client may hold of the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Time to send a request's head; also how long a keep-alive connection may sit idle.
    pub header_read_timeout: Duration,
    /// Time to send a request's body once its head arrived.
    pub body_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Time from a request's head to its response's head (the body may stream for longer).
    pub request_timeout: Duration,
    /// How long a write to the client may make no progress (the client reads nothing) before
    /// the connection is closed.
    pub write_timeout: Duration,
    /// How often an event stream with nothing to say sends a comment: it keeps proxies from
    /// closing the connection, and a client that went away is noticed when the write fails.
    pub event_keep_alive: Duration,
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            header_read_timeout: Duration::from_secs(20),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            request_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            event_keep_alive: Duration::from_secs(15),
        }
    }
}

/// Set when the server stops: responses that would go on for ever (event streams) end then,
/// so that a graceful shutdown does not wait on them. Every request carries it as an extension.
#[derive(Clone, Debug)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Resolves once the server is stopping.
    pub async fn wait(&mut self) {
        // An error means the server is gone: stopping too.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets requests
/// in flight finish, and returns when every connection has closed.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stopping, stopping_rx) = watch::channel(false);
    let app = app.layer(axum::Extension(Stopping(stopping_rx)));
    // Every connection task holds a receiver; `closed()` on the sender says they are all gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut at_limit = false;
    let mut lanes = Lanes::start()?;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                at_limit = false;
                slot
            }
            Err(_) => {
                if !at_limit {
                    at_limit = true;
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait in the backlog"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The router takes hyper's body type as it is.
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand the connection over");
                continue;
            }
        };
        lanes.next().spawn(async move {
            let _slot = slot;
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cannot serve the connection");
                    return;
                }
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                // Above the gateway's own limits (`http::edge`), which answer in the
                // error envelope; hyper's own 431 has no body.
                .max_headers(HYPER_MAX_HEADERS);
            let io = TokioIo::new(StalledWrites::new(stream, limits.write_timeout));
            let mut conn = pin!(builder.serve_connection(io, service));
            let mut stopping = false;
            loop {
                tokio::select! {
                    served = conn.as_mut() => {
                        if let Err(e) = served {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                        break;
                    }
                    changed = stop.changed(), if !stopping => {
                        stopping = true;
                        if changed.is_ok() {
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            drop(stop);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
    drop(lanes);
    Ok(())
}

/// Connections are served on one single-threaded runtime per CPU, each thread driving its own
/// sockets, as nginx's workers do, instead of on the process's work-stealing runtime: there a
/// request that became ready woke another worker to steal it, twice as many context switches
/// per request as nginx (BENCHMARKS.md). Handlers still reach the bus, whose connection lives on
/// the main runtime, through its channels.
struct Lanes {
    handles: Vec<tokio::runtime::Handle>,
    next: usize,
    /// Dropped to stop the lanes' threads (each blocks on its receiver).
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Lanes {
    /// How many lanes a server runs: one per CPU this process may use.
    fn count() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    fn start() -> std::io::Result<Lanes> {
        let n = Lanes::count();
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("gateway-lane-{i}"))
                .spawn(move || {
                    let _ = rt.block_on(stopped);
                    // Connections still open are dropped with the runtime.
                    rt.shutdown_background();
                })?;
        }
        Ok(Lanes {
            handles,
            next: 0,
            _stop: stops,
        })
    }

    fn next(&mut self) -> &tokio::runtime::Handle {
        self.next = (self.next + 1) % self.handles.len();
        &self.handles[self.next]
    }
}

/// A connection whose writes fail with `TimedOut` once they have been waiting for the client
/// to read for `timeout` without any progress. Reads pass through untouched.
struct StalledWrites<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write first has to wait, disarmed as soon as one goes through.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StalledWrites<S> {
    fn new(inner: S, timeout: Duration) -> StalledWrites<S> {
        StalledWrites {
            inner,
            timeout,
            stalled: None,
        }
    }

    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing of the response for {} s",
                    timeout.as_secs_f64()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StalledWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StalledWrites<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.bounded(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.bounded(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.bounded(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.bounded(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Generous: only there so a broken server fails the test instead of hanging it.
    const WAIT: Duration = Duration::from_secs(10);

    struct Running {
        addr: std::net::SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Running {
        async fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            tokio::time::timeout(WAIT, self.task)
                .await
                .expect("serve returns after shutdown")
                .expect("join")
                .expect("serve");
        }
    }

    async fn start(limits: ServeLimits) -> Running {
        start_with(limits, Arc::new(tokio::sync::Notify::new())).await
    }

    /// `/slow` notifies `entered` when it starts, then answers after 300 ms.
    async fn start_with(limits: ServeLimits, entered: Arc<tokio::sync::Notify>) -> Running {
        let app = Router::new().route("/", get(|| async { "ok" })).route(
            "/slow",
            get(move || async move {
                entered.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow ok"
            }),
        );
        start_app(app, limits).await
    }

    async fn start_app(app: Router, limits: ServeLimits) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_router(listener, app, limits, async move {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn limits(header_ms: u64, max_connections: usize) -> ServeLimits {
        ServeLimits {
            header_read_timeout: Duration::from_millis(header_ms),
            max_connections,
            ..ServeLimits::default()
        }
    }

    /// Sends one GET on `stream` and reads its response (Content-Length framed).
    async fn get_on(stream: &mut TcpStream, path: &str) -> String {
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
                .await
                .expect("an answer")
                .expect("read");
            assert!(n > 0, "closed before the answer: {answer:?}");
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                if body.len() >= len {
                    return text;
                }
            }
        }
    }

    /// Sends `request` on a new connection and reads until the server closes it (within WAIT).
    async fn exchange(server: &Running, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
            .await
            .expect("answered and closed")
            .expect("read");
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Whether the server closes `stream` (EOF or reset) before `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 256];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// Connections are served on the lanes (one thread per CPU), taken in turn, never on the
    /// runtime that accepts them; a kept-alive connection stays on its lane.
    #[tokio::test]
    async fn connections_are_served_on_the_lanes_in_turn() {
        let app = Router::new().route(
            "/lane",
            get(|| async {
                std::thread::current()
                    .name()
                    .unwrap_or("unnamed")
                    .to_owned()
            }),
        );
        let server = start_app(app, limits(10_000, 16)).await;
        let body = |answer: String| answer.split_once("\r\n\r\n").expect("a head").1.to_owned();
        let lanes = Lanes::count();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..lanes {
            let mut stream = TcpStream::connect(server.addr).await.expect("connect");
            let first = body(get_on(&mut stream, "/lane").await);
            let again = body(get_on(&mut stream, "/lane").await);
            assert!(first.starts_with("gateway-lane-"), "served on {first}");
            assert_eq!(first, again, "a kept-alive connection stays on its lane");
            seen.insert(first);
        }
        assert_eq!(seen.len(), lanes, "one connection per lane: {seen:?}");
        server.stop().await;
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_head_is_disconnected() {
        let server = start(limits(1_000, 16)).await;
        let mut slow = TcpStream::connect(server.addr).await.expect("connect");
        slow.write_all(b"GET / HT").await.expect("write");
        assert!(closed_within(&mut slow, WAIT).await, "still open");
        // An idle keep-alive connection is closed the same way.
        let mut idle = TcpStream::connect(server.addr).await.expect("connect");
        assert!(get_on(&mut idle, "/").await.ends_with("ok"));
        assert!(closed_within(&mut idle, WAIT).await, "idle still open");
        server.stop().await;
    }

    #[tokio::test]
    async fn keep_alive_serves_several_requests_on_one_connection() {
        let server = start(limits(5_000, 16)).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        for _ in 0..3 {
            let answer = get_on(&mut stream, "/").await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        drop(stream);
        server.stop().await;
    }

    #[tokio::test]
    async fn beyond_the_connection_limit_clients_wait_until_one_closes() {
        let server = start(limits(10_000, 2)).await;
        let mut first = TcpStream::connect(server.addr).await.expect("connect");
        let mut second = TcpStream::connect(server.addr).await.expect("connect");
        assert!(get_on(&mut first, "/").await.ends_with("ok"));
        assert!(get_on(&mut second, "/").await.ends_with("ok"));
        // The third is in the kernel's backlog: its request is not answered while two are open.
        let mut third = TcpStream::connect(server.addr).await.expect("connect");
        third
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
        assert!(early.is_err(), "answered beyond the limit: {early:?}");
        drop(first);
        let n = tokio::time::timeout(WAIT, third.read(&mut buf))
            .await
            .expect("answered once a slot is free")
            .expect("read");
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        drop((second, third));
        server.stop().await;
    }

    /// Routes behind the request deadline middleware the gateway's router uses, with a 500 ms
    /// request timeout: `/stall` never answers, `/stream` sends its head at once and its body
    /// over 1.2 s, `/extended` takes 1 s after extending its deadline, `/echo` reads the
    /// request body.
    async fn start_deadline() -> Running {
        use axum::body::{Body, Bytes};
        use axum::routing::post;
        let app = Router::new()
            .route("/stall", get(std::future::pending::<&'static str>))
            .route(
                "/stream",
                get(|| async {
                    let chunks = futures_util::stream::unfold(0u8, |i| async move {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(400)).await;
                        }
                        (i < 4).then(|| (Ok::<_, std::io::Error>(format!("part{i};")), i + 1))
                    });
                    Body::from_stream(chunks)
                }),
            )
            .route(
                "/extended",
                get(|deadline: crate::http::Deadline| async move {
                    deadline.allow(Duration::from_secs(1));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "extended ok"
                }),
            )
            .route("/echo", post(|body: Bytes| async move { body }))
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_millis(500),
                crate::http::edge,
            ));
        start_app(app, limits(5_000, 16)).await
    }

    /// The JSON error envelope's code in a Content-Length framed answer.
    fn error_code(answer: &str) -> String {
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(body).expect(answer);
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn a_handler_that_stalls_is_answered_with_the_json_timeout_error() {
        let server = start_deadline().await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let answer = get_on(&mut stream, "/stall").await;
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
        assert!(
            answer.contains("content-type: application/json"),
            "{answer}"
        );
        assert_eq!(error_code(&answer), "timeout", "{answer}");
        // The connection still serves the next request.
        let answer = get_on(&mut stream, "/extended").await;
        assert!(answer.ends_with("extended ok"), "{answer}");
        drop(stream);
        server.stop().await;
    }

    /// The whole answer of a server with the deadline middleware to `request`, on a
    /// connection of its own.
    async fn deadline_answer(request: &[u8]) -> String {
        let server = start_deadline().await;
        let answer = exchange(&server, request).await;
        server.stop().await;
        answer
    }

    #[tokio::test]
    async fn a_body_streaming_after_its_head_is_not_cut_by_the_deadline() {
        let answer =
            deadline_answer(b"GET /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        for part in ["part0;", "part1;", "part2;", "part3;"] {
            assert!(answer.contains(part), "{part} missing: {answer}");
        }
        // The chunked body ended properly rather than being cut.
        assert!(answer.ends_with("0\r\n\r\n"), "{answer}");
    }

    #[tokio::test]
    async fn a_body_still_awaited_at_the_deadline_is_the_clients_408() {
        let answer =
            deadline_answer(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
                .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert_eq!(error_code(&answer), "request_timeout", "{answer}");
    }

    /// `/big?mib=N` streams N MiB in 64 KiB chunks; `/` answers "ok". One connection at a
    /// time, writes allowed to stall for 1 s.
    async fn start_big() -> Running {
        use axum::body::Body;
        use axum::extract::RawQuery;
        let app = Router::new().route("/", get(|| async { "ok" })).route(
            "/big",
            get(|RawQuery(q): RawQuery| async move {
                let mib: usize = q
                    .as_deref()
                    .and_then(|q| q.strip_prefix("mib="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                let chunks = futures_util::stream::iter(
                    (0..mib * 16).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024])),
                );
                Body::from_stream(chunks)
            }),
        );
        let limits = ServeLimits {
            max_connections: 1,
            write_timeout: Duration::from_secs(1),
            ..ServeLimits::default()
        };
        start_app(app, limits).await
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_loses_its_connection_and_its_slot() {
        let server = start_big().await;
        // 256 MiB is far more than the socket buffers on both ends hold, so the gateway's
        // writes stall once they are full; this client then reads nothing.
        let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
        stalled
            .write_all(b"GET /big?mib=256 HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        // The only slot is the stalled client's until its writes time out; then this one is
        // accepted from the backlog and served.
        let mut next = TcpStream::connect(server.addr).await.expect("connect");
        let answer = get_on(&mut next, "/").await;
        assert!(answer.ends_with("ok"), "{answer}");
        // The stalled connection was closed: reading it now drains what the buffers held and
        // then ends, short of the whole body.
        let mut received = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match tokio::time::timeout(WAIT, stalled.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => received += n,
                Err(_) => panic!("the stalled connection is still open after {received} bytes"),
            }
        }
        assert!(received < 256 << 20, "got the whole body: {received} bytes");
        drop((next, stalled));
        server.stop().await;
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_gets_the_whole_body() {
        let server = start_big().await;
        let mut slow = TcpStream::connect(server.addr).await.expect("connect");
        slow.write_all(b"GET /big?mib=16 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut received = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            // Well inside the 1 s the gateway allows a write to make no progress.
            tokio::time::sleep(Duration::from_millis(50)).await;
            match tokio::time::timeout(WAIT, slow.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => received += n,
                other => panic!("read failed after {received} bytes: {other:?}"),
            }
        }
        assert!(received > 16 << 20, "cut short at {received} bytes");
        server.stop().await;
    }

    #[tokio::test]
    async fn shutdown_lets_a_request_in_flight_finish() {
        let entered = Arc::new(tokio::sync::Notify::new());
        let server = start_with(limits(5_000, 16), entered.clone()).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let addr = server.addr;
        let in_flight = tokio::spawn(async move { get_on(&mut stream, "/slow").await });
        tokio::time::timeout(WAIT, entered.notified())
            .await
            .expect("the request reached its handler");
        server.stop().await;
        let answer = tokio::time::timeout(WAIT, in_flight)
            .await
            .expect("answered")
            .expect("join");
        assert!(answer.ends_with("slow ok"), "{answer}");
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }
}
