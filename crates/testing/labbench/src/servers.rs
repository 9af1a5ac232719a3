//! The two servers under test, each started alone in the server namespace with the same files,
//! and stopped (by the pid we started) before the other one starts.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use bootfleet_testkit::netlab::NetLab;
use bootfleet_testkit::ChildGuard;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerKind {
    Distributor,
    /// Another distributor build (`--baseline-distributor-bin`), to compare two builds in one run.
    DistributorBaseline,
    /// dnsmasq with `--tftp-max` raised (`--dnsmasq-tftp-max`).
    Dnsmasq,
    /// dnsmasq at its default `--tftp-max` of 50.
    DnsmasqDefaults,
}

/// dnsmasq's default `--tftp-max`.
pub const DNSMASQ_DEFAULT_TFTP_MAX: u32 = 50;

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Distributor => "bootfleet-distributor",
            ServerKind::DistributorBaseline => "bootfleet-distributor (baseline)",
            ServerKind::Dnsmasq => "dnsmasq",
            ServerKind::DnsmasqDefaults => "dnsmasq (tftp-max 50)",
        }
    }

    fn file_tag(self) -> &'static str {
        match self {
            ServerKind::Distributor => "bootfleet-distributor",
            ServerKind::DistributorBaseline => "bootfleet-distributor-baseline",
            ServerKind::Dnsmasq => "dnsmasq",
            ServerKind::DnsmasqDefaults => "dnsmasq-defaults",
        }
    }
}

/// Where the servers run and what they serve.
#[derive(Debug, Clone)]
pub struct ServerSetup {
    pub namespace: String,
    pub interface: String,
    pub server_ip: String,
    /// The network for dnsmasq's `--dhcp-range=NET,proxy`.
    pub network: String,
    pub root: PathBuf,
    pub boot_file: String,
    /// The x64 UEFI clients' boot file.
    pub boot_file_efi: String,
    pub distributor: Build,
    /// Server `distributor-baseline`; without one it is the `distributor` build.
    pub baseline: Option<Build>,
    pub dnsmasq_bin: PathBuf,
    pub dnsmasq_tftp_max: u32,
    pub work: PathBuf,
    /// Run the server on this CPU only (`taskset`).
    pub server_cpu: Option<usize>,
}

/// A distributor binary and the arguments it gets besides the common ones.
#[derive(Debug, Clone)]
pub struct Build {
    pub bin: PathBuf,
    pub extra_args: Vec<String>,
}

/// A running server; killed (SIGKILL to the pid we spawned) and reaped on drop.
#[derive(Debug)]
pub struct Running {
    child: ChildGuard,
    pub log: PathBuf,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// `Some(status)` if it has already exited (a bad flag, a port in use).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.0.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// dnsmasq's arguments: proxyDHCP for BIOS and x64 UEFI PXE (`pxe-service`, since a proxy
/// with only `dhcp-boot` stays silent, LAB-NOTES) and TFTP from the same root, nothing else.
pub fn dnsmasq_args(setup: &ServerSetup, tftp_max: u32) -> Vec<String> {
    let dir = &setup.work;
    vec![
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--port=0".into(),
        "--bind-interfaces".into(),
        format!("--interface={}", setup.interface),
        "--user=root".into(),
        "--log-facility=-".into(),
        "--quiet-dhcp".into(),
        "--quiet-tftp".into(),
        format!("--dhcp-range={},proxy", setup.network),
        format!("--pxe-service=x86PC,boot,{}", setup.boot_file),
        format!("--pxe-service=X86-64_EFI,boot,{}", setup.boot_file_efi),
        "--enable-tftp".into(),
        format!("--tftp-root={}", setup.root.display()),
        format!("--tftp-max={tftp_max}"),
        format!("--dhcp-leasefile={}", dir.join("dnsmasq.leases").display()),
        format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
    ]
}

pub fn distributor_args(setup: &ServerSetup) -> Vec<String> {
    vec![
        "serve".into(),
        "--interface".into(),
        setup.interface.clone(),
        "--server-ip".into(),
        setup.server_ip.clone(),
        "--cache-dir".into(),
        setup.root.display().to_string(),
        "--bios-file".into(),
        setup.boot_file.clone(),
        "--uefi-x64-file".into(),
        setup.boot_file_efi.clone(),
    ]
}

pub fn start(lab: &NetLab, setup: &ServerSetup, kind: ServerKind, tag: &str) -> Running {
    let log = setup.work.join(format!("{}-{tag}.log", kind.file_tag()));
    let (program, args): (&Path, Vec<String>) = match kind {
        ServerKind::Distributor | ServerKind::DistributorBaseline => {
            let build = match kind {
                ServerKind::DistributorBaseline => setup.baseline.as_ref(),
                _ => None,
            }
            .unwrap_or(&setup.distributor);
            (
                &build.bin,
                [distributor_args(setup), build.extra_args.clone()].concat(),
            )
        }
        ServerKind::Dnsmasq => (
            &setup.dnsmasq_bin,
            dnsmasq_args(setup, setup.dnsmasq_tftp_max),
        ),
        ServerKind::DnsmasqDefaults => (
            &setup.dnsmasq_bin,
            dnsmasq_args(setup, DNSMASQ_DEFAULT_TFTP_MAX),
        ),
    };
    let stderr = std::fs::File::create(&log).expect("server log file");
    // taskset execs the server, so the pid we measure is the server's.
    let mut command = match setup.server_cpu {
        Some(cpu) => {
            let mut c = lab.command(&setup.namespace, "taskset");
            c.args(["--cpu-list", &cpu.to_string()]).arg(program);
            c
        }
        None => lab.command(&setup.namespace, program),
    };
    let child = command
        .args(&args)
        // Logging stays out of the measurement: warnings only, unless asked (with --keep, to
        // read what the server did).
        .env(
            "BOOTFLEET_LOG",
            std::env::var("LABBENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    Running {
        child: ChildGuard(child),
        log,
    }
}
