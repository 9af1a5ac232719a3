//! IPMI 2.0 over LAN with Debian's `ipmitool`: `-I lanplus -C 3` (cipher suite 3, so it does not
//! first ask for cipher suites, which some BMCs, ipmi_sim among them, do not answer), `-E` (the
//! password from `IPMI_PASSWORD`, never on the command line), argument vectors only, bounded.

use std::process::Stdio;

use bootfleet_api::machines::{split_host_port, BootDevice, PowerAction, PowerState, IPMI_PORT};
use bootfleet_api::proto;

use super::{retried, BmcError, Driver, CALL_TIMEOUT};

pub(crate) struct Ipmi<'a> {
    host: String,
    port: u16,
    req: &'a proto::PowerRequest,
}

/// What one ipmitool run printed (stdout and stderr together; `-v` says why a session failed).
struct Run {
    ok: bool,
    text: String,
}

/// The lines worth showing from ipmitool's output (not its banner).
fn detail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Loading IANA") && !l.starts_with("Running "))
        .collect();
    let joined = lines.join("; ");
    joined.chars().take(300).collect()
}

/// Sorts a failed run by what ipmitool said.
fn classify(text: &str) -> BmcError {
    let d = detail(text);
    let lower = text.to_ascii_lowercase();
    if lower.contains("rakp") || lower.contains("unauthorized name") || lower.contains("password") {
        BmcError::Auth(d)
    } else if lower.contains("get auth capabilities error")
        || lower.contains("no response")
        || lower.contains("unable to establish")
        || lower.contains("no route to host")
        || lower.contains("timeout")
    {
        BmcError::Unreachable(d)
    } else if lower.contains("invalid data field")
        || lower.contains("invalid command")
        || lower.contains("not supported")
        || lower.contains("invalid completion code")
    {
        BmcError::Unsupported(d)
    } else {
        BmcError::Failed(d)
    }
}

impl<'a> Ipmi<'a> {
    pub(crate) fn new(req: &'a proto::PowerRequest) -> Result<Ipmi<'a>, BmcError> {
        let (host, port) = split_host_port(&req.address, IPMI_PORT)
            .ok_or_else(|| BmcError::Failed("the address is not host[:port]".into()))?;
        Ok(Ipmi { host, port, req })
    }

    async fn ipmitool_once(&self, args: &[&str]) -> Result<Run, BmcError> {
        let mut cmd = tokio::process::Command::new("ipmitool");
        cmd.args(["-I", "lanplus", "-C", "3", "-N", "3", "-R", "1", "-v", "-H"])
            .arg(&self.host)
            .args(["-p", &self.port.to_string(), "-U"])
            .arg(&self.req.username)
            .arg("-E")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("IPMI_PASSWORD", &self.req.password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            BmcError::Failed(format!(
                "cannot run ipmitool (apt-get install ipmitool): {e}"
            ))
        })?;
        let out = tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                BmcError::Unreachable(format!(
                    "ipmitool got no answer within {} s",
                    CALL_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| BmcError::Failed(format!("ipmitool: {e}")))?;
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Run {
            ok: out.status.success(),
            text,
        })
    }

    /// Runs ipmitool with `args` (retried once when nothing answered); an error when it failed
    /// or printed that the BMC refused (`chassis bootdev` exits 0 even then).
    async fn ipmitool(&self, args: &[&str]) -> Result<String, BmcError> {
        retried(|| async {
            let run = self.ipmitool_once(args).await?;
            let refused = run.text.contains(" failed:") || run.text.contains("Invalid data field");
            if run.ok && !refused {
                Ok(run.text)
            } else {
                Err(classify(&run.text))
            }
        })
        .await
    }
}

impl Driver for Ipmi<'_> {
    async fn boot_device(&mut self, device: BootDevice) -> Result<(), BmcError> {
        let target = match device {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
        };
        self.ipmitool(&["chassis", "bootdev", target]).await?;
        Ok(())
    }

    async fn action(&mut self, action: PowerAction) -> Result<(), BmcError> {
        let word = match action {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
            PowerAction::Status => "status",
        };
        self.ipmitool(&["chassis", "power", word]).await?;
        Ok(())
    }

    async fn state(&mut self) -> Result<PowerState, BmcError> {
        let text = self.ipmitool(&["chassis", "power", "status"]).await?;
        Ok(if text.contains("Chassis Power is on") {
            PowerState::On
        } else if text.contains("Chassis Power is off") {
            PowerState::Off
        } else {
            PowerState::Unknown
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipmitool_failures_are_sorted() {
        let auth = "Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n";
        assert!(matches!(classify(auth), BmcError::Auth(_)));
        let name = "RAKP 2 message indicates an error : unauthorized name\nError: Unable to establish IPMI v2 / RMCP+ session";
        assert!(matches!(classify(name), BmcError::Auth(_)));
        let gone = "Get Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\nError: Unable to establish IPMI v2 / RMCP+ session\n";
        assert!(matches!(classify(gone), BmcError::Unreachable(_)));
        let bootdev = "Set Chassis Boot Parameter 4 failed: Invalid data field in request\n";
        match classify(bootdev) {
            BmcError::Unsupported(d) => assert!(d.contains("Boot Parameter 4"), "{d}"),
            other => panic!("{other:?}"),
        }
    }
}
