//! Boot artifacts: `/api/{ipxes,grubs,syslinuxs,isos}` (create, list, get, delete) and their
//! downloads, `/<kind>/<id>/<file>`, streamed from the object store with ETag and Range.

use axum::body::Body as HttpBody;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::Response;
use bootfleet_api::artifacts::{
    object_name, sites_of, ArtifactKind, BuildState, GrubInput, GrubRow, IpxeInput, IpxeRow,
    IsoInput, IsoRow, SyslinuxInput, SyslinuxRow,
};
use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, ApiError, ErrorCode};
use bootfleet_http_range::{decide, ETag, Representation};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    capitalized, created, list_reply, list_route, path_id, row_route, Body, BodySchema, Collection,
    Param, ParamType, RouteDef, ID, NODE_TOKEN,
};
use crate::auth::Access;
use crate::http::{HttpResult, JsonBody, NewId, Trace};
use crate::AppState;

const SERVICE: &str = subjects::ARTIFACTS;

/// What differs between the kinds: their types.
pub(super) trait Kind: Copy + Send + Sync + 'static {
    const KIND: ArtifactKind;
    type Input: DeserializeOwned + Serialize + ToSchema + Send + 'static;
    type Row: Serialize + ToSchema + Send;

    fn row(a: proto::Artifact) -> Result<Self::Row, ApiError>;

    /// Rewrites what the gateway must resolve (URLs on this host) before the service sees it.
    fn normalize(_input: &mut Self::Input, _host: Option<&str>) -> Result<(), ApiError> {
        Ok(())
    }
}

fn stored_inputs<T: DeserializeOwned>(a: &proto::Artifact) -> Result<T, ApiError> {
    serde_json::from_str(&a.inputs_json)
        .map_err(|e| ApiError::internal(format!("stored inputs of {} do not parse: {e}", a.id)))
}

macro_rules! kind {
    ($ty:ident, $kind:expr, $input:ident, $row:ident) => {
        #[derive(Clone, Copy, Debug)]
        struct $ty;
        impl Kind for $ty {
            const KIND: ArtifactKind = $kind;
            type Input = $input;
            type Row = $row;
            fn row(a: proto::Artifact) -> Result<$row, ApiError> {
                kind!(@row $row, a)
            }
            kind!(@normalize $input);
        }
    };
    (@row IpxeRow, $a:ident) => {
        Ok(IpxeRow { build: BuildState::from_proto(&$a), input: stored_inputs(&$a)?, embedded: $a.embedded.unwrap_or(false) })
    };
    (@row $row:ident, $a:ident) => {
        Ok($row { build: BuildState::from_proto(&$a), input: stored_inputs(&$a)? })
    };
    (@normalize IsoInput) => {
        fn normalize(input: &mut IsoInput, host: Option<&str>) -> Result<(), ApiError> {
            for (field, url) in [
                ("ipxeUefiUrl", &mut input.ipxe_uefi_url),
                ("ipxeBiosUrl", &mut input.ipxe_bios_url),
                ("grubImgUrl", &mut input.grub_img_url),
                ("grubEfiX64Url", &mut input.grub_efi_x64_url),
                ("grubEfiX86Url", &mut input.grub_efi_x86_url),
                ("ldLinuxUrl", &mut input.ld_linux_url),
                ("isolinuxBinUrl", &mut input.isolinux_bin_url),
                ("isohdpfxBinUrl", &mut input.isohdpfx_bin_url),
            ] {
                *url = local_path(field, url, host)?;
            }
            Ok(())
        }
    };
    // The script's bound is checked here too: one larger than the bus carries would otherwise
    // be refused as "too large for the bus" rather than by the rule it breaks.
    (@normalize IpxeInput) => {
        fn normalize(input: &mut IpxeInput, _host: Option<&str>) -> Result<(), ApiError> {
            bootfleet_api::validate::text("script", &input.script)
        }
    };
    (@normalize $input:ident) => {};
}

kind!(Ipxes, ArtifactKind::Ipxes, IpxeInput, IpxeRow);
kind!(Grubs, ArtifactKind::Grubs, GrubInput, GrubRow);
kind!(
    Syslinuxs,
    ArtifactKind::Syslinuxs,
    SyslinuxInput,
    SyslinuxRow
);
kind!(Isos, ArtifactKind::Isos, IsoInput, IsoRow);

list_reply!(proto::ArtifactList => proto::Artifact);

/// One artifacts service keeps all kinds: its requests name the kind.
impl<K: Kind> Collection for K {
    type List = proto::ArtifactList;
    type Row = K::Row;

    fn name(&self) -> &'static str {
        K::KIND.name()
    }

    fn subject(&self, op: Op) -> String {
        subjects::subject(SERVICE, op)
    }

    fn list_fields(&self) -> bootfleet_api::list::ListFields {
        bootfleet_api::list::fields::ARTIFACTS
    }

    fn row(&self, artifact: proto::Artifact) -> Result<K::Row, ApiError> {
        K::row(artifact)
    }

    fn list_request(&self, list: proto::ListRequest) -> impl prost::Message {
        proto::ListArtifacts {
            kind: K::KIND.name().to_owned(),
            list: Some(list),
        }
    }

    fn id_request(&self, id: String) -> impl prost::Message {
        artifact_ref::<K>(id)
    }
}

/// An absolute URL on this gateway becomes its path; any other host is refused here, so the
/// system never fetches from an address a client chose.
pub(super) fn local_path(
    field: &'static str,
    url: &str,
    host: Option<&str>,
) -> Result<String, ApiError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(url.to_owned());
    };
    if scheme != "http" && scheme != "https" {
        return Err(ApiError::invalid(
            field,
            "must be an http(s) URL of this system, a path or an id",
        ));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let ours = host.is_some_and(|h| h.eq_ignore_ascii_case(authority));
    if !ours || authority.contains('@') {
        return Err(ApiError::invalid(
            field,
            format!(
                "must name an artifact of this system ({}), not {authority:?}",
                host.unwrap_or("this gateway")
            ),
        ));
    }
    Ok(path.split(['?', '#']).next().unwrap_or_default().to_owned())
}

fn artifact_ref<K: Kind>(id: String) -> proto::ArtifactRef {
    proto::ArtifactRef {
        kind: K::KIND.name().to_owned(),
        id,
    }
}

async fn create<K: Kind>(
    State(s): State<AppState>,
    Trace(t): Trace,
    headers: HeaderMap,
    NewId(id): NewId,
    JsonBody(mut input): JsonBody<K::Input>,
) -> HttpResult<Response> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    K::normalize(&mut input, host)?;
    let req = proto::CreateArtifact {
        kind: K::KIND.name().to_owned(),
        id: id.clone(),
        inputs_json: encode_inputs(&input)?,
    };
    let row: proto::Artifact = s
        .bus
        .request(&t, &subjects::subject(SERVICE, Op::Create), &req)
        .await?;
    Ok(created(
        format!("/api/{}/{id}", K::KIND.name()),
        K::row(row)?,
    ))
}

fn encode_inputs(input: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_string(input)
        .map_err(|e| ApiError::internal(format!("cannot encode the inputs: {e}")))
}

/// A kind's inputs as the gRPC API takes them (its REST body as JSON text), parsed and
/// normalized as [`create`] does, encoded for the service. No host resolves: URLs must be
/// paths or ids.
pub(crate) fn inputs_json(kind: ArtifactKind, json: &str) -> Result<String, ApiError> {
    fn of<K: Kind>(json: &str) -> Result<String, ApiError> {
        let mut input: K::Input = crate::http::parse_json(json.as_bytes())?;
        K::normalize(&mut input, None)?;
        encode_inputs(&input)
    }
    match kind {
        ArtifactKind::Ipxes => of::<Ipxes>(json),
        ArtifactKind::Grubs => of::<Grubs>(json),
        ArtifactKind::Syslinuxs => of::<Syslinuxs>(json),
        ArtifactKind::Isos => of::<Isos>(json),
    }
}

async fn download_file<K: Kind>(
    State(s): State<AppState>,
    Trace(t): Trace,
    Path((id, file)): Path<(String, String)>,
    req: Request,
) -> HttpResult<Response> {
    download(s, t, artifact_ref::<K>(path_id(&id)?), file, req).await
}

fn kind_routes<K: Kind>(kind: K) -> Vec<RouteDef> {
    let name = K::KIND.name();
    let singular = K::KIND.singular();
    let one = capitalized(singular);
    vec![
        RouteDef::new(Method::POST, format!("/api/{name}"), Access::Write, create::<K>)
            .doc(name, format!("create{one}"), format!(
                "Build a {singular}: answers at once with the row (`queued`, or `done` when the same content was built before); poll it for `progress` and `status`"
            ))
            .body(BodySchema::of::<K::Input>())
            .answers(201, Body::json::<K::Row>()),
        list_route(kind, format!("list{}", capitalized(name)), format!("List {name}")),
        row_route(kind, Op::Get,
            format!("get{one}"),
            format!("One {singular} with its build status"),
        ),
        row_route(kind, Op::Delete,
            format!("delete{one}"),
            format!("Delete a {singular} and, once no other row shares them, its bytes; answers with the deleted row"),
        ),
        RouteDef::new(Method::GET, format!("/{name}/{{id}}/{{file}}"), Access::NodeRead, download_file::<K>)
            .doc(name, format!("download{one}"), format!("Download a built {singular}'s file (Range, ETag, If-None-Match)"))
            .params(vec![
                ID,
                Param { name: "file", in_path: true, required: true, ty: ParamType::String, description: "A file of the artifact, as its row's `files` lists them." },
                NODE_TOKEN,
            ])
            .answers(200, Body::Binary),
    ]
}

async fn download(
    s: AppState,
    t: bootfleet_bus::TraceParent,
    artifact: proto::ArtifactRef,
    file: String,
    req: Request,
) -> HttpResult<Response> {
    let row: proto::Artifact = s
        .bus
        .request(&t, &subjects::subject(SERVICE, Op::Get), &artifact)
        .await?;
    // A node token bound to a site downloads what is marked for its site or for every site.
    crate::auth::may_read(
        req.extensions().get::<crate::auth::Claims>(),
        &sites_of(&row.inputs_json),
        &|| format!("{} {}", artifact.kind, row.id),
    )?;
    if row.status != "done" {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "{} {} is {}, not built yet",
                artifact.kind, row.id, row.status
            ),
        )
        .into());
    }
    let Some(entry) = row.files.iter().find(|f| f.name == file) else {
        return Err(
            ApiError::not_found(format!("file {file:?} of {} {}", artifact.kind, row.id)).into(),
        );
    };
    let etag = ETag::from_digest(&entry.sha256)
        .map_err(|_| ApiError::internal(format!("artifact {} has a malformed digest", row.id)))?;
    let representation = Representation {
        len: entry.size,
        etag,
        last_modified: None,
    };
    let answer = decide(req.method(), req.headers(), &representation);
    let mut response = Response::new(HttpBody::empty());
    *response.status_mut() = answer.status;
    response.headers_mut().extend(answer.headers);
    let content_type = if file.ends_with(".ipxe") || file.ends_with(".cfg") {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let Some(range) = answer.body else {
        return Ok(response);
    };
    // The head goes out before the bytes are read, so resuming a large file far in is not
    // held to the request deadline while the store skips to the range's start.
    let body = s
        .artifact_store()
        .await?
        .chunks(&object_name(&row.key, &entry.name), range)
        .await
        .map_err(ApiError::from)?;
    *response.body_mut() = HttpBody::from_stream(body);
    Ok(response)
}

pub(super) fn routes() -> Vec<RouteDef> {
    [
        kind_routes(Ipxes),
        kind_routes(Grubs),
        kind_routes(Syslinuxs),
        kind_routes(Isos),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_this_host_resolves() {
        let host = Some("gw.example:8080");
        assert_eq!(
            local_path("f", "http://gw.example:8080/ipxes/a/ipxe.efi?x=1", host).as_deref(),
            Ok("/ipxes/a/ipxe.efi")
        );
        assert_eq!(
            local_path("f", "/ipxes/a/b", host).as_deref(),
            Ok("/ipxes/a/b")
        );
        for bad in [
            "http://evil.example/ipxes/a/b",
            "http://gw.example:8080@evil.example/ipxes/a/b",
            "http://gw.example/ipxes/a/b",
            "ftp://gw.example:8080/ipxes/a/b",
            "file:///etc/passwd",
        ] {
            assert!(local_path("f", bad, host).is_err(), "{bad}");
        }
        assert!(local_path("f", "http://gw.example:8080/x", None).is_err());
    }
}
