//! What the routes of the `actions` service share (`groups.rs`, `commands.rs`, `runs.rs`): the
//! bodies travel as JSON in an `ActionsCall`, with the operator's subject and role; the service
//! validates them and answers JSON (`ActionsReply`).

use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::Response;
use bootfleet_api::actions::{CommandInput, GroupInput};
use bootfleet_api::{proto, subjects, ApiError};
use serde::Serialize;

use super::{json_answer, list_params, Param, ParamType};
use crate::auth::Claims;
use crate::http::{HttpResult, JsonBody, Trace};
use crate::AppState;

pub(super) const NAME: Param = Param {
    name: "name",
    in_path: true,
    required: true,
    ty: ParamType::Pattern(bootfleet_api::rules::word_pattern),
    description: "The name (letters, digits, `_`, `-`, `.`).",
};

/// A call of the `actions` service on behalf of the operator whose token this is.
pub(super) fn call(claims: &Claims, id: String) -> proto::ActionsCall {
    proto::ActionsCall {
        id,
        actor: claims.sub.clone(),
        role: claims.role.to_string(),
        ..Default::default()
    }
}

pub(super) fn to_json<T: Serialize>(body: &T) -> Result<String, ApiError> {
    serde_json::to_string(body).map_err(|e| ApiError::internal(format!("cannot encode: {e}")))
}

/// Sends `call` to the service's `op` and answers its JSON; 201 with `location` for a new row.
pub(super) async fn send(
    s: &AppState,
    t: &Trace,
    op: &str,
    call: proto::ActionsCall,
    location: Option<String>,
) -> HttpResult<Response> {
    let reply: proto::ActionsReply = s
        .bus
        .request(&t.0, &subjects::actions_op(op), &call)
        .await?;
    Ok(json_answer(reply.body, reply.created, location))
}

/// A list (the operation is in the extensions).
pub(super) async fn list(
    State(s): State<AppState>,
    Extension(op): Extension<&'static str>,
    t: Trace,
    Extension(claims): Extension<Claims>,
    RawQuery(q): RawQuery,
) -> HttpResult<Response> {
    let params = list_params(q.as_deref())?;
    let mut call = call(&claims, String::new());
    call.list = Some(params.to_proto());
    send(&s, &t, op, call, None).await
}

/// A route that names a row by name and sends no body (the operation is in the extensions).
pub(super) async fn by_name(
    State(s): State<AppState>,
    Extension(op): Extension<&'static str>,
    t: Trace,
    Extension(claims): Extension<Claims>,
    Path(name): Path<String>,
) -> HttpResult<Response> {
    bootfleet_api::actions::name("name", &name)?;
    send(&s, &t, op, call(&claims, name), None).await
}

/// A body that may name its row (`name`): groups and commands.
pub(super) trait NamedBody:
    Serialize + serde::de::DeserializeOwned + Send + 'static
{
    fn name(&self) -> Option<&str>;
}

impl NamedBody for GroupInput {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl NamedBody for CommandInput {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// The writes of a registry keyed by name: its operations and its path (`/api/<path>/<name>`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Writes {
    pub create: &'static str,
    pub put: &'static str,
    pub path: &'static str,
}

/// `POST /api/<path>`: 201 with `location`.
pub(super) async fn create<T: NamedBody>(
    State(s): State<AppState>,
    Extension(w): Extension<Writes>,
    t: Trace,
    Extension(claims): Extension<Claims>,
    JsonBody(body): JsonBody<T>,
) -> HttpResult<Response> {
    let location = body.name().map(|n| format!("/api/{}/{n}", w.path));
    let mut call = call(&claims, String::new());
    call.body = to_json(&body)?;
    send(&s, &t, w.create, call, location).await
}

/// `PUT /api/<path>/{name}`: creates (201) or replaces (200).
pub(super) async fn put<T: NamedBody>(
    State(s): State<AppState>,
    Extension(w): Extension<Writes>,
    t: Trace,
    Extension(claims): Extension<Claims>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<T>,
) -> HttpResult<Response> {
    bootfleet_api::actions::name("name", &name)?;
    let location = format!("/api/{}/{name}", w.path);
    let mut call = call(&claims, name);
    call.body = to_json(&body)?;
    send(&s, &t, w.put, call, Some(location)).await
}
