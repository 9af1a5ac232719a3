//! Redfish over HTTPS with reqwest and rustls: certificate verification on, the BMC's CA (when
//! given) as the only root, else the system's CA bundle; `insecure` only when the operator set
//! it, logged at warn on every use. Basic authentication on every request (no sessions).

use bootfleet_api::machines::{BootDevice, PowerAction, PowerState};
use bootfleet_api::proto;
use serde_json::{json, Value};

use super::{retried, BmcError, Driver, CALL_TIMEOUT};

/// Where Debian keeps the system's CA bundle.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub(crate) struct Redfish<'a> {
    client: reqwest::Client,
    req: &'a proto::PowerRequest,
    /// The system's URL, once found.
    system: Option<String>,
}

/// The chain of an error's causes, one line (rustls says why a certificate failed deep inside).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out.chars().take(300).collect()
}

fn transport(e: reqwest::Error) -> BmcError {
    let text = causes(&e);
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("tls") {
        BmcError::Tls(text)
    } else if e.is_timeout() || e.is_connect() || e.is_request() {
        BmcError::Unreachable(text)
    } else {
        BmcError::Failed(text)
    }
}

impl<'a> Redfish<'a> {
    pub(crate) fn new(req: &'a proto::PowerRequest) -> Result<Redfish<'a>, BmcError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .timeout(CALL_TIMEOUT)
            .connect_timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        if req.insecure {
            tracing::warn!(
                machine = %req.machine_id,
                bmc = %req.address,
                "redfish without certificate verification: the machine's bmc is set insecure"
            );
            builder = builder.danger_accept_invalid_certs(true);
        } else {
            let pem = if req.ca_certificate.is_empty() {
                std::fs::read(SYSTEM_CA_BUNDLE).map_err(|e| {
                    BmcError::Tls(format!(
                        "no caCertificate given and the system's CA bundle {SYSTEM_CA_BUNDLE} is unreadable: {e}"
                    ))
                })?
            } else {
                req.ca_certificate.as_bytes().to_vec()
            };
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| BmcError::Tls(format!("the CA is not usable PEM: {e}")))?;
            if certs.is_empty() {
                return Err(BmcError::Tls("the CA holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| BmcError::Tls(format!("cannot set up TLS: {}", causes(&e))))?;
        Ok(Redfish {
            client,
            req,
            system: None,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.req.address.trim_end_matches('/'))
    }

    /// One request (retried once when nothing answered); the JSON answer (`Null` when none).
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, BmcError> {
        retried(|| async {
            let mut request = self
                .client
                .request(method.clone(), url)
                .basic_auth(&self.req.username, Some(&self.req.password))
                .header("Accept", "application/json");
            if let Some(b) = body {
                request = request.json(b);
            }
            let response = request.send().await.map_err(transport)?;
            let status = response.status();
            let text = response.text().await.map_err(transport)?;
            let said = || -> String {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let m = v["error"]["@Message.ExtendedInfo"][0]["Message"]
                    .as_str()
                    .or_else(|| v["error"]["message"].as_str())
                    .unwrap_or("");
                format!("{} {} answered {status} {m}", method, url)
                    .trim()
                    .chars()
                    .take(300)
                    .collect()
            };
            match status.as_u16() {
                200..=299 => Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
                401 | 403 => Err(BmcError::Auth(said())),
                404 => Err(BmcError::NoSystem(said())),
                400 | 405 | 501 => Err(BmcError::Unsupported(said())),
                502..=504 => Err(BmcError::Unreachable(said())),
                _ => Err(BmcError::Failed(said())),
            }
        })
        .await
    }

    /// The system's URL: `systemId`'s, or the only member of the Systems collection.
    async fn system(&mut self) -> Result<String, BmcError> {
        if let Some(s) = &self.system {
            return Ok(s.clone());
        }
        let url = if self.req.system_id.is_empty() {
            let systems = self
                .call(reqwest::Method::GET, &self.url("/redfish/v1/Systems"), None)
                .await?;
            let members: Vec<&str> = systems["Members"]
                .as_array()
                .map(|m| m.iter().filter_map(|s| s["@odata.id"].as_str()).collect())
                .unwrap_or_default();
            match members.as_slice() {
                [one] if one.starts_with("/redfish/v1/Systems/") => self.url(one),
                _ => {
                    return Err(BmcError::NoSystem(format!(
                        "has {} systems; set bmc.systemId to one of them",
                        members.len()
                    )))
                }
            }
        } else {
            self.url(&format!("/redfish/v1/Systems/{}", self.req.system_id))
        };
        self.system = Some(url.clone());
        Ok(url)
    }

    async fn reset(&mut self, reset_type: &str) -> Result<(), BmcError> {
        let system = self.system().await?;
        self.call(
            reqwest::Method::POST,
            &format!("{system}/Actions/ComputerSystem.Reset"),
            Some(&json!({ "ResetType": reset_type })),
        )
        .await?;
        Ok(())
    }
}

impl Driver for Redfish<'_> {
    async fn boot_device(&mut self, device: BootDevice) -> Result<(), BmcError> {
        let target = match device {
            BootDevice::Pxe => "Pxe",
            BootDevice::Disk => "Hdd",
        };
        let system = self.system().await?;
        self.call(
            reqwest::Method::PATCH,
            &system,
            Some(&json!({"Boot": {
                "BootSourceOverrideTarget": target,
                "BootSourceOverrideEnabled": "Once",
            }})),
        )
        .await?;
        Ok(())
    }

    async fn action(&mut self, action: PowerAction) -> Result<(), BmcError> {
        match action {
            PowerAction::On => self.reset("On").await,
            PowerAction::Off => self.reset("ForceOff").await,
            PowerAction::Reset => self.reset("ForceRestart").await,
            // A cycle of a machine that is off turns it on (ForceRestart would not).
            PowerAction::Cycle => match self.state().await? {
                PowerState::Off => self.reset("On").await,
                _ => self.reset("ForceRestart").await,
            },
            PowerAction::Status => Ok(()),
        }
    }

    async fn state(&mut self) -> Result<PowerState, BmcError> {
        let system = self.system().await?;
        let row = self.call(reqwest::Method::GET, &system, None).await?;
        Ok(match row["PowerState"].as_str() {
            Some("On") => PowerState::On,
            Some("Off") => PowerState::Off,
            _ => PowerState::Unknown,
        })
    }
}
