//! `/api/machines` and `/api/profiles`: machines by MAC, their states, history, inventory and
//! timelines, the profiles of templates they install from, and each site's policy for MACs it
//! does not know. Node-facing routes (a machine's script, its rendered templates, its inventory
//! and install callback) take the machine's own token, in the Authorization header or `?token=`.
//!
//! The bodies travel to the `machines` service as JSON (`MachinesCall`); the service validates
//! them and answers JSON or text (`MachinesReply`).

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, Method};
use axum::response::Response;
use axum::routing;
use bootfleet_api::machines::{
    ops, BootDevice, ImportReport, Inventory, MachineEventInput, MachineHistory, MachineInput,
    MachineRow, PowerAction, PowerInput, PowerResult, ProfileInput, ProfileRow, SitePolicy,
    SitePolicyInput, StateInput, Timeline,
};
use bootfleet_api::proto::MachinesCall;
use bootfleet_api::{proto, ApiError};

use super::relay::{by_key, json_by_key, list, op, Id, Name, Relay, ServiceCall, Site};
use super::{
    list_query, named_routes, path_id, query_pairs, Body, BodySchema, Named, OfEach, Param,
    ParamType, RouteDef, ID, NODE_TOKEN,
};
use crate::auth::Access;
use crate::http::{read_body, HttpResult, JsonBody, NewId};
use crate::AppState;

/// How long a power request may take: the machines service waits 27 s for the distributor,
/// within the gateway's request timeout (30 s by default).
const POWER_WAIT: std::time::Duration = std::time::Duration::from_secs(29);

// ---- machines ---------------------------------------------------------------------------

async fn create_machine(
    r: Relay,
    NewId(id): NewId,
    JsonBody(body): JsonBody<MachineInput>,
) -> HttpResult<Response> {
    let call = r.call_with::<MachinesCall, _>(id.clone(), &sealed(&r, body).await?)?;
    let location = format!("/api/machines/{id}");
    r.send(ops::CREATE, call, Some(location)).await
}

async fn update_machine(
    r: Relay,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<MachineInput>,
) -> HttpResult<Response> {
    let id = path_id(&id)?;
    let call = r.call_with::<MachinesCall, _>(id, &sealed(&r, body).await?)?;
    r.send(ops::UPDATE, call, None).await
}

/// The machines service's answer to `seal-key`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SealKey {
    public_key: String,
}

/// Seals a BMC password of `body` to the machines service's key before it is relayed, so the
/// cleartext never crosses NATS (only the one request to the distributor carries it).
pub(crate) async fn sealed(r: &Relay, mut body: MachineInput) -> Result<MachineInput, ApiError> {
    let Some(Some(bmc)) = body.bmc.as_mut() else {
        return Ok(body);
    };
    let Some(password) = bmc.password.take() else {
        return Ok(body);
    };
    if bmc.sealed_password.is_some() {
        return Err(ApiError::invalid(
            "bmc.password",
            "give password or sealedPassword, not both",
        ));
    }
    let reply = r.ask(ops::SEAL_KEY, MachinesCall::default()).await?;
    let key: SealKey = serde_json::from_str(&reply.body)
        .map_err(|e| ApiError::internal(format!("the machines service's seal key: {e}")))?;
    let sealed = bootfleet_sealbox::seal(&key.public_key, password.as_bytes())
        .map_err(|e| ApiError::internal(format!("cannot seal the bmc password: {e}")))?;
    bmc.sealed_password = Some(sealed);
    Ok(body)
}

/// Powers machine `id` through its BMC (REST's and gRPC's power).
pub(crate) async fn power_machine(
    r: &Relay,
    id: String,
    body: &PowerInput,
) -> Result<proto::MachinesReply, ApiError> {
    let call = r.call_with::<MachinesCall, _>(id, body)?;
    r.waiting(POWER_WAIT).ask(ops::POWER, call).await
}

/// State `install` (reason `reinstall`), then, with `power_cycle`, a one-time PXE boot and a
/// power cycle through its BMC: the machine's row, or the power error.
pub(crate) async fn reinstall_machine(
    r: &Relay,
    id: String,
    power_cycle: bool,
) -> Result<proto::MachinesReply, ApiError> {
    let to_install = StateInput {
        state: bootfleet_api::machines::MachineState::Install,
        reason: Some("reinstall".into()),
    };
    let call = r.call_with::<MachinesCall, _>(id.clone(), &to_install)?;
    let changed = r.ask(ops::STATE, call).await?;
    if power_cycle {
        // Through its BMC: a one-time PXE boot, then a power cycle, so the installer starts now.
        let cycle = PowerInput {
            action: PowerAction::Cycle,
            boot_device: Some(BootDevice::Pxe),
        };
        power_machine(r, id, &cycle).await?;
    }
    Ok(changed)
}

async fn power(
    r: Relay,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PowerInput>,
) -> HttpResult<Response> {
    let reply = power_machine(&r, path_id(&id)?, &body).await?;
    Ok(MachinesCall::answer(reply, None))
}

async fn reinstall(
    r: Relay,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> HttpResult<Response> {
    let mut power_cycle = false;
    for (key, value) in query_pairs(query.as_deref())? {
        match (key.as_str(), value.as_str()) {
            ("powerCycle", "true") => power_cycle = true,
            ("powerCycle", "false") => power_cycle = false,
            ("powerCycle", _) => {
                return Err(ApiError::invalid("powerCycle", "must be true or false").into())
            }
            (other, _) => {
                return Err(ApiError::invalid(other, "unknown parameter (powerCycle)").into())
            }
        }
    }
    let reply = reinstall_machine(&r, path_id(&id)?, power_cycle).await?;
    Ok(MachinesCall::answer(reply, None))
}

async fn import(State(s): State<AppState>, r: Relay, req: Request) -> HttpResult<Response> {
    let mut site = None;
    for (key, value) in query_pairs(req.uri().query())? {
        match key.as_str() {
            "artifactId" => site = Some(value),
            "token" => {}
            other => return Err(ApiError::invalid(other, "unknown parameter (artifactId)").into()),
        }
    }
    let site = site.ok_or_else(|| {
        ApiError::invalid("artifactId", "is required: the site the machines belong to")
    })?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_owned();
    let bytes = read_body(req, &s).await?;
    let text =
        String::from_utf8(bytes).map_err(|_| ApiError::invalid("body", "must be utf-8 text"))?;
    let reply = import_machines(&r, site, content_type, text).await?;
    Ok(MachinesCall::answer(reply, None))
}

/// Imports the machines of `text` (machines.txt or a YAML nodes file, by `content_type`) into
/// the site `site`, checked (REST's and gRPC's import).
pub(crate) async fn import_machines(
    r: &Relay,
    site: String,
    content_type: String,
    text: String,
) -> Result<proto::MachinesReply, ApiError> {
    bootfleet_api::validate::artifact_id("artifactId", &site)?;
    let mut call = r.call::<MachinesCall>(site);
    call.body = text;
    call.name = content_type;
    r.ask(ops::IMPORT, call).await
}

// ---- node-facing ------------------------------------------------------------------------

async fn file(
    State(s): State<AppState>,
    r: Relay,
    Path((id, template)): Path<(String, String)>,
) -> HttpResult<Response> {
    let reply = machine_file(&s, &r, id, template).await?;
    Ok(MachinesCall::answer(reply, None))
}

/// The template `template` of machine `id`'s profile, rendered for it (REST's and gRPC's).
/// A machine reading with its own token is answered from the gateway's copy when there is one
/// (see [`crate::machine_files`]).
pub(crate) async fn machine_file(
    s: &AppState,
    r: &Relay,
    id: String,
    template: String,
) -> Result<proto::MachinesReply, ApiError> {
    bootfleet_api::machines::template_name("template", &template)?;
    let id = bootfleet_api::validate::id("id", &id)?;
    let token = r.caller.machine_token.as_str();
    let files = if token.is_empty() {
        None
    } else {
        s.machine_files().await
    };
    if let Some(files) = files {
        let hit = files.get(&id, &template, token);
        crate::metrics::record_machine_file_lookup(hit.is_some());
        if let Some(copy) = hit {
            return Ok(proto::MachinesReply {
                body: copy.text.clone(),
                content_type: copy.content_type.clone(),
                ..Default::default()
            });
        }
    }
    let epoch = files.map(|f| f.epoch());
    let mut call = r.call::<MachinesCall>(id.clone());
    call.name = template.clone();
    let reply = r.ask(ops::FILE, call).await?;
    if let (Some(files), Some(epoch)) = (files, epoch) {
        files.keep(&id, &template, token, &reply, epoch);
    }
    Ok(reply)
}

// ---- profiles and sites -----------------------------------------------------------------

async fn create_profile(r: Relay, JsonBody(body): JsonBody<ProfileInput>) -> HttpResult<Response> {
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("name", "is required"))?;
    bootfleet_api::machines::word("name", &name)?;
    let call = r.call_with::<MachinesCall, _>(uuid::Uuid::new_v4().to_string(), &body)?;
    let location = format!("/api/profiles/{name}");
    r.send(ops::PROFILE_CREATE, call, Some(location)).await
}

async fn put_profile(
    r: Relay,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ProfileInput>,
) -> HttpResult<Response> {
    bootfleet_api::machines::word("name", &name)?;
    let location = format!("/api/profiles/{name}");
    let call = r.call_with::<MachinesCall, _>(name, &body)?;
    r.send(ops::PROFILE_PUT, call, Some(location)).await
}

// ---- the table ----------------------------------------------------------------------------

const NAME: Param = Param {
    name: "name",
    in_path: true,
    required: true,
    ty: ParamType::Pattern(bootfleet_api::rules::word_pattern),
    description: "The profile's name.",
};

const POWER_CYCLE: Param = Param {
    name: "powerCycle",
    in_path: false,
    required: false,
    ty: ParamType::Boolean,
    description: "`true`: after the state change, boot it once from the network and power-cycle it through its BMC.",
};

const SITE: Param = Param {
    name: "artifactId",
    in_path: true,
    required: true,
    ty: ParamType::Pattern(bootfleet_api::rules::artifact_id_pattern),
    description: "The site (its distributor's artifact id).",
};

const TEMPLATE: Param = Param {
    name: "template",
    in_path: true,
    required: true,
    ty: ParamType::Pattern(bootfleet_api::rules::template_name_pattern),
    description: "The template's name in the machine's profile (`kickstart`, `user-data`, ...).",
};

const IMPORT_SITE: Param = Param {
    name: "artifactId",
    in_path: false,
    required: true,
    ty: ParamType::Pattern(bootfleet_api::rules::artifact_id_pattern),
    description: "The site the imported machines belong to.",
};

pub(super) fn routes() -> Vec<RouteDef> {
    let m = "machines";
    let mut routes = vec![
        RouteDef::new(Method::GET, "/api/machines", Access::Read, list::<MachinesCall>)
            .with(ops::LIST)
            .doc(m, "listMachines", "List machines (search mac, name, artifactId, state, profile, ip, ranks, groups)")
            .params(list_query(bootfleet_api::list::fields::MACHINES))
            .answers(200, Body::Json(BodySchema::page_of::<MachineRow>())),
        RouteDef::new(Method::POST, "/api/machines", Access::Write, create_machine)
            .doc(m, "createMachine", "Register a machine by its MAC at a site (state `ready` unless given); 409 when the MAC, or the name at that site, is taken")
            .body(BodySchema::requiring::<MachineInput>(&["mac", "artifactId"]))
            .answers(201, Body::json::<MachineRow>()),
        RouteDef::new(Method::POST, "/api/machines/import", Access::Write, import)
            .doc(m, "importMachines", "Bulk import: a MOC machines.txt (`<mac> <management-ip>` per line; text/plain) or a YAML nodes file (`<name>: {ranks, ip, mac, <other keys → metadata>}`; application/yaml). Each line is created, updated (same MAC) or refused with its line number and reason; good lines land even when others are refused")
            .params(vec![IMPORT_SITE])
            .answers(200, Body::json::<ImportReport>()),
        RouteDef::new(Method::GET, "/api/machines/{id}", Access::Read, by_key::<MachinesCall, Id>)
            .with(ops::GET)
            .doc(m, "getMachine", "One machine, with its last inventory")
            .params(vec![ID])
            .answers(200, Body::json::<MachineRow>()),
        RouteDef::new(Method::PUT, "/api/machines/{id}", Access::Write, update_machine)
            .doc(m, "updateMachine", "Change a machine's fields (those left out keep their values); a state change is recorded in its history")
            .params(vec![ID])
            .body(BodySchema::of::<MachineInput>())
            .answers(200, Body::json::<MachineRow>()),
        RouteDef::new(Method::DELETE, "/api/machines/{id}", Access::Write, by_key::<MachinesCall, Id>)
            .with(ops::DELETE)
            .doc(m, "deleteMachine", "Forget a machine (its MAC is unknown again); answers with the deleted row")
            .params(vec![ID])
            .answers(200, Body::json::<MachineRow>()),
        RouteDef::new(Method::PUT, "/api/machines/{id}/state", Access::Write, json_by_key::<MachinesCall, Id, StateInput>)
            .with(ops::STATE)
            .doc(m, "setMachineState", "Move a machine to a state (discovered, inventory, ready, install, installed, rescue) with a reason; recorded with who and when")
            .params(vec![ID])
            .body(BodySchema::of::<StateInput>())
            .answers(200, Body::json::<MachineRow>()),
        RouteDef::new(Method::POST, "/api/machines/{id}/reinstall", Access::Write, reinstall)
            .doc(m, "reinstallMachine", "State `install` (reason `reinstall`): its next PXE boot runs its profile's installer. With `powerCycle=true`, its BMC then sets a one-time PXE boot and power-cycles it (errors as for power; the state is `install` either way)")
            .params(vec![ID, POWER_CYCLE])
            .answers(200, Body::json::<MachineRow>()),
        RouteDef::new(Method::POST, "/api/machines/{id}/power", Access::Write, power)
            .doc(m, "powerMachine", "Power a machine through its BMC (IPMI or Redfish), run by its site's distributor: `on`, `off`, `cycle`, `reset` or `status`, optionally setting the next boot's device (`pxe`, `disk`) first. Answers the power state after the action; 400 without a BMC or when the BMC refuses its credentials (field `bmc.password`) or its certificate does not verify (`bmc.caCertificate`), 501 when the BMC does not support the operation, 503/504 when the BMC or the site's distributor cannot be reached")
            .params(vec![ID])
            .body(BodySchema::of::<PowerInput>())
            .answers(200, Body::json::<PowerResult>()),
        RouteDef::new(Method::GET, "/api/machines/{id}/history", Access::Read, by_key::<MachinesCall, Id>)
            .with(ops::HISTORY)
            .doc(m, "getMachineHistory", "A machine's state changes, oldest first (the last 200): from, to, reason, by, at")
            .params(vec![ID])
            .answers(200, Body::json::<MachineHistory>()),
        RouteDef::new(Method::GET, "/api/machines/{id}/timeline", Access::Read, by_key::<MachinesCall, Id>)
            .with(ops::TIMELINE)
            .doc(m, "getMachineTimeline", "A machine's last 20 boots, newest first: each step (DHCP answer, file served, boot decision, script and template fetched, inventory, installed) with its time and the time since the previous step")
            .params(vec![ID])
            .answers(200, Body::json::<Timeline>()),
        RouteDef::new(Method::GET, "/api/machines/{id}/script", Access::MachineRead, by_key::<MachinesCall, Id>)
            .with(ops::SCRIPT)
            .doc(m, "getMachineScript", "The iPXE script the machine boots in its state, rendered for it (text/plain). The machine's own token (header or ?token=), or an operator's; another machine's token gets 403")
            .params(vec![ID, NODE_TOKEN])
            .answers(200, Body::Text),
        RouteDef::new(Method::GET, "/api/machines/{id}/files/{template}", Access::MachineRead, file)
            .doc(m, "getMachineFile", "One of its profile's templates (kickstart, user-data, ...) rendered for the machine (text/plain). The machine's own token (header or ?token=), or an operator's; another machine's token gets 403")
            .params(vec![ID, TEMPLATE, NODE_TOKEN])
            .answers(200, Body::Text),
        RouteDef::new(Method::POST, "/api/machines/{id}/inventory", Access::MachineWrite, json_by_key::<MachinesCall, Id, Inventory>)
            .with(ops::INVENTORY)
            .doc(m, "reportMachineInventory", "The discovery image reports the machine's hardware; a discovered or inventory machine becomes ready. The machine's own token or an admin's")
            .params(vec![ID, NODE_TOKEN])
            .body(BodySchema::of::<Inventory>())
            .answers(200, Body::json::<MachineRow>()),
        RouteDef::new(Method::POST, "/api/machines/{id}/events", Access::MachineWrite, json_by_key::<MachinesCall, Id, MachineEventInput>)
            .with(ops::EVENT)
            .doc(m, "reportMachineEvent", "The installed system calls back (`{\"type\": \"installed\"}`): the machine becomes installed and its next PXE boot boots its disk. The machine's own token or an admin's")
            .params(vec![ID, NODE_TOKEN])
            .body(BodySchema::of::<MachineEventInput>())
            .answers(200, Body::json::<MachineRow>()),
        RouteDef::new(Method::GET, "/api/machines/sites/{artifactId}", Access::Read, by_key::<MachinesCall, Site>)
            .with(ops::SITE_GET)
            .doc(m, "getMachineSitePolicy", "What a site does with MACs it has no machine for (default `serve`: its configured script, as before machines existed)")
            .params(vec![SITE])
            .answers(200, Body::json::<SitePolicy>()),
        RouteDef::new(Method::PUT, "/api/machines/sites/{artifactId}", Access::Write, json_by_key::<MachinesCall, Site, SitePolicyInput>)
            .with(ops::SITE_PUT)
            .doc(m, "setMachineSitePolicy", "Set a site's policy for unknown MACs: `ignore` (known machines only, an allow-list), `discover` (record them and boot the discovery profile) or `serve`")
            .params(vec![SITE])
            .body(BodySchema::of::<SitePolicyInput>())
            .answers(200, Body::json::<SitePolicy>()),
    ];
    routes.extend(named_routes::<ProfileInput, ProfileRow>(Named {
        name: "profiles",
        one: "Profile",
        key: NAME,
        fields: bootfleet_api::list::fields::PROFILES,
        summaries: OfEach {
            list: "List profiles of templates",
            create: "A profile: its iPXE template, an optional rescue template and named installer templates, all MiniJinja; a template naming an unknown variable is refused (400)",
            get: "One profile",
            put: "Create (201) or replace (200) the profile of this name",
            delete: "Delete a profile no machine uses (409 otherwise); answers with the deleted row",
        },
        handlers: OfEach {
            list: routing::get(list::<MachinesCall>).layer(op(ops::PROFILE_LIST)),
            create: routing::post(create_profile),
            get: routing::get(by_key::<MachinesCall, Name>).layer(op(ops::PROFILE_GET)),
            put: routing::put(put_profile),
            delete: routing::delete(by_key::<MachinesCall, Name>).layer(op(ops::PROFILE_DELETE)),
        },
    }));
    routes
}
