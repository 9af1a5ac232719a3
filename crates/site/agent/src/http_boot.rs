//! HTTP boot: the cache, read-only, over HTTP, for UEFI HTTP boot clients and iPXE. The same
//! rules as TFTP decide what may be served (`tftp::normalize`, then the cache's symlink check);
//! files are streamed, so a large kernel or initrd costs no memory.
//!
//! Ranges and conditional requests follow `bootfleet_http_range`, the rules the gateway uses
//! too: every file has a strong ETag from its metadata and `Accept-Ranges: bytes`; one byte
//! range gets 206 and only that slice is read; a matching `If-None-Match` gets 304; a range
//! past the end gets 416; HEAD carries the headers GET would.

use std::io::{Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bootfleet_api::proto::BootEvent;
use bootfleet_http_range::{ETag, Representation};
use bootfleet_netboot::tftp;
use tokio::io::AsyncReadExt;

use crate::cache::{Cache, OpenError};
use crate::reporting::Reporting;

const CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug)]
struct HttpState {
    cache: Cache,
    reporting: Reporting,
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// What the answer depends on, read from the open file, so the ETag describes the bytes served
/// even if the cache renames a new file into place meanwhile.
fn representation(file: &std::fs::File) -> std::io::Result<Representation> {
    let meta = file.metadata()?;
    let modified = meta.modified()?;
    Ok(Representation {
        len: meta.len(),
        etag: ETag::from_file(meta.len(), modified, meta.ino()),
        last_modified: Some(modified),
    })
}

async fn serve_file(State(state): State<HttpState>, req: Request) -> Response {
    let response = answer(&state, req).await;
    state
        .reporting
        .counters
        .http_response(response.status().as_u16());
    response
}

async fn answer(state: &HttpState, req: Request) -> Response {
    let started = Instant::now();
    if !state.reporting.switch.is_on() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "switched off\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "read-only\n");
    }
    // Percent-decoding is not done: boot file names are plain, and `%2e%2e` stays a name.
    let Ok(path) = tftp::normalize(req.uri().path()) else {
        return plain(StatusCode::FORBIDDEN, "file name not allowed\n");
    };
    let cannot_read = |e: std::io::Error| {
        tracing::warn!(file = path.as_str(), error = %e, "cannot read a cached file");
        plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n")
    };
    let mut file = match state.cache.open(&path.to_path_buf()) {
        Ok((file, _)) => file,
        Err(OpenError::Escape) => return plain(StatusCode::FORBIDDEN, "file name not allowed\n"),
        Err(OpenError::NotFound | OpenError::NotAFile) => {
            return plain(StatusCode::NOT_FOUND, "not found\n")
        }
        Err(OpenError::Io(e)) => return cannot_read(e),
    };
    let representation = match representation(&file) {
        Ok(r) => r,
        Err(e) => return cannot_read(e),
    };
    let answer = bootfleet_http_range::decide(req.method(), req.headers(), &representation);
    if answer.status == StatusCode::RANGE_NOT_SATISFIABLE {
        let mut response = plain(answer.status, "range not satisfiable\n");
        response.headers_mut().extend(answer.headers);
        return response;
    }
    let content_range = answer
        .headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let event = BootEvent {
        kind: "http_served".into(),
        mac: peer
            .and_then(|p| crate::neighbours::mac_of(p.ip()))
            .unwrap_or_default(),
        file: path.as_str().to_owned(),
        peer: peer.map(|p| p.to_string()).unwrap_or_default(),
        detail: format!("{} {}{content_range}", req.method(), answer.status.as_u16()),
        ..Default::default()
    };
    let body = match answer.body {
        Some(slice) if !slice.is_empty() => {
            if let Err(e) = file.seek(SeekFrom::Start(slice.start)) {
                return cannot_read(e);
            }
            let planned = slice.end - slice.start;
            let reporting = state.reporting.clone();
            slice_body(tokio::fs::File::from_std(file), planned, move |sent| {
                reporting.counters.http_body(sent, planned);
                report(&reporting, event, started, sent, planned)
            })
        }
        // HEAD, 304 or an empty file: nothing is sent, and that is reported at once.
        _ => {
            report(&state.reporting, event, started, 0, 0);
            Body::empty()
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    if answer.status != StatusCode::NOT_MODIFIED {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    headers.extend(answer.headers);
    response
}

/// Emits `http_served` with the body bytes actually handed to the connection: fewer than
/// `planned` when the client went away or the file could not be read to the end.
fn report(reporting: &Reporting, mut event: BootEvent, started: Instant, sent: u64, planned: u64) {
    if sent < planned {
        event
            .detail
            .push_str(&format!(" incomplete ({sent} of {planned} bytes)"));
    }
    event.bytes = sent;
    event.duration_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
    tracing::info!(
        event = "http_served",
        file = %event.file,
        peer = %event.peer,
        bytes = sent,
        detail = %event.detail,
        "file served over http"
    );
    reporting.events.emit(event);
}

/// Streams the next `len` bytes of `file`, then calls `done` with how many were handed out.
/// `done` runs when the stream is dropped, so it also runs when a client goes away mid-file.
fn slice_body<F>(file: tokio::fs::File, len: u64, done: F) -> Body
where
    F: FnOnce(u64) + Send + 'static,
{
    struct Slice<F: FnOnce(u64)> {
        file: tokio::fs::File,
        left: u64,
        sent: u64,
        ended: bool,
        done: Option<F>,
    }
    impl<F: FnOnce(u64)> Drop for Slice<F> {
        fn drop(&mut self) {
            if let Some(done) = self.done.take() {
                done(self.sent);
            }
        }
    }
    let slice = Slice {
        file,
        left: len,
        sent: 0,
        ended: false,
        done: Some(done),
    };
    Body::from_stream(futures_util::stream::unfold(slice, |mut s| async move {
        if s.left == 0 || s.ended {
            return None;
        }
        let want = usize::try_from(s.left).map_or(CHUNK, |left| left.min(CHUNK));
        let mut buf = vec![0u8; want];
        match s.file.read(&mut buf).await {
            Ok(0) => {
                // Content-Length promised more: an error makes the server cut the connection
                // instead of leaving the client waiting for bytes that will not come.
                s.ended = true;
                let e = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while being served",
                );
                Some((Err(e), s))
            }
            Ok(n) => {
                buf.truncate(n);
                s.left = s.left.saturating_sub(n as u64);
                s.sent += n as u64;
                Some((Ok(buf), s))
            }
            Err(e) => {
                s.ended = true;
                Some((Err(e), s))
            }
        }
    }))
}

fn router(cache: Cache, reporting: Reporting) -> axum::Router {
    axum::Router::new()
        .fallback(serve_file)
        .with_state(HttpState { cache, reporting })
}

/// Serves the cache over HTTP on `listener` until `shutdown` changes.
pub async fn run(
    listener: tokio::net::TcpListener,
    cache: Cache,
    reporting: Reporting,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let app = router(cache, reporting).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "http boot stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use crate::reporting::{Events, Switch};

    struct Server {
        url: String,
        http: reqwest::Client,
        dir: tempfile::TempDir,
        stop: tokio::sync::watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Server {
        /// `method path` with `headers`, answered.
        async fn ask(
            &self,
            method: Method,
            path: &str,
            headers: &[(header::HeaderName, &str)],
        ) -> reqwest::Response {
            let mut request = self.http.request(method, format!("{}{path}", self.url));
            for (name, value) in headers {
                request = request.header(name, *value);
            }
            request.send().await.expect("answered")
        }

        async fn stop(self) {
            let _ = self.stop.send(true);
            let _ = self.task.await;
        }
    }

    /// The server as `serve` runs it, on 127.0.0.1, over a temporary cache holding
    /// `boot/kernel` (bytes 0, 1, …, 255, 0, 1, …) and an empty `empty.img`.
    async fn start() -> (Server, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
        std::fs::create_dir_all(dir.path().join("boot")).expect("mkdir");
        std::fs::write(dir.path().join("boot/kernel"), &kernel).expect("write");
        std::fs::write(dir.path().join("empty.img"), b"").expect("write");
        let cache = Cache::new(dir.path()).expect("cache");
        let reporting = Reporting {
            events: Events::log_only(),
            switch: Switch::default(),
            counters: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(listener, cache, reporting, shutdown));
        (
            Server {
                url,
                http: reqwest::Client::new(),
                dir,
                stop,
                task,
            },
            kernel,
        )
    }

    /// The file `start` serves as the kernel.
    const KERNEL: &str = "/boot/kernel";

    fn text(response: &reqwest::Response, name: header::HeaderName) -> Option<String> {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    #[tokio::test]
    async fn whole_file_with_validators() {
        let (server, kernel) = start().await;
        let r = server.ask(Method::GET, KERNEL, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(text(&r, header::ACCEPT_RANGES).as_deref(), Some("bytes"));
        assert_eq!(
            text(&r, header::CONTENT_TYPE).as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(
            text(&r, header::CONTENT_LENGTH),
            Some(kernel.len().to_string())
        );
        assert!(text(&r, header::LAST_MODIFIED).is_some_and(|d| d.ends_with(" GMT")));
        let etag = text(&r, header::ETAG).expect("an etag");
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        assert_eq!(r.bytes().await.expect("body"), kernel);

        // The tag is stable while the file is, and changes when the file is replaced.
        let again = server.ask(Method::HEAD, KERNEL, &[]).await;
        assert_eq!(text(&again, header::ETAG).as_ref(), Some(&etag));
        let tmp = server.dir.path().join("boot/.kernel.tmp");
        std::fs::write(&tmp, &kernel).expect("write");
        std::fs::rename(&tmp, server.dir.path().join("boot/kernel")).expect("rename");
        let replaced = server.ask(Method::HEAD, KERNEL, &[]).await;
        assert_ne!(text(&replaced, header::ETAG), Some(etag));
        server.stop().await;
    }

    #[tokio::test]
    async fn ranges_are_206_with_only_their_bytes() {
        let (server, kernel) = start().await;
        let len = kernel.len();
        for (range, slice) in [
            ("bytes=0-0", 0..1),
            ("bytes=100-199", 100..200),
            // Crosses several read chunks, and ends at the end.
            ("bytes=1000-", 1000..len),
            ("bytes=-70000", len - 70_000..len),
            ("bytes=299990-999999", 299_990..len),
        ] {
            let r = server
                .ask(Method::GET, KERNEL, &[(header::RANGE, range)])
                .await;
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(
                text(&r, header::CONTENT_RANGE),
                Some(format!("bytes {}-{}/{len}", slice.start, slice.end - 1)),
                "{range}"
            );
            assert_eq!(
                text(&r, header::CONTENT_LENGTH),
                Some(slice.len().to_string())
            );
            assert_eq!(r.bytes().await.expect("body"), kernel[slice], "{range}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn conditional_and_odd_ranges() {
        let (server, kernel) = start().await;
        let head = server.ask(Method::HEAD, KERNEL, &[]).await;
        let etag = text(&head, header::ETAG).expect("etag");

        let none_match = format!("\"other\", {etag}");
        let r = server
            .ask(Method::GET, KERNEL, &[(header::IF_NONE_MATCH, &none_match)])
            .await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(text(&r, header::ETAG).as_ref(), Some(&etag));
        assert_eq!(text(&r, header::CONTENT_LENGTH), None);
        assert!(r.bytes().await.expect("body").is_empty());

        let r = server
            .ask(Method::GET, KERNEL, &[(header::IF_NONE_MATCH, "\"other\"")])
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.expect("body"), kernel);

        let past_the_end = format!("bytes={}-", kernel.len());
        let r = server
            .ask(Method::GET, KERNEL, &[(header::RANGE, &past_the_end)])
            .await;
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(
            text(&r, header::CONTENT_RANGE),
            Some(format!("bytes */{}", kernel.len()))
        );

        // If-Range with the current tag keeps the range; with an old one, the whole file.
        let current = [(header::RANGE, "bytes=5-9"), (header::IF_RANGE, &etag)];
        let r = server.ask(Method::GET, KERNEL, &current).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.bytes().await.expect("body"), kernel[5..10]);
        for (name, value) in [
            (header::IF_RANGE, "\"stale\""),
            (header::RANGE, "bytes=0-1,5-6"),
        ] {
            let mut headers = vec![(name.clone(), value)];
            if name == header::IF_RANGE {
                headers.push((header::RANGE, "bytes=5-9"));
            }
            let r = server.ask(Method::GET, KERNEL, &headers).await;
            assert_eq!(r.status(), StatusCode::OK, "{value}");
            assert_eq!(r.bytes().await.expect("body"), kernel, "{value}");
        }

        let r = server
            .ask(Method::GET, "/empty.img", &[(header::RANGE, "bytes=0-")])
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(text(&r, header::CONTENT_LENGTH).as_deref(), Some("0"));
        assert!(r.bytes().await.expect("body").is_empty());
        server.stop().await;
    }

    #[tokio::test]
    async fn head_has_the_headers_of_get_and_no_body() {
        let (server, kernel) = start().await;
        let get = server.ask(Method::GET, KERNEL, &[]).await;
        let head = server
            .ask(Method::HEAD, KERNEL, &[(header::RANGE, "bytes=0-9")])
            .await;
        assert_eq!(head.status(), StatusCode::OK, "HEAD ignores Range");
        for name in [
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::ETAG,
            header::LAST_MODIFIED,
            header::ACCEPT_RANGES,
        ] {
            assert_eq!(
                text(&head, name.clone()),
                text(&get, name.clone()),
                "{name}"
            );
        }
        assert_eq!(
            text(&head, header::CONTENT_LENGTH),
            Some(kernel.len().to_string())
        );
        assert!(head.bytes().await.expect("body").is_empty());
        server.stop().await;
    }

    #[tokio::test]
    async fn the_path_rules_still_hold() {
        let (server, _) = start().await;
        for (path, code) in [
            ("/missing", StatusCode::NOT_FOUND),
            ("/boot", StatusCode::NOT_FOUND),
            ("/.hidden", StatusCode::FORBIDDEN),
        ] {
            let r = server
                .ask(Method::GET, path, &[(header::RANGE, "bytes=0-1")])
                .await;
            assert_eq!(r.status(), code, "{path}");
        }
        let r = server.ask(Method::POST, KERNEL, &[]).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        server.stop().await;
    }

    /// Reads a slice of a file through the body stream; returns the bytes and what `done` got.
    async fn through_slice(
        content: &[u8],
        start: u64,
        len: u64,
        chunks: Option<usize>,
    ) -> (Vec<u8>, u64) {
        use futures_util::StreamExt;
        use std::io::Write;
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(content).expect("write");
        file.seek(SeekFrom::Start(start)).expect("seek");
        let reported = Arc::new(AtomicU64::new(u64::MAX));
        let seen = reported.clone();
        let body = slice_body(tokio::fs::File::from_std(file), len, move |sent| {
            seen.store(sent, Ordering::SeqCst);
        });
        let mut stream = body.into_data_stream();
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => got.extend_from_slice(&bytes),
                Err(_) => break,
            }
            if chunks.is_some_and(|n| got.len() >= n * CHUNK) {
                break;
            }
        }
        drop(stream);
        (got, reported.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn the_slice_reports_the_bytes_actually_sent() {
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (got, sent) = through_slice(&content, 10, 150_000, None).await;
        assert_eq!(got, content[10..150_010]);
        assert_eq!(sent, 150_000);
        // A client that goes away after one chunk.
        let (got, sent) = through_slice(&content, 0, 150_000, Some(1)).await;
        assert_eq!(got.len(), CHUNK);
        assert_eq!(sent, CHUNK as u64);
        // A file shorter than promised: what there was, then an error.
        let (got, sent) = through_slice(&content, 199_000, 5_000, None).await;
        assert_eq!(got, content[199_000..]);
        assert_eq!(sent, 1_000);
    }
}
