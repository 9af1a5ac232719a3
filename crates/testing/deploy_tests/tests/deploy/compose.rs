//! deploy/compose.yaml on the Docker engine, as an operator runs it: `scripts/compose-init`,
//! `up -d`, the API through the gateway with tokens, an iPXE binary and an ISO built by the
//! per-kind builder containers, then `down -v` leaving no container, network or volume.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{self, inspect, release_binary, stdout, wait_for};

/// `docker compose` where the plugin exists, else Debian's `docker-compose`.
fn compose_program() -> Vec<String> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

/// One compose project of a test, brought down with its volumes on drop.
pub(crate) struct Stack {
    pub(crate) project: String,
    dir: tempfile::TempDir,
    tag: String,
    program: Vec<String>,
    /// The compose file, from the workspace root.
    file: &'static str,
}

impl Stack {
    /// The project `<prefix><pid>` of `file`, its secrets written into a temporary directory
    /// by `scripts/compose-init` with `init` as further arguments.
    pub(crate) fn init(
        prefix: &str,
        file: &'static str,
        images: &support::Images,
        init: &[&str],
    ) -> Stack {
        let stack = Stack {
            project: format!("{prefix}{}", std::process::id()),
            dir: tempfile::tempdir().expect("tempdir"),
            tag: images.tag.clone(),
            program: compose_program(),
            file,
        };
        support::run(
            support::command("scripts/compose-init")
                .args(["--dir"])
                .arg(stack.dir.path())
                .args(init),
        );
        stack
    }

    pub(crate) fn compose(&self) -> Command {
        let mut cmd = support::command(&self.program[0]);
        cmd.args(&self.program[1..])
            .args(["-p", &self.project, "-f", self.file, "--env-file"])
            .arg(self.dir.path().join(".env"))
            .env("BOOTFLEET_TAG", &self.tag)
            .env(
                "BOOTFLEET_NATS_USERS",
                self.dir.path().join("nats-users.conf"),
            )
            .env(
                "BOOTFLEET_DISTRIBUTOR_ENV",
                self.dir.path().join("distributor.env"),
            )
            // Published on loopback only, on ports the kernel picks.
            .env("BOOTFLEET_HTTP_PUBLISH", "127.0.0.1:")
            .env("BOOTFLEET_GRPC_PUBLISH", "127.0.0.1:")
            .env("BOOTFLEET_HTTP_PUBLISH_1", "127.0.0.1:")
            .env("BOOTFLEET_HTTP_PUBLISH_2", "127.0.0.1:")
            .env("BOOTFLEET_NATS_PUBLISH", "127.0.0.1:");
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        support::run(self.compose().args(args))
    }

    /// The ids of the project's running containers.
    pub(crate) fn containers(&self) -> Vec<String> {
        stdout(&self.run(&["ps", "-q"]))
            .lines()
            .map(String::from)
            .collect()
    }

    pub(crate) fn container(&self, service: &str) -> String {
        stdout(&self.run(&["ps", "-q", service])).trim().to_owned()
    }

    pub(crate) fn logs(&self, service: &str) -> String {
        self.compose()
            .args(["logs", "--no-color", service])
            .output()
            .map(|o| stdout(&o))
            .unwrap_or_default()
    }

    pub(crate) fn env_value(&self, key: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(".env")).expect(".env");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} not in .env"))
            .to_owned()
    }

    /// `down -v`, which must leave no container, network or volume of the project behind.
    ///
    /// Docker releases a removed container's network endpoint a little after the container is
    /// gone, so on a busy machine compose's network removal can race it ("has active
    /// endpoints"); `down` is then run again, at most three times in all.
    pub(crate) fn down(&self) {
        for attempt in 1..=3 {
            let out = self
                .compose()
                .args(["down", "-v"])
                .output()
                .expect("docker-compose down");
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                break;
            }
            assert!(
                attempt < 3 && stderr.contains("has active endpoints"),
                "down -v failed (attempt {attempt}): {stderr}"
            );
            eprintln!("down -v: a network still had endpoints; again in 2 s");
            std::thread::sleep(Duration::from_secs(2));
        }
        assert_eq!(
            self.leftovers(),
            Vec::<String>::new(),
            "left behind by down -v"
        );
    }

    /// Objects of this project that Docker still has.
    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = Vec::new();
        for what in [
            &["ps", "-a", "-q", "--filter"][..],
            &["network", "ls", "-q", "--filter"][..],
            &["volume", "ls", "-q", "--filter"][..],
        ] {
            let out = support::run(Command::new("docker").args(what).arg(&label));
            left.extend(stdout(&out).lines().map(|l| format!("{} {l}", what[0])));
        }
        left
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(out) = self
                .compose()
                .args(["logs", "--no-color", "--tail", "60"])
                .output()
            {
                eprintln!("compose logs:\n{}", stdout(&out));
            }
        }
        let _ = self
            .compose()
            .args(["down", "-v", "--remove-orphans"])
            .output();
    }
}

/// A token minted with the stack's secret by the same binary the images hold.
pub(crate) fn token(secret: &str, data: &Path, args: &[&str]) -> String {
    let out = support::run(
        Command::new(release_binary("bootfleet"))
            .arg("token")
            .args(args)
            .env("BOOTFLEET_JWT_SECRET", secret)
            .env("BOOTFLEET_DATA_DIR", data),
    );
    stdout(&out).trim().to_owned()
}

/// Waits (polling every half second, at most `within`) until the gateway at `base` says every
/// service is ready.
pub(crate) async fn wait_ready(http: &reqwest::Client, base: &str, within: Duration) {
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            last = r.json().await.unwrap_or(Value::Null);
            if last["ready"] == true {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "{base} not ready within {within:?}: {last}\n{}",
        not_ready_diagnostics(&last)
    );
}

/// The containers' states and the last log lines of those whose service is not ready, so that
/// a start-up failure on a CI machine can be explained afterwards.
fn not_ready_diagnostics(readiness: &Value) -> String {
    let docker = support::docker_output;
    let states = docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    let not_ready: Vec<&str> = readiness["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["ready"] != true)
        .filter_map(|s| s["service"].as_str())
        .collect();
    let mut out = format!("containers:\n{states}");
    for name in states.lines().filter_map(|l| l.split_whitespace().next()) {
        let wanted = not_ready
            .iter()
            .any(|s| name.contains(&format!("_{s}")) || name.contains("builders"));
        if wanted {
            out += &format!("--- {name}:\n{}", docker(&["logs", "--tail", "15", name]));
        }
    }
    out
}

struct Api {
    http: reqwest::Client,
    base: String,
    admin: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status();
        let row: Value = r.json().await.expect("json");
        assert!(status.is_success(), "POST {path} {body}: {status} {row}");
        row
    }

    async fn get(&self, path: &str) -> Value {
        self.get_ok(path).await.json().await.expect("json")
    }

    /// Creates an artifact and polls it until it is done (failed is a test failure).
    async fn build(&self, kind: &str, body: Value) -> Value {
        let row = self.post(&format!("/api/{kind}"), body).await;
        let id = row["id"].as_str().expect("id").to_owned();
        for _ in 0..600 {
            let row = self.get(&format!("/api/{kind}/{id}")).await;
            match row["status"].as_str() {
                Some("done") => return row,
                Some("failed") => panic!("{kind} build failed: {row}"),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        panic!("{kind} {id} not done within 5 minutes");
    }

    async fn download(&self, url: &str) -> Vec<u8> {
        self.get_ok(url)
            .await
            .bytes()
            .await
            .expect("bytes")
            .to_vec()
    }

    /// `GET path` as the admin, which must answer 200.
    async fn get_ok(&self, path: &str) -> reqwest::Response {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200, "GET {path}");
        r
    }
}

#[test]
fn compose_stack_serves_scripts_and_builds_through_per_kind_builders() {
    let Some((_machine, images)) = support::container_test() else {
        return;
    };
    let stack = Stack::init(
        "bfdeploy",
        "deploy/compose.yaml",
        images,
        &[
            "--distributor",
            "site-ctr",
            "--nats-url",
            "nats://127.0.0.1:4222",
        ],
    );
    let distributor_env =
        std::fs::read_to_string(stack.dir.path().join("distributor.env")).expect("distributor.env");
    assert!(
        distributor_env.contains("NATS_USER=distributor-site-ctr"),
        "{distributor_env}"
    );
    assert!(
        distributor_env.contains("NATS_INBOX_PREFIX=_INBOX_site-ctr"),
        "{distributor_env}"
    );

    // The distributor: only in the `site` profile, on the host's network, two capabilities.
    let config = support::yaml_documents(&stdout(&stack.run(&["config"])));
    let distributor = &config[0]["services"]["distributor"];
    assert_eq!(distributor["profiles"], json!(["site"]), "{distributor}");
    assert_eq!(distributor["network_mode"], "host");
    assert_eq!(distributor["cap_drop"], json!(["ALL"]));
    assert_eq!(
        distributor["cap_add"],
        json!(["NET_BIND_SERVICE", "NET_RAW"])
    );
    // The gateway publishes its gRPC API (the CLI's --url) beside REST.
    let gateway = &config[0]["services"]["gateway"];
    assert!(
        gateway["ports"]
            .as_array()
            // Compose v2 writes `{target: 8081, ...}`, docker-compose v1 `127.0.0.1::8081/tcp`.
            .is_some_and(|p| p.iter().any(
                |p| p["target"] == 8081 || p.as_str().is_some_and(|s| s.ends_with(":8081/tcp"))
            )),
        "{gateway}"
    );

    let started = std::time::Instant::now();
    stack.run(&["up", "-d"]);
    let postgres = stack.container("postgres");
    assert_eq!(inspect(&postgres, "{{.State.Health.Status}}"), "healthy");
    // Off by default: `up` started no distributor (this test must not touch the host's LAN).
    let distributor = support::run(Command::new("docker").args([
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={}", stack.project),
        "--filter",
        "label=com.docker.compose.service=distributor",
    ]));
    assert_eq!(
        stdout(&distributor).trim(),
        "",
        "a distributor container was started"
    );
    let port = stdout(&stack.run(&["port", "gateway", "8080"]));
    let base = format!("http://{}", port.trim());

    let data = tempfile::tempdir().expect("tempdir");
    let secret = stack.env_value("BOOTFLEET_JWT_SECRET");
    let admin = token(&secret, data.path(), &["--role", "admin"]);
    let node = token(
        &secret,
        data.path(),
        &["--role", "node", "--site", "site-ctr"],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let api = Api {
        http: reqwest::Client::new(),
        base: base.clone(),
        admin,
    };
    rt.block_on(async {
        // Every service, builders included, answers through the gateway.
        wait_ready(&api.http, &base, Duration::from_secs(120)).await;
        eprintln!("compose stack ready in {:?}", started.elapsed());

        // A script: created, listed, fetched raw by a node token in the query string.
        let text = "#!ipxe\necho bootfleet-compose-ok\nshell\n";
        let row = api.post("/api/mainscripts", json!({"text": text})).await;
        let id = row["id"].as_str().expect("id");
        let list = api.get("/api/mainscripts?search=bootfleet-compose-ok").await;
        assert_eq!(list["total"], 1, "{list}");
        assert_eq!(list["rows"][0]["id"], id);
        let raw = api
            .http
            .get(format!("{base}/api/mainscripts/{id}?token={node}"))
            .send()
            .await
            .expect("raw");
        assert_eq!(raw.status(), 200);
        assert!(raw.headers()["content-type"].to_str().expect("ct").starts_with("text/plain"));
        assert_eq!(raw.text().await.expect("text"), text);

        // An iPXE binary and an ISO, each kind built by its own builder container.
        let script = "#!ipxe\ndhcp\nchain http://192.0.2.1/boot\n";
        let efi = api
            .build("ipxes", json!({"script": script, "platform": "bin-x86_64-efi", "driver": "ipxe", "extension": "efi"}))
            .await;
        let url = efi["url"].as_str().expect("url");
        let bytes = api.download(url).await;
        assert_eq!(efi["sha256"], hex(&Sha256::digest(&bytes)), "{efi}");
        assert_eq!(&bytes[..2], b"MZ", "an EFI executable");
        let lkrn = api
            .build("ipxes", json!({"script": script, "platform": "bin", "driver": "ipxe", "extension": "lkrn"}))
            .await;
        let grub = |arch: &str, fragment: &str| json!({"label": "BOOTFLEET", "platform": "efi", "architecture": arch, "extension": "efi", "fragment": fragment});
        let grub_img = api.build("grubs", grub("x64", "img")).await;
        let grub_x64 = api.build("grubs", grub("x64", "efi")).await;
        let grub_x86 = api.build("grubs", grub("x86", "efi")).await;
        let mut syslinux = Vec::new();
        for fragment in ["ldlinux.c32", "isolinux.bin", "isohdpfx.bin"] {
            syslinux.push(api.build("syslinuxs", json!({"fragment": fragment})).await);
        }
        let url_of = |row: &Value| row["url"].as_str().expect("url").to_owned();
        let iso = api
            .build(
                "isos",
                json!({
                    "label": "BOOTFLEET",
                    "ipxeUefiUrl": url_of(&efi),
                    "ipxeBiosUrl": url_of(&lkrn),
                    "grubImgUrl": url_of(&grub_img),
                    "grubEfiX64Url": url_of(&grub_x64),
                    "grubEfiX86Url": url_of(&grub_x86),
                    "ldLinuxUrl": url_of(&syslinux[0]),
                    "isolinuxBinUrl": url_of(&syslinux[1]),
                    "isohdpfxBinUrl": url_of(&syslinux[2]),
                }),
            )
            .await;
        let image = api.download(&url_of(&iso)).await;
        assert_eq!(&image[0x8001..0x8006], b"CD001", "an ISO 9660 image");
        for (service, row) in [
            ("ipxes", &efi),
            ("grubs", &grub_img),
            ("syslinuxs", &syslinux[0]),
            ("isos", &iso),
        ] {
            let id = row["id"].as_str().expect("id");
            let logs = stack.logs(service);
            assert!(
                logs.lines().any(|l| l.contains(id) && l.contains("build done")),
                "the {service} container did not build {id}:\n{logs}"
            );
        }
    });

    // Every container's own health check passes (services ping over NATS, the gateway /healthz).
    let ids = stack.containers();
    assert_eq!(
        ids.len(),
        15,
        "nats, postgres, 8 services, 4 builders, the gateway"
    );
    let healthy = wait_for(Duration::from_secs(120), || {
        ids.iter().all(|id| support::is_healthy(id))
    });
    let states: Vec<String> = ids
        .iter()
        .map(|id| inspect(id, "{{.Name}} {{.State.Health.Status}} {{.Config.User}}"))
        .collect();
    assert!(healthy, "{states:?}");
    for state in &states {
        let user = state.rsplit(' ').next().unwrap_or_default();
        assert!(!user.is_empty() && user != "0" && user != "root", "{state}");
    }

    stack.down();
    eprintln!("compose test done in {:?}", started.elapsed());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
