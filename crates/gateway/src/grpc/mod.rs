//! The gRPC API (`proto/bootfleet/v1/api.proto`), served beside REST on its own listener
//! (`BOOTFLEET_GRPC_LISTEN`; TLS with `BOOTFLEET_GRPC_TLS_CERT`/`_KEY`). Each call does what its REST route does: the same checks, the
//! same bus requests, the same roles; errors carry the code of [`ErrorCode::statuses`], the
//! one table both sides use.

// First: its `relayed_service!` writes the services' methods that only relay, as tables.
#[macro_use]
mod relayed;

mod actions;
mod artifacts;
mod distributors;
pub mod idempotency;
mod localnodes;
mod machines;
mod metrics;
mod scripts;
mod sshkeys;

use std::sync::Arc;

use bootfleet_api::{proto, ApiError, ListParams};
use bootfleet_bus::{Bus, TraceParent};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

use crate::auth::{self, Access, Claims};
use crate::http::Deadline;
use crate::{AppState, GatewayConfig};

/// The generated messages and services; rows shared with the bus are `bootfleet_api::proto`'s.
#[allow(missing_debug_implementations, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/bootfleet.api.v1.rs"));
}

/// The encoded descriptors of the API and what it imports, for reflection.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/api_descriptor.bin"));

/// The services, by their full names (what reflection lists besides itself).
pub const SERVICES: [&str; 10] = [
    "bootfleet.api.v1.Scripts",
    "bootfleet.api.v1.SshKeys",
    "bootfleet.api.v1.Distributors",
    "bootfleet.api.v1.LocalNodes",
    "bootfleet.api.v1.Artifacts",
    "bootfleet.api.v1.Machines",
    "bootfleet.api.v1.Profiles",
    "bootfleet.api.v1.Groups",
    "bootfleet.api.v1.Commands",
    "bootfleet.api.v1.Runs",
];

/// What every service of the API shares: the gateway's state (bus, verifier, artifact store).
#[derive(Clone, Debug)]
pub(crate) struct Api {
    state: AppState,
}

/// An authorized call: its trace and, unless the access was public, the caller's claims, or
/// the machine token of a node-facing call (the `machines` service checks it).
#[derive(Debug)]
pub(crate) struct Call {
    trace: TraceParent,
    claims: Option<Claims>,
    machine_token: Option<crate::auth::MachineToken>,
}

/// A gRPC status for an error of the system: the code from the one table, the message as
/// REST gives it, and the code's name and the field in `bf-code`/`bf-field` metadata.
pub fn status(e: ApiError) -> Status {
    let (http, grpc) = e.code.statuses();
    if http >= 500 {
        tracing::warn!(code = %e.code, message = %e.message, "grpc call failed");
    }
    let mut status = Status::new(Code::from_i32(grpc), e.message);
    let metadata = status.metadata_mut();
    metadata.insert("bf-code", MetadataValue::from_static(e.code.as_str()));
    if let Some(field) = e.field.and_then(|f| f.parse().ok()) {
        metadata.insert("bf-field", field);
    }
    status
}

impl Api {
    fn new(bus: Bus, config: GatewayConfig) -> Api {
        Api {
            state: AppState::new(bus, config, Arc::from("")),
        }
    }

    fn bus(&self) -> &Bus {
        &self.state.bus
    }

    /// Checks the bearer token in the `authorization` metadata against `access` with
    /// [`auth::identify`], the check REST's routes make too; a node-facing access passes a
    /// machine token on to the `machines` service, which holds its key.
    fn authorize<T>(&self, req: &Request<T>, access: Access) -> Result<Call, Status> {
        let metadata = req.metadata();
        let trace = metadata
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse)
            .map(|t| t.child())
            .unwrap_or_else(TraceParent::new_root);
        let authorization = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let (claims, machine_token) = match auth::identify(
            &self.state.config,
            access,
            authorization,
            None,
        )
        .map_err(status)?
        {
            auth::Caller::Machine(token) => (None, Some(token)),
            auth::Caller::Token(claims) => (claims, None),
        };
        Ok(Call {
            trace,
            claims,
            machine_token,
        })
    }

    /// [`Api::authorize`], then the request's message.
    fn take<T>(&self, req: Request<T>, access: Access) -> Result<(Call, T), Status> {
        let call = self.authorize(&req, access)?;
        Ok((call, req.into_inner()))
    }

    /// One bus request, its error as a gRPC status.
    async fn ask<Req, Resp>(&self, call: &Call, subject: &str, req: &Req) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.bus()
            .request(&call.trace, subject, req)
            .await
            .map_err(status)
    }

    /// One bus request whose answer is the call's response.
    async fn answer<Req, Resp>(
        &self,
        call: &Call,
        subject: &str,
        req: &Req,
    ) -> Result<tonic::Response<Resp>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.ask(call, subject, req).await.map(tonic::Response::new)
    }

    /// A page of one service's list (`Access::Read`).
    async fn list<L: Paged>(
        &self,
        req: Request<pb::ListOptions>,
        subject: &str,
    ) -> Result<tonic::Response<L::Page>, Status> {
        let call = self.authorize(&req, Access::Read)?;
        let params = list_params(Some(req.into_inner()))?;
        let list: L = self.ask(&call, subject, &params.to_proto()).await?;
        Ok(tonic::Response::new(list.page(&params)))
    }

    /// A get or a delete of a row named by its id alone.
    async fn by_id<R>(
        &self,
        req: Request<proto::IdRequest>,
        access: Access,
        subject: &str,
    ) -> Result<tonic::Response<R>, Status>
    where
        R: prost::Message + Default,
    {
        let call = self.authorize(&req, access)?;
        let id = id_request(req.into_inner())?;
        self.answer(&call, subject, &id).await
    }
}

/// The list parameters of `options`, checked as REST checks its query (0 and "" are unset).
fn list_params(options: Option<pb::ListOptions>) -> Result<ListParams, Status> {
    let o = options.unwrap_or_default();
    let (page, page_size) = (o.page.to_string(), o.page_size.to_string());
    let pairs = [
        ("page", page.as_str(), o.page != 0),
        ("pageSize", page_size.as_str(), o.page_size != 0),
        ("sort", o.sort.as_str(), !o.sort.is_empty()),
        ("search", o.search.as_str(), !o.search.is_empty()),
        (
            "searchFields",
            o.search_fields.as_str(),
            !o.search_fields.is_empty(),
        ),
    ];
    ListParams::from_query(
        pairs
            .into_iter()
            .filter(|(_, _, set)| *set)
            .map(|(k, v, _)| (k, v)),
        &[],
    )
    .map_err(status)
}

fn page_info(total: u64, params: &ListParams) -> Option<pb::PageInfo> {
    Some(pb::PageInfo {
        total,
        page: params.page,
        page_size: params.page_size,
        total_pages: params.total_pages(total),
    })
}

/// A registry's list answer, and the page gRPC answers it with.
pub(crate) trait Paged: prost::Message + Default {
    type Page;
    fn page(self, params: &ListParams) -> Self::Page;
}

macro_rules! paged {
    ($($list:ident => $page:ident),* $(,)?) => {$(
        impl Paged for proto::$list {
            type Page = pb::$page;
            fn page(self, params: &ListParams) -> pb::$page {
                pb::$page {
                    page: page_info(self.total, params),
                    rows: self.rows,
                }
            }
        }
    )*};
}

paged! {
    ScriptList => ScriptPage,
    SshKeyList => SshKeyPage,
    LocalNodeList => LocalNodePage,
    DistributorList => DistributorPage,
    ArtifactList => ArtifactPage,
}

/// The id of a request, checked as a REST path id is.
fn checked_id(id: &str) -> Result<String, Status> {
    bootfleet_api::validate::id("id", id).map_err(status)
}

fn id_request(req: proto::IdRequest) -> Result<proto::IdRequest, Status> {
    Ok(proto::IdRequest {
        id: checked_id(&req.id)?,
    })
}

/// The id a create gives its new row: derived from the call's `idempotency-key` when it has
/// one (so a repeat finds the row the first made), else a new one.
fn new_id<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<crate::idempotency::KeyedId>()
        .map_or_else(uuid::Uuid::new_v4, |k| k.0)
        .to_string()
}

/// The gRPC status code of an answer, from its head (an answer with no message) or its
/// trailers.
fn grpc_status(headers: &axum::http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn invalid(field: &str, message: impl std::fmt::Display) -> Status {
    status(ApiError::invalid(field, message))
}

/// The router of every service of the API and reflection, behind the layers of
/// `idempotency-key` and, outermost, of the metrics.
pub fn router(bus: Bus, config: GatewayConfig) -> Result<tonic::service::Routes, String> {
    let api = Api::new(bus, config);
    let layer = axum::middleware::from_fn_with_state(api.clone(), idempotency::layer);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("grpc reflection: {e}"))?;
    let routes = tonic::service::Routes::new(reflection)
        .add_service(pb::scripts_server::ScriptsServer::new(api.clone()))
        .add_service(pb::ssh_keys_server::SshKeysServer::new(api.clone()))
        .add_service(pb::distributors_server::DistributorsServer::new(
            api.clone(),
        ))
        .add_service(pb::local_nodes_server::LocalNodesServer::new(api.clone()))
        .add_service(pb::artifacts_server::ArtifactsServer::new(api.clone()))
        .add_service(pb::machines_server::MachinesServer::new(api.clone()))
        .add_service(pb::profiles_server::ProfilesServer::new(api.clone()))
        .add_service(pb::groups_server::GroupsServer::new(api.clone()))
        .add_service(pb::commands_server::CommandsServer::new(api.clone()))
        .add_service(pb::runs_server::RunsServer::new(api.clone()));
    Ok(routes
        .into_axum_router()
        .layer(layer)
        .layer(axum::middleware::from_fn_with_state(
            api.state.config.limits.request_timeout,
            deadline,
        ))
        .layer(axum::middleware::from_fn(metrics::layer))
        .into())
}

/// Bounds each call's time to its answer's head as REST's request deadline does
/// ([`crate::http::bounded`]): the request timeout, unless the call extends its [`Deadline`]
/// (a configuration the distributor applies, a script run on a node, a key generated); a
/// stream's messages are not held to it. On expiry: DEADLINE_EXCEEDED (`timeout`).
async fn deadline(
    axum::extract::State(timeout): axum::extract::State<std::time::Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    crate::http::bounded(timeout, req, |req| next.run(req))
        .await
        .unwrap_or_else(idempotency::refused)
}

/// The [`Deadline`] of a call, to extend (none when the call did not pass the layer).
fn deadline_of<T>(req: &Request<T>) -> Deadline {
    req.extensions()
        .get::<Deadline>()
        .cloned()
        .unwrap_or_else(Deadline::unbounded)
}

/// Serves the gRPC API on `listener` until `shutdown` resolves: over TLS with the
/// configuration's `grpc_tls`, else plain HTTP/2 (h2c), as REST is plain HTTP/1.1. Boxed for
/// the reason `crate::serve` is: tonic's server stack is compiled once, in this crate.
pub fn serve(
    listener: tokio::net::TcpListener,
    bus: Bus,
    config: GatewayConfig,
    shutdown: crate::Shutdown,
) -> futures_util::future::BoxFuture<'static, std::io::Result<()>> {
    Box::pin(serve_until(listener, bus, config, shutdown))
}

async fn serve_until(
    listener: tokio::net::TcpListener,
    bus: Bus,
    config: GatewayConfig,
    shutdown: crate::Shutdown,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), tls = config.grpc_tls.is_some(), "grpc listening");
    let tls = config.grpc_tls.clone();
    let routes = router(bus, config).map_err(std::io::Error::other)?;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        let identity = tonic::transport::Identity::from_pem(tls.cert_pem, tls.key_pem);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| std::io::Error::other(format!("grpc tls: {e}")))?;
    }
    // The request timeout is the `deadline` layer's, which a call may extend (tonic's own
    // cannot be).
    server
        // Each call's log lines carry its method, as REST's carry the route.
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use bootfleet_api::ErrorCode;

    use super::*;

    #[test]
    fn every_code_maps_through_the_one_table_and_client_mistakes_stay_client_codes() {
        for code in ErrorCode::ALL {
            let s = status(ApiError::new(code, "x"));
            assert_eq!(s.code(), Code::from_i32(code.grpc_code()), "{code}");
            assert_ne!(s.code(), Code::Unknown, "{code}");
            assert_eq!(
                s.metadata().get("bf-code").and_then(|v| v.to_str().ok()),
                Some(code.as_str())
            );
            // A client's mistake is never a server-side code, as it is never a 5xx.
            if code.http_status() < 500 {
                assert!(
                    !matches!(
                        s.code(),
                        Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss
                    ),
                    "{code}"
                );
            }
        }
    }

    #[test]
    fn a_field_error_names_its_field_in_metadata_and_message() {
        let s = status(ApiError::invalid(
            "pageSize",
            "must be a whole number from 1 to 100",
        ));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.metadata().get("bf-field").and_then(|v| v.to_str().ok()),
            Some("pageSize")
        );
        assert!(s.message().starts_with("pageSize: "));
        assert!(status(ApiError::not_found("x"))
            .metadata()
            .get("bf-field")
            .is_none());
    }

    #[test]
    fn list_options_are_checked_as_the_rest_query() {
        let defaults = list_params(None).expect("defaults");
        assert_eq!((defaults.page, defaults.page_size), (1, 10));
        let bad = list_params(Some(pb::ListOptions {
            page_size: 101,
            ..Default::default()
        }))
        .expect_err("too many rows");
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().starts_with("pageSize"), "{}", bad.message());
        let sorted = list_params(Some(pb::ListOptions {
            sort: "-createdAt".into(),
            search_fields: "text".into(),
            ..Default::default()
        }))
        .expect("sort and search fields");
        assert!(sorted.sort[0].descending);
        assert_eq!(sorted.search_fields, vec!["text".to_owned()]);
    }
}
