//! `bootfleet.api.v1.Machines` and `Profiles`: `/api/machines` and `/api/profiles` over gRPC,
//! relayed to the `machines` service as REST relays them; a machine's timeline followed as it
//! grows.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bootfleet_api::machines::{
    ops, Inventory, MachineEventInput, MachineInput, PowerInput, ProfileInput, SitePolicyInput,
    StateInput, Timeline,
};
use bootfleet_api::proto::{self, MachinesCall};
use bootfleet_api::ApiError;
use futures_util::Stream;
use serde_json::json;
use tonic::{Request, Response, Status};

use super::pb::{self, machines_server::Machines, profiles_server::Profiles};
use super::relayed::{body, checked, id_key, no_key, row};
use super::{new_id, status, Api, Call};
use crate::auth::Access;
use crate::routes::machines::{
    import_machines, machine_file, power_machine, reinstall_machine, sealed,
};
use crate::routes::relay::{Id, Name, Relay, Site};

/// How often a followed timeline is asked for (boot steps are seconds apart).
const TIMELINE_EVERY: Duration = Duration::from_secs(1);

type StepStream = Pin<Box<dyn Stream<Item = Result<pb::TimelineStep, Status>> + Send>>;

impl Api {
    async fn timeline(&self, call: &Call, id: &str) -> Result<Timeline, Status> {
        let relay = self.relay(call);
        let reply = relay
            .ask(ops::TIMELINE, relay.call::<MachinesCall>(id.to_owned()))
            .await
            .map_err(status)?;
        serde_json::from_str(&reply.body).map_err(|e| {
            status(ApiError::internal(format!(
                "the machines service answered a timeline that does not parse: {e}"
            )))
        })
    }

    /// Sends the timeline's steps not sent yet, oldest boot first, every [`TIMELINE_EVERY`]
    /// until the client hangs up.
    async fn follow_timeline(
        self,
        call: Call,
        id: String,
        first: Timeline,
        tx: tokio::sync::mpsc::Sender<Result<pb::TimelineStep, Status>>,
    ) {
        // Steps sent per boot (by its start); boots the service no longer keeps are forgotten.
        let mut sent: HashMap<String, usize> = HashMap::new();
        let mut timeline = first;
        loop {
            let mut now = HashMap::new();
            for boot in timeline.boots.iter().rev() {
                let already = sent.get(&boot.started_at).copied().unwrap_or(0);
                for step in boot.steps.iter().skip(already) {
                    let step = pb::TimelineStep {
                        boot_started_at: boot.started_at.clone(),
                        kind: step.kind.clone(),
                        at: step.at.clone(),
                        since_previous_ms: step.since_previous_ms,
                        detail: step.detail.clone().into_iter().collect(),
                    };
                    if tx.send(Ok(step)).await.is_err() {
                        return;
                    }
                }
                now.insert(boot.started_at.clone(), boot.steps.len().max(already));
            }
            sent = now;
            tokio::select! {
                () = tokio::time::sleep(TIMELINE_EVERY) => {}
                () = tx.closed() => return,
            }
            timeline = match self.timeline(&call, &id).await {
                Ok(t) => t,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
        }
    }
}

relayed_service! {
    impl Machines via MachinesCall {
        list_machines: list => ops::LIST;
        get_machine: by(Id, Read) => ops::GET;
        delete_machine: by(Id, Write) => ops::DELETE;
        get_machine_history: by(Id, Read) => ops::HISTORY;
        get_machine_timeline: by(Id, Read) => ops::TIMELINE;
        get_machine_site_policy: by(Site, Read) => ops::SITE_GET;
        report_machine_inventory: write(Inventory, MachineWrite, id_key) => ops::INVENTORY;
        report_machine_event: write(MachineEventInput, MachineWrite, id_key) => ops::EVENT;
    }

    async fn create_machine(
        &self,
        req: Request<pb::JsonWrite>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        let id = new_id(&req);
        self.relay_write::<MachinesCall, MachineInput, _, _>(
            req,
            Access::Write,
            ops::CREATE,
            |r: Relay, key, input| async move {
                no_key(&key)?;
                Ok((id, sealed(&r, input).await?))
            },
        )
        .await
    }

    async fn update_machine(
        &self,
        req: Request<pb::JsonWrite>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        self.relay_write::<MachinesCall, MachineInput, _, _>(
            req,
            Access::Write,
            ops::UPDATE,
            |r: Relay, key, input| async move {
                let id = bootfleet_api::validate::id("key", &key)?;
                Ok((id, sealed(&r, input).await?))
            },
        )
        .await
    }

    async fn set_machine_state(
        &self,
        req: Request<pb::SetMachineStateRequest>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        let (call, r) = self.take(req, Access::Write)?;
        let id = checked::<Id>(r.id)?;
        let mut input = json!({ "state": r.state });
        if !r.reason.is_empty() {
            input["reason"] = json!(r.reason);
        }
        let input: StateInput = body(&input.to_string())?;
        let c = self
            .relay(&call)
            .call_with::<MachinesCall, _>(id, &input)
            .map_err(status)?;
        self.relayed(&call, ops::STATE, c).await
    }

    async fn reinstall_machine(
        &self,
        req: Request<pb::ReinstallMachineRequest>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        let (call, r) = self.take(req, Access::Write)?;
        let id = checked::<Id>(r.id)?;
        let reply = reinstall_machine(&self.relay(&call), id, r.power_cycle)
            .await
            .map_err(status)?;
        Ok(row::<MachinesCall>(reply))
    }

    async fn power_machine(
        &self,
        req: Request<pb::PowerMachineRequest>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        let (call, r) = self.take(req, Access::Write)?;
        let id = checked::<Id>(r.id)?;
        let mut input = json!({ "action": r.action });
        if !r.boot_device.is_empty() {
            input["bootDevice"] = json!(r.boot_device);
        }
        let input: PowerInput = body(&input.to_string())?;
        let reply = power_machine(&self.relay(&call), id, &input)
            .await
            .map_err(status)?;
        Ok(row::<MachinesCall>(reply))
    }

    type WatchMachineTimelineStream = StepStream;

    async fn watch_machine_timeline(
        &self,
        req: Request<proto::IdRequest>,
    ) -> Result<Response<StepStream>, Status> {
        let call = self.authorize(&req, Access::Read)?;
        let id = checked::<Id>(req.into_inner().id)?;
        // Asked before the stream starts, so an unknown machine is a plain error.
        let first = self.timeline(&call, &id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(self.clone().follow_timeline(call, id, first, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn import_machines(
        &self,
        req: Request<pb::ImportMachinesRequest>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        let (call, r) = self.take(req, Access::Write)?;
        let content_type = if r.content_type.is_empty() {
            "text/plain".to_owned()
        } else {
            r.content_type
        };
        let reply = import_machines(&self.relay(&call), r.artifact_id, content_type, r.text)
            .await
            .map_err(status)?;
        Ok(row::<MachinesCall>(reply))
    }

    async fn set_machine_site_policy(
        &self,
        req: Request<pb::JsonWrite>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        self.relay_write::<MachinesCall, SitePolicyInput, _, _>(
            req,
            Access::Write,
            ops::SITE_PUT,
            |_, key, input| async move {
                bootfleet_api::validate::artifact_id("key", &key)?;
                Ok((key, input))
            },
        )
        .await
    }

    async fn get_machine_script(
        &self,
        req: Request<proto::IdRequest>,
    ) -> Result<Response<pb::MachineText>, Status> {
        let script = self
            .relay_by::<MachinesCall, Id>(req, Access::MachineRead, ops::SCRIPT)
            .await?;
        // The service answers text (REST's text/plain), carried in the row's body.
        Ok(Response::new(pb::MachineText {
            text: script.into_inner().json,
        }))
    }

    async fn get_machine_file(
        &self,
        req: Request<pb::MachineFileRequest>,
    ) -> Result<Response<pb::MachineText>, Status> {
        let (call, r) = self.take(req, Access::MachineRead)?;
        let reply = machine_file(&self.state, &self.relay(&call), r.id, r.template)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::MachineText { text: reply.body }))
    }
}

relayed_service! {
    impl Profiles via MachinesCall {
        list_profiles: list => ops::PROFILE_LIST;
        get_profile: by(Name, Read) => ops::PROFILE_GET;
        put_profile: named(ProfileInput, Put) => ops::PROFILE_PUT;
        delete_profile: by(Name, Write) => ops::PROFILE_DELETE;
    }

    async fn create_profile(
        &self,
        req: Request<pb::JsonWrite>,
    ) -> Result<Response<pb::JsonRow>, Status> {
        let id = new_id(&req);
        self.relay_write::<MachinesCall, ProfileInput, _, _>(
            req,
            Access::Write,
            ops::PROFILE_CREATE,
            |_, key, input| async move {
                no_key(&key)?;
                let name = input
                    .name
                    .as_deref()
                    .ok_or_else(|| ApiError::invalid("name", "is required"))?;
                bootfleet_api::machines::word("name", name)?;
                Ok((id, input))
            },
        )
        .await
    }
}
