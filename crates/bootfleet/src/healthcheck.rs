//! `bootfleet healthcheck`, for container health checks and Kubernetes probes: exits 0 when the
//! role it checks answers. One image runs every role, so by default it checks the role of the
//! bootfleet process running beside it (a container's main process), read from its command line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a health check asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// The gateway's `GET /healthz` at this address.
    Gateway(SocketAddr),
    /// One instance of each of these services answers its ping over NATS (`builders` is one
    /// process running a builder of every kind).
    Services(Vec<String>),
}

/// `gateway` or a service name, as given on the command line.
pub fn parse(role: &str, listen: SocketAddr) -> Result<Checked, String> {
    if role == "gateway" {
        return Ok(Checked::Gateway(listen));
    }
    let names: Vec<String> = crate::services_named(role)
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    if names.is_empty() {
        return Err(format!(
            "cannot check {role:?}: not `gateway` nor a service name"
        ));
    }
    Ok(Checked::Services(names))
}

/// The role a bootfleet command line runs (`bootfleet gateway --listen A`, `bootfleet up`,
/// `bootfleet service NAME`); `listen` when the line names no address. None for anything else.
pub fn from_command_line(args: &[String], listen: SocketAddr) -> Option<Checked> {
    let program = args.first()?;
    if program.rsplit('/').next() != Some("bootfleet") {
        return None;
    }
    match args.get(1)?.as_str() {
        "gateway" | "up" => {
            let mut address = None;
            let mut rest = args[2..].iter();
            while let Some(arg) = rest.next() {
                if arg == "--listen" {
                    address = rest.next().cloned();
                } else if let Some(value) = arg.strip_prefix("--listen=") {
                    address = Some(value.to_owned());
                }
            }
            let listen = match address {
                Some(a) => SocketAddr::from_str(&a).ok()?,
                None => listen,
            };
            Some(Checked::Gateway(listen))
        }
        "service" => parse(args.get(2)?, listen).ok(),
        _ => None,
    }
}

/// Scans `/proc` for the bootfleet process this check is for (any but this one).
pub fn from_processes(listen: SocketAddr) -> Result<Checked, String> {
    let own = std::process::id().to_string();
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("cannot read /proc: {e}"))?;
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        if pid.to_string() == own {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if let Some(checked) = from_command_line(&args, listen) {
            return Ok(checked);
        }
    }
    Err("no `bootfleet gateway` or `bootfleet service` process found to check; name the role (`bootfleet healthcheck gateway`)".into())
}

/// Where to connect for a listen address: an unspecified address means this host's loopback.
pub fn connect_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `GET /healthz`; Ok when it answers 200.
pub async fn gateway(listen: SocketAddr, timeout: Duration) -> Result<(), String> {
    let addr = connect_address(listen);
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("gateway at {addr}: {e}"))?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("gateway at {addr}: {e}"))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("gateway at {addr}: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let status = String::from_utf8_lossy(&head);
        let status = status.lines().next().unwrap_or_default().to_owned();
        if status.split(' ').nth(1) == Some("200") {
            Ok(())
        } else {
            Err(format!("gateway at {addr} answered {status:?}"))
        }
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| format!("gateway at {addr}: no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    const LISTEN: &str = "0.0.0.0:8080";

    #[test]
    fn finds_the_role_on_a_command_line() {
        let listen: SocketAddr = LISTEN.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            from_command_line(&line("/usr/local/bin/bootfleet service sshkeys"), listen),
            Some(Checked::Services(vec!["sshkeys".into()]))
        );
        assert_eq!(
            from_command_line(&line("bootfleet service ipxes"), listen),
            Some(Checked::Services(vec!["ipxes".into()]))
        );
        assert_eq!(
            from_command_line(&line("bootfleet gateway"), listen),
            Some(Checked::Gateway(listen))
        );
        assert_eq!(
            from_command_line(&line("bootfleet gateway --listen 10.0.0.1:9000"), listen),
            Some(Checked::Gateway(
                "10.0.0.1:9000".parse().unwrap_or_else(|e| panic!("{e}"))
            ))
        );
        assert_eq!(
            from_command_line(&line("bootfleet up --listen=[::]:81"), listen),
            Some(Checked::Gateway(
                "[::]:81".parse().unwrap_or_else(|e| panic!("{e}"))
            ))
        );
        // Not a role: the check itself, another program, an unknown service.
        assert_eq!(
            from_command_line(&line("bootfleet healthcheck"), listen),
            None
        );
        assert_eq!(
            from_command_line(&line("/bin/sh -c bootfleet"), listen),
            None
        );
        assert_eq!(
            from_command_line(&line("bootfleet service nope"), listen),
            None
        );
    }

    #[test]
    fn an_unspecified_listen_address_is_checked_on_loopback() {
        let at = |s: &str| connect_address(s.parse().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(at("0.0.0.0:8080").to_string(), "127.0.0.1:8080");
        assert_eq!(at("[::]:8080").to_string(), "[::1]:8080");
        assert_eq!(at("10.1.2.3:80").to_string(), "10.1.2.3:80");
    }

    #[test]
    fn a_role_is_gateway_or_a_service() {
        let listen: SocketAddr = LISTEN.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parse("gateway", listen), Ok(Checked::Gateway(listen)));
        assert_eq!(
            parse("artifacts", listen),
            Ok(Checked::Services(vec!["artifacts".into()]))
        );
        // One process, a builder of every kind: each must answer.
        assert_eq!(
            parse("builders", listen),
            Ok(Checked::Services(
                ["ipxes", "grubs", "syslinuxs", "isos"]
                    .map(String::from)
                    .to_vec()
            ))
        );
        let refused = parse("Gateway; rm -rf /", listen);
        assert!(
            matches!(&refused, Err(e) if e.contains("not `gateway` nor a service name")),
            "{refused:?}"
        );
    }
}
