//! Wiring: the same service code runs all together (`bootfleet up`, the tests) or one service
//! per process (`bootfleet mainscripts`, ...). Only this crate knows every service.

pub mod config;
pub mod nats_auth;
pub mod nats_child;

use std::net::SocketAddr;

use bootfleet_bus::{Bus, BusConfig, BusError, RunningService};
use bootfleet_gateway::GatewayConfig;

/// The services this build contains, by their bus name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Mainscripts,
    Kickstarts,
    Sshkeys,
    Distributors,
    Localnodes,
    /// The artifact registry.
    Artifacts,
    /// A build worker (consumes the build queue).
    Builders,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::Mainscripts,
        Service::Kickstarts,
        Service::Sshkeys,
        Service::Distributors,
        Service::Localnodes,
        Service::Artifacts,
        Service::Builders,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Mainscripts => "mainscripts",
            Service::Kickstarts => "kickstarts",
            Service::Sshkeys => "sshkeys",
            Service::Distributors => "distributors",
            Service::Localnodes => "localnodes",
            Service::Artifacts => "artifacts",
            Service::Builders => "builders",
        }
    }
}

impl Service {
    async fn migrate(
        self,
        db: &bootfleet_store::sea_orm::DatabaseConnection,
    ) -> Result<(), bootfleet_store::StoreError> {
        use bootfleet_store::migrate;
        match self {
            Service::Mainscripts => migrate::<bootfleet_scripts::MainscriptsMigrator>(db).await,
            Service::Kickstarts => migrate::<bootfleet_scripts::KickstartsMigrator>(db).await,
            Service::Sshkeys => migrate::<bootfleet_sshkeys::SshkeysMigrator>(db).await,
            Service::Distributors => {
                migrate::<bootfleet_distributors::DistributorsMigrator>(db).await
            }
            Service::Localnodes => migrate::<bootfleet_localnodes::LocalnodesMigrator>(db).await,
            Service::Artifacts | Service::Builders => {
                migrate::<bootfleet_artifacts::ArtifactsMigrator>(db).await
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] bootfleet_store::StoreError),
    #[error("service {service} failed to start: {message}")]
    Service {
        service: &'static str,
        message: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Started services and the database pool they share.
#[derive(Debug)]
pub struct Services {
    running: Vec<RunningService>,
    db: bootfleet_store::sea_orm::DatabaseConnection,
}

impl Services {
    /// Stops every service (requests under way finish), then closes the database pool while the
    /// runtime still runs: a pool dropped during runtime teardown closes its connections on a
    /// runtime that is gone.
    pub async fn stop(self) {
        for service in self.running {
            service.stop().await;
        }
        if let Err(e) = self.db.close().await {
            tracing::warn!(error = %e, "closing the database pool failed");
        }
    }
}

/// Connects to the database, migrates and starts the given services on the bus.
pub async fn start_services(
    bus: &Bus,
    database_url: &str,
    services: &[Service],
) -> Result<Services, StartError> {
    let db = bootfleet_store::connect(database_url).await?;
    // Every schema change first, then serving: no connection serves on a schema it read before
    // another service's migration (see `bootfleet_store::migrate`).
    for &service in services {
        service.migrate(&db).await?;
    }
    let mut running = Vec::new();
    for &service in services {
        let started = match service {
            Service::Mainscripts => bootfleet_scripts::start_mainscripts(bus.clone(), db.clone())
                .await
                .map_err(|e| e.to_string()),
            Service::Kickstarts => bootfleet_scripts::start_kickstarts(bus.clone(), db.clone())
                .await
                .map_err(|e| e.to_string()),
            Service::Sshkeys => bootfleet_sshkeys::start(bus.clone(), db.clone())
                .await
                .map_err(|e| e.to_string()),
            Service::Distributors => bootfleet_distributors::start(bus.clone(), db.clone())
                .await
                .map_err(|e| e.to_string()),
            Service::Localnodes => bootfleet_localnodes::start(bus.clone(), db.clone())
                .await
                .map_err(|e| e.to_string()),
            Service::Artifacts => bootfleet_artifacts::start(bus.clone(), db.clone())
                .await
                .map_err(|e| e.to_string()),
            Service::Builders => bootfleet_artifacts::worker::start(bus.clone(), db.clone())
                .await
                .map_err(|e| e.to_string()),
        };
        running.push(started.map_err(|message| StartError::Service {
            service: service.name(),
            message,
        })?);
    }
    Ok(Services { running, db })
}

/// A running gateway and services: the whole system minus NATS (and the database server).
#[derive(Debug)]
pub struct System {
    pub addr: SocketAddr,
    pub bus: Bus,
    services: Option<Services>,
    stop_gateway: Option<tokio::sync::oneshot::Sender<()>>,
    gateway: tokio::task::JoinHandle<std::io::Result<()>>,
}

#[derive(Clone, Debug)]
pub struct SystemConfig {
    pub nats: BusConfig,
    pub database_url: String,
    pub listen: SocketAddr,
    pub gateway: GatewayConfig,
}

impl System {
    pub async fn start(config: SystemConfig) -> Result<System, StartError> {
        let bus = Bus::connect(&config.nats).await?;
        let services = start_services(&bus, &config.database_url, &Service::ALL).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let gateway = tokio::spawn(bootfleet_gateway::serve(
            listener,
            bus.clone(),
            config.gateway,
            async move {
                let _ = stop_rx.await;
            },
        ));
        Ok(System {
            addr,
            bus,
            services: Some(services),
            stop_gateway: Some(stop_tx),
            gateway,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the gateway (finishing requests under way), then the services.
    pub async fn stop(mut self) {
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
