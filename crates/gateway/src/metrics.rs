//! The gateway's series: every HTTP request by its route template (never the raw path, which
//! carries ids), method and status, with its latency; every gRPC call by its service, method and
//! status code, with its duration.

use std::sync::LazyLock;
use std::time::Duration;

use bootfleet_telemetry::{counter, histogram, Buckets, LabeledCounter, LabeledHistogram};

/// The route label of a request no route matched (a 404 from the fallback).
pub const UNMATCHED: &str = "unmatched";

/// A count of answered requests and a histogram of their durations, by the same labels.
struct Requests {
    count: LabeledCounter<3>,
    latency: LabeledHistogram<3>,
}

impl Requests {
    fn new(name: &str, counted: &str, timed: &str, labels: [&'static str; 3]) -> Requests {
        Requests {
            count: counter(&format!("{name}_requests"), counted, labels),
            latency: histogram(
                &format!("{name}_request_duration_seconds"),
                timed,
                labels,
                Buckets::Request,
            ),
        }
    }

    fn record(&self, labels: [&str; 3], elapsed: Duration) {
        self.count.inc(labels);
        self.latency.observe(labels, elapsed);
    }
}

struct Metrics {
    http: Requests,
    grpc: Requests,
    script_cache: LabeledCounter<2>,
    machine_files: LabeledCounter<1>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    http: Requests::new(
        "http",
        "HTTP requests the gateway answered, by route template, method and status",
        "Time to the response head, by route template, method and status",
        ["route", "method", "status"],
    ),
    grpc: Requests::new(
        "grpc",
        "gRPC calls the gateway answered, by service, method and status code",
        "Time from a gRPC call to its status (a stream's: to its end), by service, method and status code",
        ["service", "method", "code"],
    ),
    script_cache: counter(
        "gateway_script_cache_lookups",
        "Node reads of scripts by kind: answered from the gateway's copy (hit) or by the service (miss)",
        ["kind", "result"],
    ),
    machine_files: counter(
        "gateway_machine_file_cache_lookups",
        "Machines' reads of their rendered files: answered from the gateway's copy (hit) or by the service (miss)",
        ["result"],
    ),
}
});

/// Puts the gateway's series on the page before its first request.
pub fn register() {
    LazyLock::force(&METRICS);
}

/// Counts one answered request.
pub fn record(route: &str, method: &str, status: u16, elapsed: Duration) {
    let status = status.to_string();
    METRICS
        .http
        .record([route, method, status.as_str()], elapsed);
}

/// Counts one ended gRPC call.
pub fn record_grpc(service: &str, method: &str, code: &str, elapsed: Duration) {
    METRICS.grpc.record([service, method, code], elapsed);
}

/// Counts one lookup in the script cache.
pub fn record_script_lookup(kind: &str, hit: bool) {
    METRICS
        .script_cache
        .inc([kind, if hit { "hit" } else { "miss" }]);
}

/// Counts one machine-token read of a rendered file.
pub fn record_machine_file_lookup(hit: bool) {
    METRICS
        .machine_files
        .inc([if hit { "hit" } else { "miss" }]);
}
