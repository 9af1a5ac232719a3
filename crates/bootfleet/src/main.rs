use std::net::SocketAddr;
use std::process::ExitCode;

use bootfleet::config;
use bootfleet::nats_child::NatsChild;
use bootfleet::{Service, System, SystemConfig};
use bootfleet_bus::{Bus, BusConfig};
use bootfleet_gateway::auth::{self, Role};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bootfleet",
    version,
    about = "Nodes as a service: boot artifacts, registries, site agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run everything in one process: NATS (unless NATS_URL is set), every service, the gateway.
    Up {
        /// Where the REST gateway listens.
        #[arg(long, env = "BOOTFLEET_LISTEN", default_value = config::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Port for the nats-server bootfleet starts (another is picked if it is taken).
        #[arg(long, env = "BOOTFLEET_NATS_PORT", default_value_t = 4222)]
        nats_port: u16,
    },
    /// Run the REST gateway alone (needs NATS_URL).
    Gateway {
        #[arg(long, env = "BOOTFLEET_LISTEN", default_value = config::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
    /// Run one service alone (needs NATS_URL; DATABASE_URL or SQLite in the data directory).
    Service {
        #[arg(value_enum)]
        name: Service,
    },
    /// Mint a token for the REST API (signed with the same secret the gateway uses).
    Token {
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Days until it expires.
        #[arg(long, default_value_t = auth::DEFAULT_TOKEN_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Who the token is for (the `sub` claim).
        #[arg(long, default_value = "operator")]
        subject: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BOOTFLEET_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,sea_orm_migration=warn,async_nats=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("BOOTFLEET_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// SIGINT/SIGTERM, listened for from the start: a signal that arrives while the system is still
/// starting is kept and honoured as soon as it is up (a clean stop, never a kill mid-start).
struct Shutdown {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn install() -> Result<Shutdown, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let install =
            |kind| signal(kind).map_err(|e| format!("cannot install signal handlers: {e}"));
        Ok(Shutdown {
            int: install(SignalKind::interrupt())?,
            term: install(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.int.recv() => {},
            _ = self.term.recv() => {},
        }
    }
}

fn nats_config(url: String, name: &str) -> BusConfig {
    BusConfig::from_env(url, format!("bootfleet-{name}"))
}

fn require_nats_url() -> Result<String, String> {
    BusConfig::url_from_env()
        .ok_or_else(|| "set NATS_URL (or TRANSPORTER) to the NATS server".to_owned())
}

async fn up(listen: SocketAddr, nats_port: u16, shutdown: Shutdown) -> Result<(), String> {
    let data_dir = config::data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|e| {
        format!(
            "cannot create the data directory {}: {e}",
            data_dir.display()
        )
    })?;
    let secret = config::jwt_secret(&data_dir, true)?;
    let admin = auth::mint(
        &secret,
        Role::Admin,
        "bootfleet-up",
        auth::DEFAULT_TOKEN_DAYS,
    )?;
    let gateway = config::gateway_config(secret)?;
    let (nats_child, nats_url) = match BusConfig::url_from_env() {
        Some(url) => (None, url),
        None => {
            let child = NatsChild::start(&data_dir, nats_port).await?;
            let url = child.url.clone();
            (Some(child), url)
        }
    };
    let database_url = config::database_url(&data_dir);
    let started = System::start(SystemConfig {
        nats: nats_config(nats_url.clone(), "up"),
        database_url: database_url.clone(),
        listen,
        gateway,
    })
    .await;
    let system = match started {
        Ok(system) => system,
        Err(e) => {
            if let Some(child) = nats_child {
                child.stop().await;
            }
            return Err(e.to_string());
        }
    };
    let base = system.base_url();
    let nats_note = match &nats_child {
        Some(c) => format!(
            "{nats_url} (started by bootfleet; data in {})",
            c.store_dir.display()
        ),
        None => format!("{nats_url} (from NATS_URL)"),
    };
    println!("bootfleet is up");
    println!("  API:       {base}/api");
    println!("  OpenAPI:   {base}/api/openapi.json");
    println!("  NATS:      {nats_note}");
    println!(
        "  Database:  {}",
        bootfleet_store::redact_url(&database_url)
    );
    println!("  Data:      {}", data_dir.display());
    println!(
        "Admin token valid {} days; for your shell:",
        auth::DEFAULT_TOKEN_DAYS
    );
    println!("export BOOTFLEET_URL={base}");
    println!("export BOOTFLEET_TOKEN={admin}");
    println!("Press Ctrl-C to stop.");
    shutdown.wait().await;
    tracing::info!("stopping");
    system.stop().await;
    if let Some(child) = nats_child {
        child.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn run(cli: Cli) -> Result<(), String> {
    let shutdown = Shutdown::install()?;
    match cli.command {
        Command::Up { listen, nats_port } => up(listen, nats_port, shutdown).await,
        Command::Gateway { listen } => {
            let data_dir = config::data_dir();
            let gateway = config::gateway_config(config::jwt_secret(&data_dir, false)?)?;
            let bus = Bus::connect(&nats_config(require_nats_url()?, "gateway"))
                .await
                .map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            bootfleet_gateway::serve(listener, bus, gateway, shutdown.wait())
                .await
                .map_err(|e| e.to_string())
        }
        Command::Service { name } => {
            let bus = Bus::connect(&nats_config(require_nats_url()?, name.name()))
                .await
                .map_err(|e| e.to_string())?;
            let database_url = config::database_url(&config::data_dir());
            let services = bootfleet::start_services(&bus, &database_url, &[name])
                .await
                .map_err(|e| e.to_string())?;
            shutdown.wait().await;
            services.stop().await;
            Ok(())
        }
        Command::Token {
            role,
            days,
            subject,
        } => {
            let secret = config::jwt_secret(&config::data_dir(), false)?;
            println!("{}", auth::mint(&secret, role, &subject, days)?);
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootfleet: {e}");
            ExitCode::FAILURE
        }
    }
}
