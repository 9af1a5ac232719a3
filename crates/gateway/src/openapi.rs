//! The OpenAPI document, built from the route table (see [`crate::routes`]).

use std::collections::BTreeMap;

use bootfleet_api::rest::ErrorEnvelope;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    RefOr, Required, ResponseBuilder, Schema,
};

use crate::auth::Access;
use crate::routes::{Body, BodySchema, ParamType, RouteDef};

/// What every non-2xx response carries.
fn error_schema() -> BodySchema {
    BodySchema::of::<ErrorEnvelope>()
}

/// Every schema the routes' bodies (and the error responses) refer to, by name, with the
/// schemas those refer to in turn; and the names given to two different schemas (two types of
/// the same name, or a generic type registered without its argument), which must be none.
pub fn schemas(routes: &[RouteDef]) -> (BTreeMap<String, RefOr<Schema>>, Vec<String>) {
    let mut found = Vec::new();
    error_schema().collect(&mut found);
    for route in routes {
        if let Some(request) = route.request {
            request.collect(&mut found);
        }
        if let Body::Json(response) | Body::EventStream(response) | Body::NdJson(response) =
            route.response
        {
            response.collect(&mut found);
        }
    }
    let mut by_name = BTreeMap::new();
    let mut clashes = Vec::new();
    for (name, schema) in found {
        match by_name.get(&name) {
            Some(known) if *known != schema => clashes.push(name),
            Some(_) => {}
            None => {
                by_name.insert(name, schema);
            }
        }
    }
    clashes.sort();
    clashes.dedup();
    open_flattened_inputs(&mut by_name);
    (by_name, clashes)
}

/// A row that flattens its input (`GrubRow` is a `BuildState` and a `GrubInput`) is an `allOf`
/// of the two; an input refuses unknown fields (`additionalProperties: false`), which would
/// refuse the row's other fields too. Such parts are inlined without that restriction.
fn open_flattened_inputs(schemas: &mut BTreeMap<String, RefOr<Schema>>) {
    let closed = |schema: &RefOr<Schema>| match schema {
        RefOr::T(Schema::Object(object))
            if matches!(
                object.additional_properties.as_deref(),
                Some(AdditionalProperties::FreeForm(false))
            ) =>
        {
            let mut open = object.clone();
            open.additional_properties = None;
            Some(RefOr::T(Schema::Object(open)))
        }
        _ => None,
    };
    let by_ref: BTreeMap<String, RefOr<Schema>> = schemas
        .iter()
        .filter_map(|(name, schema)| {
            Some((format!("#/components/schemas/{name}"), closed(schema)?))
        })
        .collect();
    for schema in schemas.values_mut() {
        if let RefOr::T(Schema::AllOf(all_of)) = schema {
            for item in &mut all_of.items {
                if let RefOr::Ref(reference) = item {
                    if let Some(open) = by_ref.get(&reference.ref_location) {
                        *item = open.clone();
                    }
                }
            }
        }
    }
}

fn method(m: &axum::http::Method) -> HttpMethod {
    match *m {
        axum::http::Method::POST => HttpMethod::Post,
        axum::http::Method::PUT => HttpMethod::Put,
        axum::http::Method::DELETE => HttpMethod::Delete,
        axum::http::Method::PATCH => HttpMethod::Patch,
        _ => HttpMethod::Get,
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    response(
        description,
        "application/json",
        Ref::from_schema_name(error_schema().name()),
    )
    .build()
}

/// A response meaning `description` whose body, of `content_type`, is `schema`.
fn response(
    description: impl Into<String>,
    content_type: &str,
    schema: impl Into<RefOr<Schema>>,
) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        content_type,
        ContentBuilder::new().schema(Some(schema)).build(),
    )
}

/// A schema that says only its type.
fn of_type(ty: Type) -> utoipa::openapi::schema::Object {
    ObjectBuilder::new().schema_type(ty).build()
}

fn operation(route: &RouteDef) -> utoipa::openapi::path::Operation {
    let mut op = OperationBuilder::new()
        .operation_id(Some(route.operation_id.clone()))
        .summary(Some(route.summary.clone()))
        .tag(route.tag);
    for p in &route.params {
        let schema = match p.ty {
            ParamType::Uuid => ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::Custom("uuid".into()))),
            ParamType::String => ObjectBuilder::new().schema_type(Type::String),
            ParamType::Integer { min, max } => ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(f64::from(min)))
                .maximum(Some(f64::from(max))),
            ParamType::Sort(fields) => ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(fields.sort_pattern())),
            ParamType::SearchFields(fields) => ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(fields.search_fields_pattern())),
            ParamType::Pattern(pattern) => ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern())),
            ParamType::OneOf(values) => ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(values.iter().copied())),
            ParamType::Boolean => ObjectBuilder::new().schema_type(Type::Boolean),
        };
        op = op.parameter(
            ParameterBuilder::new()
                .name(p.name)
                .parameter_in(if p.in_path {
                    ParameterIn::Path
                } else {
                    ParameterIn::Query
                })
                .required(if p.required {
                    Required::True
                } else {
                    Required::False
                })
                .description(Some(p.description))
                .schema(Some(schema.build())),
        );
    }
    if crate::idempotency::applies_to(&route.method) {
        op = op.parameter(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Makes a repeat of this write (same caller, method, path and body) answer \
                     as the first did for a day; a create gets an id derived from it. 1 to 255 \
                     visible ASCII characters. Reused with another request, or while the first \
                     is running: 409. See docs/reliability.md",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(255))
                        .pattern(Some("^[!-~]+$"))
                        .build(),
                )),
        );
    }
    if let Some(schema) = route.request {
        let reference = Ref::from_schema_name(schema.name());
        let body: RefOr<Schema> = if schema.required.is_empty() {
            reference.into()
        } else {
            let mut required = ObjectBuilder::new();
            for field in schema.required {
                required = required.required(*field);
            }
            AllOfBuilder::new()
                .item(reference)
                .item(required)
                .description(Some(format!(
                    "Here {} must be given.",
                    schema.required.join(", ")
                )))
                .into()
        };
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(body)).build(),
                )
                .required(Some(Required::True))
                .build(),
        ));
    }
    let ok = match route.response {
        Body::Json(schema) => response(
            "success",
            "application/json",
            Ref::from_schema_name(schema.name()),
        ),
        Body::AnyJson => response("success", "application/json", of_type(Type::Object)),
        Body::OpenMetrics => response(
            "success",
            "application/openmetrics-text",
            of_type(Type::String),
        ),
        Body::Text => response("success", "text/plain", of_type(Type::String)),
        Body::EventStream(schema) => {
            let schema = schema.name();
            response(
                format!(
                    "server-sent events until the client or the server goes away: `ready` once \
                 subscribed, one event named after each {schema}'s `kind` with the {schema} as \
                 JSON `data`, `gap` with `{{\"missed\": n}}` when a slow reader lost n events, \
                 and a comment line as keep-alive"
                ),
                "text/event-stream",
                of_type(Type::String),
            )
        }
        Body::NdJson(schema) => response(
            "newline-delimited JSON, streamed as it happens (chunked): one object per line",
            "application/x-ndjson",
            Ref::from_schema_name(schema.name()),
        ),
        Body::Binary => response(
            "the file's bytes (206 for a Range, 304 when the ETag matches)",
            "application/octet-stream",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                .build(),
        ),
    };
    let ok = ok.build();
    for (status, meaning) in &route.also {
        let mut other = ok.clone();
        other.description = (*meaning).into();
        op = op.response(status.to_string(), other);
    }
    op = op.response(route.status.to_string(), ok);
    let on_bus = route.tag != "system";
    if on_bus {
        op = op.response(
            "400",
            error_response(
                "invalid_argument: a field is missing or invalid (the envelope names it)",
            ),
        );
    }
    if route.access != Access::Public {
        op = op
            .response("401", error_response("unauthenticated: no valid token"))
            .response(
                "403",
                error_response("permission_denied: the token's role may not do this"),
            );
        op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        if route.access.accepts_query_token() {
            op = op.security(SecurityRequirement::new("nodeToken", Vec::<String>::new()));
        }
    }
    if route.params.iter().any(|p| p.in_path) {
        op = op.response("404", error_response("not_found: no row with this id"));
    }
    if route.method != axum::http::Method::GET && on_bus {
        op = op.response(
            "409",
            error_response(
                "conflict: the change conflicts with an existing row or a built-in one, or the \
                 Idempotency-Key was used for another request",
            ),
        );
    }
    // Every route: the gateway refuses a head larger than it reads (`http::edge`).
    op = op
        .response(
            "414",
            error_response("uri_too_long: the URI is over the gateway's limit (8 KiB)"),
        )
        .response(
            "431",
            error_response("headers_too_large: more than 100 headers, or over 32 KiB of them"),
        );
    if route.request.is_some() {
        op = op
            .response(
                "413",
                error_response("payload_too_large: the body exceeds the limit"),
            )
            .response(
                "415",
                error_response("unsupported_media_type: the body is not JSON"),
            );
    }
    if on_bus {
        op = op
            .response(
                "503",
                error_response("unavailable: no instance of the service answers"),
            )
            .response(
                "504",
                error_response("timeout: the service did not answer in time"),
            );
    }
    op.build()
}

/// The OpenAPI document of the routes given.
pub fn document(routes: &[RouteDef]) -> OpenApi {
    let mut by_path: BTreeMap<&str, PathItemBuilder> = BTreeMap::new();
    for route in routes {
        let item = by_path.remove(route.path.as_str()).unwrap_or_default();
        by_path.insert(
            &route.path,
            item.operation(method(&route.method), operation(route)),
        );
    }
    let mut paths = PathsBuilder::new();
    for (path, item) in by_path {
        paths = paths.path(path, item.build());
    }
    // Clashes are kept out by a test (`two_schemas_under_one_name_are_reported`).
    let (schemas, _clashes) = schemas(routes);
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        )
        .security_scheme(
            "nodeToken",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("token"))),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Bootfleet")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Nodes as a service: boot artifacts, boot script registries, site agents and \
                     the nodes they bring up. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::routes;
    use bootfleet_api::rest::{Page, ScriptRow, SshKeyRow};
    use serde_json::Value;

    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => found.push(r),
                        _ => refs(v, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    /// The schemas come from the routes' types: each one referred to is there, and nothing else
    /// (an event stream's data schema is named in its description: SSE bodies are text).
    #[test]
    fn every_schema_referred_to_is_registered_and_every_registered_one_is_used() {
        let routes = routes();
        let doc = serde_json::to_value(document(&routes)).expect("json");
        let event_data: Vec<String> = routes
            .iter()
            .filter_map(|r| match r.response {
                Body::EventStream(schema) => Some(schema.name()),
                _ => None,
            })
            .collect();
        let registered: Vec<&str> = doc["components"]["schemas"]
            .as_object()
            .expect("schemas")
            .keys()
            .map(String::as_str)
            .collect();
        let mut referred = Vec::new();
        refs(&doc, &mut referred);
        let mut referred: Vec<&str> = referred
            .into_iter()
            .map(|r| r.strip_prefix("#/components/schemas/").expect(r))
            .chain(event_data.iter().map(String::as_str))
            .collect();
        referred.sort_unstable();
        referred.dedup();
        assert_eq!(referred, registered);
        assert!(registered.contains(&"Page_ScriptRow"), "{registered:?}");
    }

    fn route_answering(path: &str, response: Body) -> RouteDef {
        RouteDef::new(axum::http::Method::GET, path, Access::Read, || async { "" })
            .doc("test", path, "")
            .answers(200, response)
    }

    #[test]
    fn two_schemas_under_one_name_are_reported() {
        assert_eq!(schemas(&routes()).1, Vec::<String>::new());
        // utoipa names every Page<T> `Page`: registered as a plain type, two pages would clash.
        let clashing = [
            route_answering("/a", Body::json::<Page<ScriptRow>>()),
            route_answering("/b", Body::json::<Page<SshKeyRow>>()),
        ];
        assert_eq!(schemas(&clashing).1, ["Page"]);
        let per_row = [
            route_answering("/a", Body::Json(BodySchema::page_of::<ScriptRow>())),
            route_answering("/b", Body::Json(BodySchema::page_of::<SshKeyRow>())),
        ];
        let (found, clashes) = schemas(&per_row);
        assert!(clashes.is_empty(), "{clashes:?}");
        assert!(found.contains_key("Page_ScriptRow") && found.contains_key("Page_SshKeyRow"));
    }
}
