//! The proxyDHCP socket loops (udp/67 and udp/4011): bytes in, `bootfleet_netboot::dhcp::decide`,
//! bytes out. Malformed packets are counted and dropped; nothing here can panic on input.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bootfleet_netboot::dhcp::{self, Decision, Packet, Port, ProxyConfig};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::reporting::Reporting;
use crate::sockets::{self, Sharing};

pub struct ProxyDhcp {
    dhcp: UdpSocket,
    binl: UdpSocket,
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

impl std::fmt::Debug for ProxyDhcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyDhcp")
            .field("config", &self.config)
            .finish()
    }
}

impl ProxyDhcp {
    /// Binds 0.0.0.0:67 and 0.0.0.0:4011 on `device`, answering for `server_ip`.
    pub fn bind(
        device: &str,
        server_ip: Ipv4Addr,
        config: LiveConfig,
    ) -> std::io::Result<ProxyDhcp> {
        let any = |port| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        Ok(ProxyDhcp {
            dhcp: sockets::udp(
                any(dhcp::DHCP_SERVER_PORT),
                Some(device),
                true,
                Sharing::SharedWithSiteDhcp,
            )?,
            binl: sockets::udp(
                any(dhcp::PXE_BOOT_SERVER_PORT),
                Some(device),
                true,
                Sharing::Exclusive,
            )?,
            server_ip,
            config,
        })
    }

    pub async fn run(self, reporting: Reporting, shutdown: watch::Receiver<bool>) {
        let ProxyDhcp {
            dhcp,
            binl,
            server_ip,
            config,
        } = self;
        tokio::join!(
            serve(
                dhcp,
                Port::Dhcp,
                server_ip,
                config.clone(),
                reporting.clone(),
                shutdown.clone()
            ),
            serve(binl, Port::Binl, server_ip, config, reporting, shutdown),
        );
    }
}

async fn serve(
    socket: UdpSocket,
    port: Port,
    server_ip: Ipv4Addr,
    config: LiveConfig,
    reporting: Reporting,
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
            reporting
                .counters
                .dhcp_ignored
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let request = match Packet::parse(datagram) {
            Ok(p) => p,
            Err(e) => {
                reporting
                    .counters
                    .dhcp_malformed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(port = port.number(), %source, error = %e, "malformed dhcp packet dropped");
                continue;
            }
        };
        let config = config.get();
        if config.server_ip != server_ip {
            // Mid-move to another interface: the configuration names the other listeners'
            // address. Silence for that instant is safe (the client repeats); a wrong
            // next-server is not.
            continue;
        }
        match dhcp::decide(&request, port, source, &config) {
            Decision::Ignore(reason) => {
                reporting
                    .counters
                    .dhcp_ignored
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(port = port.number(), %source, %reason, "dhcp request ignored");
            }
            Decision::Reply { packet, to, client } => {
                let bytes = packet.encode();
                match socket.send_to(&bytes, to.socket_addr()).await {
                    Ok(_) => {
                        reporting
                            .counters
                            .dhcp_answered
                            .fetch_add(1, Ordering::Relaxed);
                        reporting.events.emit(bootfleet_api::proto::BootEvent {
                            kind: "dhcp_answered".into(),
                            mac: client.mac.to_string(),
                            arch: client.arch.to_string(),
                            file: client.boot_file.clone(),
                            peer: to.socket_addr().to_string(),
                            ipxe: client.ipxe,
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
                            "answered pxe client"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(mac = %client.mac, to = %to.socket_addr(), error = %e, "cannot send dhcp reply");
                    }
                }
            }
        }
    }
}
