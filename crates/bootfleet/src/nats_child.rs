//! The `nats-server` that `bootfleet up` starts when no `NATS_URL` is given: loopback by
//! default, JetStream on, its data under the data directory, never without authentication (a
//! configuration file with the users of `crate::nats_auth`); stopped when bootfleet stops (and
//! killed by the kernel if bootfleet dies, through PR_SET_PDEATHSIG).

#![allow(unsafe_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct NatsChild {
    child: tokio::process::Child,
    /// Where this process reaches it.
    pub url: String,
    /// The port it listens on (`start`'s, or another when that one was taken).
    pub port: u16,
    pub store_dir: PathBuf,
}

/// What stands for this host in a URL when the server listens on every address.
pub const THIS_HOST: &str = "<this-host>";

/// The URL a distributor on the LAN reaches the server at, for its login line: the address the
/// server listens on. Listening on every address (0.0.0.0, ::), it has no one address to name,
/// so the host is [`THIS_HOST`], for the operator to replace.
pub fn url_for_distributors(listen: IpAddr, port: u16) -> String {
    let host = match listen {
        _ if listen.is_unspecified() => THIS_HOST.to_owned(),
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    format!("nats://{host}:{port}")
}

fn find_nats_server() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(bin.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

fn port_is_free(ip: IpAddr, port: u16) -> bool {
    std::net::TcpListener::bind((ip, port)).is_ok()
}

impl NatsChild {
    /// Starts `nats-server` on `listen` (127.0.0.1 unless told otherwise), on `port` if free,
    /// else on a port the kernel picks, with `config` (the `authorization` block) as its
    /// configuration file. Must be called from the main thread: the death signal is tied to the
    /// spawning thread.
    pub async fn start(
        data_dir: &Path,
        listen: IpAddr,
        port: u16,
        config: &Path,
    ) -> Result<NatsChild, String> {
        let bin = find_nats_server().ok_or(
            "nats-server not found in PATH: install it (`apt-get install nats-server`, or run ./scripts/setup) or set NATS_URL",
        )?;
        // Where this process reaches it: loopback when it listens on every address.
        let local: IpAddr = if listen.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            listen
        };
        let port = if port_is_free(listen, port) {
            port
        } else {
            let picked = std::net::TcpListener::bind((listen, 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port for nats-server: {e}"))?
                .port();
            tracing::warn!(wanted = port, picked, "nats port taken; using another");
            picked
        };
        let store_dir = data_dir.join("nats");
        std::fs::create_dir_all(&store_dir)
            .map_err(|e| format!("cannot create {}: {e}", store_dir.display()))?;
        let log = std::fs::File::create(data_dir.join("nats-server.log"))
            .map_err(|e| format!("cannot create the nats log: {e}"))?;
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.arg("-c")
            .arg(config)
            .args([
                "-a",
                &listen.to_string(),
                "-p",
                &port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&store_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect((local, port)).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "nats-server exited at start ({status}); see {}",
                    data_dir.join("nats-server.log").display()
                ));
            }
            if Instant::now() > deadline {
                return Err("nats-server did not listen within 15 s".into());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let host = match local {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        Ok(NatsChild {
            child,
            url: format!("nats://{host}:{port}"),
            port,
            store_dir,
        })
    }

    /// SIGTERM (lets JetStream flush), then SIGKILL if it lingers.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributors_are_given_the_address_the_server_listens_on() {
        let url = |listen: &str| url_for_distributors(listen.parse().expect("ip"), 4222);
        assert_eq!(url("10.99.0.1"), "nats://10.99.0.1:4222");
        assert_eq!(url("127.0.0.1"), "nats://127.0.0.1:4222");
        assert_eq!(url("fd00::1"), "nats://[fd00::1]:4222");
        // Only every address at once has no name to give.
        assert_eq!(url("0.0.0.0"), "nats://<this-host>:4222");
        assert_eq!(url("::"), "nats://<this-host>:4222");
    }
}
