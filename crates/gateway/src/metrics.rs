//! The gateway's series: every HTTP request by its route template (never the raw path, which
//! carries ids), method and status, with its latency.

use std::sync::LazyLock;
use std::time::Duration;

use bootfleet_telemetry::{counter, histogram, Buckets, LabeledCounter, LabeledHistogram};

/// The route label of a request no route matched (a 404 from the fallback).
pub const UNMATCHED: &str = "unmatched";

struct HttpMetrics {
    requests: LabeledCounter<3>,
    latency: LabeledHistogram<3>,
}

static METRICS: LazyLock<HttpMetrics> = LazyLock::new(|| HttpMetrics {
    requests: counter(
        "http_requests",
        "HTTP requests the gateway answered, by route template, method and status",
        ["route", "method", "status"],
    ),
    latency: histogram(
        "http_request_duration_seconds",
        "Time to the response head, by route template, method and status",
        ["route", "method", "status"],
        Buckets::Request,
    ),
});

/// Puts the gateway's series on the page before its first request.
pub fn register() {
    LazyLock::force(&METRICS);
}

/// Counts one answered request.
pub fn record(route: &str, method: &str, status: u16, elapsed: Duration) {
    let status = status.to_string();
    let labels = [route, method, status.as_str()];
    METRICS.requests.inc(labels);
    METRICS.latency.observe(labels, elapsed);
}
