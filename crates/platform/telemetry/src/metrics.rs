//! The process's metric registry, the series types the crates declare, and the tokenless
//! listener that serves them.

use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

/// What `/metrics` answers with (Prometheus reads OpenMetrics text natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

static REGISTRY: LazyLock<Mutex<Registry>> =
    LazyLock::new(|| Mutex::new(Registry::with_prefix("bootfleet")));

fn registry() -> MutexGuard<'static, Registry> {
    // A panic elsewhere while registering leaves the registry usable.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

fn register(name: &str, help: &str, metric: impl Metric) {
    registry().register(name, help, metric);
}

/// Every series of this process, as OpenMetrics text.
pub fn encode() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = text::encode_registry(&mut out, &registry());
    let _ = text::encode_eof(&mut out);
    out
}

/// The `/metrics` answer.
pub fn response() -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], encode()).into_response()
}

type Labels<const N: usize> = [(&'static str, String); N];

/// A counter per combination of `N` label values.
#[derive(Clone, Debug)]
pub struct LabeledCounter<const N: usize> {
    keys: [&'static str; N],
    family: Family<Labels<N>, Counter>,
}

impl<const N: usize> LabeledCounter<N> {
    pub fn inc(&self, values: [&str; N]) {
        self.inc_by(values, 1);
    }

    pub fn inc_by(&self, values: [&str; N], by: u64) {
        self.family.get_or_create(&self.labels(values)).inc_by(by);
    }

    /// The current count for `values` (for tests and heartbeats).
    pub fn get(&self, values: [&str; N]) -> u64 {
        self.family.get_or_create(&self.labels(values)).get()
    }

    fn labels(&self, values: [&str; N]) -> Labels<N> {
        std::array::from_fn(|i| (self.keys[i], values[i].to_owned()))
    }
}

/// Registers `bootfleet_<name>_total` with labels `keys` (`help` without a final period: the
/// encoder adds one). Label values must come from small
/// fixed sets (routes, kinds, outcomes), never from MACs, ids or user strings.
pub fn counter<const N: usize>(
    name: &str,
    help: &str,
    keys: [&'static str; N],
) -> LabeledCounter<N> {
    let family = Family::default();
    register(name, help, family.clone());
    LabeledCounter { keys, family }
}

/// A counter without labels.
#[derive(Clone, Debug, Default)]
pub struct PlainCounter(Counter);

impl PlainCounter {
    pub fn inc(&self) {
        self.0.inc();
    }

    pub fn inc_by(&self, by: u64) {
        self.0.inc_by(by);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Registers `bootfleet_<name>_total` without labels.
pub fn plain_counter(name: &str, help: &str) -> PlainCounter {
    let counter = PlainCounter::default();
    register(name, help, counter.0.clone());
    counter
}

/// Bucket boundaries, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buckets {
    /// A request: 1 ms to about 16 s.
    Request,
    /// A build: 0.25 s to about 17 min.
    Build,
}

fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn build_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.25, 2.0, 13))
}

/// A histogram per combination of `N` label values.
#[derive(Clone, Debug)]
pub struct LabeledHistogram<const N: usize> {
    keys: [&'static str; N],
    family: Family<Labels<N>, Histogram, fn() -> Histogram>,
}

impl<const N: usize> LabeledHistogram<N> {
    pub fn observe(&self, values: [&str; N], elapsed: Duration) {
        let labels = std::array::from_fn(|i| (self.keys[i], values[i].to_owned()));
        self.family
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// Registers the histogram `bootfleet_<name>` (in seconds: name it `..._seconds`).
pub fn histogram<const N: usize>(
    name: &str,
    help: &str,
    keys: [&'static str; N],
    buckets: Buckets,
) -> LabeledHistogram<N> {
    let constructor: fn() -> Histogram = match buckets {
        Buckets::Request => request_histogram,
        Buckets::Build => build_histogram,
    };
    let family = Family::new_with_constructor(constructor);
    register(name, help, family.clone());
    LabeledHistogram { keys, family }
}

/// Serves `/metrics` (and `/healthz`) without a token on `listener` until `shutdown` resolves:
/// the listener of `BOOTFLEET_METRICS_LISTEN`, meant for loopback or a private network that
/// only the scraper reaches.
///
/// Boxed on both sides, so axum's server is compiled here once rather than in every crate that
/// awaits it (see docs/architecture.md, "Compile time").
pub fn serve_metrics(
    listener: tokio::net::TcpListener,
    shutdown: BoxFuture<'static, ()>,
) -> BoxFuture<'static, std::io::Result<()>> {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(|| async { response() }))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    tracing::info!(addr = ?listener.local_addr().ok(), "metrics listening");
    Box::pin(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_encoded_with_their_labels_and_parse_as_prometheus_text() {
        let requests = counter("test_requests", "Requests", ["route", "status"]);
        let latency = histogram(
            "test_latency_seconds",
            "Latency",
            ["route"],
            Buckets::Request,
        );
        let plain = plain_counter("test_plain", "Plain");
        requests.inc(["/a/{id}", "404"]);
        requests.inc_by(["/a/{id}", "404"], 2);
        latency.observe(["/a/{id}"], Duration::from_millis(3));
        plain.inc();
        assert_eq!(requests.get(["/a/{id}", "404"]), 3);
        let text = encode();
        let scrape = bootfleet_testkit::metrics::Scrape::parse(&text).expect("openmetrics text");
        assert_eq!(
            scrape.total("bootfleet_test_requests", &[("status", "404")]),
            Some(3.0)
        );
        assert_eq!(
            scrape.total("bootfleet_test_requests", &[("status", "500")]),
            None
        );
        assert_eq!(scrape.total("bootfleet_test_plain", &[]), Some(1.0));
        assert_eq!(
            scrape.total("bootfleet_test_latency_seconds", &[("route", "/a/{id}")]),
            Some(1.0)
        );
    }
}
