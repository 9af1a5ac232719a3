//! `/api/sshkeys`: SSH public keys registered per site, and `/api/sshkey`, a key pair generated
//! on demand (never stored).

use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use bootfleet_api::rest::{GeneratedKeyPair, SshKeyInput, SshKeyRow};
use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, validate, ApiError};

use super::{
    collection, created, list_route, path_id, query_pairs, raw_text, row_route, uncached, Body,
    BodySchema, Param, ParamType, RouteDef, WantsJson, ID, NODE_TOKEN,
};
use crate::auth::{Access, Claims};
use crate::http::{Deadline, HttpError, HttpResult, JsonBody, NewId, Trace};
use crate::AppState;

const KEYGEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn subject(op: Op) -> String {
    subjects::subject(subjects::SSHKEYS, op)
}

collection!(SshKeys, "sshkeys", subjects::SSHKEYS, bootfleet_api::list::fields::SSHKEYS, proto::SshKeyList => proto::SshKey, SshKeyRow);

async fn create(
    State(s): State<AppState>,
    Trace(t): Trace,
    NewId(id): NewId,
    JsonBody(body): JsonBody<SshKeyInput>,
) -> HttpResult<Response> {
    validate::artifact_id("artifactId", &body.artifact_id)?;
    let req = proto::CreateSshKey {
        id: id.clone(),
        text: body.text,
        artifact_id: body.artifact_id,
    };
    let row: proto::SshKey = s.bus.request(&t, &subject(Op::Create), &req).await?;
    Ok(created(format!("/api/sshkeys/{id}"), SshKeyRow::from(row)))
}

async fn get(
    State(s): State<AppState>,
    Trace(t): Trace,
    Path(id): Path<String>,
    claims: Option<Extension<Claims>>,
    WantsJson(json): WantsJson,
) -> HttpResult<Response> {
    let req = proto::IdRequest { id: path_id(&id)? };
    let row: proto::SshKey = s.bus.request(&t, &subject(Op::Get), &req).await?;
    // A node token bound to a site reads that site's keys only.
    crate::auth::may_read(
        claims.as_deref(),
        std::slice::from_ref(&row.artifact_id),
        &|| format!("key {}", row.id),
    )?;
    Ok(if json {
        Json(SshKeyRow::from(row)).into_response()
    } else {
        raw_text(format!("{}\n", row.text))
    })
}

async fn update(
    State(s): State<AppState>,
    Trace(t): Trace,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<SshKeyInput>,
) -> HttpResult<Json<SshKeyRow>> {
    let id = path_id(&id)?;
    validate::artifact_id("artifactId", &body.artifact_id)?;
    let req = proto::UpdateSshKey {
        id,
        text: body.text,
        artifact_id: body.artifact_id,
    };
    let row: proto::SshKey = s.bus.request(&t, &subject(Op::Update), &req).await?;
    Ok(Json(SshKeyRow::from(row)))
}

async fn generate(
    State(s): State<AppState>,
    Trace(t): Trace,
    deadline: Deadline,
    RawQuery(q): RawQuery,
) -> HttpResult<Response> {
    let mut algorithm = String::new();
    for (k, v) in query_pairs(q.as_deref())? {
        match k.as_str() {
            "algorithm" => algorithm = v,
            other => {
                return Err(HttpError(ApiError::invalid(
                    other,
                    "unknown query parameter (expected algorithm)",
                )))
            }
        }
    }
    let req = proto::GenerateSshKey { algorithm };
    // RSA-4096 can take seconds; a retry would only pile up more work.
    let bus = s.bus.with_timeout(KEYGEN_TIMEOUT, 1);
    deadline.allow(KEYGEN_TIMEOUT);
    let pair: proto::GeneratedSshKey = bus.request(&t, &subject(Op::Generate), &req).await?;
    Ok(uncached(GeneratedKeyPair::from(pair)))
}

pub(super) fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::new(Method::POST, "/api/sshkeys", Access::Write, create)
            .doc("sshkeys", "createSshkey", "Register an SSH public key for a site")
            .body(BodySchema::of::<SshKeyInput>())
            .answers(201, Body::json::<SshKeyRow>()),
        list_route(SshKeys, "listSshkeys", "List SSH public keys"),
        RouteDef::new(Method::GET, "/api/sshkeys/{id}", Access::NodeRead, get)
            .doc("sshkeys", "getSshkey", "The public key line as text/plain (or its row as JSON with `Accept: application/json`)")
            .params(vec![ID, NODE_TOKEN])
            .answers(200, Body::Text),
        RouteDef::new(Method::PUT, "/api/sshkeys/{id}", Access::Write, update)
            .doc("sshkeys", "updateSshkey", "Replace a registered key or move it to another site")
            .params(vec![ID])
            .body(BodySchema::of::<SshKeyInput>())
            .answers(200, Body::json::<SshKeyRow>()),
        row_route(SshKeys, Op::Delete,
            "deleteSshkey",
            "Delete a registered key; answers with the deleted row",
        ),
        RouteDef::new(Method::GET, "/api/sshkey", Access::Read, generate)
            .doc("sshkeys", "generateSshkey", "Generate a key pair (ed25519 default; ecdsa-p256, ecdsa-p384, rsa-3072, rsa-4096). Nothing is stored")
            .params(vec![Param {
                name: "algorithm",
                in_path: false,
                required: false,
                ty: ParamType::OneOf(bootfleet_api::rules::SSH_KEY_ALGORITHM_NAMES),
                description: "ed25519 (default), ecdsa-p256, ecdsa-p384, rsa-3072 (also `rsa`), rsa-4096.",
            }])
            .answers(200, Body::json::<GeneratedKeyPair>()),
    ]
}
