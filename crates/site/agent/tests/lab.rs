//! Real guests boot through our distributor on a LAN built in network namespaces:
//!
//! ```text
//!  router ns: r0 10.77.0.1  dnsmasq, plain DHCP + IPv6 RA (the site's server; no PXE options)
//!  infra ns:  i0 10.77.0.2  nats-server, services + gateway (:8080), bootfleet-distributor
//!                           (proxyDHCP, TFTP, HTTP boot :8081)
//!  lan ns:    br0 + tap0    QEMU guest (TCG)
//! ```
//!
//! Or, with the distributor on the DHCP server's host: no router namespace, dnsmasq on i0
//! (10.77.0.2) beside everything else.
//!
//! Every address lives inside these namespaces; they are removed when the test ends.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bootfleet::{System, SystemConfig};
use bootfleet_bus::BusConfig;
use bootfleet_gateway::auth::{self, Role, Secret, Verifier};
use bootfleet_testkit::netlab::{NetLab, SiteDhcp};
use bootfleet_testkit::node_image::{NodeImage, REGISTERED_MARKER};
use bootfleet_testkit::qemu::{Firmware, Qemu};
use bootfleet_testkit::sse::EventStream;
use bootfleet_testkit::sshd::Sshd;
use bootfleet_testkit::{eventually, ChildGuard, NatsServer};
use futures_util::StreamExt;
use prost::Message;
use serde_json::{json, Value};

mod power;
mod tftp;
mod tutorial;

const INFRA_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const GATEWAY: &str = "http://10.77.0.2:8080";
const GATEWAY_ADDR: &str = "10.77.0.2:8080";
/// The distributor's HTTP boot (its cache) on the LAN.
const BOOT_HTTP: &str = "http://10.77.0.2:8081";
const SECRET: &[u8] = b"lab-secret-0123456789abcdef-0123456789";
const MAC: &str = "52:54:00:77:00:10";

struct Site {
    lab: NetLab,
    infra: String,
    dhcp: SiteDhcp,
}

/// Where the distributor sits on the site's LAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// An address of its own (10.77.0.2) next to the router's DHCP server (10.77.0.1).
    OwnAddress,
    /// On the DHCP server's host, with its address (10.77.0.2 for both).
    SharedWithDhcp,
}

fn site() -> Site {
    site_with(Layout::OwnAddress)
}

fn site_with(layout: Layout) -> Site {
    let mut lab = NetLab::new();
    let (dhcp_host, dhcp_if, infra) = match layout {
        Layout::OwnAddress => {
            let router = lab.host("router", "r0", "10.77.0.1/24", Some("fd77::1/64"));
            let infra = lab.host("infra", "i0", "10.77.0.2/24", None);
            (router, "r0", infra)
        }
        Layout::SharedWithDhcp => {
            let infra = lab.host("infra", "i0", "10.77.0.2/24", Some("fd77::2/64"));
            (infra.clone(), "i0", infra)
        }
    };
    lab.tap("tap0");
    let dhcp = SiteDhcp::start(&lab, &dhcp_host, dhcp_if, "10.77.0.100,10.77.0.199", true);
    Site { lab, infra, dhcp }
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

/// The system as it runs in the lab's infra namespace: nats-server, every service, the gateway
/// on 10.77.0.2:8080, and a cache holding Debian's iPXE. Call on a thread inside that namespace.
struct Infra {
    nats: NatsServer,
    system: System,
    secret: Secret,
    dir: tempfile::TempDir,
}

impl Infra {
    async fn start() -> Infra {
        Infra::start_on(None).await
    }

    /// [`Infra::start`] on `database_url` (`None`: a SQLite file of its own).
    async fn start_on(database_url: Option<String>) -> Infra {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = Secret::new(SECRET.to_vec()).expect("secret");
        let system = System::start(SystemConfig {
            nats: BusConfig::new(nats.url(), "lab"),
            database_url: database_url.unwrap_or_else(|| bootfleet_store_url(dir.path())),
            listen: "10.77.0.2:8080".parse().expect("addr"),
            gateway: bootfleet::gateway_config(Verifier::new(secret.clone())),
        })
        .await
        .expect("system");
        std::fs::create_dir_all(dir.path().join("cache")).expect("cache dir");
        cache_with_debian_ipxe(&dir.path().join("cache"));
        Infra {
            nats,
            system,
            secret,
            dir,
        }
    }

    fn cache(&self) -> std::path::PathBuf {
        self.dir.path().join("cache")
    }

    fn token(&self, role: Role) -> String {
        auth::mint(&self.secret, role, "lab", 1).expect("mint")
    }

    /// Follows `site`'s boot events from now on (the subscription confirmed before it returns).
    async fn boot_events(&self, site: &str) -> async_nats::Subscriber {
        let events = self
            .system
            .bus
            .client()
            .subscribe(bootfleet_api::subjects::boot_events(site))
            .await
            .expect("subscribe to boot events");
        self.system.bus.sync().await.expect("sync");
        events
    }
}

/// One guest to boot: its firmware, its MAC, and the files TFTP must serve it.
struct Guest {
    firmware: Firmware,
    mac: &'static str,
    served: &'static [&'static str],
}

/// Boots guests one after the other all the way: proxyDHCP → (TFTP) → iPXE → mainscript →
/// subscript → Debian's kernel and a test initramfs over the distributor's HTTP boot → the node
/// registers itself with `POST /api/localnodes` using a node token. Checks each registration;
/// that an operator watching the site's events for the guest's MAC
/// (`GET /api/distributors/:id/events`) saw its DHCP answer, then its TFTP transfer; and that
/// the distributor registered itself and reported every boot on NATS.
fn boot_to_registration(layout: Layout, guests: &[Guest]) {
    // Fetched (apt) before entering the namespaces, which reach nothing outside the lab.
    let image = NodeImage::get();
    let site = site_with(layout);
    let lab = &site.lab;
    lab.run_in(&site.infra, || {
        let rt = runtime();
        rt.block_on(async {
            let infra = Infra::start().await;
            let (nats, system, dir) = (&infra.nats, &infra.system, infra.dir.path());
            let admin = infra.token(Role::Admin);
            let node = infra.token(Role::Node);
            let http = reqwest::Client::new();
            let cache = infra.cache();
            for (from, to) in [(&image.kernel, "vmlinuz"), (&image.initrd, "initrd.cpio")] {
                std::fs::copy(from, cache.join(to)).expect("node image into the cache");
            }
            let cmdline = NodeImage::cmdline(&format!("{GATEWAY}/api/localnodes"), "site-lab", &node);
            let sub = create(
                &http,
                &admin,
                "subscripts",
                &format!(
                    "#!ipxe\necho bootfleet-subscript-ok\n\
                     kernel {BOOT_HTTP}/vmlinuz {cmdline}\n\
                     initrd {BOOT_HTTP}/initrd.cpio\n\
                     boot\n"
                ),
            )
            .await;
            let main = create(
                &http,
                &admin,
                "mainscripts",
                &format!("#!ipxe\necho bootfleet-mainscript-ok\nchain {GATEWAY}/api/subscripts/{sub}?token={node}\n"),
            )
            .await;

            let mut events = system
                .bus
                .client()
                .subscribe(bootfleet_api::subjects::ALL_BOOT_EVENTS)
                .await
                .expect("subscribe to boot events");
            let _distributor = ChildGuard(
                distributor(nats.url(), &cache)
                    .env("DISTRIBUTOR_ARTIFACT_ID", "site-lab")
                    .args(["--bios-file", "undionly.kpxe", "--uefi-x64-file", "ipxe.efi"])
                    .args(["--http-port", "8081"])
                    .arg("--ipxe-script-url")
                    .arg(format!("{GATEWAY}/api/mainscripts/{main}?token={node}"))
                    .env("BOOTFLEET_LOG", "debug")
                    .stderr(std::fs::File::create(dir.join("distributor.log")).expect("log"))
                    .spawn()
                    .expect("start the distributor"),
            );
            let distributor_id = distributor_id(&admin, "site-lab").await;

            for (n, guest) in guests.iter().enumerate() {
                // An operator watches this guest's boot as it happens.
                let mut watching = tokio::task::block_in_place(|| {
                    EventStream::open(
                        GATEWAY_ADDR.parse().expect("addr"),
                        &format!("/api/distributors/{distributor_id}/events?mac={}", guest.mac),
                        &admin,
                    )
                });
                let (ready, _) = tokio::task::block_in_place(|| watching.next_event(Duration::from_secs(10)));
                assert_eq!(ready, "ready");

                let started = std::time::Instant::now();
                let vm = Qemu::netboot(lab, "tap0", guest.mac, guest.firmware);
                let registered = tokio::task::block_in_place(|| {
                    vm.wait_for_serial(REGISTERED_MARKER, Duration::from_secs(240))
                });
                eprintln!(
                    "lab timing: {layout:?}, {:?} guest registered {:.1} s after QEMU started",
                    guest.firmware,
                    started.elapsed().as_secs_f64()
                );
                let distributor_log = std::fs::read_to_string(dir.join("distributor.log")).unwrap_or_default();
                assert!(
                    registered,
                    "the {:?} guest did not register.\nserial:\n{}\ndistributor:\n{distributor_log}",
                    guest.firmware,
                    vm.serial()
                );
                let serial = vm.serial();
                for marker in ["bootfleet-mainscript-ok", "bootfleet-subscript-ok"] {
                    assert!(serial.contains(marker), "{marker} missing");
                }
                // The firmware took the site server's lease as it was given: no ACK of ours got
                // in the way (a client that takes an ACK without an address declines it).
                let dhcp_log = site.dhcp.log();
                assert!(
                    !dhcp_log.contains("DHCPDECLINE"),
                    "the {:?} guest declined a lease:\n{dhcp_log}\nserial:\n{serial}",
                    guest.firmware
                );
                let ip = serial
                    .split(REGISTERED_MARKER)
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .expect("the registered address")
                    .to_owned();
                drop(vm);

                // The registration, as the system recorded it: a node of this site, on the LAN.
                let (_, nodes) = api(
                    reqwest::Method::GET,
                    "/api/localnodes?search=site-lab".into(),
                    admin.clone(),
                    None,
                )
                .await;
                assert_eq!(nodes["total"], n + 1, "{nodes}");
                assert!(ip.starts_with("10.77.0.1"), "an address from the site's DHCP range: {ip}");
                assert!(
                    nodes["rows"].as_array().is_some_and(|rows| rows.iter().any(|r| r["ip"] == ip.as_str())),
                    "{ip} not registered: {nodes}"
                );

                // What the operator saw: the guest's DHCP answer, then its first file over TFTP.
                let mut kinds = Vec::new();
                while !kinds.contains(&"tftp_served".to_owned()) {
                    let (kind, data) = tokio::task::block_in_place(|| watching.next_event(Duration::from_secs(30)));
                    let data: Value = serde_json::from_str(&data).expect("json data");
                    assert_eq!(data["mac"], guest.mac, "{data}");
                    assert_eq!(data["artifactId"], "site-lab", "{data}");
                    kinds.push(kind);
                }
                assert_eq!(
                    kinds.iter().position(|k| k == "dhcp_answered"),
                    Some(0),
                    "the DHCP answer first: {kinds:?}"
                );
            }

            // Every boot, as the distributor reported it on NATS.
            let seen = boot_events_until_quiet(&mut events).await;
            for guest in guests {
                assert!(
                    seen.iter().any(|e| e.kind == "dhcp_answered" && e.mac == guest.mac),
                    "no dhcp_answered event for {}: {seen:?}",
                    guest.mac
                );
                let served = guest.served.iter().map(|f| ("tftp_served", *f));
                let over_http = [("http_served", "vmlinuz"), ("http_served", "initrd.cpio")];
                for (kind, file) in served.chain(over_http) {
                    assert!(
                        seen.iter().any(|e| e.kind == kind && e.file == file && e.bytes > 0 && e.mac == guest.mac),
                        "no {kind} event for {file} to {}: {seen:?}",
                        guest.mac
                    );
                }
            }
            assert!(seen.iter().all(|e| e.artifact_id == "site-lab"), "{seen:?}");

            // The distributor registered itself and is online.
            let (_, row) = api(
                reqwest::Method::GET,
                format!("/api/distributors/{distributor_id}"),
                admin.clone(),
                None,
            )
            .await;
            assert_eq!(row["artifactId"], "site-lab", "{row}");
            assert_eq!(row["online"], true);
            assert_eq!(row["on"], true);
            assert!(row["interfaces"].as_array().is_some_and(|i| i.contains(&json!("i0"))), "{row}");
            infra.system.stop().await;
        });
    });
}

/// The row id of the distributor of `site`, once its first heartbeat registered it.
async fn distributor_id(admin: &str, site: &str) -> String {
    for _ in 0..100 {
        let (_, list) = api(
            reqwest::Method::GET,
            format!("/api/distributors?search={site}"),
            admin.to_owned(),
            None,
        )
        .await;
        if let Some(id) = list["rows"][0]["id"].as_str() {
            return id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the distributor of {site} never registered");
}

/// The distributor binary, serving the lab LAN (`i0`, the infra address) from `cache`, talking to
/// NATS at `nats_url`, its output discarded; callers add its site and options.
fn distributor(nats_url: String, cache: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bootfleet-distributor"));
    serving_the_lab(command.env("NATS_URL", nats_url), cache);
    command
}

/// `command` (the distributor binary) serving the lab LAN from `cache`, its output discarded.
fn serving_the_lab<'a>(
    command: &'a mut std::process::Command,
    cache: &Path,
) -> &'a mut std::process::Command {
    command
        .args([
            "serve",
            "--interface",
            "i0",
            "--server-ip",
            &INFRA_IP.to_string(),
        ])
        .arg("--cache-dir")
        .arg(cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

/// The boot events that arrive until none has for 2 s.
async fn boot_events_until_quiet(
    events: &mut async_nats::Subscriber,
) -> Vec<bootfleet_api::proto::BootEvent> {
    let mut seen = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        seen.push(bootfleet_api::proto::BootEvent::decode(msg.payload).expect("boot event"));
    }
    seen
}

/// A runtime for one lab test, on a thread already inside the infra namespace.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One gateway request with `token`: its status and JSON body (`null` if none). `target` is a
/// path on the lab's gateway or a full URL.
async fn api(
    method: reqwest::Method,
    target: String,
    token: String,
    body: Option<Value>,
) -> (u16, Value) {
    let url = if target.starts_with('/') {
        format!("{GATEWAY}{target}")
    } else {
        target
    };
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    (
        r.status().as_u16(),
        r.json::<Value>().await.unwrap_or(Value::Null),
    )
}

fn bootfleet_store_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("bootfleet.db").display())
}

/// SeaBIOS + QEMU's iPXE ROM: the ROM is already iPXE, so proxyDHCP hands it the script URL.
const BIOS_GUEST: Guest = Guest {
    firmware: Firmware::Bios,
    mac: MAC,
    served: &["bootfleet.ipxe"],
};

/// OVMF's own UEFI PXE (the NIC's ROM removed): proxyDHCP names ipxe.efi, TFTP serves it,
/// and that iPXE gets the script URL on its own DHCP round.
const UEFI_GUEST: Guest = Guest {
    firmware: Firmware::Uefi,
    mac: "52:54:00:77:00:11",
    served: &["ipxe.efi", "bootfleet.ipxe"],
};

#[test]
fn bios_guest_boots_through_our_proxy_dhcp_and_registers() {
    boot_to_registration(Layout::OwnAddress, &[BIOS_GUEST]);
}

#[test]
fn uefi_guest_boots_through_proxy_dhcp_and_tftp_and_registers() {
    boot_to_registration(Layout::OwnAddress, &[UEFI_GUEST]);
}

/// The distributor on the site DHCP server's host and address: the firmware's DHCPREQUEST for
/// the server's lease names our address too, and must get only the server's ACK (OVMF took
/// ours, with no address in it, declined its lease and stopped with PXE-E07). Both guests, one
/// lab.
#[test]
fn guests_boot_through_a_distributor_on_the_dhcp_servers_address() {
    boot_to_registration(Layout::SharedWithDhcp, &[UEFI_GUEST, BIOS_GUEST]);
}

mod refusals {
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::{Duration, Instant};

    use bootfleet_netboot::dhcp::{self, MessageType, Op, Packet};
    use bootfleet_netboot::tftp::{self, ErrorCode};
    use bootfleet_site_agent::sockets::{self, Role};
    use bootfleet_testkit::ChildGuard;

    use super::{site, INFRA_IP};

    fn discover(xid: u32, pxe: bool) -> Vec<u8> {
        let mut p = Packet::new(Op::BootRequest);
        p.htype = Packet::HTYPE_ETHERNET;
        p.hlen = 6;
        p.xid = xid;
        p.flags = Packet::FLAG_BROADCAST;
        p.chaddr[..6].copy_from_slice(&[0x52, 0x54, 0x00, 0x77, 0x00, (xid & 0xff) as u8]);
        p.set_message_type(MessageType::Discover);
        if pxe {
            p.set_vendor_class(b"PXEClient:Arch:00000:UNDI:002001");
            p.options.set(dhcp::code::CLIENT_ARCH, vec![0, 0]);
        } else {
            p.set_vendor_class(b"MSFT 5.0");
        }
        p.encode()
    }

    /// Offers for `xid` seen within `wait`, as (server id, packet).
    async fn offers(
        socket: &tokio::net::UdpSocket,
        xid: u32,
        wait: Duration,
    ) -> Vec<(Option<Ipv4Addr>, Packet)> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 2048];
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match tokio::time::timeout(left, socket.recv_from(&mut buf)).await {
                Ok(Ok((len, _))) => {
                    if let Ok(p) = Packet::parse(&buf[..len]) {
                        if p.xid == xid && p.op == Op::BootReply {
                            seen.push((p.server_id(), p));
                        }
                    }
                }
                _ => break,
            }
        }
        seen
    }

    async fn tftp_answer(socket: &tokio::net::UdpSocket, request: &[u8]) -> Vec<u8> {
        socket
            .send_to(request, SocketAddrV4::new(INFRA_IP, 69))
            .await
            .expect("send rrq");
        let mut buf = vec![0u8; 65536];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("recv");
        buf.truncate(len);
        buf
    }

    /// Runs `task` on a runtime of its own, on a thread inside namespace `ns`.
    fn in_namespace<T: Send + 'static, F: std::future::Future<Output = T>>(
        lab: &bootfleet_testkit::netlab::NetLab,
        ns: &str,
        task: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        lab.run_in(ns, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(task())
        })
    }

    /// A PXE client's DHCP socket: udp/68 on interface c0, broadcasting.
    fn dhcp_client() -> tokio::net::UdpSocket {
        sockets::udp(
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            Some("c0"),
            true,
            Role::Peer,
        )
        .expect("bind :68")
    }

    /// The proxy offer with server identifier `server` that answers a PXE DISCOVER on `dhcp`,
    /// within `attempts` tries of 500 ms.
    async fn pxe_offer(
        dhcp: &tokio::net::UdpSocket,
        server: Ipv4Addr,
        attempts: u32,
    ) -> Option<Packet> {
        for attempt in 0..attempts {
            let xid = 0x7000 + attempt;
            dhcp.send_to(
                &discover(xid, true),
                SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
            )
            .await
            .expect("send");
            let ours = offers(dhcp, xid, Duration::from_millis(500)).await;
            if let Some((_, offer)) = ours.into_iter().find(|(id, _)| *id == Some(server)) {
                return Some(offer);
            }
        }
        None
    }

    /// From namespace `client` (interface c0), whether our proxy answers a PXE DISCOVER within
    /// `attempts` tries of 500 ms.
    pub(super) fn pxe_offer_seen(
        lab: &bootfleet_testkit::netlab::NetLab,
        client: &str,
        attempts: u32,
    ) -> bool {
        pxe_offer_from(lab, client, INFRA_IP, attempts)
    }

    /// Whether a proxy offer with server identifier `server` answers a PXE DISCOVER from
    /// namespace `client` within `attempts` tries of 500 ms.
    pub(super) fn pxe_offer_from(
        lab: &bootfleet_testkit::netlab::NetLab,
        client: &str,
        server: Ipv4Addr,
        attempts: u32,
    ) -> bool {
        in_namespace(lab, client, move || async move {
            pxe_offer(&dhcp_client(), server, attempts).await.is_some()
        })
    }

    /// From namespace `client`, the first block of `file` as TFTP server `server` sends it.
    pub(super) fn tftp_first_block(
        lab: &bootfleet_testkit::netlab::NetLab,
        client: &str,
        server: Ipv4Addr,
        file: &str,
    ) -> Vec<u8> {
        let request = rrq(file);
        in_namespace(lab, client, move || async move {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0")
                .await
                .expect("bind");
            socket
                .send_to(&request, SocketAddrV4::new(server, 69))
                .await
                .expect("send rrq");
            let (from, block, data) = next_data(&socket).await;
            assert_eq!((from.ip(), block), (std::net::IpAddr::V4(server), 1));
            data
        })
    }

    /// The next DATA datagram on `socket`, with its source (the transfer's port).
    async fn next_data(socket: &tokio::net::UdpSocket) -> (std::net::SocketAddr, u16, Vec<u8>) {
        let mut buf = vec![0u8; 65536];
        let (len, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("a datagram within 5 s")
            .expect("recv");
        match tftp::Packet::parse(&buf[..len]) {
            Ok(tftp::Packet::Data { block, data }) => (from, block, data.to_vec()),
            other => panic!("expected DATA, got {other:?}"),
        }
    }

    fn rrq(name: &str) -> Vec<u8> {
        tftp::Packet::Rrq(tftp::Request {
            filename: name.into(),
            mode: tftp::Mode::Octet,
            options: vec![],
        })
        .encode()
    }

    fn error_code(datagram: &[u8]) -> Option<ErrorCode> {
        match tftp::Packet::parse(datagram) {
            Ok(tftp::Packet::Error { code, .. }) => Some(code),
            _ => None,
        }
    }

    /// Plain DHCP clients get nothing from us (the site server answers them); PXE clients get a
    /// proxy offer without an address. TFTP serves the cache and nothing else, and no writes.
    #[test]
    fn answers_only_pxe_clients_and_serves_nothing_outside_the_cache() {
        let mut site = site();
        let client = site.lab.host("client", "c0", "10.77.0.50/24", None);
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"not for tftp").expect("write");
        let cache = tempfile::tempdir().expect("tempdir");
        super::cache_with_debian_ipxe(cache.path());
        std::os::unix::fs::symlink(outside.path().join("secret"), cache.path().join("escape"))
            .expect("symlink");
        let mut command = site
            .lab
            .command(&site.infra, env!("CARGO_BIN_EXE_bootfleet-distributor"));
        let _distributor = ChildGuard(
            super::serving_the_lab(&mut command, cache.path())
                .args(["--bios-file", "undionly.kpxe", "--http-port", "8081"])
                .args(["--metrics-listen", &format!("{INFRA_IP}:9464")])
                .spawn()
                .expect("start the distributor"),
        );
        let kpxe = std::fs::read(cache.path().join("undionly.kpxe")).expect("read");
        in_namespace(&site.lab, &client, move || async move {
            // The distributor may still be binding; the probe retries.
            let dhcp = dhcp_client();
            let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
            let offer = pxe_offer(&dhcp, INFRA_IP, 20)
                .await
                .expect("a PXE client gets our proxy offer");
            assert_eq!(
                offer.yiaddr,
                Ipv4Addr::UNSPECIFIED,
                "a proxy never offers an address"
            );
            assert_eq!(offer.siaddr, INFRA_IP);
            assert_eq!(offer.bootfile_name(), Some(&b"undionly.kpxe"[..]));

            dhcp.send_to(&discover(0x6000, false), broadcast)
                .await
                .expect("send");
            let answers = offers(&dhcp, 0x6000, Duration::from_secs(2)).await;
            assert!(
                answers.iter().all(|(server, _)| *server != Some(INFRA_IP)),
                "a plain DHCP client must get nothing from the distributor"
            );
            assert!(
                answers
                    .iter()
                    .any(|(server, _)| *server == Some(Ipv4Addr::new(10, 77, 0, 1))),
                "the site's server still answers it"
            );

            let tftp = sockets::udp(
                SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 50), 0),
                Some("c0"),
                false,
                Role::Peer,
            )
            .expect("bind");
            for (name, code) in [
                ("../../etc/passwd", ErrorCode::AccessViolation),
                ("/etc/passwd", ErrorCode::FileNotFound),
                ("escape", ErrorCode::AccessViolation),
                ("..\\..\\secret", ErrorCode::AccessViolation),
                (".hidden", ErrorCode::AccessViolation),
            ] {
                let answer = tftp_answer(&tftp, &rrq(name)).await;
                assert_eq!(error_code(&answer), Some(code), "{name}");
            }
            let wrq = tftp::Packet::Wrq(tftp::Request {
                filename: "undionly.kpxe".into(),
                mode: tftp::Mode::Octet,
                options: vec![],
            })
            .encode();
            assert_eq!(
                error_code(&tftp_answer(&tftp, &wrq).await),
                Some(ErrorCode::AccessViolation)
            );
            let first = tftp_answer(&tftp, &rrq("/undionly.kpxe")).await;
            match tftp::Packet::parse(&first) {
                Ok(tftp::Packet::Data { block, data }) => {
                    assert_eq!(block, 1);
                    assert_eq!(data, &kpxe[..512]);
                }
                other => panic!("expected DATA 1, got {other:?}"),
            }
            // Unacknowledged blocks are resent by the transfer's timer (default 1 s), also
            // after ACKs have moved the transfer on.
            let (transfer, block, data) = next_data(&tftp).await;
            assert_eq!(
                (block, data.as_slice()),
                (1, &kpxe[..512]),
                "block 1 resent"
            );
            for block in 1u16..=2 {
                let ack = tftp::Packet::Ack { block }.encode();
                tftp.send_to(&ack, transfer).await.expect("send ack");
                let (from, next, data) = next_data(&tftp).await;
                let at = usize::from(block) * 512;
                assert_eq!(
                    (from, next, data.as_slice()),
                    (transfer, block + 1, &kpxe[at..at + 512])
                );
            }
            let (from, block, _) = next_data(&tftp).await;
            assert_eq!(
                (from, block),
                (transfer, 3),
                "block 3 resent after the ACKs stop"
            );

            // HTTP boot serves the same cache under the same rules.
            let http = |request: &'static str| async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = tokio::net::TcpStream::connect((INFRA_IP, 8081))
                    .await
                    .expect("connect");
                stream.write_all(request.as_bytes()).await.expect("write");
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await.expect("read");
                answer
            };
            let status = |answer: &[u8]| {
                String::from_utf8_lossy(answer)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            };
            let ok =
                http("GET /undionly.kpxe HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n").await;
            assert!(status(&ok).contains(" 200 "), "{}", status(&ok));
            assert!(ok.ends_with(&kpxe), "the body is the file, byte for byte");
            for (request, code) in [
                ("GET /../../etc/passwd HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n", " 403 "),
                ("GET /escape HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n", " 403 "),
                ("GET /.hidden HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n", " 403 "),
                ("GET /missing.efi HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n", " 404 "),
                ("POST /undionly.kpxe HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", " 405 "),
            ] {
                let answer = http(request).await;
                assert!(status(&answer).contains(code), "{request:?}: {}", status(&answer));
                assert!(!String::from_utf8_lossy(&answer).contains("not for tftp"));
            }

            // What an operator's Prometheus sees of all that, on the metrics listener.
            let page = {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = tokio::net::TcpStream::connect((INFRA_IP, 9464))
                    .await
                    .expect("connect");
                stream
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
                    .await
                    .expect("write");
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).await.expect("read");
                let answer = String::from_utf8(answer).expect("utf-8");
                assert!(status(answer.as_bytes()).contains(" 200 "), "{answer}");
                let (_, body) = answer.split_once("\r\n\r\n").expect("a body");
                bootfleet_testkit::metrics::Scrape::parse(body).unwrap_or_else(|e| panic!("{e}"))
            };
            assert!(page.total("bootfleet_dhcp_answers", &[("arch", "x86 bios")]) >= Some(1.0));
            assert_eq!(
                page.label_values("bootfleet_dhcp_answers", "arch"),
                ["x86 bios"]
            );
            assert!(
                page.total(
                    "bootfleet_dhcp_silences",
                    &[("reason", "not_netboot_client")]
                ) >= Some(1.0),
                "the plain DHCP client's DISCOVER is a silence with its reason"
            );
            assert_eq!(
                page.total("bootfleet_tftp_transfers", &[("outcome", "refused")]),
                Some(6.0)
            );
            assert!(page.has("bootfleet_tftp_bytes"));
            let http_boot =
                |status| page.total("bootfleet_http_boot_responses", &[("status", status)]);
            assert_eq!(
                (
                    http_boot("200"),
                    http_boot("403"),
                    http_boot("404"),
                    http_boot("405")
                ),
                (Some(1.0), Some(3.0), Some(1.0), Some(1.0))
            );
            assert!(page.total("bootfleet_http_boot_bytes", &[]) >= Some(kpxe.len() as f64));
        });
    }
}

/// The operator's switch: off stops every answer at once (pushed over NATS), on brings them
/// back; the registry shows what the distributor reports.
#[test]
fn operator_switches_a_distributor_off_and_on() {
    let mut site = site();
    let client = site.lab.host("client", "c0", "10.77.0.50/24", None);
    let lab = &site.lab;
    lab.run_in(&site.infra, || {
        let rt = runtime();
        rt.block_on(async {
            let mut infra = Infra::start().await;
            let nats = &infra.nats;
            let admin = infra.token(Role::Admin);
            let cache = infra.cache();
            let _distributor = ChildGuard(
                distributor(nats.url(), &cache)
                    .env("CLUSTERPLATFORM_DISTRIBUTOR_ARTIFACTID", "site-switch")
                    .args(["--heartbeat-secs", "1"])
                    .args(["--bios-file", "undionly.kpxe"])
                    .spawn()
                    .expect("start the distributor"),
            );
            let get = |url: String| api(reqwest::Method::GET, url, admin.clone(), None);
            let put = |url: String, body: Value| {
                api(reqwest::Method::PUT, url, admin.clone(), Some(body))
            };
            // Registered by its first heartbeat (the seed's variable name works too).
            let mut id = String::new();
            for _ in 0..50 {
                let (_, list) = get(format!("{GATEWAY}/api/distributors")).await;
                if let Some(found) = list["rows"][0]["id"].as_str() {
                    assert_eq!(list["rows"][0]["artifactId"], "site-switch");
                    id = found.to_owned();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(!id.is_empty(), "the distributor never registered");
            let probe = |attempts| {
                tokio::task::block_in_place(|| refusals::pxe_offer_seen(lab, &client, attempts))
            };
            assert!(probe(10), "serving while on");

            let (status, row) = put(
                format!("{GATEWAY}/api/distributors/{id}/status"),
                json!({ "on": false, "artifactId": "site-switch" }),
            )
            .await;
            assert_eq!(status, 200, "{row}");
            assert_eq!(row["on"], false);
            // The push is immediate; allow a heartbeat for slow machines.
            let mut silent = false;
            for _ in 0..10 {
                if !probe(2) {
                    silent = true;
                    break;
                }
            }
            assert!(silent, "still answering after being switched off");
            let reported_off = eventually(
                Duration::from_secs(5),
                Duration::from_millis(100),
                || async {
                    get(format!("{GATEWAY}/api/distributors/{id}")).await.1["serving"] == false
                },
            )
            .await;
            assert!(reported_off, "the heartbeat reports serving: false");

            let (status, _) = put(
                format!("{GATEWAY}/api/distributors/{id}/status"),
                json!({ "on": true }),
            )
            .await;
            assert_eq!(status, 200);
            assert!(probe(20), "answering again once switched on");

            let (status, body) = put(
                format!("{GATEWAY}/api/distributors/{id}/status"),
                json!({ "on": true, "artifactId": "other-site" }),
            )
            .await;
            assert_eq!(status, 400);
            assert_eq!(body["error"]["field"], "artifactId");

            // NATS crashes and comes back on the same address: the distributor reconnects by
            // itself and its heartbeats resume; serving never stopped.
            infra.nats.restart();
            assert!(probe(10), "serving while nats was away");
            let since = chrono::Utc::now();
            let resumed = eventually(
                Duration::from_secs(20),
                Duration::from_millis(100),
                || async {
                    let (status, row) = get(format!("{GATEWAY}/api/distributors/{id}")).await;
                    let fresh = row["lastSeen"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t >= since);
                    status == 200 && row["online"] == true && fresh
                },
            )
            .await;
            assert!(resumed, "heartbeats did not resume after the nats restart");
            infra.system.stop().await;
        });
    });
}

/// `PUT /api/distributors/:id`: the operator hands built ipxes artifacts to a site. The
/// distributor fetches them over NATS, checks their digests, serves them, and says so; an OVMF
/// guest then boots the artifact's ipxe.efi over TFTP and runs the artifact's own script. A
/// restarted distributor puts the files back from its stored configuration.
#[test]
fn operator_configures_a_distributor_with_built_artifacts() {
    let mut site = site();
    // A second LAN on the same wire: the distributor gets an interface there, and so does a
    // client, to see the distributor move over.
    site.lab.host("infra", "i1", "10.78.0.2/24", None);
    let client = site.lab.host("client", "c0", "10.78.0.50/24", None);
    let lab = &site.lab;
    lab.run_in(&site.infra, || {
        let rt = runtime();
        rt.block_on(async {
            let infra = Infra::start().await;
            let (nats, dir) = (&infra.nats, infra.dir.path());
            let admin = infra.token(Role::Admin);
            let cache = dir.join("site-cache");
            std::fs::create_dir_all(&cache).expect("cache");
            let start_distributor = || {
                ChildGuard(
                    distributor(nats.url(), &cache)
                        .env("DISTRIBUTOR_ARTIFACT_ID", "site-conf")
                        .args(["--heartbeat-secs", "1"])
                        .env("BOOTFLEET_LOG", "debug")
                        .stderr(std::fs::File::create(dir.join("distributor.log")).expect("log"))
                        .spawn()
                        .expect("start the distributor"),
                )
            };
            let mut distributor = start_distributor();
            let call = |method: reqwest::Method, path: String, body: Option<Value>| {
                api(method, path, admin.clone(), body)
            };
            let build = |body: Value| async move {
                let (status, row) =
                    call(reqwest::Method::POST, "/api/ipxes".into(), Some(body)).await;
                assert_eq!(status, 201, "{row}");
                let id = row["id"].as_str().expect("id").to_owned();
                for _ in 0..300 {
                    let (_, row) =
                        call(reqwest::Method::GET, format!("/api/ipxes/{id}"), None).await;
                    if row["status"] == "done" {
                        return row;
                    }
                    assert_ne!(row["status"], "failed", "{row}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("ipxe {id} not built");
            };
            let uefi = build(json!({
                "script": "#!ipxe\necho bootfleet-artifact-script-ok\n",
                "platform": "bin-x86_64-efi", "driver": "ipxe", "extension": "efi",
            }))
            .await;
            let bios = build(json!({
                "script": "#!ipxe\necho bootfleet-bios-artifact-script-ok\n",
                "platform": "bin-x86_64-pcbios", "driver": "undionly", "extension": "kpxe",
            }))
            .await;
            let mut id = String::new();
            for _ in 0..100 {
                let (_, list) = call(
                    reqwest::Method::GET,
                    "/api/distributors?search=site-conf".into(),
                    None,
                )
                .await;
                if let Some(found) = list["rows"][0]["id"].as_str() {
                    id = found.to_owned();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(!id.is_empty(), "the distributor never registered");
            let config = |device: &str, range: &str, uefi_url: Value, bios_url: Value| {
                json!({
                    "ipxePxeUefiUrl": uefi_url, "ipxePxeBiosUrl": bios_url,
                    "artifactId": "site-conf", "device": device, "range": range,
                })
            };
            let put = |body: Value| {
                call(
                    reqwest::Method::PUT,
                    format!("/api/distributors/{id}"),
                    Some(body),
                )
            };

            // Refused, by name, before anything changes.
            for (body, status, field) in [
                (
                    config(
                        "eth9",
                        "10.77.0.0/24",
                        uefi["url"].clone(),
                        bios["url"].clone(),
                    ),
                    400,
                    Some("device"),
                ),
                (
                    config(
                        "i0",
                        "10.77.0.0/33",
                        uefi["url"].clone(),
                        bios["url"].clone(),
                    ),
                    400,
                    Some("range"),
                ),
                (
                    config("i0", "10.77.0.0/24", bios["url"].clone(), Value::Null),
                    400,
                    Some("ipxePxeUefiUrl"),
                ),
                (
                    config(
                        "i0",
                        "10.77.0.0/24",
                        json!("http://evil.example/ipxes/x/ipxe.efi"),
                        Value::Null,
                    ),
                    400,
                    Some("ipxePxeUefiUrl"),
                ),
                // The distributor's own address must be in the range it serves.
                (
                    config("i0", "10.99.0.0/24", uefi["url"].clone(), Value::Null),
                    409,
                    None,
                ),
            ] {
                let (got, answer) = put(body.clone()).await;
                assert_eq!(got, status, "{body}: {answer}");
                if let Some(field) = field {
                    assert_eq!(answer["error"]["field"], field, "{answer}");
                }
            }

            let (status, row) = put(config(
                "i0",
                "10.77.0.0/24",
                json!(format!("{GATEWAY}{}", uefi["url"].as_str().expect("url"))),
                bios["id"].clone(),
            ))
            .await;
            assert_eq!(status, 200, "{row}");
            assert_eq!(row["device"], "i0");
            assert_eq!(row["range"], "10.77.0.0/24");
            let served = row["bootFiles"].as_array().expect("bootFiles").clone();
            let efi_path = format!("artifacts/{}/ipxe.efi", uefi["id"].as_str().expect("id"));
            let efi = served
                .iter()
                .find(|f| f["path"] == efi_path.as_str())
                .unwrap_or_else(|| panic!("{efi_path} in {row}"));
            assert_eq!(efi["sha256"], uefi["sha256"], "served by digest");
            assert_eq!(efi["role"], "uefi_x64");
            assert!(
                served.iter().any(|f| f["role"] == "bios"
                    && f["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("/undionly.kpxe"))),
                "{row}"
            );
            assert_eq!(
                std::fs::read(cache.join(&efi_path)).expect("installed"),
                std::fs::read("/usr/lib/ipxe/ipxe-amd64.efi").expect("debian")
            );

            // A UEFI guest boots the artifact's ipxe.efi over TFTP and runs the artifact's script.
            let mut events = infra.boot_events("site-conf").await;
            let started = std::time::Instant::now();
            let guest = Qemu::netboot(lab, "tap0", MAC, Firmware::Uefi);
            let ran = tokio::task::block_in_place(|| {
                guest.wait_for_serial("bootfleet-artifact-script-ok", Duration::from_secs(180))
            });
            eprintln!(
                "lab timing: OVMF guest ran the artifact's script {:.1} s after QEMU started",
                started.elapsed().as_secs_f64()
            );
            assert!(
                ran,
                "the artifact's script did not run.\nserial:\n{}\ndistributor:\n{}",
                guest.serial(),
                std::fs::read_to_string(dir.join("distributor.log")).unwrap_or_default()
            );
            drop(guest);
            // The script came as the autoexec.ipxe that iPXE asks for beside itself: no TFTP
            // refusal, and no DHCP round of iPXE's own to reach the bootstrap.
            let seen = boot_events_until_quiet(&mut events).await;
            assert!(
                seen.iter()
                    .any(|e| e.kind == "tftp_served" && e.file == "autoexec.ipxe" && e.mac == MAC),
                "autoexec.ipxe not served to the guest: {seen:?}"
            );
            assert!(
                !seen.iter().any(|e| e.kind == "dhcp_answered" && e.ipxe),
                "iPXE needed a DHCP round of its own: {seen:?}"
            );

            // Restarted with an empty cache: the stored configuration comes back with the first
            // heartbeat, and the files are fetched and checked again.
            distributor.0.kill().expect("kill");
            distributor.0.wait().expect("reap");
            std::fs::remove_dir_all(cache.join("artifacts")).expect("empty the cache");
            let _distributor = start_distributor();
            let back = eventually(
                Duration::from_secs(10),
                Duration::from_millis(100),
                || async {
                    if !cache.join(&efi_path).is_file() {
                        return false;
                    }
                    let (_, row) = call(
                        reqwest::Method::GET,
                        format!("/api/distributors/{id}"),
                        None,
                    )
                    .await;
                    row["bootFiles"]
                        .as_array()
                        .is_some_and(|f| f.len() == served.len())
                },
            )
            .await;
            assert!(
                back,
                "the restarted distributor did not reinstall its configuration"
            );

            // Moved to another interface while running: proxyDHCP and TFTP answer there, with
            // that interface's address, and no longer on the first one.
            let second = Ipv4Addr::new(10, 78, 0, 2);
            let moved = config("i1", "10.78.0.0/24", uefi["id"].clone(), bios["id"].clone());
            let (status, row) = put(moved).await;
            assert_eq!(status, 200, "{row}");
            assert_eq!(row["device"], "i1");
            let offered = |server, attempts| {
                tokio::task::block_in_place(|| {
                    refusals::pxe_offer_from(lab, &client, server, attempts)
                })
            };
            assert!(offered(second, 10), "no offer from the new interface");
            assert!(
                !offered(INFRA_IP, 3),
                "still answering on the old interface"
            );
            let block = tokio::task::block_in_place(|| {
                refusals::tftp_first_block(lab, &client, second, &efi_path)
            });
            let efi_bytes = std::fs::read(cache.join(&efi_path)).expect("installed");
            assert_eq!(block, efi_bytes[..block.len()]);
            // An interface without an address in the range: refused, and nothing moves.
            let (status, err) = put(config(
                "i0",
                "10.78.0.0/24",
                uefi["id"].clone(),
                bios["id"].clone(),
            ))
            .await;
            assert_eq!(status, 409, "{err}");
            let message = err["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("i0") && message.contains("10.78.0.0/24"),
                "{err}"
            );
            assert!(offered(second, 10), "a refused move changed nothing");
            drop(distributor);
            infra.system.stop().await;
        });
    });
}

/// Scripts on a node through its site's distributor: a real sshd in the node's namespace, the
/// distributor in the infra namespace reaching it over the LAN. Register → the distributor's
/// probe makes it `pingable` → a script's exact output comes back; a wrong key, a changed host
/// key and a script past its timeout are refused clearly; with no distributor online, 503. The
/// private key never reaches the distributor's disk or its log.
#[test]
fn operator_runs_scripts_on_a_node_through_its_distributor() {
    let mut site = site();
    let node_ns = site.lab.host("node", "n0", "10.77.0.60/24", None);
    let lab = &site.lab;
    lab.run_in(&site.infra, || {
        let rt = runtime();
        rt.block_on(async {
            let infra = Infra::start().await;
            let (nats, dir) = (&infra.nats, infra.dir.path());
            let admin = infra.token(Role::Admin);
            let node_token = infra.token(Role::Node);
            let call = |method: reqwest::Method, path: String, token: &str, body: Option<Value>| {
                api(method, path, token.to_owned(), body)
            };
            // Key pairs from the system's own generator; the node trusts the first.
            let keypair = || async {
                let (status, pair) = call(
                    reqwest::Method::GET,
                    "/api/sshkey?algorithm=ed25519".into(),
                    &admin,
                    None,
                )
                .await;
                assert_eq!(status, 200, "{pair}");
                pair
            };
            let good = keypair().await;
            let wrong = keypair().await;
            let private_key = good["privateKey"].as_str().expect("private key").to_owned();
            let key_body: String = private_key
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect();
            let mut sshd = Sshd::start_in(
                lab,
                &node_ns,
                "10.77.0.60:22".parse().expect("addr"),
                good["publicKey"].as_str().expect("public key"),
            );

            let distributor_log = dir.join("distributor.log");
            let distributor_cache = dir.join("ssh-cache");
            std::fs::create_dir_all(&distributor_cache).expect("cache");
            let distributor = ChildGuard(
                distributor(nats.url(), &distributor_cache)
                    .env("DISTRIBUTOR_ARTIFACT_ID", "site-ssh")
                    .args([
                        "--heartbeat-secs",
                        "1",
                        "--probe-secs",
                        "1",
                        "--no-dhcp",
                        "--no-tftp",
                    ])
                    .env("BOOTFLEET_LOG", "debug")
                    .stderr(std::fs::File::create(&distributor_log).expect("log"))
                    .spawn()
                    .expect("start the distributor"),
            );

            // The node registers (not pingable yet, by its own word); the probe finds sshd.
            let (status, row) = call(
                reqwest::Method::POST,
                "/api/localnodes?ip=10.77.0.60&artifactId=site-ssh&pingable=false".into(),
                &node_token,
                None,
            )
            .await;
            assert_eq!(status, 201, "{row}");
            let id = row["id"].as_str().expect("id").to_owned();
            let node_row = || async {
                call(
                    reqwest::Method::GET,
                    format!("/api/localnodes/{id}"),
                    &admin,
                    None,
                )
                .await
                .1
            };
            let pingable = eventually(
                Duration::from_secs(15),
                Duration::from_millis(100),
                || async { node_row().await["pingable"] == true },
            )
            .await;
            assert!(pingable, "the distributor's probe never reached the node");

            let run = |body: Value| {
                call(
                    reqwest::Method::PUT,
                    format!("/api/localnodes/{id}/script"),
                    &admin,
                    Some(body),
                )
            };
            let (status, out) = run(json!({
                "script": "echo out; echo err >&2; printf '%s\\n' \"$(id -un)\"; exit 3",
                "privateKey": private_key,
            }))
            .await;
            assert_eq!(status, 200, "{out}");
            assert_eq!(out["stdout"], "out\nroot\n");
            assert_eq!(out["stderr"], "err\n");
            assert_eq!(out["exitCode"], 3);
            let row = node_row().await;
            assert_eq!(
                row["hostKey"].as_str(),
                Some(sshd.host_public_key().trim()),
                "host key recorded on first contact"
            );

            // The wrong key: a clear refusal naming the key.
            let (status, err) =
                run(json!({"script": "true", "privateKey": wrong["privateKey"]})).await;
            assert_eq!(status, 400, "{err}");
            assert_eq!(err["error"]["field"], "privateKey");

            // Past its timeout: 504, and the SSH session is closed (sshd has no session left).
            let (status, err) =
                run(json!({"script": "sleep 37", "privateKey": private_key, "timeoutSeconds": 2}))
                    .await;
            assert_eq!(status, 504, "{err}");
            assert_eq!(err["error"]["code"], "timeout");
            let closed = eventually(
                Duration::from_secs(5),
                Duration::from_millis(100),
                || async { sshd.session_pids().is_empty() },
            )
            .await;
            assert!(
                closed,
                "an ssh session is still open after the timeout:\n{}",
                sshd.log()
            );
            // OpenSSH signals only the session's direct child: a command the user's shell did not
            // exec may outlive the session. This test started it, so it ends it.
            let leftover = std::process::Command::new("pgrep")
                .args(["-xf", "sleep 37"])
                .output()
                .expect("pgrep");
            for pid in String::from_utf8_lossy(&leftover.stdout).split_whitespace() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid])
                    .status();
            }

            // The node's host key changes (a reinstall, or someone in between): refused.
            sshd.regenerate_host_key();
            let (status, err) = run(
                json!({"script": "touch /tmp/bootfleet-must-not-exist", "privateKey": private_key}),
            )
            .await;
            assert_eq!(status, 409, "{err}");
            assert!(
                err["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("host key"),
                "{err}"
            );
            assert!(!std::path::Path::new("/tmp/bootfleet-must-not-exist").exists());

            // No distributor of the site online: 503 saying so.
            drop(distributor);
            let (status, err) = run(json!({"script": "true", "privateKey": private_key})).await;
            assert_eq!(status, 503, "{err}");
            assert!(
                err["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("site-ssh"),
                "{err}"
            );

            // The private key reached neither the distributor's disk nor its log.
            let log = std::fs::read_to_string(&distributor_log).expect("log");
            assert!(
                log.contains("running an operator's script"),
                "the log is the real one"
            );
            assert!(
                !log.contains(&key_body),
                "the private key is in the distributor's log"
            );
            let mut stack = vec![distributor_cache.clone()];
            while let Some(path) = stack.pop() {
                for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
                    let p = entry.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Ok(text) = std::fs::read_to_string(&p) {
                        assert!(
                            !text.contains(&key_body),
                            "the private key is in {}",
                            p.display()
                        );
                    }
                }
            }
            infra.system.stop().await;
        });
    });
}

/// Events on NATS so far, without waiting.
fn events_now(
    events: &mut async_nats::Subscriber,
    into: &mut Vec<bootfleet_api::proto::BootEvent>,
) {
    use futures_util::FutureExt;
    while let Some(Some(msg)) = events.next().now_or_never() {
        into.push(bootfleet_api::proto::BootEvent::decode(msg.payload).expect("boot event"));
    }
}

/// A gateway `GET` as plain text (rendered scripts and templates), with `token` as a bearer if
/// given; its status and body.
async fn get_text(url: String, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// Machines by MAC (issue 15), one lab, through the real distributor, gateway and `machines`
/// service. For a SeaBIOS and then an OVMF guest, each with a blank 64 MiB virtio disk, 2 vCPUs
/// and 384 MiB: (BIOS) on a site that ignores unknown MACs, no proxyDHCP answer; on a site that
/// discovers them, the guest becomes a `discovered` machine, boots the discovery profile and
/// reports inventory matching its QEMU flags (→ `ready`); the operator gives it a profile and
/// `install`: the test installer writes its disk and calls back with the machine's token
/// (→ `installed`); its next boot is its own disk (the disk's marker on serial; nothing served
/// after the local-boot script), and its timeline shows those boots step by step. One machine's
/// token cannot fetch the other's rendered kickstart. With nats-server stopped, the BIOS guest
/// still boots its disk: the distributor answers from its last known decision.
#[test]
fn machines_discover_inventory_install_and_boot_their_own_disk() {
    use bootfleet_testkit::disk_image::{BIOS_DISK_MARKER, INSTALL_DISK_BYTES, UEFI_DISK_MARKER};
    use bootfleet_testkit::node_image::{INSTALLED_MARKER, INVENTORY_MARKER};
    use bootfleet_testkit::qemu::MachineSpec;
    use reqwest::Method;

    const SITE: &str = "site-machines";
    const CPUS: u32 = 2;
    const MEMORY_MIB: u32 = 384;
    // The distributor keeps a decision for the service's max age (10 s): a boot sooner than this
    // after the previous one's DHCP could still get the previous state's answer.
    const DECISION_AGE: Duration = Duration::from_secs(11);
    let image = NodeImage::get();
    let install_initrd = image.install_initrd();
    let site = site();
    let lab = &site.lab;
    lab.run_in(&site.infra, || {
        runtime().block_on(async {
            let mut infra = Infra::start().await;
            let admin = infra.token(Role::Admin);
            let call = |method: Method, path: String, body: Option<Value>| {
                api(method, path, admin.clone(), body)
            };
            let cache = infra.cache();
            for (from, to) in [
                (&image.kernel, "vmlinuz"),
                (&image.initrd, "initrd.cpio"),
                (&install_initrd, "install.cpio"),
            ] {
                std::fs::copy(from, cache.join(to)).expect("node image into the cache");
            }
            std::fs::write(
                cache.join("site-default.ipxe"),
                "#!ipxe\necho bootfleet-site-default\nexit 1\n",
            )
            .expect("site default");
            let mut events = infra.boot_events(SITE).await;
            let log = infra.dir.path().join("distributor.log");
            let _distributor = ChildGuard(
                distributor(infra.nats.url(), &cache)
                    .env("DISTRIBUTOR_ARTIFACT_ID", SITE)
                    .args(["--bios-file", "undionly.kpxe", "--uefi-x64-file", "ipxe.efi"])
                    .args(["--http-port", "8081"])
                    .args(["--ipxe-script-url", &format!("{BOOT_HTTP}/site-default.ipxe")])
                    .env("BOOTFLEET_LOG", "info")
                    .stderr(std::fs::File::create(&log).expect("log"))
                    .spawn()
                    .expect("start the distributor"),
            );
            let distributor_log = || std::fs::read_to_string(&log).unwrap_or_default();

            // The operator's profiles: discovery boots the node image to report inventory, the
            // install profile runs the test installer; both rendered per machine.
            let template = |mode: &str, initrd: &str| {
                let cmdline = NodeImage::mode_cmdline(mode, GATEWAY, "@MACHINE@", "@TOKEN@")
                    .replace("@MACHINE@", "{{ machine.id }}")
                    .replace("@TOKEN@", "{{ token }}");
                format!(
                    "#!ipxe\necho bootfleet-{mode}-script\nkernel {BOOT_HTTP}/vmlinuz {cmdline}\ninitrd {BOOT_HTTP}/{initrd}\nboot\n"
                )
            };
            for body in [
                json!({"name": "discovery", "ipxeTemplate": template("inventory", "initrd.cpio")}),
                json!({
                    "name": "lab-install",
                    "ipxeTemplate": template("install", "install.cpio"),
                    "templates": {"kickstart": "# kickstart for {{ machine.mac }}\nreboot\n"},
                }),
            ] {
                let (status, row) = call(Method::POST, "/api/profiles".into(), Some(body)).await;
                assert_eq!(status, 201, "{row}");
            }
            let policy = |unknown: &str| {
                call(
                    Method::PUT,
                    format!("/api/machines/sites/{SITE}"),
                    Some(json!({"unknownMacs": unknown, "discoveryProfile": "discovery"})),
                )
            };
            let (status, row) = policy("ignore").await;
            assert_eq!(status, 200, "{row}");

            let machine_by_mac = |mac: &'static str| {
                let call = &call;
                async move {
                    let (status, list) =
                        call(Method::GET, "/api/machines?pageSize=100".into(), None).await;
                    assert_eq!(status, 200, "{list}");
                    list["rows"]
                        .as_array()
                        .and_then(|rows| rows.iter().find(|r| r["mac"] == mac).cloned())
                }
            };
            let wait_for_state = |id: String, state: &'static str| {
                let call = &call;
                async move {
                    for _ in 0..300 {
                        let (_, row) = call(Method::GET, format!("/api/machines/{id}"), None).await;
                        if row["state"] == state {
                            return row;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    panic!("machine {id} never reached {state}");
                }
            };
            let settle = |since: std::time::Instant| async move {
                if let Some(left) = DECISION_AGE.checked_sub(since.elapsed()) {
                    tokio::time::sleep(left).await;
                }
            };
            let mut seen = Vec::new();
            let mut tokens = Vec::new();
            let total = std::time::Instant::now();

            for (firmware, mac, marker) in [
                (Firmware::Bios, "52:54:00:77:02:10", BIOS_DISK_MARKER),
                (Firmware::Uefi, "52:54:00:77:02:20", UEFI_DISK_MARKER),
            ] {
                let disk = infra.dir.path().join(format!("{}.img", mac.replace(':', "")));
                std::fs::File::create(&disk)
                    .and_then(|f| f.set_len(INSTALL_DISK_BYTES))
                    .expect("blank disk");
                let spec = MachineSpec {
                    cpus: CPUS,
                    memory_mib: MEMORY_MIB,
                    disk: disk.clone(),
                };
                let boot = || Qemu::netboot_machine(lab, "tap0", mac, firmware, &spec);
                let fail = |what: &str, vm: &Qemu| -> String {
                    format!(
                        "{firmware:?} {what}\nserial:\n{}\ndistributor:\n{}",
                        vm.serial(),
                        distributor_log()
                    )
                };
                // Boots the machine until `marker` is on its console: the guest, and when it
                // started.
                let boot_until = |marker: &str, failure: &str, reached: &str| {
                    let started = std::time::Instant::now();
                    let vm = boot();
                    let ok = tokio::task::block_in_place(|| {
                        vm.wait_for_serial(marker, Duration::from_secs(240))
                    });
                    assert!(ok, "{}", fail(failure, &vm));
                    eprintln!(
                        "lab timing: {firmware:?} {reached} {:.1} s after QEMU started",
                        started.elapsed().as_secs_f64()
                    );
                    (vm, started)
                };
                let mut last_boot = std::time::Instant::now();

                if firmware == Firmware::Bios {
                    // The site boots known machines only: an unknown MAC gets no answer.
                    let vm = boot();
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    events_now(&mut events, &mut seen);
                    let mine: Vec<_> = seen.iter().filter(|e| e.mac == mac).collect();
                    assert!(!mine.is_empty(), "{}", fail("no dhcp_ignored event", &vm));
                    assert!(
                        mine.iter().all(|e| e.kind == "dhcp_ignored"),
                        "{mine:?}"
                    );
                    assert!(
                        machine_by_mac(mac).await.is_none(),
                        "an ignored MAC became a machine"
                    );
                    drop(vm);
                    let (status, row) = policy("discover").await;
                    assert_eq!(status, 200, "{row}");
                    settle(last_boot).await;
                }

                // Discovered, then inventory.
                let (mut vm, started) = boot_until(
                    INVENTORY_MARKER,
                    "posted no inventory",
                    "discovered and inventoried",
                );
                last_boot = started;
                let id = machine_by_mac(mac).await.expect("a discovered machine")["id"]
                    .as_str()
                    .expect("id")
                    .to_owned();
                let row = wait_for_state(id.clone(), "ready").await;
                let inventory = &row["inventory"];
                let expected_firmware = if firmware == Firmware::Bios { "bios" } else { "uefi" };
                assert_eq!(row["firmware"], expected_firmware, "{row}");
                assert_eq!(row["artifactId"], SITE, "{row}");
                assert_eq!(inventory["firmware"], expected_firmware, "{row}");
                assert_eq!(inventory["cpu"]["count"], CPUS, "{row}");
                assert_eq!(inventory["memoryBytes"], u64::from(MEMORY_MIB) << 20, "{row}");
                assert_eq!(inventory["disks"][0]["sizeBytes"], INSTALL_DISK_BYTES, "{row}");
                assert_eq!(inventory["nics"][0]["mac"], mac, "{row}");
                assert!(
                    tokio::task::block_in_place(|| vm.wait_exit(Duration::from_secs(30))),
                    "powered off"
                );
                drop(vm);

                // The operator installs it.
                let (status, row) = call(
                    Method::PUT,
                    format!("/api/machines/{id}"),
                    Some(json!({"profile": "lab-install"})),
                )
                .await;
                assert_eq!(status, 200, "{row}");
                let (status, row) = call(
                    Method::PUT,
                    format!("/api/machines/{id}/state"),
                    Some(json!({"state": "install", "reason": "lab: install the test disk"})),
                )
                .await;
                assert_eq!(status, 200, "{row}");
                let (status, script) =
                    get_text(format!("{GATEWAY}/api/machines/{id}/script"), Some(&admin)).await;
                assert_eq!(status, 200, "{script}");
                let token = script
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("bootfleet.mtoken="))
                    .expect("the machine's token in its rendered script")
                    .to_owned();
                tokens.push((id.clone(), mac, token));
                settle(last_boot).await;
                let (mut vm, started) = boot_until(INSTALLED_MARKER, "did not install", "installed");
                last_boot = started;
                assert!(
                    tokio::task::block_in_place(|| vm.wait_exit(Duration::from_secs(30))),
                    "rebooted"
                );
                drop(vm);
                wait_for_state(id.clone(), "installed").await;

                // Its next boot is its own disk.
                settle(last_boot).await;
                events_now(&mut events, &mut seen);
                let before = seen.len();
                let (vm, _) = boot_until(marker, "did not boot its disk", "booted its own disk");
                drop(vm);
                tokio::time::sleep(Duration::from_secs(1)).await;
                events_now(&mut events, &mut seen);
                let mine: Vec<_> = seen[before..].iter().filter(|e| e.mac == mac).collect();
                assert!(
                    mine.iter()
                        .any(|e| e.kind == "dhcp_answered" && e.detail.contains("decision=local_disk")),
                    "{mine:?}"
                );

                // The timeline: newest boot first; the local boot got its script and nothing
                // after it; the install boot ended with the callback; the first, with inventory.
                let mut timeline = Value::Null;
                for _ in 0..50 {
                    let (status, body) =
                        call(Method::GET, format!("/api/machines/{id}/timeline"), None).await;
                    assert_eq!(status, 200, "{body}");
                    let kinds = |b: &Value| -> Vec<String> {
                        b["steps"]
                            .as_array()
                            .map(|s| s.iter().filter_map(|x| x["kind"].as_str().map(str::to_owned)).collect())
                            .unwrap_or_default()
                    };
                    let complete = kinds(&body["boots"][0]).iter().any(|k| k == "tftp_served")
                        && body["boots"].as_array().is_some_and(|b| b.len() >= 3);
                    timeline = body;
                    if complete {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let boots = timeline["boots"]
                    .as_array()
                    .filter(|b| b.len() >= 3)
                    .unwrap_or_else(|| panic!("no timeline of three boots for {id}: {timeline}"));
                for boot in boots {
                    let steps = boot["steps"].as_array().expect("steps");
                    let line: Vec<String> = steps
                        .iter()
                        .map(|s| format!("{}+{}ms", s["kind"].as_str().unwrap_or("?"), s["sincePreviousMs"]))
                        .collect();
                    eprintln!("timeline {firmware:?} {}: {}", boot["startedAt"], line.join(" → "));
                    // A boot opens with the service's decision or the DHCP answer (the ignored
                    // MAC's events, kept under it, became the machine's first).
                    assert!(
                        ["boot_decision", "dhcp_answered", "dhcp_ignored"]
                            .contains(&steps[0]["kind"].as_str().unwrap_or_default()),
                        "{boot}"
                    );
                    let ats: Vec<&str> = steps.iter().filter_map(|s| s["at"].as_str()).collect();
                    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "in order: {boot}");
                    assert!(
                        steps.iter().all(|s| s["sincePreviousMs"].as_u64().is_some_and(|ms| ms < 300_000)),
                        "plausible times: {boot}"
                    );
                }
                let kinds = |i: usize| -> Vec<&str> {
                    boots[i]["steps"]
                        .as_array()
                        .map(|s| s.iter().filter_map(|x| x["kind"].as_str()).collect())
                        .unwrap_or_default()
                };
                // (UEFI: ipxe.efi first, then the script, as this MAC's file or autoexec.ipxe.)
                let local = boots[0]["steps"].as_array().expect("steps");
                let own_script = format!("bootfleet-mac-{}.ipxe", mac.replace(':', ""));
                let served = local
                    .iter()
                    .position(|s| {
                        s["kind"] == "tftp_served"
                            && (s["detail"]["file"] == own_script.as_str()
                                || s["detail"]["file"] == "autoexec.ipxe")
                    })
                    .unwrap_or_else(|| panic!("the local-boot script was not served: {}", boots[0]));
                assert!(
                    !local[served + 1..]
                        .iter()
                        .any(|s| s["kind"] == "tftp_served" || s["kind"] == "http_served"),
                    "transfers after the local-boot script: {}",
                    boots[0]
                );
                assert!(kinds(1).contains(&"installed"), "{:?}", kinds(1));
                assert!(kinds(2).contains(&"inventory_reported"), "{:?}", kinds(2));
            }

            // One machine's token fetches its own rendered kickstart, never another's.
            let [(first, first_mac, first_token), (_, _, second_token)] = &tokens[..] else {
                panic!("two machines: {tokens:?}");
            };
            let kickstart = |token: &str| {
                get_text(
                    format!("{GATEWAY}/api/machines/{first}/files/kickstart?token={token}"),
                    None,
                )
            };
            let (status, own) = kickstart(first_token).await;
            assert_eq!(status, 200, "{own}");
            assert_eq!(own, format!("# kickstart for {first_mac}\nreboot\n"));
            let (status, other) = kickstart(second_token).await;
            assert_eq!(status, 403, "{other}");

            // NATS away: the distributor answers a known MAC from its last answer.
            let mac = "52:54:00:77:02:10";
            let spec = MachineSpec {
                cpus: CPUS,
                memory_mib: MEMORY_MIB,
                disk: infra.dir.path().join(format!("{}.img", mac.replace(':', ""))),
            };
            infra.nats.kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let started = std::time::Instant::now();
            let vm = Qemu::netboot_machine(lab, "tap0", mac, Firmware::Bios, &spec);
            let ok = tokio::task::block_in_place(|| {
                vm.wait_for_serial(BIOS_DISK_MARKER, Duration::from_secs(120))
            });
            assert!(
                ok,
                "no local boot with NATS stopped\nserial:\n{}\ndistributor:\n{}",
                vm.serial(),
                distributor_log()
            );
            eprintln!(
                "lab timing: Bios booted its disk with NATS stopped {:.1} s after QEMU started",
                started.elapsed().as_secs_f64()
            );
            assert!(
                distributor_log().contains("serving this MAC's last known decision"),
                "{}",
                distributor_log()
            );
            eprintln!(
                "lab timing: machines test total {:.1} s",
                total.elapsed().as_secs_f64()
            );
        });
    });
}
