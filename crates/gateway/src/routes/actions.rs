//! What the routes of the `actions` service share (`groups.rs`, `commands.rs`, `runs.rs`): the
//! bodies travel as JSON in an `ActionsCall` (see `relay.rs`), with the operator's subject and
//! role; the service validates them and answers JSON (`ActionsReply`).

use axum::extract::{Extension, Path};
use axum::response::Response;
use axum::routing::{self, MethodRouter};
use bootfleet_api::actions::{CommandInput, GroupInput};
use bootfleet_api::proto::ActionsCall;
use serde::Serialize;

use super::relay::{by_key, list, op, Name, Relay};
use super::{OfEach, Param, ParamType};
use crate::http::{HttpResult, JsonBody};
use crate::AppState;

pub(super) const NAME: Param = Param {
    name: "name",
    in_path: true,
    required: true,
    ty: ParamType::Pattern(bootfleet_api::rules::word_pattern),
    description: "The name (letters, digits, `_`, `-`, `.`).",
};

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

impl Writes {
    /// The handlers of the registry's routes (see `named_routes`) whose bodies are `T`: these
    /// writes, and its list, get and delete operations relayed.
    pub(super) fn handlers<T: NamedBody>(
        self,
        list_op: &'static str,
        get_op: &'static str,
        delete_op: &'static str,
    ) -> OfEach<MethodRouter<AppState>> {
        OfEach {
            list: routing::get(list::<ActionsCall>).layer(op(list_op)),
            create: routing::post(create::<T>).layer(Extension(self)),
            get: routing::get(by_key::<ActionsCall, Name>).layer(op(get_op)),
            put: routing::put(put::<T>).layer(Extension(self)),
            delete: routing::delete(by_key::<ActionsCall, Name>).layer(op(delete_op)),
        }
    }
}

/// `POST /api/<path>`: 201 with `location`.
pub(super) async fn create<T: NamedBody>(
    r: Relay,
    Extension(w): Extension<Writes>,
    JsonBody(body): JsonBody<T>,
) -> HttpResult<Response> {
    let location = body.name().map(|n| format!("/api/{}/{n}", w.path));
    let call = r.call_with::<ActionsCall, T>(String::new(), &body)?;
    r.send(w.create, call, location).await
}

/// `PUT /api/<path>/{name}`: creates (201) or replaces (200).
pub(super) async fn put<T: NamedBody>(
    r: Relay,
    Extension(w): Extension<Writes>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<T>,
) -> HttpResult<Response> {
    bootfleet_api::actions::name("name", &name)?;
    let location = format!("/api/{}/{name}", w.path);
    let call = r.call_with::<ActionsCall, T>(name, &body)?;
    r.send(w.put, call, Some(location)).await
}
