//! The `actions` service through the gateway's REST API: groups, the command library and runs,
//! with a real distributor agent (its NATS side) running the commands over SSH on real sshd
//! nodes (`crate::nodes`), a real `nats-server`, and SQLite or a real PostgreSQL.
//!
//! Tests of this module run inside the `system` test binary and share its `Lab`.

use bootfleet_testkit::sshd::Sshd;
use bootfleet_testkit::Backend;
use reqwest::Method;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};

use super::{lab, Lab};
use crate::nodes::{keypair, node_ip, node_net, Distributor, WAIT};

bootfleet_testkit::on_both_backends!(
    groups_resolve_members_matches_and_own_groups,
    commands_library_with_variants_and_built_ins,
    runs_pick_variants_keep_metadata_intact_and_survive_a_down_machine,
    run_output_streams_before_the_command_ends,
    runs_refuse_bad_input_and_power_commands_report_per_machine,
);

impl Lab {
    async fn new_machine(&self, body: Value) -> Value {
        self.admin(Method::POST, "/api/machines", Some(body))
            .await
            .ok(201)
    }

    /// Starts a run and returns the open NDJSON stream (after checking its head).
    async fn run(&self, command: &str, body: Value) -> RunStream {
        let resp = self
            .http
            .post(format!("{}/api/commands/{command}/runs", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200, "{:?}", resp.headers());
        assert_eq!(
            resp.headers()["content-type"],
            "application/x-ndjson",
            "{:?}",
            resp.headers()
        );
        RunStream {
            resp,
            buf: Vec::new(),
        }
    }
}

/// A run's NDJSON body, read line by line as it arrives.
struct RunStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl RunStream {
    /// The next line, or `None` at the end of the body.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).expect("a JSON line"));
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("the stream goes on")
                .expect("body");
            match chunk {
                Some(c) => self.buf.extend_from_slice(&c),
                None => {
                    assert!(self.buf.is_empty(), "unterminated line");
                    return None;
                }
            }
        }
    }

    /// Every remaining line (bounded: a run ends).
    async fn rest(&mut self) -> Vec<Value> {
        let mut lines = Vec::new();
        while let Some(line) = self.next().await {
            lines.push(line);
            assert!(lines.len() < 10_000, "a run that does not end");
        }
        lines
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn groups_resolve_members_matches_and_own_groups(backend: Backend) {
    let lab = lab(backend).await;
    let m1 = lab
        .new_machine(
            json!({"mac": "52:54:00:00:10:01", "name": "g-one", "artifactId": "site-g",
            "ranks": ["metal"], "metadata": {"rack": "r1"}}),
        )
        .await;
    let m2 = lab
        .new_machine(
            json!({"mac": "52:54:00:00:10:02", "name": "g-two", "artifactId": "site-g",
            "ranks": ["gpu"], "metadata": {"rack": "r2"}, "groups": ["lab"]}),
        )
        .await;
    let m3 = lab
        .new_machine(
            json!({"mac": "52:54:00:00:10:03", "name": "g-three", "artifactId": "site-g",
            "ranks": ["vm", "metal"], "metadata": {"rack": "r2"}}),
        )
        .await;
    // Matches the ranks but not the metadata, and the metadata but not the ranks.
    lab.new_machine(
        json!({"mac": "52:54:00:00:10:04", "name": "g-four", "artifactId": "site-g",
        "ranks": ["metal"], "metadata": {"rack": "r3"}}),
    )
    .await;
    lab.new_machine(
        json!({"mac": "52:54:00:00:10:05", "name": "g-five", "artifactId": "site-g",
        "ranks": ["aws"], "metadata": {"rack": "r2"}}),
    )
    .await;

    // An unknown member is refused, naming `members`; nothing is written.
    lab.admin(
        Method::POST,
        "/api/groups",
        Some(json!({"name": "lab", "members": ["g-one", "nosuch"]})),
    )
    .await
    .expect_error(400, Some("members"));
    lab.admin(
        Method::POST,
        "/api/groups",
        Some(json!({"name": "bad name", "members": []})),
    )
    .await
    .expect_error(400, Some("name"));
    lab.admin(
        Method::POST,
        "/api/groups",
        Some(json!({"name": "x", "match": {"ranks": ["a b"]}})),
    )
    .await
    .expect_error(400, Some("match"));
    assert_eq!(lab.total("/api/groups").await, 0);

    // Members by name and by id, a selector, and g-two's own `groups`.
    let created = lab
        .admin(
            Method::POST,
            "/api/groups",
            Some(json!({"name": "lab", "description": "the lab rack",
                "members": ["G-One", m1["id"]],
                "match": {"ranks": ["metal", "gpu"], "metadata": {"rack": "r2"}}})),
        )
        .await;
    let row = created.ok(201);
    assert_eq!(created.headers["location"], "/api/groups/lab");
    assert_eq!(row["match"]["metadata"]["rack"], "r2");
    lab.admin(Method::POST, "/api/groups", Some(json!({"name": "lab"})))
        .await
        .expect_error(409, Some("name"));
    // A user may read, not write.
    let as_user = lab
        .call(
            Method::POST,
            "/api/groups",
            Some(lab.user.as_str()),
            Some(json!({"name": "other"})),
        )
        .await;
    assert_eq!(as_user.status, 403, "{}", as_user.text);

    let resolved = lab
        .admin(Method::GET, "/api/groups/lab/machines", None)
        .await
        .ok(200);
    let mut got: Vec<(String, Vec<String>)> = resolved["machines"]
        .as_array()
        .expect("machines")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().expect("name").to_owned(),
                m["via"]
                    .as_array()
                    .expect("via")
                    .iter()
                    .map(|v| v.as_str().expect("via").to_owned())
                    .collect(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("g-one".to_owned(), vec!["member".to_owned()]),
            ("g-three".to_owned(), vec!["match".to_owned()]),
            (
                "g-two".to_owned(),
                vec!["match".to_owned(), "groups".to_owned()]
            ),
        ],
        "{resolved}"
    );
    let ids: Vec<&Value> = resolved["machines"]
        .as_array()
        .expect("machines")
        .iter()
        .map(|m| &m["id"])
        .collect();
    for m in [&m1, &m2, &m3] {
        assert!(ids.contains(&&m["id"]), "{resolved}");
    }

    // Replace: only the selector on rank gpu now (g-two by match and by its own groups).
    let put = lab
        .admin(
            Method::PUT,
            "/api/groups/lab",
            Some(json!({"match": {"ranks": ["gpu"]}})),
        )
        .await
        .ok(200);
    assert_eq!(put["members"], json!([]));
    let resolved = lab
        .admin(Method::GET, "/api/groups/lab/machines", None)
        .await
        .ok(200);
    assert_eq!(resolved["machines"].as_array().expect("machines").len(), 1);
    assert_eq!(resolved["machines"][0]["name"], "g-two");
    // PUT creates a missing one.
    lab.admin(
        Method::PUT,
        "/api/groups/racks",
        Some(json!({"members": ["g-four"]})),
    )
    .await
    .ok(201);
    let page = lab
        .admin(Method::GET, "/api/groups?pageSize=1&sort=name", None)
        .await
        .ok(200);
    assert_eq!(
        (page["total"].as_u64(), page["totalPages"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(page["rows"][0]["name"], "lab");
    lab.admin(Method::DELETE, "/api/groups/racks", None)
        .await
        .ok(200);
    lab.admin(Method::GET, "/api/groups/racks", None)
        .await
        .expect_error(404, None);
    lab.stop().await;
}

async fn commands_library_with_variants_and_built_ins(backend: Backend) {
    let lab = lab(backend).await;
    // The built-ins are listed and cannot be changed.
    let list = lab
        .admin(Method::GET, "/api/commands?search=power&pageSize=10", None)
        .await
        .ok(200);
    let names: Vec<&str> = list["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["power-cycle", "power-off", "power-on", "power-status"]
    );
    assert_eq!(list["rows"][0]["builtIn"], true);
    for (method, body) in [
        (Method::PUT, Some(json!({"script": "echo"}))),
        (Method::DELETE, None),
    ] {
        let message = lab
            .admin(method, "/api/commands/power-on", body)
            .await
            .expect_error(409, Some("name"));
        assert!(message.contains("built-in"), "{message}");
    }
    lab.admin(
        Method::POST,
        "/api/commands",
        Some(json!({"name": "power-off", "script": "echo"})),
    )
    .await
    .expect_error(409, Some("name"));

    // Validation names the field.
    for (body, field) in [
        (json!({"name": "x y", "script": "echo"}), "name"),
        (json!({"name": "x", "script": "  "}), "script"),
        (
            json!({"name": "x", "script": "a".repeat(64 * 1024 + 1)}),
            "script",
        ),
        (
            json!({"name": "x", "script": "echo", "variants": [{"rank": "metal", "script": ""}]}),
            "variants",
        ),
        (
            json!({"name": "x", "script": "echo", "colour": "red"}),
            "colour",
        ),
    ] {
        lab.admin(Method::POST, "/api/commands", Some(body))
            .await
            .expect_error(400, Some(field));
    }

    let created = lab
        .admin(
            Method::POST,
            "/api/commands",
            Some(json!({"name": "usage", "summary": "load and uptime",
                "description": "reports the load", "script": "uptime",
                "variants": [{"rank": "aws", "script": "echo aws; uptime"}]})),
        )
        .await;
    let row = created.ok(201);
    assert_eq!(created.headers["location"], "/api/commands/usage");
    assert_eq!(row["builtIn"], false);
    assert_eq!(row["variants"][0]["rank"], "aws");
    lab.admin(
        Method::POST,
        "/api/commands",
        Some(json!({"name": "usage", "script": "true"})),
    )
    .await
    .expect_error(409, Some("name"));
    let replaced = lab
        .admin(
            Method::PUT,
            "/api/commands/usage",
            Some(json!({"script": "uptime -p"})),
        )
        .await
        .ok(200);
    assert_eq!(
        (
            replaced["script"].as_str(),
            replaced["variants"].as_array().map(Vec::len)
        ),
        (Some("uptime -p"), Some(0))
    );
    assert_eq!(
        lab.admin(Method::GET, "/api/commands/usage", None)
            .await
            .ok(200)["script"],
        "uptime -p"
    );
    lab.admin(Method::DELETE, "/api/commands/usage", None)
        .await
        .ok(200);
    lab.admin(Method::GET, "/api/commands/usage", None)
        .await
        .expect_error(404, None);
    lab.stop().await;
}

/// A lab with a site's real distributor and two sshd nodes (`node-metal`, rank metal;
/// `node-vm`), a machine whose address nobody listens at (`node-down`), one whose metadata keys
/// clash as variables (`node-clash`), and the command `whoami` (a default and a `metal` variant
/// that print the machine's name and its metadata's bytes).
struct RunLab {
    lab: Lab,
    distributor: Distributor,
    _nodes: (Sshd, Sshd),
    private_key: String,
    metal_ip: Ipv4Addr,
    vm_ip: Ipv4Addr,
    work: tempfile::TempDir,
    marker: std::path::PathBuf,
    tricky: String,
}

impl RunLab {
    async fn stop(self) {
        drop(self._nodes);
        self.distributor.stop().await;
        self.lab.stop().await;
    }
}

async fn run_lab(backend: Backend) -> RunLab {
    let lab = lab(backend).await;
    let site = "site-actions";
    let distributor = Distributor::start(&lab._nats.url(), site, lab.bus()).await;
    let (private_key, public_key) = keypair();
    let net = node_net();
    let (metal_ip, vm_ip, down_ip) = (node_ip(net, 1), node_ip(net, 2), node_ip(net, 3));
    let metal = Sshd::start(SocketAddr::from((metal_ip, 22)), &public_key);
    let vm = Sshd::start(SocketAddr::from((vm_ip, 22)), &public_key);
    // Nothing listens at `down_ip`: connections are refused.

    let work = tempfile::tempdir().expect("tempdir");
    let marker = work.path().join("pwned");
    let tricky = format!(
        "'; touch {m}; echo '\n$(touch {m}) `touch {m}` \"$HOME\" \\ done",
        m = marker.display()
    );
    lab.new_machine(
        json!({"mac": "52:54:00:00:20:01", "name": "node-metal", "artifactId": site,
        "ip": metal_ip.to_string(), "ranks": ["gpu", "metal"],
        "metadata": {"tricky": tricky, "rack.row": "r1"}}),
    )
    .await;
    lab.new_machine(
        json!({"mac": "52:54:00:00:20:02", "name": "node-vm", "artifactId": site,
        "ip": vm_ip.to_string(), "ranks": ["vm"], "metadata": {"tricky": tricky}}),
    )
    .await;
    lab.new_machine(
        json!({"mac": "52:54:00:00:20:03", "name": "node-down", "artifactId": site,
        "ip": down_ip.to_string(), "ranks": ["metal"]}),
    )
    .await;
    lab.new_machine(
        json!({"mac": "52:54:00:00:20:04", "name": "node-clash", "artifactId": site,
        "ip": vm_ip.to_string(), "metadata": {"a-b": "1", "a_b": "2"}}),
    )
    .await;

    // Each machine's variant, and its metadata as bytes (hex), from the script's own output.
    let report = "printf 'meta=%s\\n' \"$(printf '%s' \"$BF_META_TRICKY\" | od -An -tx1 | tr -d ' \\n')\"; echo \"row=$BF_META_RACK_ROW addr=$BF_NODE_ADDRESS\"";
    lab.admin(
        Method::POST,
        "/api/commands",
        Some(json!({"name": "whoami", "script": format!("echo \"default on $BF_NODE_NAME\"; {report}"),
            "variants": [{"rank": "metal", "script": format!("echo \"metal on $BF_NODE_NAME\"; {report}; echo to-stderr >&2")}]})),
    )
    .await
    .ok(201);
    RunLab {
        lab,
        distributor,
        _nodes: (metal, vm),
        private_key,
        metal_ip,
        vm_ip,
        work,
        marker,
        tricky,
    }
}

/// Each machine runs its variant with its metadata intact (and nothing of it executed); a
/// machine that is down gets its own error while the others finish; the run is recorded.
async fn runs_pick_variants_keep_metadata_intact_and_survive_a_down_machine(backend: Backend) {
    let mut r = run_lab(backend).await;
    let (lab, private_key) = (&r.lab, &r.private_key);
    let (metal_ip, vm_ip, marker, tricky) = (r.metal_ip, r.vm_ip, &r.marker, &r.tricky);
    let mut stream = lab
        .run(
            "whoami",
            json!({"machines": ["node-metal", "node-vm", "node-down"], "privateKey": private_key,
                "concurrency": 2, "timeoutSeconds": 30}),
        )
        .await;
    let first = stream.next().await.expect("the first line");
    let run_id = first["run"].as_str().expect("run id").to_owned();
    assert_eq!(
        first["machines"],
        json!(["node-metal", "node-vm", "node-down"])
    );
    let lines = stream.rest().await;
    let of = |machine: &str| -> Vec<&Value> {
        lines.iter().filter(|l| l["machine"] == machine).collect()
    };
    let out = |machine: &str, stream: &str| -> Vec<String> {
        of(machine)
            .iter()
            .filter(|l| l["stream"] == stream)
            .map(|l| l["line"].as_str().expect("line").to_owned())
            .collect()
    };
    let meta = format!("meta={}", hex(tricky.as_bytes()));
    assert_eq!(
        out("node-metal", "stdout"),
        vec![
            "metal on node-metal".to_owned(),
            meta.clone(),
            format!("row=r1 addr={metal_ip}")
        ],
        "{lines:#?}"
    );
    assert_eq!(out("node-metal", "stderr"), vec!["to-stderr".to_owned()]);
    assert_eq!(
        out("node-vm", "stdout"),
        vec![
            "default on node-vm".to_owned(),
            meta.clone(),
            format!("row= addr={vm_ip}")
        ],
        "{lines:#?}"
    );
    assert!(!marker.exists(), "the metadata ran a command");
    for machine in ["node-metal", "node-vm"] {
        let end = of(machine).last().copied().cloned().expect("an end line");
        assert_eq!(end["exitCode"], 0, "{lines:#?}");
    }
    let down = of("node-down");
    assert_eq!(down.len(), 1, "{lines:#?}");
    let error = down[0]["error"].as_str().expect("its own error");
    assert!(error.contains("cannot reach"), "{error}");
    assert_eq!(
        lines.last().expect("last"),
        &json!({"run": run_id, "done": true})
    );

    // The record: who, when, which variant, exit code or error, output tail.
    let run = lab
        .admin(Method::GET, &format!("/api/runs/{run_id}"), None)
        .await
        .ok(200);
    assert_eq!(
        (&run["command"], &run["actor"], &run["status"]),
        (&json!("whoami"), &json!("test"), &json!("done"))
    );
    assert!(
        run["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{run}"
    );
    assert!(run["finishedAt"].is_string(), "{run}");
    let machines = run["machines"].as_array().expect("machines");
    let summary: Vec<(&str, &str, &Value, bool)> = machines
        .iter()
        .map(|m| {
            (
                m["machine"].as_str().expect("machine"),
                m["variant"].as_str().expect("variant"),
                &m["exitCode"],
                m["error"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("node-metal", "metal", &json!(0), false),
            ("node-vm", "default", &json!(0), false),
            ("node-down", "metal", &Value::Null, true),
        ]
    );
    assert_eq!(
        machines[0]["output"],
        format!("metal on node-metal\n{meta}\nrow=r1 addr={metal_ip}\nto-stderr\n")
    );
    let listed = lab
        .admin(Method::GET, "/api/runs?search=whoami", None)
        .await
        .ok(200);
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["rows"][0]["id"], run_id.as_str());

    // The host keys seen at that first run are pinned: a node that now shows another key is
    // refused (before the private key is offered) until the operator accepts the new one.
    r._nodes.1.regenerate_host_key();
    let again = json!({"machines": ["node-vm"], "privateKey": private_key});
    let mut stream = lab.run("whoami", again.clone()).await;
    let lines = stream.rest().await;
    let error = lines[1]["error"].as_str().unwrap_or_default();
    assert!(error.contains("different host key"), "{lines:#?}");
    let mut accepting = again;
    accepting["acceptNewHostKeys"] = json!(true);
    let lines = lab.run("whoami", accepting.clone()).await.rest().await;
    assert_eq!(lines[lines.len() - 2]["exitCode"], 0, "{lines:#?}");
    accepting["acceptNewHostKeys"] = json!(false);
    let lines = lab.run("whoami", accepting).await.rest().await;
    assert_eq!(lines[lines.len() - 2]["exitCode"], 0, "{lines:#?}");

    r.stop().await;
}

/// The first line reaches the client while the command still runs.
async fn run_output_streams_before_the_command_ends(backend: Backend) {
    let r = run_lab(backend).await;
    let (lab, private_key) = (&r.lab, &r.private_key);
    let work = &r.work;
    // Streamed: the first line arrives while the script still waits for a file the test makes
    // only after reading that line.
    let release = work.path().join("release");
    lab.admin(
        Method::POST,
        "/api/commands",
        Some(json!({"name": "waiter", "script": format!(
            "echo first; i=0; while [ ! -e {r} ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; [ -e {r} ] && echo second",
            r = release.display())})),
    )
    .await
    .ok(201);
    let mut stream = lab
        .run(
            "waiter",
            json!({"machines": ["node-vm"], "privateKey": private_key}),
        )
        .await;
    stream.next().await.expect("the run line");
    let line = stream.next().await.expect("a line");
    assert_eq!(
        (&line["machine"], &line["line"]),
        (&json!("node-vm"), &json!("first")),
        "{line}"
    );
    assert!(!release.exists());
    std::fs::write(&release, b"go").expect("release");
    let rest = stream.rest().await;
    assert_eq!(rest[0]["line"], "second", "{rest:#?}");
    assert_eq!(rest[1]["exitCode"], 0, "{rest:#?}");
    assert_eq!(rest[2]["done"], true, "{rest:#?}");

    r.stop().await;
}

/// A bad run is refused before anything runs, naming the field; a user may not run.
async fn runs_refuse_bad_input_and_power_commands_report_per_machine(backend: Backend) {
    let r = run_lab(backend).await;
    let (lab, private_key) = (&r.lab, &r.private_key);
    // Refused before anything runs, naming the field.
    let refused = |body: Value| async move {
        lab.admin(Method::POST, "/api/commands/whoami/runs", Some(body))
            .await
    };
    refused(json!({"machines": ["nosuch"], "privateKey": private_key}))
        .await
        .expect_error(400, Some("machines"));
    let clash = refused(json!({"machines": ["node-clash"], "privateKey": private_key}))
        .await
        .expect_error(400, Some("machines"));
    assert!(clash.contains("BF_META_A_B"), "{clash}");
    refused(json!({"machines": ["node-vm"]}))
        .await
        .expect_error(400, Some("privateKey"));
    refused(json!({"machines": ["node-vm"], "privateKey": private_key, "concurrency": 65}))
        .await
        .expect_error(400, Some("concurrency"));
    refused(json!({"groups": ["nosuch"], "privateKey": private_key}))
        .await
        .expect_error(400, Some("groups"));
    lab.admin(
        Method::POST,
        "/api/commands/nosuch/runs",
        Some(json!({"machines": ["node-vm"], "privateKey": private_key})),
    )
    .await
    .expect_error(404, None);

    let as_user = lab
        .call(
            Method::POST,
            "/api/commands/whoami/runs",
            Some(lab.user.as_str()),
            Some(json!({"machines": ["node-vm"], "privateKey": private_key})),
        )
        .await;
    assert_eq!(as_user.status, 403, "{}", as_user.text);

    // A power command asks the machines service's power operation for each machine; whatever
    // that answers (no power operation yet, or no BMC), the machine gets its own line.
    // (On a group: its machines are the run's.)
    lab.admin(
        Method::POST,
        "/api/groups",
        Some(json!({"name": "vms", "match": {"ranks": ["vm"]}})),
    )
    .await
    .ok(201);
    let mut stream = lab.run("power-status", json!({"groups": ["vms"]})).await;
    stream.next().await.expect("the run line");
    let rest = stream.rest().await;
    assert_eq!(rest.len(), 2, "{rest:#?}");
    assert_eq!(rest[0]["machine"], "node-vm");
    assert!(
        rest[0]["powerState"].is_string() || rest[0]["error"].is_string(),
        "{rest:#?}"
    );
    assert_eq!(rest[1]["done"], true);
    // With an Idempotency-Key, a repeat of a streamed run does not run it again.
    let keyed = || {
        lab.http
            .post(format!("{}/api/commands/power-status/runs", lab.base))
            .bearer_auth(&lab.admin)
            .header("Idempotency-Key", "run-once")
            .json(&json!({"groups": ["vms"]}))
            .send()
    };
    let first = keyed().await.expect("request");
    assert_eq!(first.status(), 200);
    assert!(first
        .text()
        .await
        .expect("stream")
        .contains("\"done\":true"));
    let again = keyed().await.expect("request");
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["error"]["field"], "Idempotency-Key", "{body}");

    r.stop().await;
}
