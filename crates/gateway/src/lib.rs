//! The REST gateway. Thin axum handlers over the bus: it validates what it can early (for clear
//! errors), authenticates, and asks the services over NATS; it never opens a database.

pub mod auth;
pub mod grpc;
pub mod http;
pub mod idempotency;
pub mod insomnia;
pub mod jwt;
pub mod machine_files;
pub mod metrics;
pub mod openapi;
pub mod read_cache;
pub mod routes;
pub mod script_cache;
pub mod server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bootfleet_api::{ApiError, ErrorCode};
use bootfleet_bus::{ArtifactStore, Bus, ReplayStore};
use futures_util::future::BoxFuture;

use crate::auth::{Access, Verifier};
use crate::http::HttpError;
use crate::machine_files::MachineFiles;
use crate::read_cache::LazyCache;
use crate::script_cache::ScriptCache;

/// Bodies above this are refused with 413. Scripts themselves are bounded at 256 KiB, which JSON
/// may escape to six times as many bytes (`\u0003` for each control character), so the largest
/// valid script fits with room to spare. The limit is enforced by the JSON body extractor, the
/// only one that reads bodies.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub verifier: Verifier,
    /// Lets node-facing reads (raw scripts) through without a token. For a closed lab only.
    pub open_node_reads: bool,
    pub body_limit: usize,
    /// Timeouts and the connection bound (see [`server`]).
    pub limits: server::ServeLimits,
    /// The services `/readyz` asks, by their bus names (`bootfleet::service_names()`).
    pub services: Vec<&'static str>,
    /// The gRPC API's certificate and key; `None` serves it in plain text (h2c).
    pub grpc_tls: Option<TlsIdentity>,
}

/// A server's certificate chain and private key, PEM. Its `Debug` leaves the key out.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What every handler shares. Cloned for each request by every layer that holds it, so it is
/// one `Arc` (the bus handle alone is several).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    fn new(bus: Bus, config: GatewayConfig, openapi: Arc<str>) -> AppState {
        AppState(Arc::new(Shared {
            bus,
            config: Arc::new(config),
            openapi,
            artifacts: Arc::default(),
            replays: Arc::default(),
            script_cache: Arc::default(),
            machine_files: Arc::default(),
        }))
    }
}

#[derive(Debug)]
pub struct Shared {
    pub bus: Bus,
    config: Arc<GatewayConfig>,
    openapi: Arc<str>,
    /// The artifact bucket, opened on the first download (the artifacts service may make it
    /// after the gateway starts).
    artifacts: Arc<tokio::sync::OnceCell<ArtifactStore>>,
    /// The first answers to writes with an `Idempotency-Key`, opened on first use.
    replays: Arc<tokio::sync::OnceCell<ReplayStore>>,
    /// Recently read scripts, opened on the first node read.
    script_cache: Arc<LazyCache<ScriptCache>>,
    /// Machines' rendered files read with their own tokens, opened on the first such read.
    machine_files: Arc<LazyCache<MachineFiles>>,
}

/// Checks a request's token against its route's access and records who called (the claims,
/// or the machine token the `machines` service checks); the refusal when it may not.
fn authorized(state: &AppState, access: Access, req: &mut Request) -> Result<(), ApiError> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth::identify(&state.config, access, authorization, req.uri().query())? {
        auth::Caller::Machine(token) => {
            req.extensions_mut().insert(token);
        }
        auth::Caller::Token(Some(claims)) => {
            req.extensions_mut().insert(claims);
        }
        auth::Caller::Token(None) => {}
    }
    Ok(())
}

/// A route's access check, as a layer. Not `middleware::from_fn`: the check awaits nothing, so
/// the route is called directly instead of being cloned and its future boxed on every request.
#[derive(Clone, Debug)]
struct RequireLayer {
    state: AppState,
    access: Access,
}

impl<S> tower::Layer<S> for RequireLayer {
    type Service = Require<S>;

    fn layer(&self, inner: S) -> Require<S> {
        Require {
            inner,
            state: self.state.clone(),
            access: self.access,
        }
    }
}

#[derive(Clone, Debug)]
struct Require<S> {
    inner: S,
    state: AppState,
    access: Access,
}

impl<S> tower::Service<Request> for Require<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        futures_util::future::Either<std::future::Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match authorized(&self.state, self.access, &mut req) {
            Ok(()) => futures_util::future::Either::Right(self.inner.call(req)),
            Err(e) => futures_util::future::Either::Left(std::future::ready(Ok(
                HttpError(e).into_response()
            ))),
        }
    }
}

/// The gateway's router: every route of [`routes::routes`], each behind its access check.
pub fn router(bus: Bus, config: GatewayConfig) -> Router {
    metrics::register();
    let routes = routes::routes();
    let openapi = openapi::document(&routes)
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    let limits = config.limits;
    let state = AppState::new(bus, config, openapi.into());
    let mut router = Router::new();
    for route in routes {
        let mut handler = route.handler;
        if idempotency::applies_to(&route.method) {
            handler = handler.layer(middleware::from_fn_with_state(
                state.clone(),
                idempotency::layer,
            ));
        }
        let guarded = handler.layer(RequireLayer {
            state: state.clone(),
            access: route.access,
        });
        router = router.route(&route.path, guarded);
    }
    router
        .fallback(|req: Request| async move {
            HttpError(ApiError::new(
                ErrorCode::NotFound,
                format!("no route for {} {}", req.method(), req.uri().path()),
            ))
        })
        .method_not_allowed_fallback(|req: Request| async move {
            HttpError(ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
            ))
        })
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            http::edge,
        ))
        .with_state(state)
}

impl AppState {
    pub fn body_limit(&self) -> usize {
        self.config.body_limit
    }

    pub fn body_read_timeout(&self) -> std::time::Duration {
        self.config.limits.body_read_timeout
    }

    /// The bucket of first answers to writes with an `Idempotency-Key`.
    pub async fn replays(&self) -> Result<&ReplayStore, ApiError> {
        self.replays
            .get_or_try_init(|| ReplayStore::open(&self.bus))
            .await
    }

    /// The cache of scripts read by nodes; `None` when it cannot be opened now (the reads then
    /// go to the service; see [`LazyCache`] for when it is tried again).
    pub async fn script_cache(&self) -> Option<&ScriptCache> {
        let open = || ScriptCache::open(&self.bus);
        self.script_cache.get("scripts", open).await
    }

    /// The copies of machines' rendered files; `None` when it cannot be opened now (as for
    /// [`AppState::script_cache`]).
    pub async fn machine_files(&self) -> Option<&MachineFiles> {
        let open = || MachineFiles::open(&self.bus);
        self.machine_files.get("machines' files", open).await
    }

    /// The bucket the builders put artifacts in.
    pub async fn artifact_store(&self) -> Result<&ArtifactStore, ApiError> {
        Ok(self
            .artifacts
            .get_or_try_init(|| ArtifactStore::open(&self.bus))
            .await?)
    }
}

/// When a server should stop: a boxed future, so `serve` is one function, not one per caller.
pub type Shutdown = BoxFuture<'static, ()>;

/// Serves the gateway on `listener` until `shutdown` resolves.
///
/// It returns a boxed future rather than being an `async fn` on purpose: rustc compiles an
/// async body again in every crate that awaits it, and the server stack under this one (axum,
/// hyper, every handler) is a large part of a release build. Boxed, it is compiled here once.
pub fn serve(
    listener: tokio::net::TcpListener,
    bus: Bus,
    config: GatewayConfig,
    shutdown: Shutdown,
) -> BoxFuture<'static, std::io::Result<()>> {
    Box::pin(async move {
        let addr: Option<SocketAddr> = listener.local_addr().ok();
        tracing::info!(addr = ?addr, "gateway listening");
        let limits = config.limits;
        server::serve_router(listener, router(bus, config), limits, shutdown).await
    })
}
