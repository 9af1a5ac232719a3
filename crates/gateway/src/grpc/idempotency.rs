//! The metadata `idempotency-key` on gRPC writes, as REST's `Idempotency-Key` header
//! (`crate::idempotency`): a client that repeats a write with the same key, because its answer
//! was lost, gets the first answer again, not a second effect.
//!
//! The same rules and the same store as REST: the key is scoped to the caller (the token's
//! subject) and the method; the first answer (OK or a client's mistake) is kept, a server-side
//! failure releases the key; a create with a key gives its row an id derived from it; the same
//! key with another request, or while the first still runs, is refused (`conflict`, ABORTED,
//! naming `idempotency-key`). A call that streams its answer (`RunCommand`) is not repeated: a
//! repeat is told where the outcome is. Reads ignore the key.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use bootfleet_api::{ApiError, ErrorCode};
use bootfleet_bus::{Claim, ReplayStore};
use bootfleet_sealbox::hex;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{grpc_status, status, Api};
use crate::auth::{self, Access};
use crate::idempotency::{keyed_id, slot, valid, INVALID, REPLAYED, REUSED, RUNNING};

/// The metadata key.
pub const KEY: &str = "idempotency-key";

/// The largest answer kept (a row).
const MAX_KEPT: usize = 1 << 20;

/// The methods that write, by the start of their names; of those, the ones that stream.
const WRITES: [&str; 12] = [
    "Create",
    "Update",
    "Delete",
    "Put",
    "Set",
    "Register",
    "Power",
    "Reinstall",
    "Configure",
    "Import",
    "Report",
    "Run",
];
const STREAMED_WRITES: [&str; 1] = ["RunCommand"];

/// A kept answer: the request it answered, and the answer's headers, message and trailers.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    fingerprint: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

/// Whether the call at `path` writes, and whether it streams its answer.
fn write_kind(path: &str) -> Option<bool> {
    let method = path.rsplit('/').next().unwrap_or_default();
    if STREAMED_WRITES.contains(&method) {
        Some(true)
    } else if WRITES.iter().any(|w| method.starts_with(w)) {
        Some(false)
    } else {
        None
    }
}

/// An answer made by this layer: an error of the system as gRPC answers it.
pub(super) fn refused(e: ApiError) -> Response {
    let (parts, ()) = status(e).into_http::<()>().into_parts();
    Response::from_parts(parts, Body::empty())
}

fn conflict(message: &str) -> ApiError {
    ApiError {
        code: ErrorCode::Conflict,
        message: format!("{KEY}: {message}"),
        field: Some(KEY.to_owned()),
    }
}

/// Kept: OK, and the codes that only a client's mistake gives (REST keeps its 4xx). A code that
/// a server-side failure may give too (DEADLINE_EXCEEDED is a 408 and a 504) releases the key.
fn keeps(code: i32) -> bool {
    code == 0 || {
        let mut causes = ErrorCode::ALL.iter().filter(|c| c.grpc_code() == code);
        causes.clone().next().is_some() && causes.all(|c| c.http_status() < 500)
    }
}

fn pairs(headers: &HeaderMap, wanted: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| wanted(name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    pairs
        .iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect()
}

/// What an answer's head keeps: its content type and the status and metadata of an answer
/// with no message.
fn kept_header(name: &str) -> bool {
    name == "content-type" || name.starts_with("grpc-") || name.starts_with("bf-")
}

impl Api {
    /// Who calls: the token's subject (as REST scopes its keys), or nobody for a call that
    /// carries no token; `None` when the token is refused (the call answers that itself).
    fn key_owner(&self, headers: &HeaderMap) -> Option<String> {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(auth::bearer_token);
        // A machine token is scoped as REST scopes it (it is the machines service's to check).
        if let Some(token) = auth::MachineToken::of(Access::MachineWrite, bearer.as_deref()) {
            return Some(crate::idempotency::machine_caller(&token));
        }
        let config = &self.state.config;
        match auth::authorize(
            &config.verifier,
            Access::Read,
            config.open_node_reads,
            bearer.as_deref(),
            None,
        ) {
            Ok(Some(claims)) => Some(format!("token:{}", claims.sub)),
            Ok(None) => Some("anonymous".to_owned()),
            Err(_) => None,
        }
    }
}

/// The layer on every call of the API.
pub(super) async fn layer(State(api): State<Api>, req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(KEY) else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_owned();
    let Some(streamed) = write_kind(&path) else {
        return next.run(req).await;
    };
    let key = match value.to_str() {
        Ok(k) if valid(k) => k.to_owned(),
        _ => return refused(ApiError::invalid(KEY, INVALID)),
    };
    let Some(owner) = api.key_owner(req.headers()) else {
        return next.run(req).await;
    };
    let slot = slot(&owner, "GRPC", &path, &key);
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, api.state.body_limit()).await else {
        return refused(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the request is larger than the gateway accepts",
        ));
    };
    let mut fingerprint = Sha256::new();
    fingerprint.update(format!("{path}\n").as_bytes());
    fingerprint.update(&bytes);
    let fingerprint = hex(&fingerprint.finalize());

    let store = match api.state.replays().await {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    match store.claim(&slot).await {
        Err(e) => refused(e),
        Ok(Claim::Running) => refused(conflict(RUNNING)),
        Ok(Claim::Answered(kept)) => match serde_json::from_slice::<Kept>(&kept) {
            Ok(kept) if kept.fingerprint == fingerprint => replay(kept),
            Ok(_) => refused(conflict(REUSED)),
            Err(e) => refused(ApiError::internal(format!(
                "a kept answer cannot be read: {e}"
            ))),
        },
        Ok(Claim::Taken) => {
            let mut req = Request::from_parts(parts, Body::from(bytes));
            req.extensions_mut().insert(keyed_id(&slot));
            let response = next.run(req).await;
            let head_only = grpc_status(response.headers()).is_some();
            if streamed && !head_only {
                keep_stream(store, &slot, fingerprint).await;
                return response;
            }
            keep(store, &slot, fingerprint, response).await
        }
    }
}

async fn finish(store: &ReplayStore, slot: &str, kept: &Kept) {
    let stored = match serde_json::to_vec(kept) {
        Ok(v) => store.finish(slot, v.into()).await,
        Err(e) => Err(ApiError::internal(e.to_string())),
    };
    if let Err(e) = stored {
        tracing::warn!(error = %e.message, "a gRPC answer was not kept for its idempotency key");
        store.release(slot).await;
    }
}

/// A streamed answer cannot be kept; the request must still not run twice, so a repeat is
/// told where its outcome is.
async fn keep_stream(store: &ReplayStore, slot: &str, fingerprint: String) {
    let told = refused(conflict(
        "the first request with this key was answered with a stream; it is not run again: find its outcome with Runs/ListRuns",
    ));
    let kept = Kept {
        fingerprint,
        headers: pairs(told.headers(), kept_header),
        body: Vec::new(),
        trailers: Vec::new(),
    };
    finish(store, slot, &kept).await;
}

/// Keeps a unary answer when it is one to repeat; gives the key back otherwise.
async fn keep(
    store: &ReplayStore,
    slot: &str,
    fingerprint: String,
    response: Response,
) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await else {
        store.release(slot).await;
        return refused(ApiError::internal("the answer could not be read"));
    };
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let code = grpc_status(&parts.headers).or_else(|| grpc_status(&trailers));
    let kept = Kept {
        fingerprint,
        headers: pairs(&parts.headers, kept_header),
        body: data.to_vec(),
        trailers: pairs(&trailers, |_| true),
    };
    if code.is_some_and(keeps) && data.len() <= MAX_KEPT {
        finish(store, slot, &kept).await;
    } else {
        store.release(slot).await;
    }
    let mut response = respond(&kept);
    *response.headers_mut() = parts.headers;
    response
}

/// An answer from what was kept of it.
fn respond(kept: &Kept) -> Response {
    let trailers = header_map(&kept.trailers);
    let body = http_body_util::Full::new(bytes::Bytes::from(kept.body.clone()));
    let body = if trailers.is_empty() {
        Body::new(body)
    } else {
        Body::new(body.with_trailers(async move { Some(Ok(trailers)) }))
    };
    let mut response = Response::new(body);
    *response.headers_mut() = header_map(&kept.headers);
    response
}

fn replay(kept: Kept) -> Response {
    let mut response = respond(&kept);
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_told_from_reads_by_their_names() {
        let at = |m: &str| write_kind(&format!("/bootfleet.api.v1.Machines/{m}"));
        assert_eq!(at("CreateMachine"), Some(false));
        assert_eq!(at("DeleteMachine"), Some(false));
        assert_eq!(at("PowerMachine"), Some(false));
        assert_eq!(at("RunCommand"), Some(true));
        for write in [
            "ConfigureDistributor",
            "RunLocalNodeScript",
            "ImportMachines",
            "SetMachineSitePolicy",
            "ReportMachineInventory",
            "ReportMachineEvent",
        ] {
            assert_eq!(at(write), Some(false), "{write}");
        }
        assert_eq!(at("GetMachineScript"), None);
        assert_eq!(at("GetMachineFile"), None);
        assert_eq!(at("GetMachineSitePolicy"), None);
        assert_eq!(at("GetMachine"), None);
        assert_eq!(at("ListMachines"), None);
        assert_eq!(at("WatchMachineTimeline"), None);
        assert_eq!(at("GenerateSshKey"), None);
    }

    #[test]
    fn client_mistakes_are_kept_and_server_failures_release_the_key() {
        for kept in [0, 3, 5, 7, 10, 16] {
            assert!(keeps(kept), "{kept}");
        }
        // INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED (504 too), UNIMPLEMENTED (501 too).
        for released in [13, 14, 4, 12, 2] {
            assert!(!keeps(released), "{released}");
        }
    }
}
