//! What the distributor serves and where, from flags or the environment.

use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// The LAN interface to answer on (SO_BINDTODEVICE); nothing is answered elsewhere.
    #[arg(long, env = "DISTRIBUTOR_INTERFACE")]
    pub interface: String,
    /// This host's IPv4 address on that interface: the TFTP next-server in every answer.
    #[arg(long, env = "DISTRIBUTOR_SERVER_IP")]
    pub server_ip: Ipv4Addr,
    /// The local cache TFTP serves from (read-only; nothing outside it is served).
    #[arg(
        long,
        env = "DISTRIBUTOR_CACHE_DIR",
        default_value = "/var/cache/bootfleet-distributor"
    )]
    pub cache_dir: PathBuf,
    /// Boot file (in the cache) for BIOS PXE clients.
    #[arg(long, env = "DISTRIBUTOR_BIOS_FILE")]
    pub bios_file: Option<String>,
    /// Boot file (in the cache) for x64 UEFI PXE clients (arch 7 and 9).
    #[arg(long, env = "DISTRIBUTOR_UEFI_X64_FILE")]
    pub uefi_x64_file: Option<String>,
    /// Boot file (in the cache) for 32-bit UEFI PXE clients (arch 6).
    #[arg(long, env = "DISTRIBUTOR_UEFI_IA32_FILE")]
    pub uefi_ia32_file: Option<String>,
    /// Boot file (in the cache) for arm64 UEFI PXE clients (arch 11).
    #[arg(long, env = "DISTRIBUTOR_UEFI_ARM64_FILE")]
    pub uefi_arm64_file: Option<String>,
    /// http URL for x64 UEFI HTTP boot clients (arch 16).
    #[arg(long, env = "DISTRIBUTOR_HTTP_X64_URL")]
    pub http_x64_url: Option<String>,
    /// http URL for arm64 UEFI HTTP boot clients (arch 19).
    #[arg(long, env = "DISTRIBUTOR_HTTP_ARM64_URL")]
    pub http_arm64_url: Option<String>,
    /// The iPXE script URL for clients that are already iPXE (user class `iPXE`); they get a short
    /// bootstrap file over TFTP that chains it.
    #[arg(long, env = "DISTRIBUTOR_IPXE_SCRIPT_URL")]
    pub ipxe_script_url: Option<String>,
    /// This site's tag: names the distributor in the registry and on the bus. Required with NATS.
    #[arg(long, env = "DISTRIBUTOR_ARTIFACT_ID")]
    pub artifact_id: Option<String>,
    /// Seconds between heartbeats to the `distributors` service.
    #[arg(long, env = "DISTRIBUTOR_HEARTBEAT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub heartbeat_secs: u64,
    /// Seconds between reachability probes of the site's registered nodes (TCP to port 22);
    /// 0 turns probing off.
    #[arg(long, env = "DISTRIBUTOR_PROBE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub probe_secs: u64,
    /// Also serve the cache over HTTP on this port (for UEFI HTTP boot and iPXE); off by default.
    #[arg(long, env = "DISTRIBUTOR_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Do not run proxyDHCP (udp/67 and udp/4011).
    #[arg(long)]
    pub no_dhcp: bool,
    /// Do not run TFTP (udp/69).
    #[arg(long)]
    pub no_tftp: bool,
    /// How the proxyDHCP thread is scheduled, so an OFFER does not wait for a core behind TFTP
    /// work under a boot storm: `realtime` asks for SCHED_FIFO priority 1 (needs CAP_SYS_NICE;
    /// without it the thread runs as `short-slice` and logs that as it starts); `short-slice`
    /// keeps the ordinary scheduler with a 0.1 ms time slice, which Linux 6.12 and later turn
    /// into a prompt wake-up (no capability needed); `normal` asks for nothing.
    #[arg(
        long,
        env = "DISTRIBUTOR_DHCP_PRIORITY",
        value_enum,
        default_value = "realtime"
    )]
    pub dhcp_priority: crate::proxy_dhcp::Priority,
    /// Serve `/metrics` (and `/healthz`) without a token on this address, for Prometheus:
    /// loopback, or an address only the scraper reaches. Off when unset.
    #[arg(long, env = "BOOTFLEET_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}
