//! `/api/commands`: the command library, by name: a default script and per-rank variants, and
//! the built-in power commands (`power-on`, `power-off`, `power-cycle`, `power-status`), which
//! cannot be changed. Runs of a command are in `runs.rs`.

use bootfleet_api::actions::{ops, CommandInput, CommandRow};

use super::actions::{Writes, NAME};
use super::{named_routes, Named, OfEach, RouteDef};

const WRITES: Writes = Writes {
    create: ops::COMMAND_CREATE,
    put: ops::COMMAND_PUT,
    path: "commands",
};

pub(super) fn routes() -> Vec<RouteDef> {
    named_routes::<CommandInput, CommandRow>(Named {
        name: "commands",
        one: "Command",
        key: NAME,
        fields: bootfleet_api::list::fields::COMMANDS,
        summaries: OfEach {
            list: "List commands, the built-in power commands included (search name, summary, description)",
            create: "A command: a default `script` and `variants` per rank (a machine runs the variant of its first rank that has one). 409 when the name is taken or is a built-in's",
            get: "One command",
            put: "Create (201) or replace (200) the command of this name; 409 for a built-in",
            delete: "Delete a command (409 for a built-in); answers with the deleted row",
        },
        handlers: WRITES.handlers::<CommandInput>(
            ops::COMMAND_LIST,
            ops::COMMAND_GET,
            ops::COMMAND_DELETE,
        ),
    })
}
