//! The LAN-facing listeners — proxyDHCP (udp/67, udp/4011), TFTP (udp/69) and HTTP boot — bound
//! to one interface and address, and moved to another interface while the distributor runs
//! (`PUT /api/distributors/:id` with a new `device`).
//!
//! A move binds every socket on the new interface first; if any bind fails nothing changes.
//! Then the old listeners stop taking requests, while transfers they started run to their end.

use std::net::Ipv4Addr;

use bootfleet_netboot::tftp::Limits;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cache::Cache;
use crate::proxy_dhcp::ProxyDhcp;
use crate::reporting::Reporting;
use crate::tftp_server::TftpServer;

/// Which listeners this distributor runs (from its command line).
#[derive(Clone, Copy, Debug)]
pub struct Listeners {
    pub dhcp: bool,
    pub tftp: bool,
    pub http_port: Option<u16>,
}

/// Sockets bound on one interface, not yet serving.
#[derive(Debug)]
pub struct Bound {
    device: String,
    server_ip: Ipv4Addr,
    dhcp: Option<ProxyDhcp>,
    tftp: Option<TftpServer>,
    http: Option<tokio::net::TcpListener>,
}

impl Bound {
    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn server_ip(&self) -> Ipv4Addr {
        self.server_ip
    }
}

#[derive(Debug)]
struct Serving {
    device: String,
    server_ip: Ipv4Addr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// The listeners serving now, and what it takes to start others.
#[derive(Debug)]
pub struct Lan {
    listeners: Listeners,
    cache: Cache,
    live: crate::proxy_dhcp::LiveConfig,
    reporting: Reporting,
    /// The process's shutdown: it ends transfers too; a move does not.
    process_stop: watch::Receiver<bool>,
    serving: std::sync::Mutex<Option<Serving>>,
    /// Per-MAC boot decisions (with NATS); `None`: the site's configuration for everyone.
    machines: Option<std::sync::Arc<crate::machines::Machines>>,
    /// How the proxyDHCP thread asks to be scheduled.
    dhcp_priority: crate::proxy_dhcp::Priority,
}

impl Lan {
    pub fn new(
        listeners: Listeners,
        cache: Cache,
        live: crate::proxy_dhcp::LiveConfig,
        reporting: Reporting,
        process_stop: watch::Receiver<bool>,
    ) -> Lan {
        Lan {
            listeners,
            cache,
            live,
            reporting,
            process_stop,
            serving: std::sync::Mutex::new(None),
            machines: None,
            dhcp_priority: crate::proxy_dhcp::Priority::Normal,
        }
    }

    /// Schedules the proxyDHCP thread this way (`Normal` unless set).
    pub fn with_dhcp_priority(mut self, priority: crate::proxy_dhcp::Priority) -> Lan {
        self.dhcp_priority = priority;
        self
    }

    /// Answers each PXE client by its MAC's decision (issue 15).
    pub fn with_machines(mut self, machines: std::sync::Arc<crate::machines::Machines>) -> Lan {
        self.machines = Some(machines);
        self
    }

    /// The interface and address served now.
    pub fn current(&self) -> Option<(String, Ipv4Addr)> {
        self.serving
            .lock()
            .ok()?
            .as_ref()
            .map(|s| (s.device.clone(), s.server_ip))
    }

    /// Binds every configured listener on `device` at `server_ip`, or fails naming the one
    /// that could not bind.
    pub async fn bind(&self, device: &str, server_ip: Ipv4Addr) -> Result<Bound, String> {
        let http = match self.listeners.http_port {
            // Bound to the LAN address only: HTTP boot is for the site's clients.
            Some(port) => Some(
                tokio::net::TcpListener::bind((server_ip, port))
                    .await
                    .map_err(|e| {
                        format!("cannot listen for HTTP boot on {server_ip}:{port}: {e}")
                    })?,
            ),
            None => None,
        };
        let dhcp = if self.listeners.dhcp {
            Some(ProxyDhcp::bind(device, server_ip, self.live.clone()).map_err(|e| {
                format!("cannot bind proxyDHCP (udp/67, udp/4011) on {device}: {e} (needs CAP_NET_BIND_SERVICE and CAP_NET_RAW)")
            })?)
        } else {
            None
        };
        let tftp = if self.listeners.tftp {
            Some(
                TftpServer::bind(device, server_ip, self.cache.clone(), Limits::default())
                    .map_err(|e| format!("cannot bind TFTP (udp/69) on {device}: {e}"))?,
            )
        } else {
            None
        };
        Ok(Bound {
            device: device.to_owned(),
            server_ip,
            dhcp,
            tftp,
            http,
        })
    }

    /// Starts serving on `bound`; the listeners serving before stop taking requests (their
    /// transfers and downloads in progress finish in the background).
    pub fn serve(&self, bound: Bound) {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        if let Some(listener) = bound.http {
            tasks.spawn(crate::http_boot::run(
                listener,
                self.cache.clone(),
                self.reporting.clone(),
                either(stop_rx.clone(), self.process_stop.clone()),
            ));
        }
        if let Some(proxy) = bound.dhcp {
            // Its own OS thread and runtime: answers never queue behind TFTP blocks (issue 19).
            match proxy.spawn_thread(
                self.reporting.clone(),
                self.machines.clone(),
                stop_rx.clone(),
                self.dhcp_priority,
            ) {
                Ok(ended) => {
                    tasks.spawn(async move {
                        let _ = ended.await;
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the proxyDHCP thread: not answering DHCP");
                }
            }
        }
        if let Some(tftp) = bound.tftp {
            tasks.spawn(tftp.run(
                self.reporting.clone(),
                self.machines.clone(),
                stop_rx,
                self.process_stop.clone(),
            ));
        }
        tracing::info!(interface = %bound.device, server_ip = %bound.server_ip, dhcp = self.listeners.dhcp, tftp = self.listeners.tftp, "distributor serving");
        let next = Serving {
            device: bound.device,
            server_ip: bound.server_ip,
            stop,
            tasks,
        };
        let previous = match self.serving.lock() {
            Ok(mut serving) => serving.replace(next),
            Err(e) => e.into_inner().replace(next),
        };
        if let Some(mut old) = previous {
            tracing::info!(interface = %old.device, "listeners retired");
            let _ = old.stop.send(true);
            tokio::spawn(async move { while old.tasks.join_next().await.is_some() {} });
        }
    }

    /// Stops the listeners serving now and waits for them (process shutdown).
    pub async fn stop(&self) {
        let serving = match self.serving.lock() {
            Ok(mut serving) => serving.take(),
            Err(e) => e.into_inner().take(),
        };
        if let Some(mut serving) = serving {
            let _ = serving.stop.send(true);
            while serving.tasks.join_next().await.is_some() {}
        }
    }
}

/// A receiver that changes when either input does (the HTTP server takes one shutdown signal).
fn either(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = a.changed() => {}
            _ = b.changed() => {}
            () = tx.closed() => return,
        }
        let _ = tx.send(true);
    });
    rx
}

/// The IPv4 addresses of `device` in this network namespace.
pub fn ipv4_addresses(device: &str) -> std::io::Result<Vec<Ipv4Addr>> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addresses
        .filter(|a| a.interface_name == device)
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .collect())
}

/// The network of `device` that holds `address` (its own address and prefix, masked): what a
/// range given as one address means, as in dnsmasq's proxy `dhcp-range`.
pub fn network_holding(device: &str, address: Ipv4Addr) -> std::io::Result<Option<(Ipv4Addr, u8)>> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addresses
        .filter(|a| a.interface_name == device)
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            let mask = a.netmask?.as_sockaddr_in()?.ip();
            let prefix = u32::from(mask).leading_ones() as u8;
            Some((ip, prefix))
        })
        .find(|&(ip, prefix)| bootfleet_api::validate::in_ipv4_range(address, (ip, prefix)))
        .map(|(ip, prefix)| {
            let bits = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            (Ipv4Addr::from(u32::from(ip) & bits), prefix)
        }))
}

/// Where a configuration's `device` and `range` put the listeners: the current address when it
/// is on that device and in range, else the device's first address in range.
pub fn choose_address(
    current: Option<(&str, Ipv4Addr)>,
    device: &str,
    range: &str,
    in_range: impl Fn(Ipv4Addr) -> bool,
    addresses: impl FnOnce() -> std::io::Result<Vec<Ipv4Addr>>,
) -> Result<Ipv4Addr, String> {
    if let Some((current_device, ip)) = current {
        if current_device == device && in_range(ip) {
            return Ok(ip);
        }
    }
    let addresses =
        addresses().map_err(|e| format!("cannot read the addresses of {device}: {e}"))?;
    addresses
        .iter()
        .copied()
        .find(|ip| in_range(*ip))
        .ok_or_else(|| {
            if addresses.is_empty() {
                format!("interface {device} has no IPv4 address on this distributor")
            } else {
                let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
                format!(
                    "interface {device} has no address in range {range} (it has {})",
                    list.join(", ")
                )
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn in_10_78(ip: Ipv4Addr) -> bool {
        ip.octets()[..3] == [10, 78, 0]
    }

    /// `choose_address` for device `device` in 10.78.0.0/24, the device's addresses `addresses`.
    fn choose(
        current: Option<(&str, &str)>,
        device: &str,
        addresses: &[&str],
    ) -> Result<Ipv4Addr, String> {
        let addresses: Vec<Ipv4Addr> = addresses.iter().map(|a| ip(a)).collect();
        choose_address(
            current.map(|(d, a)| (d, ip(a))),
            device,
            "10.78.0.0/24",
            in_10_78,
            || Ok(addresses),
        )
    }

    #[test]
    fn keeps_the_current_address_when_it_fits() {
        let chosen = choose_address(
            Some(("i0", ip("10.78.0.2"))),
            "i0",
            "10.78.0.0/24",
            in_10_78,
            || panic!("no lookup needed"),
        );
        assert_eq!(chosen, Ok(ip("10.78.0.2")));
    }

    #[test]
    fn picks_the_devices_address_in_range() {
        let devices = ["192.168.1.4", "10.78.0.9", "10.78.0.10"];
        let chosen = choose(Some(("i0", "10.77.0.2")), "i1", &devices);
        assert_eq!(chosen, Ok(ip("10.78.0.9")));
        // Same device, but its current address left the range: another of its addresses.
        let chosen = choose(Some(("i1", "192.168.1.4")), "i1", &devices[..2]);
        assert_eq!(chosen, Ok(ip("10.78.0.9")));
    }

    #[test]
    fn says_what_the_device_has_when_nothing_fits() {
        let err = choose(None, "i1", &["10.77.0.2"]).expect_err("no address in range");
        assert_eq!(
            err,
            "interface i1 has no address in range 10.78.0.0/24 (it has 10.77.0.2)"
        );
        let err = choose(None, "i1", &[]).expect_err("none");
        assert_eq!(err, "interface i1 has no IPv4 address on this distributor");
    }

    #[test]
    fn one_address_names_the_devices_network_that_holds_it() {
        assert_eq!(
            network_holding("lo", ip("127.9.8.7")).expect("getifaddrs"),
            Some((ip("127.0.0.0"), 8))
        );
        assert_eq!(
            network_holding("lo", ip("10.1.2.3")).expect("getifaddrs"),
            None
        );
    }

    #[test]
    fn loopback_has_its_address() {
        let addresses = ipv4_addresses("lo").expect("getifaddrs");
        assert!(addresses.contains(&Ipv4Addr::LOCALHOST), "{addresses:?}");
        assert!(ipv4_addresses("no-such-if0")
            .expect("getifaddrs")
            .is_empty());
    }
}
