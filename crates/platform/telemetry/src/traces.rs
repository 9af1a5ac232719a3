//! Logging to stderr and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans exported over OTLP/HTTP (protobuf). Unset,
//! no exporter, layer or span context exists: [`enabled`] is false and the trace context
//! helpers return at once.
//!
//! The bus carries its own W3C `traceparent`; [`set_remote_parent`] and [`span_ids`] connect it
//! to the exported spans, so a request is one trace from the gateway to the service.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OpenTelemetry layer is installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The OpenTelemetry layer over `provider`'s tracer, for Bootfleet's own spans (`bootfleet*`
/// targets, info and up: one per request and hop, not the libraries' internals). Marks
/// tracing as enabled.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    ENABLED.store(true, Ordering::Relaxed);
    let ours =
        tracing_subscriber::filter::Targets::new().with_target("bootfleet", tracing::Level::INFO);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("bootfleet"))
        .with_filter(ours)
}

/// Flushes and stops the exporter when dropped (at the end of `main`).
#[derive(Debug)]
#[must_use = "dropping the guard stops the span exporter"]
pub struct TraceGuard(Option<SdkTracerProvider>);

impl Drop for TraceGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("cannot flush the last spans: {e}");
            }
        }
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

/// The OTLP/HTTP exporter the standard `OTEL_EXPORTER_OTLP_*` variables describe.
fn otlp_provider(service_name: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithHttpConfig;
    // reqwest's blocking client owns a runtime, which must not be made (or dropped) on a
    // tokio worker thread.
    let client = std::thread::spawn(|| {
        reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
    })
    .join()
    .map_err(|_| "cannot make the otlp http client".to_owned())?
    .map_err(|e| format!("cannot make the otlp http client: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Logs to stderr (`BOOTFLEET_LOG` filter, `BOOTFLEET_LOG_FORMAT=json`; `default_filter`
/// without it, `guards` always added after it) and exports spans over OTLP when configured,
/// as `service_name` unless `OTEL_SERVICE_NAME` says otherwise.
pub fn init_logging(
    default_filter: &str,
    guards: &[&str],
    service_name: &str,
) -> Result<TraceGuard, String> {
    let mut filter =
        EnvFilter::try_from_env("BOOTFLEET_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    for guard in guards {
        filter = filter.add_directive(
            guard
                .parse()
                .map_err(|e| format!("log directive {guard}: {e}"))?,
        );
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = if std::env::var("BOOTFLEET_LOG_FORMAT").as_deref() == Ok("json") {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let provider = if otlp_configured() {
        Some(otlp_provider(service_name)?)
    } else {
        None
    };
    let logs = tracing_subscriber::registry().with(fmt.with_filter(filter));
    // Not an `Option` layer: an absent one counts as enabling every span, so the registry
    // would make each request's span (and look it up at every poll) with nothing to log it.
    match &provider {
        Some(provider) => logs.with(layer(provider)).init(),
        None => logs.init(),
    }
    if provider.is_some() {
        tracing::info!(service = service_name, "exporting spans over otlp");
    }
    Ok(TraceGuard(provider))
}

/// Makes `span` (not yet entered) the child of a remote span: the W3C context a request
/// arrived with. Nothing when tracing is off.
pub fn set_remote_parent(
    span: &tracing::Span,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
) {
    if !enabled() {
        return;
    }
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        flags,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The exported span's trace id, span id and sampling decision, for the `traceparent` the next
/// hop gets; `None` when tracing is off or the span is not recorded.
pub fn span_ids(span: &tracing::Span) -> Option<([u8; 16], [u8; 8], bool)> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    let span_ref = context.span();
    let ids = span_ref.span_context();
    ids.is_valid().then(|| {
        (
            ids.trace_id().to_bytes(),
            ids.span_id().to_bytes(),
            ids.is_sampled(),
        )
    })
}
