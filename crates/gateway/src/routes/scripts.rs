//! The text registries, `/api/{mainscripts,subscripts,kickstarts,prebootscripts,postbootscripts}`:
//! the same five routes for each kind. The handlers find their kind in the request's extensions.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bootfleet_api::rest::{ScriptInput, ScriptRow};
use bootfleet_api::subjects::{Op, ScriptKind};
use bootfleet_api::{proto, validate, ApiError};

use super::{
    capitalized, created, list_reply, list_route, path_id, raw_text, row_route, Body, BodySchema,
    Collection, RouteDef, WantsJson, ID, NODE_TOKEN,
};
use crate::auth::{Access, Claims};
use crate::http::{HttpResult, JsonBody, NewId, Trace};
use crate::AppState;

list_reply!(proto::ScriptList => proto::Script);

impl Collection for ScriptKind {
    type List = proto::ScriptList;
    type Row = ScriptRow;

    fn name(&self) -> &'static str {
        ScriptKind::name(*self)
    }

    fn subject(&self, op: Op) -> String {
        ScriptKind::subject(*self, op)
    }

    fn list_fields(&self) -> bootfleet_api::list::ListFields {
        bootfleet_api::list::fields::SCRIPTS
    }

    fn row(&self, script: proto::Script) -> Result<ScriptRow, ApiError> {
        Ok(ScriptRow::from(script))
    }
}

async fn create(
    State(s): State<AppState>,
    Extension(kind): Extension<ScriptKind>,
    Trace(t): Trace,
    NewId(id): NewId,
    JsonBody(body): JsonBody<ScriptInput>,
) -> HttpResult<Response> {
    validate::text("text", &body.text)?;
    let sites = body.sites.unwrap_or_default();
    validate::sites("sites", &sites)?;
    let req = proto::CreateScript {
        id: id.clone(),
        text: body.text,
        sites,
    };
    let row: proto::Script = s.bus.request(&t, &kind.subject(Op::Create), &req).await?;
    Ok(created(
        format!("/api/{}/{id}", kind.name()),
        ScriptRow::from(row),
    ))
}

async fn get(
    State(s): State<AppState>,
    Extension(kind): Extension<ScriptKind>,
    Trace(t): Trace,
    Path(id): Path<String>,
    claims: Option<Extension<Claims>>,
    WantsJson(json): WantsJson,
) -> HttpResult<Response> {
    let id = path_id(&id)?;
    let row = read(&s, &t, kind, id).await?;
    crate::auth::may_read(claims.as_deref(), &row.sites, &|| {
        format!("{} {}", kind.singular(), row.id)
    })?;
    Ok(if json {
        Json(ScriptRow::from(Arc::unwrap_or_clone(row))).into_response()
    } else {
        raw_text(row.text.clone())
    })
}

/// The script, from the gateway's cache when it holds it (see [`crate::script_cache`]); REST's
/// and gRPC's reads of one script both come here.
pub(crate) async fn read(
    s: &AppState,
    t: &bootfleet_bus::TraceParent,
    kind: ScriptKind,
    id: String,
) -> Result<Arc<proto::Script>, ApiError> {
    let cache = s.script_cache().await;
    let hit = cache.and_then(|c| c.get(kind, &id));
    crate::metrics::record_script_lookup(kind.name(), hit.is_some());
    if let Some(hit) = hit {
        return Ok(hit);
    }
    let epoch = cache.map(|c| c.epoch());
    let req = proto::IdRequest { id };
    let row: proto::Script = s.bus.request(t, &kind.subject(Op::Get), &req).await?;
    if let (Some(cache), Some(epoch)) = (cache, epoch) {
        cache.keep(kind, row.clone(), epoch);
    }
    Ok(Arc::new(row))
}

async fn update(
    State(s): State<AppState>,
    Extension(kind): Extension<ScriptKind>,
    Trace(t): Trace,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ScriptInput>,
) -> HttpResult<Json<ScriptRow>> {
    let id = path_id(&id)?;
    validate::text("text", &body.text)?;
    let replace_sites = body.sites.is_some();
    let sites = body.sites.unwrap_or_default();
    validate::sites("sites", &sites)?;
    let req = proto::UpdateScript {
        id,
        text: body.text,
        sites,
        replace_sites,
    };
    let row: proto::Script = s.bus.request(&t, &kind.subject(Op::Update), &req).await?;
    Ok(Json(ScriptRow::from(row)))
}

fn kind_routes(kind: ScriptKind) -> Vec<RouteDef> {
    let name = kind.name();
    let one = capitalized(kind.singular());
    let item = format!("/api/{name}/{{id}}");
    vec![
        RouteDef::new(Method::POST, format!("/api/{name}"), Access::Write, create)
            .with(kind)
            .doc(
                name,
                format!("create{one}"),
                format!("Create a {}", kind.singular()),
            )
            .body(BodySchema::of::<ScriptInput>())
            .answers(201, Body::json::<ScriptRow>()),
        list_route(
            kind,
            format!("list{}", capitalized(name)),
            format!("List {name}"),
        ),
        RouteDef::new(Method::GET, &item, Access::NodeRead, get)
            .with(kind)
            .doc(
                name,
                format!("get{one}"),
                format!(
                    "The {} as text/plain (or its row as JSON with `Accept: application/json`)",
                    kind.singular()
                ),
            )
            .params(vec![ID, NODE_TOKEN])
            .answers(200, Body::Text),
        RouteDef::new(Method::PUT, item, Access::Write, update)
            .with(kind)
            .doc(
                name,
                format!("update{one}"),
                format!(
                    "Replace a {}'s text (and its sites, when the body has them)",
                    kind.singular()
                ),
            )
            .params(vec![ID])
            .body(BodySchema::of::<ScriptInput>())
            .answers(200, Body::json::<ScriptRow>()),
        row_route(
            kind,
            Op::Delete,
            format!("delete{one}"),
            format!("Delete a {}; answers with the deleted row", kind.singular()),
        ),
    ]
}

pub(super) fn routes() -> Vec<RouteDef> {
    ScriptKind::ALL.into_iter().flat_map(kind_routes).collect()
}
