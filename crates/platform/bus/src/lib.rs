//! Typed request/reply over NATS.
//!
//! Requests and replies are protobuf messages (`bootfleet_api::proto`). A reply carries the
//! header `Bf-Status: ok` and the response message, or `Bf-Status: error` and a `ServiceError`,
//! whose code the gateway maps to an HTTP status. Services subscribe in a queue group named
//! after the service, so any number of instances share the load. Requests are retried when no
//! instance answered (no responders, or an instance died mid-request): every operation is made
//! idempotent by its caller (creates carry the new row's id), so a retry never duplicates.

mod artifact_store;
mod boot_events;
mod config;
mod metrics;
mod replays;
mod service;
pub mod streams;
mod trace;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use async_nats::header::HeaderMap;
use bootfleet_api::{proto, ApiError, ErrorCode};
use futures_util::future::BoxFuture;
use prost::Message;

pub use artifact_store::{ArtifactStore, ArtifactStoreError, ObjectChunks, StoredObject};
pub use boot_events::{BootEventItem, BootEvents};
pub use config::{Auth, BusConfig, Tls};
pub use replays::{Claim, ReplayStore};
pub use service::{RequestCtx, RunningService, ServiceBuilder, SiteRequest, StatefulRoutes};
pub use trace::TraceParent;

/// A log filter directive every process adds after its own (`BOOTFLEET_LOG`): async-nats logs
/// the payload of every message it reads at `trace` (and its CONNECT, with the login's password),
/// and some requests carry secrets (a BMC's password, an SSH private key). This keeps that module
/// at `debug`, whatever the operator's filter says.
pub const LOG_SECRET_GUARD: &str = "async_nats::connection=debug";

pub const STATUS_HEADER: &str = "Bf-Status";
pub const INSTANCE_HEADER: &str = "Bf-Instance";
pub const TRACEPARENT_HEADER: &str = "traceparent";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to nats at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        subject: String,
        source: async_nats::SubscribeError,
    },
    #[error("cannot read nats credentials: {0}")]
    Credentials(std::io::Error),
    #[error("nats tls: {0}")]
    Tls(String),
    #[error("nats-server did not confirm what this client sent: {0}")]
    Sync(String),
}

/// Returns once nats-server has processed everything `client` sent before, subscriptions
/// included, so that a message another connection publishes afterwards reaches them.
/// `async_nats::Client::flush` is not enough: it only writes the local buffer to the socket.
///
/// The round trip is a request to a fresh subject in the client's own inbox space, where nobody
/// listens: the server answers "no responders" itself, after the ops sent before it. Every user
/// Bootfleet generates may publish there (a distributor only under its own inbox prefix).
pub async fn sync(client: &async_nats::Client, timeout: Duration) -> Result<(), BusError> {
    let request = async_nats::Request::new().timeout(Some(timeout));
    match client.send_request(client.new_inbox(), request).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(BusError::Sync(e.to_string())),
    }
}

/// A connection to the bus. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    timeout: Duration,
    attempts: u32,
    jetstream_replicas: usize,
}

/// A reply as received, before decoding: which instance answered, and the outcome.
#[derive(Debug)]
pub struct Reply<R> {
    pub instance: Option<String>,
    pub body: R,
}

impl Bus {
    pub fn connect(config: &BusConfig) -> BoxFuture<'_, Result<Bus, BusError>> {
        // Boxed: rustc compiles an async body again in every crate that awaits it, and the
        // NATS client's connection code is large (see docs/architecture.md, "Compile time").
        Box::pin(Self::open(config))
    }

    async fn open(config: &BusConfig) -> Result<Bus, BusError> {
        let client = config.connect().await?;
        // Every series of the bus is on the page from the start, not from its first use.
        LazyLock::force(&metrics::METRICS);
        Ok(Bus {
            client,
            timeout: config.request_timeout,
            attempts: config.attempts.max(1),
            jetstream_replicas: config.jetstream_replicas.max(1),
        })
    }

    /// The same connection with another per-attempt timeout and attempt count, for operations
    /// that are slow (key generation) or must not be repeated.
    pub fn with_timeout(&self, timeout: Duration, attempts: u32) -> Bus {
        Bus {
            client: self.client.clone(),
            timeout,
            attempts: attempts.max(1),
            jetstream_replicas: self.jetstream_replicas,
        }
    }

    /// The replicas of the JetStream streams and buckets this process makes
    /// ([`BusConfig::jetstream_replicas`]).
    pub fn jetstream_replicas(&self) -> usize {
        self.jetstream_replicas
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// See [`sync`]; waits up to this bus's request timeout.
    pub async fn sync(&self) -> Result<(), BusError> {
        sync(&self.client, self.timeout).await
    }

    /// Asks one instance of `service` whether it is there (for readiness), once, briefly.
    pub async fn ping(&self, service: &str) -> Result<proto::Pong, ApiError> {
        let payload = bytes::Bytes::from(proto::Empty {}.encode_to_vec());
        let trace = TraceParent::new_root();
        let request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(Duration::from_millis(1000)));
        let reply = self
            .client
            .send_request(bootfleet_api::subjects::ping(service), request)
            .await
            .map_err(|e| {
                ApiError::unavailable(format!(
                    "{service} does not answer: {e} (trace {})",
                    trace.trace_id()
                ))
            })?;
        decode_reply(reply).map(|r| r.body)
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Sends `req` to `subject` and decodes the reply, retrying when no instance answered.
    pub async fn request<Req, Resp>(
        &self,
        trace: &TraceParent,
        subject: &str,
        req: &Req,
    ) -> Result<Resp, ApiError>
    where
        Req: Message,
        Resp: Message + Default,
    {
        self.request_from(trace, subject, req).await.map(|r| r.body)
    }

    /// Like [`Bus::request`], and also tells which service instance answered.
    pub async fn request_from<Req, Resp>(
        &self,
        trace: &TraceParent,
        subject: &str,
        req: &Req,
    ) -> Result<Reply<Resp>, ApiError>
    where
        Req: Message,
        Resp: Message + Default,
    {
        // Only encoding and decoding are generic: the retries and the NATS request are one
        // boxed function, compiled once, not once per message type in every crate that asks
        // (see docs/architecture.md, "Compile time").
        let started = Instant::now();
        let payload = bytes::Bytes::from(req.encode_to_vec());
        let reply = self
            .request_with_retries(trace, subject, payload)
            .await
            .and_then(decode_reply);
        let outcome = match &reply {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        metrics::METRICS
            .requests
            .observe([subject, outcome], started.elapsed());
        reply
    }

    fn request_with_retries<'a>(
        &'a self,
        trace: &'a TraceParent,
        subject: &'a str,
        payload: bytes::Bytes,
    ) -> BoxFuture<'a, Result<async_nats::Message, ApiError>> {
        Box::pin(async move {
            let mut last = ApiError::unavailable("no attempt made");
            // An attempt that timed out may have been taken (and committed) by a service that
            // then could not answer: once one has, the outcome is unknown, and a later "no
            // responders" must not turn that into "not taken" (503), which a client would retry.
            let mut maybe_taken: Option<ApiError> = None;
            for attempt in 1..=self.attempts {
                match self.attempt(trace, subject, payload.clone()).await {
                    Ok(reply) => return Ok(reply),
                    Err((e, Failed::Final)) => return Err(e),
                    Err((e, retry)) => {
                        if retry == Failed::MaybeTaken {
                            maybe_taken.get_or_insert_with(|| {
                                ApiError::new(
                                    ErrorCode::Timeout,
                                    format!(
                                        "outcome unknown: a request to {subject} may have been taken but got no reply ({})",
                                        e.message
                                    ),
                                )
                            });
                        }
                        tracing::warn!(
                            subject,
                            attempt,
                            trace_id = %trace.trace_id(),
                            error = %e,
                            "bus request got no reply"
                        );
                        last = e;
                    }
                }
                if attempt < self.attempts {
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
            }
            Err(maybe_taken.unwrap_or(last))
        })
    }

    async fn attempt(
        &self,
        trace: &TraceParent,
        subject: &str,
        payload: bytes::Bytes,
    ) -> Result<async_nats::Message, (ApiError, Failed)> {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT_HEADER, trace.to_string().as_str());
        let request = async_nats::Request::new()
            .payload(payload)
            .headers(headers)
            .timeout(Some(self.timeout));
        self.client
            .send_request(subject.to_owned(), request)
            .await
            .inspect_err(|e| {
                metrics::METRICS
                    .attempt_errors
                    .inc([subject, attempt_error_kind(e.kind())]);
            })
            .map_err(|e| match e.kind() {
                // Retryable: no instance is subscribed right now, or the one that took the
                // request died or stalled; another instance (or a restarted one) may answer.
                async_nats::RequestErrorKind::NoResponders => (
                    ApiError::unavailable(format!("no instance of the service answers {subject}")),
                    Failed::NotTaken,
                ),
                async_nats::RequestErrorKind::TimedOut => (
                    ApiError::new(
                        ErrorCode::Timeout,
                        format!("the service did not answer {subject} in time"),
                    ),
                    Failed::MaybeTaken,
                ),
                async_nats::RequestErrorKind::MaxPayloadExceeded => (
                    ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        "the request is larger than the bus allows",
                    ),
                    Failed::Final,
                ),
                async_nats::RequestErrorKind::InvalidSubject => (
                    ApiError::internal(format!("invalid bus subject {subject:?}")),
                    Failed::Final,
                ),
                async_nats::RequestErrorKind::Other => (
                    ApiError::unavailable(format!("the bus failed a request to {subject}: {e}")),
                    Failed::MaybeTaken,
                ),
            })
    }
}

fn attempt_error_kind(kind: async_nats::RequestErrorKind) -> &'static str {
    match kind {
        async_nats::RequestErrorKind::NoResponders => "no_responders",
        async_nats::RequestErrorKind::TimedOut => "timed_out",
        async_nats::RequestErrorKind::MaxPayloadExceeded => "max_payload_exceeded",
        async_nats::RequestErrorKind::InvalidSubject => "invalid_subject",
        async_nats::RequestErrorKind::Other => "other",
    }
}

/// How one attempt of a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failed {
    /// Not worth another attempt (the request itself is wrong).
    Final,
    /// Nothing took it (no responders): another attempt may reach a restarted instance.
    NotTaken,
    /// It may have been taken (a timeout, a connection lost after sending): retried, but the
    /// outcome is unknown if no attempt answers.
    MaybeTaken,
}

fn decode_reply<Resp: Message + Default>(
    msg: async_nats::Message,
) -> Result<Reply<Resp>, ApiError> {
    let headers = msg.headers.as_ref();
    let status = headers
        .and_then(|h| h.get(STATUS_HEADER))
        .map(|v| v.as_str().to_owned());
    let instance = headers
        .and_then(|h| h.get(INSTANCE_HEADER))
        .map(|v| v.as_str().to_owned());
    match status.as_deref() {
        Some("ok") => Resp::decode(msg.payload)
            .map(|body| Reply { instance, body })
            .map_err(|e| ApiError::internal(format!("undecodable reply from the service: {e}"))),
        Some("error") => {
            let err = proto::ServiceError::decode(msg.payload).map_err(|e| {
                ApiError::internal(format!("undecodable error from the service: {e}"))
            })?;
            Err(ApiError::from_proto(err))
        }
        other => Err(ApiError::internal(format!(
            "reply without a valid {STATUS_HEADER} header: {other:?}"
        ))),
    }
}
