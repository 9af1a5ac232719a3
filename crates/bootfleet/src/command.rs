//! The `bootfleet` command line: `up`, `gateway`, `service <name>`, `token`, the client
//! commands. It lives in the library, not in `main.rs`: rustc compiles an async body again in
//! every crate that awaits it, and a binary awaiting this crate's futures compiled the whole
//! system a second time (about a minute of a release build).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config;
use crate::nats_auth::{self, NatsAuth};
use crate::nats_child::{self, NatsChild};
use crate::{System, SystemConfig};
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
        /// Where the gRPC API listens (the CLI's `--url`).
        #[arg(long, env = "BOOTFLEET_GRPC_LISTEN", default_value = config::DEFAULT_GRPC_LISTEN)]
        grpc_listen: SocketAddr,
        /// Port for the nats-server bootfleet starts (another is picked if it is taken).
        #[arg(long, env = "BOOTFLEET_NATS_PORT", default_value_t = 4222)]
        nats_port: u16,
        /// Address for the nats-server bootfleet starts; 0.0.0.0 lets distributors on the LAN in
        /// (each with its own login, see --distributor).
        #[arg(long, env = "BOOTFLEET_NATS_LISTEN", default_value = "127.0.0.1")]
        nats_listen: IpAddr,
        /// Add a NATS login for this distributor site (its artifactId), allowed only what a
        /// distributor does. Kept in <data dir>/nats-logins across starts; every start prints
        /// them all. Repeatable. Only with the nats-server bootfleet starts.
        #[arg(long = "distributor", value_name = "SITE")]
        distributors: Vec<String>,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Print a nats-server `authorization` block: a `services` user and one restricted user per
    /// distributor site, with random passwords, and how to run each with its login.
    NatsConfig {
        /// A distributor site (its artifactId). Repeatable.
        #[arg(long = "distributor", value_name = "SITE")]
        distributors: Vec<String>,
        /// Write the configuration to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The NATS URL distributors reach the server at, for the printed commands.
        #[arg(long, default_value = "nats://<nats-host>:4222")]
        nats_url: String,
    },
    /// Run the REST gateway (and the gRPC API beside it) alone (needs NATS_URL).
    Gateway {
        #[arg(long, env = "BOOTFLEET_LISTEN", default_value = config::DEFAULT_LISTEN)]
        listen: SocketAddr,
        #[arg(long, env = "BOOTFLEET_GRPC_LISTEN", default_value = config::DEFAULT_GRPC_LISTEN)]
        grpc_listen: SocketAddr,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Run one service alone (needs NATS_URL; DATABASE_URL or SQLite in the data directory).
    /// A builder kind (ipxes, grubs, syslinuxs, isos) takes only that kind's build jobs;
    /// `builders` runs a builder of every kind.
    Service {
        #[arg(value_parser = service_name_parser())]
        name: String,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Exit 0 when a role answers: the gateway's /healthz, or a service's ping over NATS (for
    /// container health checks and probes). Without a role, checks the bootfleet process beside it.
    Healthcheck {
        /// `gateway` or a service name.
        role: Option<String>,
        /// The gateway's address (an unspecified address is checked on loopback).
        #[arg(long, env = "BOOTFLEET_LISTEN", default_value = config::DEFAULT_LISTEN)]
        listen: SocketAddr,
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
        /// Scope a node token to one site (artifactId): it then registers that site's nodes only.
        #[arg(long)]
        site: Option<String>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    #[command(flatten)]
    Client(crate::cli::ClientCommand),
}

#[derive(clap::Args, Debug)]
struct MetricsArgs {
    /// Also serve `/metrics` (and `/healthz`) without a token on this address, for Prometheus
    /// (loopback, or an address only the scraper reaches). Off when unset; the gateway's own
    /// `/metrics` needs an operator token.
    #[arg(long, env = "BOOTFLEET_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Binds the metrics listener, if asked for, and serves it until the process ends.
    async fn start(&self) -> Result<(), String> {
        let Some(addr) = self.metrics_listen else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (BOOTFLEET_METRICS_LISTEN): {e}"))?;
        tokio::spawn(async move {
            if let Err(e) =
                bootfleet_telemetry::serve_metrics(listener, Box::pin(std::future::pending())).await
            {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        });
        Ok(())
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// Logs to stderr; exports spans over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
fn init_logging(role: &str) -> Result<bootfleet_telemetry::TraceGuard, String> {
    // Never trace raw NATS payloads (they may carry secrets).
    bootfleet_telemetry::init_logging(
        LOG_FILTER,
        &[bootfleet_bus::LOG_SECRET_GUARD],
        &format!("bootfleet-{role}"),
    )
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
        self.signalled().await;
    }

    /// The first signal, leaving the handlers installed.
    async fn signalled(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {},
            _ = self.term.recv() => {},
        }
    }
}

/// How long `bootfleet service` keeps trying to start before it gives up.
const START_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(120);

fn service_name_parser() -> clap::builder::PossibleValuesParser {
    let mut names = crate::service_names();
    names.push(crate::BUILDERS);
    clap::builder::PossibleValuesParser::new(names)
}

fn nats_config(url: String, name: &str) -> BusConfig {
    BusConfig::from_env(url, format!("bootfleet-{name}"))
}

fn require_nats_url() -> Result<String, String> {
    BusConfig::url_from_env()
        .ok_or_else(|| "set NATS_URL (or TRANSPORTER) to the NATS server".to_owned())
}

/// The logins of a generated configuration, and how to use them.
fn print_logins(auth: &NatsAuth, nats_url: &str, services: bool) {
    if services {
        println!(
            "NATS services login (services, gateway, builders):\n  NATS_URL={nats_url} NATS_USER={} NATS_PASSWORD={}",
            auth.services.user, auth.services.password
        );
    }
    for d in &auth.distributors {
        println!(
            "Distributor {} (may only heartbeat, take its own site's requests, publish its boot events and read artifacts):\n  {}",
            d.site,
            nats_auth::distributor_env(nats_url, d)
        );
    }
}

fn nats_config_command(
    distributors: &[String],
    out: Option<PathBuf>,
    nats_url: &str,
) -> Result<(), String> {
    let auth = NatsAuth::generate(distributors).map_err(|e| e.to_string())?;
    let text = auth.render().map_err(|e| e.to_string())?;
    match out {
        Some(path) => {
            nats_auth::write_private(&path, &text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            println!(
                "wrote {} (mode 0600; password hashes, the passwords are below and nowhere else). Include it in the nats-server configuration (`include` or -c).",
                path.display()
            );
            print_logins(&auth, nats_url, true);
        }
        None => {
            // The configuration goes to stdout (to redirect into a file); the logins to stderr.
            print!("{text}");
            eprintln!(
                "# the configuration holds passwords: keep the file private (chmod 600), or use --out"
            );
            let mut lines = format!(
                "# services: NATS_USER={} NATS_PASSWORD={}\n",
                auth.services.user, auth.services.password
            );
            for d in &auth.distributors {
                lines.push_str(&format!(
                    "# distributor {}: {}\n",
                    d.site,
                    nats_auth::distributor_env(nats_url, d)
                ));
            }
            eprint!("{lines}");
        }
    }
    Ok(())
}

struct UpArgs {
    listen: SocketAddr,
    grpc_listen: SocketAddr,
    nats_port: u16,
    nats_listen: IpAddr,
    distributors: Vec<String>,
}

async fn up(args: UpArgs, shutdown: Shutdown) -> Result<(), String> {
    let UpArgs {
        listen,
        grpc_listen,
        nats_port,
        nats_listen,
        distributors,
    } = args;
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
    let (nats_child, nats_url, nats_auth) = match BusConfig::url_from_env() {
        Some(_) if !distributors.is_empty() => {
            return Err("--distributor adds logins to the nats-server bootfleet starts; with NATS_URL set, give your server the users of `bootfleet nats-config`".into());
        }
        Some(url) => (None, url, None),
        None => {
            // The server is never open without a login: the services connect as `services`.
            // Distributor logins are kept between starts, so sites keep their passwords.
            let logins = data_dir.join("nats-logins");
            let saved = match std::fs::read_to_string(&logins) {
                Ok(text) => nats_auth::parse_saved_logins(&text)
                    .map_err(|e| format!("{}: {e}", logins.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(format!("cannot read {}: {e}", logins.display())),
            };
            let auth = NatsAuth::keeping(&saved, &distributors).map_err(|e| e.to_string())?;
            nats_auth::write_private(&logins, &nats_auth::render_saved_logins(&auth))
                .map_err(|e| format!("cannot write {}: {e}", logins.display()))?;
            let conf = data_dir.join("nats-server.conf");
            let text = auth.render().map_err(|e| e.to_string())?;
            nats_auth::write_private(&conf, &text)
                .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
            if !nats_listen.is_loopback() {
                tracing::warn!(
                    %nats_listen,
                    "this nats-server speaks plain text: distributor logins and artifacts cross the LAN readable; for production run nats-server with TLS (docs/nats-permissions.md)"
                );
            }
            let child = NatsChild::start(&data_dir, nats_listen, nats_port, &conf).await?;
            let url = child.url.clone();
            (Some(child), url, Some(auth))
        }
    };
    let mut bus = nats_config(nats_url.clone(), "up");
    if let Some(auth) = &nats_auth {
        bus.auth = auth.services_auth();
        bus.inbox_prefix = None;
    }
    let database_url = config::database_url(&data_dir);
    let started = System::start(SystemConfig {
        nats: bus,
        database_url: database_url.clone(),
        listen,
        gateway,
    })
    .await;
    let started = match started {
        Ok(mut system) => match system.serve_grpc(grpc_listen).await {
            Ok(_) => Ok(system),
            Err(e) => {
                system.stop().await;
                Err(e)
            }
        },
        Err(e) => Err(e),
    };
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
            "{nats_url} (started by bootfleet; users and password hashes in {}, data in {})",
            data_dir.join("nats-server.conf").display(),
            c.store_dir.display()
        ),
        None => format!("{nats_url} (from NATS_URL)"),
    };
    println!("bootfleet is up");
    println!("  API:       {base}/api");
    println!("  OpenAPI:   {base}/api/openapi.json");
    let grpc = system.grpc_url().unwrap_or_default();
    println!("  gRPC:      {grpc} (reflection on; the CLI's --url)");
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
    println!("export BOOTFLEET_GRPC_URL={grpc}");
    println!("export BOOTFLEET_TOKEN={admin}");
    if let (Some(auth), Some(child)) = (&nats_auth, &nats_child) {
        if !auth.distributors.is_empty() {
            print_logins(
                auth,
                &nats_child::url_for_distributors(nats_listen, child.port),
                false,
            );
            if nats_listen.is_unspecified() {
                println!(
                    "  (nats-server listens on every address: replace {} with this host's address on the distributors' LAN)",
                    nats_child::THIS_HOST
                );
            }
        }
    }
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
    let mut shutdown = Shutdown::install()?;
    match cli.command {
        Command::Up {
            listen,
            grpc_listen,
            nats_port,
            nats_listen,
            distributors,
            metrics,
        } => {
            metrics.start().await?;
            up(
                UpArgs {
                    listen,
                    grpc_listen,
                    nats_port,
                    nats_listen,
                    distributors,
                },
                shutdown,
            )
            .await
        }
        Command::NatsConfig {
            distributors,
            out,
            nats_url,
        } => nats_config_command(&distributors, out, &nats_url),
        Command::Gateway {
            listen,
            grpc_listen,
            metrics,
        } => {
            metrics.start().await?;
            let data_dir = config::data_dir();
            let gateway = config::gateway_config(config::jwt_secret(&data_dir, false)?)?;
            let bus = Bus::connect(&nats_config(require_nats_url()?, "gateway"))
                .await
                .map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let grpc_listener = tokio::net::TcpListener::bind(grpc_listen)
                .await
                .map_err(|e| format!("cannot listen on {grpc_listen}: {e}"))?;
            // One signal stops both; each finishes what it has under way.
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let when_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let grpc = tokio::spawn(bootfleet_gateway::grpc::serve(
                grpc_listener,
                bus.clone(),
                gateway.clone(),
                Box::pin(when_stopped(stopped.clone())),
            ));
            tokio::spawn(async move {
                shutdown.wait().await;
                let _ = stop.send(true);
            });
            let rest =
                bootfleet_gateway::serve(listener, bus, gateway, Box::pin(when_stopped(stopped)))
                    .await;
            let grpc = grpc.await.map_err(|e| e.to_string())?;
            rest.and(grpc).map_err(|e| e.to_string())
        }
        Command::Service { name, metrics } => {
            metrics.start().await?;
            let selected = crate::services_named(&name);
            let selected: Vec<_> = selected.iter().collect();
            let bus = Bus::connect(&nats_config(require_nats_url()?, &name))
                .await
                .map_err(|e| e.to_string())?;
            let database_url = config::database_url(&config::data_dir());
            // What a service needs may come up after it (a NATS cluster electing its JetStream
            // leaders, the bucket the artifacts service makes, a database still starting): try
            // again for a bounded while rather than exit and leave it to the restart policy,
            // whose back-off doubles with each quick failure.
            let started = std::time::Instant::now();
            let services = loop {
                match bootfleet_service_kit::Services::start(&bus, &database_url, &selected).await {
                    Ok(services) => break services,
                    Err(e) if started.elapsed() < START_RETRY_FOR => {
                        tracing::warn!(error = %e, "cannot start yet; trying again in 2 s");
                        tokio::select! {
                            () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                            () = shutdown.signalled() => return Ok(()),
                        }
                    }
                    Err(e) => return Err(e.to_string()),
                }
            };
            shutdown.wait().await;
            services.stop().await;
            Ok(())
        }
        Command::Healthcheck { role, listen } => {
            use crate::healthcheck::{self, Checked};
            let checked = match role {
                Some(role) => healthcheck::parse(&role, listen)?,
                None => healthcheck::from_processes(listen)?,
            };
            match checked {
                Checked::Gateway(addr) => {
                    healthcheck::gateway(addr, std::time::Duration::from_secs(3)).await
                }
                Checked::Services(names) => {
                    let config = nats_config(require_nats_url()?, "healthcheck");
                    let ping = async {
                        let bus = Bus::connect(&config).await.map_err(|e| e.to_string())?;
                        for name in &names {
                            bus.ping(name).await.map_err(|e| e.to_string())?;
                        }
                        Ok(())
                    };
                    tokio::time::timeout(std::time::Duration::from_secs(5), ping)
                        .await
                        .map_err(|_| format!("{}: no answer within 5 s", names.join(", ")))?
                }
            }
        }
        Command::Token {
            role,
            days,
            subject,
            site,
        } => {
            let secret = config::jwt_secret(&config::data_dir(), false)?;
            println!(
                "{}",
                auth::mint_for_site(&secret, role, &subject, days, site.as_deref())?
            );
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "bootfleet", &mut std::io::stdout());
            Ok(())
        }
        // Answered in `main`, with its own exit codes.
        Command::Client(_) => Err("a client command reached the server dispatch".into()),
    }
}

/// What is logged unless `RUST_LOG` says otherwise.
const LOG_FILTER: &str = "info,sqlx=warn,sea_orm_migration=warn,async_nats=warn";

/// The `bootfleet` command: parses its arguments and runs what they say.
#[tokio::main]
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    let role = match &cli.command {
        Command::Service { name, .. } => name.as_str(),
        Command::Gateway { .. } => "gateway",
        Command::Client(_) => "client",
        _ => "up",
    };
    // A client prints only its answer; BOOTFLEET_LOG still turns its logging on.
    let logs =
        !matches!(cli.command, Command::Client(_)) || std::env::var_os("BOOTFLEET_LOG").is_some();
    let _traces = match logs.then(|| init_logging(role)).transpose() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("bootfleet: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Client(command) = cli.command {
        return match crate::cli::run(command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => failure.report(),
        };
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootfleet: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own checks of every subcommand (conflicting names, groups) fail here, not on a
    /// user's first `--help`.
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
