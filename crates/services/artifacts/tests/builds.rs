//! The artifact service and a builder, in-process, on a real nats-server (JetStream work queue
//! and object store), SQLite, and Debian's real tools.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bootfleet_api::artifacts::{object_name, ArtifactKind};
use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, ApiError, ErrorCode};
use bootfleet_artifacts::worker::{builder_service, WorkerConfig};
use bootfleet_boot_media::Toolbox;
use bootfleet_bus::{Bus, BusConfig, RunningService};
use bootfleet_service_kit::Context;
use bootfleet_store::Database;
use bootfleet_testkit::http_recorder::HttpRecorder;
use bootfleet_testkit::qemu::{Firmware, LocalBoot, Qemu};
use bootfleet_testkit::{database_url, Backend, NatsServer};
use serde_json::json;
use tokio::io::AsyncReadExt;

struct Lab {
    _nats: NatsServer,
    _dir: tempfile::TempDir,
    bus: Bus,
    db: Database,
    toolbox: Toolbox,
    services: Vec<RunningService>,
}

const WORKER: WorkerConfig = WorkerConfig {
    ack_wait: Duration::from_secs(10),
    max_deliver: 3,
};

impl Lab {
    /// The artifacts service and a builder of every kind.
    async fn start(toolbox: Toolbox) -> Lab {
        Self::start_with_builders(toolbox, &ArtifactKind::ALL).await
    }

    async fn start_with_builders(toolbox: Toolbox, kinds: &[ArtifactKind]) -> Lab {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let bus = Bus::connect(&BusConfig::new(nats.url(), "artifacts-test"))
            .await
            .expect("connect");
        let db = bootfleet_store::connect(&database_url(Backend::Sqlite, dir.path()))
            .await
            .expect("db");
        let services =
            vec![
                bootfleet_artifacts::start_with(bus.clone(), db.clone(), toolbox.clone())
                    .await
                    .expect("artifacts service"),
            ];
        let mut lab = Lab {
            _nats: nats,
            _dir: dir,
            bus,
            db,
            toolbox,
            services,
        };
        for &kind in kinds {
            lab.start_builder(kind).await;
        }
        lab
    }

    async fn start_builder(&mut self, kind: ArtifactKind) {
        let builder = builder_service(kind, WORKER, Arc::new(self.toolbox.clone()));
        let ctx = Context {
            bus: self.bus.clone(),
            db: self.db.clone(),
        };
        self.services.push(
            bootfleet_service_kit::start_one(&ctx, &builder)
                .await
                .expect("builder"),
        );
    }

    async fn create(
        &self,
        kind: &str,
        inputs: serde_json::Value,
    ) -> Result<proto::Artifact, ApiError> {
        let req = proto::CreateArtifact {
            kind: kind.into(),
            id: uuid::Uuid::new_v4().to_string(),
            inputs_json: inputs.to_string(),
        };
        let bus = self.bus.with_timeout(Duration::from_secs(30), 1);
        bus.request(
            &bootfleet_bus::TraceParent::new_root(),
            &subjects::subject(subjects::ARTIFACTS, Op::Create),
            &req,
        )
        .await
    }

    async fn get(&self, kind: &str, id: &str) -> proto::Artifact {
        self.bus
            .request(
                &bootfleet_bus::TraceParent::new_root(),
                &subjects::subject(subjects::ARTIFACTS, Op::Get),
                &proto::ArtifactRef {
                    kind: kind.into(),
                    id: id.into(),
                },
            )
            .await
            .expect("get")
    }

    /// Polls until the row is `done` or `failed`; returns it and the progress values seen.
    async fn finished(
        &self,
        kind: &str,
        id: &str,
        within: Duration,
    ) -> (proto::Artifact, Vec<u32>) {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let row = self.get(kind, id).await;
            if seen.last() != Some(&row.progress) {
                seen.push(row.progress);
            }
            if row.status == "done" || row.status == "failed" {
                return (row, seen);
            }
            assert!(
                Instant::now() < deadline,
                "{kind} {id} still {} after {within:?}",
                row.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to a minute for `kind` `id` to finish, which must be `done`; its row and the
    /// progress seen.
    async fn done(&self, kind: &str, id: &str) -> (proto::Artifact, Vec<u32>) {
        let (row, progress) = self.finished(kind, id, Duration::from_secs(60)).await;
        assert_eq!(row.status, "done", "{kind} {id}: {}", row.error);
        (row, progress)
    }

    async fn build(&self, kind: &str, inputs: serde_json::Value) -> proto::Artifact {
        let row = self.create(kind, inputs.clone()).await.expect("create");
        let (row, _) = self.finished(kind, &row.id, Duration::from_secs(60)).await;
        assert_eq!(row.status, "done", "{kind} {inputs}: {}", row.error);
        row
    }

    async fn object(&self, key: &str, file: &str) -> Vec<u8> {
        let js = jetstream::new(self.bus.client().clone());
        let store = js
            .get_object_store(subjects::ARTIFACT_BUCKET)
            .await
            .expect("bucket");
        let mut object = store
            .get(object_name(key, file).as_str())
            .await
            .expect("object");
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.expect("read");
        bytes
    }

    async fn stop(self) {
        for s in self.services {
            s.stop().await;
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn efi_ipxe(script: &str) -> serde_json::Value {
    json!({"script": script, "platform": "bin-x86_64-efi", "driver": "ipxe", "extension": "efi"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prebuilt_ipxe_is_built_once_and_a_repeat_is_done_at_once() {
    let lab = Lab::start(Toolbox::debian()).await;
    let script = "#!ipxe\ndhcp\nchain http://10.0.2.100/boot\n";
    let queued = lab.create("ipxes", efi_ipxe(script)).await.expect("create");
    assert_eq!(queued.status, "queued");
    let (row, progress) = lab.done("ipxes", &queued.id).await;
    assert_eq!(row.progress, 100);
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress never goes back: {progress:?}"
    );
    // Debian's binary, the script beside it, and the row says so.
    assert_eq!(row.embedded, Some(false));
    let names: Vec<&str> = row.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["ipxe.efi", "autoexec.ipxe"]);
    let binary = lab.object(&row.key, "ipxe.efi").await;
    assert_eq!(
        binary,
        std::fs::read("/usr/lib/ipxe/ipxe-amd64.efi").expect("debian ipxe")
    );
    assert_eq!(row.files[0].sha256, sha256_hex(&binary));
    assert_eq!(row.files[0].size, binary.len() as u64);
    assert_eq!(
        lab.object(&row.key, "autoexec.ipxe").await,
        script.as_bytes()
    );

    // The same content again: done in the create's answer, same bytes, its own row.
    let again = lab
        .create("ipxes", efi_ipxe(script))
        .await
        .expect("create again");
    assert_eq!(again.status, "done");
    assert_ne!(again.id, row.id);
    assert_eq!(again.key, row.key);
    assert_eq!(again.files, row.files);
    // Another script is another artifact.
    let other = lab
        .create("ipxes", efi_ipxe("#!ipxe\nshell\n"))
        .await
        .expect("create other");
    assert_ne!(other.key, row.key);

    // Deleting one row keeps the bytes the other still uses; deleting both removes them.
    let delete = |id: String| {
        let bus = lab.bus.clone();
        async move {
            let _: proto::Artifact = bus
                .request(
                    &bootfleet_bus::TraceParent::new_root(),
                    &subjects::subject(subjects::ARTIFACTS, Op::Delete),
                    &proto::ArtifactRef {
                        kind: "ipxes".into(),
                        id,
                    },
                )
                .await
                .expect("delete");
        }
    };
    delete(row.id.clone()).await;
    assert_eq!(lab.object(&again.key, "ipxe.efi").await.len(), binary.len());
    delete(again.id.clone()).await;
    let js = jetstream::new(lab.bus.client().clone());
    let store = js
        .get_object_store(subjects::ARTIFACT_BUCKET)
        .await
        .expect("bucket");
    let info = store.info(object_name(&row.key, "ipxe.efi").as_str()).await;
    // The object store answers a deleted object's info with `deleted: true`.
    assert!(
        info.as_ref().map(|i| i.deleted).unwrap_or(true),
        "bytes removed: {info:?}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_before_anything_is_queued() {
    let lab = Lab::start(Toolbox::debian()).await;
    // Each case is a good input of its kind with one field made bad.
    let ipxe = json!({"script": "#!ipxe", "platform": "bin-x86_64-efi", "driver": "ipxe", "extension": "efi"});
    let grub = json!({"label": "BOOT", "platform": "efi", "architecture": "x64", "extension": "efi", "fragment": "img"});
    let with = |good: &serde_json::Value, bad: serde_json::Value| {
        let mut inputs = good.clone();
        for (key, value) in bad.as_object().expect("an object") {
            inputs[key] = value.clone();
        }
        inputs
    };
    let cases = [
        (
            "ipxes",
            with(&ipxe, json!({"platform": "bin-x86_64-efi;reboot"})),
            "platform",
        ),
        ("ipxes", with(&ipxe, json!({"driver": "$(id)"})), "driver"),
        (
            "ipxes",
            with(&ipxe, json!({"platform": "bin-mips"})),
            "platform",
        ),
        ("ipxes", with(&ipxe, json!({"script": "echo hi"})), "script"),
        (
            "ipxes",
            with(
                &ipxe,
                json!({"script": format!("#!ipxe\n{}", "x".repeat(300 * 1024))}),
            ),
            "script",
        ),
        // Debian ships no ipxe.kpxe: it needs the compile backend.
        (
            "ipxes",
            with(
                &ipxe,
                json!({"platform": "bin-x86_64-pcbios", "extension": "kpxe"}),
            ),
            "driver",
        ),
        ("grubs", with(&grub, json!({"label": "BOOT`id`"})), "label"),
        (
            "grubs",
            with(&grub, json!({"fragment": "../img"})),
            "fragment",
        ),
        (
            "grubs",
            with(&grub, json!({"architecture": "arm"})),
            "architecture",
        ),
        (
            "syslinuxs",
            json!({"fragment": "../../etc/passwd"}),
            "fragment",
        ),
        ("syslinuxs", json!({"fragment": "pxelinux.0"}), "fragment"),
    ];
    for (kind, inputs, field) in cases {
        let err = lab
            .create(kind, inputs.clone())
            .await
            .expect_err(&inputs.to_string());
        assert_eq!(
            err.code,
            ErrorCode::InvalidArgument,
            "{inputs}: {}",
            err.message
        );
        assert_eq!(
            err.field.as_deref(),
            Some(field),
            "{inputs}: {}",
            err.message
        );
    }
    let id = uuid::Uuid::new_v4().to_string();
    let iso = |url: String| {
        json!({
            "label": "BOOT", "ipxeUefiUrl": url, "ipxeBiosUrl": id, "grubImgUrl": id,
            "grubEfiX64Url": id, "grubEfiX86Url": id, "ldLinuxUrl": id, "isolinuxBinUrl": id,
            "isohdpfxBinUrl": id,
        })
    };
    for url in [
        format!("http://evil.example/ipxes/{id}/ipxe.efi"),
        format!("/grubs/{id}/x"),
        id.clone(),
    ] {
        let err = lab.create("isos", iso(url.clone())).await.expect_err(&url);
        assert_eq!(
            err.code,
            ErrorCode::InvalidArgument,
            "{url}: {}",
            err.message
        );
        assert_eq!(
            err.field.as_deref(),
            Some("ipxeUefiUrl"),
            "{url}: {}",
            err.message
        );
    }
    let list: proto::ArtifactList = lab
        .bus
        .request(
            &bootfleet_bus::TraceParent::new_root(),
            &subjects::subject(subjects::ARTIFACTS, Op::List),
            &proto::ListArtifacts {
                kind: "ipxes".into(),
                list: None,
            },
        )
        .await
        .expect("list");
    assert_eq!(list.total, 0, "nothing stored");
    lab.stop().await;
}

/// A fake iPXE source tree: a real GNU make runs this Makefile for any target.
fn fake_ipxe_tree(dir: &Path, recipe: &str) -> std::path::PathBuf {
    let src = dir.join("ipxe-src/src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("Makefile"), format!("%:\n{recipe}\n")).expect("makefile");
    dir.join("ipxe-src")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_timed_out_builds_end_failed_with_the_tools_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut toolbox = Toolbox::debian();
    toolbox.ipxe_source = Some(fake_ipxe_tree(
        dir.path(),
        "\t@echo 'src/arch/x86/core: no such compiler (boom)' >&2; exit 2",
    ));
    let row = failed_ipxe_build(toolbox, Duration::from_secs(60)).await;
    assert!(
        row.error.contains("no such compiler (boom)"),
        "{}",
        row.error
    );
    assert!(row.files.is_empty());

    let dir = tempfile::tempdir().expect("tempdir");
    let mut toolbox = Toolbox::debian();
    toolbox.ipxe_source = Some(fake_ipxe_tree(dir.path(), "\tsleep 60"));
    toolbox.timeout = Duration::from_secs(2);
    let row = failed_ipxe_build(toolbox, Duration::from_secs(30)).await;
    assert!(
        row.error.contains("timed out") || row.error.contains("timeout"),
        "{}",
        row.error
    );
}

/// Builds an EFI iPXE with `toolbox` in a lab of its own, waiting at most `within`; the build
/// must fail. Its row.
async fn failed_ipxe_build(toolbox: Toolbox, within: Duration) -> proto::Artifact {
    let lab = Lab::start(toolbox).await;
    let row = lab
        .create("ipxes", efi_ipxe("#!ipxe\nshell\n"))
        .await
        .expect("create");
    let (row, _) = lab.finished("ipxes", &row.id, within).await;
    lab.stop().await;
    assert_eq!(row.status, "failed", "{row:?}");
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iso_is_built_from_artifacts_of_this_system() {
    let lab = Lab::start(Toolbox::debian()).await;
    let script = "#!ipxe\ndhcp\nchain http://10.0.2.100/booted\n";
    let uefi = lab.build("ipxes", efi_ipxe(script)).await;
    let bios = lab
        .build(
            "ipxes",
            json!({"script": script, "platform": "bin", "driver": "ipxe", "extension": "lkrn"}),
        )
        .await;
    // The label and platform as the original tutorial sends them.
    const LABEL: &str = "Cluster Platform Provisioner ISO";
    let grub = |arch: &str, fragment: &str| json!({"label": LABEL, "platform": "x86_64-efi", "architecture": arch, "extension": "efi", "fragment": fragment});
    let grub_img = lab.build("grubs", grub("x64", "img")).await;
    let grub_x64 = lab.build("grubs", grub("x64", "efi")).await;
    let grub_x86 = lab.build("grubs", grub("x86", "efi")).await;
    let ldlinux = lab
        .build("syslinuxs", json!({"fragment": "ldlinux.c32"}))
        .await;
    let isolinux = lab
        .build("syslinuxs", json!({"fragment": "isolinux.bin"}))
        .await;
    let isohdpfx = lab
        .build("syslinuxs", json!({"fragment": "isohdpfx.bin"}))
        .await;
    let url = |kind: &str, a: &proto::Artifact| format!("/{kind}/{}/{}", a.id, a.files[0].name);
    let inputs = json!({
        "label": LABEL,
        "ipxeUefiUrl": url("ipxes", &uefi),
        "ipxeBiosUrl": bios.id,
        "grubImgUrl": url("grubs", &grub_img),
        "grubEfiX64Url": url("grubs", &grub_x64),
        "grubEfiX86Url": url("grubs", &grub_x86),
        "ldLinuxUrl": url("syslinuxs", &ldlinux),
        "isolinuxBinUrl": url("syslinuxs", &isolinux),
        "isohdpfxBinUrl": url("syslinuxs", &isohdpfx),
    });
    let iso = lab.build("isos", inputs.clone()).await;
    let bytes = lab.object(&iso.key, &iso.files[0].name).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dist.iso");
    std::fs::write(&path, &bytes).expect("write");
    let report = std::process::Command::new("xorriso")
        .args(["-indev"])
        .arg(&path)
        .args(["-report_el_torito", "plain"])
        .output()
        .expect("xorriso");
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(text.contains("BIOS") && text.contains("UEFI"), "{text}");
    // What the queue built boots: SeaBIOS from the CD runs the artifact's script, whose request
    // reaches a recorder on loopback (the guest's only way out).
    let recorder = HttpRecorder::start("#!ipxe\necho served\n");
    let guest = Qemu::local(
        &LocalBoot::Cdrom(path.clone()),
        Firmware::Bios,
        recorder.port(),
    );
    let seen =
        tokio::task::spawn_blocking(move || recorder.wait_for("/booted", Duration::from_secs(60)))
            .await
            .expect("wait");
    assert!(
        seen.is_some(),
        "the ISO did not run its script.\nserial:\n{}",
        guest.serial()
    );
    drop(guest);
    // The same parts again: done at once.
    let again = lab.create("isos", inputs.clone()).await.expect("again");
    assert_eq!(again.status, "done");

    // A part of the wrong kind, or a grub built for another label, is named.
    let mut wrong = inputs.clone();
    wrong["grubImgUrl"] = json!(url("grubs", &grub_x64));
    let err = lab
        .create("isos", wrong)
        .await
        .expect_err("efi grub as img");
    assert_eq!(err.field.as_deref(), Some("grubImgUrl"), "{}", err.message);
    let mut relabelled = inputs.clone();
    relabelled["label"] = json!("OTHER");
    let err = lab.create("isos", relabelled).await.expect_err("label");
    assert_eq!(err.field.as_deref(), Some("grubImgUrl"), "{}", err.message);
    lab.stop().await;
}

/// Each kind has its own builders: a job waits while no builder of its kind runs (builders of
/// other kinds go on with theirs), and is built once one starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waits_for_a_builder_of_its_kind() {
    let mut lab = Lab::start_with_builders(Toolbox::debian(), &[ArtifactKind::Syslinuxs]).await;
    let waiting = lab
        .create(
            "ipxes",
            efi_ipxe("#!ipxe\necho waits for an ipxes builder\n"),
        )
        .await
        .expect("create");
    assert_eq!(waiting.status, "queued");
    // A job of a kind that has a builder is built meanwhile: the queue moves, only not for ipxes.
    lab.build("syslinuxs", json!({"fragment": "ldlinux.c32"}))
        .await;
    let still = lab.get("ipxes", &waiting.id).await;
    assert_eq!(still.status, "queued", "built with no ipxes builder");

    lab.start_builder(ArtifactKind::Ipxes).await;
    lab.done("ipxes", &waiting.id).await;
    lab.stop().await;
}

/// A build consumer made earlier with another ack wait (the old 30 s default) takes the
/// builder's own setting when the builder starts, so a dead builder's job moves on in seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builder_updates_a_consumer_made_with_an_older_ack_wait() {
    let mut lab = Lab::start_with_builders(Toolbox::debian(), &[]).await;
    let stream = bootfleet_artifacts::worker::ensure_stream(&lab.bus)
        .await
        .expect("stream");
    let old = WorkerConfig {
        ack_wait: Duration::from_secs(30),
        max_deliver: 5,
    };
    bootfleet_artifacts::worker::job_consumer(&stream, ArtifactKind::Ipxes, old)
        .await
        .expect("old consumer");
    lab.start_builder(ArtifactKind::Ipxes).await;
    let info = stream
        .consumer_info("builders-ipxes")
        .await
        .expect("consumer info");
    assert_eq!(info.config.ack_wait, WORKER.ack_wait);
    assert_eq!(info.config.max_deliver, WORKER.max_deliver);
    lab.stop().await;
}

/// Takes the build queue away (as in the seconds a NATS cluster elects its new leader), and
/// gives it back after `away` if that is set.
async fn queue_away(lab: &Lab, away: Option<Duration>) {
    let js = jetstream::new(lab.bus.client().clone());
    js.delete_stream(subjects::BUILD_STREAM)
        .await
        .expect("delete the build stream");
    if let Some(away) = away {
        let bus = lab.bus.clone();
        tokio::spawn(async move {
            tokio::time::sleep(away).await;
            bootfleet_artifacts::worker::ensure_stream(&bus)
                .await
                .expect("the build stream again");
        });
    }
}

/// A create meeting a build queue that cannot take its job keeps offering it: the row is
/// answered `queued` (never "unavailable", which would say nothing was stored) and built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_created_while_the_queue_is_away_is_queued_when_it_is_back() {
    let mut lab = Lab::start_with_builders(Toolbox::debian(), &[]).await;
    queue_away(&lab, Some(Duration::from_millis(1500))).await;
    let row = lab
        .create("syslinuxs", json!({"fragment": "ldlinux.c32"}))
        .await
        .expect("a create while the queue is away is answered, not refused");
    assert_eq!(row.status, "queued", "{}", row.error);
    lab.start_builder(ArtifactKind::Syslinuxs).await;
    lab.done("syslinuxs", &row.id).await;
    lab.stop().await;
}

/// A queue that stays away longer than the create's wait: the stored row is answered as it is,
/// `failed` with the reason, and reads back the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_the_queue_never_takes_is_answered_and_stored_failed() {
    let lab = Lab::start_with_builders(Toolbox::debian(), &[]).await;
    queue_away(&lab, None).await;
    let row = lab
        .create("syslinuxs", json!({"fragment": "ldlinux.c32"}))
        .await
        .expect("a stored row is answered, never refused");
    assert_eq!(row.status, "failed");
    assert!(
        row.error.contains("cannot queue the build"),
        "{}",
        row.error
    );
    let stored = lab.get("syslinuxs", &row.id).await;
    assert_eq!(stored.status, "failed");
    assert_eq!(stored.error, row.error);
    lab.stop().await;
}
