//! `/api/groups`: named sets of machines (explicit members, a rank/metadata selector, and the
//! machines whose own `groups` name the group), kept by the `actions` service.

use axum::http::Method;
use axum::routing;
use axum::Extension;
use bootfleet_api::actions::{ops, GroupInput, GroupMachines, GroupRow};
use bootfleet_api::proto::ActionsCall;

use super::actions::{create, put, Writes, NAME};
use super::relay::{by_key, list, op, Name};
use super::{list_query, route, Body, BodySchema, RouteDef, CREATED_BY_NAME};
use crate::auth::Access;

const WRITES: Writes = Writes {
    create: ops::GROUP_CREATE,
    put: ops::GROUP_PUT,
    path: "groups",
};

pub(super) fn routes() -> Vec<RouteDef> {
    let g = "groups";
    vec![
        route(
            Method::GET,
            "/api/groups",
            Access::Read,
            "listGroups",
            "List groups of machines (search name, description, members)",
            g,
            list_query(bootfleet_api::list::fields::GROUPS),
            None,
            200,
            Body::Json(BodySchema::page_of::<GroupRow>()),
            routing::get(list::<ActionsCall>).layer(op(ops::GROUP_LIST)),
        ),
        route(
            Method::POST,
            "/api/groups",
            Access::Write,
            "createGroup",
            "A group: explicit `members` (machine ids or names; an unknown one is refused naming `members`) and/or a `match` selector (`ranks`: any of them, `metadata`: all pairs); machines whose own `groups` name it belong too. 409 when the name is taken",
            g,
            vec![],
            Some(BodySchema::requiring::<GroupInput>(&["name"])),
            201,
            Body::json::<GroupRow>(),
            routing::post(create::<GroupInput>).layer(Extension(WRITES)),
        ),
        route(
            Method::GET,
            "/api/groups/{name}",
            Access::Read,
            "getGroup",
            "One group",
            g,
            vec![NAME],
            None,
            200,
            Body::json::<GroupRow>(),
            routing::get(by_key::<ActionsCall, Name>).layer(op(ops::GROUP_GET)),
        ),
        route(
            Method::PUT,
            "/api/groups/{name}",
            Access::Write,
            "putGroup",
            "Create (201) or replace (200) the group of this name",
            g,
            vec![NAME],
            Some(BodySchema::of::<GroupInput>()),
            200,
            Body::json::<GroupRow>(),
            routing::put(put::<GroupInput>).layer(Extension(WRITES)),
        )
        .also(201, CREATED_BY_NAME),
        route(
            Method::DELETE,
            "/api/groups/{name}",
            Access::Write,
            "deleteGroup",
            "Delete a group; answers with the deleted row",
            g,
            vec![NAME],
            None,
            200,
            Body::json::<GroupRow>(),
            routing::delete(by_key::<ActionsCall, Name>).layer(op(ops::GROUP_DELETE)),
        ),
        route(
            Method::GET,
            "/api/groups/{name}/machines",
            Access::Read,
            "getGroupMachines",
            "The group's machines now, each with why it is in (`member`, `match`, `groups`); members deleted since are left out",
            g,
            vec![NAME],
            None,
            200,
            Body::json::<GroupMachines>(),
            routing::get(by_key::<ActionsCall, Name>).layer(op(ops::GROUP_MACHINES)),
        ),
    ]
}
