//! The service side: subscribe handlers in the service's queue group, decode, dispatch, reply.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_nats::header::HeaderMap;
use bootfleet_api::{proto, subjects, ApiError, ErrorCode};
use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::{Bus, BusError, TraceParent, INSTANCE_HEADER, STATUS_HEADER, TRACEPARENT_HEADER};

/// Requests one instance works on at once; more wait in NATS's buffers.
const MAX_IN_FLIGHT: usize = 256;

/// What a handler knows about the request besides its message.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    pub trace: TraceParent,
    pub subject: String,
}

impl RequestCtx {
    /// A distributor's request counts only for the site whose subject it came on (what that
    /// site's NATS login may publish), never for another site it names: `permission_denied`
    /// unless the subject, matched against `pattern` (`...*...`), names `artifact_id`.
    pub fn check_site(&self, pattern: &str, artifact_id: &str) -> Result<(), ApiError> {
        subjects::check_site(pattern, &self.subject, artifact_id)
            .map_err(|e| ApiError::new(ErrorCode::PermissionDenied, e))
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Bytes, ApiError>> + Send>>;
type Handler = Arc<dyn Fn(RequestCtx, Bytes) -> BoxFuture + Send + Sync>;
type Background =
    Box<dyn FnOnce(watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

pub struct ServiceBuilder {
    bus: Bus,
    service: &'static str,
    instance: String,
    routes: Vec<(String, Handler)>,
    background: Vec<Background>,
}

impl std::fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("service", &self.service)
            .field("instance", &self.instance)
            .field(
                "routes",
                &self.routes.iter().map(|r| &r.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Whether a route only reads: its subject ends in `.get`, `.list`, `.ping` or `.lookup`. Any
/// other route may write.
#[derive(Clone, Debug)]
struct SubjectKind {
    subject: Arc<str>,
    read_only: bool,
}

impl SubjectKind {
    fn of(subject: &str) -> SubjectKind {
        let op = subject.rsplit('.').next().unwrap_or_default();
        SubjectKind {
            subject: subject.into(),
            // A machine's `script` and `file` record that it fetched them: writes.
            read_only: matches!(
                op,
                "get"
                    | "list"
                    | "ping"
                    | "lookup"
                    | "history"
                    | "timeline"
                    | "seal-key"
                    | "machines"
            ),
        }
    }
}

/// A write whose database went away may have committed a statement before the one that
/// failed: "unavailable" (nothing was done, retry freely) would be a promise the service cannot
/// keep, so it answers "outcome unknown" instead.
fn honest(kind: &SubjectKind, e: ApiError) -> ApiError {
    if !kind.read_only && e.is_database_unavailable() {
        return ApiError::outcome_unknown(format!(
            "the database became unavailable while {} ran",
            kind.subject
        ));
    }
    e
}

impl ServiceBuilder {
    /// A service named `service` (also its queue group). It answers `bootfleet.v1.<service>.ping`.
    pub fn new(bus: Bus, service: &'static str) -> Self {
        let instance = uuid::Uuid::new_v4().to_string();
        let pong_instance = instance.clone();
        ServiceBuilder {
            bus,
            service,
            instance,
            routes: Vec::new(),
            background: Vec::new(),
        }
        .route(subjects::ping(service), move |_ctx, _req: proto::Empty| {
            let pong = proto::Pong {
                service: service.to_owned(),
                instance: pong_instance.clone(),
            };
            async move { Ok(pong) }
        })
    }

    pub fn route<Req, Resp, F, Fut>(mut self, subject: String, handler: F) -> Self
    where
        Req: Message + Default + 'static,
        Resp: Message + 'static,
        F: Fn(RequestCtx, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ApiError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let subject_kind = SubjectKind::of(&subject);
        let erased: Handler = Arc::new(move |ctx, payload: Bytes| {
            let handler = handler.clone();
            let subject_kind = subject_kind.clone();
            Box::pin(async move {
                let req = Req::decode(payload).map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidArgument,
                        format!("malformed request message: {e}"),
                    )
                })?;
                let resp = handler(ctx, req)
                    .await
                    .map_err(|e| honest(&subject_kind, e))?;
                Ok(Bytes::from(resp.encode_to_vec()))
            })
        });
        self.routes.push((subject, erased));
        self
    }

    /// Routes that share `state` (a registry, say): each handler gets its own clone of it, so a
    /// service lists its routes without cloning the state once per route.
    pub fn with_state<S>(self, state: S) -> StatefulRoutes<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        StatefulRoutes {
            builder: self,
            state,
        }
    }

    /// The service's name on the bus (also its queue group).
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Every subject this service will answer once started, `ping` included.
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|(subject, _)| subject.as_str())
    }

    /// A task that runs beside the routes (a queue consumer, say) until the receiver reports
    /// `true`; [`RunningService::stop`] signals it and waits for it to return.
    pub fn background<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background
            .push(Box::new(move |stop| Box::pin(task(stop))));
        self
    }

    /// Subscribes every route and starts answering. Returns once the NATS server has the
    /// subscriptions, so a request sent after this returns reaches this instance.
    pub async fn start(self) -> Result<RunningService, BusError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut loops = JoinSet::new();
        for (subject, handler) in self.routes {
            let subscriber = self
                .bus
                .client
                .queue_subscribe(subject.clone(), self.service.to_owned())
                .await
                .map_err(|source| BusError::Subscribe {
                    subject: subject.clone(),
                    source,
                })?;
            loops.spawn(serve_subject(
                self.bus.client.clone(),
                subject,
                subscriber,
                handler,
                self.instance.clone(),
                permits.clone(),
                stop_rx.clone(),
            ));
        }
        for task in self.background {
            loops.spawn(task(stop_rx.clone()));
        }
        // A round trip: the server has our subscriptions before anyone is told we started.
        if let Err(e) = self.bus.sync().await {
            tracing::warn!(error = %e, "subscriptions not confirmed; nats will replay them on reconnect");
        }
        tracing::info!(service = self.service, instance = %self.instance, "service started");
        Ok(RunningService {
            service: self.service,
            instance: self.instance,
            stop: stop_tx,
            loops,
        })
    }
}

/// A request that names the site (the distributor's artifact id) it comes from.
pub trait SiteRequest {
    fn artifact_id(&self) -> &str;
}

macro_rules! site_requests {
    ($($message:ty),+) => {
        $(impl SiteRequest for $message {
            fn artifact_id(&self) -> &str {
                &self.artifact_id
            }
        })+
    };
}

site_requests!(
    proto::DistributorHeartbeat,
    proto::SiteNodesRequest,
    proto::ReachabilityReport,
    proto::BootDecisionRequest
);

/// A [`ServiceBuilder`] whose next routes share one state; see [`ServiceBuilder::with_state`].
#[derive(Debug)]
pub struct StatefulRoutes<S> {
    builder: ServiceBuilder,
    state: S,
}

impl<S> StatefulRoutes<S>
where
    S: Clone + Send + Sync + 'static,
{
    /// Answers `subject` with `handler(state, ctx, request)`.
    pub fn route<Req, Resp, F, Fut>(mut self, subject: String, handler: F) -> Self
    where
        Req: Message + Default + 'static,
        Resp: Message + 'static,
        F: Fn(S, RequestCtx, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ApiError>> + Send + 'static,
    {
        let state = self.state.clone();
        self.builder = self
            .builder
            .route(subject, move |ctx, req| handler(state.clone(), ctx, req));
        self
    }

    /// Answers a request a site's distributor sends on its per-site subject (`pattern` with a
    /// `*` for the site) with `handler(state, request)`, only when the subject names the site
    /// the request says it is from (see [`RequestCtx::check_site`]).
    pub fn site_route<Req, Resp, F, Fut>(self, pattern: String, handler: F) -> Self
    where
        Req: SiteRequest + Message + Default + 'static,
        Resp: Message + 'static,
        F: Fn(S, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ApiError>> + Send + 'static,
    {
        let checked = pattern.clone();
        self.route(pattern, move |state, ctx, req: Req| {
            let answer = ctx
                .check_site(&checked, req.artifact_id())
                .map(|()| handler(state, req));
            async move { answer?.await }
        })
    }

    /// Back to the builder, for routes with another state or none.
    pub fn builder(self) -> ServiceBuilder {
        self.builder
    }
}

async fn serve_subject(
    client: async_nats::Client,
    pattern: String,
    mut subscriber: async_nats::Subscriber,
    handler: Handler,
    instance: String,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut in_flight = JoinSet::new();
    loop {
        let msg = tokio::select! {
            msg = subscriber.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
            _ = stop.changed() => break,
        };
        // Reap finished tasks so the set does not grow without bound.
        while in_flight.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let Some(reply_to) = msg.reply.clone() else {
            continue; // A publish without a reply subject expects nothing.
        };
        let parent = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(TRACEPARENT_HEADER))
            .and_then(|v| TraceParent::parse(v.as_str()));
        let subject = msg.subject.to_string();
        let span = tracing::info_span!(
            "bus_request",
            otel.name = %pattern,
            otel.kind = "server",
            subject = %subject,
            trace_id = tracing::field::Empty,
        );
        let trace = TraceParent::for_span(parent.as_ref(), &span);
        span.record("trace_id", tracing::field::display(trace.trace_id()));
        let ctx = RequestCtx { trace, subject };
        let handler = handler.clone();
        let client = client.clone();
        let instance = instance.clone();
        let pattern = pattern.clone();
        in_flight.spawn(
            async move {
                let _permit = permit;
                let started = std::time::Instant::now();
                let outcome = handler(ctx, msg.payload).await;
                let status = match &outcome {
                    Ok(_) => "ok",
                    Err(e) => e.code.as_str(),
                };
                crate::metrics::METRICS
                    .handled
                    .observe([pattern.as_str(), status], started.elapsed());
                let mut headers = HeaderMap::new();
                headers.insert(INSTANCE_HEADER, instance.as_str());
                let body = match outcome {
                    Ok(body) => {
                        headers.insert(STATUS_HEADER, "ok");
                        body
                    }
                    Err(e) => {
                        if e.code == ErrorCode::Internal {
                            tracing::error!(error = %e.message, "request failed");
                        } else {
                            tracing::debug!(code = %e.code, error = %e.message, "request refused");
                        }
                        headers.insert(STATUS_HEADER, "error");
                        Bytes::from(e.to_proto().encode_to_vec())
                    }
                };
                if let Err(e) = client.publish_with_headers(reply_to, headers, body).await {
                    tracing::warn!(error = %e, "cannot send reply");
                }
            }
            .instrument(span),
        );
    }
    let _ = subscriber.unsubscribe().await;
    // Let requests already taken finish and reply.
    while in_flight.join_next().await.is_some() {}
}

/// A started service. Dropping it leaves the service running until the process ends;
/// [`RunningService::stop`] unsubscribes and waits for requests under way.
#[derive(Debug)]
pub struct RunningService {
    pub service: &'static str,
    pub instance: String,
    stop: watch::Sender<bool>,
    loops: JoinSet<()>,
}

impl RunningService {
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.loops.join_next().await.is_some() {}
        tracing::info!(service = self.service, "service stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::{honest, SubjectKind};
    use bootfleet_api::{ApiError, ErrorCode};

    #[test]
    fn only_reads_answer_database_unavailable_as_503() {
        let down = || ApiError::database_unavailable("no connection");
        for read in [
            "bootfleet.v1.kickstarts.get",
            "bootfleet.v1.machines.list",
            "bootfleet.v1.machines.history",
            "bootfleet.v1.machines.timeline",
            "bootfleet.v1.machines.seal-key",
            "bootfleet.v1.actions.groups.machines",
            "bootfleet.v1.actions.runs.get",
        ] {
            let e = honest(&SubjectKind::of(read), down());
            assert_eq!(e.code, ErrorCode::Unavailable, "{read}");
        }
        for write in [
            "bootfleet.v1.kickstarts.create",
            "bootfleet.v1.machines.power",
            "bootfleet.v1.machines.script",
            "bootfleet.v1.machines.file",
            "bootfleet.v1.localnodes.register.site-1",
        ] {
            let e = honest(&SubjectKind::of(write), down());
            assert_eq!(e.code, ErrorCode::Timeout, "{write}");
            assert!(e.message.starts_with("outcome unknown"), "{}", e.message);
        }
        // Other 503s say what they mean (nothing was sent on): left alone.
        let offline = ApiError::unavailable("no distributor of site-1 is online");
        let e = honest(
            &SubjectKind::of("bootfleet.v1.machines.power"),
            offline.clone(),
        );
        assert_eq!(e, offline);
    }
}
