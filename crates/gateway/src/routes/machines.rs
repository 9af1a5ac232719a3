//! `/api/machines` and `/api/profiles`: machines by MAC, their states, history, inventory and
//! timelines, the profiles of templates they install from, and each site's policy for MACs it
//! does not know. Node-facing routes (a machine's script, its rendered templates, its inventory
//! and install callback) take the machine's own token, in the Authorization header or `?token=`.
//!
//! The bodies travel to the `machines` service as JSON (`MachinesCall`); the service validates
//! them and answers JSON or text (`MachinesReply`).

use axum::extract::{Extension, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::response::Response;
use axum::routing;
use bootfleet_api::machines::{
    ops, BootDevice, ImportReport, Inventory, MachineEventInput, MachineHistory, MachineInput,
    MachineRow, PowerAction, PowerInput, PowerResult, ProfileInput, ProfileRow, SitePolicy,
    SitePolicyInput, StateInput, Timeline,
};
use bootfleet_api::subjects;
use bootfleet_api::{proto, ApiError};
use serde::Serialize;

use super::{
    json_answer, list_params, list_query, path_id, query_pairs, raw_text, route, Body, BodySchema,
    Param, ParamType, RouteDef, ID, NODE_TOKEN,
};
use crate::auth::{Access, Claims, MachineToken};
use crate::http::{read_body, HttpError, HttpResult, JsonBody, NewId, Trace};
use crate::AppState;

/// Who calls: an operator's claims or a machine's token (from the access check).
#[derive(Clone, Debug, Default)]
struct Caller {
    actor: String,
    role: String,
    machine_token: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut caller = Caller::default();
        if let Some(claims) = parts.extensions.get::<Claims>() {
            caller.actor.clone_from(&claims.sub);
            caller.role = claims.role.to_string();
        }
        if let Some(MachineToken(token)) = parts.extensions.get::<MachineToken>() {
            caller.machine_token.clone_from(token);
        }
        Ok(caller)
    }
}

impl Caller {
    fn call(self, id: String) -> proto::MachinesCall {
        proto::MachinesCall {
            id,
            actor: self.actor,
            role: self.role,
            machine_token: self.machine_token,
            ..Default::default()
        }
    }
}

fn to_json<T: Serialize>(body: &T) -> Result<String, ApiError> {
    serde_json::to_string(body).map_err(|e| ApiError::internal(format!("cannot encode: {e}")))
}

/// How long a power request may take: the machines service waits 27 s for the distributor,
/// within the gateway's request timeout (30 s by default).
const POWER_WAIT: std::time::Duration = std::time::Duration::from_secs(29);

/// Sends `call` to the service's `op` and answers as it says: JSON, text, 201 with `location`.
async fn send(
    s: &AppState,
    t: &Trace,
    op: &str,
    call: proto::MachinesCall,
    location: Option<String>,
) -> HttpResult<Response> {
    send_on(&s.bus, t, op, call, location).await
}

async fn send_on(
    bus: &bootfleet_bus::Bus,
    t: &Trace,
    op: &str,
    call: proto::MachinesCall,
    location: Option<String>,
) -> HttpResult<Response> {
    let reply: proto::MachinesReply = bus.request(&t.0, &subjects::machines_op(op), &call).await?;
    if reply.content_type == "text/plain" {
        return Ok(raw_text(reply.body));
    }
    Ok(json_answer(reply.body, reply.created, location))
}

// ---- machines ---------------------------------------------------------------------------

async fn list_machines(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> HttpResult<Response> {
    let params = list_params(q.as_deref())?;
    let mut call = caller.call(String::new());
    call.list = Some(params.to_proto());
    send(&s, &t, ops::LIST, call, None).await
}

async fn create_machine(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    NewId(id): NewId,
    JsonBody(body): JsonBody<MachineInput>,
) -> HttpResult<Response> {
    let mut call = caller.call(id.clone());
    call.body = to_json(&sealed(&s, &t, body).await?)?;
    send(
        &s,
        &t,
        ops::CREATE,
        call,
        Some(format!("/api/machines/{id}")),
    )
    .await
}

/// A route that names a machine and sends no body: the operation is in the extensions.
async fn by_id(
    State(s): State<AppState>,
    Extension(op): Extension<&'static str>,
    t: Trace,
    caller: Caller,
    Path(id): Path<String>,
) -> HttpResult<Response> {
    let call = caller.call(path_id(&id)?);
    send(&s, &t, op, call, None).await
}

async fn update_machine(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<MachineInput>,
) -> HttpResult<Response> {
    let mut call = caller.call(path_id(&id)?);
    call.body = to_json(&sealed(&s, &t, body).await?)?;
    send(&s, &t, ops::UPDATE, call, None).await
}

/// The machines service's answer to `seal-key`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SealKey {
    public_key: String,
}

/// Seals a BMC password of `body` to the machines service's key before it is relayed, so the
/// cleartext never crosses NATS (only the one request to the distributor carries it).
async fn sealed(s: &AppState, t: &Trace, mut body: MachineInput) -> HttpResult<MachineInput> {
    let Some(Some(bmc)) = body.bmc.as_mut() else {
        return Ok(body);
    };
    let Some(password) = bmc.password.take() else {
        return Ok(body);
    };
    if bmc.sealed_password.is_some() {
        return Err(
            ApiError::invalid("bmc.password", "give password or sealedPassword, not both").into(),
        );
    }
    let reply: proto::MachinesReply = s
        .bus
        .request(
            &t.0,
            &subjects::machines_op(ops::SEAL_KEY),
            &proto::MachinesCall::default(),
        )
        .await?;
    let key: SealKey = serde_json::from_str(&reply.body)
        .map_err(|e| ApiError::internal(format!("the machines service's seal key: {e}")))?;
    let sealed = bootfleet_sealbox::seal(&key.public_key, password.as_bytes())
        .map_err(|e| ApiError::internal(format!("cannot seal the bmc password: {e}")))?;
    bmc.sealed_password = Some(sealed);
    Ok(body)
}

async fn power(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PowerInput>,
) -> HttpResult<Response> {
    let mut call = caller.call(path_id(&id)?);
    call.body = to_json(&body)?;
    send_on(
        &s.bus.with_timeout(POWER_WAIT, 1),
        &t,
        ops::POWER,
        call,
        None,
    )
    .await
}

async fn set_state(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<StateInput>,
) -> HttpResult<Response> {
    let mut call = caller.call(path_id(&id)?);
    call.body = to_json(&body)?;
    send(&s, &t, ops::STATE, call, None).await
}

async fn reinstall(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
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
    let id = path_id(&id)?;
    let mut call = caller.clone().call(id.clone());
    call.body = to_json(&StateInput {
        state: bootfleet_api::machines::MachineState::Install,
        reason: Some("reinstall".into()),
    })?;
    let changed = send(&s, &t, ops::STATE, call, None).await?;
    if !power_cycle || !changed.status().is_success() {
        return Ok(changed);
    }
    // Through its BMC: a one-time PXE boot, then a power cycle, so the installer starts now.
    let mut call = caller.call(id);
    call.body = to_json(&PowerInput {
        action: PowerAction::Cycle,
        boot_device: Some(BootDevice::Pxe),
    })?;
    let cycled = send_on(
        &s.bus.with_timeout(POWER_WAIT, 1),
        &t,
        ops::POWER,
        call,
        None,
    )
    .await?;
    Ok(if cycled.status().is_success() {
        changed
    } else {
        cycled
    })
}

async fn import(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    req: Request,
) -> HttpResult<Response> {
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
    bootfleet_api::validate::artifact_id("artifactId", &site)?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_owned();
    let bytes = read_body(req, &s).await?;
    let text =
        String::from_utf8(bytes).map_err(|_| ApiError::invalid("body", "must be utf-8 text"))?;
    let mut call = caller.call(site);
    call.body = text;
    call.name = content_type;
    send(&s, &t, ops::IMPORT, call, None).await
}

// ---- node-facing ------------------------------------------------------------------------

async fn file(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    Path((id, template)): Path<(String, String)>,
) -> HttpResult<Response> {
    bootfleet_api::machines::template_name("template", &template)?;
    let mut call = caller.call(path_id(&id)?);
    call.name = template;
    send(&s, &t, ops::FILE, call, None).await
}

async fn inventory(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Inventory>,
) -> HttpResult<Response> {
    let mut call = caller.call(path_id(&id)?);
    call.body = to_json(&body)?;
    send(&s, &t, ops::INVENTORY, call, None).await
}

async fn event(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<MachineEventInput>,
) -> HttpResult<Response> {
    let mut call = caller.call(path_id(&id)?);
    call.body = to_json(&body)?;
    send(&s, &t, ops::EVENT, call, None).await
}

// ---- profiles and sites -----------------------------------------------------------------

async fn list_profiles(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> HttpResult<Response> {
    let params = list_params(q.as_deref())?;
    let mut call = caller.call(String::new());
    call.list = Some(params.to_proto());
    send(&s, &t, ops::PROFILE_LIST, call, None).await
}

async fn create_profile(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    JsonBody(body): JsonBody<ProfileInput>,
) -> HttpResult<Response> {
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("name", "is required"))?;
    bootfleet_api::machines::word("name", &name)?;
    let mut call = caller.call(uuid::Uuid::new_v4().to_string());
    call.body = to_json(&body)?;
    send(
        &s,
        &t,
        ops::PROFILE_CREATE,
        call,
        Some(format!("/api/profiles/{name}")),
    )
    .await
}

async fn by_name(
    State(s): State<AppState>,
    Extension(op): Extension<&'static str>,
    t: Trace,
    caller: Caller,
    Path(name): Path<String>,
) -> HttpResult<Response> {
    bootfleet_api::machines::word("name", &name)?;
    send(&s, &t, op, caller.call(name), None).await
}

async fn put_profile(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ProfileInput>,
) -> HttpResult<Response> {
    bootfleet_api::machines::word("name", &name)?;
    let location = format!("/api/profiles/{name}");
    let mut call = caller.call(name);
    call.body = to_json(&body)?;
    send(&s, &t, ops::PROFILE_PUT, call, Some(location)).await
}

async fn get_site(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    Path(site): Path<String>,
) -> HttpResult<Response> {
    bootfleet_api::validate::artifact_id("artifactId", &site)?;
    send(&s, &t, ops::SITE_GET, caller.call(site), None).await
}

async fn put_site(
    State(s): State<AppState>,
    t: Trace,
    caller: Caller,
    Path(site): Path<String>,
    JsonBody(body): JsonBody<SitePolicyInput>,
) -> HttpResult<Response> {
    bootfleet_api::validate::artifact_id("artifactId", &site)?;
    let mut call = caller.call(site);
    call.body = to_json(&body)?;
    send(&s, &t, ops::SITE_PUT, call, None).await
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
    let op = |op: &'static str| Extension(op);
    let m = "machines";
    let p = "profiles";
    vec![
        route(
            Method::GET,
            "/api/machines",
            Access::Read,
            "listMachines",
            "List machines (search mac, name, artifactId, state, profile, ip, ranks, groups)",
            m,
            list_query(bootfleet_api::list::fields::MACHINES),
            None,
            200,
            Body::Json(BodySchema::page_of::<MachineRow>()),
            routing::get(list_machines),
        ),
        route(
            Method::POST,
            "/api/machines",
            Access::Write,
            "createMachine",
            "Register a machine by its MAC at a site (state `ready` unless given); 409 when the MAC, or the name at that site, is taken",
            m,
            vec![],
            Some(BodySchema::requiring::<MachineInput>(&["mac", "artifactId"])),
            201,
            Body::json::<MachineRow>(),
            routing::post(create_machine),
        ),
        route(
            Method::POST,
            "/api/machines/import",
            Access::Write,
            "importMachines",
            "Bulk import: a MOC machines.txt (`<mac> <management-ip>` per line; text/plain) or a YAML nodes file (`<name>: {ranks, ip, mac, <other keys → metadata>}`; application/yaml). Each line is created, updated (same MAC) or refused with its line number and reason; good lines land even when others are refused",
            m,
            vec![IMPORT_SITE],
            None,
            200,
            Body::json::<ImportReport>(),
            routing::post(import),
        ),
        route(
            Method::GET,
            "/api/machines/{id}",
            Access::Read,
            "getMachine",
            "One machine, with its last inventory",
            m,
            vec![ID],
            None,
            200,
            Body::json::<MachineRow>(),
            routing::get(by_id).layer(op(ops::GET)),
        ),
        route(
            Method::PUT,
            "/api/machines/{id}",
            Access::Write,
            "updateMachine",
            "Change a machine's fields (those left out keep their values); a state change is recorded in its history",
            m,
            vec![ID],
            Some(BodySchema::of::<MachineInput>()),
            200,
            Body::json::<MachineRow>(),
            routing::put(update_machine),
        ),
        route(
            Method::DELETE,
            "/api/machines/{id}",
            Access::Write,
            "deleteMachine",
            "Forget a machine (its MAC is unknown again); answers with the deleted row",
            m,
            vec![ID],
            None,
            200,
            Body::json::<MachineRow>(),
            routing::delete(by_id).layer(op(ops::DELETE)),
        ),
        route(
            Method::PUT,
            "/api/machines/{id}/state",
            Access::Write,
            "setMachineState",
            "Move a machine to a state (discovered, inventory, ready, install, installed, rescue) with a reason; recorded with who and when",
            m,
            vec![ID],
            Some(BodySchema::of::<StateInput>()),
            200,
            Body::json::<MachineRow>(),
            routing::put(set_state),
        ),
        route(
            Method::POST,
            "/api/machines/{id}/reinstall",
            Access::Write,
            "reinstallMachine",
            "State `install` (reason `reinstall`): its next PXE boot runs its profile's installer. With `powerCycle=true`, its BMC then sets a one-time PXE boot and power-cycles it (errors as for power; the state is `install` either way)",
            m,
            vec![ID, POWER_CYCLE],
            None,
            200,
            Body::json::<MachineRow>(),
            routing::post(reinstall),
        ),
        route(
            Method::POST,
            "/api/machines/{id}/power",
            Access::Write,
            "powerMachine",
            "Power a machine through its BMC (IPMI or Redfish), run by its site's distributor: `on`, `off`, `cycle`, `reset` or `status`, optionally setting the next boot's device (`pxe`, `disk`) first. Answers the power state after the action; 400 without a BMC or when the BMC refuses its credentials (field `bmc.password`) or its certificate does not verify (`bmc.caCertificate`), 501 when the BMC does not support the operation, 503/504 when the BMC or the site's distributor cannot be reached",
            m,
            vec![ID],
            Some(BodySchema::of::<PowerInput>()),
            200,
            Body::json::<PowerResult>(),
            routing::post(power),
        ),
        route(
            Method::GET,
            "/api/machines/{id}/history",
            Access::Read,
            "getMachineHistory",
            "A machine's state changes, oldest first (the last 200): from, to, reason, by, at",
            m,
            vec![ID],
            None,
            200,
            Body::json::<MachineHistory>(),
            routing::get(by_id).layer(op(ops::HISTORY)),
        ),
        route(
            Method::GET,
            "/api/machines/{id}/timeline",
            Access::Read,
            "getMachineTimeline",
            "A machine's last 20 boots, newest first: each step (DHCP answer, file served, boot decision, script and template fetched, inventory, installed) with its time and the time since the previous step",
            m,
            vec![ID],
            None,
            200,
            Body::json::<Timeline>(),
            routing::get(by_id).layer(op(ops::TIMELINE)),
        ),
        route(
            Method::GET,
            "/api/machines/{id}/script",
            Access::MachineRead,
            "getMachineScript",
            "The iPXE script the machine boots in its state, rendered for it (text/plain). The machine's own token (header or ?token=), or an operator's; another machine's token gets 403",
            m,
            vec![ID, NODE_TOKEN],
            None,
            200,
            Body::Text,
            routing::get(by_id).layer(op(ops::SCRIPT)),
        ),
        route(
            Method::GET,
            "/api/machines/{id}/files/{template}",
            Access::MachineRead,
            "getMachineFile",
            "One of its profile's templates (kickstart, user-data, ...) rendered for the machine (text/plain). The machine's own token (header or ?token=), or an operator's; another machine's token gets 403",
            m,
            vec![ID, TEMPLATE, NODE_TOKEN],
            None,
            200,
            Body::Text,
            routing::get(file),
        ),
        route(
            Method::POST,
            "/api/machines/{id}/inventory",
            Access::MachineWrite,
            "reportMachineInventory",
            "The discovery image reports the machine's hardware; a discovered or inventory machine becomes ready. The machine's own token or an admin's",
            m,
            vec![ID, NODE_TOKEN],
            Some(BodySchema::of::<Inventory>()),
            200,
            Body::json::<MachineRow>(),
            routing::post(inventory),
        ),
        route(
            Method::POST,
            "/api/machines/{id}/events",
            Access::MachineWrite,
            "reportMachineEvent",
            "The installed system calls back (`{\"type\": \"installed\"}`): the machine becomes installed and its next PXE boot boots its disk. The machine's own token or an admin's",
            m,
            vec![ID, NODE_TOKEN],
            Some(BodySchema::of::<MachineEventInput>()),
            200,
            Body::json::<MachineRow>(),
            routing::post(event),
        ),
        route(
            Method::GET,
            "/api/machines/sites/{artifactId}",
            Access::Read,
            "getMachineSitePolicy",
            "What a site does with MACs it has no machine for (default `serve`: its configured script, as before machines existed)",
            m,
            vec![SITE],
            None,
            200,
            Body::json::<SitePolicy>(),
            routing::get(get_site),
        ),
        route(
            Method::PUT,
            "/api/machines/sites/{artifactId}",
            Access::Write,
            "setMachineSitePolicy",
            "Set a site's policy for unknown MACs: `ignore` (known machines only, an allow-list), `discover` (record them and boot the discovery profile) or `serve`",
            m,
            vec![SITE],
            Some(BodySchema::of::<SitePolicyInput>()),
            200,
            Body::json::<SitePolicy>(),
            routing::put(put_site),
        ),
        route(
            Method::GET,
            "/api/profiles",
            Access::Read,
            "listProfiles",
            "List profiles of templates",
            p,
            list_query(bootfleet_api::list::fields::PROFILES),
            None,
            200,
            Body::Json(BodySchema::page_of::<ProfileRow>()),
            routing::get(list_profiles),
        ),
        route(
            Method::POST,
            "/api/profiles",
            Access::Write,
            "createProfile",
            "A profile: its iPXE template, an optional rescue template and named installer templates, all MiniJinja; a template naming an unknown variable is refused (400)",
            p,
            vec![],
            Some(BodySchema::requiring::<ProfileInput>(&["name"])),
            201,
            Body::json::<ProfileRow>(),
            routing::post(create_profile),
        ),
        route(
            Method::GET,
            "/api/profiles/{name}",
            Access::Read,
            "getProfile",
            "One profile",
            p,
            vec![NAME],
            None,
            200,
            Body::json::<ProfileRow>(),
            routing::get(by_name).layer(op(ops::PROFILE_GET)),
        ),
        route(
            Method::PUT,
            "/api/profiles/{name}",
            Access::Write,
            "putProfile",
            "Create (201) or replace (200) the profile of this name",
            p,
            vec![NAME],
            Some(BodySchema::of::<ProfileInput>()),
            200,
            Body::json::<ProfileRow>(),
            routing::put(put_profile),
        ),
        route(
            Method::DELETE,
            "/api/profiles/{name}",
            Access::Write,
            "deleteProfile",
            "Delete a profile no machine uses (409 otherwise); answers with the deleted row",
            p,
            vec![NAME],
            None,
            200,
            Body::json::<ProfileRow>(),
            routing::delete(by_name).layer(op(ops::PROFILE_DELETE)),
        ),
    ]
}
