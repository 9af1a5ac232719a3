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
    // Never trace raw NATS payloads (they may carry secrets).
    let _traces = match bootfleet_telemetry::init_logging(
        "info",
        &[bootfleet_bus::LOG_SECRET_GUARD],
        "bootfleet-distributor",
    ) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("bootfleet-distributor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match shutdown_signal() {
        Err(e) => Err(format!("cannot install signal handlers: {e}")),
        Ok(shutdown) => match cli.command {
            Command::Serve(args) => bootfleet_site_agent::serve(args, Box::pin(shutdown)).await,
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
