use std::process::ExitCode;

use bootfleet_site_agent::config::ServeArgs;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bootfleet-distributor",
    version,
    about = "Bootfleet's site agent: proxyDHCP and TFTP for PXE clients"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Answer PXE clients on one interface with proxyDHCP and serve the cache over TFTP.
    Serve(ServeArgs),
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("BOOTFLEET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Never trace raw NATS payloads (they may carry secrets).
    let filter = filter.add_directive(
        bootfleet_bus::LOG_SECRET_GUARD
            .parse()
            .unwrap_or_else(|_| unreachable!("a valid directive")),
    );
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

/// SIGINT/SIGTERM, listened for before anything starts, so a signal during startup is honoured.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match shutdown_signal() {
        Err(e) => Err(format!("cannot install signal handlers: {e}")),
        Ok(shutdown) => match cli.command {
            Command::Serve(args) => bootfleet_site_agent::serve(args, shutdown).await,
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootfleet-distributor: {e}");
            ExitCode::FAILURE
        }
    }
}
