//! The distributor: the site agent on the LAN's host network. It answers PXE clients with
//! proxyDHCP (never handing out addresses), serves boot files over TFTP from its cache, and
//! reports what it did. The protocol logic is `bootfleet_netboot`'s pure code; this crate is the
//! thin socket loops around it.

pub mod agent;
pub mod boot_config;
pub mod cache;
pub mod config;
pub mod datagram_batch;
pub mod drained_recv;
pub mod http_boot;
pub mod lan;
pub mod machines;
pub mod neighbours;
pub mod power;
pub mod proxy_dhcp;
pub mod reachability;
pub mod reporting;
pub mod runs;
pub mod sched;
pub mod shared_files;
pub mod sockets;
pub mod ssh_exec;
pub mod tftp_server;
pub mod tftp_transfers;

use bootfleet_netboot::dhcp::{BootFiles, ProxyConfig};
use futures_util::future::BoxFuture;

use std::sync::Arc;

use crate::agent::Agent;
use crate::boot_config::Applier;
use crate::cache::Cache;
use crate::config::ServeArgs;
use crate::lan::{Lan, Listeners};
use crate::proxy_dhcp::LiveConfig;
use crate::reporting::{Counters, Events, Reporting, Switch};

/// The file iPXE clients are handed instead of the script URL itself.
pub const IPXE_BOOTSTRAP: &str = "bootfleet.ipxe";

/// Checks the script URL before it goes into an iPXE script: http(s), no whitespace or control
/// characters (a newline would add commands to the script).
pub fn check_script_url(url: &str) -> Result<(), String> {
    let ok_scheme = url.starts_with("http://") || url.starts_with("https://");
    let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok_scheme && clean && url.len() <= 4096 {
        Ok(())
    } else {
        Err(format!(
            "--ipxe-script-url must be one http(s) URL without spaces, not {url:?}"
        ))
    }
}

/// Writes the bootstrap script into the cache (atomically). DHCP option 67 holds at most 255
/// bytes as iPXE reads it, and a URL with a node token is longer; a token in a DHCP broadcast
/// would also reach every host on the segment. So iPXE clients get this short file name over
/// TFTP, and the file chains the full URL.
pub fn write_ipxe_bootstrap(cache: &Cache, script_url: &str) -> Result<(), String> {
    check_script_url(script_url)?;
    let tmp = cache.root().join(format!(".{IPXE_BOOTSTRAP}.tmp"));
    std::fs::write(&tmp, format!("#!ipxe\nchain {script_url}\n"))
        .and_then(|()| std::fs::rename(&tmp, cache.root().join(IPXE_BOOTSTRAP)))
        .map_err(|e| format!("cannot write {IPXE_BOOTSTRAP} into the cache: {e}"))
}

/// Serves proxyDHCP and TFTP as configured until `shutdown` resolves.
///
/// Boxed on both sides on purpose: rustc compiles an async body again in every crate that awaits
/// it, so an `async fn` here would make the `bootfleet-distributor` binary compile the whole
/// agent a second time. Through a boxed future the agent is compiled once, in this crate.
pub fn serve(
    args: ServeArgs,
    shutdown: BoxFuture<'static, ()>,
) -> BoxFuture<'static, Result<(), String>> {
    Box::pin(serve_until(args, shutdown))
}

async fn serve_until(args: ServeArgs, shutdown: BoxFuture<'static, ()>) -> Result<(), String> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let cache = Cache::new(&args.cache_dir)
        .map_err(|e| format!("cannot use the cache {}: {e}", args.cache_dir.display()))?;
    if let Some(url) = &args.ipxe_script_url {
        write_ipxe_bootstrap(&cache, url)?;
    }
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (--metrics-listen): {e}"))?;
        crate::reporting::register_metrics();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let stopped = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = bootfleet_telemetry::serve_metrics(listener, Box::pin(stopped)).await {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        });
    }
    let switch = Switch::default();
    let counters = Arc::new(Counters::default());
    let live = LiveConfig::new(ProxyConfig {
        server_ip: args.server_ip,
        boot: BootFiles {
            bios: args.bios_file.clone(),
            uefi_x64: args.uefi_x64_file.clone(),
            uefi_ia32: args.uefi_ia32_file.clone(),
            uefi_arm64: args.uefi_arm64_file.clone(),
            http_x64: args.http_x64_url.clone(),
            http_arm64: args.http_arm64_url.clone(),
            ipxe_script: args
                .ipxe_script_url
                .as_ref()
                .map(|_| IPXE_BOOTSTRAP.to_owned()),
        },
    });
    // The seed's variable name is accepted too.
    let artifact_id = args
        .artifact_id
        .clone()
        .or_else(|| std::env::var("CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID").ok())
        .filter(|s| !s.is_empty());
    let agent = match bootfleet_bus::BusConfig::url_from_env() {
        Some(url) => {
            let artifact_id = artifact_id.ok_or(
                "NATS_URL is set: set DISTRIBUTOR_ARTIFACT_ID (or --artifact-id) to this site's tag",
            )?;
            bootfleet_api::validate::artifact_id("artifactId", &artifact_id)
                .map_err(|e| format!("DISTRIBUTOR_ARTIFACT_ID: {}", e.message))?;
            let artifact_id_for_machines = artifact_id.clone();
            let bus = bootfleet_bus::BusConfig::from_env(
                url,
                format!("bootfleet-distributor-{artifact_id}"),
            );
            let mut agent = Agent::new(
                bus,
                artifact_id,
                std::time::Duration::from_secs(args.heartbeat_secs),
            );
            agent.probe_every =
                (args.probe_secs > 0).then(|| std::time::Duration::from_secs(args.probe_secs));
            agent.machines = Some(Arc::new(machines::Machines::new(artifact_id_for_machines)));
            Some(agent)
        }
        None => {
            tracing::info!(
                "no NATS_URL: serving on local configuration only, reporting to the log"
            );
            None
        }
    };
    let reporting = Reporting {
        events: agent
            .as_ref()
            .map_or_else(Events::log_only, |a| a.events.clone()),
        switch: switch.clone(),
        counters: counters.clone(),
    };
    let mut lan = Lan::new(
        Listeners {
            dhcp: !args.no_dhcp,
            tftp: !args.no_tftp,
            http_port: args.http_port,
        },
        cache.clone(),
        live.clone(),
        reporting,
        stop_rx.clone(),
    );
    if let Some(machines) = agent.as_ref().and_then(|a| a.machines.clone()) {
        lan = lan.with_machines(machines);
    }
    lan = lan.with_dhcp_priority(args.dhcp_priority);
    let lan = Arc::new(lan);
    lan.serve(lan.bind(&args.interface, args.server_ip).await?);
    let applier = Arc::new(Applier::new(cache, live, lan.clone()));
    if let Some(agent) = agent {
        tasks.spawn(agent.run(switch, counters, applier, !args.no_dhcp, stop_rx));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    lan.stop().await;
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// A distributor's NATS side alone, as tests of the services' side run it (see [`nats_side`]).
#[derive(Debug)]
pub struct NatsSide {
    pub switch: Switch,
    /// Stops the agent (send `true`).
    pub stop: tokio::sync::watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Runs `agent` with no DHCP, TFTP or HTTP listener: its files in `cache`, no boot files on
/// 127.0.0.1 until it is configured. `serve_on`: the device its LAN side serves (with no
/// listener) from the start, as [`serve`]'s does.
pub async fn nats_side(
    agent: Agent,
    cache: Cache,
    serve_on: Option<&str>,
) -> Result<NatsSide, String> {
    let server_ip = std::net::Ipv4Addr::LOCALHOST;
    let live = LiveConfig::new(ProxyConfig {
        server_ip,
        boot: BootFiles::default(),
    });
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let switch = Switch::default();
    let counters = Arc::new(Counters::default());
    let lan = Arc::new(Lan::new(
        Listeners {
            dhcp: false,
            tftp: false,
            http_port: None,
        },
        cache.clone(),
        live.clone(),
        Reporting {
            events: agent.events.clone(),
            switch: switch.clone(),
            counters: counters.clone(),
        },
        stop_rx.clone(),
    ));
    if let Some(device) = serve_on {
        lan.serve(lan.bind(device, server_ip).await?);
    }
    let applier = Arc::new(Applier::new(cache, live, lan));
    let task = tokio::spawn(agent.run(switch.clone(), counters, applier, false, stop_rx));
    Ok(NatsSide { switch, stop, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_script_chains_the_url_and_refuses_injection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path()).expect("cache");
        let url = "http://10.0.0.2:8080/api/mainscripts/6a3c2f0e-0d2f-4c7e-9f3e-1a2b3c4d5e6f?token=abc.def.ghi";
        write_ipxe_bootstrap(&cache, url).expect("write");
        let text = std::fs::read_to_string(dir.path().join(IPXE_BOOTSTRAP)).expect("read");
        assert_eq!(text, format!("#!ipxe\nchain {url}\n"));
        for bad in [
            "ftp://x/y",
            "http://x/y\nshell",
            "http://x/ y",
            "javascript:alert(1)",
        ] {
            assert!(write_ipxe_bootstrap(&cache, bad).is_err(), "{bad:?}");
        }
    }
}
