//! Site nodes for tests that run commands: sshd nodes on addresses of their own in 127.0.0.0/8
//! and the real distributor agent (its NATS side) of their site. Shared by the `system` test's
//! actions module and the gRPC test.
//!
//! Nodes: each sshd listens on port 22 of an address of its own in 127.0.0.0/8 (the whole block
//! is the loopback interface's on Linux), so the machines' `ip` is what the distributor dials,
//! on port 22 as on a real site, with no port setting of ours. The addresses are per process
//! and per test, so tests running side by side do not meet.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bootfleet_api::{proto, subjects};
use bootfleet_bus::{Bus, BusConfig, TraceParent};

/// Only there so a broken system fails the test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(20);

/// A fresh `127.<pid>.<test>.0/24` for one test's nodes.
pub fn node_net() -> [u8; 3] {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let test = NEXT.fetch_add(1, Ordering::SeqCst);
    [127, (std::process::id() % 200 + 20) as u8, test]
}

pub fn node_ip(net: [u8; 3], host: u8) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], host)
}

/// An ed25519 key pair from ssh-keygen; the files are deleted at once.
pub fn keypair() -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key");
    bootfleet_testkit::run_ok(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "actions-test", "-f"])
            .arg(&path),
        "ssh-keygen (Debian's openssh-client)",
    );
    (
        std::fs::read_to_string(&path).expect("private key"),
        std::fs::read_to_string(path.with_extension("pub")).expect("public key"),
    )
}

/// The real distributor agent of `site` (its NATS side only: no DHCP, TFTP or HTTP listener),
/// answering runs once this returns.
pub struct Distributor {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Distributor {
    pub async fn start(nats_url: &str, site: &str, bus: &Bus) -> Distributor {
        use bootfleet_site_agent as agent;
        let cache_dir = tempfile::tempdir().expect("cache dir");
        let cache = agent::cache::Cache::new(cache_dir.path()).expect("cache");
        let a = agent::agent::Agent::new(
            BusConfig::new(nats_url.to_owned(), "distributor-actions-test"),
            site.to_owned(),
            Duration::from_secs(1),
        );
        let agent::NatsSide { stop, task, .. } = agent::nats_side(a, cache, None)
            .await
            .expect("no listener to bind");
        // Ready when its run route answers: a request with no key is answered by the agent
        // itself with the key's error (before that, nats-server says nobody listens).
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let answer = bus
                .with_timeout(Duration::from_secs(5), 1)
                .request::<_, proto::NodeRunResult>(
                    &TraceParent::new_root(),
                    &subjects::distributor_run(site),
                    &proto::NodeRun {
                        ip: "127.0.0.1".into(),
                        script: "true".into(),
                        timeout_seconds: 1,
                        ..Default::default()
                    },
                )
                .await;
            match answer {
                Ok(result) if result.error.starts_with("privateKey") => break,
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "the distributor does not answer runs: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(cache_dir);
        Distributor { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}
