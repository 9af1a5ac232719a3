//! Real BMCs for power tests (see docs/lab.md):
//!
//! - [`IpmiSim`]: Debian's `openipmi` `ipmi_sim` as an IPMI 2.0 LAN BMC, its configuration
//!   (`lan.conf`, `sim.emu`) written here, its state in a temporary directory, whose `startcmd`
//!   starts a QEMU guest ([`bmc_guest_command`]) wired to it through `ipmi-bmc-extern` +
//!   `isa-ipmi-kcs`. Dropping it kills QEMU (by its `-pidfile` PID) first, then ipmi_sim: a
//!   killed ipmi_sim would leave its QEMU running.
//! - [`Sushy`]: `sushy-emulator` (PyPI `sushy-tools`, in the venv `scripts/setup` makes) as a
//!   Redfish BMC over HTTPS, on libvirt's `test:///default` driver (no hypervisor).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::ChildGuard;

/// One `ipmi_sim` and the QEMU guest its `startcmd` starts.
#[derive(Debug)]
pub struct IpmiSim {
    /// Killed after the guest ([`Drop`] runs before the fields are dropped).
    _child: ChildGuard,
    dir: tempfile::TempDir,
}

/// What an [`IpmiSim`] listens on and who may log in.
#[derive(Clone, Debug)]
pub struct IpmiSimConfig {
    /// The IPMI LAN address (UDP).
    pub lan: SocketAddr,
    /// The TCP port on 127.0.0.1 where QEMU's `ipmi-bmc-extern` connects.
    pub serial_port: u16,
    pub user: String,
    pub password: String,
    /// The guest powering on starts: a BIOS QEMU that PXE-boots through this tap with this
    /// MAC ([`bmc_guest_command`]); `None`: a BMC of nothing (power status only).
    pub guest: Option<(String, String)>,
}

impl IpmiSim {
    /// Starts `ipmi_sim` through `command` (a `Command` for the program `ipmi_sim`, e.g.
    /// `NetLab::command(ns, "ipmi_sim")` to run it inside a namespace; QEMU then runs there too).
    /// It listens within a moment; the first client's retries cover that.
    pub fn start(mut command: Command, config: &IpmiSimConfig) -> IpmiSim {
        let dir = tempfile::Builder::new()
            .prefix("bootfleet-ipmisim-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("state")).expect("state dir");
        let lan_conf = format!(
            r#"name "bfbmc"
set_working_mc 0x20
  startlan 1
    addr {ip} {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 {serial} codec VM
{startcmd}  startnow false
  poweroff_wait 5
  kill_wait 5
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"#,
            ip = config.lan.ip(),
            port = config.lan.port(),
            serial = config.serial_port,
            startcmd = match &config.guest {
                Some((tap, mac)) => format!(
                    "  startcmd \"{}\"\n",
                    bmc_guest_command(
                        tap,
                        mac,
                        config.serial_port,
                        &d.join("qemu.pid"),
                        &d.join("serial.log")
                    )
                ),
                None => String::new(),
            },
            user = config.user,
            password = config.password,
        );
        std::fs::write(d.join("lan.conf"), lan_conf).expect("lan.conf");
        // Upstream's ipmisim1.emu, reduced to the BMC and its SEL (no sensors: power needs none).
        std::fs::write(
            d.join("sim.emu"),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             sel_enable 0x20 1000 0x0a\n\
             mc_enable 0x20\n",
        )
        .expect("sim.emu");
        let log = std::fs::File::create(d.join("ipmi_sim.log")).expect("log");
        let child = command
            .arg("-c")
            .arg(d.join("lan.conf"))
            .arg("-f")
            .arg(d.join("sim.emu"))
            .arg("-s")
            .arg(d.join("state"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start ipmi_sim (apt-get install openipmi; ./scripts/setup installs it)");
        IpmiSim {
            _child: ChildGuard(child),
            dir,
        }
    }

    /// Where the guest's QEMU writes its PID (`-pidfile`).
    pub fn pidfile(&self) -> PathBuf {
        self.dir.path().join("qemu.pid")
    }

    /// The guest's serial console.
    pub fn serial(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serial.log")).unwrap_or_default()
    }

    /// The PID of a running guest QEMU (from its pidfile), if any.
    pub fn guest_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// What ipmi_sim printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ipmi_sim.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        // QEMU first, by its pidfile: ipmi_sim killed first would leave it running.
        if let Some(pid) = self.guest_pid() {
            // SAFETY: kill(2) on a PID this test's ipmi_sim started.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            crate::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
                !alive(pid)
            });
        }
    }
}

/// The BIOS guest of an [`IpmiSim`]'s `startcmd`: PXE-boots through tap `tap` with `mac`
/// (SeaBIOS and QEMU's iPXE ROM), its BMC link on 127.0.0.1:`serial_port`, its PID in
/// `pidfile` and its console in `serial_log`. One line, quoted nowhere: the paths are the
/// test's temporary ones (no spaces).
fn bmc_guest_command(
    tap: &str,
    mac: &str,
    serial_port: u16,
    pidfile: &Path,
    serial_log: &Path,
) -> String {
    format!(
        "qemu-system-x86_64 -machine pc,accel=tcg -m 128 -nodefaults -display none \
         -pidfile {pid} -serial file:{serial} \
         -netdev tap,id=n0,ifname={tap},script=no,downscript=no \
         -device e1000,netdev=n0,mac={mac} -boot n \
         -chardev socket,id=ipmi0,host=127.0.0.1,port={serial_port},reconnect=10 \
         -device ipmi-bmc-extern,chardev=ipmi0,id=bmc0 -device isa-ipmi-kcs,bmc=bmc0",
        pid = pidfile.display(),
        serial = serial_log.display(),
    )
}

/// `sushy-emulator` on 127.0.0.1 with TLS, on libvirt's `test:///default` (one system, named
/// `test`, initially on; its state lives in the process).
#[derive(Debug)]
pub struct Sushy {
    child: ChildGuard,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The venv `scripts/setup` installs sushy-tools into (`BOOTFLEET_SUSHY_VENV` overrides).
pub fn sushy_venv() -> PathBuf {
    std::env::var_os("BOOTFLEET_SUSHY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/bootfleet/sushy"))
}

/// The `sushy-emulator` program, when it is installed and its Python sees libvirt.
pub fn sushy_emulator() -> Result<PathBuf, String> {
    let venv = sushy_venv();
    let program = venv.join("bin/sushy-emulator");
    if !program.exists() {
        return Err(format!(
            "{} is missing (./scripts/setup installs sushy-tools there)",
            program.display()
        ));
    }
    crate::try_run(
        Command::new(venv.join("bin/python")).args(["-c", "import libvirt, sushy_tools"]),
        "the venv's python importing libvirt and sushy_tools",
    )?;
    Ok(program)
}

impl Sushy {
    /// Starts it on 127.0.0.1:`port` (of the calling thread's network namespace) with the
    /// server certificate and key, requiring HTTP basic authentication as `user`/`password`
    /// (an htpasswd file of bcrypt hashes, made with the venv's `bcrypt`), and waits until it
    /// accepts connections.
    pub fn start(
        program: &Path,
        port: u16,
        cert: &Path,
        key: &Path,
        (user, password): (&str, &str),
    ) -> Sushy {
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        let python = program.with_file_name("python");
        let hash = crate::run_ok(
            Command::new(&python)
                .args([
                    "-c",
                    "import bcrypt, os; print(bcrypt.hashpw(os.environ['PW'].encode(), bcrypt.gensalt(rounds=4)).decode())",
                ])
                .env("PW", password),
            "bcrypt in the sushy venv",
        );
        let hash = String::from_utf8_lossy(&hash.stdout).trim().to_owned();
        std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
        let config = dir.path().join("sushy.conf");
        std::fs::write(
            &config,
            format!(
                "SUSHY_EMULATOR_AUTH_FILE = {:?}\n",
                htpasswd.display().to_string()
            ),
        )
        .expect("config");
        let log = dir.path().join("sushy.log");
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(program)
            .arg("--config")
            .arg(&config)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["--libvirt-uri", "test:///default"])
            .arg("--ssl-certificate")
            .arg(cert)
            .arg("--ssl-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start sushy-emulator");
        let mut sushy = Sushy {
            child: ChildGuard(child),
            port,
            log,
            _dir: dir,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let up = crate::wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if !up {
            let exited = sushy.child.0.try_wait().ok().flatten();
            panic!(
                "sushy-emulator did not listen on {addr} within 60 s (exited: {exited:?}):\n{}",
                sushy.log()
            );
        }
        sushy
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
