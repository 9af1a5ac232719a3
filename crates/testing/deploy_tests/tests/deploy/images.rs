//! Every image builds on the Docker engine from the locally made base (`scripts/docker-base`,
//! `scripts/docker-images`), runs as a non-root user with a health check, a builder carries
//! its own kind's tools and no other's, and the distributor holds exactly its two capabilities.

use std::process::Command;
use std::time::Duration;

use crate::support::{self, inspect, stdout, Container};

const IMAGES: [&str; 9] = [
    "bootfleet",
    "bootfleet-builder-ipxes",
    "bootfleet-builder-grubs",
    "bootfleet-builder-syslinuxs",
    "bootfleet-builder-isos",
    "bootfleet-builders",
    "bootfleet-distributor",
    "bootfleet-nats",
    "bootfleet-postgres",
];

/// What each kind's builder runs: programs on PATH and package files.
const IPXE: &[&str] = &["/usr/lib/ipxe/ipxe.efi", "/usr/lib/ipxe/undionly.kpxe"];
const GRUB: &[&str] = &[
    "grub-mkimage",
    "mformat",
    "zip",
    "/usr/lib/grub/x86_64-efi/kernel.img",
    "/usr/lib/grub/i386-efi/kernel.img",
];
const SYSLINUX: &[&str] = &[
    "/usr/lib/syslinux/modules/bios/ldlinux.c32",
    "/usr/lib/ISOLINUX/isolinux.bin",
    "/usr/lib/ISOLINUX/isohdpfx.bin",
];
const ISO: &[&str] = &["xorriso", "mcopy", "unzip"];

/// Which of `things` exist in `image` (a path, or a program on PATH).
fn present(image: &str, things: &[&str]) -> Vec<String> {
    let script = things
        .iter()
        .map(|t| {
            if t.starts_with('/') {
                format!("[ -e {t} ] && echo {t};")
            } else {
                format!("command -v {t} >/dev/null && echo {t};")
            }
        })
        .collect::<String>();
    let out = support::run(
        Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                "sh",
                image,
                "-c",
            ])
            .arg(format!("{script} true")),
    );
    stdout(&out).lines().map(String::from).collect()
}

#[test]
fn every_image_builds_runs_unprivileged_and_carries_only_its_tools() {
    let Some((_machine, images)) = support::container_test() else {
        return;
    };
    for name in IMAGES {
        let image = images.image(name);
        let user = inspect(&image, "{{.Config.User}}");
        assert!(
            !user.is_empty() && user != "root" && !user.starts_with("0:") && user != "0",
            "{image} runs as {user:?}"
        );
        let health = inspect(&image, "{{json .Config.Healthcheck.Test}}");
        assert!(
            health.starts_with("[\"CMD"),
            "{image} has no HEALTHCHECK: {health}"
        );
        let size: u64 = inspect(&image, "{{.Size}}").parse().expect("size");
        eprintln!("{image}: {} MB", size / 1_000_000);
    }

    // Each builder holds its kind's tools and none that only another kind runs (mtools serves
    // both GRUB images and ISOs); the services' image holds none.
    let only_others: [(&str, &[&str], &[&str]); 4] = [
        (
            "ipxes",
            IPXE,
            &[
                "grub-mkimage",
                "mformat",
                "xorriso",
                "/usr/lib/ISOLINUX/isolinux.bin",
            ],
        ),
        (
            "grubs",
            GRUB,
            &[
                "/usr/lib/ipxe/ipxe.efi",
                "xorriso",
                "/usr/lib/ISOLINUX/isolinux.bin",
            ],
        ),
        (
            "syslinuxs",
            SYSLINUX,
            &[
                "/usr/lib/ipxe/ipxe.efi",
                "grub-mkimage",
                "mformat",
                "xorriso",
            ],
        ),
        (
            "isos",
            ISO,
            &[
                "/usr/lib/ipxe/ipxe.efi",
                "grub-mkimage",
                "/usr/lib/ISOLINUX/isolinux.bin",
            ],
        ),
    ];
    for (kind, tools, foreign) in only_others {
        let image = images.image(&format!("bootfleet-builder-{kind}"));
        let expected: Vec<String> = tools.iter().map(|t| t.to_string()).collect();
        assert_eq!(present(&image, tools), expected, "{image}: its own tools");
        assert_eq!(
            present(&image, foreign),
            Vec::<String>::new(),
            "{image}: another kind's tools"
        );
        // The image runs the builder of its own kind.
        let env = inspect(&image, "{{json .Config.Env}}");
        assert!(
            env.contains(&format!("BOOTFLEET_BUILDER_KIND={kind}")),
            "{image}: {env}"
        );
    }
    let everything: Vec<&str> = [IPXE, GRUB, SYSLINUX, ISO].concat();
    let all = present(&images.image("bootfleet-builders"), &everything);
    assert_eq!(
        all.len(),
        everything.len(),
        "bootfleet-builders has {all:?}"
    );
    assert_eq!(
        present(&images.image("bootfleet"), &everything),
        Vec::<String>::new()
    );

    // The binaries (built on this machine) run on the image's Debian 13; a builder image given
    // arguments runs `bootfleet <arguments>` instead of its builder.
    for name in ["bootfleet", "bootfleet-builders"] {
        let version = support::run(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            &images.image(name),
            "--version",
        ]));
        assert!(
            stdout(&version).starts_with("bootfleet "),
            "{name}: {}",
            stdout(&version)
        );
    }
    // The health check finds the role of the process beside it; alone, it finds none and fails.
    let alone = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            &images.image("bootfleet"),
            "healthcheck",
        ])
        .output()
        .expect("docker run");
    assert!(!alone.status.success());
    assert!(
        String::from_utf8_lossy(&alone.stderr)
            .contains("no `bootfleet gateway` or `bootfleet service` process"),
        "{}",
        String::from_utf8_lossy(&alone.stderr)
    );
}

#[test]
fn the_distributor_image_holds_exactly_its_two_capabilities() {
    let Some((_machine, images)) = support::container_test() else {
        return;
    };
    let image = images.image("bootfleet-distributor");
    // Serving on loopback in a container with no network at all: nothing reaches a real interface.
    let mut args = vec!["--network", "none", "--health-interval", "1s"];
    args.extend(support::DISTRIBUTOR_CAPABILITIES);
    args.extend([
        &*image,
        "serve",
        "--interface",
        "lo",
        "--server-ip",
        "127.0.0.1",
    ]);
    let serving = Container::run(&args);
    assert!(
        serving.healthy_within(Duration::from_secs(60)),
        "not healthy: {}",
        serving.logs()
    );
    let status = stdout(&support::run(Command::new("docker").args([
        "exec",
        &serving.id,
        "cat",
        "/proc/1/status",
    ])));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    // Bits 10 (NET_BIND_SERVICE) and 13 (NET_RAW), and nothing else; a non-root uid.
    assert_eq!(field("CapEff:"), "0000000000002400", "{status}");
    assert_eq!(field("CapPrm:"), "0000000000002400", "{status}");
    assert!(field("Uid:").starts_with("10002"), "{status}");
    drop(serving);

    // Without the two in the container's bounding set, the binary does not even start.
    let refused = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            &image,
            "--version",
        ])
        .output()
        .expect("docker run");
    assert!(!refused.status.success(), "it ran without its capabilities");
}
