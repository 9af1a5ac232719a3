//! The gateway's own routes: liveness, readiness and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::Json;
use bootfleet_api::rest::{Readiness, ServiceReadiness};

use super::{raw_text, Body, RouteDef};
use crate::auth::Access;
use crate::AppState;

async fn healthz() -> Response {
    raw_text("ok\n".into())
}

/// Every series of this process (in `bootfleet up`, of every service too).
async fn metrics() -> Response {
    bootfleet_telemetry::metrics::response()
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let nats = s.bus.is_connected();
    let mut services = Vec::new();
    for &service in &s.config.services {
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
}

async fn openapi(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.to_string(),
    )
}

pub(super) fn routes() -> Vec<RouteDef> {
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
            also: Vec::new(),
            handler: routing::get(healthz),
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
            response: Body::json::<Readiness>(),
            also: Vec::new(),
            handler: routing::get(readyz),
        },
        RouteDef {
            method: Method::GET,
            path: "/metrics".into(),
            // The API's listener may face the world: an operator token (Prometheus's
            // `authorization`), as for other reads. `BOOTFLEET_METRICS_LISTEN` serves the same
            // page without one, on an address only the scraper reaches.
            access: Access::Read,
            operation_id: "metrics".into(),
            summary: "Prometheus metrics of this process (OpenMetrics text)".into(),
            tag: "system",
            params: vec![],
            request: None,
            status: 200,
            response: Body::OpenMetrics,
            also: Vec::new(),
            handler: routing::get(metrics),
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
            also: Vec::new(),
            handler: routing::get(openapi),
        },
    ]
}
