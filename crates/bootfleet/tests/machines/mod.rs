//! The `machines` service through the gateway's REST API and, for boot decisions and boot
//! events, over the real bus: a real `nats-server`, and SQLite or a real PostgreSQL.

//! Tests of this module run inside the `system` test binary and share its `Lab`.

use std::time::Duration;

use bootfleet_api::proto::boot_decision::Action;
use bootfleet_api::{proto, subjects, ErrorCode};
use bootfleet_bus::TraceParent;
use bootfleet_testkit::Backend;
use prost::Message;
use reqwest::Method;
use serde_json::{json, Value};

use super::{lab, Lab, Resp, NODE_API};

impl Lab {
    async fn raw(&self, path: &str, content_type: &str, body: &str) -> Resp {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("request");
        Resp {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.expect("body"),
        }
    }

    async fn machine(&self, body: Value) -> Value {
        self.admin(Method::POST, "/api/machines", Some(body))
            .await
            .ok(201)
    }

    async fn decide(&self, site: &str, mac: &str, firmware: &str) -> proto::BootDecision {
        self.bus()
            .request(
                &TraceParent::new_root(),
                &subjects::machines_boot(site),
                &proto::BootDecisionRequest {
                    artifact_id: site.into(),
                    mac: mac.into(),
                    firmware: firmware.into(),
                    client_ip: String::new(),
                },
            )
            .await
            .expect("decision")
    }

    /// A machine's token, as its rendered script carries it.
    async fn token_of(&self, id: &str) -> String {
        let script = self
            .admin(Method::GET, &format!("/api/machines/{id}/script"), None)
            .await;
        assert_eq!(script.status, 200, "{}", script.text);
        let start = script.text.find("token=").expect("token in script") + 6;
        script.text[start..]
            .split(|c: char| c.is_whitespace())
            .next()
            .expect("token")
            .to_owned()
    }
}

bootfleet_testkit::on_both_backends!(
    machines_crud_paging_validation_and_localnode_link,
    profiles_templates_and_machine_tokens,
    states_history_inventory_and_install_callback,
    boot_decisions_for_each_state_and_site_policy,
    import_machines_txt_and_yaml_line_by_line,
    timeline_from_boot_events_in_order,
    bmc_is_validated_write_only_kept_and_cleared,
);

async fn machines_crud_paging_validation_and_localnode_link(backend: Backend) {
    let lab = lab(backend).await;
    let row = lab
        .machine(
            json!({"mac": "52-54-00-AA-00-01", "name": "Node1", "artifactId": "site-1",
                        "ranks": ["0"], "groups": ["compute"], "metadata": {"rack": "r1"}}),
        )
        .await;
    assert_eq!(row["mac"], "52:54:00:aa:00:01");
    assert_eq!(row["name"], "node1");
    assert_eq!(row["state"], "ready");
    assert_eq!(row["metadata"]["rack"], "r1");
    let id = row["id"].as_str().expect("id").to_owned();

    // Bad input names its field, and nothing is written.
    for (body, field) in [
        (json!({"mac": "zz", "artifactId": "site-1"}), "mac"),
        (json!({"mac": "5254.00aa.0002"}), "artifactId"),
        (json!({"artifactId": "site-1"}), "mac"),
        (
            json!({"mac": "52:54:00:aa:00:02", "artifactId": "a b"}),
            "artifactId",
        ),
        (
            json!({"mac": "52:54:00:aa:00:02", "artifactId": "s", "metadata": {"a b": "x"}}),
            "metadata",
        ),
        (
            json!({"mac": "52:54:00:aa:00:02", "artifactId": "s", "ranks": ["a;b"]}),
            "ranks",
        ),
        (
            json!({"mac": "52:54:00:aa:00:02", "artifactId": "s", "profile": "nope"}),
            "profile",
        ),
        (
            json!({"mac": "52:54:00:aa:00:02", "artifactId": "s", "firmware": "efi"}),
            "firmware",
        ),
        (
            json!({"mac": "52:54:00:aa:00:02", "artifactId": "s", "name": "a.b"}),
            "name",
        ),
        (
            json!({"mac": "52:54:00:aa:00:02", "artifactId": "s", "colour": "red"}),
            "colour",
        ),
        (
            json!({"mac": "52:54:00:aa:00:02", "artifactId": "s", "state": "gone"}),
            "state",
        ),
    ] {
        lab.admin(Method::POST, "/api/machines", Some(body))
            .await
            .expect_error(400, Some(field));
    }
    // The same MAC in another spelling, or the same name at the same site: 409.
    lab.admin(
        Method::POST,
        "/api/machines",
        Some(json!({"mac": "5254.00AA.0001", "artifactId": "site-2"})),
    )
    .await
    .expect_error(409, Some("mac"));
    lab.admin(
        Method::POST,
        "/api/machines",
        Some(json!({"mac": "52:54:00:aa:00:02", "artifactId": "site-1", "name": "node1"})),
    )
    .await
    .expect_error(409, Some("name"));
    // The same name at another site is another machine.
    lab.machine(json!({"mac": "52:54:00:aa:00:02", "artifactId": "site-2", "name": "node1"}))
        .await;
    for i in 3..=12 {
        lab.machine(json!({"mac": format!("52:54:00:aa:00:{i:02x}"), "artifactId": "site-3"}))
            .await;
    }
    let page = lab
        .admin(
            Method::GET,
            "/api/machines?page=3&pageSize=5&sort=mac",
            None,
        )
        .await
        .ok(200);
    assert_eq!(page["total"], 12);
    assert_eq!(page["totalPages"], 3);
    assert_eq!(page["rows"].as_array().expect("rows").len(), 2);
    assert_eq!(page["rows"][1]["mac"], "52:54:00:aa:00:0c");
    let found = lab
        .call(
            Method::GET,
            "/api/machines?search=site-2",
            Some(&lab.user),
            None,
        )
        .await
        .ok(200);
    assert_eq!(found["total"], 1);
    lab.admin(Method::GET, "/api/machines?pageSize=500", None)
        .await
        .expect_error(400, Some("pageSize"));
    lab.admin(Method::GET, "/api/machines?sort=colour", None)
        .await
        .expect_error(400, None);
    // A user reads but does not write; a node token does neither.
    lab.call(
        Method::POST,
        "/api/machines",
        Some(&lab.user),
        Some(json!({"mac": "52:54:00:aa:00:99", "artifactId": "s"})),
    )
    .await
    .expect_error(403, None);
    lab.call(Method::GET, "/api/machines", Some(&lab.node), None)
        .await
        .expect_error(403, None);

    // Update: given fields change, the others stay.
    let updated = lab
        .admin(
            Method::PUT,
            &format!("/api/machines/{id}"),
            Some(json!({"metadata": {"rack": "r2", "row": "7"}, "ip": "10.0.0.5"})),
        )
        .await
        .ok(200);
    assert_eq!(updated["metadata"]["row"], "7");
    assert_eq!(updated["name"], "node1");
    assert_eq!(updated["ip"], "10.0.0.5");
    lab.admin(
        Method::PUT,
        &format!("/api/machines/{id}"),
        Some(json!({"ip": "10.0.0.500"})),
    )
    .await
    .expect_error(400, Some("ip"));

    // A localnode with the machine's MAC shows the machine's id.
    let node = lab
        .call(
            Method::POST,
            "/api/localnodes?ip=10.0.0.50&artifactId=site-1&mac=52:54:00:AA:00:01&pingable=true",
            Some(&lab.node),
            None,
        )
        .await
        .ok(201);
    let node_id = node["id"].as_str().expect("node id");
    let shown = lab
        .admin(Method::GET, &format!("/api/localnodes/{node_id}"), None)
        .await
        .ok(200);
    assert_eq!(shown["machineId"], id.as_str());
    // One with the machine's address at its site, and no MAC, too.
    lab.call(
        Method::POST,
        "/api/localnodes?ip=10.0.0.5&artifactId=site-1",
        Some(&lab.node),
        None,
    )
    .await
    .ok(201);
    let nodes = lab
        .admin(Method::GET, "/api/localnodes?search=site-1", None)
        .await
        .ok(200);
    for n in nodes["rows"].as_array().expect("rows") {
        assert_eq!(n["machineId"], id.as_str(), "{n}");
    }

    let deleted = lab
        .admin(Method::DELETE, &format!("/api/machines/{id}"), None)
        .await
        .ok(200);
    assert_eq!(deleted["id"], id.as_str());
    lab.admin(Method::GET, &format!("/api/machines/{id}"), None)
        .await
        .expect_error(404, None);
    lab.admin(Method::GET, "/api/machines/not-a-uuid", None)
        .await
        .expect_error(400, Some("id"));
    lab.stop().await;
}

const KICKSTART: &str = "network --hostname={{ machine.name }}\n%post\necho '{{ machine.metadata.note }}' $(id) `uname` ; rm -rf / && {{ machine.mac }}\ncurl -X POST {{ api }}/api/machines/{{ machine.id }}/events?token={{ token }}\n%end\n";

async fn install_profile(lab: &Lab) {
    lab.admin(
        Method::POST,
        "/api/profiles",
        Some(json!({
            "name": "centos",
            "ipxeTemplate": "#!ipxe\nkernel {{ api }}/vmlinuz inst.ks={{ files }}/kickstart?token={{ token }}\nboot\n",
            "rescueTemplate": "#!ipxe\necho rescue {{ machine.name }}\nshell\n",
            "templates": {"kickstart": KICKSTART, "user-data": "host: {{ machine.metadata.missing }}\n"}
        })),
    )
    .await
    .ok(201);
}

async fn profiles_templates_and_machine_tokens(backend: Backend) {
    let lab = lab(backend).await;
    // Unknown variables and bad names are refused when the profile is stored.
    let message = lab
        .admin(
            Method::POST,
            "/api/profiles",
            Some(json!({"name": "bad", "ipxeTemplate": "#!ipxe\nchain {{ server }}/x\n"})),
        )
        .await
        .expect_error(400, Some("ipxeTemplate"));
    assert!(message.contains("unknown variable server"), "{message}");
    let message = lab
        .admin(
            Method::POST,
            "/api/profiles",
            Some(json!({"name": "bad", "ipxeTemplate": "#!ipxe\n",
                        "templates": {"kickstart": "{{ machine.colour }}"}})),
        )
        .await
        .expect_error(400, Some("templates.kickstart"));
    assert!(message.contains("machine.colour"), "{message}");
    lab.admin(
        Method::POST,
        "/api/profiles",
        Some(json!({"name": "bad", "ipxeTemplate": "#!ipxe\n", "templates": {"Kick Start": "x"}})),
    )
    .await
    .expect_error(400, Some("templates"));
    lab.admin(
        Method::POST,
        "/api/profiles",
        Some(json!({"name": "bad", "ipxeTemplate": "{% if %}"})),
    )
    .await
    .expect_error(400, Some("ipxeTemplate"));
    install_profile(&lab).await;
    lab.admin(
        Method::POST,
        "/api/profiles",
        Some(json!({"name": "centos", "ipxeTemplate": "#!ipxe\n"})),
    )
    .await
    .expect_error(409, Some("name"));
    // PUT creates or replaces by name.
    lab.admin(
        Method::PUT,
        "/api/profiles/debian",
        Some(json!({"ipxeTemplate": "#!ipxe\nexit\n"})),
    )
    .await
    .ok(201);
    lab.admin(
        Method::PUT,
        "/api/profiles/debian",
        Some(json!({"ipxeTemplate": "#!ipxe\nexit 1\n"})),
    )
    .await
    .ok(200);
    let listed = lab.admin(Method::GET, "/api/profiles", None).await.ok(200);
    assert_eq!(listed["total"], 2);

    let note = "a'b\"c;|&$(reboot)`id` > /etc/passwd";
    let a = lab
        .machine(
            json!({"mac": "52:54:00:bb:00:01", "name": "a", "artifactId": "site-1",
                        "profile": "centos", "state": "install", "metadata": {"note": note}}),
        )
        .await;
    let b = lab
        .machine(
            json!({"mac": "52:54:00:bb:00:02", "name": "b", "artifactId": "site-1",
                        "profile": "centos", "state": "install"}),
        )
        .await;
    let (a_id, b_id) = (a["id"].as_str().expect("id"), b["id"].as_str().expect("id"));
    // The profile in use cannot go.
    lab.admin(Method::DELETE, "/api/profiles/centos", None)
        .await
        .expect_error(409, None);
    let a_token = lab.token_of(a_id).await;
    let b_token = lab.token_of(b_id).await;
    assert!(a_token.starts_with("bfm1."), "{a_token}");

    // A's token reads A's kickstart, rendered, shell metacharacters verbatim.
    let kickstart = format!("/api/machines/{a_id}/files/kickstart");
    let by_query = lab
        .call(
            Method::GET,
            &format!("{kickstart}?token={a_token}"),
            None,
            None,
        )
        .await;
    assert_eq!(by_query.status, 200, "{}", by_query.text);
    assert!(
        by_query.text.contains(&format!(
            "echo '{note}' $(id) `uname` ; rm -rf / && 52:54:00:bb:00:01"
        )),
        "{}",
        by_query.text
    );
    assert!(by_query.text.contains("network --hostname=a\n"));
    assert!(by_query.text.contains(&format!(
        "{NODE_API}/api/machines/{a_id}/events?token=bfm1."
    )));
    let by_header = lab
        .call(Method::GET, &kickstart, Some(&a_token), None)
        .await;
    assert_eq!(by_header.status, 200);
    // B's token does not; nor garbage, nor none, nor a node token.
    lab.call(
        Method::GET,
        &format!("{kickstart}?token={b_token}"),
        None,
        None,
    )
    .await
    .expect_error(403, None);
    lab.call(Method::GET, &kickstart, Some(&b_token), None)
        .await
        .expect_error(403, None);
    lab.call(
        Method::GET,
        &format!("{kickstart}?token=bfm1.garbage"),
        None,
        None,
    )
    .await
    .expect_error(401, None);
    lab.call(Method::GET, &format!("{kickstart}?token=abc"), None, None)
        .await
        .expect_error(401, None);
    lab.call(Method::GET, &kickstart, None, None)
        .await
        .expect_error(401, None);
    lab.call(Method::GET, &kickstart, Some(&lab.node), None)
        .await
        .expect_error(403, None);
    // A template with a variable this machine lacks: a clear error naming it.
    let message = lab
        .call(
            Method::GET,
            &format!("/api/machines/{a_id}/files/user-data?token={a_token}"),
            None,
            None,
        )
        .await
        .expect_error(409, None);
    assert!(message.contains("machine.metadata.missing"), "{message}");
    lab.call(
        Method::GET,
        &format!("/api/machines/{a_id}/files/preseed?token={a_token}"),
        None,
        None,
    )
    .await
    .expect_error(404, None);
    // The rendered iPXE script, for the machine itself.
    let script = lab
        .call(
            Method::GET,
            &format!("/api/machines/{a_id}/script?token={a_token}"),
            None,
            None,
        )
        .await;
    assert_eq!(script.status, 200);
    assert!(
        script.text.starts_with(&format!(
        "#!ipxe\nkernel {NODE_API}/vmlinuz inst.ks={NODE_API}/api/machines/{a_id}/files/kickstart?token=bfm1."
    )),
        "{}",
        script.text
    );
    lab.stop().await;
}

async fn states_history_inventory_and_install_callback(backend: Backend) {
    let lab = lab(backend).await;
    install_profile(&lab).await;
    let m = lab
        .machine(json!({"mac": "52:54:00:cc:00:01", "artifactId": "site-1"}))
        .await;
    let id = m["id"].as_str().expect("id");
    let state = format!("/api/machines/{id}/state");
    lab.admin(Method::PUT, &state, Some(json!({"state": "install"})))
        .await
        .expect_error(400, Some("state"));
    lab.admin(Method::PUT, &state, Some(json!({"state": "sideways"})))
        .await
        .expect_error(400, Some("state"));
    lab.admin(
        Method::PUT,
        &format!("/api/machines/{id}"),
        Some(json!({"profile": "centos"})),
    )
    .await
    .ok(200);
    let moved = lab
        .admin(
            Method::PUT,
            &state,
            Some(json!({"state": "inventory", "reason": "re-audit"})),
        )
        .await
        .ok(200);
    assert_eq!(moved["state"], "inventory");

    let token = {
        // An inventory machine boots the discovery profile, so its script is the site default:
        // take its token from an install script, then go back.
        lab.admin(Method::PUT, &state, Some(json!({"state": "install"})))
            .await
            .ok(200);
        let t = lab.token_of(id).await;
        lab.admin(
            Method::PUT,
            &state,
            Some(json!({"state": "inventory", "reason": "re-audit"})),
        )
        .await
        .ok(200);
        t
    };
    let inventory = json!({"firmware": "bios", "cpu": {"model": "QEMU Virtual CPU", "count": 2},
        "memoryBytes": 536870912u64,
        "disks": [{"name": "vda", "sizeBytes": 2147483648u64, "model": "", "serial": "s1"}],
        "nics": [{"mac": "52:54:00:CC:00:01", "driver": "e1000", "speedMbps": 1000, "link": true}]});
    let path = format!("/api/machines/{id}/inventory?token={token}");
    let mut bad = inventory.clone();
    bad["firmware"] = json!("efi");
    lab.call(Method::POST, &path, None, Some(bad))
        .await
        .expect_error(400, Some("firmware"));
    let mut bad = inventory.clone();
    bad["cpu"]["count"] = json!(0);
    lab.call(Method::POST, &path, None, Some(bad))
        .await
        .expect_error(400, Some("cpu.count"));
    let mut bad = inventory.clone();
    bad["gpu"] = json!(1);
    lab.call(Method::POST, &path, None, Some(bad))
        .await
        .expect_error(400, Some("gpu"));
    // A user may not report for a machine.
    lab.call(
        Method::POST,
        &format!("/api/machines/{id}/inventory"),
        Some(&lab.user),
        Some(inventory.clone()),
    )
    .await
    .expect_error(403, None);
    let ready = lab
        .call(Method::POST, &path, None, Some(inventory.clone()))
        .await
        .ok(200);
    assert_eq!(ready["state"], "ready");
    assert_eq!(ready["inventory"]["cpu"]["count"], 2);
    assert_eq!(ready["inventory"]["disks"][0]["sizeBytes"], 2147483648u64);
    assert_eq!(ready["inventory"]["nics"][0]["mac"], "52:54:00:cc:00:01");
    assert_eq!(ready["firmware"], "bios");

    // Reinstall, then the installer calls back with the machine's token.
    lab.admin(Method::POST, &format!("/api/machines/{id}/reinstall"), None)
        .await
        .ok(200);
    let events = format!("/api/machines/{id}/events");
    lab.call(
        Method::POST,
        &events,
        Some(&token),
        Some(json!({"type": "finished"})),
    )
    .await
    .expect_error(400, Some("type"));
    lab.call(
        Method::POST,
        &events,
        None,
        Some(json!({"type": "installed"})),
    )
    .await
    .expect_error(401, None);
    let installed = lab
        .call(
            Method::POST,
            &events,
            Some(&token),
            Some(json!({"type": "installed"})),
        )
        .await
        .ok(200);
    assert_eq!(installed["state"], "installed");
    // Its script is now the local-disk one.
    let script = lab
        .call(
            Method::GET,
            &format!("/api/machines/{id}/script?token={token}"),
            None,
            None,
        )
        .await;
    assert_eq!(
        script.text,
        "#!ipxe\necho bootfleet: booting from the local disk\nsanboot --no-describe --drive 0x80 || exit\n"
    );

    let history = lab
        .admin(Method::GET, &format!("/api/machines/{id}/history"), None)
        .await
        .ok(200);
    let changes: Vec<(String, String, String, String)> = history["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["from"].as_str().unwrap_or("-").to_owned(),
                c["to"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
                c["by"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let machine = format!("machine:{id}");
    let expected: Vec<(&str, &str, &str, &str)> = vec![
        ("-", "ready", "created", "test"),
        ("ready", "inventory", "re-audit", "test"),
        ("inventory", "install", "", "test"),
        ("install", "inventory", "re-audit", "test"),
        ("inventory", "ready", "inventory reported", &machine),
        ("ready", "install", "reinstall", "test"),
        (
            "install",
            "installed",
            "install-complete callback",
            &machine,
        ),
    ];
    let expected: Vec<(String, String, String, String)> = expected
        .into_iter()
        .map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into()))
        .collect();
    assert_eq!(changes, expected);
    assert!(history["changes"][0]["at"]
        .as_str()
        .expect("at")
        .ends_with('Z'));
    lab.stop().await;
}

async fn boot_decisions_for_each_state_and_site_policy(backend: Backend) {
    let lab = lab(backend).await;
    install_profile(&lab).await;
    lab.admin(
        Method::POST,
        "/api/profiles",
        Some(json!({"name": "discovery",
                    "ipxeTemplate": "#!ipxe\nkernel {{ api }}/discover inventory={{ api }}/api/machines/{{ machine.id }}/inventory?token={{ token }} fw={{ machine.firmware }}\nboot\n"})),
    )
    .await
    .ok(201);

    // A site never set serves unknown MACs its default, as before machines existed.
    let policy = lab
        .admin(Method::GET, "/api/machines/sites/site-1", None)
        .await
        .ok(200);
    assert_eq!(policy["unknownMacs"], "serve");
    assert!(policy["updatedAt"].is_null());
    let d = lab.decide("site-1", "52:54:00:dd:00:99", "bios").await;
    assert_eq!(d.action(), Action::SiteDefault);
    assert_eq!(d.machine_id, "");
    assert_eq!(d.max_age_secs, 10);

    let m = lab
        .machine(json!({"mac": "52:54:00:dd:00:01", "name": "n1", "artifactId": "site-1", "profile": "centos"}))
        .await;
    let id = m["id"].as_str().expect("id").to_owned();
    let state = format!("/api/machines/{id}/state");
    let set = |s: &'static str| {
        let state = state.clone();
        let lab = &lab;
        async move {
            lab.admin(Method::PUT, &state, Some(json!({"state": s})))
                .await
                .ok(200);
        }
    };
    // ready: the site's default; the firmware the boot reports is recorded.
    let d = lab.decide("site-1", "52-54-00-DD-00-01", "uefi").await;
    assert_eq!(
        (d.action(), d.machine_id.as_str()),
        (Action::SiteDefault, id.as_str())
    );
    let row = lab
        .admin(Method::GET, &format!("/api/machines/{id}"), None)
        .await
        .ok(200);
    assert_eq!(row["firmware"], "uefi");
    set("install").await;
    let d = lab.decide("site-1", "52:54:00:dd:00:01", "uefi").await;
    assert_eq!(d.action(), Action::Script);
    assert!(d.ipxe_script.starts_with(&format!(
        "#!ipxe\nkernel {NODE_API}/vmlinuz inst.ks={NODE_API}/api/machines/{id}/files/kickstart?token=bfm1.{id}."
    )), "{}", d.ipxe_script);
    set("installed").await;
    assert_eq!(
        lab.decide("site-1", "52:54:00:dd:00:01", "uefi")
            .await
            .action(),
        Action::LocalDisk
    );
    set("rescue").await;
    let d = lab.decide("site-1", "52:54:00:dd:00:01", "uefi").await;
    assert_eq!(
        (d.action(), d.ipxe_script.as_str()),
        (Action::Script, "#!ipxe\necho rescue n1\nshell\n")
    );
    // Without a discovery profile, discovered and inventory machines get the site's default.
    set("inventory").await;
    assert_eq!(
        lab.decide("site-1", "52:54:00:dd:00:01", "uefi")
            .await
            .action(),
        Action::SiteDefault
    );

    // ignore: unknown MACs get nothing; known machines still get their answer.
    lab.admin(
        Method::PUT,
        "/api/machines/sites/site-1",
        Some(json!({"unknownMacs": "ignore"})),
    )
    .await
    .ok(200);
    assert_eq!(
        lab.decide("site-1", "52:54:00:dd:00:99", "bios")
            .await
            .action(),
        Action::Ignore
    );
    set("installed").await;
    assert_eq!(
        lab.decide("site-1", "52:54:00:dd:00:01", "uefi")
            .await
            .action(),
        Action::LocalDisk
    );

    // Policy input is checked.
    lab.admin(
        Method::PUT,
        "/api/machines/sites/site-1",
        Some(json!({"unknownMacs": "maybe"})),
    )
    .await
    .expect_error(400, Some("unknownMacs"));
    lab.admin(
        Method::PUT,
        "/api/machines/sites/site-1",
        Some(json!({"unknownMacs": "discover", "discoveryProfile": "nope"})),
    )
    .await
    .expect_error(400, Some("discoveryProfile"));
    lab.admin(
        Method::PUT,
        "/api/machines/sites/bad%20site",
        Some(json!({"unknownMacs": "serve"})),
    )
    .await
    .expect_error(400, Some("artifactId"));

    // discover: an unknown MAC becomes a discovered machine and boots the discovery profile.
    let set_policy = lab
        .admin(
            Method::PUT,
            "/api/machines/sites/site-1",
            Some(json!({"unknownMacs": "discover", "discoveryProfile": "discovery"})),
        )
        .await
        .ok(200);
    assert_eq!(set_policy["discoveryProfile"], "discovery");
    // A site's discovery profile cannot go; an unused profile can.
    lab.admin(Method::DELETE, "/api/profiles/discovery", None)
        .await
        .expect_error(409, None);
    lab.admin(
        Method::PUT,
        "/api/profiles/spare",
        Some(json!({"ipxeTemplate": "#!ipxe\n"})),
    )
    .await
    .ok(201);
    let gone = lab
        .admin(Method::DELETE, "/api/profiles/spare", None)
        .await
        .ok(200);
    assert_eq!(gone["name"], "spare");
    lab.admin(Method::GET, "/api/profiles/spare", None)
        .await
        .expect_error(404, None);
    let d = lab.decide("site-1", "52:54:00:dd:00:42", "uefi").await;
    assert_eq!(d.action(), Action::Script);
    assert!(!d.machine_id.is_empty());
    assert!(d.ipxe_script.contains(&format!(
        "{NODE_API}/api/machines/{}/inventory?token=bfm1.",
        d.machine_id
    )));
    assert!(d.ipxe_script.contains("fw=uefi"), "{}", d.ipxe_script);
    let found = lab
        .admin(
            Method::GET,
            &format!("/api/machines/{}", d.machine_id),
            None,
        )
        .await
        .ok(200);
    assert_eq!(found["state"], "discovered");
    assert_eq!(found["mac"], "52:54:00:dd:00:42");
    assert_eq!(found["artifactId"], "site-1");
    assert_eq!(found["firmware"], "uefi");
    // Asked again (the distributor's cache ran out): the same machine, not a second one.
    let again = lab.decide("site-1", "52:54:00:dd:00:42", "uefi").await;
    assert_eq!(again.machine_id, d.machine_id);
    let discovered = lab
        .admin(
            Method::GET,
            "/api/machines?search=discovered&searchFields=state",
            None,
        )
        .await
        .ok(200);
    assert_eq!(discovered["total"], 1);

    // A request naming another site than its subject's is refused.
    let err = lab
        .bus()
        .request::<_, proto::BootDecision>(
            &TraceParent::new_root(),
            &subjects::machines_boot("site-1"),
            &proto::BootDecisionRequest {
                artifact_id: "site-2".into(),
                mac: "52:54:00:dd:00:01".into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("wrong site");
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    let err = lab
        .bus()
        .request::<_, proto::BootDecision>(
            &TraceParent::new_root(),
            &subjects::machines_boot("site-1"),
            &proto::BootDecisionRequest {
                artifact_id: "site-1".into(),
                mac: "nope".into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("bad mac");
    assert_eq!(
        (err.code, err.field.as_deref()),
        (ErrorCode::InvalidArgument, Some("mac"))
    );
    lab.stop().await;
}

async fn import_machines_txt_and_yaml_line_by_line(backend: Backend) {
    let lab = lab(backend).await;
    let txt = "# head node's list\n52:54:00:ee:00:01 10.0.0.1\n\n52-54-00-EE-00-02 10.0.0.2\nnot-a-mac 10.0.0.3\n52:54:00:ee:00:04 10.0.0.999\n52:54:00:ee:00:05\n52:54:00:ee:00:01 10.0.0.11\n";
    let report = lab
        .raw("/api/machines/import?artifactId=site-1", "text/plain", txt)
        .await
        .ok(200);
    assert_eq!(
        (
            report["created"].as_u64(),
            report["updated"].as_u64(),
            report["refused"].as_u64()
        ),
        (Some(2), Some(1), Some(3)),
        "{report}"
    );
    let lines: Vec<(u64, String)> = report["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap_or(0),
                l["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (2, "created"),
            (4, "created"),
            (5, "refused"),
            (6, "refused"),
            (7, "refused"),
            (8, "updated")
        ]
        .map(|(n, o)| (n, o.to_owned()))
    );
    let reason = |i: usize| {
        report["lines"][i]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(reason(2).starts_with("line 5: mac:"), "{}", reason(2));
    assert!(reason(3).starts_with("line 6: ip:"), "{}", reason(3));
    assert!(reason(4).starts_with("line 7:"), "{}", reason(4));
    let first = lab
        .admin(Method::GET, "/api/machines?search=52:54:00:ee:00:01", None)
        .await
        .ok(200);
    assert_eq!(first["rows"][0]["ip"], "10.0.0.11");
    assert_eq!(first["rows"][0]["state"], "ready");

    let yaml = "node1:\n  ranks: [0, compute]\n  ip: 10.0.1.1\n  mac: \"52:54:00:ee:01:01\"\n  rack: r1\n  slot: 4\nnode2:\n  mac: bad\n  ip: 10.0.1.2\nnode3:\n  mac: 52-54-00-ee-01-03\n  groups: gpu\n";
    let report = lab
        .raw(
            "/api/machines/import?artifactId=site-1",
            "application/yaml",
            yaml,
        )
        .await
        .ok(200);
    assert_eq!(
        (report["created"].as_u64(), report["refused"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    assert_eq!(report["lines"][1]["line"], 7);
    assert!(report["lines"][1]["reason"]
        .as_str()
        .expect("reason")
        .starts_with("line 7: mac:"));
    let id = report["lines"][0]["machineId"].as_str().expect("id");
    let node1 = lab
        .admin(Method::GET, &format!("/api/machines/{id}"), None)
        .await
        .ok(200);
    assert_eq!(node1["name"], "node1");
    assert_eq!(node1["ranks"], json!(["0", "compute"]));
    assert_eq!(node1["metadata"], json!({"rack": "r1", "slot": "4"}));
    assert_eq!(node1["ip"], "10.0.1.1");

    lab.raw(
        "/api/machines/import?artifactId=site-1",
        "application/json",
        "{}",
    )
    .await
    .expect_error(415, None);
    lab.raw("/api/machines/import", "text/plain", txt)
        .await
        .expect_error(400, Some("artifactId"));
    lab.raw(
        "/api/machines/import?artifactId=site-1",
        "application/yaml",
        "- a\n- b\n",
    )
    .await
    .expect_error(400, Some("body"));
    lab.stop().await;
}

async fn timeline_from_boot_events_in_order(backend: Backend) {
    let lab = lab(backend).await;
    install_profile(&lab).await;
    let now = bootfleet_store::now_ms();
    let publish = |mac: &str, kind: &str, at: i64, ipxe: bool| {
        let event = proto::BootEvent {
            artifact_id: "site-1".into(),
            kind: kind.into(),
            mac: mac.into(),
            arch: "bios".into(),
            file: if kind == "tftp_served" {
                "undionly.kpxe".into()
            } else {
                String::new()
            },
            bytes: if kind == "tftp_served" { 70_000 } else { 0 },
            duration_ms: if kind == "tftp_served" { 300 } else { 0 },
            peer: "10.0.0.9:2070".into(),
            at_ms: at,
            ipxe,
            detail: String::new(),
            count: 0,
        };
        let client = lab.bus().client().clone();
        let payload = event.encode_to_vec();
        async move {
            client
                .publish(subjects::boot_events("site-1"), payload.into())
                .await
                .expect("publish");
        }
    };
    // A MAC nobody knows yet boots once; its events wait under its MAC.
    publish("52:54:00:ff:00:01", "dhcp_answered", now - 20_000, false).await;
    publish("52:54:00:ff:00:01", "tftp_served", now - 19_700, false).await;
    publish("52:54:00:ff:00:01", "dhcp_answered", now - 19_000, true).await;
    lab.bus().sync().await.expect("sync");
    let m = lab
        .machine(json!({"mac": "52:54:00:ff:00:01", "artifactId": "site-1", "profile": "centos", "state": "install", "metadata": {"note": "n"}}))
        .await;
    let id = m["id"].as_str().expect("id").to_owned();
    // Its second boot: DHCP, the file, iPXE's DHCP, then the machine fetches its script and
    // kickstart and calls back.
    publish("52:54:00:ff:00:01", "dhcp_answered", now - 5_000, false).await;
    publish("52:54:00:ff:00:01", "tftp_served", now - 4_600, false).await;
    publish("52:54:00:ff:00:01", "dhcp_answered", now - 4_000, true).await;
    // Another MAC's events stay out of this timeline.
    publish("52:54:00:ff:00:02", "dhcp_answered", now - 4_500, false).await;
    let token = lab.token_of(&id).await;
    let kickstart = lab
        .call(
            Method::GET,
            &format!("/api/machines/{id}/files/kickstart?token={token}"),
            None,
            None,
        )
        .await;
    assert_eq!(kickstart.status, 200, "{}", kickstart.text);
    lab.call(
        Method::POST,
        &format!("/api/machines/{id}/events?token={token}"),
        None,
        Some(json!({"type": "installed"})),
    )
    .await
    .ok(200);

    let path = format!("/api/machines/{id}/timeline");
    let mut timeline = Value::Null;
    for _ in 0..50 {
        timeline = lab.admin(Method::GET, &path, None).await.ok(200);
        let boots = timeline["boots"].as_array().map(Vec::len).unwrap_or(0);
        if boots == 2 && timeline["boots"][0]["steps"].as_array().map(Vec::len) == Some(6) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kinds = |boot: &Value| -> Vec<String> {
        boot["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| s["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        timeline["boots"].as_array().map(Vec::len),
        Some(2),
        "{timeline}"
    );
    assert_eq!(
        kinds(&timeline["boots"][0]),
        [
            "dhcp_answered",
            "tftp_served",
            "dhcp_answered",
            "script_fetched",
            "template_fetched",
            "installed"
        ],
        "{timeline}"
    );
    assert_eq!(
        kinds(&timeline["boots"][1]),
        ["dhcp_answered", "tftp_served", "dhcp_answered"]
    );
    let steps = &timeline["boots"][0]["steps"];
    assert_eq!(steps[0]["sincePreviousMs"], 0);
    assert_eq!(steps[1]["sincePreviousMs"], 400);
    assert_eq!(steps[2]["sincePreviousMs"], 600);
    assert_eq!(steps[1]["detail"]["bytes"], "70000");
    assert_eq!(steps[1]["detail"]["file"], "undionly.kpxe");
    assert_eq!(steps[4]["detail"]["template"], "kickstart");
    assert_eq!(timeline["mac"], "52:54:00:ff:00:01");
    lab.stop().await;
}

async fn bmc_is_validated_write_only_kept_and_cleared(backend: Backend) {
    const PASSWORD: &str = "bmc-pw-5TxQ9";
    let lab = lab(backend).await;
    let site = "site-bmc";
    let create = |mac: &str, bmc: Value| json!({"mac": mac, "artifactId": site, "bmc": bmc});

    // Each bad field is named, and nothing is written.
    for (bmc, field) in [
        (
            json!({"protocol": "amt", "address": "10.0.0.5", "username": "a", "password": "p"}),
            "bmc.protocol",
        ),
        (
            json!({"protocol": "ipmi", "address": "10.0.0.5:x", "username": "a", "password": "p"}),
            "bmc.address",
        ),
        (
            json!({"protocol": "ipmi", "address": "a b", "username": "a", "password": "p"}),
            "bmc.address",
        ),
        (
            json!({"protocol": "redfish", "address": "http://10.0.0.5", "username": "a", "password": "p"}),
            "bmc.address",
        ),
        (
            json!({"protocol": "ipmi", "address": "10.0.0.5", "username": "", "password": "p"}),
            "bmc.username",
        ),
        (
            json!({"protocol": "ipmi", "address": "10.0.0.5", "username": "a", "password": "x".repeat(21)}),
            "bmc.password",
        ),
        (
            json!({"protocol": "ipmi", "address": "10.0.0.5", "username": "a"}),
            "bmc.password",
        ),
        (
            json!({"protocol": "ipmi", "address": "10.0.0.5", "username": "a", "password": "p", "insecure": true}),
            "bmc.insecure",
        ),
        (
            json!({"protocol": "redfish", "address": "https://10.0.0.5", "username": "a", "password": "p", "caCertificate": "nope"}),
            "bmc.caCertificate",
        ),
        (
            json!({"protocol": "redfish", "address": "https://10.0.0.5", "username": "a", "password": "p", "systemId": "../x"}),
            "bmc.systemId",
        ),
        (
            json!({"protocol": "ipmi", "address": "10.0.0.5", "username": "a", "password": "p", "colour": 1}),
            "bmc.colour",
        ),
    ] {
        let r = lab
            .admin(
                Method::POST,
                "/api/machines",
                Some(create("52:54:00:bb:00:09", bmc.clone())),
            )
            .await;
        r.expect_error(400, Some(field));
        assert!(!r.text.contains(PASSWORD));
    }
    assert_eq!(lab.total("/api/machines").await, 0);

    // Write-only: the row says a password is set, never what it is.
    let bmc = json!({"protocol": "ipmi", "address": "10.0.0.5:6230", "username": "admin", "password": PASSWORD});
    let row = lab.machine(create("52:54:00:bb:00:01", bmc)).await;
    let id = row["id"].as_str().expect("id").to_owned();
    assert_eq!(
        row["bmc"],
        json!({"protocol": "ipmi", "address": "10.0.0.5:6230", "username": "admin",
               "passwordSet": true, "caCertificate": null, "insecure": false, "systemId": null})
    );
    for path in [format!("/api/machines/{id}"), "/api/machines".to_owned()] {
        let r = lab.admin(Method::GET, &path, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(!r.text.contains(PASSWORD), "{}", r.text);
        assert!(r.text.contains("passwordSet"), "{}", r.text);
    }
    // Encrypted at rest: the SQLite files never hold the cleartext.
    if backend == Backend::Sqlite {
        for entry in std::fs::read_dir(lab._dir.path())
            .expect("data dir")
            .flatten()
        {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            assert!(
                !bytes
                    .windows(PASSWORD.len())
                    .any(|w| w == PASSWORD.as_bytes()),
                "{} holds the cleartext password",
                entry.path().display()
            );
        }
    }

    // A PUT without bmc.password keeps the stored one; a new BMC without any is refused.
    let path = format!("/api/machines/{id}");
    let put = |body: Value| lab.admin(Method::PUT, &path, Some(body));
    let row = put(
        json!({"bmc": {"protocol": "redfish", "address": "https://bmc-1.example:8443/",
                                "username": "root", "insecure": true}}),
    )
    .await
    .ok(200);
    assert_eq!(row["bmc"]["address"], "https://bmc-1.example:8443");
    assert_eq!(row["bmc"]["passwordSet"], true);
    assert_eq!(row["bmc"]["insecure"], true);
    // Left out entirely, the BMC stays as it is.
    let row = put(json!({"ranks": ["r1"]})).await.ok(200);
    assert_eq!(row["bmc"]["username"], "root");
    let other = lab
        .machine(json!({"mac": "52:54:00:bb:00:02", "artifactId": site}))
        .await;
    let other_id = other["id"].as_str().expect("id");
    assert_eq!(other["bmc"], Value::Null);
    lab.admin(
        Method::PUT,
        &format!("/api/machines/{other_id}"),
        Some(json!({"bmc": {"protocol": "ipmi", "address": "10.0.0.6", "username": "a"}})),
    )
    .await
    .expect_error(400, Some("bmc.password"));

    // Power needs a BMC: none is 400 naming bmc; a user may not; with no distributor of the
    // site online, 503 naming the machine.
    let status_of = |id: String, token: String| {
        let lab = &lab;
        async move {
            lab.call(
                Method::POST,
                &format!("/api/machines/{id}/power"),
                Some(&token),
                Some(json!({"action": "status"})),
            )
            .await
        }
    };
    let r = status_of(other_id.to_owned(), lab.admin.clone()).await;
    let message = r.expect_error(400, Some("bmc"));
    assert!(message.contains(other_id), "{message}");
    status_of(id.clone(), lab.user.clone())
        .await
        .expect_error(403, None);
    let r = lab
        .admin(
            Method::POST,
            &format!("/api/machines/{id}/power"),
            Some(json!({"action": "dance"})),
        )
        .await;
    r.expect_error(400, Some("action"));
    let r = status_of(id.clone(), lab.admin.clone()).await;
    let message = r.expect_error(503, None);
    assert!(message.contains(&id) && message.contains(site), "{message}");

    // `"bmc": null` clears it (password too).
    let row = put(json!({"bmc": null})).await.ok(200);
    assert_eq!(row["bmc"], Value::Null);
    let r = put(json!({"bmc": {"protocol": "ipmi", "address": "10.0.0.5", "username": "a"}})).await;
    r.expect_error(400, Some("bmc.password"));
    lab.stop().await;
}

/// The template fetches of one machine in its timeline, each with the fetches it stands for.
async fn template_fetches(lab: &Lab, id: &str) -> Vec<u64> {
    let timeline = lab
        .admin(Method::GET, &format!("/api/machines/{id}/timeline"), None)
        .await
        .ok(200);
    let mut fetches = Vec::new();
    for boot in timeline["boots"].as_array().expect("boots") {
        for step in boot["steps"].as_array().expect("steps") {
            if step["kind"] == "template_fetched" {
                assert_eq!(step["detail"]["template"], "kickstart", "{step}");
                let count = step["detail"]["fetches"]
                    .as_str()
                    .map_or(1, |n| n.parse().expect("fetches is a number"));
                fetches.push(count);
            }
        }
    }
    fetches
}

/// A machine that reads its rendered file again with its own token is answered from the
/// gateway's copy; the copy never outlives an acknowledged change of the machine, its profile
/// or its site's policy, nor its delete, and every fetch it answers still reaches the
/// machine's timeline (folded into counted events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_files_from_the_gateway_copy_never_outlive_an_acknowledged_change() {
    let lab = lab(Backend::Sqlite).await;
    install_profile(&lab).await;
    let m = lab
        .machine(
            json!({"mac": "52:54:00:dd:00:01", "name": "a", "artifactId": "site-1",
                        "profile": "centos", "state": "install", "metadata": {"note": "v0"}}),
        )
        .await;
    let id = m["id"].as_str().expect("id").to_owned();
    let other = lab
        .machine(
            json!({"mac": "52:54:00:dd:00:02", "name": "b", "artifactId": "site-1",
                        "profile": "centos", "state": "install"}),
        )
        .await;
    let other_token = lab.token_of(other["id"].as_str().expect("id")).await;
    let token = lab.token_of(&id).await;
    let path = format!("/api/machines/{id}/files/kickstart");
    async fn read_of(lab: &Lab, path: &str, token: &str) -> Resp {
        lab.call(Method::GET, path, Some(token), None).await
    }
    let read = |lab| read_of(lab, &path, &token);
    // The site's boot-event stream carries what distributors saw, not the gateway's reports.
    let mut site_events = lab
        .bus()
        .client()
        .subscribe(subjects::boot_events("site-1"))
        .await
        .expect("subscribe");
    let first = read(&lab).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(first.text.contains("echo 'v0'"), "{}", first.text);

    // The copy is what the gateway serves to this token: a change made in the database behind
    // the service's back (no change event) is not seen until the service announces one.
    lab.write_behind_the_services(
        "UPDATE machines SET metadata = '{\"note\":\"behind its back\"}' WHERE id = $1",
        &id,
    )
    .await;
    for _ in 0..5 {
        let cached = read(&lab).await;
        assert_eq!(cached.text, first.text, "cached");
        // Answered as the service answered, headers and all.
        assert_eq!(
            cached.headers.get("content-type"),
            first.headers.get("content-type")
        );
    }
    // Every fetch is in the timeline: the first as the service answered it, the five from the
    // copy reported by the gateway soon after, folded into events that count them.
    let mut fetches = Vec::new();
    for _ in 0..50 {
        fetches = template_fetches(&lab, &id).await;
        if fetches.iter().sum::<u64>() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fetches.iter().sum::<u64>(), 6, "{fetches:?}");
    {
        use futures_util::{FutureExt, StreamExt};
        while let Some(Some(message)) = site_events.next().now_or_never() {
            let event = proto::BootEvent::decode(message.payload).expect("a boot event");
            assert_ne!(event.kind, "template_fetched", "{event:?}");
        }
    }
    assert!(
        fetches.len() <= 3,
        "five fetches within a moment fold: {fetches:?}"
    );

    // Not to anyone else: an operator reads through the service (which writes that fetch into
    // the timeline itself), another machine's token is still refused there.
    let by_operator = lab.admin(Method::GET, &path, None).await;
    assert!(
        by_operator.text.contains("behind its back"),
        "{}",
        by_operator.text
    );
    read_of(&lab, &path, &other_token)
        .await
        .expect_error(403, None);

    // Readers keep filling the cache while writes change what the file renders to; after each
    // acknowledged write, the next read gives exactly that write's rendering.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, token, stop) = (
                lab.http.clone(),
                format!("{}{path}", lab.base),
                token.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut reads = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && reads < 5000 {
                    let r = super::plain::get(&http, &url, Some(&token)).await;
                    assert_eq!(r.status(), 200);
                    reads += 1;
                }
            })
        })
        .collect();
    for i in 1..=30 {
        let note = format!("v{i}");
        let expect = match i % 3 {
            // The machine, through the gateway's REST route.
            0 => {
                lab.admin(
                    Method::PUT,
                    &format!("/api/machines/{id}"),
                    Some(json!({"metadata": {"note": note}})),
                )
                .await
                .ok(200);
                format!("echo '{note}'")
            }
            // The machine, straight to the service on the gateway's own bus connection, as
            // gRPC or another route would reach it.
            1 => {
                let call = proto::MachinesCall {
                    id: id.clone(),
                    body: json!({"metadata": {"note": note}}).to_string(),
                    role: "admin".into(),
                    ..Default::default()
                };
                let reply: proto::MachinesReply = lab
                    .bus()
                    .request(
                        &TraceParent::new_root(),
                        &subjects::machines_op(bootfleet_api::machines::ops::UPDATE),
                        &call,
                    )
                    .await
                    .expect("update over the bus");
                assert!(reply.body.contains(&note), "{}", reply.body);
                format!("echo '{note}'")
            }
            // Its profile's template.
            _ => {
                let kickstart = KICKSTART.replace("%post", &format!("%post\n# {note}"));
                lab.admin(
                    Method::PUT,
                    "/api/profiles/centos",
                    Some(json!({
                        "ipxeTemplate": "#!ipxe\nexit\n",
                        "templates": {"kickstart": kickstart}
                    })),
                )
                .await
                .ok(200);
                format!("# {note}")
            }
        };
        let after = read(&lab).await;
        assert_eq!(after.status, 200, "{}", after.text);
        assert!(
            after.text.contains(&expect),
            "read after write {i}: {}",
            after.text
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("reader");
    }

    // A site policy's change drops every copy too (the database again behind the service's
    // back, then a policy write that changes nothing the file shows).
    assert_eq!(read(&lab).await.status, 200);
    lab.write_behind_the_services("UPDATE machines SET name = 'renamed' WHERE id = $1", &id)
        .await;
    lab.admin(
        Method::PUT,
        "/api/machines/sites/site-1",
        Some(json!({"unknownMacs": "serve"})),
    )
    .await
    .ok(200);
    let after_policy = read(&lab).await;
    assert!(
        after_policy.text.contains("network --hostname=renamed"),
        "{}",
        after_policy.text
    );

    // A delete is never answered from the copy either.
    lab.admin(Method::DELETE, &format!("/api/machines/{id}"), None)
        .await
        .ok(200);
    read(&lab).await.expect_error(404, None);
    lab.stop().await;
}
