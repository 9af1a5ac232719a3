//! Every route of the gateway, described once: the router and the OpenAPI document are both
//! built from [`routes`], so they cannot drift apart.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodRouter};
use axum::Json;
use bootfleet_api::rest::{
    DistributorConfigInput, DistributorPage, DistributorRow, DistributorStatusInput,
    GeneratedKeyPair, Readiness, ScriptInput, ScriptPage, ScriptRow, ServiceReadiness, SshKeyInput,
    SshKeyPage, SshKeyRow,
};
use bootfleet_api::subjects::{self, Op, ScriptKind};
use bootfleet_api::{proto, validate, ApiError, ListParams};

use crate::auth::Access;
use crate::http::{Deadline, HttpError, HttpResult, JsonBody, Trace};
use crate::AppState;

mod artifacts;
mod boot_events;
mod localnodes;

/// A parameter's type, for the OpenAPI document.
#[derive(Clone, Copy, Debug)]
pub enum ParamType {
    Uuid,
    String,
    Integer { min: u32, max: u32 },
}

#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub in_path: bool,
    pub required: bool,
    pub ty: ParamType,
    pub description: &'static str,
}

/// What a successful response carries.
#[derive(Clone, Copy, Debug)]
pub enum Body {
    /// A JSON body of the named schema.
    Json(&'static str),
    /// A JSON document with no schema of ours (the OpenAPI document itself).
    AnyJson,
    Text,
    /// Bytes (`application/octet-stream`).
    Binary,
    /// Server-sent events (`text/event-stream`) whose `data` is JSON of the named schema.
    EventStream(&'static str),
}

pub struct RouteDef {
    pub method: Method,
    pub path: String,
    pub access: Access,
    pub operation_id: String,
    pub summary: String,
    pub tag: &'static str,
    pub params: Vec<Param>,
    /// Schema name of the JSON request body.
    pub request: Option<&'static str>,
    pub status: u16,
    pub response: Body,
    pub handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for RouteDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

const KEYGEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

const ID: Param = Param {
    name: "id",
    in_path: true,
    required: true,
    ty: ParamType::Uuid,
    description: "The row's id.",
};

const LIST_PARAMS: [Param; 5] = [
    Param {
        name: "page",
        in_path: false,
        required: false,
        ty: ParamType::Integer {
            min: 1,
            max: bootfleet_api::list::MAX_PAGE,
        },
        description: "Page number, from 1 (default 1).",
    },
    Param {
        name: "pageSize",
        in_path: false,
        required: false,
        ty: ParamType::Integer {
            min: 1,
            max: bootfleet_api::list::MAX_PAGE_SIZE,
        },
        description: "Rows per page (default 10, at most 100).",
    },
    Param {
        name: "sort",
        in_path: false,
        required: false,
        ty: ParamType::String,
        description: "Comma-separated fields; a leading `-` sorts descending (`-createdAt`).",
    },
    Param {
        name: "search",
        in_path: false,
        required: false,
        ty: ParamType::String,
        description: "Case-insensitive substring to look for.",
    },
    Param {
        name: "searchFields",
        in_path: false,
        required: false,
        ty: ParamType::String,
        description: "Comma-separated fields to search (default: all searchable fields).",
    },
];

const NODE_TOKEN: Param = Param {
    name: "token",
    in_path: false,
    required: false,
    ty: ParamType::String,
    description:
        "A `node` token, for clients that cannot send headers (iPXE, a kernel command line).",
};

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|_| ApiError::invalid("query", "malformed query string"))
}

fn list_params(raw: Option<&str>) -> Result<ListParams, ApiError> {
    let pairs = query_pairs(raw)?;
    ListParams::from_query(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &["token"],
    )
}

/// The JSON row unless the client asked for JSON only: scripts are served raw so that iPXE can
/// `chain` them and a shell can `curl | sh` them.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(|accept| accept.contains("application/json") && !accept.contains("text/plain"))
        .unwrap_or(false)
}

fn raw_text(text: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

fn created<T: serde::Serialize>(location: String, body: T) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn path_id(id: &str) -> Result<String, HttpError> {
    Ok(validate::id("id", id)?)
}

fn script_routes(kind: ScriptKind) -> Vec<RouteDef> {
    let name = kind.name();
    let one = capitalized(kind.singular());
    let collection = format!("/api/{name}");
    let item = format!("/api/{name}/{{id}}");
    vec![
        RouteDef {
            method: Method::POST,
            path: collection.clone(),
            access: Access::Write,
            operation_id: format!("create{one}"),
            summary: format!("Create a {}", kind.singular()),
            tag: name,
            params: vec![],
            request: Some("ScriptInput"),
            status: 201,
            response: Body::Json("ScriptRow"),
            handler: routing::post(
                move |State(s): State<AppState>,
                      Trace(t): Trace,
                      JsonBody(body): JsonBody<ScriptInput>| async move {
                    validate::text("text", &body.text)?;
                    let id = uuid::Uuid::new_v4().to_string();
                    let req = proto::CreateScript {
                        id: id.clone(),
                        text: body.text,
                    };
                    let row: proto::Script =
                        s.bus.request(&t, &kind.subject(Op::Create), &req).await?;
                    HttpResult::Ok(created(
                        format!("/api/{}/{id}", kind.name()),
                        ScriptRow::from(row),
                    ))
                },
            ),
        },
        RouteDef {
            method: Method::GET,
            path: collection,
            access: Access::Read,
            operation_id: format!("list{}", capitalized(name)),
            summary: format!("List {name}"),
            tag: name,
            params: LIST_PARAMS.to_vec(),
            request: None,
            status: 200,
            response: Body::Json("ScriptPage"),
            handler: routing::get(
                move |State(s): State<AppState>, Trace(t): Trace, RawQuery(q): RawQuery| async move {
                    let params = list_params(q.as_deref())?;
                    let list: proto::ScriptList = s
                        .bus
                        .request(&t, &kind.subject(Op::List), &params.to_proto())
                        .await?;
                    HttpResult::Ok(Json(ScriptPage {
                        rows: list.rows.into_iter().map(ScriptRow::from).collect(),
                        total: list.total,
                        page: params.page,
                        page_size: params.page_size,
                        total_pages: params.total_pages(list.total),
                    }))
                },
            ),
        },
        RouteDef {
            method: Method::GET,
            path: item.clone(),
            access: Access::NodeRead,
            operation_id: format!("get{one}"),
            summary: format!(
                "The {} as text/plain (or its row as JSON with `Accept: application/json`)",
                kind.singular()
            ),
            tag: name,
            params: vec![ID, NODE_TOKEN],
            request: None,
            status: 200,
            response: Body::Text,
            handler: routing::get(
                move |State(s): State<AppState>,
                      Trace(t): Trace,
                      Path(id): Path<String>,
                      headers: HeaderMap| async move {
                    let req = proto::IdRequest { id: path_id(&id)? };
                    let row: proto::Script =
                        s.bus.request(&t, &kind.subject(Op::Get), &req).await?;
                    HttpResult::Ok(if wants_json(&headers) {
                        Json(ScriptRow::from(row)).into_response()
                    } else {
                        raw_text(row.text)
                    })
                },
            ),
        },
        RouteDef {
            method: Method::PUT,
            path: item.clone(),
            access: Access::Write,
            operation_id: format!("update{one}"),
            summary: format!("Replace a {}'s text", kind.singular()),
            tag: name,
            params: vec![ID],
            request: Some("ScriptInput"),
            status: 200,
            response: Body::Json("ScriptRow"),
            handler: routing::put(
                move |State(s): State<AppState>,
                      Trace(t): Trace,
                      Path(id): Path<String>,
                      JsonBody(body): JsonBody<ScriptInput>| async move {
                    let id = path_id(&id)?;
                    validate::text("text", &body.text)?;
                    let req = proto::UpdateScript {
                        id,
                        text: body.text,
                    };
                    let row: proto::Script =
                        s.bus.request(&t, &kind.subject(Op::Update), &req).await?;
                    HttpResult::Ok(Json(ScriptRow::from(row)))
                },
            ),
        },
        RouteDef {
            method: Method::DELETE,
            path: item,
            access: Access::Write,
            operation_id: format!("delete{one}"),
            summary: format!("Delete a {}; answers with the deleted row", kind.singular()),
            tag: name,
            params: vec![ID],
            request: None,
            status: 200,
            response: Body::Json("ScriptRow"),
            handler: routing::delete(
                move |State(s): State<AppState>, Trace(t): Trace, Path(id): Path<String>| async move {
                    let req = proto::IdRequest { id: path_id(&id)? };
                    let row: proto::Script =
                        s.bus.request(&t, &kind.subject(Op::Delete), &req).await?;
                    HttpResult::Ok(Json(ScriptRow::from(row)))
                },
            ),
        },
    ]
}

fn sshkey_routes() -> Vec<RouteDef> {
    let subject = |op| subjects::subject(subjects::SSHKEYS, op);
    vec![
        RouteDef {
            method: Method::POST,
            path: "/api/sshkeys".into(),
            access: Access::Write,
            operation_id: "createSshkey".into(),
            summary: "Register an SSH public key for a site".into(),
            tag: "sshkeys",
            params: vec![],
            request: Some("SshKeyInput"),
            status: 201,
            response: Body::Json("SshKeyRow"),
            handler: routing::post(
                move |State(s): State<AppState>, Trace(t): Trace, JsonBody(body): JsonBody<SshKeyInput>| async move {
                    validate::artifact_id("artifactId", &body.artifact_id)?;
                    let id = uuid::Uuid::new_v4().to_string();
                    let req = proto::CreateSshKey { id: id.clone(), text: body.text, artifact_id: body.artifact_id };
                    let row: proto::SshKey = s.bus.request(&t, &subject(Op::Create), &req).await?;
                    HttpResult::Ok(created(format!("/api/sshkeys/{id}"), SshKeyRow::from(row)))
                },
            ),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/sshkeys".into(),
            access: Access::Read,
            operation_id: "listSshkeys".into(),
            summary: "List SSH public keys".into(),
            tag: "sshkeys",
            params: LIST_PARAMS.to_vec(),
            request: None,
            status: 200,
            response: Body::Json("SshKeyPage"),
            handler: routing::get(
                move |State(s): State<AppState>, Trace(t): Trace, RawQuery(q): RawQuery| async move {
                    let params = list_params(q.as_deref())?;
                    let list: proto::SshKeyList = s.bus.request(&t, &subject(Op::List), &params.to_proto()).await?;
                    HttpResult::Ok(Json(SshKeyPage {
                        rows: list.rows.into_iter().map(SshKeyRow::from).collect(),
                        total: list.total,
                        page: params.page,
                        page_size: params.page_size,
                        total_pages: params.total_pages(list.total),
                    }))
                },
            ),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/sshkeys/{id}".into(),
            access: Access::NodeRead,
            operation_id: "getSshkey".into(),
            summary: "The public key line as text/plain (or its row as JSON with `Accept: application/json`)".into(),
            tag: "sshkeys",
            params: vec![ID, NODE_TOKEN],
            request: None,
            status: 200,
            response: Body::Text,
            handler: routing::get(
                move |State(s): State<AppState>, Trace(t): Trace, Path(id): Path<String>, headers: HeaderMap| async move {
                    let req = proto::IdRequest { id: path_id(&id)? };
                    let row: proto::SshKey = s.bus.request(&t, &subject(Op::Get), &req).await?;
                    HttpResult::Ok(if wants_json(&headers) {
                        Json(SshKeyRow::from(row)).into_response()
                    } else {
                        raw_text(format!("{}\n", row.text))
                    })
                },
            ),
        },
        RouteDef {
            method: Method::PUT,
            path: "/api/sshkeys/{id}".into(),
            access: Access::Write,
            operation_id: "updateSshkey".into(),
            summary: "Replace a registered key or move it to another site".into(),
            tag: "sshkeys",
            params: vec![ID],
            request: Some("SshKeyInput"),
            status: 200,
            response: Body::Json("SshKeyRow"),
            handler: routing::put(
                move |State(s): State<AppState>, Trace(t): Trace, Path(id): Path<String>, JsonBody(body): JsonBody<SshKeyInput>| async move {
                    let id = path_id(&id)?;
                    validate::artifact_id("artifactId", &body.artifact_id)?;
                    let req = proto::UpdateSshKey { id, text: body.text, artifact_id: body.artifact_id };
                    let row: proto::SshKey = s.bus.request(&t, &subject(Op::Update), &req).await?;
                    HttpResult::Ok(Json(SshKeyRow::from(row)))
                },
            ),
        },
        RouteDef {
            method: Method::DELETE,
            path: "/api/sshkeys/{id}".into(),
            access: Access::Write,
            operation_id: "deleteSshkey".into(),
            summary: "Delete a registered key; answers with the deleted row".into(),
            tag: "sshkeys",
            params: vec![ID],
            request: None,
            status: 200,
            response: Body::Json("SshKeyRow"),
            handler: routing::delete(
                move |State(s): State<AppState>, Trace(t): Trace, Path(id): Path<String>| async move {
                    let req = proto::IdRequest { id: path_id(&id)? };
                    let row: proto::SshKey = s.bus.request(&t, &subject(Op::Delete), &req).await?;
                    HttpResult::Ok(Json(SshKeyRow::from(row)))
                },
            ),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/sshkey".into(),
            access: Access::Read,
            operation_id: "generateSshkey".into(),
            summary: "Generate a key pair (ed25519 default; ecdsa-p256, ecdsa-p384, rsa-3072, rsa-4096). Nothing is stored".into(),
            tag: "sshkeys",
            params: vec![Param {
                name: "algorithm",
                in_path: false,
                required: false,
                ty: ParamType::String,
                description: "ed25519 (default), ecdsa-p256, ecdsa-p384, rsa-3072 (also `rsa`), rsa-4096.",
            }],
            request: None,
            status: 200,
            response: Body::Json("GeneratedKeyPair"),
            handler: routing::get(
                move |State(s): State<AppState>, Trace(t): Trace, deadline: Deadline, RawQuery(q): RawQuery| async move {
                    let mut algorithm = String::new();
                    for (k, v) in query_pairs(q.as_deref())? {
                        match k.as_str() {
                            "algorithm" => algorithm = v,
                            other => return Err(HttpError(ApiError::invalid(other, "unknown query parameter (expected algorithm)"))),
                        }
                    }
                    let req = proto::GenerateSshKey { algorithm };
                    // RSA-4096 can take seconds; a retry would only pile up more work.
                    let bus = s.bus.with_timeout(KEYGEN_TIMEOUT, 1);
                    deadline.allow(KEYGEN_TIMEOUT);
                    let pair: proto::GeneratedSshKey = bus.request(&t, &subject(Op::Generate), &req).await?;
                    let mut response = Json(GeneratedKeyPair::from(pair)).into_response();
                    // A private key must not linger in caches.
                    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    Ok(response)
                },
            ),
        },
    ]
}

fn distributor_routes() -> Vec<RouteDef> {
    let service = subjects::DISTRIBUTORS;
    vec![
        RouteDef {
            method: Method::GET,
            path: "/api/distributors".into(),
            access: Access::Read,
            operation_id: "listDistributors".into(),
            summary: "List site agents, with `online` and `lastSeen`".into(),
            tag: "distributors",
            params: LIST_PARAMS.to_vec(),
            request: None,
            status: 200,
            response: Body::Json("DistributorPage"),
            handler: routing::get(
                move |State(s): State<AppState>, Trace(t): Trace, RawQuery(q): RawQuery| async move {
                    let params = list_params(q.as_deref())?;
                    let list: proto::DistributorList =
                        s.bus.request(&t, &subjects::subject(service, Op::List), &params.to_proto()).await?;
                    HttpResult::Ok(Json(DistributorPage {
                        rows: list.rows.into_iter().map(DistributorRow::from).collect(),
                        total: list.total,
                        page: params.page,
                        page_size: params.page_size,
                        total_pages: params.total_pages(list.total),
                    }))
                },
            ),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/distributors/{id}".into(),
            access: Access::Read,
            operation_id: "getDistributor".into(),
            summary: "One site agent".into(),
            tag: "distributors",
            params: vec![ID],
            request: None,
            status: 200,
            response: Body::Json("DistributorRow"),
            handler: routing::get(
                move |State(s): State<AppState>, Trace(t): Trace, Path(id): Path<String>| async move {
                    let req = proto::IdRequest { id: path_id(&id)? };
                    let row: proto::Distributor = s.bus.request(&t, &subjects::subject(service, Op::Get), &req).await?;
                    HttpResult::Ok(Json(DistributorRow::from(row)))
                },
            ),
        },
        RouteDef {
            method: Method::PUT,
            path: "/api/distributors/{id}".into(),
            access: Access::Write,
            operation_id: "configureDistributor".into(),
            summary: "Hand ipxes artifacts to a site's PXE clients: the distributor fetches them from this system, checks their digests, and answers with what it now serves (503 if it is offline)".into(),
            tag: "distributors",
            params: vec![ID],
            request: Some("DistributorConfigInput"),
            status: 200,
            response: Body::Json("DistributorRow"),
            handler: routing::put(
                move |State(s): State<AppState>, Trace(t): Trace, deadline: Deadline, Path(id): Path<String>, headers: HeaderMap, JsonBody(body): JsonBody<DistributorConfigInput>| async move {
                    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
                    let artifact_id = body.artifact_id.unwrap_or_default();
                    if !artifact_id.is_empty() {
                        validate::artifact_id("artifactId", &artifact_id)?;
                    }
                    validate::ipv4_range("range", &body.range)?;
                    let url = |field, value: Option<String>| -> Result<String, ApiError> {
                        value.filter(|v| !v.is_empty()).map(|v| artifacts::local_path(field, &v, host)).transpose().map(Option::unwrap_or_default)
                    };
                    let req = proto::ConfigureDistributor {
                        id: path_id(&id)?,
                        artifact_id,
                        ipxe_pxe_uefi: url("ipxePxeUefiUrl", body.ipxe_pxe_uefi_url)?,
                        ipxe_pxe_bios: url("ipxePxeBiosUrl", body.ipxe_pxe_bios_url)?,
                        device: body.device,
                        range: body.range,
                    };
                    // The distributor fetches and checks files: allow it the time to.
                    let wait = std::time::Duration::from_secs(75);
                    deadline.allow(wait);
                    let row: proto::Distributor = s
                        .bus
                        .with_timeout(wait, 1)
                        .request(&t, &subjects::distributor_configure(), &req)
                        .await?;
                    HttpResult::Ok(Json(DistributorRow::from(row)))
                },
            ),
        },
        RouteDef {
            method: Method::PUT,
            path: "/api/distributors/{id}/status".into(),
            access: Access::Write,
            operation_id: "setDistributorStatus".into(),
            summary: "Start (`on: true`) or stop answering PXE clients; pushed to the agent at once".into(),
            tag: "distributors",
            params: vec![ID],
            request: Some("DistributorStatusInput"),
            status: 200,
            response: Body::Json("DistributorRow"),
            handler: routing::put(
                move |State(s): State<AppState>, Trace(t): Trace, Path(id): Path<String>, JsonBody(body): JsonBody<DistributorStatusInput>| async move {
                    let artifact_id = body.artifact_id.unwrap_or_default();
                    if !artifact_id.is_empty() {
                        validate::artifact_id("artifactId", &artifact_id)?;
                    }
                    let req = proto::SetDistributorStatus { id: path_id(&id)?, on: body.on, artifact_id };
                    let row: proto::Distributor = s.bus.request(&t, &subjects::distributor_set_status(), &req).await?;
                    HttpResult::Ok(Json(DistributorRow::from(row)))
                },
            ),
        },
    ]
}

fn system_routes() -> Vec<RouteDef> {
    vec![
        RouteDef {
            method: Method::GET,
            path: "/healthz".into(),
            access: Access::Public,
            operation_id: "healthz".into(),
            summary: "The gateway process is alive".into(),
            tag: "system",
            params: vec![],
            request: None,
            status: 200,
            response: Body::Text,
            handler: routing::get(|| async { raw_text("ok\n".into()) }),
        },
        RouteDef {
            method: Method::GET,
            path: "/readyz".into(),
            access: Access::Public,
            operation_id: "readyz".into(),
            summary: "NATS is connected and every service answers (503 otherwise)".into(),
            tag: "system",
            params: vec![],
            request: None,
            status: 200,
            response: Body::Json("Readiness"),
            handler: routing::get(|State(s): State<AppState>| async move {
                let nats = s.bus.is_connected();
                let mut services = Vec::new();
                for service in subjects::SERVICES {
                    let ready = nats && s.bus.ping(service).await.is_ok();
                    services.push(ServiceReadiness {
                        service: service.to_owned(),
                        ready,
                    });
                }
                let ready = nats && services.iter().all(|s| s.ready);
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (
                    status,
                    Json(Readiness {
                        ready,
                        nats,
                        services,
                    }),
                )
            }),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/openapi.json".into(),
            access: Access::Public,
            operation_id: "openapi".into(),
            summary: "This document".into(),
            tag: "system",
            params: vec![],
            request: None,
            status: 200,
            response: Body::AnyJson,
            handler: routing::get(|State(s): State<AppState>| async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    s.openapi.to_string(),
                )
            }),
        },
    ]
}

/// Every route of the gateway.
pub fn routes() -> Vec<RouteDef> {
    let mut all = system_routes();
    for kind in ScriptKind::ALL {
        all.extend(script_routes(kind));
    }
    all.extend(sshkey_routes());
    all.extend(distributor_routes());
    all.extend(localnodes::routes());
    all.extend(artifacts::routes());
    all.extend(boot_events::routes());
    all
}
