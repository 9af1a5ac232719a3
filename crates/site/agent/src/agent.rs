//! The distributor's link to the system: it connects **out** to NATS, registers and heartbeats,
//! applies the operator's on/off (pushed at once, and returned by every heartbeat so it
//! converges), and publishes boot events. Serving never waits for NATS: the LAN keeps booting
//! while the bus is away, and the link comes back by itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bootfleet_api::{proto, subjects, ApiError, ErrorCode};
use bootfleet_bus::{ArtifactStore, Bus, BusConfig, ServiceBuilder, TraceParent};

use crate::boot_config::Applier;
use crate::reporting::{Counters, Events, Switch};
use futures_util::StreamExt;
use prost::Message;
use tokio::sync::mpsc;

/// Interface names of this process's network namespace. (`/sys/class/net` would show the
/// namespace that mounted sysfs, which is not always ours.)
fn interfaces() -> Vec<String> {
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    let mut names: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty() && name != "lo")
        .collect();
    names.sort();
    names.truncate(64);
    names
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().chars().take(255).collect())
        .unwrap_or_default()
}

pub struct Agent {
    pub events: Events,
    rx: mpsc::Receiver<proto::BootEvent>,
    artifact_id: String,
    bus_config: BusConfig,
    heartbeat: Duration,
    /// How long a heartbeat waits for the services' answer.
    pub heartbeat_timeout: Duration,
    /// How often to probe the site's nodes; `None`: never.
    pub probe_every: Option<Duration>,
    /// Per-MAC boot decisions, asked through this link once it is connected.
    pub machines: Option<Arc<crate::machines::Machines>>,
}

bootfleet_api::debug_fields!(Agent as a { artifact_id });

impl Agent {
    pub fn new(bus_config: BusConfig, artifact_id: String, heartbeat: Duration) -> Agent {
        let (events, rx) = Events::queued(artifact_id.clone());
        Agent {
            events,
            rx,
            artifact_id,
            bus_config,
            heartbeat,
            heartbeat_timeout: Duration::from_secs(2),
            probe_every: None,
            machines: None,
        }
    }

    /// Connects (retrying until it can), then heartbeats, listens for pushes and publishes
    /// events until `shutdown`.
    pub async fn run(
        mut self,
        switch: Switch,
        counters: Arc<Counters>,
        applier: Arc<Applier>,
        serving: bool,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let bus = loop {
            match Bus::connect(&self.bus_config).await {
                Ok(bus) => break bus,
                Err(e) => {
                    tracing::warn!(error = %e, "nats unreachable; serving goes on, retrying in 2 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        let bus = bus.with_timeout(Duration::from_secs(2), 1);
        if let Some(machines) = &self.machines {
            machines.connected(bus.clone());
        }
        let mut control = match bus
            .client()
            .subscribe(subjects::distributor_control(&self.artifact_id))
            .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to pushes; heartbeats still converge");
                None
            }
        };
        // What the system asks of this distributor: apply the operator's configuration, run a
        // script on a node of the site; and, beside, the nodes' reachability probes.
        let apply_service = {
            let (applier, store_bus) = (applier.clone(), bus.clone());
            let mut service = ServiceBuilder::new(bus.clone(), "distributor-agent")
                .route(
                    subjects::distributor_apply(&self.artifact_id),
                    move |_, config: proto::DistributorConfig| {
                        let (applier, store_bus) = (applier.clone(), store_bus.clone());
                        async move {
                            let store = ArtifactStore::open(&store_bus).await?;
                            applier.apply(&store, config).await
                        }
                    },
                )
                .route(
                    subjects::distributor_exec(&self.artifact_id),
                    |_, exec: proto::NodeExec| run_on_node(exec),
                )
                .route(
                    subjects::distributor_power(&self.artifact_id),
                    |_, req: proto::PowerRequest| crate::power::run(req),
                )
                .route(subjects::distributor_run(&self.artifact_id), {
                    let (bus, site) = (bus.clone(), self.artifact_id.clone());
                    move |_, run: proto::NodeRun| {
                        crate::runs::run_command(bus.clone(), site.clone(), run)
                    }
                });
            if let Some(every) = self.probe_every {
                let (bus, artifact_id) = (bus.clone(), self.artifact_id.clone());
                service =
                    service.background(move |stop| probe_nodes(bus, artifact_id, every, stop));
            }
            service.start().await
        };
        let apply_service = match apply_service {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot take configurations; the heartbeat still converges");
                None
            }
        };
        // The heartbeat waits on a round trip to the services (up to the bus timeout): in its
        // own task, so that boot events and the operator's on/off pushes never wait behind it.
        // Pushes are counted, so that a heartbeat answer made before a push cannot undo it.
        let pushes = Arc::new(AtomicU64::new(0));
        let heartbeat = tokio::spawn(
            Heartbeat {
                bus: bus.with_timeout(self.heartbeat_timeout, 1),
                artifact_id: self.artifact_id.clone(),
                every: self.heartbeat,
                serving,
                switch: switch.clone(),
                pushes: pushes.clone(),
                counters,
                applier,
            }
            .run(shutdown.clone()),
        );
        let events_subject = subjects::boot_events(&self.artifact_id);
        loop {
            tokio::select! {
                Some(msg) = async { match control.as_mut() { Some(s) => s.next().await, None => None } } => {
                    match proto::Distributor::decode(msg.payload) {
                        Ok(row) if row.artifact_id == self.artifact_id => {
                            pushes.fetch_add(1, Ordering::SeqCst);
                            switch.set(row.on);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "undecodable control message"),
                    }
                }
                Some(event) = self.rx.recv() => {
                    if let Err(e) = bus.client().publish(events_subject.clone(), event.encode_to_vec().into()).await {
                        tracing::debug!(error = %e, "cannot publish a boot event");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        if let Err(e) = heartbeat.await {
            tracing::warn!(error = %e, "the heartbeat task ended abnormally");
        }
        if let Some(s) = apply_service {
            s.stop().await;
        }
    }
}

/// What the heartbeat reports and acts on.
struct Heartbeat {
    bus: Bus,
    artifact_id: String,
    every: Duration,
    serving: bool,
    switch: Switch,
    /// On/off pushes taken so far (by the agent's loop).
    pushes: Arc<AtomicU64>,
    counters: Arc<Counters>,
    applier: Arc<Applier>,
}

impl Heartbeat {
    /// Reports to the services every `every` until `shutdown`; follows the operator's switch
    /// in the answer, and applies the stored configuration when it is not the one served
    /// (after a restart).
    async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let applying = Arc::new(AtomicBool::new(false));
        let mut ticks = Ticks::new(self.every, shutdown);
        while ticks.next().await {
            let hb = proto::DistributorHeartbeat {
                artifact_id: self.artifact_id.clone(),
                hostname: hostname(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                interfaces: interfaces(),
                serving: self.serving && self.switch.is_on(),
                dhcp_answered: self.counters.dhcp_answered.load(Ordering::Relaxed),
                tftp_completed: self.counters.tftp_completed.load(Ordering::Relaxed),
                boot_files: self.applier.served(),
            };
            let subject = subjects::distributor_heartbeat(&self.artifact_id);
            let trace = TraceParent::new_root();
            let pushes_before = self.pushes.load(Ordering::SeqCst);
            let answered = tokio::select! {
                answered = self.bus.request::<_, proto::Distributor>(&trace, &subject, &hb) => answered,
                _ = ticks.stop.changed() => return,
            };
            let row = match answered {
                Ok(row) => row,
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat not answered");
                    continue;
                }
            };
            // A push taken meanwhile is newer than what this answer says.
            if self.pushes.load(Ordering::SeqCst) == pushes_before {
                self.switch.set(row.on);
            }
            // After a restart: apply the configuration the operator gave.
            let Some(config) = row.config.filter(|c| !self.applier.is_applied(c)) else {
                continue;
            };
            if applying.swap(true, Ordering::SeqCst) {
                continue;
            }
            let (applier, bus, applying) =
                (self.applier.clone(), self.bus.clone(), applying.clone());
            tokio::spawn(async move {
                let outcome = match ArtifactStore::open(&bus).await {
                    Ok(store) => applier.apply(&store, config).await.map(|_| ()),
                    Err(e) => Err(ApiError::from(e)),
                };
                if let Err(e) = outcome {
                    tracing::warn!(error = %e.message, "cannot apply the stored configuration; retrying with the next heartbeat");
                }
                applying.store(false, Ordering::SeqCst);
            });
        }
    }
}

/// Runs an operator's script on a node of this site over SSH. The key is in this request's
/// memory only; nothing here logs it.
async fn run_on_node(exec: proto::NodeExec) -> Result<proto::NodeExecResult, ApiError> {
    use crate::ssh_exec::{self, ExecRequest};
    let addr = ssh_exec::node_addr(&exec.ip, exec.port)?;
    let timeout = Duration::from_secs(u64::from(exec.timeout_seconds.clamp(1, 3600)));
    let request = ExecRequest {
        addr,
        user: &exec.user,
        private_key: &exec.private_key,
        script: &exec.script,
        timeout,
        known_host_key: (!exec.known_host_key.is_empty()).then_some(exec.known_host_key.as_str()),
        max_output: 1 << 20,
    };
    tracing::info!(node = %addr, user = %exec.user, "running an operator's script");
    match ssh_exec::run(&request).await {
        Ok(out) => Ok(proto::NodeExecResult {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
            exit_signal: out.exit_signal.unwrap_or_default(),
            truncated: out.truncated,
            host_key: out.host_key,
        }),
        Err(e) => {
            tracing::info!(node = %addr, error = %e, "script not run to completion");
            Err(exec_error(e, &exec.user, addr))
        }
    }
}

/// What the operator is told when a script did not run to its end on `addr`.
pub(crate) fn exec_error(
    e: crate::ssh_exec::ExecError,
    user: &str,
    addr: std::net::SocketAddr,
) -> ApiError {
    use crate::ssh_exec::ExecError;
    let ip = addr.ip();
    match e {
        ExecError::InvalidKey(m) => ApiError::invalid("privateKey", m),
        ExecError::AuthFailed(m) => ApiError::invalid(
            "privateKey",
            format!("the node refused it for {user}@{ip}: {m}"),
        ),
        ExecError::HostKeyChanged { expected, got } => ApiError::new(
            ErrorCode::Conflict,
            format!(
                "node {ip} presented a different host key ({got}) than the one recorded ({expected}); refusing to run. If the node was reinstalled, delete it and let it register again"
            ),
        ),
        ExecError::Timeout(after) => ApiError::new(
            ErrorCode::Timeout,
            format!("the script did not finish within {} s; the session was closed", after.as_secs()),
        ),
        ExecError::Connect(m) => ApiError::unavailable(format!("cannot reach node {addr}: {m}")),
        ExecError::Protocol(m) => ApiError::unavailable(format!("ssh with node {addr} failed: {m}")),
    }
}

/// A tick every `every`, the first at once (late ticks are not caught up), until `stop` changes.
struct Ticks {
    ticker: tokio::time::Interval,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Ticks {
    fn new(every: Duration, stop: tokio::sync::watch::Receiver<bool>) -> Ticks {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticks { ticker, stop }
    }

    /// Waits for the next tick; false once it is time to stop.
    async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.ticker.tick() => true,
            _ = self.stop.changed() => false,
        }
    }
}

/// Probes the site's registered nodes every `every` and reports to the localnodes service.
/// Listing nodes never waits for this: it only updates rows.
async fn probe_nodes(
    bus: Bus,
    artifact_id: String,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = Ticks::new(every, stop);
    while ticks.next().await {
        let request = proto::SiteNodesRequest {
            artifact_id: artifact_id.clone(),
        };
        let nodes: proto::LocalNodeList = match bus
            .request(
                &TraceParent::new_root(),
                &subjects::localnodes_of_site(&artifact_id),
                &request,
            )
            .await
        {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the site's nodes");
                continue;
            }
        };
        let targets: Vec<(String, std::net::SocketAddr)> = nodes
            .rows
            .into_iter()
            .filter_map(|n| {
                let ip: std::net::IpAddr = n.ip.parse().ok()?;
                Some((n.id, std::net::SocketAddr::new(ip, 22)))
            })
            .collect();
        if targets.is_empty() {
            continue;
        }
        let addrs: Vec<std::net::SocketAddr> = targets.iter().map(|(_, a)| *a).collect();
        let results = crate::reachability::probe_all(&addrs, Duration::from_secs(2)).await;
        let report = proto::ReachabilityReport {
            artifact_id: artifact_id.clone(),
            nodes: targets
                .iter()
                .zip(results)
                .map(|((id, _), (_, reachable))| proto::NodeReachability {
                    id: id.clone(),
                    reachable,
                })
                .collect(),
        };
        if let Err(e) = bus
            .request::<_, proto::Empty>(
                &TraceParent::new_root(),
                &subjects::localnodes_reachability(&artifact_id),
                &report,
            )
            .await
        {
            tracing::debug!(error = %e, "cannot report reachability");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;

    /// Only there so a broken agent fails the test instead of hanging it.
    const WAIT: Duration = Duration::from_secs(10);

    /// Distributor `a`'s row, switched `on` or off, as the bus carries it.
    fn distributor_a(on: bool) -> Vec<u8> {
        proto::Distributor {
            artifact_id: "a".into(),
            on,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_and_pushes_do_not_wait_for_an_unanswered_heartbeat() {
        let nats = bootfleet_testkit::NatsServer::start();
        let client = async_nats::connect(nats.url()).await.expect("connect");
        // A services side that takes heartbeats and never answers them.
        let mut heartbeats = client
            .subscribe(subjects::distributor_heartbeat("a"))
            .await
            .expect("subscribe");
        let mut boot_events = client
            .subscribe(subjects::boot_events("a"))
            .await
            .expect("subscribe");
        bootfleet_bus::sync(&client, WAIT).await.expect("sync");

        let mut agent = Agent::new(
            BusConfig::new(nats.url(), "agent-test"),
            "a".into(),
            Duration::from_millis(100),
        );
        // Far longer than the test waits for anything: with the heartbeat in the loop that
        // publishes events and takes pushes, both would wait this long.
        agent.heartbeat_timeout = Duration::from_secs(60);
        let events = agent.events.clone();
        let cache_dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(cache_dir.path()).expect("cache");
        let crate::NatsSide { switch, stop, task } = crate::nats_side(agent, cache, None)
            .await
            .expect("no listener to bind");

        // A heartbeat is now waiting for its answer.
        let held = tokio::time::timeout(WAIT, heartbeats.next())
            .await
            .expect("a heartbeat")
            .expect("subscription open");

        events.emit(proto::BootEvent {
            kind: "dhcp_answered".into(),
            ..Default::default()
        });
        let event = tokio::time::timeout(WAIT, boot_events.next())
            .await
            .expect("the boot event, while the heartbeat is unanswered")
            .expect("subscription open");
        let event = proto::BootEvent::decode(event.payload).expect("decode");
        assert_eq!(event.kind, "dhcp_answered");

        client
            .publish(
                subjects::distributor_control("a"),
                distributor_a(false).into(),
            )
            .await
            .expect("publish");
        tokio::time::timeout(WAIT, async {
            while switch.is_on() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("switched off by the push, while the heartbeat is unanswered");

        // The held heartbeat's answer, made before the push, still says on: it must not undo
        // the push. The next heartbeat shows the answer was taken.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(bootfleet_bus::STATUS_HEADER, "ok");
        client
            .publish_with_headers(
                held.reply.expect("a request has a reply subject"),
                headers,
                distributor_a(true).into(),
            )
            .await
            .expect("answer the held heartbeat");
        tokio::time::timeout(WAIT, heartbeats.next())
            .await
            .expect("the next heartbeat")
            .expect("subscription open");
        assert!(!switch.is_on(), "a stale heartbeat answer undid the push");

        // Shutdown does not wait for the heartbeat's answer either.
        let _ = stop.send(true);
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the agent stops")
            .expect("join");
    }
}
