//! The bus's series: requests as the asking side sees them (latency by outcome, failed
//! attempts by kind), requests as the answering service sees them, and the connection's
//! losses and recoveries. Subjects are the operation's (with a site's name in per-site ones,
//! or the service's subscription pattern), never an id.

use std::sync::LazyLock;

use bootfleet_telemetry::{
    counter, histogram, plain_counter, Buckets, LabeledCounter, LabeledHistogram, PlainCounter,
};

pub(crate) struct BusMetrics {
    /// A whole request with its retries, by subject and outcome (`ok` or the error code).
    pub requests: LabeledHistogram<2>,
    /// One failed attempt, by subject and kind (`no_responders`, `timed_out`, ...).
    pub attempt_errors: LabeledCounter<2>,
    /// A request a service answered, by its subscription and status (`ok` or the error code).
    pub handled: LabeledHistogram<2>,
    pub disconnects: PlainCounter,
    pub reconnects: PlainCounter,
}

pub(crate) static METRICS: LazyLock<BusMetrics> = LazyLock::new(|| BusMetrics {
    requests: histogram(
        "nats_request_duration_seconds",
        "Bus requests this process sent, retries included, by subject and outcome",
        ["subject", "outcome"],
        Buckets::Request,
    ),
    attempt_errors: counter(
        "nats_request_errors",
        "Bus request attempts that got no reply, by subject and kind",
        ["subject", "kind"],
    ),
    handled: histogram(
        "nats_handled_duration_seconds",
        "Bus requests this process's services answered, by subscription and status",
        ["subject", "status"],
        Buckets::Request,
    ),
    disconnects: plain_counter(
        "nats_disconnects",
        "Times this process lost its NATS connection",
    ),
    reconnects: plain_counter(
        "nats_reconnects",
        "Times this process got its NATS connection back after losing it",
    ),
});
