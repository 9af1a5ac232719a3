//! A real OpenSSH server for tests: Debian's `openssh-server` (`/usr/sbin/sshd`), run in the
//! foreground with its own configuration, host key and authorized key in a temporary directory.
//! Public-key authentication only. Killed on drop, together with its per-connection processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netlab::NetLab;

const SSHD: &str = "/usr/sbin/sshd";
const HOST_KEY: &str = "ssh_host_ed25519_key";

/// An `sshd -D -e` child. Killed on drop.
#[derive(Debug)]
pub struct Sshd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    listen: SocketAddr,
    /// The network namespace it runs in, if not the test's own.
    netns: Option<String>,
}

impl Sshd {
    /// Starts sshd on `listen`, accepting `authorized_public_key` (an OpenSSH public key line)
    /// for any user, root included.
    pub fn start(listen: SocketAddr, authorized_public_key: &str) -> Sshd {
        Sshd::launch(listen, authorized_public_key, None)
    }

    /// The same, inside network namespace `ns` of `lab`.
    pub fn start_in(
        lab: &NetLab,
        ns: &str,
        listen: SocketAddr,
        authorized_public_key: &str,
    ) -> Sshd {
        // The command is built again on restart, where the lab is not at hand; this checks that
        // the namespace exists now, the way the lab runs programs in it.
        let probe = lab
            .command(ns, "true")
            .stdin(Stdio::null())
            .status()
            .expect("run `ip netns exec`");
        assert!(probe.success(), "cannot run a program in namespace {ns}");
        Sshd::launch(listen, authorized_public_key, Some(ns.to_owned()))
    }

    fn launch(listen: SocketAddr, authorized_public_key: &str, netns: Option<String>) -> Sshd {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} not found: install Debian's openssh-server (./scripts/setup)"
        );
        // The privilege-separation directory sshd insists on.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("bootfleet-sshd-")
            .tempdir()
            .expect("create a temporary directory");
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{}\n", authorized_public_key.trim()),
        )
        .expect("write authorized_keys");
        let config = format!(
            "ListenAddress {listen}\n\
             HostKey {key}\n\
             PidFile none\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             # The files live under /tmp (world-writable), which StrictModes rejects.\n\
             StrictModes no\n\
             PermitUserEnvironment no\n\
             AllowTcpForwarding no\n\
             AllowAgentForwarding no\n\
             X11Forwarding no\n\
             PrintMotd no\n\
             # Tests open many connections at once.\n\
             MaxStartups 100:30:200\n\
             LogLevel VERBOSE\n",
            key = dir.path().join(HOST_KEY).display(),
            dir = dir.path().display(),
        );
        std::fs::write(dir.path().join("sshd_config"), config).expect("write sshd_config");
        let mut sshd = Sshd {
            child: None,
            dir,
            listen,
            netns,
        };
        sshd.generate_host_key();
        sshd.spawn();
        sshd
    }

    fn generate_host_key(&self) {
        let key = self.dir.path().join(HOST_KEY);
        for path in [key.clone(), key.with_extension("pub")] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("remove {}: {e}", path.display()),
            }
        }
        crate::run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
                .arg(&key),
            "ssh-keygen (Debian's openssh-client)",
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    fn spawn(&mut self) {
        let mut cmd = match &self.netns {
            // What `NetLab::command` builds; `ip netns exec` execs sshd, so the pid is sshd's.
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, SSHD]);
                cmd
            }
            None => Command::new(SSHD),
        };
        // Appended: a restart keeps the earlier log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the sshd log");
        let start_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        // sshd must be started by absolute path (it re-executes itself per connection).
        cmd.args(["-D", "-e", "-f"])
            .arg(self.dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("start sshd");
        self.child = Some(child);
        // Ready when it says it listens: that also works inside a namespace, where the test
        // cannot connect to check.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            let fresh = log
                .get(usize::try_from(start_offset).unwrap_or(0)..)
                .unwrap_or("");
            if fresh.contains("Server listening on") {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("sshd exited ({status}) before listening:\n{log}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {} within 10 s:\n{log}",
                self.listen
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// The master sshd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's host public key as an OpenSSH line, `ssh-ed25519 AAAA...` (no comment).
    pub fn host_public_key(&self) -> String {
        let path = self.dir.path().join(HOST_KEY).with_extension("pub");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Restarts it with a new host key on the same address (for "host key changed" tests).
    /// Open sessions are ended.
    pub fn regenerate_host_key(&mut self) {
        self.stop();
        self.generate_host_key();
        self.spawn();
    }

    /// sshd's log so far (it logs to stderr with `-e`; VERBOSE level).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The temporary directory holding its configuration, keys and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pids of the processes below the master sshd: per-connection sshd processes and the
    /// commands they run (those still attached to them).
    pub fn session_pids(&self) -> Vec<u32> {
        self.pid().map(descendants).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Collected first: once the master is gone its children are re-parented and no
            // longer found by walking from it.
            let below = descendants(child.id());
            let _ = child.kill();
            let _ = child.wait();
            // Per-connection processes outlive a killed master; end them too.
            if !below.is_empty() {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .args(below.iter().map(u32::to_string))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// All live descendants of `pid`, from /proc (ppid links).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may contain spaces and parentheses, so split after
        // the last ')'.
        let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let Some(ppid) = fields.next().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // Zombies are dead already; nothing to kill.
        if state != "Z" {
            parents.push((p, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parents {
            if pp == parent && !found.contains(&p) {
                found.push(p);
                frontier.push(p);
            }
        }
    }
    found
}
