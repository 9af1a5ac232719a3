//! The gateway's own routes: liveness, readiness and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
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
        RouteDef::new(Method::GET, "/healthz", Access::Public, healthz)
            .doc("system", "healthz", "The gateway process is alive")
            .answers(200, Body::Text),
        RouteDef::new(Method::GET, "/readyz", Access::Public, readyz)
            .doc(
                "system",
                "readyz",
                "NATS is connected and every service answers (503 otherwise)",
            )
            .answers(200, Body::json::<Readiness>()),
        // The API's listener may face the world: an operator token (Prometheus's
        // `authorization`), as for other reads. `BOOTFLEET_METRICS_LISTEN` serves the same
        // page without one, on an address only the scraper reaches.
        RouteDef::new(Method::GET, "/metrics", Access::Read, metrics)
            .doc(
                "system",
                "metrics",
                "Prometheus metrics of this process (OpenMetrics text)",
            )
            .answers(200, Body::OpenMetrics),
        RouteDef::new(Method::GET, "/api/openapi.json", Access::Public, openapi)
            .doc("system", "openapi", "This document")
            .answers(200, Body::AnyJson),
    ]
}
