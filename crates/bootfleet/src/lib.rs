//! Wiring: the same service code runs all together (`bootfleet up`, the tests) or one service
//! per process (`bootfleet mainscripts`, ...). Only this crate knows every service.

pub mod cli;
pub mod command;
pub mod config;
pub mod healthcheck;
pub mod nats_auth;
pub mod nats_child;

use std::net::SocketAddr;

use bootfleet_api::artifacts::ArtifactKind;
use bootfleet_bus::{Bus, BusConfig, BusError};
use bootfleet_gateway::GatewayConfig;
use bootfleet_service_kit::{Service, Services, StartError};

/// Every service of the system, in start order: `bootfleet up` starts them all, `bootfleet
/// service <name>` one of them. Adding a service is one line here (see docs/architecture.md).
pub fn services() -> Vec<Service> {
    let mut all = vec![
        bootfleet_scripts::mainscripts_service(),
        bootfleet_scripts::kickstarts_service(),
        bootfleet_sshkeys::service(),
        bootfleet_distributors::service(),
        bootfleet_localnodes::service(),
        bootfleet_machines::service_from_env(),
        bootfleet_actions::service(),
        bootfleet_artifacts::service_from_env(),
    ];
    // A builder per artifact kind (`ipxes`, `grubs`, `syslinuxs`, `isos`).
    all.extend(ArtifactKind::ALL.map(bootfleet_artifacts::worker::builder_from_env));
    all
}

/// What `bootfleet service <name>` accepts besides the services' own names: `builders`, a
/// builder of every kind in one process.
pub const BUILDERS: &str = "builders";

/// The names of [`services`], as they answer on the bus.
pub fn service_names() -> Vec<&'static str> {
    services().iter().map(|s| s.name()).collect()
}

/// The gateway of the whole system with the default body limit and timeouts, node reads behind
/// their tokens: what the tests and labs run (`bootfleet up` reads its settings from the
/// environment, see [`config`]).
pub fn gateway_config(verifier: bootfleet_gateway::auth::Verifier) -> GatewayConfig {
    GatewayConfig {
        services: service_names(),
        verifier,
        open_node_reads: false,
        body_limit: bootfleet_gateway::DEFAULT_BODY_LIMIT,
        limits: Default::default(),
        grpc_tls: None,
    }
}

/// The services `bootfleet service <name>` runs: the one of that name, or every builder for
/// [`BUILDERS`].
pub fn services_named(name: &str) -> Vec<Service> {
    let builder_kinds: Vec<&str> = ArtifactKind::ALL.iter().map(|k| k.name()).collect();
    services()
        .into_iter()
        .filter(|s| s.name() == name || (name == BUILDERS && builder_kinds.contains(&s.name())))
        .collect()
}

/// Why the system did not start.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// A running gateway and services: the whole system minus NATS (and the database server).
#[derive(Debug)]
pub struct System {
    pub addr: SocketAddr,
    pub bus: Bus,
    services: Option<Services>,
    stop_gateway: Option<tokio::sync::oneshot::Sender<()>>,
    gateway: tokio::task::JoinHandle<std::io::Result<()>>,
    gateway_config: GatewayConfig,
    /// The gRPC API, once [`System::serve_grpc`] started it.
    grpc: Option<Listening>,
}

/// A server task and how to stop it.
#[derive(Debug)]
struct Listening {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

#[derive(Clone, Debug)]
pub struct SystemConfig {
    pub nats: BusConfig,
    pub database_url: String,
    pub listen: SocketAddr,
    pub gateway: GatewayConfig,
}

impl System {
    pub async fn start(config: SystemConfig) -> Result<System, SystemError> {
        let bus = Bus::connect(&config.nats).await?;
        let all = services();
        let all: Vec<&Service> = all.iter().collect();
        let services = Services::start(&bus, &config.database_url, &all).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SystemError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SystemError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let gateway = tokio::spawn(bootfleet_gateway::serve(
            listener,
            bus.clone(),
            config.gateway.clone(),
            Box::pin(async move {
                let _ = stop_rx.await;
            }),
        ));
        Ok(System {
            addr,
            bus,
            services: Some(services),
            stop_gateway: Some(stop_tx),
            gateway,
            gateway_config: config.gateway,
            grpc: None,
        })
    }

    /// Serves the gRPC API on `listen`, beside REST, with the same bus and configuration (its
    /// own port: see docs/architecture.md); answers the address it listens on.
    pub async fn serve_grpc(&mut self, listen: SocketAddr) -> Result<SocketAddr, SystemError> {
        let listen_error = |source| SystemError::Listen {
            addr: listen.to_string(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(bootfleet_gateway::grpc::serve(
            listener,
            self.bus.clone(),
            self.gateway_config.clone(),
            Box::pin(async move {
                let _ = stopped.await;
            }),
        ));
        self.grpc = Some(Listening { addr, stop, task });
        Ok(addr)
    }

    /// The gRPC API's URL, when it is served (`https` with the configuration's `grpc_tls`).
    pub fn grpc_url(&self) -> Option<String> {
        let scheme = if self.gateway_config.grpc_tls.is_some() {
            "https"
        } else {
            "http"
        };
        self.grpc.as_ref().map(|g| format!("{scheme}://{}", g.addr))
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the gateway (finishing requests under way), then the services.
    pub async fn stop(mut self) {
        if let Some(grpc) = self.grpc.take() {
            let _ = grpc.stop.send(());
            if let Err(e) = grpc.task.await {
                tracing::warn!(error = %e, "grpc task ended badly");
            }
        }
        if let Some(tx) = self.stop_gateway.take() {
            let _ = tx.send(());
        }
        if let Err(e) = (&mut self.gateway).await {
            tracing::warn!(error = %e, "gateway task ended badly");
        }
        if let Some(services) = self.services.take() {
            services.stop().await;
        }
    }
}
