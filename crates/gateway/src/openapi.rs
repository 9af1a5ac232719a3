//! The OpenAPI document, built from the route table (see [`crate::routes`]).

use std::collections::BTreeMap;

use bootfleet_api::artifacts::{
    ArtifactFileRow, BuildState, GrubInput, GrubPage, GrubRow, IpxeInput, IpxePage, IpxeRow,
    IsoInput, IsoPage, IsoRow, SyslinuxInput, SyslinuxPage, SyslinuxRow,
};
use bootfleet_api::rest::{
    BootEventRow, DistributorConfigInput, DistributorPage, DistributorRow, DistributorStatusInput,
    ErrorBody, ErrorEnvelope, GeneratedKeyPair, LocalNodeInput, LocalNodePage, LocalNodeRow,
    LocalNodeScriptInput, LocalNodeScriptResult, Readiness, ScriptInput, ScriptPage, ScriptRow,
    ServedFileRow, ServiceReadiness, SshKeyInput, SshKeyPage, SshKeyRow,
};
use bootfleet_api::ErrorCode;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    Required, ResponseBuilder,
};

use crate::auth::Access;
use crate::routes::{Body, ParamType, RouteDef};

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
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                .build(),
        )
        .build()
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
    if let Some(schema) = route.request {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(schema)))
                        .build(),
                )
                .required(Some(Required::True))
                .build(),
        ));
    }
    let ok = match route.response {
        Body::Json(schema) => ResponseBuilder::new().description("success").content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        ),
        Body::AnyJson => ResponseBuilder::new().description("success").content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Object).build()))
                .build(),
        ),
        Body::Text => ResponseBuilder::new().description("success").content(
            "text/plain",
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
                .build(),
        ),
        Body::EventStream(schema) => ResponseBuilder::new()
            .description(format!(
                "server-sent events until the client or the server goes away: `ready` once \
                 subscribed, one event named after each {schema}'s `kind` with the {schema} as \
                 JSON `data`, `gap` with `{{\"missed\": n}}` when a slow reader lost n events, \
                 and a comment line as keep-alive"
            ))
            .content(
                "text/event-stream",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
                    .build(),
            ),
        Body::Binary => ResponseBuilder::new()
            .description("the file's bytes (206 for a Range, 304 when the ETag matches)")
            .content(
                "application/octet-stream",
                ContentBuilder::new()
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                            .build(),
                    ))
                    .build(),
            ),
    };
    op = op.response(route.status.to_string(), ok.build());
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
        if route.access == Access::NodeRead {
            op = op.security(SecurityRequirement::new("nodeToken", Vec::<String>::new()));
        }
    }
    if route.params.iter().any(|p| p.in_path) {
        op = op.response("404", error_response("not_found: no row with this id"));
    }
    if route.request.is_some() {
        op = op
            .response(
                "409",
                error_response("conflict: the change conflicts with an existing row"),
            )
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
    let components = ComponentsBuilder::new()
        .schema_from::<ErrorCode>()
        .schema_from::<ErrorBody>()
        .schema_from::<ErrorEnvelope>()
        .schema_from::<ScriptInput>()
        .schema_from::<ScriptRow>()
        .schema_from::<ScriptPage>()
        .schema_from::<SshKeyInput>()
        .schema_from::<SshKeyRow>()
        .schema_from::<SshKeyPage>()
        .schema_from::<GeneratedKeyPair>()
        .schema_from::<DistributorRow>()
        .schema_from::<DistributorPage>()
        .schema_from::<DistributorStatusInput>()
        .schema_from::<DistributorConfigInput>()
        .schema_from::<ServedFileRow>()
        .schema_from::<BootEventRow>()
        .schema_from::<LocalNodeInput>()
        .schema_from::<LocalNodeRow>()
        .schema_from::<LocalNodePage>()
        .schema_from::<LocalNodeScriptInput>()
        .schema_from::<LocalNodeScriptResult>()
        .schema_from::<IpxeInput>()
        .schema_from::<IpxeRow>()
        .schema_from::<IpxePage>()
        .schema_from::<GrubInput>()
        .schema_from::<GrubRow>()
        .schema_from::<GrubPage>()
        .schema_from::<SyslinuxInput>()
        .schema_from::<SyslinuxRow>()
        .schema_from::<SyslinuxPage>()
        .schema_from::<IsoInput>()
        .schema_from::<IsoRow>()
        .schema_from::<IsoPage>()
        .schema_from::<BuildState>()
        .schema_from::<ArtifactFileRow>()
        .schema_from::<Readiness>()
        .schema_from::<ServiceReadiness>()
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
