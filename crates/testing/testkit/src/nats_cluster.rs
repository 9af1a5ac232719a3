//! Three `nats-server` processes with JetStream joined as one cluster on loopback ports, each
//! with its own store in one temporary directory; every process is killed by its PID on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, nats_server_bin_and_dir, wait_until};

/// One node of a [`NatsCluster`].
#[derive(Debug)]
struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

/// A three-node NATS cluster with JetStream (`nats-server --cluster ... --routes ...`).
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl NatsCluster {
    /// Starts three nodes and waits (at most 30 s) until the JetStream meta group has a leader.
    pub fn start() -> NatsCluster {
        let (bin, dir) = nats_server_bin_and_dir("bootfleet-nats-cluster-");
        let nodes = (1..=3)
            .map(|i| Node {
                name: format!("n{i}"),
                client_port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = NatsCluster { nodes, dir, bin };
        for i in 0..3 {
            cluster.spawn(i);
        }
        let ready = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            cluster.meta_leader().is_some()
        });
        assert!(
            ready,
            "the NATS cluster elected no JetStream meta leader within 30 s:\n{}",
            cluster.logs()
        );
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect();
        let node = &self.nodes[i];
        let store = self.dir.path().join(&node.name);
        std::fs::create_dir_all(&store).expect("create the node's store directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("create the node's log");
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &node.client_port.to_string()])
            .args(["-n", &node.name, "--cluster_name", "bootfleet-test"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.cluster_port),
            ])
            .args(["--routes", &routes.join(",")])
            .args(["-m", &node.monitor_port.to_string()])
            .args(["-js", "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start nats-server");
        let client_port = node.client_port;
        self.nodes[i].child = Some(child);
        let listening = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            TcpStream::connect(("127.0.0.1", client_port)).is_ok()
        });
        assert!(
            listening,
            "node {i} does not listen on {client_port}:\n{}",
            self.log(i)
        );
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.nodes[i].name))
    }

    /// What node `i` logged so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Every node's log, each under its name.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| format!("--- {} ---\n{}", self.nodes[i].name, self.log(i)))
            .collect()
    }

    /// The client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Every node's client URL, comma-separated (what `NATS_URL` takes).
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server name of node `i` (`n1`, `n2`, `n3`).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node whose server name is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// `GET path` on a running node's monitoring port: the body, if it answered 200.
    pub fn monitor(&self, i: usize, path: &str) -> Option<String> {
        http_get(self.nodes[i].monitor_port, path)
    }

    /// The JetStream meta group's leader, as a running node reports it.
    pub fn meta_leader(&self) -> Option<String> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.child.is_some())
            .find_map(|(i, _)| {
                let jsz = self.monitor(i, "/jsz")?;
                let meta = &jsz[jsz.find("\"meta_cluster\"")?..];
                json_string_after(meta, "\"leader\"")
            })
    }

    /// Kills node `i` (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and store, as after a crash.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Its client port may linger a moment in TIME_WAIT; nats-server sets SO_REUSEADDR.
        while Instant::now() < deadline
            && TcpStream::connect(("127.0.0.1", self.nodes[i].client_port)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn(i);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The string value that follows `key` in `json` (`"key": "value"`), without a JSON parser.
fn json_string_after(json: &str, key: &str) -> Option<String> {
    let rest = &json[json.find(key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// A plain HTTP/1.0 GET on loopback, bounded to 2 s: the body of a 200 answer.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_owned()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_string_after_a_key() {
        let jsz = r#"{"meta_cluster": {"name": "c", "leader": "n2", "peer": "x"}}"#;
        assert_eq!(
            super::json_string_after(jsz, "\"leader\""),
            Some("n2".to_owned())
        );
        assert_eq!(
            super::json_string_after(r#"{"name": "c"}"#, "\"leader\""),
            None
        );
    }
}
