//! The relay to services that take the REST bodies as JSON and validate them themselves
//! (`machines`, `actions`): a call carries the body, the list query or the row's id or name, and
//! who calls; the answer is the service's JSON (or text) as it is.

use std::time::Duration;

use axum::extract::{Extension, FromRequestParts, Path, RawQuery};
use axum::http::request::Parts;
use axum::response::Response;
use bootfleet_api::{proto, subjects, ApiError};
use bootfleet_bus::Bus;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{json_answer, list_params, path_id, raw_text};
use crate::auth::{Claims, MachineToken};
use crate::http::{HttpResult, JsonBody, Trace};
use crate::AppState;

/// Who calls: an operator's claims or a machine's token (from the access check).
#[derive(Clone, Debug, Default)]
pub(crate) struct Caller {
    pub actor: String,
    pub role: String,
    pub machine_token: String,
}

/// A service's call message and what its answer becomes.
pub(crate) trait ServiceCall: prost::Message + Sized {
    type Reply: prost::Message + Default;

    /// The subject of the service's operation `op`.
    fn subject(op: &str) -> String;

    /// A call about row `id` (`""` for none) on behalf of `caller`.
    fn new(caller: &Caller, id: String) -> Self;

    fn set_body(&mut self, body: String);

    fn set_list(&mut self, list: proto::ListRequest);

    /// The service's answer as HTTP: 201 with `location` when it made a row.
    fn answer(reply: Self::Reply, location: Option<String>) -> Response;

    /// The answer's body (JSON or text) and whether it made a row (gRPC's `JsonRow`).
    fn into_body(reply: Self::Reply) -> (String, bool);
}

/// `service_call!(Call => Reply, subject, [caller fields], |reply, location| answer)`: the call
/// messages are alike (`id`, `actor`, `role`, `body`, `list`, and what else of the caller they
/// carry); their replies differ.
macro_rules! service_call {
    (
        $call:ident => $reply:ident,
        $subject:path,
        [$($field:ident),*],
        |$r:ident, $location:ident| $answer:expr
    ) => {
        impl ServiceCall for proto::$call {
            type Reply = proto::$reply;

            fn subject(op: &str) -> String {
                $subject(op)
            }

            fn new(caller: &Caller, id: String) -> Self {
                proto::$call {
                    id,
                    actor: caller.actor.clone(),
                    role: caller.role.clone(),
                    $($field: caller.$field.clone(),)*
                    ..Default::default()
                }
            }

            fn set_body(&mut self, body: String) {
                self.body = body;
            }

            fn set_list(&mut self, list: proto::ListRequest) {
                self.list = Some(list);
            }

            fn answer($r: proto::$reply, $location: Option<String>) -> Response {
                $answer
            }

            fn into_body(reply: proto::$reply) -> (String, bool) {
                (reply.body, reply.created)
            }
        }
    };
}

service_call!(
    MachinesCall => MachinesReply,
    subjects::machines_op,
    [machine_token],
    |reply, location| {
        if reply.content_type == "text/plain" {
            return raw_text(reply.body);
        }
        json_answer(reply.body, reply.created, location)
    }
);

service_call!(
    ActionsCall => ActionsReply,
    subjects::actions_op,
    [],
    |reply, location| json_answer(reply.body, reply.created, location)
);

/// What a relaying handler takes from its request: the bus, the trace and who calls.
#[derive(Clone)]
pub(crate) struct Relay {
    pub bus: Bus,
    pub trace: Trace,
    pub caller: Caller,
}

impl FromRequestParts<AppState> for Relay {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        let Ok(trace) = Trace::from_request_parts(parts, s).await;
        let mut caller = Caller::default();
        if let Some(claims) = parts.extensions.get::<Claims>() {
            caller.actor.clone_from(&claims.sub);
            caller.role = claims.role.to_string();
        }
        if let Some(MachineToken(token)) = parts.extensions.get::<MachineToken>() {
            caller.machine_token.clone_from(token);
        }
        Ok(Relay {
            bus: s.bus.clone(),
            trace,
            caller,
        })
    }
}

impl Relay {
    /// A call about row `id` (`""` for none) on behalf of the caller.
    pub fn call<C: ServiceCall>(&self, id: String) -> C {
        C::new(&self.caller, id)
    }

    /// A call about row `id` that carries `body` as JSON.
    pub fn call_with<C: ServiceCall, T: Serialize>(
        &self,
        id: String,
        body: &T,
    ) -> Result<C, ApiError> {
        let mut call = self.call::<C>(id);
        call.set_body(to_json(body)?);
        Ok(call)
    }

    /// This relay with one attempt of up to `wait` per request (an operation slower than the
    /// bus's default timeout).
    pub fn waiting(&self, wait: Duration) -> Relay {
        Relay {
            bus: self.bus.with_timeout(wait, 1),
            ..self.clone()
        }
    }

    /// Sends `call` to the service's `op`: its answer.
    pub async fn ask<C: ServiceCall>(&self, op: &str, call: C) -> Result<C::Reply, ApiError> {
        self.bus
            .request(&self.trace.0, &C::subject(op), &call)
            .await
    }

    /// Sends `call` to the service's `op` and answers as it says.
    pub async fn send<C: ServiceCall>(
        &self,
        op: &str,
        call: C,
        location: Option<String>,
    ) -> HttpResult<Response> {
        Ok(C::answer(self.ask(op, call).await?, location))
    }
}

pub(super) fn to_json<T: Serialize>(body: &T) -> Result<String, ApiError> {
    serde_json::to_string(body).map_err(|e| ApiError::internal(format!("cannot encode: {e}")))
}

/// A list (the operation is in the extensions).
pub(super) async fn list<C: ServiceCall>(
    r: Relay,
    Extension(op): Extension<&'static str>,
    RawQuery(q): RawQuery,
) -> HttpResult<Response> {
    let mut call = r.call::<C>(String::new());
    call.set_list(list_params(q.as_deref())?.to_proto());
    r.send(op, call, None).await
}

/// How a path names its row, checked before anything is sent.
pub(crate) trait RowKey {
    fn check(value: String) -> HttpResult<String>;
}

/// By id (a UUID).
pub(crate) struct Id;

impl RowKey for Id {
    fn check(value: String) -> HttpResult<String> {
        path_id(&value)
    }
}

/// By name (letters, digits, `_`, `-`, `.`).
pub(crate) struct Name;

impl RowKey for Name {
    fn check(value: String) -> HttpResult<String> {
        bootfleet_api::machines::word("name", &value)?;
        Ok(value)
    }
}

/// By a site's artifact id (the path's `artifactId`).
pub(crate) struct Site;

impl RowKey for Site {
    fn check(value: String) -> HttpResult<String> {
        bootfleet_api::validate::artifact_id("artifactId", &value)?;
        Ok(value)
    }
}

/// A route that names a row (by `K`) and sends no body (the operation is in the extensions).
pub(super) async fn by_key<C: ServiceCall, K: RowKey>(
    r: Relay,
    Extension(op): Extension<&'static str>,
    Path(key): Path<String>,
) -> HttpResult<Response> {
    let call = r.call::<C>(K::check(key)?);
    r.send(op, call, None).await
}

/// A JSON body about the row the path names (by `K`; the operation is in the extensions).
pub(super) async fn json_by_key<C, K, T>(
    r: Relay,
    Extension(op): Extension<&'static str>,
    Path(key): Path<String>,
    JsonBody(body): JsonBody<T>,
) -> HttpResult<Response>
where
    C: ServiceCall,
    K: RowKey,
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let call = r.call_with::<C, T>(K::check(key)?, &body)?;
    r.send(op, call, None).await
}

/// The operation of a route, for the relay handlers that take it from the extensions.
pub(super) fn op(op: &'static str) -> Extension<&'static str> {
    Extension(op)
}
