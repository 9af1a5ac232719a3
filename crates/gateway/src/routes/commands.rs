//! `/api/commands`: the command library, by name: a default script and per-rank variants, and
//! the built-in power commands (`power-on`, `power-off`, `power-cycle`, `power-status`), which
//! cannot be changed. Runs of a command are in `runs.rs`.

use axum::http::Method;
use axum::routing;
use axum::Extension;
use bootfleet_api::actions::{ops, CommandInput, CommandRow};
use bootfleet_api::proto::ActionsCall;

use super::actions::{create, put, Writes, NAME};
use super::relay::{by_key, list, op, Name};
use super::{list_query, route, Body, BodySchema, RouteDef, CREATED_BY_NAME};
use crate::auth::Access;

const WRITES: Writes = Writes {
    create: ops::COMMAND_CREATE,
    put: ops::COMMAND_PUT,
    path: "commands",
};

pub(super) fn routes() -> Vec<RouteDef> {
    let c = "commands";
    vec![
        route(
            Method::GET,
            "/api/commands",
            Access::Read,
            "listCommands",
            "List commands, the built-in power commands included (search name, summary, description)",
            c,
            list_query(bootfleet_api::list::fields::COMMANDS),
            None,
            200,
            Body::Json(BodySchema::page_of::<CommandRow>()),
            routing::get(list::<ActionsCall>).layer(op(ops::COMMAND_LIST)),
        ),
        route(
            Method::POST,
            "/api/commands",
            Access::Write,
            "createCommand",
            "A command: a default `script` and `variants` per rank (a machine runs the variant of its first rank that has one). 409 when the name is taken or is a built-in's",
            c,
            vec![],
            Some(BodySchema::requiring::<CommandInput>(&["name"])),
            201,
            Body::json::<CommandRow>(),
            routing::post(create::<CommandInput>).layer(Extension(WRITES)),
        ),
        route(
            Method::GET,
            "/api/commands/{name}",
            Access::Read,
            "getCommand",
            "One command",
            c,
            vec![NAME],
            None,
            200,
            Body::json::<CommandRow>(),
            routing::get(by_key::<ActionsCall, Name>).layer(op(ops::COMMAND_GET)),
        ),
        route(
            Method::PUT,
            "/api/commands/{name}",
            Access::Write,
            "putCommand",
            "Create (201) or replace (200) the command of this name; 409 for a built-in",
            c,
            vec![NAME],
            Some(BodySchema::of::<CommandInput>()),
            200,
            Body::json::<CommandRow>(),
            routing::put(put::<CommandInput>).layer(Extension(WRITES)),
        )
        .also(201, CREATED_BY_NAME),
        route(
            Method::DELETE,
            "/api/commands/{name}",
            Access::Write,
            "deleteCommand",
            "Delete a command (409 for a built-in); answers with the deleted row",
            c,
            vec![NAME],
            None,
            200,
            Body::json::<CommandRow>(),
            routing::delete(by_key::<ActionsCall, Name>).layer(op(ops::COMMAND_DELETE)),
        ),
    ]
}
