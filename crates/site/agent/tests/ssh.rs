//! The distributor's SSH runner and reachability probe against a real OpenSSH server (Debian's
//! openssh-server, run by the testkit on 127.0.0.1 free ports) and, for unreachable addresses,
//! inside network namespaces of our own. Needs root, iproute2, openssh-server and
//! openssh-client (ssh-keygen).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bootfleet_site_agent::reachability::{probe, probe_all};
use bootfleet_site_agent::ssh_exec::{run, ExecError, ExecOutcome, ExecRequest, SecretKey};
use bootfleet_testkit::netlab::{run as must, NetLab};
use bootfleet_testkit::{free_port, sshd::Sshd};

const MIB: usize = 1 << 20;

/// A key pair made by ssh-keygen. Its files are deleted at once: the private key lives in this
/// struct only, as it would in the distributor.
struct Keypair {
    private: String,
    public: String,
}

fn keygen(args: &[&str]) -> Keypair {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key");
    bootfleet_testkit::run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-C", "test-key", "-f"])
            .arg(&path)
            .args(args),
        "ssh-keygen (Debian's openssh-client)",
    );
    let pair = Keypair {
        private: std::fs::read_to_string(&path).expect("private key"),
        public: std::fs::read_to_string(path.with_extension("pub")).expect("public key"),
    };
    drop(dir);
    pair
}

fn ed25519() -> Keypair {
    keygen(&["-t", "ed25519", "-N", ""])
}

/// The base64 lines of a private key that carry its own material (what must never show up
/// anywhere). Lines every key of the same type shares (the format's header) are left out.
fn key_body_lines(private: &str) -> Vec<&str> {
    let common = ed25519();
    private
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .filter(|l| !common.private.contains(l))
        .collect()
}

fn sshd_for(key: &Keypair) -> Sshd {
    Sshd::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
        &key.public,
    )
}

/// A new ed25519 key and an sshd that takes it.
fn ed25519_sshd() -> (Keypair, Sshd) {
    let key = ed25519();
    let sshd = sshd_for(&key);
    (key, sshd)
}

fn request<'a>(sshd: &Sshd, key: &'a Keypair, script: &'a str) -> ExecRequest<'a> {
    ExecRequest {
        addr: sshd.addr(),
        user: "root",
        private_key: &key.private,
        script,
        timeout: Duration::from_secs(20),
        known_host_key: None,
        max_output: MIB,
    }
}

/// Runs `script` on `sshd` as root with `key`, which must reach the script's end.
async fn run_ok(sshd: &Sshd, key: &Keypair, script: &str) -> ExecOutcome {
    run(&request(sshd, key, script)).await.expect("run")
}

#[tokio::test]
async fn runs_a_script_with_separate_streams_and_exit_code() {
    let (key, sshd) = ed25519_sshd();
    let out = run_ok(&sshd, &key, "echo out; echo err >&2; exit 3").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.exit_signal, None);
    assert!(!out.truncated);
    assert_eq!(out.host_key, sshd.host_public_key());
    assert!(
        out.host_key.starts_with("ssh-ed25519 AAAA"),
        "{}",
        out.host_key
    );
}

#[tokio::test]
async fn script_is_interpreted_on_the_node_only() {
    let (key, sshd) = ed25519_sshd();
    // Quotes, command substitution, a here-document and a variable only the remote side has:
    // sshd sets SSH_CONNECTION to "client-ip client-port server-ip server-port".
    let script = r#"a='it'"'"'s "quoted"'
printf '%s\n' "$a"
printf 'sub=%s\n' "$(echo nested $(echo deeper))"
printf '%s\n' "${SSH_CONNECTION##* }"
printf '%s\n' "$HOME"
cat <<'EOF'
literal $HOME `x` $(y)
EOF
test -t 0 || echo stdin-not-a-tty
cat; echo stdin-at-eof"#;
    let out = run_ok(&sshd, &key, script).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "it's \"quoted\"\nsub=nested deeper\n{}\n/root\nliteral $HOME `x` $(y)\nstdin-not-a-tty\nstdin-at-eof\n",
            sshd.addr().port()
        )
    );
    assert_eq!(out.exit_code, Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn every_key_type_authenticates() {
    for (name, args) in [
        ("ed25519", &["-t", "ed25519", "-N", ""][..]),
        ("ecdsa p256", &["-t", "ecdsa", "-b", "256", "-N", ""][..]),
        ("rsa", &["-t", "rsa", "-b", "2048", "-N", ""][..]),
        // Legacy PEM (PKCS#1), as older tooling writes it.
        (
            "rsa pem",
            &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""][..],
        ),
    ] {
        let key = keygen(args);
        if name == "rsa pem" {
            assert!(key.private.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        }
        let sshd = sshd_for(&key);
        let out = run(&request(&sshd, &key, "echo ok"))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.stdout, b"ok\n", "{name}");
        assert_eq!(out.exit_code, Some(0), "{name}");
    }
}

#[tokio::test]
async fn wrong_key_is_auth_failed() {
    let key = ed25519();
    let other = ed25519();
    let sshd = sshd_for(&key);
    let err = run(&request(&sshd, &other, "echo hi"))
        .await
        .expect_err("wrong key");
    assert!(matches!(err, ExecError::AuthFailed(_)), "{err:?}");
    // A user without the key fails the same way.
    let mut req = request(&sshd, &key, "echo hi");
    req.user = "nobody-here";
    let err = run(&req).await.expect_err("unknown user");
    assert!(matches!(err, ExecError::AuthFailed(_)), "{err:?}");
}

#[tokio::test]
async fn unparsable_keys_are_invalid_and_never_quoted() {
    let (key, sshd) = ed25519_sshd();
    let body = key_body_lines(&key.private);
    // A real key with its middle garbled, one cut short, and one without its armour.
    let mut garbled = key.private.clone();
    let mid = garbled.len() / 2;
    garbled.replace_range(mid..mid + 8, "!!!!!!!!");
    let cut: String = key.private.lines().take(3).collect::<Vec<_>>().join("\n");
    let bare = body.join("\n");
    let encrypted = keygen(&["-t", "ed25519", "-N", "a passphrase"]);
    for (name, text) in [
        ("garbled", garbled.as_str()),
        ("cut", cut.as_str()),
        ("bare", bare.as_str()),
        ("encrypted", encrypted.private.as_str()),
    ] {
        let mut req = request(&sshd, &key, "touch /nonexistent-should-not-run");
        req.private_key = text;
        let err = run(&req).await.expect_err(name);
        let ExecError::InvalidKey(msg) = &err else {
            panic!("{name}: {err:?}");
        };
        let shown = format!("{err} {err:?} {msg}");
        for line in body.iter().chain(key_body_lines(&encrypted.private).iter()) {
            assert!(
                !shown.contains(line),
                "{name}: message quotes the key: {shown}"
            );
            assert!(
                !shown.contains(&line[..16]),
                "{name}: message quotes the key: {shown}"
            );
        }
        if name == "encrypted" {
            assert!(msg.contains("passphrase"), "{msg}");
        }
    }
    // Nothing reached the server: no connection was even attempted.
    assert!(!sshd.log().contains("Connection from"), "{}", sshd.log());
}

#[tokio::test]
async fn changed_host_key_is_refused_before_anything_runs() {
    let (key, mut sshd) = ed25519_sshd();
    let marker_dir = tempfile::tempdir().expect("tempdir");
    let marker = marker_dir.path().join("ran");
    let script = format!("touch '{}'", marker.display());

    // First contact records the key; the same key is then accepted (a comment does not matter).
    let first = run(&request(&sshd, &key, "true"))
        .await
        .expect("first contact");
    let recorded = first.host_key.clone();
    let with_comment = format!("{recorded} root@node-7");
    let mut req = request(&sshd, &key, "true");
    req.known_host_key = Some(&with_comment);
    run(&req).await.expect("known key accepted");

    sshd.regenerate_host_key();
    assert_ne!(sshd.host_public_key(), recorded);
    let log_before = sshd.log().len();
    let mut req = request(&sshd, &key, &script);
    req.known_host_key = Some(&recorded);
    let err = run(&req).await.expect_err("changed key");
    match &err {
        ExecError::HostKeyChanged { expected, got } => {
            assert_eq!(expected, &recorded);
            assert_eq!(got, &sshd.host_public_key());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !marker.exists(),
        "the script ran despite the changed host key"
    );
    // We never even tried to authenticate (the key was not offered to the impostor).
    std::thread::sleep(Duration::from_millis(200));
    let log = sshd.log();
    let after = log.get(log_before..).unwrap_or("");
    assert!(!after.contains("publickey"), "{after}");

    // An unparsable recorded key is refused before connecting.
    let mut req = request(&sshd, &key, &script);
    req.known_host_key = Some("ssh-ed25519 not-base64!");
    let err = run(&req).await.expect_err("bad known key");
    assert!(matches!(err, ExecError::Protocol(_)), "{err:?}");
    assert!(!marker.exists());
}

/// True if the process is gone (or a zombie: dead, only not yet reaped).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat.get(i + 1..))
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("pid")
}

#[tokio::test]
async fn timeout_kills_the_command_and_closes_the_session() {
    let (key, sshd) = ed25519_sshd();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    // A background child as well: the kill must reach the whole process group.
    let script = format!(
        "echo $$ > {d}/shell.pid; sleep 30 & echo $! > {d}/sleep.pid; wait; touch {d}/finished"
    );
    let mut req = request(&sshd, &key, &script);
    req.timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = run(&req).await.expect_err("must time out");
    let took = started.elapsed();
    assert!(
        matches!(err, ExecError::Timeout(t) if t == Duration::from_secs(2)),
        "{err:?}"
    );
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_millis(3500), "timeout took {took:?}");

    let shell = read_pid(&dir.path().join("shell.pid"));
    let sleep = read_pid(&dir.path().join("sleep.pid"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sessions = sshd.session_pids();
        if dead(shell) && dead(sleep) && sessions.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: shell {shell} dead={}, sleep {sleep} dead={}, sshd sessions {sessions:?}\n{}",
            dead(shell),
            dead(sleep),
            sshd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!dir.path().join("finished").exists());
    let log = sshd.log();
    assert!(
        log.contains("Received disconnect from 127.0.0.1"),
        "sshd saw no disconnect:\n{log}"
    );
}

#[tokio::test]
async fn processes_detached_by_the_script_survive_a_normal_end() {
    let (key, sshd) = ed25519_sshd();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let script = format!("nohup sleep 20 >/dev/null 2>&1 & echo $! > {d}/bg.pid; echo done");
    let started = Instant::now();
    let out = run_ok(&sshd, &key, &script).await;
    assert_eq!(out.stdout, b"done\n");
    assert_eq!(out.exit_code, Some(0));
    // The session ended with the script, not with its detached child.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let bg = read_pid(&dir.path().join("bg.pid"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alive = !dead(bg);
    // Ours to clean up either way.
    let _ = Command::new("kill").arg(bg.to_string()).status();
    assert!(alive, "a detached process was killed after a normal end");
}

#[tokio::test]
async fn output_is_capped_per_stream() {
    let (key, sshd) = ed25519_sshd();
    let out = run_ok(
        &sshd,
        &key,
        "head -c 3000000 /dev/zero; head -c 10 /dev/zero >&2",
    )
    .await;
    assert!(out.truncated);
    assert_eq!(out.stdout.len(), MIB);
    assert!(out.stdout.iter().all(|&b| b == 0));
    assert_eq!(out.stderr.len(), 10);
    // The command ran to its end even though its output was cut.
    assert_eq!(out.exit_code, Some(0));

    let mut req = request(&sshd, &key, "printf 0123456789 >&2");
    req.max_output = 4;
    let out = run(&req).await.expect("run");
    assert!(out.truncated);
    assert_eq!(out.stderr, b"0123");
}

#[tokio::test]
async fn a_command_killed_by_a_signal_reports_it() {
    let (key, sshd) = ed25519_sshd();
    let out = run_ok(&sshd, &key, "echo before; kill -TERM $$; echo after").await;
    assert_eq!(out.stdout, b"before\n");
    assert_eq!(out.exit_code, None);
    assert_eq!(out.exit_signal.as_deref(), Some("TERM"));
}

#[tokio::test]
async fn closed_port_is_a_connect_error() {
    let key = ed25519();
    let req = ExecRequest {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
        user: "root",
        private_key: &key.private,
        script: "true",
        timeout: Duration::from_secs(5),
        known_host_key: None,
        max_output: MIB,
    };
    let err = run(&req).await.expect_err("nothing listens");
    assert!(matches!(err, ExecError::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn probe_answers_for_listening_and_closed_ports() {
    let (_key, sshd) = ed25519_sshd();
    let t = Duration::from_secs(2);
    assert!(probe(sshd.addr(), t).await, "sshd port");
    // Refused (RST): the host answered, so it counts as reachable.
    let closed = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let (reachable, took) = timed_probe(closed, t).await;
    assert!(reachable, "closed port on a live host");
    assert!(took < Duration::from_secs(1));
}

/// [`probe`]'s answer for `addr` and how long it took.
async fn timed_probe(addr: SocketAddr, timeout: Duration) -> (bool, Duration) {
    let started = Instant::now();
    let reachable = probe(addr, timeout).await;
    (reachable, started.elapsed())
}

/// A namespace with only `lo` up, plus a veth pair holding 192.0.2.1/24 (TEST-NET-1) on one end
/// and no address on the other: ARP for any other 192.0.2.x goes unanswered, so a connect there
/// hears nothing (the silent case). Nothing leaves the namespace.
fn probe_lab() -> (NetLab, String) {
    let mut lab = NetLab::new();
    let ns = lab.namespace("probe");
    must(Command::new("ip").args([
        "-n", &ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
    ]));
    must(Command::new("ip").args(["-n", &ns, "addr", "add", "192.0.2.1/24", "dev", "v0"]));
    must(Command::new("ip").args(["-n", &ns, "link", "set", "v0", "up"]));
    must(Command::new("ip").args(["-n", &ns, "link", "set", "v1", "up"]));
    (lab, ns)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn probe_is_false_for_unroutable_and_silent_addresses() {
    let (lab, ns) = probe_lab();
    lab.run_in(&ns, || {
        runtime().block_on(async {
            // No route at all: "network unreachable" at once.
            let unroutable = "198.51.100.1:22".parse().expect("addr");
            let (reachable, took) = timed_probe(unroutable, Duration::from_secs(5)).await;
            assert!(!reachable);
            assert!(took < Duration::from_millis(500), "{took:?}");
            // A route into a black hole: no answer, so false at the timeout.
            let silent = "192.0.2.2:22".parse().expect("addr");
            let (reachable, took) = timed_probe(silent, Duration::from_millis(500)).await;
            assert!(!reachable);
            assert!(
                took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
                "{took:?}"
            );
        })
    });
}

#[test]
fn probe_all_keeps_order_and_bounds_concurrency() {
    let (lab, ns) = probe_lab();
    lab.run_in(&ns, || {
        runtime().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let open = listener.local_addr().expect("addr");
            let closed: SocketAddr = "127.0.0.1:1".parse().expect("addr");
            let mut addrs = vec![open, closed];
            let silent: Vec<SocketAddr> = (2..102u8)
                .map(|i| SocketAddr::from((Ipv4Addr::new(192, 0, 2, i), 22)))
                .collect();
            addrs.extend(&silent);
            addrs.push("198.51.100.1:22".parse().expect("addr"));
            let t = Duration::from_millis(300);
            let started = Instant::now();
            let results = probe_all(&addrs, t).await;
            let took = started.elapsed();
            let got: Vec<SocketAddr> = results.iter().map(|(a, _)| *a).collect();
            assert_eq!(got, addrs, "input order");
            assert!(results[0].1 && results[1].1);
            assert!(results[2..].iter().all(|(_, up)| !up));
            // 100 silent addresses at 64 at a time: two rounds of the timeout, not 100.
            assert!(took >= 2 * t - Duration::from_millis(50), "{took:?}");
            assert!(took < Duration::from_secs(2), "{took:?}");
        })
    });
}

#[test]
fn runs_on_port_22_inside_a_namespace() {
    let key = ed25519();
    let mut lab = NetLab::new();
    let ns = lab.namespace("node");
    let addr: SocketAddr = "127.0.0.1:22".parse().expect("addr");
    let sshd = Sshd::start_in(&lab, &ns, addr, &key.public);
    let host_key = sshd.host_public_key();
    lab.run_in(&ns, || {
        runtime().block_on(async {
            assert!(probe(addr, Duration::from_secs(2)).await);
            let req = ExecRequest {
                addr,
                user: "root",
                private_key: &key.private,
                script: "echo in-ns",
                timeout: Duration::from_secs(20),
                known_host_key: Some(&host_key),
                max_output: MIB,
            };
            let out = run(&req).await.expect("run");
            assert_eq!(out.stdout, b"in-ns\n");
            assert_eq!(out.host_key, host_key);
        })
    });
}

/// A tracing writer into memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Files under `root` (not following links) modified since `since`, at most `limit`.
fn recent_files(root: &Path, since: SystemTime, limit: usize) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() && depth < 6 {
                stack.push((entry.path(), depth + 1));
            } else if meta.is_file()
                && meta.len() < 16 * MIB as u64
                && meta.modified().is_ok_and(|m| m >= since)
                && found.len() < limit
            {
                found.push(entry.path());
            }
        }
    }
    found
}

#[tokio::test]
async fn private_key_is_never_logged_or_written() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let since = SystemTime::now() - Duration::from_secs(1);

    let key = ed25519();
    let other = ed25519();
    let mut sshd = sshd_for(&key);
    // Other tests hit the same callsites on other threads while the subscriber above was being
    // registered, and a callsite first seen in that window caches "no interest"; recompute now
    // that the subscriber is in place. And while it is the only registered dispatcher,
    // tracing-core asks only the reaching thread's dispatcher for a callsite seen later, so
    // another test's thread (no subscriber) could still make one "never": a second registered
    // dispatcher, never used, makes it ask all of them.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    tracing::callsite::rebuild_interest_cache();
    // Every path: success, wrong key, garbled key, timeout, changed host key.
    let ok = run_ok(&sshd, &key, "echo hi").await;
    let _ = run(&request(&sshd, &other, "echo hi")).await;
    let garbled = key.private.replace('A', "*");
    let mut req = request(&sshd, &key, "echo hi");
    req.private_key = &garbled;
    let _ = run(&req).await;
    let mut req = request(&sshd, &key, "sleep 5");
    req.timeout = Duration::from_millis(700);
    let _ = run(&req).await;
    sshd.regenerate_host_key();
    let mut req = request(&sshd, &key, "echo hi");
    req.known_host_key = Some(&ok.host_key);
    let changed = run(&req).await.expect_err("changed");

    // The Debug forms of what a caller might log.
    let shown = format!(
        "{:?} {:?} {changed:?} {changed}",
        request(&sshd, &key, "echo hi"),
        SecretKey::parse(&key.private).expect("parse"),
    );
    let logs = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    assert!(
        logs.contains("ssh: running script"),
        "capture works: {logs}"
    );
    assert!(logs.contains("ssh: timed out"), "{logs}");
    assert!(logs.contains("host key changed"), "{logs}");

    let mut files = recent_files(Path::new("/tmp"), since, 20_000);
    files.extend(recent_files(sshd.dir(), since, 1000));
    assert!(files.iter().any(|f| f.ends_with("sshd.log")));
    let body = key_body_lines(&key.private);
    assert!(body.len() >= 4);
    for line in &body {
        assert!(!logs.contains(line), "a log line carries the key");
        assert!(
            !shown.contains(line),
            "a Debug/Display form carries the key"
        );
        assert!(!shown.contains("BEGIN OPENSSH"), "{shown}");
        for f in &files {
            if let Ok(bytes) = std::fs::read(f) {
                let text = String::from_utf8_lossy(&bytes);
                assert!(!text.contains(line), "{} carries the key", f.display());
            }
        }
    }
}
