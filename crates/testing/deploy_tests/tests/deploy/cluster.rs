//! deploy/compose.cluster.yaml on the Docker engine (three NATS nodes, PostgreSQL, two replicas
//! of every service and of the gateway, two builders, a distributor), broken on purpose while
//! clients write through both gateways:
//!
//! - a: the NATS node leading the build queue's stream is SIGKILLed under writes and 20 builds;
//! - b: the node the distributor is connected to is cut off the network, then put back;
//! - c: a gateway replica and a `mainscripts` replica are SIGKILLed mid-load.
//!
//! Clients retry a write with its `Idempotency-Key` on 503, 504, a lost connection (on the other
//! gateway) and, after an answer that can never come (409: the key is held by a request a killed
//! gateway took), read the resource as docs/reliability.md says. After each fault every write
//! acknowledged is read back, no text is stored twice, and no answer was a 5xx other than the
//! documented 503/504. The times measured are printed (BENCHMARKS.md keeps them).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::compose::{token, wait_ready, Stack};
use crate::support::{self, stdout, wait_for};

const SITE: &str = "site-cl";
const WRITERS: usize = 4;
/// Writes per writer, at most (the stream of writes is bounded in count as well as in time).
const MAX_WRITES: usize = 400;
const BUILDS: usize = 20;
const NATS: [&str; 3] = ["nats-1", "nats-2", "nats-3"];

/// What the clients of one phase saw.
#[derive(Debug, Default)]
struct Seen {
    /// HTTP statuses answered, counted.
    statuses: BTreeMap<u16, u32>,
    /// Attempts without an HTTP answer (reset, refused, timed out).
    transport_errors: u32,
    /// Writes acknowledged with a 2xx: (id, text, first attempt, acknowledgment).
    acked: Vec<(String, String, Instant, Instant)>,
    /// Writes whose outcome was learnt by reading after a 409 on their key.
    found_by_reading: Vec<(String, String)>,
    /// Writes given up without an acknowledgment.
    unknown: u32,
    /// Answers the fault rules do not allow (a 5xx other than 503/504, an unexpected 4xx).
    unexpected: Vec<String>,
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    gateways: Vec<String>,
    admin: String,
    seen: Arc<Mutex<Seen>>,
}

impl Client {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One attempt on gateway `gateway`: the status and JSON body, or None without an answer.
    async fn attempt(
        &self,
        gateway: usize,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let base = &self.gateways[gateway % self.gateways.len()];
        let mut request = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.admin)
            .timeout(Duration::from_secs(20));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                Some((
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                ))
            }
            Err(_) => None,
        };
        let mut seen = self.seen();
        match &answer {
            Some((status, body)) => {
                *seen.statuses.entry(*status).or_default() += 1;
                let allowed = *status < 400
                    || *status == 503
                    || *status == 504
                    || (*status == 409 && key.is_some());
                if !allowed {
                    seen.unexpected.push(format!("{path}: {status} {body}"));
                }
            }
            None => seen.transport_errors += 1,
        }
        answer
    }

    /// `GET path` until it answers 200 (at most 30 s): the body.
    async fn get(&self, path: &str) -> Value {
        for i in 0..60 {
            match self
                .attempt(i, reqwest::Method::GET, path, None, None)
                .await
            {
                Some((200, body)) => return body,
                // No answer from one gateway: the other one at once.
                None if i % 2 == 0 => continue,
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        panic!("GET {path} did not answer 200 within 30 s");
    }

    /// The id of the mainscript whose text is `text`, if one is stored.
    async fn find_script(&self, text: &str) -> Option<String> {
        let marker = text
            .lines()
            .nth(1)
            .unwrap_or_default()
            .trim_start_matches("echo ");
        let list = self
            .get(&format!("/api/mainscripts?search={marker}&pageSize=100"))
            .await;
        list["rows"]
            .as_array()?
            .iter()
            .find(|r| r["text"] == text)
            .and_then(|r| r["id"].as_str())
            .map(str::to_owned)
    }

    /// Creates `body` at `path` with the key `key`, retrying (bounded: 40 attempts, 90 s) as a
    /// careful client does; the row's id once acknowledged. `text`, when given, is a script's
    /// text, looked up by reading when the outcome can no longer be learnt from the key.
    async fn create(
        &self,
        gateway: usize,
        path: &str,
        key: &str,
        body: &Value,
        text: Option<&str>,
    ) -> Option<String> {
        let started = Instant::now();
        let mut gateway = gateway;
        for _ in 0..40 {
            if started.elapsed() > Duration::from_secs(90) {
                break;
            }
            match self
                .attempt(gateway, reqwest::Method::POST, path, Some(key), Some(body))
                .await
            {
                Some((status, row)) if (200..300).contains(&status) => {
                    let id = row["id"]
                        .as_str()
                        .expect("a created row has an id")
                        .to_owned();
                    if let Some(text) = text {
                        self.seen().acked.push((
                            id.clone(),
                            text.to_owned(),
                            started,
                            Instant::now(),
                        ));
                    }
                    return Some(id);
                }
                // The key is held by a request whose gateway may have died: read.
                Some((409, _)) => {
                    if let Some(text) = text {
                        if let Some(id) = self.find_script(text).await {
                            self.seen()
                                .found_by_reading
                                .push((id.clone(), text.to_owned()));
                            return Some(id);
                        }
                    }
                }
                // No answer: the other gateway.
                None => gateway += 1,
                Some(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.seen().unknown += 1;
        None
    }

    /// Writers (`WRITERS` of them, writer `w` starting on gateway `w`) creating mainscripts
    /// tagged `phase` until `stop` or `MAX_WRITES` each.
    fn start_writers(
        &self,
        phase: &str,
        stop: &Arc<AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..WRITERS)
            .map(|w| {
                let client = self.clone();
                let stop = stop.clone();
                let phase = phase.to_owned();
                tokio::spawn(async move {
                    for n in 0..MAX_WRITES {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let marker = format!("cl{phase}w{w}n{n}x");
                        let text = format!("#!ipxe\necho {marker}\n");
                        client
                            .create(
                                w,
                                "/api/mainscripts",
                                &marker,
                                &json!({ "text": text }),
                                Some(&text),
                            )
                            .await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            })
            .collect()
    }

    /// Every write of `phase` acknowledged (or found) is read back with its text, and no text
    /// of the phase is stored twice. The number of writes acknowledged.
    async fn verify(&self, phase: &str) -> usize {
        let (acked, found, unexpected) = {
            let seen = self.seen();
            let acked: Vec<(String, String)> = seen
                .acked
                .iter()
                .map(|(id, text, _, _)| (id.clone(), text.clone()))
                .collect();
            (
                acked,
                seen.found_by_reading.clone(),
                seen.unexpected.clone(),
            )
        };
        assert!(
            unexpected.is_empty(),
            "phase {phase}: answers beyond the rules: {unexpected:?}"
        );
        // Single rows read back (every 50th; the listing below reads them all).
        for (id, text) in acked.iter().chain(found.iter()).step_by(50) {
            let row = self.get(&format!("/api/mainscripts/{id}")).await;
            let stored = row
                .as_str()
                .map(str::to_owned)
                .or_else(|| row["text"].as_str().map(str::to_owned));
            assert_eq!(
                stored.as_deref(),
                Some(text.as_str()),
                "phase {phase}: {id}"
            );
        }
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        for page in 1..=100 {
            let list = self
                .get(&format!(
                    "/api/mainscripts?search=cl{phase}w&pageSize=100&page={page}"
                ))
                .await;
            let rows = list["rows"].as_array().cloned().unwrap_or_default();
            for row in &rows {
                let text = row["text"].as_str().unwrap_or_default().to_owned();
                *counts.entry(text.clone()).or_default() += 1;
                ids.insert(row["id"].as_str().unwrap_or_default().to_owned(), text);
            }
            if rows.len() < 100 {
                break;
            }
        }
        let twice: Vec<&String> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(t, _)| t)
            .collect();
        assert!(twice.is_empty(), "phase {phase}: stored twice: {twice:?}");
        for (id, text) in acked.iter().chain(found.iter()) {
            assert_eq!(
                ids.get(id),
                Some(text),
                "phase {phase}: {id} not listed with its text"
            );
        }
        acked.len() + found.len()
    }

    /// Clears what the clients saw, for the next phase.
    fn reset(&self) -> Seen {
        std::mem::take(&mut *self.seen())
    }
}

/// `GET <path>` on a NATS node's monitoring port from inside its container (bash's /dev/tcp;
/// the image has no HTTP client): the JSON body.
fn monitor(container: &str, path: &str) -> Option<Value> {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/8222 && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let out = Command::new("docker")
        .args(["exec", container, "bash", "-c", &script])
        .output()
        .ok()?;
    let text = stdout(&out);
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// The build queue's stream as one node reports it: its leader, and how many of its peers are
/// current.
fn build_stream(container: &str) -> Option<(String, usize)> {
    let jsz = monitor(container, "/jsz?accounts=true&streams=true")?;
    let stream = jsz["account_details"]
        .as_array()?
        .iter()
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == bootfleet_api::subjects::BUILD_STREAM)?;
    let cluster = &stream["cluster"];
    let current = cluster["replicas"]
        .as_array()
        .map(|r| r.iter().filter(|p| p["current"] == true).count())
        .unwrap_or(0);
    Some((cluster["leader"].as_str()?.to_owned(), current))
}

/// The NATS nodes that list a connection of the distributor (by its name). A node cut off by
/// the network still lists the connection it lost until its own pings time out.
fn distributor_nodes(stack: &Stack) -> Vec<&'static str> {
    let has_distributor = |connz: Value| {
        connz["connections"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["name"] == format!("bootfleet-distributor-{SITE}").as_str())
        })
    };
    NATS.into_iter()
        .filter(|node| {
            monitor(&stack.container(node), "/connz?limit=1024").is_some_and(has_distributor)
        })
        .collect()
}

fn docker(args: &[&str]) {
    support::run(Command::new("docker").args(args));
}

fn summary(phase: &str, seen: &Seen, since: Instant) -> String {
    let longest = seen
        .acked
        .iter()
        .map(|(_, _, start, end)| end.duration_since(*start))
        .max()
        .unwrap_or_default();
    // The first write started after the fault that was acknowledged: when clients were served again.
    let back = seen
        .acked
        .iter()
        .filter(|(_, _, start, _)| *start >= since)
        .map(|(_, _, _, end)| end.duration_since(since))
        .min()
        .unwrap_or_default();
    format!(
        "phase {phase}: {} writes acknowledged, {} found by reading, {} unknown; longest write {longest:.1?}; first write begun after the fault acknowledged {back:.1?} after it; statuses {:?}, {} attempts without an answer",
        seen.acked.len(),
        seen.found_by_reading.len(),
        seen.unknown,
        seen.statuses,
        seen.transport_errors
    )
}

#[test]
fn a_nats_cluster_with_replicated_services_survives_node_loss_partition_and_replica_kills() {
    let Some((_machine, images)) = support::container_test() else {
        return;
    };
    let started = Instant::now();
    let stack = Stack::init(
        "bfcluster",
        "deploy/compose.cluster.yaml",
        images,
        &[
            "--distributor",
            SITE,
            "--nats-url",
            "nats://nats-1:4222",
            "--interface",
            "eth0",
            "--server-ip",
            "127.0.0.1",
        ],
    );
    stack.run(&["up", "-d"]);
    let ids = stack.containers();
    assert_eq!(
        ids.len(),
        25,
        "3 NATS nodes, PostgreSQL, 8 services and 2 gateways twice, 2 builders, a distributor"
    );
    let network = format!("{}_default", stack.project);
    let gateways: Vec<String> = ["gateway-1", "gateway-2"]
        .iter()
        .map(|g| format!("http://{}", stdout(&stack.run(&["port", g, "8080"])).trim()))
        .collect();
    let data = tempfile::tempdir().expect("tempdir");
    let admin = token(
        &stack.env_value("BOOTFLEET_JWT_SECRET"),
        data.path(),
        &["--role", "admin"],
    );
    let client = Client {
        http: reqwest::Client::new(),
        gateways: gateways.clone(),
        admin,
        seen: Arc::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Both gateways see every service, builders included; the distributor is online.
        for base in &gateways {
            wait_ready(&client.http, base, Duration::from_secs(180)).await;
        }
        let distributor_online = || async {
            let list = client.get(&format!("/api/distributors?search={SITE}")).await;
            list["rows"][0].clone()
        };
        let mut row = Value::Null;
        for _ in 0..120 {
            row = distributor_online().await;
            if row["online"] == true {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(row["online"], true, "{row}");
        eprintln!("cluster stack ready in {:.1?}", started.elapsed());

        // a: the build queue's leader is killed under writes and 20 builds.
        let stop = Arc::new(AtomicBool::new(false));
        let writers = client.start_writers("a", &stop);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let fragments = ["ldlinux.c32", "isolinux.bin", "isohdpfx.bin"];
        let builds: Vec<_> = (0..BUILDS)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let body = json!({ "fragment": fragments[i % 3] });
                    client
                        .create(i, "/api/syslinuxs", &format!("clbuild{i}"), &body, None)
                        .await
                })
            })
            .collect();
        let mut build_ids = Vec::new();
        for b in builds {
            build_ids.push(b.await.expect("build task").expect("every build request acknowledged"));
        }
        let leader = NATS
            .iter()
            .find_map(|n| build_stream(&stack.container(n)))
            .map(|(leader, _)| leader)
            .expect("the build stream's leader");
        let leader_container = stack.container(&leader);
        let killed_at = Instant::now();
        docker(&["kill", "-s", "KILL", &leader_container]);
        eprintln!("a: killed {leader}, the build stream's leader, with {BUILDS} builds queued");
        // The builds are followed while the writes go on: when the last is done.
        let builds_done = tokio::spawn({
            let client = client.clone();
            let build_ids = build_ids.clone();
            async move {
                let mut done = 0;
                for id in &build_ids {
                    for _ in 0..240 {
                        let row = client.get(&format!("/api/syslinuxs/{id}")).await;
                        match row["status"].as_str() {
                            Some("done") => {
                                done += 1;
                                break;
                            }
                            Some("failed") => panic!("build {id} failed: {row}"),
                            _ => tokio::time::sleep(Duration::from_millis(250)).await,
                        }
                    }
                }
                (done, killed_at.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_secs(15)).await;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.expect("writer");
        }
        let (done, builds_done_in) = builds_done.await.expect("builds");
        assert_eq!(done, BUILDS, "builds done");
        // Each row was built once by a builder, or found built already (the same fragment done
        // before it was asked for) and served from the store by the registry.
        let built = format!("{}{}", stack.logs("builders-1"), stack.logs("builders-2"));
        let registry = format!("{}{}", stack.logs("artifacts-1"), stack.logs("artifacts-2"));
        let count = |logs: &str, id: &str, what: &str| {
            logs.lines().filter(|l| l.contains(id) && l.contains(what)).count()
        };
        let mut by_builders = 0;
        for id in &build_ids {
            let done = count(&built, id, "build done");
            let from_store = count(&registry, id, "already built");
            assert_eq!(done + from_store, 1, "build {id}: built {done} times, from the store {from_store} times");
            by_builders += done;
        }
        let seen = client.reset();
        eprintln!("{}; all {BUILDS} builds done exactly once ({by_builders} by a builder, the others from the store) {builds_done_in:.1?} after the kill", summary("a", &seen, killed_at));
        *client.seen() = seen;
        client.verify("a").await;
        client.reset();
        // The node comes back and catches up.
        docker(&["start", &leader_container]);
        let current = wait_for(Duration::from_secs(90), || {
            NATS.iter().any(|n| build_stream(&stack.container(n)).is_some_and(|(_, c)| c == 2))
        });
        assert!(current, "{leader} did not catch up");

        // b: the distributor's node is cut off, then put back.
        let nodes = distributor_nodes(&stack);
        assert_eq!(nodes.len(), 1, "the distributor's NATS node: {nodes:?}");
        let node = nodes[0];
        let node_container = stack.container(node);
        let stop = Arc::new(AtomicBool::new(false));
        let writers = client.start_writers("b", &stop);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cut_at = Instant::now();
        docker(&["network", "disconnect", &network, &node_container]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seen_at_cut = distributor_online().await["lastSeen"].clone();
        let mut back_online = None;
        for _ in 0..120 {
            let row = distributor_online().await;
            if row["online"] == true && row["lastSeen"] != seen_at_cut {
                back_online = Some(cut_at.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let back_online = back_online.expect("the distributor reconnected to a live node and heartbeats again while its node is cut off");
        let moved_to: Vec<&str> = distributor_nodes(&stack)
            .into_iter()
            .filter(|n| *n != node)
            .collect();
        assert_eq!(moved_to.len(), 1, "the distributor's new node: {moved_to:?}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        docker(&["network", "connect", "--alias", node, &network, &node_container]);
        tokio::time::sleep(Duration::from_secs(8)).await;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.expect("writer");
        }
        let seen = client.reset();
        eprintln!(
            "{}; the distributor, cut off with {node}, online again through {moved_to:?} {back_online:.1?} after the cut",
            summary("b", &seen, cut_at)
        );
        *client.seen() = seen;
        client.verify("b").await;
        client.reset();
        let row = distributor_online().await;
        assert_eq!(row["online"], true, "{row}");

        // c: a gateway replica and a service replica are SIGKILLed mid-load.
        let stop = Arc::new(AtomicBool::new(false));
        let writers = client.start_writers("c", &stop);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let killed_at = Instant::now();
        docker(&["kill", "-s", "KILL", &stack.container("gateway-1"), &stack.container("mainscripts-1")]);
        tokio::time::sleep(Duration::from_secs(10)).await;
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.expect("writer");
        }
        let seen = client.reset();
        eprintln!("{}", summary("c", &seen, killed_at));
        *client.seen() = seen;
        client.verify("c").await;
    });

    stack.down();
    eprintln!("cluster test done in {:.1?}", started.elapsed());
}
