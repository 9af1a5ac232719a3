//! The HTTP side of errors and bodies: the JSON error envelope, the JSON body extractor that
//! names the offending field, request tracing, the request deadline.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bootfleet_api::{ApiError, ErrorCode};
use bootfleet_bus::TraceParent;
use serde::de::DeserializeOwned;
use tracing::Instrument;

/// An [`ApiError`] as an HTTP response: its code's status and the JSON envelope.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.0.envelope())).into_response();
        if self.0.code == ErrorCode::Unauthenticated {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type HttpResult<T> = Result<T, HttpError>;

/// A JSON request body. Refuses other content types (415), oversize bodies (413) and bodies
/// that do not fit the type, naming the field (400).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// A body over the limit is still read (and thrown away) up to this many bytes before the 413
/// goes out: a client that is still sending when the server answers and closes gets a reset
/// instead of the response. Beyond this, the connection is cut.
const DRAIN_CAP: usize = 16 * 1024 * 1024;

impl<T: DeserializeOwned> FromRequest<crate::AppState> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &crate::AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(HttpError(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be JSON (Content-Type: application/json)",
            )));
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonBody).map_err(HttpError)
    }
}

/// The id a create gives its new row: a new random one, or the one derived from the request's
/// `Idempotency-Key` (so a repeat after an unknown outcome finds the row the first made).
#[derive(Debug)]
pub struct NewId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for NewId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts
            .extensions
            .get::<crate::idempotency::KeyedId>()
            .map_or_else(uuid::Uuid::new_v4, |k| k.0);
        Ok(NewId(id.to_string()))
    }
}

/// Reads a request body of any type up to the gateway's limit (413 beyond it, 408 when it does
/// not arrive in time).
pub async fn read_body(req: Request, state: &crate::AppState) -> Result<Vec<u8>, HttpError> {
    use futures_util::StreamExt;
    let limit = state.body_limit();
    let too_large = || {
        HttpError(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than the gateway accepts ({limit} bytes)"),
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > DRAIN_CAP) {
        return Err(too_large());
    }
    let mut stream = req.into_body().into_data_stream();
    let mut bytes = Vec::new();
    let mut total = 0usize;
    // A client trickling its body would otherwise hold the connection and this task.
    let deadline = state.body_read_timeout();
    let read = tokio::time::timeout(deadline, async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                HttpError(ApiError::invalid("body", "cannot read the request body"))
            })?;
            total = total.saturating_add(chunk.len());
            if total > DRAIN_CAP {
                break;
            }
            if total <= limit {
                bytes.extend_from_slice(&chunk);
            }
        }
        Ok::<(), HttpError>(())
    })
    .await;
    match read {
        Ok(result) => result?,
        Err(_) => {
            return Err(HttpError(ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s",
                    deadline.as_secs_f64()
                ),
            )))
        }
    }
    if total > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// Deserializes JSON, turning serde's error into one that names the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would read an array positionally into a struct; every body of ours is an object.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => return Err(ApiError::invalid("body", "must not be empty")),
        Some(_) => return Err(ApiError::invalid("body", "must be a JSON object")),
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let full = inner.to_string();
        let message = full
            .rsplit_once(" at line ")
            .map(|(m, _)| m)
            .unwrap_or(&full)
            .to_owned();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid("body", format!("malformed json: {message}"));
        }
        let field = if path == "." || path.is_empty() {
            if message.starts_with("missing field") || message.starts_with("unknown field") {
                backticked(&message).unwrap_or("body").to_owned()
            } else {
                "body".to_owned()
            }
        } else {
            path
        };
        ApiError::invalid(&field, message)
    })?;
    de.end()
        .map_err(|_| ApiError::invalid("body", "trailing characters after the json value"))?;
    Ok(value)
}

/// The request's trace context (from its `traceparent` header, or a new trace).
#[derive(Clone, Copy, Debug)]
pub struct Trace(pub TraceParent);

/// `from_extensions!(Type, default)`: an extractor of what a middleware put in the request's
/// extensions, `default` without it (a router in a test).
macro_rules! from_extensions {
    ($ty:ty, $default:expr) => {
        impl<S: Send + Sync> FromRequestParts<S> for $ty {
            type Rejection = std::convert::Infallible;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
                Ok(parts
                    .extensions
                    .get::<$ty>()
                    .cloned()
                    .unwrap_or_else(|| $default))
            }
        }
    };
}

from_extensions!(Trace, Trace(TraceParent::new_root()));

/// The outermost part of [`edge`]: takes or starts the trace (the exported span's, when spans are
/// exported), logs each request with structured fields, counts it by route template and status,
/// and returns the trace id in `X-Trace-Id` so an operator can find the request in the logs.
async fn observed<F, Fut>(mut req: Request, run: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Set by the router before this layer runs (it wraps each route and the fallback).
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(crate::metrics::UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        %method,
        %path,
        %route,
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let trace = TraceParent::for_span(parent.as_ref(), &span);
    // Made once: the span (when the log level keeps it) and the response header share it.
    let trace_id = trace.trace_id();
    if !span.is_disabled() {
        span.record("trace_id", tracing::field::display(&trace_id));
    }
    req.extensions_mut().insert(Trace(trace));
    let started = Instant::now();
    let mut response = run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    crate::metrics::record(&route, method.as_str(), status, elapsed);
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    span.record("status", status);
    span.in_scope(|| {
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::debug!(status, elapsed_ms, "request served");
        }
    });
    if let Ok(v) = HeaderValue::try_from(trace_id) {
        response.headers_mut().insert("x-trace-id", v);
    }
    response
}

/// The longest URI (path and query) the gateway reads.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// How many headers a request may carry, and their size together (names, values, `: ` and
/// line ends).
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The refusal of a request whose head is larger than the gateway reads, in the error envelope. The
/// HTTP server's own limits lie above these (see `server.rs`), so it answers a head only when
/// one is larger still, and then without a body.
fn head_refusal(req: &Request) -> Option<Response> {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return Some(
            HttpError(ApiError::new(
                ErrorCode::UriTooLong,
                format!("the request's URI is {uri} bytes; at most {MAX_URI_BYTES} are read"),
            ))
            .into_response(),
        );
    }
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES).then(|| {
        HttpError(ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "the request has {} headers of {bytes} bytes; at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes are read",
                headers.len()
            ),
        ))
        .into_response()
    })
}

/// Every error the gateway's router answers is in the JSON envelope: axum's own refusals (a path
/// segment that is not UTF-8, a query string that does not parse) come as plain text and are
/// wrapped here, keeping their status and headers. (Refusals hyper makes before a request
/// reaches the router, such as a head that is too large, cannot be shaped.)
async fn enveloped(response: Response) -> Response {
    /// Plain-text refusals are one line; more is not read.
    const MAX_MESSAGE: usize = 4096;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let code = ErrorCode::ALL
        .into_iter()
        .find(|c| c.http_status() == status.as_u16())
        .unwrap_or(if status.is_client_error() {
            ErrorCode::InvalidArgument
        } else {
            ErrorCode::Internal
        });
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("refused")
            .to_ascii_lowercase()
    } else {
        // Lowercase, as our own messages are ("Invalid URL: ..." → "invalid URL: ...").
        let mut chars = text.chars();
        chars
            .next()
            .map(|c| c.to_lowercase().chain(chars).collect())
            .unwrap_or_default()
    };
    let wrapped = HttpError(ApiError::new(code, message)).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, wrapped.into_body())
}

/// Added to a handler's own wait on a dependency so that its error (naming what timed out)
/// is the answer rather than the gateway's generic one.
const DEADLINE_SLACK: Duration = Duration::from_secs(5);

/// When the response head of the request being handled is due. Handlers that wait on a
/// dependency longer than the gateway's request timeout on purpose (key generation, a script
/// run on a node) extend it with [`Deadline::allow`].
#[derive(Clone, Debug)]
pub struct Deadline {
    start: tokio::time::Instant,
    /// Milliseconds from `start`; shared with the middleware that waits for it.
    due_ms: Arc<AtomicU64>,
}

impl Deadline {
    fn new(timeout: Duration) -> Deadline {
        Deadline {
            start: tokio::time::Instant::now(),
            due_ms: Arc::new(AtomicU64::new(millis(timeout))),
        }
    }

    /// A deadline that never comes (a call that did not pass the middleware).
    pub fn unbounded() -> Deadline {
        Deadline::new(Duration::MAX)
    }

    /// Lets the request run until `wait` (plus a little) from now, if that is later than due.
    pub fn allow(&self, wait: Duration) {
        let due = self
            .start
            .elapsed()
            .saturating_add(wait)
            .saturating_add(DEADLINE_SLACK);
        self.due_ms.fetch_max(millis(due), Ordering::Relaxed);
    }

    fn due(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.due_ms.load(Ordering::Relaxed))
    }
}

/// Capped at a year, so that adding it to an instant cannot overflow (no wait is that long).
fn millis(d: Duration) -> u64 {
    const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .min(YEAR_MS)
}

// Without the middleware, extending changes nothing.
from_extensions!(Deadline, Deadline::unbounded());

/// A request body that records whether its reader is waiting for the client, so that a
/// deadline passing while the body trickles in is the client's 408, not our 504.
struct Watched {
    inner: axum::body::Body,
    waiting: Arc<AtomicBool>,
}

impl hyper::body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.waiting.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Bounds the time until a request's response head is ready, `timeout` unless a handler
/// extended its [`Deadline`]. A response that is ready is not held to it:
/// a download streams its body for as long as it takes. On expiry the handler is dropped and
/// the answer is 504 `timeout`, or 408 `request_timeout` when the handler was waiting for
/// the client's body.
async fn deadline<F, Fut>(timeout: Duration, req: Request, run: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    bounded(timeout, req, run)
        .await
        .unwrap_or_else(|e| HttpError(e).into_response())
}

/// The gateway's router behind, from the outside in: `observed` (trace, log, metrics),
/// `deadline` (the request timeout is the state), the `head_refusal` checks and the
/// `enveloped` errors. One middleware rather than four layers: each layer clones and boxes the
/// stack below it on every request.
pub async fn edge(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    observed(req, |req| {
        deadline(timeout, req, |req| async move {
            match head_refusal(&req) {
                Some(refused) => refused,
                None => enveloped(next.run(req).await).await,
            }
        })
    })
    .await
}

/// The rest of the stack's response to `req` within `timeout`, unless a handler extended its
/// [`Deadline`] (REST's [`deadline`], and gRPC's): on expiry the handler is dropped and the
/// error says whose the delay was (`request_timeout` while the body was awaited, else
/// `timeout`).
pub(crate) async fn bounded<F, Fut>(
    timeout: Duration,
    req: Request,
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let deadline = Deadline::new(timeout);
    let waiting = Arc::new(AtomicBool::new(false));
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(deadline.clone());
    let body = axum::body::Body::new(Watched {
        inner: body,
        waiting: waiting.clone(),
    });
    let mut handled = pin!(run(Request::from_parts(parts, body)));
    loop {
        let due = deadline.due();
        match tokio::time::timeout_at(due, handled.as_mut()).await {
            Ok(response) => return Ok(response),
            // A handler extended it meanwhile.
            Err(_) if deadline.due() > due => continue,
            Err(_) => break,
        }
    }
    let allowed = (deadline.due() - deadline.start).as_secs_f64();
    if waiting.load(Ordering::Relaxed) {
        return Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {allowed} s"),
        ));
    }
    tracing::warn!(
        allowed_secs = allowed,
        "no response within the request deadline"
    );
    Err(ApiError::new(
        ErrorCode::Timeout,
        format!("no response could be made within {allowed} s"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfleet_api::rest::{ScriptInput, SshKeyInput};

    fn field_of<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> Option<String> {
        parse_json::<T>(body.as_bytes()).expect_err(body).field
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of::<ScriptInput>("{}").as_deref(), Some("text"));
        assert_eq!(
            field_of::<ScriptInput>(r#"{"text": 5}"#).as_deref(),
            Some("text")
        );
        assert_eq!(
            field_of::<ScriptInput>(r#"{"text": "a", "txt": "b"}"#).as_deref(),
            Some("txt")
        );
        assert_eq!(
            field_of::<SshKeyInput>(r#"{"text": "a"}"#).as_deref(),
            Some("artifactId")
        );
        assert_eq!(
            field_of::<SshKeyInput>(r#"{"text": "a", "artifactId": []}"#).as_deref(),
            Some("artifactId")
        );
        assert_eq!(
            field_of::<ScriptInput>(r#"{"text": "a""#).as_deref(),
            Some("body")
        );
        assert_eq!(field_of::<ScriptInput>(r#"[]"#).as_deref(), Some("body"));
        assert_eq!(
            field_of::<ScriptInput>(r#"{"text": "a"} x"#).as_deref(),
            Some("body")
        );
        let ok: ScriptInput = parse_json(br##"{"text": "#!ipxe"}"##).expect("valid body");
        assert_eq!(ok.text, "#!ipxe");
    }
}
