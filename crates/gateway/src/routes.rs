//! Every route of the gateway, described once: the router and the OpenAPI document are both
//! built from [`routes`], so they cannot drift apart. Each resource's routes are in a file of
//! their own under `routes/`; this file has what they share and the table itself.

use axum::extract::{Extension, Path, RawQuery, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodFilter, MethodRouter};
use axum::Json;
use bootfleet_api::list::ListFields;
use bootfleet_api::rest::Page;
use bootfleet_api::subjects::Op;
use bootfleet_api::{proto, validate, ApiError, ListParams};
use serde::Serialize;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::auth::Access;
use crate::http::{HttpError, HttpResult, Trace};
use crate::AppState;

mod actions;
pub(crate) mod artifacts;
mod boot_events;
mod commands;
pub(crate) mod distributors;
mod groups;
pub(crate) mod localnodes;
pub(crate) mod machines;
pub(crate) mod relay;
pub(crate) mod runs;
pub(crate) mod scripts;
mod sshkeys;
mod system;

/// Every route of the gateway: one line per resource.
pub fn routes() -> Vec<RouteDef> {
    [
        system::routes(),
        scripts::routes(),
        sshkeys::routes(),
        distributors::routes(),
        boot_events::routes(),
        localnodes::routes(),
        machines::routes(),
        groups::routes(),
        commands::routes(),
        runs::routes(),
        artifacts::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A parameter's type, for the OpenAPI document.
#[derive(Clone, Copy, Debug)]
pub enum ParamType {
    Uuid,
    String,
    Integer {
        min: u32,
        max: u32,
    },
    /// `sort`: comma-separated sortable fields of the list, each with an optional `-`.
    Sort(ListFields),
    /// `searchFields`: comma-separated searchable fields of the list.
    SearchFields(ListFields),
    /// A string matching this pattern (from `bootfleet_api::rules`, the validators' own).
    Pattern(fn() -> String),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// `true` or `false`.
    Boolean,
}

#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    pub in_path: bool,
    pub required: bool,
    pub ty: ParamType,
    pub description: &'static str,
}

/// The OpenAPI schema of a JSON body, taken from its Rust type: the name operations refer to
/// and the schemas to register for it (its own and those it refers to). Routes name their
/// bodies only this way, so every schema the document refers to is in it.
#[derive(Clone, Copy)]
pub struct BodySchema {
    name: fn() -> String,
    collect: fn(&mut Vec<(String, RefOr<Schema>)>),
    /// Fields this route requires though the type leaves them optional (a create, where the
    /// same type serves an update that keeps what is left out).
    pub required: &'static [&'static str],
}

impl BodySchema {
    pub fn of<T: ToSchema>() -> BodySchema {
        BodySchema::requiring::<T>(&[])
    }

    /// `T`, with `required` required on this route.
    pub fn requiring<T: ToSchema>(required: &'static [&'static str]) -> BodySchema {
        BodySchema {
            required,
            name: || T::name().into_owned(),
            collect: |schemas| {
                schemas.push((T::name().into_owned(), T::schema()));
                T::schemas(schemas);
            },
        }
    }

    /// A [`Page`] of `Row`s, under its name for that row type.
    pub fn page_of<Row: ToSchema>() -> BodySchema {
        BodySchema {
            required: &[],
            name: Page::<Row>::schema_name,
            collect: |schemas| {
                schemas.push((Page::<Row>::schema_name(), Page::<Row>::schema()));
                // A generic schema leaves its argument's own schema to the caller.
                schemas.push((Row::name().into_owned(), Row::schema()));
                Page::<Row>::schemas(schemas);
            },
        }
    }

    pub fn name(&self) -> String {
        (self.name)()
    }

    /// Appends this schema and every schema it refers to, by name.
    pub fn collect(&self, schemas: &mut Vec<(String, RefOr<Schema>)>) {
        (self.collect)(schemas)
    }
}

impl std::fmt::Debug for BodySchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BodySchema({})", self.name())
    }
}

/// What a successful response carries.
#[derive(Clone, Copy, Debug)]
pub enum Body {
    Json(BodySchema),
    /// A JSON document with no schema of ours (the OpenAPI document itself).
    AnyJson,
    Text,
    /// Prometheus metrics (`application/openmetrics-text`).
    OpenMetrics,
    /// Bytes (`application/octet-stream`).
    Binary,
    /// Server-sent events (`text/event-stream`) whose `data` is JSON of this schema.
    EventStream(BodySchema),
    /// Newline-delimited JSON (`application/x-ndjson`), streamed: one object of this schema
    /// per line.
    NdJson(BodySchema),
}

impl Body {
    pub fn json<T: ToSchema>() -> Body {
        Body::Json(BodySchema::of::<T>())
    }

    pub fn event_stream<T: ToSchema>() -> Body {
        Body::EventStream(BodySchema::of::<T>())
    }
}

pub struct RouteDef {
    pub method: Method,
    pub path: String,
    pub access: Access,
    pub operation_id: String,
    pub summary: String,
    pub tag: &'static str,
    pub params: Vec<Param>,
    /// The JSON request body.
    pub request: Option<BodySchema>,
    pub status: u16,
    pub response: Body,
    /// Other success statuses the route answers besides `status`, each with what it means (a
    /// PUT that makes a missing named row answers 201 as well as 200).
    pub also: Vec<(u16, &'static str)>,
    pub handler: MethodRouter<AppState>,
}

/// What a 201 from a name-keyed PUT means.
const CREATED_BY_NAME: &str = "created: no row had this name";

/// A route is declared by its method, path, access and handler ([`RouteDef::new`] routes the
/// handler for that method, so the method the document names is the one the handler answers),
/// then what the document says of it: [`RouteDef::doc`] and [`RouteDef::answers`] always, the
/// parameters and body where it has them.
impl RouteDef {
    pub(crate) fn new<H: Handler<T, AppState>, T: 'static>(
        method: Method,
        path: impl Into<String>,
        access: Access,
        handler: H,
    ) -> RouteDef {
        let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
        RouteDef::routed(method, path, access, routing::on(filter, handler))
    }

    /// A route whose handler is routed already (for tables that hold handlers of several
    /// types); `handler` must answer `method`.
    fn routed(
        method: Method,
        path: impl Into<String>,
        access: Access,
        handler: MethodRouter<AppState>,
    ) -> RouteDef {
        RouteDef {
            method,
            path: path.into(),
            access,
            operation_id: String::new(),
            summary: String::new(),
            tag: "",
            params: Vec::new(),
            request: None,
            // Not a status: `answers` sets it, and a test finds the routes that never call it.
            status: 0,
            response: Body::Text,
            also: Vec::new(),
            handler,
        }
    }

    /// The handler gets `value` as an `Extension` (which row kind or operation it serves).
    fn with<T: Clone + Send + Sync + 'static>(mut self, value: T) -> RouteDef {
        self.handler = self.handler.layer(Extension(value));
        self
    }

    /// Its tag, operation id and summary in the OpenAPI document.
    pub(crate) fn doc(
        mut self,
        tag: &'static str,
        operation_id: impl Into<String>,
        summary: impl Into<String>,
    ) -> RouteDef {
        self.tag = tag;
        self.operation_id = operation_id.into();
        self.summary = summary.into();
        self
    }

    /// Its path and query parameters.
    fn params(mut self, params: Vec<Param>) -> RouteDef {
        self.params = params;
        self
    }

    /// The JSON body it takes.
    fn body(mut self, request: BodySchema) -> RouteDef {
        self.request = Some(request);
        self
    }

    /// What it answers on success.
    pub(crate) fn answers(mut self, status: u16, response: Body) -> RouteDef {
        self.status = status;
        self.response = response;
        self
    }

    /// The route also answers `status` (a success besides its main one), meaning `meaning`.
    fn also(mut self, status: u16, meaning: &'static str) -> RouteDef {
        self.also.push((status, meaning));
        self
    }
}

impl std::fmt::Debug for RouteDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

const ID: Param = Param {
    name: "id",
    in_path: true,
    required: true,
    ty: ParamType::Uuid,
    description: "The row's id.",
};

/// The query parameters of a list whose sort and search fields are `fields`.
fn list_query(fields: ListFields) -> Vec<Param> {
    vec![
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
            ty: ParamType::Sort(fields),
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
            ty: ParamType::SearchFields(fields),
            description: "Comma-separated fields to search (default: all searchable fields).",
        },
    ]
}

const NODE_TOKEN: Param = Param {
    name: "token",
    in_path: false,
    required: false,
    ty: ParamType::String,
    description:
        "A `node` token, for clients that cannot send headers (iPXE, a kernel command line).",
};

/// The rows and total of a bus list answer.
trait ListReply: prost::Message + Default {
    /// A row as the service sends it.
    type Item: prost::Message + Default;
    fn into_parts(self) -> (Vec<Self::Item>, u64);
}

/// `list_reply!(proto::ThingList => proto::Thing)`: every list answer has `rows` and `total`.
macro_rules! list_reply {
    ($list:ty => $item:ty) => {
        impl super::ListReply for $list {
            type Item = $item;
            fn into_parts(self) -> (Vec<$item>, u64) {
                (self.rows, self.total)
            }
        }
    };
}
use list_reply;

/// A collection (`struct $collection`) at `/api/$name` whose service answers lists as `$list` of
/// `$item`, asked on `subjects::subject($service, op)`, each shown as `$row` (`From` the item),
/// sorted and searched by `$fields` (`bootfleet_api::list::fields`).
macro_rules! collection {
    ($collection:ident, $name:literal, $service:expr, $fields:expr, $list:ty => $item:ty, $row:ty) => {
        #[derive(Clone, Copy, Debug)]
        struct $collection;

        super::list_reply!($list => $item);

        impl super::Collection for $collection {
            type List = $list;
            type Row = $row;

            fn name(&self) -> &'static str {
                $name
            }

            fn subject(&self, op: bootfleet_api::subjects::Op) -> String {
                bootfleet_api::subjects::subject($service, op)
            }

            fn list_fields(&self) -> bootfleet_api::list::ListFields {
                $fields
            }

            fn row(&self, item: $item) -> Result<$row, bootfleet_api::ApiError> {
                Ok(<$row>::from(item))
            }
        }
    };
}
use collection;

/// A REST collection, `/api/<name>`, whose rows a service keeps: what the routes every
/// collection has in the same form ([`list_route`], [`row_route`]) ask on the
/// bus, and how the answers become REST rows.
trait Collection: Clone + Send + Sync + 'static {
    /// The service's list answer.
    type List: ListReply;
    /// A row as the REST API shows it.
    type Row: Serialize + ToSchema + Send;

    /// Its path, `/api/<name>`, and its tag in the document.
    fn name(&self) -> &'static str;

    fn subject(&self, op: Op) -> String;

    /// What its list may be sorted and searched by.
    fn list_fields(&self) -> ListFields;

    fn row(&self, item: Item<Self>) -> Result<Self::Row, ApiError>;

    /// The list request; the bare one unless the service needs more.
    fn list_request(&self, list: proto::ListRequest) -> impl prost::Message {
        list
    }

    /// How a get or a delete names the row (`id` is checked already).
    fn id_request(&self, id: String) -> impl prost::Message {
        proto::IdRequest { id }
    }
}

/// A row of `C` as the service sends it.
type Item<C> = <<C as Collection>::List as ListReply>::Item;

async fn list<C: Collection>(
    State(s): State<AppState>,
    Extension(collection): Extension<C>,
    Trace(t): Trace,
    RawQuery(q): RawQuery,
) -> HttpResult<Json<Page<C::Row>>> {
    let params = list_params(q.as_deref())?;
    let reply: C::List = s
        .bus
        .request(
            &t,
            &collection.subject(Op::List),
            &collection.list_request(params.to_proto()),
        )
        .await?;
    let (items, total) = reply.into_parts();
    let rows = items
        .into_iter()
        .map(|item| collection.row(item))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Page::new(rows, total, &params)))
}

/// A get or a delete (the route's `Op`): both name the row by id and answer with it.
async fn by_id<C: Collection>(
    State(s): State<AppState>,
    Extension(collection): Extension<C>,
    Extension(op): Extension<Op>,
    Trace(t): Trace,
    Path(id): Path<String>,
) -> HttpResult<Json<C::Row>> {
    let req = collection.id_request(path_id(&id)?);
    let item: Item<C> = s.bus.request(&t, &collection.subject(op), &req).await?;
    Ok(Json(collection.row(item)?))
}

/// `GET /api/<name>` with the list query parameters: a [`Page`] of rows.
fn list_route<C: Collection>(
    collection: C,
    operation_id: impl Into<String>,
    summary: impl Into<String>,
) -> RouteDef {
    let (name, fields) = (collection.name(), collection.list_fields());
    RouteDef::new(Method::GET, format!("/api/{name}"), Access::Read, list::<C>)
        .with(collection)
        .doc(name, operation_id, summary)
        .params(list_query(fields))
        .answers(200, Body::Json(BodySchema::page_of::<C::Row>()))
}

/// `GET /api/<name>/{id}` (`Op::Get`: the row) or `DELETE` (`Op::Delete`: answers with the
/// deleted row).
fn row_route<C: Collection>(
    collection: C,
    op: Op,
    operation_id: impl Into<String>,
    summary: impl Into<String>,
) -> RouteDef {
    let name = collection.name();
    let path = format!("/api/{name}/{{id}}");
    match op {
        Op::Delete => RouteDef::new(Method::DELETE, path, Access::Write, by_id::<C>),
        _ => RouteDef::new(Method::GET, path, Access::Read, by_id::<C>),
    }
    .with(op)
    .with(collection)
    .doc(name, operation_id, summary)
    .params(vec![ID])
    .answers(200, Body::json::<C::Row>())
}

/// A collection keyed by name (`/api/groups`, `/api/commands`, `/api/profiles`): what its five
/// routes say and do; the rest of them is the same for all such collections.
struct Named {
    /// The path under `/api/` and the tag: `groups`.
    name: &'static str,
    /// One row, in operation ids: `Group` (`listGroups`, `createGroup`, ...).
    one: &'static str,
    /// The `{name}` path parameter.
    key: Param,
    fields: ListFields,
    summaries: OfEach<&'static str>,
    handlers: OfEach<MethodRouter<AppState>>,
}

/// One `T` for each route of a [`Named`] collection.
struct OfEach<T> {
    list: T,
    create: T,
    get: T,
    /// Creates (201) or replaces (200) the row of its name.
    put: T,
    delete: T,
}

/// The list, create, get, put and delete routes of `n`, whose bodies are `I` and rows `R`.
fn named_routes<I: ToSchema, R: ToSchema>(n: Named) -> Vec<RouteDef> {
    let (name, one, s, h) = (n.name, n.one, n.summaries, n.handlers);
    let all = format!("/api/{name}");
    let by_name = |method, access, verb: &str, summary: &str, handler| {
        RouteDef::routed(method, format!("{all}/{{name}}"), access, handler)
            .doc(name, format!("{verb}{one}"), summary)
            .params(vec![n.key])
            .answers(200, Body::json::<R>())
    };
    vec![
        RouteDef::routed(Method::GET, &*all, Access::Read, h.list)
            .doc(name, format!("list{one}s"), s.list)
            .params(list_query(n.fields))
            .answers(200, Body::Json(BodySchema::page_of::<R>())),
        RouteDef::routed(Method::POST, &*all, Access::Write, h.create)
            .doc(name, format!("create{one}"), s.create)
            .body(BodySchema::requiring::<I>(&["name"]))
            .answers(201, Body::json::<R>()),
        by_name(Method::GET, Access::Read, "get", s.get, h.get),
        by_name(Method::PUT, Access::Write, "put", s.put, h.put)
            .body(BodySchema::of::<I>())
            .also(201, CREATED_BY_NAME),
        by_name(Method::DELETE, Access::Write, "delete", s.delete, h.delete),
    ]
}

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

/// Whether the client asked for the JSON row (`Accept: application/json` and not `text/plain`);
/// otherwise scripts are served raw so that iPXE can `chain` them and a shell can `curl | sh`
/// them. An extractor of its own: axum's `HeaderMap` one copies every header.
struct WantsJson(bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for WantsJson {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<WantsJson, Self::Rejection> {
        Ok(WantsJson(
            parts
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|accept| {
                    accept.contains("application/json") && !accept.contains("text/plain")
                }),
        ))
    }
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

/// A service's JSON answer as it is: 201 with `location` when it made a row, else 200.
fn json_answer(body: String, created: bool, location: Option<String>) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(v) = location
        .filter(|_| created)
        .and_then(|l| HeaderValue::from_str(&l).ok())
    {
        headers.insert(header::LOCATION, v);
    }
    response
}

/// A JSON answer that must not linger in caches (a private key, a script's output).
fn uncached<T: Serialize>(body: T) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A route declared without `doc` or `answers` would be in the document with no operation
    /// id, or answering a status of 0.
    #[test]
    fn every_route_is_documented_and_answers_a_success() {
        for route in routes() {
            assert!(
                !route.tag.is_empty()
                    && !route.operation_id.is_empty()
                    && !route.summary.is_empty(),
                "{route:?} has no doc"
            );
            assert!(
                (200..300).contains(&route.status),
                "{route:?} answers {}",
                route.status
            );
        }
    }
}
