//! How to answer a request for a file-like representation, as pure code: request method and
//! headers in, status, headers and the byte range to send out. No I/O and no framework, so
//! every server in the workspace that streams stored bytes (the distributor's HTTP boot, the
//! gateway's artifacts) answers `Range` and the conditional headers the same way, and the
//! rules are tested once.
//!
//! What [`decide`] answers, in RFC 9110's order of evaluation (§13.2.2):
//!
//! 1. A method other than GET or HEAD: 405 with `Allow: GET, HEAD`.
//! 2. `If-None-Match` naming the representation (weak comparison, `*`, lists): 304.
//!    Only without `If-None-Match`, `If-Modified-Since` at or after `Last-Modified`: 304.
//! 3. On GET, a `Range` of one byte range, unless an `If-Range` does not match: 206 with that
//!    range, or 416 with `Content-Range: bytes */len` if the range selects no byte.
//! 4. Otherwise: 200 with the whole representation.
//!
//! Choices, all within RFC 9110 (a server may always ignore `Range` and answer 200):
//!
//! - Several ranges get the whole representation with 200, not `multipart/byteranges`. Boot
//!   firmware, iPXE and download resumers ask for one range; multipart would turn a body that is
//!   one slice of a file (seek, then stream) into generated parts with their own headers, and
//!   many small or overlapping ranges are a known way to make a server work hard for nothing.
//! - A malformed `Range`, or a unit other than `bytes`, is ignored: 200.
//! - HEAD ignores `Range` (§14.2 defines range handling for GET only) and otherwise carries the
//!   headers a GET would, `Content-Length` included.
//! - An empty representation ignores `Range` (200 with no bytes): it has no byte to select,
//!   and some clients send a `Range` with every request just to cap the size.
//! - `If-Match` and `If-Unmodified-Since` are not evaluated: they guard changes, and nothing
//!   served this way is changed through it.
//! - Dates are compared in whole seconds, as `Last-Modified` is sent, with no clock: a date in
//!   the future is taken as given.
//!
//! A streaming handler:
//!
//! ```
//! use bootfleet_http_range::{decide, ETag, Representation};
//! use http::{header, HeaderMap, Method, StatusCode};
//!
//! let mut request = HeaderMap::new();
//! request.insert(header::RANGE, "bytes=-4".parse().expect("header"));
//! let file = b"0123456789";
//! let representation = Representation {
//!     len: file.len() as u64,
//!     etag: ETag::from_digest(&format!("sha256:{}", "ab".repeat(32))).expect("digest"),
//!     last_modified: None,
//! };
//! let answer = decide(&Method::GET, &request, &representation);
//! assert_eq!(answer.status, StatusCode::PARTIAL_CONTENT);
//! assert_eq!(answer.headers[header::CONTENT_RANGE], "bytes 6-9/10");
//! assert_eq!(answer.headers[header::CONTENT_LENGTH], "4");
//! // The handler sets status and headers, then streams exactly `answer.body`: seek to its
//! // start, send its length. `None` means no body (HEAD, 304, 416).
//! let body = answer.body.expect("a body");
//! assert_eq!(&file[body.start as usize..body.end as usize], b"6789");
//! ```

mod date;
mod etag;
mod range;

use std::ops::Range;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

pub use etag::{ETag, InvalidETag};

/// What is being served: the facts about its bytes that the answer depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Representation {
    /// Its length in bytes.
    pub len: u64,
    /// Its strong entity tag.
    pub etag: ETag,
    /// When it last changed, if known: sent as `Last-Modified` (whole seconds) and compared
    /// with `If-Modified-Since` and a date in `If-Range`.
    pub last_modified: Option<SystemTime>,
}

/// How to answer: set `status` and `headers` on the response, then send `body`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    /// `Accept-Ranges`, `ETag`, `Last-Modified`, `Content-Length` and `Content-Range` as they
    /// apply; `Content-Type` and the rest are the caller's.
    pub headers: HeaderMap,
    /// The bytes of the representation to send, never empty except for an empty
    /// representation's 200. `None`: no body from the representation (HEAD, 304, 405, 416),
    /// though a 405 or 416 may carry a short message of the caller's.
    pub body: Option<Range<u64>>,
}

/// Decides how to answer `method` with these request `headers` for `representation`. Never
/// panics, whatever bytes the headers hold; header values that do not parse are ignored as RFC
/// 9110 asks.
pub fn decide(method: &Method, headers: &HeaderMap, representation: &Representation) -> Answer {
    let get = *method == Method::GET;
    if !get && *method != Method::HEAD {
        let mut out = HeaderMap::new();
        out.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Answer {
            status: StatusCode::METHOD_NOT_ALLOWED,
            headers: out,
            body: None,
        };
    }
    let len = representation.len;
    let last_modified = representation.last_modified.and_then(date::seconds);
    let mut out = HeaderMap::new();
    insert(&mut out, header::ETAG, representation.etag.as_str());
    if not_modified(headers, &representation.etag, last_modified) {
        // A 304 repeats the validator a 200 would carry (RFC 9110 §15.4.5) and, having no
        // content, no Content-Length.
        return Answer {
            status: StatusCode::NOT_MODIFIED,
            headers: out,
            body: None,
        };
    }
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(text) = last_modified.and_then(date::format) {
        insert(&mut out, header::LAST_MODIFIED, &text);
    }
    let spec = match single(headers, &header::RANGE).map(|value| range::parse(value.as_bytes())) {
        Some(range::Request::One(spec))
            if get && len > 0 && if_range_holds(headers, &representation.etag, last_modified) =>
        {
            Some(spec)
        }
        // No Range; several Range lines, as malformed as one bad line; several ranges; a
        // malformed one; or one to ignore (HEAD, empty, If-Range mismatch): the whole thing.
        _ => None,
    };
    match spec.map(|spec| spec.resolve(len)) {
        Some(Some(body)) => {
            let range = format!("bytes {}-{}/{len}", body.start, body.end - 1);
            insert(&mut out, header::CONTENT_RANGE, &range);
            out.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(body.end - body.start),
            );
            Answer {
                status: StatusCode::PARTIAL_CONTENT,
                headers: out,
                body: Some(body),
            }
        }
        Some(None) => {
            insert(&mut out, header::CONTENT_RANGE, &format!("bytes */{len}"));
            Answer {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                headers: out,
                body: None,
            }
        }
        None => {
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            Answer {
                status: StatusCode::OK,
                headers: out,
                body: get.then_some(0..len),
            }
        }
    }
}

/// Whether the client's copy is current, by `If-None-Match`, or failing that by
/// `If-Modified-Since`.
fn not_modified(headers: &HeaderMap, etag: &ETag, last_modified: Option<i64>) -> bool {
    let mut lines = headers.get_all(header::IF_NONE_MATCH).iter().peekable();
    if lines.peek().is_some() {
        // The lines form one list: one malformed line spoils it, and a spoilt precondition
        // must not claim the client is current.
        let mut hit = false;
        for line in lines {
            match etag::none_match_line(line.as_bytes(), etag) {
                Some(this) => hit |= this,
                None => return false,
            }
        }
        return hit;
    }
    // The tag is the better validator: a date is looked at only without one (RFC 9110
    // §13.1.3). Seconds compare because Last-Modified was sent in seconds.
    let since = single(headers, &header::IF_MODIFIED_SINCE)
        .and_then(|value| value.to_str().ok())
        .and_then(date::parse);
    matches!((last_modified, since), (Some(modified), Some(since)) if modified <= since)
}

/// Whether a `Range` may be honoured: no `If-Range`, or one naming the representation (a
/// strong tag match, or exactly its Last-Modified date). A mismatch means the client holds other
/// bytes, so it gets the whole representation instead of a piece that would not fit.
fn if_range_holds(headers: &HeaderMap, etag: &ETag, last_modified: Option<i64>) -> bool {
    let mut lines = headers.get_all(header::IF_RANGE).iter();
    let (Some(value), None) = (lines.next(), lines.next()) else {
        return !headers.contains_key(header::IF_RANGE);
    };
    if let Some(matches) = etag::if_range_tag(value.as_bytes(), etag) {
        return matches;
    }
    let date = value.to_str().ok().and_then(date::parse);
    matches!((date, last_modified), (Some(date), Some(modified)) if date == modified)
}

/// The value of a header sent exactly once; a repeated single-value header is malformed.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// Inserts a header built here; every such value is printable ASCII, so none is ever dropped.
fn insert(headers: &mut HeaderMap, name: HeaderName, text: &str) {
    if let Ok(value) = HeaderValue::from_str(text) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests;
