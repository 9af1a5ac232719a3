//! Power through a machine's BMC, asked by the `machines` service on the site's power subject
//! (`PowerRequest`): IPMI 2.0 with `ipmitool` (argument vectors only, the password in the
//! environment) or Redfish over HTTPS (reqwest with rustls, the BMC's own CA as the only root).
//!
//! Every BMC call is bounded ([`CALL_TIMEOUT`]); a transport failure is retried once; the whole
//! operation is bounded by [`DEADLINE`], below the time the machines service waits. Errors
//! name the machine and the BMC's address, never the password: unreachable → 503, a BMC that
//! took too long → 504, refused credentials → 400 on `bmc.password`, a certificate that does
//! not verify → 400 on `bmc.caCertificate`, an operation the BMC does not support → 501.

mod ipmi;
mod redfish;

use std::time::Duration;

use bootfleet_api::machines::{BootDevice, PowerAction, PowerState};
use bootfleet_api::{proto, ApiError, ErrorCode};

/// One call to a BMC (an ipmitool run, an HTTPS request).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// A whole power operation (a boot override, the action, the state read back).
pub const DEADLINE: Duration = Duration::from_secs(25);

/// What went wrong with one BMC call.
#[derive(Debug)]
pub(crate) enum BmcError {
    /// Nothing answered (worth one retry).
    Unreachable(String),
    /// The BMC refused the credentials.
    Auth(String),
    /// The BMC's certificate did not verify.
    Tls(String),
    /// The BMC does not do this.
    Unsupported(String),
    /// The BMC has no such system (redfish `systemId`).
    NoSystem(String),
    /// Anything else the BMC said.
    Failed(String),
}

/// The request's BMC, and how errors name it.
pub(crate) struct Bmc<'a> {
    pub req: &'a proto::PowerRequest,
    pub label: String,
}

impl Bmc<'_> {
    fn error(&self, e: BmcError) -> ApiError {
        let (label, addr) = (&self.label, &self.req.address);
        match e {
            BmcError::Unreachable(d) => ApiError::unavailable(format!(
                "machine {label}: its bmc at {addr} is unreachable: {d}"
            )),
            BmcError::Auth(d) => ApiError::invalid(
                "bmc.password",
                format!(
                    "machine {label}: the bmc at {addr} refused the credentials of user {:?}: {d}",
                    self.req.username
                ),
            ),
            BmcError::Tls(d) => ApiError::invalid(
                "bmc.caCertificate",
                format!(
                    "machine {label}: the certificate of the bmc at {addr} does not verify: {d}"
                ),
            ),
            BmcError::Unsupported(d) => ApiError::new(
                ErrorCode::NotImplemented,
                format!("machine {label}: the bmc at {addr} does not support this: {d}"),
            ),
            BmcError::NoSystem(d) => ApiError::invalid(
                "bmc.systemId",
                format!("machine {label}: the bmc at {addr}: {d}"),
            ),
            BmcError::Failed(d) => {
                ApiError::unavailable(format!("machine {label}: the bmc at {addr} failed: {d}"))
            }
        }
    }
}

/// Runs `call` once more when nothing answered the first time.
pub(crate) async fn retried<T, F, Fut>(mut call: F) -> Result<T, BmcError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BmcError>>,
{
    match call().await {
        Err(BmcError::Unreachable(first)) => {
            tracing::info!(error = %first, "bmc unreachable; trying once more");
            tokio::time::sleep(Duration::from_millis(500)).await;
            call().await
        }
        other => other,
    }
}

/// What one protocol does.
pub(crate) trait Driver {
    async fn boot_device(&mut self, device: BootDevice) -> Result<(), BmcError>;
    async fn action(&mut self, action: PowerAction) -> Result<(), BmcError>;
    async fn state(&mut self) -> Result<PowerState, BmcError>;
}

async fn drive(
    driver: &mut impl Driver,
    action: PowerAction,
    boot: Option<BootDevice>,
) -> Result<(PowerState, String), BmcError> {
    if let Some(device) = boot {
        driver.boot_device(device).await?;
    }
    if action != PowerAction::Status {
        driver.action(action).await?;
    }
    let state = driver.state().await?;
    let mut message = match action {
        PowerAction::Status => format!("power is {}", state.as_str()),
        a => format!("{} done; power is {}", a.as_str(), state.as_str()),
    };
    if let Some(d) = boot {
        message = format!("next boot from {}; {message}", d.as_str());
    }
    Ok((state, message))
}

/// Runs one power request.
pub async fn run(req: proto::PowerRequest) -> Result<proto::PowerReply, ApiError> {
    let action = PowerAction::parse(&req.action)
        .ok_or_else(|| ApiError::invalid("action", "must be on, off, cycle, reset or status"))?;
    let boot = match req.boot_device.as_str() {
        "" => None,
        d => Some(
            BootDevice::parse(d)
                .ok_or_else(|| ApiError::invalid("bootDevice", "must be pxe or disk"))?,
        ),
    };
    let label = if req.machine_name.is_empty() {
        req.machine_id.clone()
    } else {
        format!("{} ({})", req.machine_name, req.machine_id)
    };
    let bmc = Bmc { req: &req, label };
    tracing::info!(
        machine = %req.machine_id,
        bmc = %req.address,
        protocol = %req.protocol,
        action = action.as_str(),
        boot_device = %req.boot_device,
        "power"
    );
    let work = async {
        match req.protocol.as_str() {
            "ipmi" => {
                let mut driver = ipmi::Ipmi::new(&req).map_err(|e| bmc.error(e))?;
                drive(&mut driver, action, boot)
                    .await
                    .map_err(|e| bmc.error(e))
            }
            "redfish" => {
                let mut driver = redfish::Redfish::new(&req).map_err(|e| bmc.error(e))?;
                drive(&mut driver, action, boot)
                    .await
                    .map_err(|e| bmc.error(e))
            }
            other => Err(ApiError::invalid(
                "bmc.protocol",
                format!("must be ipmi or redfish, not {other:?}"),
            )),
        }
    };
    let outcome = tokio::time::timeout(DEADLINE, work)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "machine {}: the bmc at {} did not finish {} within {} s",
                    bmc.label,
                    req.address,
                    action.as_str(),
                    DEADLINE.as_secs()
                ),
            ))
        });
    match outcome {
        Ok((state, message)) => {
            tracing::info!(machine = %req.machine_id, power_state = state.as_str(), "power done");
            Ok(proto::PowerReply {
                power_state: state.as_str().to_owned(),
                message,
            })
        }
        Err(e) => {
            tracing::warn!(machine = %req.machine_id, bmc = %req.address, error = %e.message, "power failed");
            Err(e)
        }
    }
}
