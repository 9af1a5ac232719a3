//! The gRPC API and the CLI over it, against the whole system: the gateway (REST and gRPC) and
//! every service in this process, a real `nats-server`, SQLite; the CLI is the built binary.

use std::process::Output;

use bootfleet::{System, SystemConfig};
use bootfleet_api::proto;
use bootfleet_bus::BusConfig;
use bootfleet_gateway::auth::{self, Role, Secret, Verifier};
use bootfleet_gateway::grpc::pb;
use bootfleet_testkit::{database_url, Backend, NatsServer};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

mod nodes;

const SECRET: &[u8] = b"grpc-test-secret-0123456789abcdef-012345";
const ISOLINUX: &str = "/usr/lib/ISOLINUX/isolinux.bin";

struct Lab {
    _nats: NatsServer,
    _dir: tempfile::TempDir,
    system: System,
    grpc: String,
    admin: String,
    user: String,
}

/// An iPXE source tree whose build always fails with this message, so that the builders
/// compile iPXE here and an `ipxes` build fails in the builder (a failed build to follow).
fn failing_ipxe_tree() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bootfleet-grpc-test-{}", std::process::id()));
    let src = dir.join("ipxe-src/src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(
        src.join("Makefile"),
        "%:\n\t@echo 'no such compiler (boom)' >&2; exit 2\n",
    )
    .expect("makefile");
    dir.join("ipxe-src")
}

async fn lab() -> Lab {
    lab_with(|_| {}).await
}

/// A lab whose gateway's configuration is changed by `change` first (TLS for gRPC, limits).
async fn lab_with(change: impl FnOnce(&mut bootfleet_gateway::GatewayConfig)) -> Lab {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    // Read by the builders as they start; set once, before any lab starts.
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| std::env::set_var("BOOTFLEET_IPXE_SOURCE", failing_ipxe_tree()));
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = || Secret::new(SECRET.to_vec()).expect("long enough");
    let mut system = System::start(SystemConfig {
        nats: BusConfig::new(nats.url(), "grpc-test"),
        database_url: database_url(Backend::Sqlite, dir.path()),
        listen: "127.0.0.1:0".parse().expect("addr"),
        gateway: {
            let mut config = bootfleet::gateway_config(Verifier::new(secret()));
            change(&mut config);
            config
        },
    })
    .await
    .expect("start the system");
    system
        .serve_grpc("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve grpc");
    let token = |role| auth::mint(&secret(), role, "test", 1).expect("mint");
    Lab {
        grpc: system.grpc_url().expect("grpc url"),
        system,
        _nats: nats,
        _dir: dir,
        admin: token(Role::Admin),
        user: token(Role::User),
    }
}

impl Lab {
    async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }
}

/// `message` with the bearer `token` (or none).
fn authed<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut req = Request::new(message);
    if let Some(t) = token {
        let value: MetadataValue<_> = format!("Bearer {t}").parse().expect("ascii");
        req.metadata_mut().insert("authorization", value);
    }
    req
}

/// Asserts the status's code and, when given, the field it names (metadata and message).
fn expect_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    field: Option<&str>,
) {
    let status = result.expect_err("an error");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(!status.message().is_empty());
    if let Some(field) = field {
        let named = status
            .metadata()
            .get("bf-field")
            .and_then(|v| v.to_str().ok());
        assert_eq!(named, Some(field), "{status:?}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_crud_roles_errors_streams_and_reflection() {
    let lab = lab().await;
    let channel = lab.channel().await;
    let admin = Some(lab.admin.as_str());
    let mut scripts = pb::scripts_client::ScriptsClient::new(channel.clone());

    // Create, get, list with search, update, delete: what REST does, over gRPC.
    let created = scripts
        .create_script(authed(
            pb::CreateScriptRequest {
                kind: "mainscripts".into(),
                text: "#!ipxe\nchain http://boot/x".into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("create")
        .into_inner();
    let script_ref = |id: &str| pb::ScriptRef {
        kind: "mainscripts".into(),
        id: id.into(),
    };
    let got = scripts
        .get_script(authed(script_ref(&created.id), Some(&lab.user)))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.text, "#!ipxe\nchain http://boot/x");
    let page = scripts
        .list_scripts(authed(
            pb::ListScriptsRequest {
                kind: "mainscripts".into(),
                list: Some(pb::ListOptions {
                    search: "chain".into(),
                    page_size: 5,
                    ..Default::default()
                }),
            },
            admin,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.rows.len(), 1);
    let info = page.page.expect("page info");
    assert_eq!(
        (info.total, info.page, info.page_size, info.total_pages),
        (1, 1, 5, 1)
    );
    let updated = scripts
        .update_script(authed(
            pb::UpdateScriptRequest {
                kind: "mainscripts".into(),
                id: created.id.clone(),
                text: "#!ipxe\nshell".into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.text, "#!ipxe\nshell");
    // The read before the update left a copy in the gateway; the acknowledged update replaced it.
    let got = scripts
        .get_script(authed(script_ref(&created.id), Some(&lab.user)))
        .await
        .expect("get after the update")
        .into_inner();
    assert_eq!(got.text, "#!ipxe\nshell");
    // The same kind over REST sees the row gRPC made.
    let rest = reqwest::Client::new()
        .get(format!(
            "{}/api/mainscripts/{}",
            lab.system.base_url(),
            created.id
        ))
        .bearer_auth(&lab.admin)
        .send()
        .await
        .expect("rest get");
    assert_eq!(rest.text().await.expect("body"), "#!ipxe\nshell");

    // A script marked for a site: a node token bound to another site may not read it, its own
    // site's may, and an update that does not name sites keeps them.
    let marked = scripts
        .create_script(authed(
            pb::CreateScriptRequest {
                kind: "mainscripts".into(),
                text: "#!ipxe\necho site-b".into(),
                sites: vec!["site-b".into()],
            },
            admin,
        ))
        .await
        .expect("create a marked script")
        .into_inner();
    assert_eq!(marked.sites, ["site-b"]);
    let node_of = |site: &str| {
        let secret = Secret::new(SECRET.to_vec()).expect("long enough");
        auth::mint_for_site(&secret, Role::Node, "rack", 1, Some(site)).expect("mint")
    };
    expect_status(
        scripts
            .get_script(authed(script_ref(&marked.id), Some(&node_of("site-a"))))
            .await,
        Code::PermissionDenied,
        None,
    );
    let kept = scripts
        .update_script(authed(
            pb::UpdateScriptRequest {
                kind: "mainscripts".into(),
                id: marked.id.clone(),
                text: "#!ipxe\necho still site-b".into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("update without sites")
        .into_inner();
    assert_eq!(kept.sites, ["site-b"]);
    let got = scripts
        .get_script(authed(script_ref(&marked.id), Some(&node_of("site-b"))))
        .await
        .expect("its own site reads it")
        .into_inner();
    assert_eq!(got.text, "#!ipxe\necho still site-b");
    scripts
        .get_script(authed(script_ref(&created.id), Some(&node_of("site-a"))))
        .await
        .expect("an unmarked script is every site's");

    // Roles: no token, a forged one, a user writing.
    let create = |text: &str| pb::CreateScriptRequest {
        kind: "mainscripts".into(),
        text: text.into(),
        ..Default::default()
    };
    expect_status(
        scripts.create_script(authed(create("#!ipxe"), None)).await,
        Code::Unauthenticated,
        None,
    );
    expect_status(
        scripts
            .create_script(authed(create("#!ipxe"), Some("not.a.token")))
            .await,
        Code::Unauthenticated,
        None,
    );
    expect_status(
        scripts
            .create_script(authed(create("#!ipxe"), Some(&lab.user)))
            .await,
        Code::PermissionDenied,
        None,
    );

    // Bad input names its field; nothing is written.
    expect_status(
        scripts.create_script(authed(create(""), admin)).await,
        Code::InvalidArgument,
        Some("text"),
    );
    expect_status(
        scripts
            .create_script(authed(
                pb::CreateScriptRequest {
                    kind: "nope".into(),
                    text: "#!ipxe".into(),
                    ..Default::default()
                },
                admin,
            ))
            .await,
        Code::InvalidArgument,
        Some("kind"),
    );
    expect_status(
        scripts
            .list_scripts(authed(
                pb::ListScriptsRequest {
                    kind: "mainscripts".into(),
                    list: Some(pb::ListOptions {
                        page_size: 500,
                        ..Default::default()
                    }),
                },
                admin,
            ))
            .await,
        Code::InvalidArgument,
        Some("pageSize"),
    );
    expect_status(
        scripts
            .get_script(authed(script_ref("../etc"), admin))
            .await,
        Code::InvalidArgument,
        Some("id"),
    );

    // Delete answers with the row; it is gone after.
    let deleted = scripts
        .delete_script(authed(script_ref(&created.id), admin))
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.id, created.id);
    expect_status(
        scripts
            .get_script(authed(script_ref(&created.id), admin))
            .await,
        Code::NotFound,
        None,
    );

    // SSH keys: a generated pair registered for a site; a bad site is refused by name.
    let mut keys = pb::ssh_keys_client::SshKeysClient::new(channel.clone());
    let pair = keys
        .generate_ssh_key(authed(
            proto::GenerateSshKey {
                algorithm: "ed25519".into(),
            },
            admin,
        ))
        .await
        .expect("generate")
        .into_inner();
    let key = keys
        .create_ssh_key(authed(
            pb::SshKeyInput {
                text: pair.public_key.clone(),
                artifact_id: "site-1".into(),
            },
            admin,
        ))
        .await
        .expect("register key")
        .into_inner();
    assert_eq!(key.fingerprint, pair.fingerprint);
    expect_status(
        keys.create_ssh_key(authed(
            pb::SshKeyInput {
                text: pair.public_key.clone(),
                artifact_id: "site 1; reboot".into(),
            },
            admin,
        ))
        .await,
        Code::InvalidArgument,
        Some("artifactId"),
    );
    // The same key twice for one site is a conflict, as on REST.
    expect_status(
        keys.create_ssh_key(authed(
            pb::SshKeyInput {
                text: pair.public_key,
                artifact_id: "site-1".into(),
            },
            admin,
        ))
        .await,
        Code::Aborted,
        None,
    );
    let listed = keys
        .list_ssh_keys(authed(pb::ListOptions::default(), admin))
        .await
        .expect("list keys")
        .into_inner();
    assert_eq!(listed.page.expect("page").total, 1);

    // A build followed to its end, then its file downloaded with the digest the API reports.
    let mut artifacts = pb::artifacts_client::ArtifactsClient::new(channel.clone());
    expect_status(
        artifacts
            .create_artifact(authed(
                pb::CreateArtifactRequest {
                    kind: "syslinuxs".into(),
                    inputs_json: "[]".into(),
                },
                admin,
            ))
            .await,
        Code::InvalidArgument,
        Some("inputs_json"),
    );
    expect_status(
        artifacts
            .create_artifact(authed(
                pb::CreateArtifactRequest {
                    kind: "syslinuxs".into(),
                    inputs_json: r#"{"fragment": "../../../etc/shadow"}"#.into(),
                },
                admin,
            ))
            .await,
        Code::InvalidArgument,
        Some("fragment"),
    );
    let build = artifacts
        .create_artifact(authed(
            pb::CreateArtifactRequest {
                kind: "syslinuxs".into(),
                inputs_json: r#"{"fragment": "isolinux.bin"}"#.into(),
            },
            admin,
        ))
        .await
        .expect("create build")
        .into_inner();
    let reference = proto::ArtifactRef {
        kind: "syslinuxs".into(),
        id: build.id.clone(),
    };
    let rows: Vec<proto::Artifact> = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        artifacts
            .watch_artifact(authed(reference.clone(), Some(&lab.user)))
            .await
            .expect("watch")
            .into_inner()
            .map(|r| r.expect("row"))
            .collect(),
    )
    .await
    .expect("the build ends");
    let last = rows.last().expect("rows");
    assert_eq!(last.status, "done", "{rows:?}");
    let original = std::fs::read(ISOLINUX).expect("isolinux package");
    let mut chunks = artifacts
        .download_artifact(authed(
            pb::DownloadArtifactRequest {
                kind: "syslinuxs".into(),
                id: build.id.clone(),
                file: "isolinux.bin".into(),
            },
            admin,
        ))
        .await
        .expect("download")
        .into_inner();
    let mut meta = None;
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.expect("chunk");
        if chunk.file.is_some() {
            meta = chunk.file;
        }
        bytes.extend_from_slice(&chunk.data);
    }
    let meta = meta.expect("file description");
    assert_eq!(bytes, original);
    assert_eq!(meta.sha256, sha256_hex(&original));
    assert_eq!(meta.size, original.len() as u64);
    expect_status(
        artifacts
            .download_artifact(authed(
                pb::DownloadArtifactRequest {
                    kind: "syslinuxs".into(),
                    id: build.id.clone(),
                    file: "ldlinux.c32".into(),
                },
                admin,
            ))
            .await,
        Code::NotFound,
        None,
    );
    expect_status(
        artifacts.watch_artifact(authed(reference, None)).await,
        Code::Unauthenticated,
        None,
    );

    // A distributor's boot events, streamed as its site publishes them.
    let bus = lab.system.bus.clone();
    let distributor: proto::Distributor = bus
        .request(
            &bootfleet_bus::TraceParent::new_root(),
            &bootfleet_api::subjects::distributor_heartbeat("site-grpc"),
            &proto::DistributorHeartbeat {
                artifact_id: "site-grpc".into(),
                ..Default::default()
            },
        )
        .await
        .expect("heartbeat answered");
    let mut distributors = pb::distributors_client::DistributorsClient::new(channel.clone());
    let id = |id: &str| proto::IdRequest { id: id.into() };
    expect_status(
        distributors
            .watch_boot_events(authed(id(&distributor.id), None))
            .await,
        Code::Unauthenticated,
        None,
    );
    let mut events = distributors
        .watch_boot_events(authed(id(&distributor.id), Some(&lab.user)))
        .await
        .expect("watch events")
        .into_inner();
    let event = proto::BootEvent {
        artifact_id: "site-grpc".into(),
        kind: "dhcp_answered".into(),
        mac: "52:54:00:12:34:56".into(),
        ..Default::default()
    };
    bus.client()
        .publish(
            bootfleet_api::subjects::boot_events("site-grpc"),
            prost::Message::encode_to_vec(&event).into(),
        )
        .await
        .expect("publish");
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("an event");
    assert_eq!(got, event);
    drop(events);

    // Reflection lists every service of the API.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.next().await.expect("an answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in bootfleet_gateway::grpc::SERVICES {
        assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
    }
    lab.system.stop().await;
}

/// The `bootfleet` binary as a client of `lab`, with a config directory of its own.
struct Cli<'a> {
    lab: &'a Lab,
    config: tempfile::TempDir,
}

impl Cli<'_> {
    /// Runs `bootfleet args...` with the URL and `token` in the environment (none if `None`).
    async fn run_as(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootfleet"));
        command
            .args(args)
            .env("XDG_CONFIG_HOME", self.config.path())
            .env("BOOTFLEET_GRPC_URL", &self.lab.grpc)
            .env_remove("BOOTFLEET_TOKEN")
            .env_remove("BOOTFLEET_GRPC_CA")
            .env_remove("BOOTFLEET_LOG");
        if let Some(t) = token {
            command.env("BOOTFLEET_TOKEN", t);
        }
        tokio::time::timeout(std::time::Duration::from_secs(180), command.output())
            .await
            .expect("the cli ends")
            .expect("run the cli")
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_as(Some(&self.lab.admin), args).await
    }

    /// `private_key` in a file of the CLI's config directory, for `--private-key`.
    fn key_file(&self, private_key: &str) -> std::path::PathBuf {
        let path = self.config.path().join("id_ed25519");
        std::fs::write(&path, private_key).expect("write key");
        path
    }

    /// Runs, asserts exit 0, and parses stdout as JSON.
    async fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }
}

#[path = "support/cli_output.rs"]
mod cli_output;
use cli_output::{expect_exit, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_scripts_keys_a_followed_build_a_checked_download_and_exit_codes() {
    let lab = lab().await;
    let cli = Cli {
        lab: &lab,
        config: tempfile::tempdir().expect("tempdir"),
    };

    // Scripts: create, get as YAML, list as a table, update, delete.
    let script = cli
        .json(&[
            "mainscripts",
            "create",
            "--text",
            "#!ipxe\nshell",
            "-o",
            "json",
        ])
        .await;
    let id = script["id"].as_str().expect("id").to_owned();
    assert_eq!(script["text"], "#!ipxe\nshell");
    let yaml = cli
        .run(&["mainscripts", "get", &id, "--output", "yaml"])
        .await;
    assert_eq!(yaml.status.code(), Some(0), "{}", text(&yaml));
    assert!(String::from_utf8_lossy(&yaml.stdout).contains(&format!("id: {id}")));
    let table = cli.run(&["mainscripts", "list", "--search", "shell"]).await;
    let table_text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table_text.starts_with("ID"), "{table_text}");
    assert!(
        table_text.contains(&id) && table_text.contains("(1 in all)"),
        "{table_text}"
    );
    let kickstart_file = cli.config.path().join("ks.cfg");
    std::fs::write(&kickstart_file, "text\nreboot\n").expect("write");
    let ks = cli
        .json(&[
            "kickstarts",
            "create",
            "--file",
            kickstart_file.to_str().expect("utf-8"),
            "-o",
            "json",
        ])
        .await;
    assert_eq!(ks["text"], "text\nreboot\n");
    let updated = cli
        .json(&[
            "mainscripts",
            "update",
            &id,
            "--text",
            "#!ipxe\nexit",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(updated["text"], "#!ipxe\nexit");

    // Keys: a generated pair, its public half registered for a site.
    let pair = cli.json(&["sshkeys", "generate", "-o", "json"]).await;
    let public = pair["publicKey"].as_str().expect("public key").to_owned();
    let key = cli
        .json(&[
            "sshkeys", "create", "--site", "site-1", "--text", &public, "-o", "json",
        ])
        .await;
    assert_eq!(key["artifactId"], "site-1");
    let keys = cli.json(&["sshkeys", "list", "-o", "json"]).await;
    assert_eq!(keys["total"], 1);
    // The same key twice for one site: a conflict, exit 5.
    expect_exit(
        &cli.run(&["sshkeys", "create", "--site", "site-1", "--text", &public])
            .await,
        5,
        "hint:",
    );

    // A build followed to completion (plain lines when piped), then its file downloaded and
    // checked against the digest the API reports.
    let followed = cli
        .run(&[
            "syslinuxs",
            "create",
            "--inputs",
            r#"{"fragment": "isolinux.bin"}"#,
            "--follow",
            "-o",
            "json",
        ])
        .await;
    expect_exit(&followed, 0, "done 100%");
    let row: serde_json::Value = serde_json::from_slice(&followed.stdout).expect("json row");
    assert_eq!(row["status"], "done");
    let build = row["id"].as_str().expect("id").to_owned();
    let original = std::fs::read(ISOLINUX).expect("isolinux package");
    assert_eq!(row["sha256"], sha256_hex(&original));
    let target = cli.config.path().join("isolinux.bin");
    let download = cli
        .run(&[
            "syslinuxs",
            "download",
            &build,
            "isolinux.bin",
            "-O",
            target.to_str().expect("utf-8"),
        ])
        .await;
    assert_eq!(download.status.code(), Some(0), "{}", text(&download));
    assert_eq!(std::fs::read(&target).expect("downloaded"), original);
    assert!(!cli.config.path().join("isolinux.bin.part").exists());
    assert!(String::from_utf8_lossy(&download.stdout).starts_with(&sha256_hex(&original)));

    // A build that fails in the builder: exit 1 with the builder's error.
    let failed = cli
        .run(&[
            "ipxes",
            "create",
            "--inputs",
            r##"{"script": "#!ipxe\nshell\n", "platform": "bin-x86_64-efi", "driver": "ipxe", "extension": "efi"}"##,
            "--follow",
        ])
        .await;
    expect_exit(&failed, 1, "failed: ");
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("no such compiler (boom)"),
        "{}",
        text(&failed)
    );

    // Exit codes: bad input 2, a missing object 3, no or a wrong token 4, a user writing 4,
    // nothing listening 7; each says what went wrong and what to do.
    expect_exit(
        &cli.run(&["mainscripts", "create", "--text", ""]).await,
        2,
        "text:",
    );
    expect_exit(
        &cli.run(&["mainscripts", "list", "--page-size", "500"])
            .await,
        2,
        "pageSize",
    );
    expect_exit(
        &cli.run(&["mainscripts", "frobnicate"]).await,
        2,
        "frobnicate",
    );
    let missing = "00000000-0000-4000-8000-000000000000";
    expect_exit(&cli.run(&["mainscripts", "get", missing]).await, 3, "hint:");
    expect_exit(
        &cli.run(&["syslinuxs", "download", missing, "isolinux.bin"])
            .await,
        3,
        "not found",
    );
    expect_exit(
        &cli.run_as(None, &["mainscripts", "list"]).await,
        4,
        "BOOTFLEET_TOKEN",
    );
    expect_exit(
        &cli.run_as(Some("wrong"), &["mainscripts", "list"]).await,
        4,
        "hint:",
    );
    expect_exit(
        &cli.run_as(Some(&lab.user), &["mainscripts", "delete", &id])
            .await,
        4,
        "admin",
    );
    let closed = format!("http://127.0.0.1:{}", bootfleet_testkit::free_port());
    expect_exit(
        &cli.run(&["mainscripts", "list", "--url", &closed]).await,
        7,
        "cannot reach",
    );

    // The config file gives the URL and token when neither flag nor environment does.
    let config_dir = cli.config.path().join("bootfleet");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    std::fs::write(
        config_dir.join("config.toml"),
        format!(
            "url = \"{}\"\ntoken = \"{}\"\noutput = \"json\"\n",
            lab.grpc, lab.admin
        ),
    )
    .expect("write config");
    let from_file = cli.run_as(None, &["mainscripts", "delete", &id]).await;
    assert_eq!(from_file.status.code(), Some(0), "{}", text(&from_file));
    let deleted: serde_json::Value = serde_json::from_slice(&from_file.stdout).expect("json");
    assert_eq!(deleted["id"], id.as_str());

    // Completions for a shell name the client commands.
    let completions = cli.run(&["completions", "bash"]).await;
    assert_eq!(completions.status.code(), Some(0), "{}", text(&completions));
    assert!(String::from_utf8_lossy(&completions.stdout).contains("mainscripts"));
    lab.system.stop().await;
}

/// A row of the relayed services as REST's JSON.
fn json_of(row: &pb::JsonRow) -> serde_json::Value {
    serde_json::from_str(&row.json).expect("a row is JSON")
}

fn write(key: &str, json: serde_json::Value) -> pb::JsonWrite {
    pb::JsonWrite {
        key: key.into(),
        json: json.to_string(),
    }
}

/// Machines, profiles, groups, commands and runs over gRPC and the CLI: what their REST routes
/// do, with the same roles and errors; a machine's timeline followed as it grows and a command
/// run on a real sshd node through the site's real distributor, its output streamed as it
/// comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_cli_machines_profiles_groups_commands_and_a_streamed_run() {
    use serde_json::json;

    let lab = lab().await;
    let site = "site-grpc";
    let node = SiteNode::start(&lab, site).await;
    let (private_key, node_ip) = (node.private_key.clone(), node.ip);
    let channel = lab.channel().await;
    let admin = Some(lab.admin.as_str());
    let mut profiles = pb::profiles_client::ProfilesClient::new(channel.clone());
    let mut machines = pb::machines_client::MachinesClient::new(channel.clone());
    let mut groups = pb::groups_client::GroupsClient::new(channel.clone());
    let mut commands = pb::commands_client::CommandsClient::new(channel.clone());
    let mut runs = pb::runs_client::RunsClient::new(channel.clone());

    // Profiles by name: create (made), put again (replaced), get.
    let profile = json!({"name": "p1", "ipxeTemplate": "#!ipxe\necho {{ machine.mac }}"});
    let made = profiles
        .create_profile(authed(write("", profile.clone()), admin))
        .await
        .expect("create profile")
        .into_inner();
    assert!(made.created);
    assert_eq!(json_of(&made)["name"], "p1");
    let replaced = profiles
        .put_profile(authed(write("p1", profile), admin))
        .await
        .expect("put profile")
        .into_inner();
    assert!(!replaced.created);
    let got = profiles
        .get_profile(authed(pb::NameRef { name: "p1".into() }, admin))
        .await
        .expect("get profile")
        .into_inner();
    assert_eq!(
        json_of(&got)["ipxeTemplate"],
        "#!ipxe\necho {{ machine.mac }}"
    );

    // Machines: create, list with search, update, state, history; errors as on REST.
    let machine = machines
        .create_machine(authed(
            write(
                "",
                json!({"mac": "52:54:00:00:30:01", "name": "node-a", "artifactId": site,
                    "ip": node_ip.to_string(), "profile": "p1"}),
            ),
            admin,
        ))
        .await
        .expect("create machine")
        .into_inner();
    assert!(machine.created);
    let machine = json_of(&machine);
    let id = machine["id"].as_str().expect("id").to_owned();
    assert_eq!(machine["state"], "ready");
    let page = machines
        .list_machines(authed(
            pb::ListOptions {
                search: "node-a".into(),
                ..Default::default()
            },
            Some(&lab.user),
        ))
        .await
        .expect("list machines")
        .into_inner();
    assert_eq!(page.page.expect("page info").total, 1);
    assert_eq!(json_of(&page.rows[0])["mac"], "52:54:00:00:30:01");
    let updated = machines
        .update_machine(authed(write(&id, json!({"ranks": ["metal"]})), admin))
        .await
        .expect("update machine")
        .into_inner();
    assert_eq!(json_of(&updated)["ranks"], json!(["metal"]));
    expect_status(
        machines
            .create_machine(authed(write("", json!({"mac": "52:54:00:00:30:02"})), None))
            .await,
        Code::Unauthenticated,
        None,
    );
    expect_status(
        machines
            .create_machine(authed(
                write("", json!({"mac": "52:54:00:00:30:02", "artifactId": site})),
                Some(&lab.user),
            ))
            .await,
        Code::PermissionDenied,
        None,
    );
    expect_status(
        machines
            .create_machine(authed(write("", json!({"mac": "x", "nope": 1})), admin))
            .await,
        Code::InvalidArgument,
        Some("nope"),
    );
    expect_status(
        machines
            .get_machine(authed(
                proto::IdRequest {
                    id: uuid::Uuid::new_v4().to_string(),
                },
                admin,
            ))
            .await,
        Code::NotFound,
        None,
    );
    expect_status(
        machines
            .set_machine_state(authed(
                pb::SetMachineStateRequest {
                    id: id.clone(),
                    state: "asleep".into(),
                    reason: String::new(),
                },
                admin,
            ))
            .await,
        Code::InvalidArgument,
        Some("state"),
    );

    // The timeline followed: a state change arrives as a step while the stream is open.
    let mut steps = machines
        .watch_machine_timeline(authed(proto::IdRequest { id: id.clone() }, admin))
        .await
        .expect("watch timeline")
        .into_inner();
    let installing = machines
        .set_machine_state(authed(
            pb::SetMachineStateRequest {
                id: id.clone(),
                state: "install".into(),
                reason: "grpc test".into(),
            },
            admin,
        ))
        .await
        .expect("set state")
        .into_inner();
    assert_eq!(json_of(&installing)["state"], "install");
    let step = loop {
        let step = tokio::time::timeout(nodes::WAIT, steps.next())
            .await
            .expect("a step in time")
            .expect("the stream goes on")
            .expect("a step");
        if step.kind == "state_changed"
            && step.detail.get("to").map(String::as_str) == Some("install")
        {
            break step;
        }
    };
    assert!(!step.boot_started_at.is_empty() && !step.at.is_empty());
    drop(steps);
    let history = machines
        .get_machine_history(authed(proto::IdRequest { id: id.clone() }, admin))
        .await
        .expect("history")
        .into_inner();
    let changes = json_of(&history)["changes"].clone();
    assert_eq!(changes.as_array().map(Vec::len), Some(2), "{changes}");
    assert_eq!(changes[1]["reason"], "grpc test");
    // Power without a BMC: refused naming the field, as on REST.
    let no_bmc = machines
        .power_machine(authed(
            pb::PowerMachineRequest {
                id: id.clone(),
                action: "status".into(),
                boot_device: String::new(),
            },
            admin,
        ))
        .await
        .expect_err("no bmc");
    assert_eq!(no_bmc.code(), Code::InvalidArgument, "{no_bmc:?}");

    // Groups and commands by name.
    let group = groups
        .create_group(authed(
            write("", json!({"name": "g1", "members": ["node-a"]})),
            admin,
        ))
        .await
        .expect("create group")
        .into_inner();
    assert!(group.created);
    let members = groups
        .get_group_machines(authed(pb::NameRef { name: "g1".into() }, admin))
        .await
        .expect("group machines")
        .into_inner();
    assert_eq!(json_of(&members)["machines"][0]["id"], id.as_str());
    expect_status(
        groups
            .create_group(authed(write("", json!({"name": "g1"})), admin))
            .await,
        Code::Aborted,
        Some("name"),
    );
    let command = commands
        .create_command(authed(
            write(
                "",
                json!({"name": "hello", "script": "echo \"hello from $BF_NODE_NAME\"; echo oops >&2"}),
            ),
            admin,
        ))
        .await
        .expect("create command")
        .into_inner();
    assert!(command.created);

    // A run streamed as messages: the run and its machines first, each line, the machine's
    // end, and the run's end; then the run's record.
    let mut events = commands
        .run_command(authed(
            pb::RunCommandRequest {
                name: "hello".into(),
                groups: vec!["g1".into()],
                private_key: private_key.clone(),
                accept_new_host_keys: true,
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("run")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(event) = tokio::time::timeout(nodes::WAIT, events.next())
        .await
        .expect("an event in time")
    {
        seen.push(event.expect("an event"));
    }
    let run_id = seen[0].run.clone().expect("the run's id first");
    assert_eq!(seen[0].machines, vec!["node-a".to_owned()]);
    let line = |stream: &str, text: &str| {
        seen.iter()
            .any(|e| e.stream.as_deref() == Some(stream) && e.line.as_deref() == Some(text))
    };
    assert!(line("stdout", "hello from node-a"), "{seen:?}");
    assert!(line("stderr", "oops"), "{seen:?}");
    assert!(seen.iter().any(|e| e.exit_code == Some(0)), "{seen:?}");
    assert_eq!(seen.last().and_then(|e| e.done), Some(true), "{seen:?}");
    let run = runs
        .get_run(authed(proto::IdRequest { id: run_id.clone() }, admin))
        .await
        .expect("get run")
        .into_inner();
    let run = json_of(&run);
    assert_eq!(run["command"], "hello");
    assert_eq!(run["machines"][0]["exitCode"], 0);
    // With an idempotency key a run runs once: a repeat is refused, pointing at the records.
    let keyed_run = || {
        keyed(
            pb::RunCommandRequest {
                name: "hello".into(),
                machines: vec!["node-a".into()],
                private_key: private_key.clone(),
                ..Default::default()
            },
            &lab.admin,
            "run-1",
        )
    };
    let mut once = commands
        .run_command(keyed_run())
        .await
        .expect("a keyed run")
        .into_inner();
    while let Some(event) = tokio::time::timeout(nodes::WAIT, once.next())
        .await
        .expect("an event in time")
    {
        event.expect("an event");
    }
    let twice = commands
        .run_command(keyed_run())
        .await
        .expect_err("not run twice");
    assert_eq!(twice.code(), Code::Aborted, "{twice:?}");
    assert!(twice.message().contains("Runs/ListRuns"), "{twice:?}");
    // A refused run is an error before anything streams.
    expect_status(
        commands
            .run_command(authed(
                pb::RunCommandRequest {
                    name: "hello".into(),
                    machines: vec!["no-such-node".into()],
                    ..Default::default()
                },
                admin,
            ))
            .await,
        Code::InvalidArgument,
        None,
    );

    // The same through the CLI.
    let cli = Cli {
        lab: &lab,
        config: tempfile::tempdir().expect("tempdir"),
    };
    let listed = cli.json(&["machines", "list", "-o", "json"]).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["rows"][0]["id"], id.as_str());
    let table = cli.run(&["machines", "get", &id]).await;
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("52:54:00:00:30:01"),
        "{}",
        text(&table)
    );
    let yaml = cli.run(&["profiles", "list", "-o", "yaml"]).await;
    assert!(
        String::from_utf8_lossy(&yaml.stdout).contains("name: p1"),
        "{}",
        text(&yaml)
    );
    // Created with a key: the same command again answers the same row.
    let create_second = [
        "machines",
        "create",
        "--json",
        &json!({"mac": "52:54:00:00:30:09", "artifactId": site}).to_string(),
        "--idempotency-key",
        "cli-create-1",
        "-o",
        "json",
    ];
    let second = cli.json(&create_second).await;
    assert_eq!(cli.json(&create_second).await, second);
    let second_id = second["id"].as_str().expect("id").to_owned();
    let ready = cli
        .json(&[
            "machines", "state", &second_id, "rescue", "--reason", "cli", "-o", "json",
        ])
        .await;
    assert_eq!(ready["state"], "rescue");
    cli.json(&["machines", "delete", &second_id, "-o", "json"])
        .await;
    let command = cli
        .json(&[
            "commands",
            "update",
            "hi",
            "--json",
            r#"{"script": "echo hi"}"#,
            "-o",
            "json",
        ])
        .await;
    assert_eq!(command["name"], "hi");
    let groups_table = cli.run(&["groups", "machines", "g1"]).await;
    assert!(
        String::from_utf8_lossy(&groups_table.stdout).contains("node-a"),
        "{}",
        text(&groups_table)
    );
    let key_file = cli.key_file(&private_key);
    let key_path = key_file.to_str().expect("utf-8");
    let ran = cli
        .run(&[
            "commands",
            "run",
            "hello",
            "--target",
            "node-a",
            "--private-key",
            key_path,
        ])
        .await;
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran));
    assert!(
        String::from_utf8_lossy(&ran.stdout).contains("node-a: hello from node-a"),
        "{}",
        text(&ran)
    );
    assert!(
        String::from_utf8_lossy(&ran.stderr).contains("node-a: oops"),
        "{}",
        text(&ran)
    );
    // A failing command: its output still streams, and the CLI exits 1.
    cli.json(&[
        "commands",
        "create",
        "--json",
        r#"{"name": "fails", "script": "echo before; exit 3"}"#,
        "-o",
        "json",
    ])
    .await;
    let failed = cli
        .run(&[
            "commands",
            "run",
            "fails",
            "--target",
            "node-a",
            "--private-key",
            key_path,
            "-o",
            "json",
        ])
        .await;
    expect_exit(&failed, 1, "failed on node-a");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&failed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    assert!(lines.iter().any(|l| l["line"] == "before"), "{lines:?}");
    assert!(lines.iter().any(|l| l["exitCode"] == 3), "{lines:?}");
    let listed_runs = cli.json(&["runs", "list", "-o", "json"]).await;
    assert_eq!(listed_runs["total"], 4);
    let one = cli.json(&["runs", "get", &run_id, "-o", "json"]).await;
    assert_eq!(one["id"], run_id.as_str());
    expect_exit(&cli.run(&["commands", "get", "no-such"]).await, 3, "hint:");
    expect_exit(
        &cli.run(&[
            "profiles",
            "create",
            "--json",
            r##"{"name": "bad name", "ipxeTemplate": "#!ipxe"}"##,
        ])
        .await,
        2,
        "name",
    );

    // Deletes answer the deleted row.
    let deleted = groups
        .delete_group(authed(pb::NameRef { name: "g1".into() }, admin))
        .await
        .expect("delete group")
        .into_inner();
    assert_eq!(json_of(&deleted)["name"], "g1");
    let deleted = machines
        .delete_machine(authed(proto::IdRequest { id: id.clone() }, admin))
        .await
        .expect("delete machine")
        .into_inner();
    assert_eq!(json_of(&deleted)["id"], id.as_str());
    profiles
        .delete_profile(authed(pb::NameRef { name: "p1".into() }, admin))
        .await
        .expect("delete profile");
    node.stop().await;
    lab.system.stop().await;
}

/// What an operator does at a site beyond its rows, over gRPC and the CLI: configuring its
/// distributor (refusals from the gateway and from the distributors service, which checks the
/// agent's reported interfaces), running a script on a registered node through the real
/// distributor over SSH, the site's policy for unknown MACs, a bulk import, and the
/// node-facing machine calls with an operator's JWT and with the machine's own token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_cli_site_configuration_node_scripts_imports_and_node_facing_calls() {
    use serde_json::json;

    // A request timeout shorter than the script below: the run extends its call's deadline.
    let lab =
        lab_with(|config| config.limits.request_timeout = std::time::Duration::from_secs(2)).await;
    let site = "site-ops";
    let node = SiteNode::start(&lab, site).await;
    let (private_key, node_ip) = (node.private_key.clone(), node.ip);
    let channel = lab.channel().await;
    let admin = Some(lab.admin.as_str());
    let user = Some(lab.user.as_str());
    let mut distributors = pb::distributors_client::DistributorsClient::new(channel.clone());
    let mut localnodes = pb::local_nodes_client::LocalNodesClient::new(channel.clone());
    let mut machines = pb::machines_client::MachinesClient::new(channel.clone());
    let mut profiles = pb::profiles_client::ProfilesClient::new(channel.clone());
    let cli = Cli {
        lab: &lab,
        config: tempfile::tempdir().expect("tempdir"),
    };

    // The distributor's row, made by its heartbeat.
    let deadline = std::time::Instant::now() + nodes::WAIT;
    let row = loop {
        let page = distributors
            .list_distributors(authed(
                pb::ListOptions {
                    search: site.into(),
                    ..Default::default()
                },
                admin,
            ))
            .await
            .expect("list distributors")
            .into_inner();
        if let Some(row) = page.rows.into_iter().next() {
            break row;
        }
        assert!(std::time::Instant::now() < deadline, "no distributor row");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let configure = |device: &str, range: &str, uefi: &str| proto::ConfigureDistributor {
        id: row.id.clone(),
        artifact_id: site.into(),
        ipxe_pxe_uefi: uefi.into(),
        ipxe_pxe_bios: String::new(),
        device: device.into(),
        range: range.into(),
    };
    // Refused as REST refuses: the role, the range and a URL of another host by the gateway,
    // an interface the agent did not report by the distributors service, an unknown row.
    expect_status(
        distributors
            .configure_distributor(authed(configure("lo", "10.77.0.0/24", ""), user))
            .await,
        Code::PermissionDenied,
        None,
    );
    expect_status(
        distributors
            .configure_distributor(authed(configure("lo", "10.77.0.0/33", ""), admin))
            .await,
        Code::InvalidArgument,
        Some("range"),
    );
    expect_status(
        distributors
            .configure_distributor(authed(
                configure("lo", "10.77.0.0/24", "http://evil.example/ipxes/x/ipxe.efi"),
                admin,
            ))
            .await,
        Code::InvalidArgument,
        Some("ipxePxeUefiUrl"),
    );
    let not_reported = distributors
        .configure_distributor(authed(configure("eth-none9", "10.77.0.0/24", ""), admin))
        .await;
    let refused = not_reported.as_ref().err().map(|s| s.message().to_owned());
    expect_status(not_reported, Code::InvalidArgument, Some("device"));
    assert!(
        refused
            .as_deref()
            .unwrap_or_default()
            .contains("it reported"),
        "{refused:?}"
    );
    expect_status(
        distributors
            .configure_distributor(authed(
                proto::ConfigureDistributor {
                    id: uuid::Uuid::new_v4().to_string(),
                    ..configure("lo", "10.77.0.0/24", "")
                },
                admin,
            ))
            .await,
        Code::NotFound,
        None,
    );
    let by_cli = cli
        .run(&[
            "distributors",
            "configure",
            &row.id,
            "--device",
            "eth-none9",
            "--range",
            "10.77.0.0/24",
        ])
        .await;
    expect_exit(&by_cli, 2, "device");

    // A script run on a registered node, over SSH through the site's distributor.
    let registered = localnodes
        .register_local_node(authed(
            proto::RegisterLocalNode {
                ip: node_ip.to_string(),
                artifact_id: site.into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .expect("register")
        .into_inner();
    let node_id = registered.node.expect("node").id;
    let script = |script: &str, key: &str| proto::RunNodeScript {
        id: node_id.clone(),
        script: script.into(),
        private_key: key.into(),
        user: String::new(),
        timeout_seconds: 0,
    };
    let ran = localnodes
        .run_local_node_script(authed(
            script("echo out-$((40+2)); echo err >&2; exit 3", &private_key),
            admin,
        ))
        .await
        .expect("run a script")
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "out-42\n");
    assert_eq!(String::from_utf8_lossy(&ran.stderr), "err\n");
    assert_eq!(ran.exit_code, Some(3));
    let slow = localnodes
        .run_local_node_script(authed(script("sleep 3; echo late", &private_key), admin))
        .await
        .expect("a run longer than the request timeout")
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&slow.stdout), "late\n");
    expect_status(
        localnodes
            .run_local_node_script(authed(script("true", &private_key), user))
            .await,
        Code::PermissionDenied,
        None,
    );
    expect_status(
        localnodes
            .run_local_node_script(authed(
                proto::RunNodeScript {
                    id: "not-an-id".into(),
                    ..script("true", &private_key)
                },
                admin,
            ))
            .await,
        Code::InvalidArgument,
        Some("id"),
    );
    expect_status(
        localnodes
            .run_local_node_script(authed(
                proto::RunNodeScript {
                    id: uuid::Uuid::new_v4().to_string(),
                    ..script("true", &private_key)
                },
                admin,
            ))
            .await,
        Code::NotFound,
        None,
    );
    let key_file = cli.key_file(&private_key);
    let key_path = key_file.to_str().expect("utf-8");
    let ok = cli
        .run(&[
            "localnodes",
            "script",
            &node_id,
            "--text",
            "echo by-cli",
            "--private-key",
            key_path,
        ])
        .await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "by-cli\n",
        "{}",
        text(&ok)
    );
    let failed = cli
        .run(&[
            "localnodes",
            "script",
            &node_id,
            "--text",
            "exit 5",
            "--private-key",
            key_path,
            "-o",
            "json",
        ])
        .await;
    expect_exit(&failed, 1, "exited with 5");
    let result: serde_json::Value = serde_json::from_slice(&failed.stdout).expect("json");
    assert_eq!(result["exitCode"], 5);

    // The site's policy for unknown MACs: the default, set, read back; refusals by name.
    let policy = machines
        .get_machine_site_policy(authed(
            pb::SiteRef {
                artifact_id: site.into(),
            },
            user,
        ))
        .await
        .expect("site policy")
        .into_inner();
    assert_eq!(json_of(&policy)["unknownMacs"], "serve");
    assert!(json_of(&policy)["updatedAt"].is_null());
    let set = machines
        .set_machine_site_policy(authed(write(site, json!({"unknownMacs": "ignore"})), admin))
        .await
        .expect("set site policy")
        .into_inner();
    assert_eq!(json_of(&set)["unknownMacs"], "ignore");
    expect_status(
        machines
            .set_machine_site_policy(authed(write(site, json!({"unknownMacs": "ignore"})), user))
            .await,
        Code::PermissionDenied,
        None,
    );
    expect_status(
        machines
            .set_machine_site_policy(authed(write(site, json!({"unknownMacs": "maybe"})), admin))
            .await,
        Code::InvalidArgument,
        Some("unknownMacs"),
    );
    expect_status(
        machines
            .get_machine_site_policy(authed(
                pb::SiteRef {
                    artifact_id: "bad site".into(),
                },
                admin,
            ))
            .await,
        Code::InvalidArgument,
        Some("artifactId"),
    );
    let by_cli = cli
        .json(&[
            "machines",
            "set-site-policy",
            site,
            "--json",
            r#"{"unknownMacs": "discover"}"#,
            "-o",
            "json",
        ])
        .await;
    assert_eq!(by_cli["unknownMacs"], "discover");
    let read = cli
        .json(&["machines", "site-policy", site, "-o", "json"])
        .await;
    assert_eq!(read["unknownMacs"], "discover");
    assert!(read["updatedAt"].is_string(), "{read}");

    // Bulk import: good lines land, a bad one is refused with its line number.
    let report = machines
        .import_machines(authed(
            pb::ImportMachinesRequest {
                artifact_id: site.into(),
                content_type: String::new(),
                text: "52:54:00:00:41:01 10.0.0.1\nnot a line\n".into(),
            },
            admin,
        ))
        .await
        .expect("import")
        .into_inner();
    let report = json_of(&report);
    assert_eq!(
        (report["created"].as_u64(), report["refused"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(report["lines"][1]["line"], 2, "{report}");
    expect_status(
        machines
            .import_machines(authed(
                pb::ImportMachinesRequest {
                    artifact_id: site.into(),
                    content_type: "text/csv".into(),
                    text: "x".into(),
                },
                admin,
            ))
            .await,
        Code::InvalidArgument,
        None,
    );
    // With an idempotency key an import lands once: the repeat is the first report, replayed
    // (not a second pass that would find the line's machine and answer `updated`).
    let keyed_import = || {
        keyed(
            pb::ImportMachinesRequest {
                artifact_id: site.into(),
                content_type: "text/plain".into(),
                text: "52:54:00:00:41:03 10.0.0.3\n".into(),
            },
            &lab.admin,
            "import-1",
        )
    };
    let first = machines
        .import_machines(keyed_import())
        .await
        .expect("keyed import");
    let repeat = machines
        .import_machines(keyed_import())
        .await
        .expect("repeated import");
    assert!(!replayed(&first) && replayed(&repeat));
    assert_eq!(
        json_of(repeat.get_ref())["created"],
        1,
        "{}",
        repeat.get_ref().json
    );
    let nodes_file = cli.config.path().join("nodes.yaml");
    std::fs::write(
        &nodes_file,
        "node-y:\n  mac: 52:54:00:00:41:02\n  ranks: [metal]\n",
    )
    .expect("write nodes");
    let imported = cli
        .json(&[
            "machines",
            "import",
            "--site",
            site,
            "--file",
            nodes_file.to_str().expect("utf-8"),
            "--content-type",
            "application/yaml",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(imported["created"], 1, "{imported}");
    let again = cli
        .run(&["machines", "import", "--site", site, "--text", "bogus"])
        .await;
    expect_exit(&again, 1, "refused");

    // The node-facing calls: the rendered script carries the machine's own token, which
    // then reads its files and reports for it (and is no operator token elsewhere).
    profiles
        .create_profile(authed(
            write(
                "",
                json!({"name": "pf", "ipxeTemplate": "#!ipxe\necho {{ machine.mac }} {{ token }}\n",
                    "templates": {"kickstart": "network --hostname={{ machine.name }}\n"}}),
            ),
            admin,
        ))
        .await
        .expect("create profile");
    let machine = machines
        .create_machine(authed(
            write(
                "",
                json!({"mac": "52:54:00:00:41:09", "name": "node-f", "artifactId": site,
                    "profile": "pf"}),
            ),
            admin,
        ))
        .await
        .expect("create machine")
        .into_inner();
    let machine_id = json_of(&machine)["id"].as_str().expect("id").to_owned();
    machines
        .set_machine_state(authed(
            pb::SetMachineStateRequest {
                id: machine_id.clone(),
                state: "install".into(),
                reason: String::new(),
            },
            admin,
        ))
        .await
        .expect("install");
    let id_ref = || proto::IdRequest {
        id: machine_id.clone(),
    };
    let rendered = machines
        .get_machine_script(authed(id_ref(), user))
        .await
        .expect("script")
        .into_inner()
        .text;
    assert!(
        rendered.starts_with("#!ipxe\necho 52:54:00:00:41:09 bfm1."),
        "{rendered}"
    );
    let token = rendered
        .split_whitespace()
        .find(|w| w.starts_with("bfm1."))
        .expect("a machine token")
        .to_owned();
    let as_machine = Some(token.as_str());
    let again = machines
        .get_machine_script(authed(id_ref(), as_machine))
        .await
        .expect("script with the machine's token")
        .into_inner();
    assert!(again
        .text
        .starts_with("#!ipxe\necho 52:54:00:00:41:09 bfm1."));
    let file = machines
        .get_machine_file(authed(
            pb::MachineFileRequest {
                id: machine_id.clone(),
                template: "kickstart".into(),
            },
            as_machine,
        ))
        .await
        .expect("file")
        .into_inner();
    assert_eq!(file.text, "network --hostname=node-f\n");
    expect_status(
        machines
            .get_machine_file(authed(
                pb::MachineFileRequest {
                    id: machine_id.clone(),
                    template: "No Such!".into(),
                },
                admin,
            ))
            .await,
        Code::InvalidArgument,
        Some("template"),
    );
    // The machine's token is for the node-facing calls only.
    expect_status(
        machines.get_machine(authed(id_ref(), as_machine)).await,
        Code::Unauthenticated,
        None,
    );
    let inventory = json!({"firmware": "uefi", "cpu": {"model": "qemu", "count": 2},
        "memoryBytes": 2_147_483_648_u64});
    expect_status(
        machines
            .report_machine_inventory(authed(write(&machine_id, inventory.clone()), user))
            .await,
        Code::PermissionDenied,
        None,
    );
    let reported = machines
        .report_machine_inventory(authed(write(&machine_id, inventory), as_machine))
        .await
        .expect("inventory")
        .into_inner();
    assert_eq!(json_of(&reported)["firmware"], "uefi", "{}", reported.json);
    let installed = machines
        .report_machine_event(authed(
            write(&machine_id, json!({"type": "installed"})),
            as_machine,
        ))
        .await
        .expect("installed")
        .into_inner();
    assert_eq!(json_of(&installed)["state"], "installed");
    expect_status(
        machines
            .report_machine_event(authed(write("nope", json!({"type": "installed"})), admin))
            .await,
        Code::InvalidArgument,
        Some("key"),
    );
    let script_by_cli = cli
        .run(&["machines", "file", &machine_id, "kickstart"])
        .await;
    assert_eq!(
        script_by_cli.status.code(),
        Some(0),
        "{}",
        text(&script_by_cli)
    );
    assert_eq!(
        String::from_utf8_lossy(&script_by_cli.stdout),
        "network --hostname=node-f\n"
    );
    let by_cli = cli
        .json(&[
            "machines",
            "event",
            &machine_id,
            "--json",
            r#"{"type": "installed"}"#,
            "-o",
            "json",
        ])
        .await;
    assert_eq!(by_cli["id"], machine_id.as_str());

    node.stop().await;
    lab.system.stop().await;
}

/// One sshd node of a site (on an address of its own, port 22) that takes `private_key`, and
/// the real distributor agent (its NATS side) of the site.
struct SiteNode {
    distributor: nodes::Distributor,
    sshd: bootfleet_testkit::sshd::Sshd,
    private_key: String,
    ip: std::net::Ipv4Addr,
}

impl SiteNode {
    async fn start(lab: &Lab, site: &str) -> SiteNode {
        let distributor = nodes::Distributor::start(&lab._nats.url(), site, &lab.system.bus).await;
        let (private_key, public_key) = nodes::keypair();
        let ip = nodes::node_ip(nodes::node_net(), 1);
        let sshd =
            bootfleet_testkit::sshd::Sshd::start(std::net::SocketAddr::from((ip, 22)), &public_key);
        SiteNode {
            distributor,
            sshd,
            private_key,
            ip,
        }
    }

    async fn stop(self) {
        drop(self.sshd);
        self.distributor.stop().await;
    }
}

/// `message` as admin with the metadata `idempotency-key: key`.
fn keyed<T>(message: T, token: &str, key: &str) -> Request<T> {
    let mut req = authed(message, Some(token));
    req.metadata_mut()
        .insert("idempotency-key", key.parse().expect("ascii"));
    req
}

fn replayed<T>(response: &tonic::Response<T>) -> bool {
    response.metadata().get("idempotent-replayed").is_some()
}

/// Writes with the metadata `idempotency-key`, as REST's `Idempotency-Key`: a repeat gets the
/// first outcome (a create the same row, made once, its id derived from the key; a delete the
/// deleted row, not NOT_FOUND; a refusal the same refusal), and the key with another request
/// is refused naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_writes_with_an_idempotency_key_repeat_their_first_outcome() {
    use serde_json::json;

    let lab = lab().await;
    let channel = lab.channel().await;
    let admin = lab.admin.as_str();
    let mut scripts = pb::scripts_client::ScriptsClient::new(channel.clone());
    let mut machines = pb::machines_client::MachinesClient::new(channel.clone());
    let create = |text: &str| pb::CreateScriptRequest {
        kind: "mainscripts".into(),
        text: text.into(),
        ..Default::default()
    };

    // A create repeated: the first row again, made once.
    let first = scripts
        .create_script(keyed(create("#!ipxe\nshell"), admin, "create-1"))
        .await
        .expect("create");
    assert!(!replayed(&first));
    let again = scripts
        .create_script(keyed(create("#!ipxe\nshell"), admin, "create-1"))
        .await
        .expect("create again");
    assert!(replayed(&again));
    assert_eq!(again.get_ref(), first.get_ref());
    let listed = scripts
        .list_scripts(authed(
            pb::ListScriptsRequest {
                kind: "mainscripts".into(),
                list: None,
            },
            Some(admin),
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.page.expect("page").total, 1);
    // The same key with another body: refused, naming the key; the first row is untouched.
    expect_status(
        scripts
            .create_script(keyed(create("#!ipxe\nexit"), admin, "create-1"))
            .await,
        Code::Aborted,
        Some("idempotency-key"),
    );
    // A key that is no key.
    expect_status(
        scripts
            .create_script(keyed(create("#!ipxe\nshell"), admin, "two words"))
            .await,
        Code::InvalidArgument,
        Some("idempotency-key"),
    );

    // A machine's id is derived from the key: a repeat after a lost answer finds its row.
    let body = json!({"mac": "52:54:00:00:40:01", "artifactId": "site-1"}).to_string();
    let write = || pb::JsonWrite {
        key: String::new(),
        json: body.clone(),
    };
    let made = machines
        .create_machine(keyed(write(), admin, "machine-1"))
        .await
        .expect("create machine")
        .into_inner();
    let again = machines
        .create_machine(keyed(write(), admin, "machine-1"))
        .await
        .expect("create machine again");
    assert!(replayed(&again));
    assert_eq!(again.get_ref(), &made);
    let id = json_of(&made)["id"].as_str().expect("id").to_owned();
    // The key with another machine's body is refused rather than making a second row.
    expect_status(
        machines
            .create_machine(keyed(
                pb::JsonWrite {
                    key: String::new(),
                    json: json!({"mac": "52:54:00:00:40:02", "artifactId": "site-1"}).to_string(),
                },
                admin,
                "machine-1",
            ))
            .await,
        Code::Aborted,
        Some("idempotency-key"),
    );
    // A refusal is an outcome too: repeated as it was.
    let bad = || pb::JsonWrite {
        key: String::new(),
        json: json!({"mac": "52:54:00:00:40:01", "artifactId": "site-1"}).to_string(),
    };
    expect_status(
        machines
            .create_machine(keyed(bad(), admin, "machine-2"))
            .await,
        Code::Aborted,
        Some("mac"),
    );
    let status = machines
        .create_machine(keyed(bad(), admin, "machine-2"))
        .await
        .expect_err("the same refusal");
    assert_eq!(status.code(), Code::Aborted);
    assert!(
        status.metadata().get("idempotent-replayed").is_some(),
        "{status:?}"
    );

    // A delete repeated answers as the first did, not NOT_FOUND; without a key it is NOT_FOUND.
    let delete = || proto::IdRequest { id: id.clone() };
    let deleted = machines
        .delete_machine(keyed(delete(), admin, "delete-1"))
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(json_of(&deleted)["id"], id.as_str());
    let again = machines
        .delete_machine(keyed(delete(), admin, "delete-1"))
        .await
        .expect("delete again");
    assert!(replayed(&again));
    assert_eq!(again.get_ref(), &deleted);
    expect_status(
        machines.delete_machine(authed(delete(), Some(admin))).await,
        Code::NotFound,
        None,
    );
    // Reads ignore the key.
    let script_id = first.get_ref().id.clone();
    for _ in 0..2 {
        let got = scripts
            .get_script(keyed(
                pb::ScriptRef {
                    kind: "mainscripts".into(),
                    id: script_id.clone(),
                },
                admin,
                "read-1",
            ))
            .await
            .expect("get");
        assert!(!replayed(&got));
    }
    lab.system.stop().await;
}

/// `openssl <args>` in `dir` (`args` split at spaces).
fn openssl(dir: &std::path::Path, args: &str) {
    bootfleet_testkit::run_ok(
        std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args.split(' ')),
        "openssl (Debian's openssl)",
    );
}

/// With `BOOTFLEET_GRPC_TLS_CERT`/`_KEY`'s identity the API speaks TLS: the CLI reaches it over
/// `https://` trusting the CA given with `--ca`; without that CA, or in plain text, it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_the_gateway_s_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let new_key = "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1";
    openssl(
        d,
        &format!("{new_key} -x509 -keyout ca.key -out ca.pem -subj /CN=test-ca"),
    );
    openssl(
        d,
        &format!("{new_key} -keyout server.key -out server.csr -subj /CN=localhost"),
    );
    std::fs::write(
        d.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write ext");
    openssl(
        d,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile server.ext",
    );
    let read = |name: &str| std::fs::read(d.join(name)).expect("read pem");
    let lab = lab_with(|config| {
        config.grpc_tls = Some(bootfleet_gateway::TlsIdentity {
            cert_pem: read("server.pem"),
            key_pem: read("server.key"),
        });
    })
    .await;
    assert!(lab.grpc.starts_with("https://"), "{}", lab.grpc);
    let cli = Cli {
        lab: &lab,
        config: tempfile::tempdir().expect("tempdir"),
    };
    let ca = d.join("ca.pem");
    let ca = ca.to_str().expect("utf-8");
    let created = cli
        .json(&[
            "mainscripts",
            "create",
            "--text",
            "#!ipxe\nshell",
            "--ca",
            ca,
            "-o",
            "json",
        ])
        .await;
    let listed = cli
        .json(&["mainscripts", "list", "--ca", ca, "-o", "json"])
        .await;
    assert_eq!(listed["rows"][0]["id"], created["id"]);
    // The system's roots do not know the test CA.
    expect_exit(&cli.run(&["mainscripts", "list"]).await, 7, "cannot reach");
    // Plain HTTP/2 to the TLS port is no gRPC.
    let plain = lab.grpc.replacen("https://", "http://", 1);
    let out = cli.run(&["mainscripts", "list", "--url", &plain]).await;
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    lab.system.stop().await;
}
