//! `bootfleet.api.v1.Groups`, `Commands` and `Runs`: `/api/groups`, `/api/commands` and
//! `/api/runs` over gRPC, relayed to the `actions` service as REST relays them; a run's events
//! streamed as messages, as REST streams them as NDJSON lines.

use std::pin::Pin;

use bootfleet_api::actions::{ops, CommandInput, GroupInput, RunEvent, RunInput};
use bootfleet_api::proto::{self, ActionsCall};
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

#[tonic::async_trait]
impl Groups for Api {
    async fn list_groups(
        &self,
        req: Request<pb::ListOptions>,
    ) -> Result<Response<pb::JsonPage>, Status> {
        self.relay_list::<ActionsCall>(req, ops::GROUP_LIST).await
    }

    async fn get_group(&self, req: Request<pb::NameRef>) -> Result<Response<pb::JsonRow>, Status> {
        self.relay_by::<ActionsCall, Name, _>(req, Access::Read, ops::GROUP_GET)
            .await
    }

    async fn create_group(
        &self,
        req: Request<pb::JsonWrite>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        self.named_write::<ActionsCall, GroupInput>(req, ops::GROUP_CREATE, true)
            .await
    }

    async fn put_group(
        &self,
        req: Request<pb::JsonWrite>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        self.named_write::<ActionsCall, GroupInput>(req, ops::GROUP_PUT, false)
            .await
    }

    async fn delete_group(
        &self,
        req: Request<pb::NameRef>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        self.relay_by::<ActionsCall, Name, _>(req, Access::Write, ops::GROUP_DELETE)
            .await
    }

    async fn get_group_machines(
        &self,
        req: Request<pb::NameRef>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        self.relay_by::<ActionsCall, Name, _>(req, Access::Read, ops::GROUP_MACHINES)
            .await
    }
}

#[tonic::async_trait]
impl Commands for Api {
    async fn list_commands(
        &self,
        req: Request<pb::ListOptions>,
    ) -> Result<Response<pb::JsonPage>, Status> {
        self.relay_list::<ActionsCall>(req, ops::COMMAND_LIST).await
    }

    async fn get_command(
        &self,
        req: Request<pb::NameRef>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        self.relay_by::<ActionsCall, Name, _>(req, Access::Read, ops::COMMAND_GET)
            .await
    }

    async fn create_command(
        &self,
        req: Request<pb::JsonWrite>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        self.named_write::<ActionsCall, CommandInput>(req, ops::COMMAND_CREATE, true)
            .await
    }

    async fn put_command(
        &self,
        req: Request<pb::JsonWrite>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        self.named_write::<ActionsCall, CommandInput>(req, ops::COMMAND_PUT, false)
            .await
    }

    async fn delete_command(
        &self,
        req: Request<pb::NameRef>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        self.relay_by::<ActionsCall, Name, _>(req, Access::Write, ops::COMMAND_DELETE)
            .await
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

#[tonic::async_trait]
impl Runs for Api {
    async fn list_runs(
        &self,
        req: Request<pb::ListOptions>,
    ) -> Result<Response<pb::JsonPage>, Status> {
        self.relay_list::<ActionsCall>(req, ops::RUN_LIST).await
    }

    async fn get_run(
        &self,
        req: Request<proto::IdRequest>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        self.relay_by::<ActionsCall, Id, _>(req, Access::Read, ops::RUN_GET)
            .await
    }
}
