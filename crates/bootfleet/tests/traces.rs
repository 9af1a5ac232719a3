//! One REST request is one trace from the gateway to the service (and to the builder, for a
//! build): spans exported by an
//! in-process exporter, through the same layer `OTEL_EXPORTER_OTLP_ENDPOINT` turns on. Its own
//! test binary: the subscriber is global.

// Shared with the other observability tests; not every helper is used here.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use bootfleet_api::subjects::{Op, ScriptKind};
use bootfleet_gateway::auth::Role;
use bootfleet_testkit::NatsServer;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The finished spans of trace `trace_id` so far.
fn spans_in(exporter: &InMemorySpanExporter, trace_id: &str) -> Vec<SpanData> {
    exporter
        .get_finished_spans()
        .expect("finished spans")
        .into_iter()
        .filter(|s| hex(&s.span_context.trace_id().to_bytes()) == trace_id)
        .collect()
}

/// The finished spans of trace `trace_id`, once the gateway's and the service's are both in.
async fn spans_of(exporter: &InMemorySpanExporter, trace_id: &str, service: &str) -> Vec<SpanData> {
    for _ in 0..100 {
        let spans = spans_in(exporter, trace_id);
        if spans.iter().any(|s| s.name == service)
            && spans.iter().any(|s| s.name.starts_with("POST "))
        {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no gateway and service spans of trace {trace_id} within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_one_trace_from_the_gateway_to_the_service() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(bootfleet_telemetry::traces::layer(&provider)),
    )
    .expect("the only subscriber of this test binary");

    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let system = support::start_system(&nats, dir.path()).await;
    let admin = support::token(Role::Admin);
    let http = reqwest::Client::new();
    let create = ScriptKind::Mainscripts.subject(Op::Create);
    let post = |traceparent: Option<&'static str>| {
        let mut request = http
            .post(format!("{}/api/mainscripts", system.base_url()))
            .bearer_auth(&admin)
            .json(&json!({"text": "#!ipxe\nshell"}));
        if let Some(parent) = traceparent {
            request = request.header("traceparent", parent);
        }
        request.send()
    };

    // Without a traceparent the gateway's span is the root; its X-Trace-Id names the trace.
    let response = post(None).await.expect("post");
    assert_eq!(response.status(), 201);
    let trace_id = response.headers()["x-trace-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let spans = spans_of(&exporter, &trace_id, &create).await;
    let gateway = spans
        .iter()
        .find(|s| s.name == "POST /api/mainscripts")
        .expect("the gateway's span, named by its route");
    assert_eq!(gateway.span_kind, opentelemetry::trace::SpanKind::Server);
    assert_eq!(
        gateway.parent_span_id,
        opentelemetry::trace::SpanId::INVALID,
        "a root span"
    );
    let service = spans
        .iter()
        .find(|s| s.name == create)
        .expect("the service's span");
    assert_eq!(
        service.parent_span_id,
        gateway.span_context.span_id(),
        "the service's span is the gateway's child"
    );

    // A caller's traceparent: the same trace, the gateway's span its child.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = post(Some(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ))
    .await
    .expect("post");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-trace-id"], caller_trace);
    let spans = spans_of(&exporter, caller_trace, &create).await;
    let gateway = spans
        .iter()
        .find(|s| s.name == "POST /api/mainscripts")
        .expect("the gateway's span");
    assert_eq!(hex(&gateway.parent_span_id.to_bytes()), caller_span);
    assert!(gateway.parent_span_is_remote);
    let service = spans
        .iter()
        .find(|s| s.name == create)
        .expect("the service's span");
    assert_eq!(service.parent_span_id, gateway.span_context.span_id());

    // A build: the builder's span, taken from the queue, is in the request's trace too.
    let syslinuxs = format!("{}/api/syslinuxs", system.base_url());
    let body = json!({"fragment": "ldlinux.c32"});
    let response = support::post_created(&http, &syslinuxs, &admin, body).await;
    let trace_id = response.headers()["x-trace-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let create_artifact = bootfleet_api::subjects::subject("artifacts", Op::Create);
    let mut build = None;
    for _ in 0..600 {
        let spans = spans_in(&exporter, &trace_id);
        if let (Some(service), Some(built)) = (
            spans.iter().find(|s| s.name == create_artifact),
            spans.iter().find(|s| s.name == "build syslinuxs"),
        ) {
            build = Some((service.span_context.span_id(), built.parent_span_id));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (service, parent_of_build) =
        build.expect("the artifacts service's and the builder's spans in the trace within 60 s");
    assert_eq!(parent_of_build, service, "the build is the create's child");
    system.stop().await;
}
