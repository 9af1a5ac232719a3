//! `/api/localnodes`: hosts that came up. A node registers itself with its `node` token (the
//! original tutorial's nodes send the fields as a query string; a JSON body works too).

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bootfleet_api::rest::{
    LocalNodeInput, LocalNodeRow, LocalNodeScriptInput, LocalNodeScriptResult,
};
use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, validate, ApiError, ErrorCode};
use bootfleet_bus::{Bus, TraceParent};

use super::{
    collection, created, list_route, query_pairs, row_route, uncached, Body, BodySchema, Param,
    ParamType, RouteDef, ID,
};
use crate::auth::Access;
use crate::http::{Deadline, HttpResult, JsonBody, Trace};
use crate::AppState;

const SERVICE: &str = subjects::LOCALNODES;

collection!(LocalNodes, "localnodes", SERVICE, bootfleet_api::list::fields::LOCALNODES, proto::LocalNodeList => proto::LocalNode, LocalNodeRow);

fn query_param(name: &'static str, ty: ParamType, description: &'static str) -> Param {
    Param {
        name,
        in_path: false,
        required: false,
        ty,
        description,
    }
}

/// The registration from the query string, or `None` when the query names no field.
fn from_query(raw: Option<&str>) -> Result<Option<LocalNodeInput>, ApiError> {
    let pairs = query_pairs(raw)?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut input = LocalNodeInput {
        ip: String::new(),
        artifact_id: String::new(),
        mac: None,
        hostname: None,
        pingable: None,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "ip" => input.ip = value,
            "artifactId" => input.artifact_id = value,
            "mac" => input.mac = Some(value),
            "hostname" => input.hostname = Some(value),
            "pingable" => {
                input.pingable = Some(match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(ApiError::invalid("pingable", "must be true or false")),
                })
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "unknown parameter (ip, artifactId, mac, hostname, pingable)",
                ))
            }
        }
    }
    Ok(Some(input))
}

fn to_proto(input: LocalNodeInput) -> Result<proto::RegisterLocalNode, ApiError> {
    if input.ip.is_empty() {
        return Err(ApiError::invalid("ip", "is required"));
    }
    if input.artifact_id.is_empty() {
        return Err(ApiError::invalid("artifactId", "is required"));
    }
    // Early, field-named errors; the service validates again.
    check_fields(&input)?;
    Ok(proto::RegisterLocalNode {
        ip: input.ip,
        artifact_id: input.artifact_id,
        mac: input.mac.unwrap_or_default(),
        hostname: input.hostname.unwrap_or_default(),
        pingable: input.pingable.unwrap_or(false),
    })
}

fn check_fields(input: &LocalNodeInput) -> Result<(), ApiError> {
    validate::ip("ip", &input.ip)?;
    validate::artifact_id("artifactId", &input.artifact_id)?;
    if let Some(mac) = input.mac.as_deref().filter(|m| !m.is_empty()) {
        validate::mac("mac", mac)?;
    }
    if let Some(host) = input.hostname.as_deref().filter(|h| !h.is_empty()) {
        validate::hostname("hostname", host)?;
    }
    Ok(())
}

async fn register(
    State(s): State<AppState>,
    Trace(t): Trace,
    req: Request,
) -> HttpResult<Response> {
    let scope = req
        .extensions()
        .get::<crate::auth::Claims>()
        .and_then(|c| c.site.clone());
    let query = from_query(req.uri().query())?;
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let input = match (query, has_body) {
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "body",
                "give the fields in the query string or in a JSON body, not both",
            )
            .into())
        }
        (Some(q), false) => q,
        (None, _) => {
            let JsonBody(body) = JsonBody::<LocalNodeInput>::from_request(req, &s).await?;
            body
        }
    };
    let req = to_proto(input)?;
    // A node token scoped to a site registers nodes of that site only.
    if let Some(site) = scope.filter(|site| *site != req.artifact_id) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!(
                "artifactId: this node token is for site {site:?}, not {:?}",
                req.artifact_id
            ),
        )
        .into());
    }
    let registered: proto::RegisteredLocalNode = s
        .bus
        .request(&t, &subjects::subject(SERVICE, Op::Create), &req)
        .await?;
    let node = registered
        .node
        .ok_or_else(|| ApiError::internal("the localnodes service answered without a node"))?;
    let location = format!("/api/localnodes/{}", node.id);
    let row = LocalNodeRow::from(node);
    Ok(if registered.created {
        created(location, row)
    } else {
        (StatusCode::OK, Json(row)).into_response()
    })
}

async fn run_script(
    State(s): State<AppState>,
    Trace(t): Trace,
    deadline: Deadline,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<LocalNodeScriptInput>,
) -> HttpResult<Response> {
    let req = proto::RunNodeScript {
        id,
        script: body.script,
        private_key: body.private_key,
        user: body.user.unwrap_or_default(),
        timeout_seconds: body.timeout_seconds.unwrap_or(0),
    };
    let result = run_node_script(&s.bus, &t, &deadline, req).await?;
    Ok(uncached(LocalNodeScriptResult::from(result)))
}

/// Runs a script on the node `req.id` through its site's distributor (REST's and gRPC's run),
/// waiting as long as the script may take.
pub(crate) async fn run_node_script(
    bus: &Bus,
    trace: &TraceParent,
    deadline: &Deadline,
    mut req: proto::RunNodeScript,
) -> Result<proto::NodeExecResult, ApiError> {
    validate::text("script", &req.script)?;
    req.id = validate::id("id", &req.id)?;
    let wait = std::time::Duration::from_secs(u64::from(req.timeout_seconds.max(60)) + 30);
    deadline.allow(wait);
    bus.with_timeout(wait, 1)
        .request(trace, &subjects::localnodes_run_script(), &req)
        .await
}

pub(super) fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::new(Method::POST, "/api/localnodes", Access::NodeWrite, register)
            .doc("localnodes", "registerLocalNode", "A node registers itself (node or admin token, in the Authorization header; a node token scoped to a site registers that site's nodes only, 403 otherwise). Fields as a query string or a JSON body; registering the same ip at the same site again updates the row (200) instead of creating one (201)")
            .params(vec![
                query_param("ip", ParamType::String, "The node's IPv4 or IPv6 address (or in the JSON body, not both)."),
                query_param("artifactId", ParamType::Pattern(bootfleet_api::rules::artifact_id_pattern), "The site the node booted at (or in the JSON body, not both)."),
                query_param("mac", ParamType::Pattern(bootfleet_api::rules::mac_pattern), "Optional MAC address."),
                query_param("hostname", ParamType::String, "Optional host name."),
                query_param("pingable", ParamType::OneOf(&["true", "1", "false", "0"]), "Optional, `true` or `false`."),
            ])
            .body(BodySchema::of::<LocalNodeInput>())
            .answers(201, Body::json::<LocalNodeRow>())
            .also(200, "updated: the node was registered before"),
        list_route(
            LocalNodes,
            "listLocalNodes",
            "List registered nodes, with `pingable` and `lastSeen`",
        ),
        row_route(LocalNodes, Op::Get, "getLocalNode", "One registered node"),
        RouteDef::new(Method::PUT, "/api/localnodes/{id}/script", Access::Write, run_script)
            .doc("localnodes", "runLocalNodeScript", "Run a script on the node over SSH through its site's distributor; answers with stdout, stderr and the exit code. The private key is used for this run only (never stored or logged); the node's host key is recorded on first contact and must match afterwards (409). 503 when no distributor of the site is online, 504 when the script outlives timeoutSeconds")
            .params(vec![ID])
            .body(BodySchema::of::<LocalNodeScriptInput>())
            .answers(200, Body::json::<LocalNodeScriptResult>()),
        row_route(LocalNodes, Op::Delete,
            "deleteLocalNode",
            "Forget a node (it registers again when it next boots); answers with the deleted row",
        ),
    ]
}
