//! HTTP boot: the cache, read-only, over HTTP, for UEFI HTTP boot clients and iPXE. The same
//! rules as TFTP decide what may be served (`tftp::normalize`, then the cache's symlink check);
//! files are streamed, so a large kernel or initrd costs no memory.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bootfleet_netboot::tftp;
use tokio::io::AsyncReadExt;

use crate::cache::{Cache, OpenError};
use crate::proxy_dhcp::Reporting;

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

async fn serve_file(State(state): State<HttpState>, req: Request) -> Response {
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
    let (file, len) = match state.cache.open(&path.to_path_buf()) {
        Ok(f) => f,
        Err(OpenError::Escape) => return plain(StatusCode::FORBIDDEN, "file name not allowed\n"),
        Err(OpenError::NotFound | OpenError::NotAFile) => {
            return plain(StatusCode::NOT_FOUND, "not found\n")
        }
        Err(OpenError::Io(e)) => {
            tracing::warn!(file = path.as_str(), error = %e, "cannot read a cached file");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
        }
    };
    state
        .reporting
        .events
        .emit(bootfleet_api::proto::BootEvent {
            kind: "http_served".into(),
            file: path.as_str().to_owned(),
            bytes: len,
            ..Default::default()
        });
    tracing::info!(
        event = "http_served",
        file = path.as_str(),
        bytes = len,
        "file served over http"
    );
    let body = if req.method() == Method::HEAD {
        Body::empty()
    } else {
        let file = tokio::fs::File::from_std(file);
        Body::from_stream(futures_util::stream::unfold(file, |mut file| async move {
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(buf), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        }))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// Serves the cache over HTTP on `listener` until `shutdown` changes.
pub async fn run(
    listener: tokio::net::TcpListener,
    cache: Cache,
    reporting: Reporting,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let app = axum::Router::new()
        .fallback(serve_file)
        .with_state(HttpState { cache, reporting });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "http boot stopped");
    }
}
