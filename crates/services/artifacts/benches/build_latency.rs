//! Time from create to `done` for a new iPXE artifact, a repeated one (content already built),
//! and a new ISO (its parts built beforehand), on a real nats-server, SQLite and Debian's tools.
//!
//!     cargo bench -p bootfleet-artifacts --bench build_latency
//!
//! Bounded: a fixed number of builds, each with a 120 s cap.

use std::time::{Duration, Instant};

use bootfleet_api::proto;
use bootfleet_api::subjects::{self, Op};
use bootfleet_artifacts::worker::WorkerConfig;
use bootfleet_boot_media::Toolbox;
use bootfleet_bus::{Bus, BusConfig, TraceParent};
use bootfleet_testkit::{database_url, Backend, NatsServer};
use serde_json::json;

const NEW_IPXE: usize = 10;
const REPEATED: usize = 30;
const NEW_ISO: usize = 5;

async fn create(bus: &Bus, kind: &str, inputs: serde_json::Value) -> proto::Artifact {
    let req = proto::CreateArtifact {
        kind: kind.into(),
        id: uuid::Uuid::new_v4().to_string(),
        inputs_json: inputs.to_string(),
    };
    bus.request(
        &TraceParent::new_root(),
        &subjects::subject(subjects::ARTIFACTS, Op::Create),
        &req,
    )
    .await
    .expect("create")
}

/// Creates and waits for `done`; returns the row and the time it took.
async fn build(bus: &Bus, kind: &str, inputs: serde_json::Value) -> (proto::Artifact, Duration) {
    let start = Instant::now();
    let mut row = create(bus, kind, inputs).await;
    while row.status != "done" {
        assert_ne!(row.status, "failed", "{}", row.error);
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "build took over 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        row = bus
            .request(
                &TraceParent::new_root(),
                &subjects::subject(subjects::ARTIFACTS, Op::Get),
                &proto::ArtifactRef {
                    kind: kind.into(),
                    id: row.id.clone(),
                },
            )
            .await
            .expect("get");
    }
    (row, start.elapsed())
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what:<28} n={:<3} min {:>8.1} ms  median {:>8.1} ms  p90 {:>8.1} ms  max {:>8.1} ms",
        samples.len(),
        ms(samples[0]),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(samples[samples.len() - 1])
    );
}

fn ipxe(script: &str, platform: &str, extension: &str) -> serde_json::Value {
    json!({"script": script, "platform": platform, "driver": "ipxe", "extension": extension})
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Bus::connect(&BusConfig::new(nats.url(), "build-bench"))
        .await
        .expect("connect")
        .with_timeout(Duration::from_secs(30), 1);
    let db = bootfleet_store::connect(&database_url(Backend::Sqlite, dir.path()))
        .await
        .expect("db");
    let toolbox = Toolbox::debian();
    let service = bootfleet_artifacts::start_with(bus.clone(), db.clone(), toolbox.clone())
        .await
        .expect("service");
    let builders = bootfleet_artifacts::worker::start_with(
        bus.clone(),
        db,
        WorkerConfig {
            ack_wait: Duration::from_secs(30),
            max_deliver: 3,
        },
        toolbox,
    )
    .await
    .expect("builders");

    let mut new = Vec::new();
    for i in 0..NEW_IPXE {
        let script = format!("#!ipxe\necho new {i}\n");
        new.push(
            build(&bus, "ipxes", ipxe(&script, "bin-x86_64-efi", "efi"))
                .await
                .1,
        );
    }
    report("new ipxe (prebuilt)", new);

    let mut repeated = Vec::new();
    for _ in 0..REPEATED {
        repeated.push(
            build(
                &bus,
                "ipxes",
                ipxe("#!ipxe\necho new 0\n", "bin-x86_64-efi", "efi"),
            )
            .await
            .1,
        );
    }
    report("repeated ipxe (cached)", repeated);

    // An ISO's parts, built once; each ISO gets its own UEFI script, so each ISO is new content.
    let label = "BENCH";
    let grub = |arch: &str, fragment: &str| json!({"label": label, "platform": "efi", "architecture": arch, "extension": "efi", "fragment": fragment});
    let (bios, _) = build(&bus, "ipxes", ipxe("#!ipxe\ndhcp\n", "bin", "lkrn")).await;
    let (img, _) = build(&bus, "grubs", grub("x64", "img")).await;
    let (x64, _) = build(&bus, "grubs", grub("x64", "efi")).await;
    let (x86, _) = build(&bus, "grubs", grub("x86", "efi")).await;
    let (ldlinux, _) = build(&bus, "syslinuxs", json!({"fragment": "ldlinux.c32"})).await;
    let (isolinux, _) = build(&bus, "syslinuxs", json!({"fragment": "isolinux.bin"})).await;
    let (isohdpfx, _) = build(&bus, "syslinuxs", json!({"fragment": "isohdpfx.bin"})).await;
    let mut isos = Vec::new();
    for i in 0..NEW_ISO {
        let (uefi, _) = build(
            &bus,
            "ipxes",
            ipxe(&format!("#!ipxe\necho iso {i}\n"), "bin-x86_64-efi", "efi"),
        )
        .await;
        let inputs = json!({
            "label": label, "ipxeUefiUrl": uefi.id, "ipxeBiosUrl": bios.id, "grubImgUrl": img.id,
            "grubEfiX64Url": x64.id, "grubEfiX86Url": x86.id, "ldLinuxUrl": ldlinux.id,
            "isolinuxBinUrl": isolinux.id, "isohdpfxBinUrl": isohdpfx.id,
        });
        isos.push(build(&bus, "isos", inputs).await.1);
    }
    report("new iso (parts built)", isos);

    for builder in builders {
        builder.stop().await;
    }
    service.stop().await;
}
