//! Every gRPC call counted when it ends, by service, method and status code, with its duration
//! (`bootfleet_grpc_requests_total`, `bootfleet_grpc_request_duration_seconds`). A call ends
//! with its status: in the answer's head when it has no message (an error), else in the
//! trailers after the last message; a client that hangs up first is `CANCELLED`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::Frame;

use super::{grpc_status, SERVICES};

/// The gRPC status codes by number, as gRPC names them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The label of a service or method that is not the API's (a client's guess).
const UNKNOWN: &str = "unknown";

const REFLECTION: &str = "grpc.reflection.v1.ServerReflection";

/// A call being answered; counted once, when it ends (or is dropped unended: `CANCELLED`).
struct Timer {
    service: &'static str,
    method: String,
    started: Instant,
    ended: bool,
}

impl Timer {
    fn end(&mut self, code: Option<i32>) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let code = code
            .and_then(|c| usize::try_from(c).ok())
            .and_then(|c| CODES.get(c).copied())
            .unwrap_or("UNKNOWN");
        // A method the service does not have is a client's string: not a label.
        let method = if code == "UNIMPLEMENTED" || self.service == UNKNOWN {
            UNKNOWN
        } else {
            &self.method
        };
        crate::metrics::record_grpc(self.service, method, code, self.started.elapsed());
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.end(Some(1));
    }
}

/// The answer's body, ending the timer at its trailers.
struct Observed {
    inner: Body,
    timer: Timer,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.timer.end(grpc_status(trailers));
                }
            }
            Poll::Ready(Some(Err(_))) => this.timer.end(Some(13)),
            Poll::Ready(None) => this.timer.end(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The service and method of a call's path (`/bootfleet.api.v1.Scripts/CreateScript`).
fn labels(path: &str) -> (&'static str, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    match SERVICES
        .iter()
        .chain([&REFLECTION])
        .find(|s| **s == service)
    {
        Some(known) => (known, method.to_owned()),
        None => (UNKNOWN, UNKNOWN.to_owned()),
    }
}

/// The layer on every call of the API.
pub(super) async fn layer(req: Request, next: Next) -> Response {
    let (service, method) = labels(req.uri().path());
    let mut timer = Timer {
        service,
        method,
        started: Instant::now(),
        ended: false,
    };
    let response = next.run(req).await;
    if let Some(code) = grpc_status(response.headers()) {
        timer.end(Some(code));
        return response;
    }
    let (parts, inner) = response.into_parts();
    Response::from_parts(parts, Body::new(Observed { inner, timer }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_s_services_are_labels() {
        assert_eq!(
            labels("/bootfleet.api.v1.Scripts/CreateScript"),
            ("bootfleet.api.v1.Scripts", "CreateScript".to_owned())
        );
        assert_eq!(labels("/evil.Service/x").0, UNKNOWN);
        assert_eq!(labels("/").0, UNKNOWN);
        assert_eq!(CODES[5], "NOT_FOUND");
        assert_eq!(CODES[16], "UNAUTHENTICATED");
    }
}
