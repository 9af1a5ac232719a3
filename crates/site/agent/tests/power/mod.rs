//! Power through machines' BMCs, for real: the gateway, the machines service and a real
//! distributor over a real nats-server (the lab's infra namespace), the distributor running
//! `ipmitool` against Debian's `ipmi_sim` on the lab LAN, whose guest QEMU PXE-boots through
//! that distributor, and reqwest against `sushy-emulator` (Redfish, TLS from a test CA).
//!
//! ```text
//!  lan ns:   br0 10.77.0.3   ipmi_sim (IPMI LAN 10.77.0.3:6230, QEMU link 127.0.0.1:16231)
//!                            → its startcmd's QEMU guest on tap0
//!  infra ns: i0 10.77.0.2    nats, services, gateway, distributor; sushy-emulator on 127.0.0.1
//! ```

use super::*;
use bootfleet_testkit::bmc::{alive, sushy_emulator, IpmiSim, IpmiSimConfig, Sushy};
use bootfleet_testkit::test_pki::TestPki;
use reqwest::Method;
use std::process::Command;
use std::sync::{Arc, Mutex};

const BMC_IP: &str = "10.77.0.3";
const IPMI_PORT: u16 = 6230;
const IPMI_SERIAL_PORT: u16 = 16231;

/// `POST /api/machines/:id/power` with `body`.
async fn power(admin: &str, id: &str, body: Value) -> (u16, Value) {
    api(
        Method::POST,
        format!("/api/machines/{id}/power"),
        admin.to_owned(),
        Some(body),
    )
    .await
}

/// [`power`] answered 200 with the power state `state` (`context` shown otherwise); its body.
async fn power_ok(
    admin: &str,
    id: &str,
    body: Value,
    state: &str,
    context: impl Fn() -> String,
) -> Value {
    let (status, body) = power(admin, id, body).await;
    assert_eq!(status, 200, "{body}\n{}", context());
    assert_eq!(body["powerState"], state, "{body}");
    body
}

/// [`power`] refused with 400: the error's field and message.
async fn power_refused(admin: &str, id: &str, body: Value) -> (String, String) {
    let (status, body) = power(admin, id, body).await;
    assert_eq!(status, 400, "{body}");
    error_of(&body)
}

/// What `ready` gives within `secs` (asked every 100 ms), waited for on the tests' runtime.
fn waited<T>(secs: u64, ready: impl FnMut() -> Option<T>) -> Option<T> {
    tokio::task::block_in_place(|| {
        bootfleet_testkit::wait_for(Duration::from_secs(secs), Duration::from_millis(100), ready)
    })
}

/// A machine of `site` with `bmc`, created through REST; its id.
async fn machine_with_bmc(admin: &str, site: &str, name: &str, mac: &str, bmc: Value) -> String {
    let (status, row) = api(
        Method::POST,
        "/api/machines".into(),
        admin.to_owned(),
        Some(json!({"mac": mac, "name": name, "artifactId": site, "bmc": bmc})),
    )
    .await;
    assert_eq!(status, 201, "{row}");
    assert_eq!(row["bmc"]["passwordSet"], true, "{row}");
    row["id"].as_str().expect("id").to_owned()
}

/// The site's distributor (serving the lab LAN, as in the boot tests), its log in `log`, once
/// it has registered (its power subject is subscribed by then).
async fn start_distributor(infra: &Infra, admin: &str, site: &str, log: &Path) -> ChildGuard {
    let guard = ChildGuard(
        distributor(infra.nats.url(), &infra.cache())
            .env("DISTRIBUTOR_ARTIFACT_ID", site)
            .args([
                "--bios-file",
                "undionly.kpxe",
                "--uefi-x64-file",
                "ipxe.efi",
            ])
            .env("BOOTFLEET_LOG", "trace")
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("start the distributor"),
    );
    distributor_id(admin, site).await;
    guard
}

/// The error envelope's field and message.
fn error_of(body: &Value) -> (String, String) {
    (
        body["error"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn operator_powers_a_guest_through_its_ipmi_bmc() {
    const SITE: &str = "site-ipmi";
    const GUEST_MAC: &str = "52:54:00:77:03:10";
    let site = site();
    let lab = &site.lab;
    // The BMC sits on the LAN beside its guest: ipmi_sim in the lan namespace, on br0.
    bootfleet_testkit::netlab::run(Command::new("ip").args([
        "-n",
        &lab.ns("lan"),
        "addr",
        "add",
        &format!("{BMC_IP}/24"),
        "dev",
        "br0",
    ]));
    let bmc = IpmiSim::start(
        lab.command(&lab.ns("lan"), "ipmi_sim"),
        &IpmiSimConfig {
            lan: format!("{BMC_IP}:{IPMI_PORT}").parse().expect("addr"),
            serial_port: IPMI_SERIAL_PORT,
            user: "admin".into(),
            password: "ipmi-lab-pw".into(),
            guest: Some(("tap0".into(), GUEST_MAC.into())),
        },
    );
    lab.run_in(&site.infra, || {
        runtime().block_on(async {
            let infra = Infra::start().await;
            let admin = infra.token(Role::Admin);
            let mut events = infra.boot_events(SITE).await;
            let log = infra.dir.path().join("distributor.log");
            let _distributor = start_distributor(&infra, &admin, SITE, &log).await;
            let distributor_log = || std::fs::read_to_string(&log).unwrap_or_default();
            let context = || {
                format!(
                    "distributor:\n{}\nipmi_sim:\n{}\nguest serial:\n{}",
                    distributor_log(),
                    bmc.log(),
                    bmc.serial()
                )
            };
            let bmc_json = |password: &str| {
                json!({"protocol": "ipmi", "address": format!("{BMC_IP}:{IPMI_PORT}"),
                       "username": "admin", "password": password})
            };
            let id = machine_with_bmc(
                &admin,
                SITE,
                "ipmi-guest",
                GUEST_MAC,
                bmc_json("ipmi-lab-pw"),
            )
            .await;

            // Off at first: no guest runs.
            let body = power_ok(&admin, &id, json!({"action": "status"}), "off", context).await;
            assert_eq!(body["machineId"], id.as_str());
            assert!(bmc.guest_pid().is_none());

            // On: ipmi_sim starts the guest, which PXE-boots through our distributor.
            let started = std::time::Instant::now();
            power_ok(&admin, &id, json!({"action": "on"}), "on", context).await;
            let first = waited(20, || bmc.guest_pid())
                .unwrap_or_else(|| panic!("no guest QEMU after power on\n{}", context()));
            let mut seen = Vec::new();
            let answered = tokio::time::timeout(Duration::from_secs(120), async {
                while let Some(msg) = events.next().await {
                    let event =
                        bootfleet_api::proto::BootEvent::decode(msg.payload).expect("event");
                    let ours = event.mac == GUEST_MAC && event.kind == "dhcp_answered";
                    seen.push(event);
                    if ours {
                        return;
                    }
                }
            })
            .await;
            assert!(
                answered.is_ok(),
                "the guest never got a proxyDHCP answer: {seen:?}\n{}",
                context()
            );
            eprintln!(
                "lab timing: ipmi power on to the guest's proxyDHCP answer {:.1} s",
                started.elapsed().as_secs_f64()
            );
            // The machines service stores the boot events as they come: its timeline shows the answer.
            let timeline = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    let (_, timeline) = api(
                        Method::GET,
                        format!("/api/machines/{id}/timeline"),
                        admin.clone(),
                        None,
                    )
                    .await;
                    let answered = timeline["boots"].as_array().is_some_and(|b| {
                        b.iter().any(|boot| {
                            boot["steps"]
                                .as_array()
                                .is_some_and(|s| s.iter().any(|st| st["kind"] == "dhcp_answered"))
                        })
                    });
                    if answered {
                        return timeline;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
            assert!(
                timeline.is_ok(),
                "the machine's timeline never showed its proxyDHCP answer"
            );

            // The boot override: ipmi_sim refuses boot flags without a chassis_control program
            // (docs/lab.md): a clear 501 naming the machine, and the guest runs on.
            let (status, body) = power(
                &admin,
                &id,
                json!({"action": "status", "bootDevice": "pxe"}),
            )
            .await;
            assert_eq!(status, 501, "{body}");
            let (_, message) = error_of(&body);
            assert!(
                message.contains("ipmi-guest") && message.contains(&id),
                "{message}"
            );
            assert_eq!(bmc.guest_pid(), Some(first));

            // Cycle: a new QEMU.
            let (status, body) = power(&admin, &id, json!({"action": "cycle"})).await;
            assert_eq!(status, 200, "{body}\n{}", context());
            let second = waited(30, || bmc.guest_pid().filter(|p| *p != first))
                .unwrap_or_else(|| panic!("no new guest QEMU after power cycle\n{}", context()));
            assert!(!alive(first), "the first QEMU survived the cycle");
            let (_, body) = power(&admin, &id, json!({"action": "status"})).await;
            assert_eq!(body["powerState"], "on", "{body}");

            // Off: the QEMU ends.
            power_ok(&admin, &id, json!({"action": "off"}), "off", context).await;
            let gone = waited(20, || (!alive(second)).then_some(()));
            assert!(
                gone.is_some(),
                "the guest QEMU still runs after power off\n{}",
                context()
            );

            // A wrong password: a 4xx naming the machine, and nothing started.
            let wrong = machine_with_bmc(
                &admin,
                SITE,
                "ipmi-wrong",
                "52:54:00:77:03:11",
                bmc_json("not-the-pw"),
            )
            .await;
            let (field, message) = power_refused(&admin, &wrong, json!({"action": "on"})).await;
            assert_eq!(field, "bmc.password");
            assert!(
                message.contains("ipmi-wrong") && message.contains(&wrong),
                "{message}"
            );
            assert!(
                message.contains(&format!("{BMC_IP}:{IPMI_PORT}")),
                "{message}"
            );
            assert!(bmc.guest_pid().is_none());

            // A BMC that does not answer: 503 naming the machine and the address, after the
            // distributor's bounded tries.
            let gone = api(
                Method::POST,
                "/api/machines".into(),
                admin.clone(),
                Some(json!({"mac": "52:54:00:77:03:12", "name": "ipmi-gone", "artifactId": SITE,
                            "bmc": {"protocol": "ipmi", "address": "10.77.0.9:6230", "username": "admin", "password": "x"}})),
            )
            .await;
            assert_eq!(gone.0, 201, "{}", gone.1);
            let gone = gone.1["id"].as_str().expect("id").to_owned();
            let (status, body) = power(&admin, &gone, json!({"action": "status"})).await;
            assert_eq!(status, 503, "{body}");
            let (_, message) = error_of(&body);
            assert!(message.contains("ipmi-gone") && message.contains(&gone) && message.contains("10.77.0.9:6230"), "{message}");
            assert!(
                !distributor_log().contains("ipmi-lab-pw")
                    && !distributor_log().contains("not-the-pw")
            );
            drop(infra);
        })
    });
    drop(bmc);
}

#[test]
fn operator_powers_a_redfish_bmc_over_tls_from_a_test_ca() {
    const SITE: &str = "site-redfish";
    let program = match sushy_emulator() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("\n\n!!!!!!!! SKIPPED: sushy-emulator cannot run here: {why}. Run ./scripts/setup. !!!!!!!!\n\n");
            return;
        }
    };
    let pki = TestPki::generate();
    let other_ca = TestPki::generate();
    let site = site();
    site.lab.run_in(&site.infra, || {
        runtime().block_on(async {
            let sushy = Sushy::start(
                &program,
                16240,
                &pki.server_cert,
                &pki.server_key,
                ("admin", "redfish-pw"),
            );
            let infra = Infra::start().await;
            let admin = infra.token(Role::Admin);
            let log = infra.dir.path().join("distributor.log");
            let _distributor = start_distributor(&infra, &admin, SITE, &log).await;
            let context = || format!("distributor:\n{}\nsushy:\n{}", std::fs::read_to_string(&log).unwrap_or_default(), sushy.log());
            let bmc = |ca: &Path, password: &str| {
                json!({"protocol": "redfish", "address": sushy.url(), "username": "admin",
                       "password": password, "caCertificate": std::fs::read_to_string(ca).expect("ca")})
            };
            let id = machine_with_bmc(&admin, SITE, "redfish-1", "52:54:00:77:04:10", bmc(&pki.ca, "redfish-pw")).await;

            // libvirt's test domain starts on.
            power_ok(&admin, &id, json!({"action": "status"}), "on", context).await;
            power_ok(&admin, &id, json!({"action": "off"}), "off", context).await;
            let (_, body) = power(&admin, &id, json!({"action": "status"})).await;
            assert_eq!(body["powerState"], "off", "{body}");
            // On with a PXE override for the next boot.
            let body = power_ok(&admin, &id, json!({"action": "on", "bootDevice": "pxe"}), "on", context).await;
            assert_eq!(body["bootDevice"], "pxe");
            // What the BMC now holds, read over the same TLS (the test CA as the only root).
            let client = reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).expect("ca")).expect("pem"))
                .build()
                .expect("client");
            let systems: Value = client.get(format!("{}/redfish/v1/Systems", sushy.url())).basic_auth("admin", Some("redfish-pw")).send().await.expect("systems").json().await.expect("json");
            let system = systems["Members"][0]["@odata.id"].as_str().expect("a system").to_owned();
            let row: Value = client.get(format!("{}{system}", sushy.url())).basic_auth("admin", Some("redfish-pw")).send().await.expect("system").json().await.expect("json");
            // sushy answers "Once" as Continuous: the target is what counts.
            assert_eq!(row["Boot"]["BootSourceOverrideTarget"], "Pxe", "{row}");
            assert_eq!(row["PowerState"], "On");
            let (status, body) = power(&admin, &id, json!({"action": "cycle", "bootDevice": "disk"})).await;
            assert_eq!(status, 200, "{body}");
            let row: Value = client.get(format!("{}{system}", sushy.url())).basic_auth("admin", Some("redfish-pw")).send().await.expect("system").json().await.expect("json");
            assert_eq!(row["Boot"]["BootSourceOverrideTarget"], "Hdd", "{row}");
            // The lifecycle's reinstall: state `install`, then a one-time PXE boot and a power
            // cycle through the BMC, so the installer starts now (install needs a profile).
            let (status, body) = api(Method::POST, "/api/profiles".into(), admin.clone(), Some(json!({"name": "redfish-install", "ipxeTemplate": "#!ipxe\nexit"}))).await;
            assert_eq!(status, 201, "{body}");
            let (status, body) = api(Method::PUT, format!("/api/machines/{id}"), admin.clone(), Some(json!({"profile": "redfish-install"}))).await;
            assert_eq!(status, 200, "{body}");
            let (status, body) = api(Method::POST, format!("/api/machines/{id}/reinstall?powerCycle=maybe"), admin.clone(), None).await;
            assert_eq!((status, error_of(&body).0.as_str()), (400, "powerCycle"), "{body}");
            let (status, body) = api(Method::POST, format!("/api/machines/{id}/reinstall?powerCycle=true"), admin.clone(), None).await;
            assert_eq!(status, 200, "{body}\n{}", context());
            assert_eq!(body["state"], "install", "{body}");
            let row: Value = client.get(format!("{}{system}", sushy.url())).basic_auth("admin", Some("redfish-pw")).send().await.expect("system").json().await.expect("json");
            assert_eq!(row["Boot"]["BootSourceOverrideTarget"], "Pxe", "{row}");
            assert_eq!(row["PowerState"], "On");

            // A machine whose CA did not sign the BMC's certificate: a TLS error naming it.
            let wrong = machine_with_bmc(&admin, SITE, "redfish-wrong-ca", "52:54:00:77:04:11", bmc(&other_ca.ca, "redfish-pw")).await;
            let (field, message) = power_refused(&admin, &wrong, json!({"action": "status"})).await;
            assert_eq!(field, "bmc.caCertificate");
            assert!(message.contains("redfish-wrong-ca") && message.contains(&wrong), "{message}");
            assert!(message.contains("certificate"), "{message}");

            // A machine whose password the BMC refuses (401): 400 on bmc.password, naming it.
            let refused = machine_with_bmc(&admin, SITE, "redfish-wrong-pw", "52:54:00:77:04:12", bmc(&pki.ca, "not-the-pw")).await;
            let (field, message) = power_refused(&admin, &refused, json!({"action": "status"})).await;
            assert_eq!(field, "bmc.password");
            assert!(message.contains("redfish-wrong-pw") && message.contains(&refused), "{message}");
            assert!(message.contains("401"), "{message}");
            drop(infra);
        })
    });
}

/// A `tracing` writer that keeps everything written, for reading back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[test]
fn bmc_password_never_leaks_to_responses_logs_or_nats() {
    const SITE: &str = "site-noleak";
    // Unique to this run, at most 20 bytes (IPMI).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let password = format!("nl{:x}x{nanos:x}", std::process::id());
    let site = site();
    let lab = &site.lab;
    let captured = Captured::default();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            // Everything at trace, as an operator's BOOTFLEET_LOG=trace would, with the guard the
            // binaries add after it.
            .with_env_filter(format!(
                "trace,h2=info,hyper=info,{}",
                bootfleet_bus::LOG_SECRET_GUARD
            ))
            .with_writer(captured.clone())
            .finish(),
    );
    // While one dispatcher is registered, tracing-core works out a callsite's interest from the
    // dispatcher of the thread that reaches it first. Another test's thread (no subscriber)
    // reaching a service's callsite first would then make it "never" for every thread, and this
    // capture would miss the services' logs (it did when only the power tests ran). A second
    // registered dispatcher, never used, makes it ask all of them.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    let bmc = IpmiSim::start(
        lab.command(&site.infra, "ipmi_sim"),
        &IpmiSimConfig {
            lan: "127.0.0.1:16330".parse().expect("addr"),
            serial_port: 16331,
            user: "admin".into(),
            password: password.clone(),
            guest: None,
        },
    );
    lab.run_in(&site.infra, || {
        // Every thread of this test's runtime logs into `captured`.
        let thread_dispatch = dispatch.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                std::mem::forget(tracing::dispatcher::set_default(&thread_dispatch));
            })
            .build()
            .expect("runtime");
        let _main = tracing::dispatcher::set_default(&dispatch);
        runtime.block_on(async {
            let infra = Infra::start().await;
            let admin = infra.token(Role::Admin);
            // Everything on the bus, from before the first request to after the last.
            // (A `>` subscriber answers nothing, so no "no responders" round trip works while it
            // listens: a flush confirms the subscription instead.)
            let capture = infra.system.bus.client();
            let mut all = capture.subscribe(">").await.expect("subscribe >");
            capture.flush().await.expect("flush");
            let log = infra.dir.path().join("distributor.log");
            let _distributor = start_distributor(&infra, &admin, SITE, &log).await;
            let bmc_json = json!({"protocol": "ipmi", "address": "127.0.0.1:16330",
                                  "username": "admin", "password": password});
            let mut responses = Vec::new();
            let (status, row) = api(Method::POST, "/api/machines".into(), admin.clone(),
                Some(json!({"mac": "52:54:00:77:05:10", "name": "leak-check", "artifactId": SITE, "bmc": bmc_json}))).await;
            assert_eq!(status, 201, "{row}");
            let id = row["id"].as_str().expect("id").to_owned();
            responses.push(row);
            // A PUT that keeps the password (none given), and one that sets it again.
            let mut kept = bmc_json.clone();
            kept.as_object_mut().expect("object").remove("password");
            for bmc in [kept, bmc_json.clone()] {
                let (status, row) = api(Method::PUT, format!("/api/machines/{id}"), admin.clone(), Some(json!({"bmc": bmc}))).await;
                assert_eq!(status, 200, "{row}");
                responses.push(row);
            }
            for path in [format!("/api/machines/{id}"), "/api/machines".into(), "/api/machines?search=leak-check".into()] {
                let (status, body) = api(Method::GET, path, admin.clone(), None).await;
                assert_eq!(status, 200, "{body}");
                responses.push(body);
            }
            let (status, body) = power(&admin, &id, json!({"action": "status"})).await;
            assert_eq!(status, 200, "{body}\n{}\n{}", std::fs::read_to_string(&log).unwrap_or_default(), bmc.log());
            assert_eq!(body["powerState"], "off");
            responses.push(body);
            capture.flush().await.expect("flush");
            let mut carrying = Vec::new();
            let mut total = 0;
            while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), all.next()).await {
                total += 1;
                let headers = format!("{:?}", msg.headers);
                let has = |bytes: &[u8]| bytes.windows(password.len()).any(|w| w == password.as_bytes());
                if has(&msg.payload) || headers.contains(&password) {
                    carrying.push(msg.subject.to_string());
                }
            }
            assert!(total > 10, "the capture saw only {total} messages");
            assert_eq!(
                carrying,
                vec![bootfleet_api::subjects::distributor_power(SITE)],
                "the password crossed NATS outside the one request to the distributor"
            );
            for r in &responses {
                assert!(!r.to_string().contains(&password), "a response holds the password: {r}");
            }
            let distributor_log = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(distributor_log.contains("power"), "the distributor logged nothing of it: {distributor_log}");
            assert!(!distributor_log.contains(&password), "the distributor logged the password");
            drop(infra);
        });
    });
    let logs = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    assert!(
        logs.contains("power requested"),
        "the capture missed the services' logs"
    );
    let leaking: Vec<&str> = logs.lines().filter(|l| l.contains(&password)).collect();
    assert!(
        leaking.is_empty(),
        "log lines hold the password: {leaking:#?}"
    );
    drop(bmc);
}
