//! The proxyDHCP socket loops (udp/67 and udp/4011): bytes in, `bootfleet_netboot::dhcp::decide`,
//! bytes out. Malformed packets are counted and dropped; nothing here can panic on input.
//!
//! The loops run on an OS thread of their own with a current-thread runtime
//! ([`ProxyDhcp::spawn_thread`]), so an answer never waits behind TFTP transfers on the
//! distributor's main runtime (issue 19: OFFER p99 of 30–50 ms under a 500-client storm when
//! both shared it). Their sockets are registered with that runtime's reactor; the per-MAC
//! decisions asked over NATS run there too (the NATS connection's own task stays on the main
//! runtime and is reached through channels).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use bootfleet_netboot::dhcp::{self, ClientArch, Decision, Packet, Port, ProxyConfig};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::machines::{self, Firmware, MacBoot, Machines, Source};
use crate::reporting::Reporting;
use crate::sockets::{self, Role};

pub struct ProxyDhcp {
    /// Plain sockets until `run`, which registers them with the runtime it runs on.
    dhcp: std::net::UdpSocket,
    binl: std::net::UdpSocket,
    /// The address these sockets serve for: the next-server in every answer.
    server_ip: Ipv4Addr,
    config: LiveConfig,
}

/// The proxyDHCP configuration as it is now: an operator's configuration replaces the boot
/// files while the loops run; each packet is decided with the configuration of its moment.
#[derive(Clone, Debug)]
pub struct LiveConfig(Arc<std::sync::RwLock<Arc<ProxyConfig>>>);

impl LiveConfig {
    pub fn new(config: ProxyConfig) -> LiveConfig {
        LiveConfig(Arc::new(std::sync::RwLock::new(Arc::new(config))))
    }

    pub fn get(&self) -> Arc<ProxyConfig> {
        // A poisoned lock only means a writer panicked after swapping an Arc: the value is whole.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, config: ProxyConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }
}

bootfleet_api::debug_fields!(ProxyDhcp as p { config });

/// How the proxyDHCP thread asks to be scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Priority {
    /// SCHED_FIFO priority 1 when the process may (CAP_SYS_NICE), else `ShortSlice`.
    Realtime,
    /// The ordinary scheduler with a 0.1 ms time slice, which since Linux 6.12 lets the
    /// thread take a core as soon as a datagram wakes it; needs no capability.
    ShortSlice,
    /// The ordinary scheduler, like every other thread.
    Normal,
}

/// Applies `priority` to the calling thread, stepping down to what the process may do.
fn set_priority(priority: Priority) {
    if priority == Priority::Realtime {
        match crate::sched::realtime_current_thread() {
            Ok(()) => {
                tracing::debug!("proxyDHCP thread runs SCHED_FIFO 1");
                return;
            }
            Err(e) => tracing::info!(
                error = %e,
                "proxyDHCP thread keeps the ordinary scheduler with a short slice (SCHED_FIFO needs CAP_SYS_NICE)"
            ),
        }
    }
    if priority != Priority::Normal {
        match crate::sched::short_slice_current_thread() {
            Ok(()) => tracing::debug!("proxyDHCP thread asks for a 0.1 ms slice"),
            Err(e) => tracing::info!(error = %e, "proxyDHCP thread keeps the ordinary slice"),
        }
    }
}

/// How long a stopped proxyDHCP thread waits for decisions still being asked (each is bounded
/// by the machines request timeout, 750 ms) before its runtime drops them.
pub const DECISIONS_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

impl ProxyDhcp {
    /// Binds 0.0.0.0:67 and 0.0.0.0:4011 on `device`, answering for `server_ip`.
    pub fn bind(
        device: &str,
        server_ip: Ipv4Addr,
        config: LiveConfig,
    ) -> std::io::Result<ProxyDhcp> {
        let any = |port| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        Ok(ProxyDhcp {
            dhcp: sockets::udp_std(
                any(dhcp::DHCP_SERVER_PORT),
                Some(device),
                true,
                Role::DhcpListener,
            )?,
            binl: sockets::udp_std(
                any(dhcp::PXE_BOOT_SERVER_PORT),
                Some(device),
                true,
                Role::Listener,
            )?,
            server_ip,
            config,
        })
    }

    /// Serves on an OS thread of its own ("bootfleet-dhcp") with a current-thread runtime
    /// until `shutdown`; the returned receiver completes when that thread has ended (after the
    /// decisions still being asked have had their bound, see [`DECISIONS_DRAIN`]).
    ///
    /// With `Priority::Realtime` the thread runs before ordinary threads (SCHED_FIFO 1): on a
    /// busy host the OS otherwise lets it wait for a core behind the TFTP workers (BENCHMARKS:
    /// most of the OFFER p99 left once DHCP had its own thread). Its work per datagram is a
    /// parse and a send, and the kernel's real-time throttling still leaves 5 % of every core to
    /// ordinary threads should a flood keep it busy.
    pub fn spawn_thread(
        self,
        reporting: Reporting,
        machines: Option<Arc<Machines>>,
        shutdown: watch::Receiver<bool>,
        priority: Priority,
    ) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
        let (done, ended) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("bootfleet-dhcp".into())
            .spawn(move || {
                set_priority(priority);
                runtime.block_on(async move {
                    self.run(reporting, machines, shutdown).await;
                    // Answers still waiting for their MAC's decision (each bounded by the
                    // request timeout) are sent before the runtime goes.
                    let started = tokio::time::Instant::now();
                    let metrics = tokio::runtime::Handle::current().metrics();
                    while metrics.num_alive_tasks() > 0 && started.elapsed() < DECISIONS_DRAIN {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                });
                let _ = done.send(());
            })?;
        Ok(ended)
    }

    /// Serves until `shutdown` on the runtime it is polled on. With `machines`, each PXE client
    /// gets its MAC's decision.
    pub async fn run(
        self,
        reporting: Reporting,
        machines: Option<Arc<Machines>>,
        shutdown: watch::Receiver<bool>,
    ) {
        let ProxyDhcp {
            dhcp,
            binl,
            server_ip,
            config,
        } = self;
        let (dhcp, binl) = match (UdpSocket::from_std(dhcp), UdpSocket::from_std(binl)) {
            (Ok(dhcp), Ok(binl)) => (dhcp, binl),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot register the proxyDHCP sockets: not answering");
                return;
            }
        };
        tokio::join!(
            serve(
                Arc::new(dhcp),
                Port::Dhcp,
                server_ip,
                config.clone(),
                reporting.clone(),
                machines.clone(),
                shutdown.clone()
            ),
            serve(
                Arc::new(binl),
                Port::Binl,
                server_ip,
                config,
                reporting,
                machines,
                shutdown
            ),
        );
    }
}

async fn serve(
    socket: Arc<UdpSocket>,
    port: Port,
    server_ip: Ipv4Addr,
    config: LiveConfig,
    reporting: Reporting,
    machines: Option<Arc<Machines>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Larger than any Ethernet frame: a jumbo or bogus datagram is read whole and judged.
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, source) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(port = port.number(), error = %e, "dhcp receive failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let SocketAddr::V4(source) = source else {
            continue;
        };
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        if !reporting.switch.is_on() {
            reporting.counters.dhcp_silent("switched_off");
            continue;
        }
        let request = match Packet::parse(datagram) {
            Ok(p) => p,
            Err(e) => {
                reporting.counters.dhcp_malformed();
                tracing::debug!(port = port.number(), %source, error = %e, "malformed dhcp packet dropped");
                continue;
            }
        };
        let config = config.get();
        if config.server_ip != server_ip {
            // Mid-move to another interface: the configuration names the other listeners'
            // address. Silence for that instant is safe (the client repeats); a wrong
            // next-server is not.
            reporting.counters.dhcp_silent("moving_interface");
            continue;
        }
        match dhcp::decide(&request, port, source, &config) {
            Decision::Ignore(reason) => {
                reporting.counters.dhcp_silent(reason.kind());
                tracing::debug!(port = port.number(), %source, %reason, "dhcp request ignored");
            }
            Decision::Reply { packet, to, client } => {
                let Some(machines) = machines.clone() else {
                    // No NATS: every client gets the site's configuration, as always.
                    let answer = Answer {
                        packet,
                        to,
                        client,
                        boot: MacBoot::SiteDefault,
                        via: Source::Local,
                    };
                    send(&socket, port, answer, &reporting).await;
                    continue;
                };
                let mac = client.mac.0;
                let firmware = firmware_of(client.arch);
                let ip = machines::client_ip(source, request.ciaddr);
                let socket = socket.clone();
                let reporting = reporting.clone();
                // Asking may take up to the request timeout: never in this loop.
                tokio::spawn(async move {
                    let (boot, via) = machines.decide(mac, firmware, ip).await;
                    let ignored = boot == MacBoot::Ignore;
                    if ignored {
                        reporting.counters.dhcp_silent("machine_ignored");
                        reporting.events.emit(bootfleet_api::proto::BootEvent {
                            kind: "dhcp_ignored".into(),
                            mac: client.mac.to_string(),
                            arch: client.arch.to_string(),
                            ipxe: client.ipxe,
                            detail: format!("decision=ignore machine= via={}", via.as_str()),
                            ..Default::default()
                        });
                    }
                    let Some(answer) = per_mac(
                        &request, port, source, &config, packet, to, client, boot, via,
                    ) else {
                        if !ignored {
                            reporting.counters.dhcp_silent("own_script_unanswerable");
                        }
                        return;
                    };
                    send(&socket, port, answer, &reporting).await;
                });
            }
        }
    }
}

/// A reply about to be sent, and why.
struct Answer {
    packet: dhcp::Packet,
    to: dhcp::Destination,
    client: dhcp::ClientInfo,
    boot: MacBoot,
    via: Source,
}

fn firmware_of(arch: ClientArch) -> Firmware {
    match arch {
        ClientArch::Bios => Firmware::Bios,
        ClientArch::Other(_) => Firmware::Unknown,
        _ => Firmware::Uefi,
    }
}

/// The reply for the MAC's decision: none for `Ignore`; the site's for `SiteDefault`; for a
/// script or the local disk, iPXE gets the MAC's own script file (firmware still gets the iPXE
/// binary first).
#[allow(clippy::too_many_arguments)]
fn per_mac(
    request: &Packet,
    port: Port,
    source: SocketAddrV4,
    config: &ProxyConfig,
    packet: dhcp::Packet,
    to: dhcp::Destination,
    client: dhcp::ClientInfo,
    boot: MacBoot,
    via: Source,
) -> Option<Answer> {
    match &boot {
        MacBoot::Ignore => {
            tracing::info!(event = "dhcp_ignored", mac = %client.mac, via = via.as_str(), "machines: no answer for this MAC");
            None
        }
        MacBoot::Script { .. } | MacBoot::LocalDisk { .. } if client.ipxe => {
            let mut own = config.clone();
            own.boot.ipxe_script = Some(machines::script_file_name(client.mac.0));
            match dhcp::decide(request, port, source, &own) {
                Decision::Reply { packet, to, client } => Some(Answer {
                    packet,
                    to,
                    client,
                    boot,
                    via,
                }),
                Decision::Ignore(reason) => {
                    tracing::warn!(mac = %client.mac, %reason, "cannot answer with the MAC's own script");
                    None
                }
            }
        }
        _ => Some(Answer {
            packet,
            to,
            client,
            boot,
            via,
        }),
    }
}

async fn send(socket: &UdpSocket, port: Port, answer: Answer, reporting: &Reporting) {
    let Answer {
        packet,
        to,
        client,
        boot,
        via,
    } = answer;
    let bytes = packet.encode();
    match socket.send_to(&bytes, to.socket_addr()).await {
        Ok(_) => {
            reporting.counters.dhcp_answered(client.arch.name());
            let detail = if via == Source::Local {
                String::new()
            } else {
                format!(
                    "decision={} machine={} via={}",
                    boot.name(),
                    boot.machine_id(),
                    via.as_str()
                )
            };
            reporting.events.emit(bootfleet_api::proto::BootEvent {
                kind: "dhcp_answered".into(),
                mac: client.mac.to_string(),
                arch: client.arch.to_string(),
                file: client.boot_file.clone(),
                peer: to.socket_addr().to_string(),
                ipxe: client.ipxe,
                detail: detail.clone(),
                ..Default::default()
            });
            tracing::info!(
                event = "dhcp_answered",
                port = port.number(),
                mac = %client.mac,
                arch = %client.arch,
                ipxe = client.ipxe,
                boot_file = %client.boot_file,
                to = %to.socket_addr(),
                decision = %detail,
                "answered pxe client"
            );
        }
        Err(e) => {
            reporting.counters.dhcp_silent("send_failed");
            tracing::warn!(mac = %client.mac, to = %to.socket_addr(), error = %e, "cannot send dhcp reply");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootfleet_netboot::dhcp::{code, BootFiles, MessageType, Op};

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x77, 0, 0x10];

    fn config() -> ProxyConfig {
        ProxyConfig {
            server_ip: Ipv4Addr::new(10, 77, 0, 2),
            boot: BootFiles {
                bios: Some("undionly.kpxe".into()),
                uefi_x64: Some("ipxe.efi".into()),
                ipxe_script: Some("bootfleet.ipxe".into()),
                ..BootFiles::default()
            },
        }
    }

    fn discover(arch: u16, ipxe: bool) -> Packet {
        let mut p = Packet::new(Op::BootRequest);
        p.htype = Packet::HTYPE_ETHERNET;
        p.hlen = 6;
        p.chaddr[..6].copy_from_slice(&MAC);
        p.set_message_type(MessageType::Discover);
        p.set_vendor_class(b"PXEClient:Arch:00000:UNDI:002001");
        p.options.set(code::CLIENT_ARCH, arch.to_be_bytes());
        if ipxe {
            p.options.set(code::USER_CLASS, *b"iPXE");
        }
        p
    }

    /// The reply for `boot`, as the socket loop would send it: its boot file, or `None`.
    fn answer(request: &Packet, boot: MacBoot) -> Option<String> {
        let source = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
        let config = config();
        let Decision::Reply { packet, to, client } =
            dhcp::decide(request, Port::Dhcp, source, &config)
        else {
            panic!("the site answers this client");
        };
        per_mac(
            request,
            Port::Dhcp,
            source,
            &config,
            packet,
            to,
            client,
            boot,
            Source::Machines,
        )
        .map(|a| a.client.boot_file)
    }

    /// The thread ends when told to stop, and says so (no datagram is sent: loopback
    /// sockets on ephemeral ports stand in for udp/67 and udp/4011).
    #[tokio::test]
    async fn the_dhcp_thread_stops_when_told() {
        let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let socket = || sockets::udp_std(any, None, false, Role::Peer).expect("bind");
        let proxy = ProxyDhcp {
            dhcp: socket(),
            binl: socket(),
            server_ip: Ipv4Addr::LOCALHOST,
            config: LiveConfig::new(config()),
        };
        let (events, _queue) = crate::reporting::Events::queued("site".into());
        let reporting = Reporting {
            events,
            switch: crate::reporting::Switch::default(),
            counters: Arc::default(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let mut ended = proxy
            .spawn_thread(reporting, None, stop_rx, Priority::Normal)
            .expect("thread");
        let wait = std::time::Duration::from_millis(200);
        assert!(
            tokio::time::timeout(wait, &mut ended).await.is_err(),
            "the thread serves until stopped"
        );
        stop.send(true).expect("the thread listens");
        tokio::time::timeout(std::time::Duration::from_secs(10), ended)
            .await
            .expect("the thread ends")
            .expect("and says so");
    }

    #[test]
    fn each_decision_answers_its_way() {
        let script = MacBoot::Script {
            script: "#!ipxe\nshell\n".into(),
            machine_id: "m1".into(),
        };
        let local = MacBoot::LocalDisk {
            machine_id: "m1".into(),
        };
        let own = machines::script_file_name(MAC);
        for (arch, firmware_file) in [(0u16, "undionly.kpxe"), (7, "ipxe.efi")] {
            let firmware = discover(arch, false);
            let ipxe = discover(arch, true);
            assert_eq!(answer(&firmware, MacBoot::Ignore), None);
            assert_eq!(answer(&ipxe, MacBoot::Ignore), None);
            assert_eq!(
                answer(&firmware, MacBoot::SiteDefault).as_deref(),
                Some(firmware_file)
            );
            assert_eq!(
                answer(&ipxe, MacBoot::SiteDefault).as_deref(),
                Some("bootfleet.ipxe")
            );
            // Firmware first gets its iPXE binary; that iPXE gets the MAC's own script.
            for boot in [&script, &local] {
                assert_eq!(
                    answer(&firmware, boot.clone()).as_deref(),
                    Some(firmware_file)
                );
                assert_eq!(answer(&ipxe, boot.clone()), Some(own.clone()));
            }
        }
        assert_eq!(firmware_of(ClientArch::Bios), Firmware::Bios);
        assert_eq!(firmware_of(ClientArch::EfiBc), Firmware::Uefi);
        assert_eq!(firmware_of(ClientArch::Other(42)), Firmware::Unknown);
    }
}
