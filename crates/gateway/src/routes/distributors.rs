//! `/api/distributors`: the site agents. They register themselves by heartbeat; an operator
//! configures what they serve and switches them on or off.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method};
use axum::Json;
use bootfleet_api::rest::{
    DistributorConfigInput, DistributorRow, DistributorStatusInput, SiteCheck,
};
use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, validate, ApiError};
use bootfleet_bus::{Bus, TraceParent};

use super::artifacts::local_path;
use super::{collection, list_route, path_id, row_route, Body, BodySchema, RouteDef, ID};
use crate::auth::Access;
use crate::http::{Deadline, HttpResult, JsonBody, Trace};
use crate::AppState;

const SERVICE: &str = subjects::DISTRIBUTORS;

/// The distributor fetches and checks files before it answers a configuration.
const CONFIGURE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(75);

collection!(Distributors, "distributors", SERVICE, bootfleet_api::list::fields::DISTRIBUTORS, proto::DistributorList => proto::Distributor, DistributorRow);

/// The artifact id a body asks the row to have ("" when it names none; see [`SiteCheck`]).
fn site_check(check: Option<&SiteCheck>) -> Result<String, ApiError> {
    let artifact_id = check.and_then(SiteCheck::artifact_id).unwrap_or_default();
    if !artifact_id.is_empty() {
        validate::artifact_id("artifactId", artifact_id)?;
    }
    Ok(artifact_id.to_owned())
}

async fn configure(
    State(s): State<AppState>,
    Trace(t): Trace,
    deadline: Deadline,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DistributorConfigInput>,
) -> HttpResult<Json<DistributorRow>> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let req = proto::ConfigureDistributor {
        id,
        artifact_id: site_check(body.artifact_id.as_ref())?,
        ipxe_pxe_uefi: body.ipxe_pxe_uefi_url.unwrap_or_default(),
        ipxe_pxe_bios: body.ipxe_pxe_bios_url.unwrap_or_default(),
        device: body.device,
        range: body.range,
    };
    let row = configure_distributor(&s.bus, &t, &deadline, req, host).await?;
    Ok(Json(DistributorRow::from(row)))
}

/// Configures the distributor `req.id` (REST's and gRPC's configure): `req` as the caller gave
/// it, its artifacts named by URL (of this gateway, `host`), path or id; checked, the URLs made
/// paths, then sent with the wait the distributor needs to fetch and check the files.
pub(crate) async fn configure_distributor(
    bus: &Bus,
    trace: &TraceParent,
    deadline: &Deadline,
    mut req: proto::ConfigureDistributor,
    host: Option<&str>,
) -> Result<proto::Distributor, ApiError> {
    if !req.artifact_id.is_empty() {
        validate::artifact_id("artifactId", &req.artifact_id)?;
    }
    validate::ipv4_range("range", &req.range)?;
    for (field, url) in [
        ("ipxePxeUefiUrl", &mut req.ipxe_pxe_uefi),
        ("ipxePxeBiosUrl", &mut req.ipxe_pxe_bios),
    ] {
        if !url.is_empty() {
            *url = local_path(field, url, host)?;
        }
    }
    req.id = validate::id("id", &req.id)?;
    deadline.allow(CONFIGURE_TIMEOUT);
    bus.with_timeout(CONFIGURE_TIMEOUT, 1)
        .request(trace, &subjects::distributor_configure(), &req)
        .await
}

async fn set_status(
    State(s): State<AppState>,
    Trace(t): Trace,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DistributorStatusInput>,
) -> HttpResult<Json<DistributorRow>> {
    let artifact_id = site_check(body.artifact_id.as_ref())?;
    let req = proto::SetDistributorStatus {
        id: path_id(&id)?,
        on: body.on,
        artifact_id,
    };
    let row: proto::Distributor = s
        .bus
        .request(&t, &subjects::distributor_set_status(), &req)
        .await?;
    Ok(Json(DistributorRow::from(row)))
}

pub(super) fn routes() -> Vec<RouteDef> {
    vec![
        list_route(
            Distributors,
            "listDistributors",
            "List site agents, with `online` and `lastSeen`",
        ),
        row_route(Distributors, Op::Get, "getDistributor", "One site agent"),
        RouteDef::new(Method::PUT, "/api/distributors/{id}", Access::Write, configure)
            .doc("distributors", "configureDistributor", "Hand ipxes artifacts to a site's PXE clients: the distributor fetches them from this system, checks their digests, and answers with what it now serves (503 if it is offline)")
            .params(vec![ID])
            .body(BodySchema::of::<DistributorConfigInput>())
            .answers(200, Body::json::<DistributorRow>()),
        RouteDef::new(Method::PUT, "/api/distributors/{id}/status", Access::Write, set_status)
            .doc("distributors", "setDistributorStatus", "Start (`on: true`) or stop answering PXE clients; pushed to the agent at once")
            .params(vec![ID])
            .body(BodySchema::of::<DistributorStatusInput>())
            .answers(200, Body::json::<DistributorRow>()),
    ]
}
