//! `/api/groups`: named sets of machines (explicit members, a rank/metadata selector, and the
//! machines whose own `groups` name the group), kept by the `actions` service.

use axum::http::Method;
use bootfleet_api::actions::{ops, GroupInput, GroupMachines, GroupRow};
use bootfleet_api::proto::ActionsCall;

use super::actions::{Writes, NAME};
use super::relay::{by_key, Name};
use super::{named_routes, Body, Named, OfEach, RouteDef};
use crate::auth::Access;

const WRITES: Writes = Writes {
    create: ops::GROUP_CREATE,
    put: ops::GROUP_PUT,
    path: "groups",
};

pub(super) fn routes() -> Vec<RouteDef> {
    let g = "groups";
    let mut routes = named_routes::<GroupInput, GroupRow>(Named {
        name: g,
        one: "Group",
        key: NAME,
        fields: bootfleet_api::list::fields::GROUPS,
        summaries: OfEach {
            list: "List groups of machines (search name, description, members)",
            create: "A group: explicit `members` (machine ids or names; an unknown one is refused naming `members`) and/or a `match` selector (`ranks`: any of them, `metadata`: all pairs); machines whose own `groups` name it belong too. 409 when the name is taken",
            get: "One group",
            put: "Create (201) or replace (200) the group of this name",
            delete: "Delete a group; answers with the deleted row",
        },
        handlers: WRITES.handlers::<GroupInput>(ops::GROUP_LIST, ops::GROUP_GET, ops::GROUP_DELETE),
    });
    routes.extend([
        RouteDef::new(Method::GET, "/api/groups/{name}/machines", Access::Read, by_key::<ActionsCall, Name>)
            .with(ops::GROUP_MACHINES)
            .doc(g, "getGroupMachines", "The group's machines now, each with why it is in (`member`, `match`, `groups`); members deleted since are left out")
            .params(vec![NAME])
            .answers(200, Body::json::<GroupMachines>()),
    ]);
    routes
}
