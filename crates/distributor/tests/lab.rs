//! Real guests boot through our distributor on a LAN built in network namespaces:
//!
//! ```text
//!  router ns: r0 10.77.0.1  dnsmasq, plain DHCP + IPv6 RA (the site's server; no PXE options)
//!  infra ns:  i0 10.77.0.2  nats-server, services + gateway (:8080), bootfleet-distributor
//!  lan ns:    br0 + tap0    QEMU guest (TCG)
//! ```
//!
//! Every address lives inside these namespaces; they are removed when the test ends.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bootfleet::{System, SystemConfig};
use bootfleet_bus::BusConfig;
use bootfleet_gateway::auth::{self, Role, Secret, Verifier};
use bootfleet_gateway::{GatewayConfig, DEFAULT_BODY_LIMIT};
use bootfleet_testkit::netlab::{NetLab, SiteDhcp};
use bootfleet_testkit::qemu::{Firmware, Qemu};
use bootfleet_testkit::{ChildGuard, NatsServer};
use serde_json::{json, Value};

const INFRA_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const GATEWAY: &str = "http://10.77.0.2:8080";
const SECRET: &[u8] = b"lab-secret-0123456789abcdef-0123456789";

struct Site {
    lab: NetLab,
    infra: String,
    _dhcp: SiteDhcp,
}

fn site() -> Site {
    let mut lab = NetLab::new();
    let router = lab.host("router", "r0", "10.77.0.1/24", Some("fd77::1/64"));
    let infra = lab.host("infra", "i0", "10.77.0.2/24", None);
    lab.tap("tap0");
    let dhcp = SiteDhcp::start(&lab, &router, "r0", "10.77.0.100,10.77.0.199", true);
    Site {
        lab,
        infra,
        _dhcp: dhcp,
    }
}

fn cache_with_debian_ipxe(dir: &Path) {
    for file in ["undionly.kpxe", "ipxe.efi"] {
        std::fs::copy(Path::new("/usr/lib/ipxe").join(file), dir.join(file))
            .unwrap_or_else(|e| panic!("copy /usr/lib/ipxe/{file} (apt-get install ipxe): {e}"));
    }
}

async fn create(http: &reqwest::Client, admin: &str, kind: &str, text: &str) -> String {
    let r = http
        .post(format!("{GATEWAY}/api/{kind}"))
        .bearer_auth(admin)
        .json(&json!({ "text": text }))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let row: Value = r.json().await.expect("row");
    row["id"].as_str().expect("id").to_owned()
}

/// Boots one guest and waits for the subscript's marker on its console.
fn boot_to_subscript(firmware: Firmware) {
    let site = site();
    let lab = &site.lab;
    lab.run_in(&site.infra, || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let nats = NatsServer::start();
            let dir = tempfile::tempdir().expect("tempdir");
            let secret = Secret::new(SECRET.to_vec()).expect("secret");
            let system = System::start(SystemConfig {
                nats: BusConfig::new(nats.url(), "lab"),
                database_url: bootfleet_store_url(dir.path()),
                listen: "10.77.0.2:8080".parse().expect("addr"),
                gateway: GatewayConfig {
                    verifier: Verifier::new(secret.clone()),
                    open_node_reads: false,
                    body_limit: DEFAULT_BODY_LIMIT,
                },
            })
            .await
            .expect("system");
            let admin = auth::mint(&secret, Role::Admin, "lab", 1).expect("mint");
            let node = auth::mint(&secret, Role::Node, "lab-node", 1).expect("mint");
            let http = reqwest::Client::new();
            let sub = create(&http, &admin, "subscripts", "#!ipxe\necho bootfleet-subscript-ok\n").await;
            let main = create(
                &http,
                &admin,
                "mainscripts",
                &format!("#!ipxe\necho bootfleet-mainscript-ok\nchain {GATEWAY}/api/subscripts/{sub}?token={node}\n"),
            )
            .await;

            let cache = dir.path().join("cache");
            std::fs::create_dir_all(&cache).expect("cache dir");
            cache_with_debian_ipxe(&cache);
            let _distributor = ChildGuard(
                std::process::Command::new(env!("CARGO_BIN_EXE_bootfleet-distributor"))
                    .args(["serve", "--interface", "i0", "--server-ip", &INFRA_IP.to_string()])
                    .arg("--cache-dir")
                    .arg(&cache)
                    .args(["--bios-file", "undionly.kpxe", "--uefi-x64-file", "ipxe.efi"])
                    .arg("--ipxe-script-url")
                    .arg(format!("{GATEWAY}/api/mainscripts/{main}?token={node}"))
                    .env("BOOTFLEET_LOG", "debug")
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.path().join("distributor.log")).expect("log"))
                    .spawn()
                    .expect("start the distributor"),
            );

            let guest = Qemu::netboot(lab, "tap0", "52:54:00:77:00:10", firmware);
            let booted = tokio::task::block_in_place(|| {
                guest.wait_for_serial("bootfleet-subscript-ok", Duration::from_secs(120))
            });
            let distributor_log = std::fs::read_to_string(dir.path().join("distributor.log")).unwrap_or_default();
            assert!(
                booted,
                "guest did not reach the subscript.\nserial:\n{}\ndistributor:\n{distributor_log}",
                guest.serial()
            );
            assert!(guest.serial().contains("bootfleet-mainscript-ok"));
            drop(guest);
            system.stop().await;
        });
    });
}

fn bootfleet_store_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("bootfleet.db").display())
}

/// SeaBIOS + QEMU's iPXE ROM: the ROM is already iPXE, so proxyDHCP hands it the script URL.
#[test]
fn bios_guest_boots_through_our_proxy_dhcp_to_the_scripts() {
    boot_to_subscript(Firmware::Bios);
}

/// OVMF's own UEFI PXE: proxyDHCP names ipxe.efi, TFTP serves it, and that iPXE gets the
/// script URL on its own DHCP round.
#[test]
fn uefi_guest_boots_through_proxy_dhcp_and_tftp_to_the_scripts() {
    boot_to_subscript(Firmware::Uefi);
}
