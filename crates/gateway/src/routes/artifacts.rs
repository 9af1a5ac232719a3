//! Boot artifacts: `/api/{ipxes,grubs,syslinuxs,isos}` (create, list, get, delete) and their
//! downloads, `/<kind>/<id>/<file>`, streamed from the object store with ETag and Range.

use axum::body::Body as HttpBody;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::Response;
use axum::routing;
use axum::Json;
use bootfleet_api::artifacts::{
    object_name, ArtifactKind, BuildState, GrubInput, GrubPage, GrubRow, IpxeInput, IpxePage,
    IpxeRow, IsoInput, IsoPage, IsoRow, SyslinuxInput, SyslinuxPage, SyslinuxRow,
};
use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, ApiError, ErrorCode};
use bootfleet_http_range::{decide, ETag, Representation};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{created, list_params, path_id, Body, Param, ParamType, RouteDef, ID, LIST_PARAMS};
use crate::auth::Access;
use crate::http::{HttpError, HttpResult, JsonBody, Trace};
use crate::AppState;

const SERVICE: &str = subjects::ARTIFACTS;

/// What differs between the kinds: their types and schema names.
trait Kind: Send + Sync + 'static {
    const KIND: ArtifactKind;
    const INPUT: &'static str;
    const ROW: &'static str;
    const PAGE: &'static str;
    type Input: DeserializeOwned + Serialize + Send + 'static;
    type Row: Serialize + Send;
    type Page: Serialize + Send;

    fn row(a: proto::Artifact) -> Result<Self::Row, ApiError>;
    fn page(rows: Vec<Self::Row>, total: u64, page: u32, page_size: u32, pages: u64) -> Self::Page;

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
    ($ty:ident, $kind:expr, $input:ident, $row:ident, $page:ident) => {
        struct $ty;
        impl Kind for $ty {
            const KIND: ArtifactKind = $kind;
            const INPUT: &'static str = stringify!($input);
            const ROW: &'static str = stringify!($row);
            const PAGE: &'static str = stringify!($page);
            type Input = $input;
            type Row = $row;
            type Page = $page;
            fn row(a: proto::Artifact) -> Result<$row, ApiError> {
                kind!(@row $row, a)
            }
            fn page(rows: Vec<$row>, total: u64, page: u32, page_size: u32, total_pages: u64) -> $page {
                $page { rows, total, page, page_size, total_pages }
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
    (@normalize $input:ident) => {};
}

kind!(Ipxes, ArtifactKind::Ipxes, IpxeInput, IpxeRow, IpxePage);
kind!(Grubs, ArtifactKind::Grubs, GrubInput, GrubRow, GrubPage);
kind!(
    Syslinuxs,
    ArtifactKind::Syslinuxs,
    SyslinuxInput,
    SyslinuxRow,
    SyslinuxPage
);
kind!(Isos, ArtifactKind::Isos, IsoInput, IsoRow, IsoPage);

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

async fn create<K: Kind>(
    s: AppState,
    t: bootfleet_bus::TraceParent,
    host: Option<String>,
    mut input: K::Input,
) -> HttpResult<Response> {
    K::normalize(&mut input, host.as_deref())?;
    let id = uuid::Uuid::new_v4().to_string();
    let req = proto::CreateArtifact {
        kind: K::KIND.name().to_owned(),
        id: id.clone(),
        inputs_json: serde_json::to_string(&input)
            .map_err(|e| ApiError::internal(format!("cannot encode the inputs: {e}")))?,
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

fn kind_routes<K: Kind>() -> Vec<RouteDef> {
    let kind = K::KIND;
    let name = kind.name();
    let one = super::capitalized(kind.singular());
    let collection = format!("/api/{name}");
    let item = format!("/api/{name}/{{id}}");
    let artifact_ref = move |id: &str| -> Result<proto::ArtifactRef, HttpError> {
        Ok(proto::ArtifactRef {
            kind: name.to_owned(),
            id: path_id(id)?,
        })
    };
    vec![
        RouteDef {
            method: Method::POST,
            path: collection.clone(),
            access: Access::Write,
            operation_id: format!("create{one}"),
            summary: format!(
                "Build a {}: answers at once with the row (`queued`, or `done` when the same content was built before); poll it for `progress` and `status`",
                kind.singular()
            ),
            tag: name,
            params: vec![],
            request: Some(K::INPUT),
            status: 201,
            response: Body::Json(K::ROW),
            handler: routing::post(
                |State(s): State<AppState>, Trace(t): Trace, headers: HeaderMap, JsonBody(input): JsonBody<K::Input>| async move {
                    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
                    create::<K>(s, t, host, input).await
                },
            ),
        },
        RouteDef {
            method: Method::GET,
            path: collection,
            access: Access::Read,
            operation_id: format!("list{}", super::capitalized(name)),
            summary: format!("List {name}"),
            tag: name,
            params: LIST_PARAMS.to_vec(),
            request: None,
            status: 200,
            response: Body::Json(K::PAGE),
            handler: routing::get(
                move |State(s): State<AppState>, Trace(t): Trace, RawQuery(q): RawQuery| async move {
                    let params = list_params(q.as_deref())?;
                    let req = proto::ListArtifacts { kind: name.to_owned(), list: Some(params.to_proto()) };
                    let list: proto::ArtifactList = s.bus.request(&t, &subjects::subject(SERVICE, Op::List), &req).await?;
                    let rows = list.rows.into_iter().map(K::row).collect::<Result<Vec<_>, _>>()?;
                    HttpResult::Ok(Json(K::page(rows, list.total, params.page, params.page_size, params.total_pages(list.total))))
                },
            ),
        },
        RouteDef {
            method: Method::GET,
            path: item.clone(),
            access: Access::Read,
            operation_id: format!("get{one}"),
            summary: format!("One {} with its build status", kind.singular()),
            tag: name,
            params: vec![ID],
            request: None,
            status: 200,
            response: Body::Json(K::ROW),
            handler: routing::get(
                move |State(s): State<AppState>, Trace(t): Trace, Path(id): Path<String>| async move {
                    let row: proto::Artifact = s.bus.request(&t, &subjects::subject(SERVICE, Op::Get), &artifact_ref(&id)?).await?;
                    HttpResult::Ok(Json(K::row(row)?))
                },
            ),
        },
        RouteDef {
            method: Method::DELETE,
            path: item,
            access: Access::Write,
            operation_id: format!("delete{one}"),
            summary: format!("Delete a {} and, once no other row shares them, its bytes; answers with the deleted row", kind.singular()),
            tag: name,
            params: vec![ID],
            request: None,
            status: 200,
            response: Body::Json(K::ROW),
            handler: routing::delete(
                move |State(s): State<AppState>, Trace(t): Trace, Path(id): Path<String>| async move {
                    let row: proto::Artifact = s.bus.request(&t, &subjects::subject(SERVICE, Op::Delete), &artifact_ref(&id)?).await?;
                    HttpResult::Ok(Json(K::row(row)?))
                },
            ),
        },
        RouteDef {
            method: Method::GET,
            path: format!("/{name}/{{id}}/{{file}}"),
            access: Access::NodeRead,
            operation_id: format!("download{one}"),
            summary: format!("Download a built {}'s file (Range, ETag, If-None-Match)", kind.singular()),
            tag: name,
            params: vec![
                ID,
                Param { name: "file", in_path: true, required: true, ty: ParamType::String, description: "A file of the artifact, as its row's `files` lists them." },
                super::NODE_TOKEN,
            ],
            request: None,
            status: 200,
            response: Body::Binary,
            handler: routing::get(
                move |State(s): State<AppState>, Trace(t): Trace, Path((id, file)): Path<(String, String)>, req: Request| async move {
                    download(s, t, artifact_ref(&id)?, file, req).await
                },
            ),
        },
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
    let mut all = kind_routes::<Ipxes>();
    all.extend(kind_routes::<Grubs>());
    all.extend(kind_routes::<Syslinuxs>());
    all.extend(kind_routes::<Isos>());
    all
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
