//! Real dependencies for tests: a `nats-server` with JetStream on a free loopback port, and a
//! PostgreSQL cluster started from Debian's `postgresql` binaries. Nothing is mocked; if a binary
//! is missing the test fails and says which package to install (`./scripts/setup` installs them).

// Stopping the shared PostgreSQL at process exit needs `atexit`, which is `unsafe` to register.
#![allow(unsafe_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod bmc;
pub mod disk_image;
pub mod http_recorder;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod nats_cluster;
pub mod netlab;
pub mod node_image;
pub mod qemu;
pub mod sse;
pub mod sshd;
pub mod test_pki;

pub use nats_cluster::NatsCluster;

/// A free TCP port on 127.0.0.1 (the kernel picks it; the listener is closed again).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Runs `cmd` to its end with no input and returns its output; a command that cannot start or
/// fails panics with `what` (naming the program, and where to get it) and its output.
pub fn run_ok(cmd: &mut Command, what: &str) -> std::process::Output {
    try_run(cmd, what).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_ok`] for a caller that handles the failure: its error names `what` and holds the
/// command's output.
pub fn try_run(cmd: &mut Command, what: &str) -> Result<std::process::Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// Starts `cmd` in the background with no input, its stderr in `log` (created anew); a command
/// that cannot start panics with `what` (naming the program, and where to get it).
pub fn spawn_logged(cmd: &mut Command, log: &Path, what: &str) -> Child {
    let log = std::fs::File::create(log).expect("log");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}

/// Polls `ready` every `every` until it holds, at most `within`; whether it held.
pub fn wait_until(within: Duration, every: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// [`wait_until`] for async tests: awaits `ready` every `every` until it holds, at most
/// `within`; whether it held.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    within: Duration,
    every: Duration,
    mut ready: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if ready().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `ready` every `every` until it has a value, at most `within`.
pub fn wait_for<T>(
    within: Duration,
    every: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> Option<T> {
    let mut value = None;
    wait_until(within, every, || {
        value = ready();
        value.is_some()
    });
    value
}

/// Waits until `ready` has a value for the server `child` just started. Its exit first, or
/// `within` passing (it is then killed), is the error.
fn wait_for_child<T>(
    child: &mut Child,
    within: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = ready() {
            return Ok(value);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // A configuration it refuses, or a port in use: its log says which.
            return Err(format!("it exited ({status})"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("it was not ready within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `nats-server` binary (`NATS_SERVER_BIN`, else the PATH) and a new temporary directory
/// for its store and logs, named with `prefix`.
pub(crate) fn nats_server_bin_and_dir(prefix: &str) -> (PathBuf, tempfile::TempDir) {
    let bin = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .or_else(|| find_in_path("nats-server"))
        .expect("nats-server not found: install Debian's nats-server (./scripts/setup)");
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temporary directory");
    (bin, dir)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The client port in a nats-server ports file: `{"nats":["nats://127.0.0.1:4222"]}`
/// (`tls://` when the server has a `tls` block).
fn client_port(ports_file: &str) -> Option<u16> {
    ports_file
        .split('"')
        .find(|s| s.starts_with("nats://") || s.starts_with("tls://"))
        .and_then(|url| url.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
}

/// Whether a `postmaster.pid` says that server `pid` accepts connections on `port`: its lines
/// are pid, data directory, start time, port, socket directory, listen address, shared memory
/// key, status.
fn postmaster_ready(pid_file: &str, pid: u32, port: u16) -> bool {
    let lines: Vec<&str> = pid_file.lines().map(str::trim).collect();
    lines.first() == Some(&pid.to_string().as_str())
        && lines.get(3) == Some(&port.to_string().as_str())
        && lines.get(7) == Some(&"ready")
}

/// A `nats-server` child with JetStream, listening on 127.0.0.1 only. Killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// A configuration file (`-c`), for servers started with [`NatsServer::start_with_config`].
    config: Option<PathBuf>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_inner(None)
    }

    /// Like [`NatsServer::start`], with `config` (nats-server configuration syntax, e.g. an
    /// `authorization` block) as its configuration file. Address, port, JetStream and its store
    /// still come from the command line, which overrides the file. The server's log goes to a
    /// file; [`NatsServer::log`] reads it.
    pub fn start_with_config(config: &str) -> NatsServer {
        NatsServer::start_inner(Some(config))
    }

    fn start_inner(config: Option<&str>) -> NatsServer {
        let (bin, dir) = nats_server_bin_and_dir("bootfleet-nats-");
        let config = config.map(|text| {
            let path = dir.path().join("nats-server.conf");
            std::fs::write(&path, text).expect("write the nats-server configuration");
            path
        });
        let mut server = NatsServer {
            child: None,
            port: 0,
            dir,
            bin,
            config,
        };
        server.spawn();
        server
    }

    /// Starts the server and waits until it listens. The port is the server's own choice at
    /// first (`-p -1`), then kept for restarts. Readiness is the ports file nats-server writes
    /// once its listener is up, named after its pid: a port that merely answers might be
    /// another test's server, if a port picked here were taken meanwhile.
    fn spawn(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.try_spawn(deadline) {
                Ok(()) => return,
                // A restart's port may briefly be another connection's ephemeral port.
                Err(_) if self.port != 0 && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(why) => panic!("nats-server did not start: {why}\n{}", self.log()),
            }
        }
    }

    fn try_spawn(&mut self, deadline: Instant) -> Result<(), String> {
        let ports_dir = self.dir.path().join("ports");
        // A killed server leaves its ports file behind.
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("create the ports file directory");
        let mut cmd = Command::new(&self.bin);
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("create the nats-server log");
        let port = match self.port {
            0 => "-1".to_owned(),
            port => port.to_string(),
        };
        let mut child = cmd
            .args(["-a", "127.0.0.1", "-p", &port, "--ports_file_dir"])
            .arg(&ports_dir)
            .args(["-js", "-sd"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start nats-server");
        let suffix = format!("_{}.ports", child.id());
        let within = deadline.saturating_duration_since(Instant::now());
        self.port = wait_for_child(&mut child, within, || {
            std::fs::read_dir(&ports_dir)
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))
                .and_then(|e| std::fs::read_to_string(e.path()).ok())
                .and_then(|text| client_port(&text))
        })?;
        self.child = Some(child);
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data directory, as after a crash.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL cluster shared by all tests of one test binary; each test takes its own
/// database from it. Stopped when the test process exits.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    bin_dir: PathBuf,
    socket_dir: PathBuf,
    uid: Option<(u32, u32)>,
    dir: PathBuf,
}

static POSTGRES: OnceLock<Postgres> = OnceLock::new();
static POSTGRES_CHILD: Mutex<Option<Child>> = Mutex::new(None);
static DB_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn stop_postgres_at_exit() {
    if let Ok(mut guard) = POSTGRES_CHILD.lock() {
        if let Some(mut child) = guard.take() {
            // SIGQUIT: immediate shutdown; the data is thrown away anyway.
            signal_and_wait(&mut child, "-QUIT", Duration::from_secs(5));
        }
    }
    if let Some(pg) = POSTGRES.get() {
        let _ = std::fs::remove_dir_all(&pg.dir);
    }
}

fn postgres_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("POSTGRES_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .expect("PostgreSQL server binaries not found under /usr/lib/postgresql: install Debian's postgresql (./scripts/setup)")
}

/// PostgreSQL refuses to run as root; then it runs as the `postgres` user the package created.
fn unprivileged_ids() -> Option<(u32, u32)> {
    let meta = std::fs::metadata("/proc/self").ok()?;
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&"postgres"))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

impl Postgres {
    /// The binary's shared cluster, started on first use.
    pub fn shared() -> &'static Postgres {
        POSTGRES.get_or_init(Postgres::start)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn start() -> Postgres {
        let (pg, child) = Postgres::init_and_start();
        *POSTGRES_CHILD.lock().expect("postgres child lock") = Some(child);
        // SAFETY: registering a plain `extern "C" fn` with no arguments is what atexit expects.
        unsafe {
            libc::atexit(stop_postgres_at_exit);
        }
        pg
    }

    /// A new cluster in a new temporary directory, started.
    fn init_and_start() -> (Postgres, Child) {
        let bin_dir = postgres_bin_dir();
        let uid = unprivileged_ids();
        if std::fs::metadata("/proc/self").is_ok() && uid.is_none() && is_root() {
            panic!("running as root and no `postgres` user exists to run PostgreSQL as");
        }
        let dir = tempfile::Builder::new()
            .prefix("bootfleet-pg-")
            .tempdir()
            .expect("create a temporary directory")
            .keep();
        let socket_dir = dir.join("socket");
        std::fs::create_dir_all(&socket_dir).expect("create socket dir");
        if let Some((u, g)) = uid {
            for p in [dir.as_path(), socket_dir.as_path()] {
                std::os::unix::fs::chown(p, Some(u), Some(g)).expect("chown postgres dirs");
            }
        }
        let pg = Postgres {
            port: free_port(),
            bin_dir,
            socket_dir,
            uid,
            dir,
        };
        run_ok(
            pg.command("initdb")
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(pg.data()),
            "initdb",
        );
        let mut pg = pg;
        let mut attempts = 0;
        let child = loop {
            attempts += 1;
            match pg.start_server() {
                Ok(child) => break child,
                // The port picked was taken before postgres bound it: pick another.
                Err(why) if attempts < 3 => {
                    eprintln!("postgres did not start ({why}); trying another port");
                    pg.port = free_port();
                }
                Err(why) => panic!(
                    "postgres did not start: {why}; see {}",
                    pg.dir.join("postgres.log").display()
                ),
            }
        };
        (pg, child)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log, appended to by every start.
    fn log(&self) -> std::fs::File {
        let path = self.dir.join("postgres.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open the postgres log");
        if let Some((u, g)) = self.uid {
            let _ = std::os::unix::fs::chown(&path, Some(u), Some(g));
        }
        log
    }

    /// Starts the server on `self.port` and waits until it is ready. Readiness is the status
    /// line of `postmaster.pid` in its own data directory: a port that merely answers might
    /// belong to someone else.
    fn start_server(&self) -> Result<Child, String> {
        let data = self.data();
        let log = self.log();
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.socket_dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let pid = child.id();
        wait_for_child(&mut child, Duration::from_secs(30), || {
            std::fs::read_to_string(data.join("postmaster.pid"))
                .is_ok_and(|pid_file| postmaster_ready(&pid_file, pid, self.port))
                .then_some(())
        })?;
        Ok(child)
    }

    /// Creates a new, empty database and returns its `postgres://` URL.
    pub fn create_database(&self) -> String {
        let n = DB_COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("test_{}_{n}", std::process::id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self
                .command("createdb")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    &name,
                ])
                .output()
                .expect("run createdb");
            if out.status.success() {
                break;
            }
            // The server may still be starting ("the database system is starting up").
            assert!(
                Instant::now() < deadline,
                "createdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// [`Postgres::create_database`], but its URL reaches the server through its Unix socket:
    /// the one form that works from inside a lab's network namespace (whose 127.0.0.1 is its own).
    pub fn create_database_over_socket(&self) -> String {
        let tcp = self.create_database();
        let name = tcp.rsplit('/').next().expect("a database name");
        format!(
            "postgres://postgres@localhost:{}/{name}?host={}",
            self.port,
            self.socket_dir.display()
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

/// A PostgreSQL cluster of one test's own, which the test may stop and start again (the
/// database-restart tests): the shared cluster must stay up for the binary's other tests.
/// Stopped and removed on drop.
#[derive(Debug)]
pub struct OwnedPostgres {
    pg: Postgres,
    child: Option<Child>,
}

impl OwnedPostgres {
    pub fn start() -> OwnedPostgres {
        let (pg, child) = Postgres::init_and_start();
        OwnedPostgres {
            pg,
            child: Some(child),
        }
    }

    /// A new database in this cluster (see [`Postgres::create_database`]).
    pub fn create_database(&self) -> String {
        self.pg.create_database()
    }

    /// Stops the server as an operator's `pg_ctl stop -m fast` does (SIGINT): open connections
    /// are cut, and nothing is accepted until [`OwnedPostgres::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, "-INT", Duration::from_secs(30));
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let child = self
            .pg
            .start_server()
            .unwrap_or_else(|why| panic!("postgres did not start again: {why}"));
        self.child = Some(child);
    }
}

impl Drop for OwnedPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_and_wait(&mut child, "-QUIT", Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.pg.dir);
    }
}

/// Sends `signal` to the server and reaps it within `within`; kills it after that.
fn signal_and_wait(child: &mut Child, signal: &str, within: Duration) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `on_both_backends!(a, b)`: for each `async fn a(backend: Backend)` of the test binary, the
/// tests `sqlite::a` and `postgres::a` (once per module: it makes the two modules).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Which database a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database of the given kind. SQLite files live in `dir`.
pub fn database_url(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("bootfleet.db").display()),
        Backend::Postgres => Postgres::shared().create_database(),
    }
}

/// [`database_url`] for a system that runs inside a lab's network namespace (PostgreSQL by its
/// Unix socket). Call it outside the namespace: the shared server must not start in one.
pub fn database_url_for_lab(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => database_url(backend, dir),
        Backend::Postgres => Postgres::shared().create_database_over_socket(),
    }
}

/// Kills a child process when dropped (for service processes a test spawns).
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn eventually_polls_until_ready_or_the_time_is_up() {
        let polls = std::cell::Cell::new(0);
        let every = Duration::from_millis(1);
        let ready = super::eventually(Duration::from_secs(5), every, || {
            polls.set(polls.get() + 1);
            let n = polls.get();
            async move { n == 3 }
        })
        .await;
        assert!(ready);
        assert_eq!(polls.get(), 3, "stops polling once ready");
        let never = super::eventually(Duration::from_millis(20), every, || async { false }).await;
        assert!(!never);
    }

    #[test]
    fn reads_the_client_port_of_plain_and_tls_servers() {
        assert_eq!(
            super::client_port(r#"{"nats":["nats://127.0.0.1:34657"]}"#),
            Some(34657)
        );
        assert_eq!(
            super::client_port(r#"{"nats":["tls://127.0.0.1:32941"]}"#),
            Some(32941)
        );
        // Read while nats-server is still writing it.
        assert_eq!(super::client_port(""), None);
        assert_eq!(super::client_port(r#"{"nats":["nats://127.0.0.1:"#), None);
    }

    #[test]
    fn a_postmaster_is_ready_only_with_its_pid_its_port_and_the_ready_status() {
        let file = |status: &str| {
            format!("4242\n/tmp/pg/data\n1796227649\n5433\n/tmp/pg/socket\n127.0.0.1\n  1234 5678\n{status}\n")
        };
        assert!(super::postmaster_ready(&file("ready   "), 4242, 5433));
        assert!(!super::postmaster_ready(&file("starting"), 4242, 5433));
        assert!(
            !super::postmaster_ready(&file("ready"), 4243, 5433),
            "another server"
        );
        assert!(
            !super::postmaster_ready(&file("ready"), 4242, 5434),
            "another port"
        );
        assert!(!super::postmaster_ready("4242\n", 4242, 5433));
    }
}
