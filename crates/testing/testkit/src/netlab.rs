//! A LAN inside network namespaces, for tests that send DHCP/TFTP/PXE traffic. Every interface
//! and address lives inside namespaces this module creates; nothing is put on the root
//! namespace's interfaces, and everything is removed on drop. Needs root and iproute2.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static LABS: AtomicU32 = AtomicU32::new(0);

/// Runs a command and panics with its output if it fails (setup steps must not fail quietly).
pub fn run(cmd: &mut Command) {
    let what = format!("{cmd:?}");
    crate::run_ok(cmd, &what);
}

fn ip() -> Command {
    Command::new("ip")
}

/// A set of namespaces joined by one bridge (in its own namespace, `lan`), removed on drop.
#[derive(Debug)]
pub struct NetLab {
    prefix: String,
    namespaces: Vec<String>,
    veths: u32,
}

impl NetLab {
    /// A new lab with a `lan` namespace holding bridge `br0`.
    pub fn new() -> NetLab {
        // Names stay short: interface names are limited to 15 bytes.
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("bf{}x{n}", std::process::id() % 100_000);
        let mut lab = NetLab {
            prefix,
            namespaces: Vec::new(),
            veths: 0,
        };
        let lan = lab.namespace("lan");
        run(ip().args(["-n", &lan, "link", "add", "br0", "type", "bridge"]));
        // Forward at once: no STP listening delay while a guest's firmware waits for DHCP.
        run(ip().args([
            "-n",
            &lan,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]));
        run(ip().args(["-n", &lan, "link", "set", "br0", "up"]));
        lab
    }

    /// The full name of a namespace of this lab.
    pub fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// Creates namespace `short` with loopback up.
    pub fn namespace(&mut self, short: &str) -> String {
        let name = self.ns(short);
        run(ip().args(["netns", "add", &name]));
        self.namespaces.push(name.clone());
        run(ip().args(["-n", &name, "link", "set", "lo", "up"]));
        name
    }

    /// Creates namespace `short` (if needed) and joins it to the bridge with interface `ifname`
    /// carrying `cidr` (e.g. `10.77.0.2/24`), and optionally an IPv6 address.
    pub fn host(&mut self, short: &str, ifname: &str, cidr: &str, ipv6: Option<&str>) -> String {
        let name = self.ns(short);
        if !self.namespaces.contains(&name) {
            self.namespace(short);
        }
        let lan = self.ns("lan");
        self.veths += 1;
        let peer = format!("p{}", self.veths);
        run(ip().args([
            "link", "add", "name", ifname, "netns", &name, "type", "veth", "peer", "name", &peer,
            "netns", &lan,
        ]));
        run(ip().args(["-n", &lan, "link", "set", &peer, "master", "br0", "up"]));
        if ipv6.is_none() {
            self.sysctl(&name, &format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1");
        }
        run(ip().args(["-n", &name, "addr", "add", cidr, "dev", ifname]));
        if let Some(v6) = ipv6 {
            run(ip().args(["-n", &name, "-6", "addr", "add", v6, "dev", ifname, "nodad"]));
        }
        run(ip().args(["-n", &name, "link", "set", ifname, "up"]));
        name
    }

    /// A tap device on the bridge, for a QEMU guest (`-netdev tap,ifname=...`).
    pub fn tap(&mut self, ifname: &str) {
        let lan = self.ns("lan");
        run(ip().args(["-n", &lan, "tuntap", "add", "dev", ifname, "mode", "tap"]));
        run(ip().args(["-n", &lan, "link", "set", ifname, "master", "br0", "up"]));
    }

    pub fn sysctl(&self, ns: &str, key: &str, value: &str) {
        run(ip().args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ]));
    }

    /// A command to run inside namespace `ns` (`ip netns exec` execs it: the child's pid is the
    /// program's own).
    pub fn command(&self, ns: &str, program: impl AsRef<Path>) -> Command {
        let mut cmd = ip();
        cmd.args(["netns", "exec", ns]).arg(program.as_ref());
        cmd
    }

    /// Runs `f` on a thread that has entered namespace `ns`: sockets it opens, threads it
    /// starts (a tokio runtime's workers) and processes it spawns all live there.
    pub fn run_in<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file =
                        std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                    enter(&file);
                    f()
                })
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

fn enter(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns failed: {}", std::io::Error::last_os_error());
}

impl Default for NetLab {
    fn default() -> Self {
        NetLab::new()
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its interfaces (and the veth peers with them).
        for ns in self.namespaces.iter().rev() {
            let _ = ip()
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The site's plain DHCP server: dnsmasq with no PXE options at all. Killed on drop.
#[derive(Debug)]
pub struct SiteDhcp {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl SiteDhcp {
    /// Serves `range` (e.g. `10.77.0.100,10.77.0.199`) on `ifname` inside `ns`; with `ra`, also
    /// IPv6 router advertisements (iPXE otherwise waits ~13 s for one).
    pub fn start(lab: &NetLab, ns: &str, ifname: &str, range: &str, ra: bool) -> SiteDhcp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = lab.command(ns, "dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--port=0",
            "--bind-interfaces",
            "--no-ping",
            "--log-dhcp",
            "--log-facility=-",
            "--user=root",
        ])
        .arg(format!("--interface={ifname}"))
        .arg(format!("--dhcp-range={range},255.255.255.0,10m"))
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.path().join("leases").display()
        ))
        .arg(format!("--pid-file={}", dir.path().join("pid").display()));
        if ra {
            cmd.args(["--enable-ra", "--dhcp-range=::,constructor:*,ra-only"]);
        }
        let child = crate::spawn_logged(
            &mut cmd,
            &dir.path().join("dnsmasq.log"),
            "dnsmasq (apt-get install dnsmasq-base)",
        );
        SiteDhcp { child, _dir: dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// Whether `needle` shows in the log within `within`: dnsmasq may write a line after the
    /// client already acted on the packet it describes.
    pub fn wait_for_log(&self, needle: &str, within: std::time::Duration) -> bool {
        crate::wait_until(within, std::time::Duration::from_millis(50), || {
            self.log().contains(needle)
        })
    }
}

impl Drop for SiteDhcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
