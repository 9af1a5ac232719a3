//! `bootfleet-labbench`: our distributor against dnsmasq as proxyDHCP + TFTP server, measured
//! side by side inside a LAN made of network namespaces (see `--help`).

mod dhcp_client;
mod load;
mod measure;
mod report;
mod servers;
mod tftp_client;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bootfleet_testkit::netlab::NetLab;
use clap::Parser;

use crate::dhcp_client::{BinlRound, DhcpClient};
use crate::measure::{Ctx, Identities, Mix};
use crate::report::{Round, Rounds};
use crate::servers::{ServerKind, ServerSetup};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const SERVER_IF: &str = "s0";
const CLIENT_IF: &str = "c0";
const BOOT_FILE: &str = "bench-boot.kpxe";
/// The x64 UEFI clients' boot file: the same bytes under another name.
const BOOT_FILE_EFI: &str = "bench-boot.efi";
const BIG_FILE: &str = "bench-10m.bin";
const READY_FILE: &str = "bench-ready.bin";

/// Measures bootfleet-distributor against dnsmasq (proxyDHCP + TFTP) inside a namespaced lab.
///
/// Builds a LAN in network namespaces (a bridge in `lan`, the server on 10.77.0.2 in `srv`,
/// simulated PXE clients on 10.77.0.10 in `cli`; all removed at exit) and, for each repeat,
/// starts each server in turn in `srv` with the same files (never both at once), then measures:
///
///  1. proxyDHCP latency: sequential PXE DISCOVERs, time to the OFFER and to the boot file
///     (dnsmasq's pxe-service offer carries a boot menu, so a BIOS ROM needs a second round
///     trip to udp/4011; ours names the file in the OFFER; UEFI clients always ask again on
///     udp/4011, as EDK2 does);
///  2. TFTP throughput of a 10 MiB file, lock-step (blksize 1468) and with windowsize;
///  3. boot storms: N clients started evenly within `--storm-spread-ms`, each doing the
///     proxyDHCP exchange (with the udp/4011 round) and a TFTP read of a 1 MiB boot file,
///     lock-step or asking `--storm-windowsize`, every byte checked. Each client's OFFER
///     latency (first DISCOVER sent to OFFER received) is recorded during the storm, twice:
///     by the kernel's receive timestamp on the client socket (the server's share) and when the
///     client's receiver task read it (adding the client runtime's own delay); p50/p99/max.
///
/// Clients are BIOS (arch 0, `PXEClient:Arch:00000`) and x64 UEFI (arch 7,
/// `PXEClient:Arch:00007`), alternating by default (`--firmware`). Servers: the distributor,
/// dnsmasq with `--tftp-max` raised to `--dnsmasq-tftp-max` (`dnsmasq`), and dnsmasq at its
/// default `--tftp-max` of 50 (`dnsmasq-defaults`).
///
/// Prints a markdown table of medians over the repeats (stdout); progress goes to stderr.
/// Needs root (namespaces, udp/67, udp/69) and dnsmasq (Debian: dnsmasq-base).
#[derive(Parser, Debug)]
#[command(name = "bootfleet-labbench", version, verbatim_doc_comment)]
struct Args {
    /// The distributor binary [default: bootfleet-distributor next to this binary].
    #[arg(long)]
    distributor_bin: Option<PathBuf>,
    /// A second distributor build, measured as server `distributor-baseline` (e.g. the build
    /// before a change, side by side with `distributor` in the same run).
    #[arg(long)]
    baseline_distributor_bin: Option<PathBuf>,
    /// The dnsmasq binary.
    #[arg(long, default_value = "dnsmasq")]
    dnsmasq_bin: PathBuf,
    /// Servers to measure, in order (distributor, distributor-baseline, dnsmasq,
    /// dnsmasq-defaults).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "distributor,dnsmasq,dnsmasq-defaults"
    )]
    servers: Vec<ServerKind>,
    /// Repeats of every measurement (medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    repeats: u32,
    /// Sequential DISCOVERs per latency run (0 skips it).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    latency_requests: u32,
    /// Storm sizes (simulated clients); empty skips the storms.
    #[arg(long, value_delimiter = ',', default_value = "50,200,500")]
    storm: Vec<u32>,
    /// TFTP windowsize the storm clients ask for (RFC 7440; 1 = lock-step, no option); every
    /// storm size runs once per value, e.g. `1,16`.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u16).range(1..=64))]
    storm_windowsize: Vec<u16>,
    /// Firmware the simulated clients play: BIOS and x64 UEFI alternating, or one kind.
    #[arg(long, value_enum, default_value = "mixed")]
    firmware: Mix,
    /// When clients take the udp/4011 boot-server round: as firmware does (UEFI always, BIOS
    /// only when the OFFER names no file), or always.
    #[arg(long, value_enum, default_value = "firmware")]
    binl_round: BinlRound,
    /// All storm clients start within this many milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    storm_spread_ms: u64,
    /// Upper bound on one storm, in seconds (clients still running then count as failures).
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=1800))]
    storm_limit_s: u64,
    /// Size of the boot file the storm clients fetch, KiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    boot_file_kib: u64,
    /// Size of the throughput file, MiB (0 skips throughput).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=512))]
    throughput_mib: u64,
    /// Windowsize asked for in the windowed throughput run (RFC 7440).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(2..=64))]
    windowsize: u16,
    /// blksize every client asks for (EDK2 asks 1468).
    #[arg(long, default_value_t = 1468, value_parser = clap::value_parser!(u16).range(512..=1468))]
    blksize: u16,
    /// dnsmasq --tftp-max for the `dnsmasq` server (its default, 50, would queue the larger
    /// storms; the `dnsmasq-defaults` server keeps 50).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    dnsmasq_tftp_max: u32,
    /// Before each round, wait until other processes use less than this many cores (their
    /// user CPU over 3 s); rounds where they used more are flagged in the notes.
    #[arg(long, default_value_t = 0.15)]
    max_foreign_cores: f64,
    /// How long to wait for a quiet machine before measuring anyway, seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=3600))]
    quiet_wait_s: u64,
    /// Measurements to leave out.
    #[arg(long, value_enum, value_delimiter = ',')]
    skip: Vec<Part>,
    /// Pin the server to one CPU and the simulated clients to another (as issue 19 measured),
    /// so the server's threads compete only with each other: the first and second of the CPUs
    /// this process may use (CPU 0 and 1 on an unrestricted machine); needs two.
    #[arg(long)]
    pin: bool,
    /// An extra argument for the `distributor` server (repeat for several), e.g.
    /// `--distributor-arg=--dhcp-priority=normal`.
    #[arg(long, allow_hyphen_values = true)]
    distributor_arg: Vec<String>,
    /// An extra argument for the `distributor-baseline` server (repeat for several).
    #[arg(long, allow_hyphen_values = true)]
    baseline_distributor_arg: Vec<String>,
    /// Keep server logs and files in this directory instead of a removed temporary one. The
    /// servers log warnings only; set LABBENCH_SERVER_LOG (e.g. `info`) for more.
    #[arg(long)]
    keep: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Latency,
    Throughput,
    Storm,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn find_in_path(name: &std::path::Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootfleet-labbench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: Args) -> Result<(), String> {
    if args.skip.contains(&Part::Latency) {
        args.latency_requests = 0;
    }
    if args.skip.contains(&Part::Throughput) {
        args.throughput_mib = 0;
    }
    if args.skip.contains(&Part::Storm) {
        args.storm.clear();
    }
    if !is_root() {
        return Err("needs root: it creates network namespaces and binds udp/67, udp/69".into());
    }
    // With `--pin`: the server's CPU and the clients' CPU, the first two this process may use.
    let pinned = if args.pin {
        let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map_err(|e| format!("--pin: cannot read this process's CPUs: {e}"))?;
        let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
            .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
            .take(2)
            .collect();
        match cpus[..] {
            [server, client] => Some((server, client)),
            _ => {
                return Err(format!(
                    "--pin needs two CPUs, this process may use {}",
                    cpus.len()
                ))
            }
        }
    } else {
        None
    };
    if args.storm.iter().any(|&n| n == 0 || n > 2000) {
        return Err("--storm sizes must be 1..=2000".into());
    }
    let distributor_bin = match &args.distributor_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("bootfleet-distributor"),
    };
    if args.servers.contains(&ServerKind::Distributor) && !distributor_bin.is_file() {
        return Err(format!(
            "no distributor at {} (cargo build --release -p bootfleet-site-agent)",
            distributor_bin.display()
        ));
    }
    if args.servers.contains(&ServerKind::DistributorBaseline)
        && !args
            .baseline_distributor_bin
            .as_ref()
            .is_some_and(|p| p.is_file())
    {
        return Err("server distributor-baseline needs --baseline-distributor-bin FILE".into());
    }
    let dnsmasq_bin = find_in_path(&args.dnsmasq_bin).unwrap_or(args.dnsmasq_bin.clone());
    let wants_dnsmasq = args
        .servers
        .iter()
        .any(|k| matches!(k, ServerKind::Dnsmasq | ServerKind::DnsmasqDefaults));
    if wants_dnsmasq && !dnsmasq_bin.is_file() {
        return Err("dnsmasq not found (apt-get install dnsmasq-base)".into());
    }

    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let work = match &args.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            dir.canonicalize().map_err(|e| e.to_string())?
        }
        None => temp.path().to_path_buf(),
    };
    let root = work.join("tftp");
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let boot = measure::pseudo_random_bytes(kib(args.boot_file_kib), 1);
    let big = measure::pseudo_random_bytes(kib(args.throughput_mib.max(1) * 1024), 2);
    let ready = measure::pseudo_random_bytes(3000, 3);
    for (name, bytes) in [
        (BOOT_FILE, &boot),
        (BOOT_FILE_EFI, &boot),
        (BIG_FILE, &big),
        (READY_FILE, &ready),
    ] {
        std::fs::write(root.join(name), bytes).map_err(|e| e.to_string())?;
    }
    let (boot, big, ready) = (Arc::new(boot), Arc::new(big), Arc::new(ready));

    let mut lab = NetLab::new();
    let srv = lab.host("srv", SERVER_IF, &format!("{SERVER_IP}/24"), None);
    let cli = lab.host("cli", CLIENT_IF, &format!("{CLIENT_IP}/24"), None);
    let setup = ServerSetup {
        namespace: srv,
        interface: SERVER_IF.into(),
        server_ip: SERVER_IP.to_string(),
        network: "10.77.0.0".into(),
        root,
        boot_file: BOOT_FILE.into(),
        boot_file_efi: BOOT_FILE_EFI.into(),
        distributor: servers::Build {
            bin: distributor_bin,
            extra_args: args.distributor_arg.clone(),
        },
        baseline: args
            .baseline_distributor_bin
            .clone()
            .map(|bin| servers::Build {
                bin,
                extra_args: args.baseline_distributor_arg.clone(),
            }),
        dnsmasq_bin,
        dnsmasq_tftp_max: args.dnsmasq_tftp_max,
        work: work.clone(),
        server_cpu: pinned.map(|(server, _)| server),
    };
    eprintln!("labbench: lab up; server {SERVER_IP} ({SERVER_IF}), clients {CLIENT_IP} ({CLIENT_IF}); work dir {}", work.display());

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut rounds = Rounds::new(args.servers.clone());
    for rep in 0..args.repeats {
        // Alternate the order so neither server always runs on a warmer machine.
        let mut order = args.servers.clone();
        if rep % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            let tag = format!("rep{rep}");
            load::wait_quiet(
                args.max_foreign_cores,
                Duration::from_secs(args.quiet_wait_s),
            );
            eprintln!("labbench: {} {tag}: starting", kind.name());
            let mut server = servers::start(&lab, &setup, kind, &tag);
            let pid = server.pid();
            eprintln!("labbench: {} {tag}: pid {pid}", kind.name());
            let load_before = load::sample(Some(pid));
            let cpu_before = load::process_cpu_seconds(pid);
            let plan = Plan {
                latency_requests: args.latency_requests,
                throughput: args.throughput_mib > 0,
                windowsize: args.windowsize,
                storms: storm_plan(&args),
                spread: Duration::from_millis(args.storm_spread_ms),
                storm_limit: Duration::from_secs(args.storm_limit_s),
            };
            let ctx_parts = CtxParts {
                seed: seed ^ (u64::from(rep) << 48) ^ (kind as u64) << 56,
                boot: boot.clone(),
                big: big.clone(),
                ready: ready.clone(),
                blksize: args.blksize,
                mix: args.firmware,
                binl_round: args.binl_round,
                cpu: pinned.map(|(_, client)| client),
            };
            let round = lab.run_in(&cli, move || run_round(ctx_parts, plan));
            let foreign = load::foreign_cores(load_before, load::sample(Some(pid)));
            let server_cpu = load::process_cpu_seconds(pid) - cpu_before;
            let exited = server.exited();
            let log = server.log_text();
            drop(server);
            let mut round = round.map_err(|e| {
                format!("{} {tag}: {e}; exit: {exited:?}; log:\n{log}", kind.name())
            })?;
            round.foreign_cores = foreign;
            round.server_cpu_s = server_cpu;
            if foreign >= args.max_foreign_cores {
                round.notes.push(format!(
                    "other processes used {foreign:.2} cores during this round: its numbers are suspect"
                ));
            }
            if let Some(status) = exited {
                round
                    .notes
                    .push(format!("server exited during the round: {status}"));
            }
            let noisy: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            let ours = matches!(
                kind,
                ServerKind::Distributor | ServerKind::DistributorBaseline
            );
            if ours && !noisy.is_empty() {
                round.notes.push(format!(
                    "distributor logged {} warning lines, e.g. {:?}",
                    noisy.len(),
                    noisy.first().unwrap_or(&"")
                ));
            }
            report::progress(kind, rep, &round);
            rounds.push(kind, round);
        }
    }
    drop(lab);
    print!("{}", report::markdown(&rounds, &report_params(&args)));
    Ok(())
}

fn kib(k: u64) -> usize {
    usize::try_from(k * 1024).unwrap_or(usize::MAX)
}

/// Every storm size once per windowsize asked for: (clients, windowsize).
fn storm_plan(args: &Args) -> Vec<(u32, u16)> {
    let mut windows = args.storm_windowsize.clone();
    if windows.is_empty() {
        windows.push(1);
    }
    windows
        .iter()
        .flat_map(|&w| args.storm.iter().map(move |&n| (n, w)))
        .collect()
}

fn report_params(args: &Args) -> report::Params {
    report::Params {
        latency_requests: args.latency_requests,
        throughput_mib: args.throughput_mib,
        windowsize: args.windowsize,
        blksize: args.blksize,
        boot_file_kib: args.boot_file_kib,
        spread_ms: args.storm_spread_ms,
        repeats: args.repeats,
        storms: storm_plan(args),
        firmware: args.firmware,
        binl_round: args.binl_round,
    }
}

#[derive(Debug)]
struct Plan {
    latency_requests: u32,
    throughput: bool,
    windowsize: u16,
    storms: Vec<(u32, u16)>,
    spread: Duration,
    storm_limit: Duration,
}

#[derive(Debug)]
struct CtxParts {
    seed: u64,
    boot: Arc<Vec<u8>>,
    big: Arc<Vec<u8>>,
    ready: Arc<Vec<u8>>,
    blksize: u16,
    mix: Mix,
    binl_round: BinlRound,
    /// Pin the client runtime (and every thread it starts) to this CPU.
    cpu: Option<usize>,
}

/// One server, one repeat: everything, on a runtime inside the client namespace.
fn run_round(parts: CtxParts, plan: Plan) -> Result<Round, String> {
    if let Some(cpu) = parts.cpu {
        // Threads inherit the affinity of the thread that starts them: the runtime's workers.
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).map_err(|e| format!("cpu {cpu}: {e}"))?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .map_err(|e| format!("cannot pin the clients to cpu {cpu}: {e}"))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let dhcp = DhcpClient::bind(CLIENT_IF, CLIENT_IP, parts.binl_round)
            .map_err(|e| format!("cannot bind udp/68 and udp/4011 in the client namespace: {e}"))?;
        let ctx = Arc::new(Ctx {
            dhcp,
            ids: Identities::new(parts.seed, parts.mix),
            server_ip: SERVER_IP,
            boot_content: parts.boot,
            big_file: BIG_FILE.into(),
            big_content: parts.big,
            ready_file: READY_FILE.into(),
            ready_content: parts.ready,
            blksize: parts.blksize,
        });
        measure::wait_ready(&ctx, Duration::from_secs(10))
            .await
            .map_err(|e| format!("server not ready within 10 s ({e})"))?;
        let mut round = Round::default();
        if plan.latency_requests > 0 {
            round.latency = Some(measure::latency(&ctx, plan.latency_requests).await);
        }
        if plan.throughput {
            round.lockstep = Some(measure::throughput(&ctx, None).await);
            round.windowed = Some(measure::throughput(&ctx, Some(plan.windowsize)).await);
        }
        for &(n, windowsize) in &plan.storms {
            // Let the previous step's stragglers (a server resending a lost last ACK) drain.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let storm =
                measure::storm(ctx.clone(), n, windowsize, plan.spread, plan.storm_limit).await;
            round.storms.push(storm);
        }
        round.unclaimed_replies = ctx
            .dhcp
            .unclaimed
            .load(std::sync::atomic::Ordering::Relaxed);
        Ok(round)
    })
}
