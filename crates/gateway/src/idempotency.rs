//! `Idempotency-Key` on writes (POST, PUT, DELETE): a client that repeats a write with the same
//! key, because its reply was lost, gets the first answer again, not a second effect.
//!
//! - The key is scoped to the caller (the token's subject, or the machine token) and to the
//!   method and path, so two clients cannot see each other's answers.
//! - The first answer is kept for a day ([`bootfleet_bus::replays::KEPT_FOR`]) when it is a 2xx
//!   or 4xx JSON answer. A 5xx is not kept: the key is released and a repeat runs again. A create
//!   with a key gives its row an id derived from the key, so a repeat after a `504` (the outcome
//!   was unknown) finds the row the first attempt made instead of making a second one.
//! - The same key with another method, path or body is refused (409), as is a repeat while the
//!   first is still running (409, retry after it ends). A first answer that was a stream (a run's
//!   output) is not repeated either: a repeat gets 409 saying where the outcome is.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Response as HttpResponse};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bootfleet_api::{ApiError, ErrorCode};
use bootfleet_bus::Claim;
use bootfleet_sealbox::hex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::{Claims, MachineToken};
use crate::http::{read_body, HttpError};
use crate::AppState;

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// Set on an answer that repeats the first answer to its key.
pub const REPLAYED: &str = "idempotent-replayed";

/// The field errors about the header name.
const FIELD: &str = "Idempotency-Key";

/// The largest answer kept (a row; lists and downloads are not writes).
const MAX_KEPT: usize = 1 << 20;

/// The methods whose routes take a key.
pub fn applies_to(method: &axum::http::Method) -> bool {
    use axum::http::Method;
    [Method::POST, Method::PUT, Method::DELETE].contains(method)
}

/// The id a create gives its new row when the request carries a key (see [`crate::http::NewId`]).
#[derive(Clone, Copy, Debug)]
pub struct KeyedId(pub uuid::Uuid);

/// A kept answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kept {
    /// The request it answered: method, path and query, body.
    fingerprint: String,
    status: u16,
    content_type: Option<String>,
    location: Option<String>,
    body: String,
}

fn refused(message: &str) -> Response {
    HttpError(ApiError {
        code: ErrorCode::Conflict,
        message: format!("{FIELD}: {message}"),
        field: Some(FIELD.to_owned()),
    })
    .into_response()
}

/// 1 to 255 visible ASCII characters (what clients generate: UUIDs, random strings).
pub(crate) fn valid(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// What an invalid key is told.
pub(crate) const INVALID: &str = "must be 1 to 255 visible ASCII characters";
/// What a repeat is told while the first request with its key runs.
pub(crate) const RUNNING: &str =
    "a request with this key is still running; repeat it after that one has answered";
/// What another request with a used key is told.
pub(crate) const REUSED: &str =
    "was first used with another request (method, path or body); use a new key for a new request";

/// The store's slot of `key` for `caller` on `method` and `path`.
pub(crate) fn slot(caller: &str, method: &str, path: &str, key: &str) -> String {
    hex(&Sha256::digest(
        format!("{caller}\n{method}\n{path}\n{key}").as_bytes(),
    ))
}

/// The id a create with the key of `slot` gives its row.
pub(crate) fn keyed_id(slot: &str) -> KeyedId {
    let id = Sha256::digest(format!("id\n{slot}").as_bytes());
    let mut random = [0u8; 16];
    random.copy_from_slice(&id[..16]);
    KeyedId(uuid::Builder::from_random_bytes(random).into_uuid())
}

/// A machine token as the owner of its keys (its digest: the token is a secret).
pub(crate) fn machine_caller(MachineToken(token): &MachineToken) -> String {
    format!("machine:{}", hex(&Sha256::digest(token.as_bytes())))
}

/// Who asks: an operator token's subject, a machine token, or nobody (open node reads).
fn caller(req: &Request) -> String {
    if let Some(claims) = req.extensions().get::<Claims>() {
        return format!("token:{}", claims.sub);
    }
    if let Some(token) = req.extensions().get::<MachineToken>() {
        return machine_caller(token);
    }
    "anonymous".to_owned()
}

/// The middleware of every write route, behind its access check.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match value.to_str() {
        Ok(k) if valid(k) => k.to_owned(),
        _ => return HttpError(ApiError::invalid(FIELD, INVALID)).into_response(),
    };
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let slot = slot(&caller(&req), method.as_str(), req.uri().path(), &key);
    let (parts, body) = req.into_parts();
    let mut sized = Request::new(body);
    if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
        sized
            .headers_mut()
            .insert(header::CONTENT_LENGTH, len.clone());
    }
    let bytes = match read_body(sized, &state).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let mut fingerprint = Sha256::new();
    fingerprint.update(format!("{method}\n{target}\n").as_bytes());
    fingerprint.update(&bytes);
    let fingerprint = hex(&fingerprint.finalize());

    let store = match state.replays().await {
        Ok(s) => s,
        Err(e) => return HttpError(e).into_response(),
    };
    match store.claim(&slot).await {
        Err(e) => HttpError(e).into_response(),
        Ok(Claim::Running) => refused(RUNNING),
        Ok(Claim::Answered(kept)) => match serde_json::from_slice::<Kept>(&kept) {
            Ok(kept) if kept.fingerprint == fingerprint => replay(kept),
            Ok(_) => refused(REUSED),
            Err(e) => HttpError(ApiError::internal(format!(
                "a kept answer cannot be read: {e}"
            )))
            .into_response(),
        },
        Ok(Claim::Taken) => {
            let mut req = Request::from_parts(parts, Body::from(bytes));
            req.extensions_mut().insert(keyed_id(&slot));
            let response = next.run(req).await;
            keep(store, &slot, fingerprint, response).await
        }
    }
}

/// Keeps `response` as the key's answer when it is one to repeat; gives the key back otherwise.
async fn keep(
    store: &bootfleet_bus::ReplayStore,
    slot: &str,
    fingerprint: String,
    response: Response,
) -> Response {
    let header_text = |r: &Response, name: header::HeaderName| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header_text(&response, header::CONTENT_TYPE);
    let json = content_type
        .as_deref()
        .is_none_or(|t| t.starts_with("application/json"));
    if response.status().is_server_error() || (!json && !response.status().is_success()) {
        store.release(slot).await;
        return response;
    }
    if !json {
        // A streamed answer (a run's output) cannot be kept; the request must still not run
        // twice, so a repeat is told where its outcome is.
        let kept = Kept {
            fingerprint,
            status: 409,
            content_type: Some("application/json".into()),
            location: None,
            body: json!({"error": {
                "code": "conflict",
                "field": FIELD,
                "message": format!("{FIELD}: the first request with this key was answered with a stream ({}); it is not run again: find its outcome under GET /api/runs", content_type.as_deref().unwrap_or("no content type")),
            }})
            .to_string(),
        };
        match serde_json::to_vec(&kept) {
            Ok(v) => {
                if let Err(e) = store.finish(slot, v.into()).await {
                    tracing::warn!(error = %e.message, "a streamed answer's key was not recorded");
                }
            }
            Err(_) => store.release(slot).await,
        }
        return response;
    }
    let location = header_text(&response, header::LOCATION);
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_KEPT).await else {
        store.release(slot).await;
        return HttpError(ApiError::internal("the answer could not be read")).into_response();
    };
    match String::from_utf8(bytes.to_vec()) {
        Ok(text) => {
            let kept = Kept {
                fingerprint,
                status: parts.status.as_u16(),
                content_type,
                location,
                body: text,
            };
            match serde_json::to_vec(&kept) {
                Ok(v) => {
                    if let Err(e) = store.finish(slot, v.into()).await {
                        tracing::warn!(error = %e.message, "an answer was not kept for its idempotency key");
                    }
                }
                Err(_) => store.release(slot).await,
            }
        }
        Err(_) => store.release(slot).await,
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(kept: Kept) -> Response {
    let mut response = HttpResponse::new(Body::from(kept.body));
    *response.status_mut() =
        axum::http::StatusCode::from_u16(kept.status).unwrap_or(axum::http::StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, kept.content_type),
        (header::LOCATION, kept.location),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, v);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
