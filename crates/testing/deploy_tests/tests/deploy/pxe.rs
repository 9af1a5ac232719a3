//! The distributor image serves a real PXE boot. On a site it runs with `--network host`; here
//! its container gets a LAN of its own instead, so nothing touches this machine's interfaces:
//!
//! ```text
//!  router ns:  r0 10.79.0.1     dnsmasq: the site's plain DHCP (+ IPv6 RA), no PXE options
//!  infra ns:   i0 10.79.0.2     `bootfleet up` (release binary): services, gateway :8080, and
//!                               its nats-server on 10.79.0.2 with a login for site-ctr
//!  container:  lan0 10.79.0.3   bootfleet-distributor image, NET_BIND_SERVICE + NET_RAW only
//!  lan ns:     br0 + tap0       a QEMU guest (SeaBIOS, iPXE ROM)
//! ```
//!
//! The container's network namespace is made by a first container, `docker run --network none`
//! (the image itself running `sleep`, as a Kubernetes pod's sandbox holds its namespace); a veth
//! is created with one end directly in that namespace (`ip link add ... netns <its pid>`) and the
//! other on the lab's bridge; then the distributor container joins it
//! (`--network container:<sandbox>`) and starts with its interface already there, as on a host.
//! Everything is removed when the test ends, also when it fails.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bootfleet_testkit::netlab::{NetLab, SiteDhcp};
use bootfleet_testkit::qemu::{Firmware, Qemu};
use serde_json::{json, Value};

use crate::support::{self, inspect, release_binary, wait_for, Container};

const INFRA: &str = "10.79.0.2";
const DISTRIBUTOR_CIDR: &str = "10.79.0.3/24";
const DISTRIBUTOR_IP: &str = "10.79.0.3";
const SITE: &str = "site-ctr";
const MAC: &str = "52:54:00:79:00:10";
const MARKER: &str = "bootfleet-container-pxe-ok";

/// `bootfleet up` inside the infra namespace; stopped with SIGTERM (so it stops its own
/// nats-server) when dropped.
struct Up {
    child: Child,
    out: std::path::PathBuf,
}

impl Up {
    fn start(lab: &NetLab, ns: &str, data: &Path) -> Up {
        let out = data.join("up.out");
        let child = lab
            .command(ns, release_binary("bootfleet"))
            .args([
                "up",
                "--listen",
                &format!("{INFRA}:8080"),
                "--nats-listen",
                INFRA,
            ])
            .args(["--distributor", SITE])
            .env("BOOTFLEET_DATA_DIR", data)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("up.out"))
            .stderr(std::fs::File::create(data.join("up.err")).expect("up.err"))
            .spawn()
            .expect("start bootfleet up");
        Up { child, out }
    }

    fn printed(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.out) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(self.out.with_file_name("up.err")).unwrap_or_default()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let stopped = bootfleet_testkit::wait_until(
            Duration::from_secs(20),
            Duration::from_millis(100),
            || matches!(self.child.try_wait(), Ok(Some(_))),
        );
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `KEY=value` from a printed line of words.
fn word(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in {line:?}"))
        .to_owned()
}

fn in_netns(pid: &str, args: &[&str]) {
    support::run(
        Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(args),
    );
}

#[test]
fn the_distributor_image_pxe_boots_a_guest_through_its_own_lan_link() {
    let Some((_machine, images)) = support::container_test() else {
        return;
    };
    let image = images.image("bootfleet-distributor");

    let mut lab = NetLab::new();
    let router = lab.host("router", "r0", "10.79.0.1/24", Some("fd79::1/64"));
    let infra = lab.host("infra", "i0", &format!("{INFRA}/24"), None);
    lab.tap("tap0");
    let _site_dhcp = SiteDhcp::start(&lab, &router, "r0", "10.79.0.100,10.79.0.199", true);

    let data = tempfile::tempdir().expect("tempdir");
    let up = Up::start(&lab, &infra, data.path());
    let ready = wait_for(Duration::from_secs(90), || {
        up.printed().contains("Press Ctrl-C to stop.")
    });
    assert!(
        ready,
        "bootfleet up did not start:\n{}\n{}",
        up.printed(),
        up.errors()
    );
    let printed = up.printed();
    let admin = printed
        .lines()
        .find_map(|l| l.strip_prefix("export BOOTFLEET_TOKEN="))
        .expect("admin token")
        .to_owned();
    let nats_url = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("NATS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("NATS line")
        .to_owned();
    assert!(
        nats_url.starts_with(&format!("nats://{INFRA}:")),
        "{nats_url}"
    );
    let login = printed
        .lines()
        .find(|l| l.contains(&format!("NATS_USER=distributor-{SITE} ")))
        .unwrap_or_else(|| panic!("no login for {SITE}:\n{printed}"));
    let node = support::stdout(&support::run(
        Command::new(release_binary("bootfleet"))
            .args(["token", "--role", "node", "--site", SITE])
            .env("BOOTFLEET_DATA_DIR", data.path()),
    ))
    .trim()
    .to_owned();

    let gateway = format!("http://{INFRA}:8080");
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    // The script the guest must reach: served by the gateway, chained by the distributor.
    let main = lab.run_in(&infra, || {
        runtime().block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{gateway}/api/mainscripts"))
                .bearer_auth(&admin)
                .json(&json!({"text": format!("#!ipxe\necho {MARKER}\nshell\n")}))
                .send()
                .await
                .expect("create mainscript");
            assert_eq!(r.status(), 201);
            let row: Value = r.json().await.expect("row");
            row["id"].as_str().expect("id").to_owned()
        })
    });

    // The namespace, held by a container with no network of its own; the LAN link goes straight
    // into it (never into this machine's namespace), its peer onto the lab's bridge.
    let sandbox = Container::run(&[
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "--entrypoint",
        "sleep",
        &image,
        "infinity",
    ]);
    let pid = inspect(&sandbox.id, "{{.State.Pid}}");
    assert!(
        pid.parse::<u32>().is_ok_and(|p| p > 0),
        "sandbox pid {pid:?}"
    );
    let lan = lab.ns("lan");
    support::run(Command::new("ip").args([
        "link", "add", "name", "lan0", "netns", &pid, "type", "veth", "peer", "name", "pc0",
        "netns", &lan,
    ]));
    support::run(
        Command::new("ip").args(["-n", &lan, "link", "set", "pc0", "master", "br0", "up"]),
    );
    in_netns(
        &pid,
        &["sysctl", "-q", "-w", "net.ipv6.conf.lan0.disable_ipv6=1"],
    );
    in_netns(
        &pid,
        &["ip", "addr", "add", DISTRIBUTOR_CIDR, "dev", "lan0"],
    );
    in_netns(&pid, &["ip", "link", "set", "lan0", "up"]);

    let network = format!("container:{}", sandbox.id);
    let script_url = format!("{gateway}/api/mainscripts/{main}?token={node}");
    let env = [
        format!("NATS_URL={nats_url}"),
        format!("NATS_USER={}", word(login, "NATS_USER")),
        format!("NATS_PASSWORD={}", word(login, "NATS_PASSWORD")),
        format!("NATS_INBOX_PREFIX={}", word(login, "NATS_INBOX_PREFIX")),
        format!("DISTRIBUTOR_ARTIFACT_ID={SITE}"),
        "DISTRIBUTOR_INTERFACE=lan0".to_owned(),
        format!("DISTRIBUTOR_SERVER_IP={DISTRIBUTOR_IP}"),
        format!("DISTRIBUTOR_IPXE_SCRIPT_URL={script_url}"),
        "BOOTFLEET_LOG=debug".to_owned(),
    ];
    let mut args: Vec<&str> = vec!["--network", &network, "--health-interval", "2s"];
    args.extend(support::DISTRIBUTOR_CAPABILITIES);
    for e in &env {
        args.extend(["-e", e.as_str()]);
    }
    args.extend([image.as_str(), "serve"]);
    let distributor = Container::run(&args);
    assert!(
        distributor.healthy_within(Duration::from_secs(60)),
        "the distributor container is not healthy:\n{}",
        distributor.logs()
    );

    let guest = Qemu::netboot(&lab, "tap0", MAC, Firmware::Bios);
    let booted = guest.wait_for_serial(MARKER, Duration::from_secs(180));
    assert!(
        booted,
        "the guest did not reach the script.\nserial:\n{}\ndistributor:\n{}",
        guest.serial(),
        distributor.logs()
    );
    drop(guest);

    // Connected to NATS with its site's own login, registered and online, on its LAN link.
    let row = lab.run_in(&infra, || {
        runtime().block_on(async {
            let http = reqwest::Client::new();
            let mut last = Value::Null;
            for _ in 0..60 {
                let list: Value = http
                    .get(format!("{gateway}/api/distributors?search={SITE}"))
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .expect("list distributors")
                    .json()
                    .await
                    .expect("json");
                last = list["rows"][0].clone();
                if last["online"] == true {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            last
        })
    });
    assert_eq!(row["artifactId"], SITE, "{row}");
    assert_eq!(row["online"], true, "{row}");
    // The guest learnt the script URL only from the distributor (the site's DHCP sends no PXE
    // options), over the container's proxyDHCP and TFTP.
    assert!(
        row["interfaces"]
            .as_array()
            .is_some_and(|i| i.contains(&json!("lan0"))),
        "{row}"
    );
}
