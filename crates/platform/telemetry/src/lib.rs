//! What a process tells its operators besides its logs: Prometheus metrics (OpenMetrics text
//! on `/metrics`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, its spans over OTLP.
//!
//! Metrics live in one registry per process, so `bootfleet up` (every service and the gateway in
//! one process) shows everything on one page. Each crate declares its own series with
//! [`counter`], [`histogram`] and [`plain_counter`] in a `LazyLock` and forces it when it
//! starts, so a scrape shows every series of the process from the start.

pub mod metrics;
pub mod traces;

pub use metrics::{
    counter, encode, histogram, plain_counter, serve_metrics, Buckets, LabeledCounter,
    LabeledHistogram, PlainCounter, CONTENT_TYPE,
};
pub use traces::{init_logging, TraceGuard};
