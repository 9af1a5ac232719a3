//! `bootfleet.api.v1.Groups`, `Commands` and `Runs`: `/api/groups`, `/api/commands` and
//! `/api/runs` over gRPC, relayed to the `actions` service as REST relays them; a run's events
//! streamed as messages, as REST streams them as NDJSON lines.

use std::pin::Pin;

use bootfleet_api::actions::{ops, CommandInput, GroupInput, RunEvent, RunInput};
use bootfleet_api::proto::ActionsCall;
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::pb::{self, commands_server::Commands, groups_server::Groups, runs_server::Runs};
use super::{status, Api};
use crate::auth::Access;
use crate::routes::relay::{Id, Name};

type RunStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn run_input(r: pb::RunCommandRequest) -> RunInput {
    RunInput {
        machines: r.machines,
        groups: r.groups,
        user: some(r.user),
        private_key: some(r.private_key),
        concurrency: (r.concurrency != 0).then_some(r.concurrency),
        timeout_seconds: (r.timeout_seconds != 0).then_some(r.timeout_seconds),
        accept_new_host_keys: r.accept_new_host_keys,
    }
}

fn run_event(e: RunEvent) -> pb::RunEvent {
    pb::RunEvent {
        machine: e.machine,
        stream: e.stream,
        line: e.line,
        exit_code: e.exit_code,
        error: e.error,
        power_state: e.power_state,
        run: e.run,
        machines: e.machines.unwrap_or_default(),
        done: e.done,
    }
}

relayed_service! {
    impl Groups via ActionsCall {
        list_groups: list => ops::GROUP_LIST;
        get_group: by(Name, Read) => ops::GROUP_GET;
        create_group: named(GroupInput, Create) => ops::GROUP_CREATE;
        put_group: named(GroupInput, Put) => ops::GROUP_PUT;
        delete_group: by(Name, Write) => ops::GROUP_DELETE;
        get_group_machines: by(Name, Read) => ops::GROUP_MACHINES;
    }
}

relayed_service! {
    impl Commands via ActionsCall {
        list_commands: list => ops::COMMAND_LIST;
        get_command: by(Name, Read) => ops::COMMAND_GET;
        create_command: named(CommandInput, Create) => ops::COMMAND_CREATE;
        put_command: named(CommandInput, Put) => ops::COMMAND_PUT;
        delete_command: by(Name, Write) => ops::COMMAND_DELETE;
    }

    type RunCommandStream = RunStream;

    async fn run_command(
        &self,
        req: Request<pb::RunCommandRequest>,
    ) -> Result<Response<RunStream>, Status> {
        let (call, mut r) = self.take(req, Access::Write)?;
        let name = std::mem::take(&mut r.name);
        let (_, events) = crate::routes::runs::start(&self.relay(&call), name, &run_input(r), None)
            .await
            .map_err(status)?;
        Ok(Response::new(Box::pin(
            events.map(|event| Ok(run_event(event))),
        )))
    }
}

relayed_service! {
    impl Runs via ActionsCall {
        list_runs: list => ops::RUN_LIST;
        get_run: by(Id, Read) => ops::RUN_GET;
    }
}
