//! A machine's BMC (IPMI 2.0 lanplus or Redfish) and the power operation the machine's site
//! distributor runs through it. Re-exported from [`crate::machines`].
//!
//! The password is write-only: [`BmcInput`] takes it (or, from the gateway, sealed to the
//! `machines` service's key), [`BmcRow`] says only whether one is set. No `Debug` output here
//! shows it.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// How the distributor speaks to the BMC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BmcProtocol {
    /// IPMI 2.0 over LAN (RMCP+, `ipmitool -I lanplus -C 3`).
    Ipmi,
    /// Redfish over HTTPS.
    Redfish,
}

/// `words!(Enum { Variant => "word", ... })`: `as_str`, the variant's word (as serde writes it),
/// and `parse`, the variant of a word, for an enum of unit variants.
macro_rules! words {
    ($enum:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $enum {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($enum::$variant => $word,)+
                }
            }

            pub fn parse(s: &str) -> Option<$enum> {
                [$($enum::$variant),+].into_iter().find(|v| v.as_str() == s)
            }
        }
    };
}

words!(BmcProtocol {
    Ipmi => "ipmi",
    Redfish => "redfish",
});

/// The default IPMI LAN port.
pub const IPMI_PORT: u16 = 623;
pub const MAX_BMC_USERNAME: usize = 64;
/// IPMI 2.0 passwords are at most 20 bytes.
pub const MAX_IPMI_PASSWORD: usize = 20;
pub const MAX_BMC_PASSWORD: usize = 256;
pub const MAX_CA_CERTIFICATE: usize = 16 * 1024;

/// `bmc` of `POST /api/machines` and `PUT /api/machines/:id` (the whole BMC; a `password` left
/// out keeps the stored one).
///
/// Checked for its `protocol`. ipmi: `address` is `host[:port]`, `username` at most 16 and
/// `password` at most 20 bytes of printable text, and `caCertificate`, `insecure` and `systemId`
/// are refused. redfish: `address` is `https://host[:port]` without a path, `username` at most
/// 64 and `password` at most 256 bytes of printable text, `caCertificate` PEM certificates of at
/// most 16 KiB and not with `insecure`, `systemId` 1 to 128 letters, digits, `-`, `_` or `.`.
/// Never both `password` and `sealedPassword`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BmcInput {
    pub protocol: BmcProtocol,
    /// ipmi: `host` or `host:port` (port 623 by default; `[v6]:port` for IPv6); redfish: the
    /// BMC's `https://host[:port]` URL.
    pub address: String,
    pub username: String,
    /// Write-only: never returned, never logged. Required when the machine has no BMC password
    /// yet; left out, the stored one is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The password sealed to the `machines` service's public key (X25519, HKDF-SHA256,
    /// ChaCha20-Poly1305). The gateway puts the operator's `password` here before relaying, so
    /// the cleartext never crosses NATS; REST clients send `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_password: Option<String>,
    /// redfish: the CA (PEM) that signed the BMC's certificate, trusted for this BMC only. Left
    /// out: the system's CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<String>,
    /// redfish: skip certificate verification (logged at warn on every use).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// redfish: the system under `/redfish/v1/Systems/`; left out, the only member there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
}

crate::debug_fields!(BmcInput as b {
    protocol,
    address,
    username,
    password: b.password.as_ref().map(|_| "***"),
    sealed_password: b.sealed_password.as_ref().map(|_| "***"),
    insecure,
    system_id,
    ..
});

/// A machine's BMC as the API shows it: everything but the password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BmcRow {
    pub protocol: BmcProtocol,
    pub address: String,
    pub username: String,
    /// Whether a password is stored (it is never shown).
    pub password_set: bool,
    pub ca_certificate: Option<String>,
    pub insecure: bool,
    pub system_id: Option<String>,
}

/// `"bmc": null` (clear) and a left-out `bmc` (keep) are different: `Some(None)` and `None`.
pub fn present_or_null<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn bad(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(&format!("bmc.{field}"), message)
}

fn host_ok(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Splits `host[:port]` (`[v6]:port`, or a bare IPv6 address); the host without brackets.
pub fn split_host_port(value: &str, default_port: u16) -> Option<(String, u16)> {
    if let Ok(ip) = value.parse::<std::net::Ipv6Addr>() {
        return Some((ip.to_string(), default_port));
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match value.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0)?,
    };
    host_ok(host).then(|| (host.to_owned(), port))
}

fn printable(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(bad(
            field,
            format!("must be 1 to {max} bytes of printable text"),
        ));
    }
    Ok(())
}

impl BmcInput {
    /// Checks every field for its protocol; the address comes back canonical (redfish: no
    /// trailing `/`).
    pub fn validated(mut self) -> Result<BmcInput, ApiError> {
        match self.protocol {
            BmcProtocol::Ipmi => {
                if split_host_port(&self.address, IPMI_PORT).is_none() {
                    return Err(bad(
                        "address",
                        "must be a host name or IP address, optionally with :port (default 623)",
                    ));
                }
                for (field, set) in [
                    ("caCertificate", self.ca_certificate.is_some()),
                    ("insecure", self.insecure),
                    ("systemId", self.system_id.is_some()),
                ] {
                    if set {
                        return Err(bad(field, "is for redfish BMCs only"));
                    }
                }
                if let Some(p) = &self.password {
                    printable("password", p, MAX_IPMI_PASSWORD)?;
                }
                printable("username", &self.username, 16)?;
            }
            BmcProtocol::Redfish => {
                let rest = self.address.strip_prefix("https://").ok_or_else(|| {
                    bad(
                        "address",
                        "must be the BMC's https:// URL, like https://10.0.0.5",
                    )
                })?;
                let authority = rest.trim_end_matches('/');
                if authority.contains('/') || split_host_port(authority, 443).is_none() {
                    return Err(bad(
                        "address",
                        "must be https://host[:port] (the BMC's root, without a path)",
                    ));
                }
                self.address = format!("https://{authority}");
                if let Some(p) = &self.password {
                    printable("password", p, MAX_BMC_PASSWORD)?;
                }
                printable("username", &self.username, MAX_BMC_USERNAME)?;
                if let Some(ca) = &self.ca_certificate {
                    if ca.len() > MAX_CA_CERTIFICATE || !ca.contains("-----BEGIN CERTIFICATE-----")
                    {
                        return Err(bad(
                            "caCertificate",
                            format!(
                                "must be PEM certificates (-----BEGIN CERTIFICATE-----), at most {MAX_CA_CERTIFICATE} bytes"
                            ),
                        ));
                    }
                    if self.insecure {
                        return Err(bad(
                            "insecure",
                            "cannot be combined with caCertificate (choose one)",
                        ));
                    }
                }
                if let Some(id) = &self.system_id {
                    let ok = !id.is_empty()
                        && id.len() <= 128
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                        && id != "."
                        && id != "..";
                    if !ok {
                        return Err(bad(
                            "systemId",
                            "must be 1 to 128 letters, digits, '-', '_' or '.'",
                        ));
                    }
                }
            }
        }
        if self.password.is_some() && self.sealed_password.is_some() {
            return Err(bad("password", "give password or sealedPassword, not both"));
        }
        Ok(self)
    }
}

/// `POST /api/machines/:id/power`'s action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    On,
    Off,
    /// Off, then on (a hard restart).
    Cycle,
    /// A hard reset of a running machine.
    Reset,
    /// Only reads the power state.
    Status,
}

words!(PowerAction {
    On => "on",
    Off => "off",
    Cycle => "cycle",
    Reset => "reset",
    Status => "status",
});

/// The next boot's device, set before the action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    Pxe,
    Disk,
}

words!(BootDevice {
    Pxe => "pxe",
    Disk => "disk",
});

/// `POST /api/machines/:id/power` (and the bus operation `machines_op("power")`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PowerInput {
    pub action: PowerAction,
    /// Sets a one-time boot override before the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_device: Option<BootDevice>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    On,
    Off,
    /// The BMC did not say (or said something else, such as a transition).
    Unknown,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> PowerState {
        match s {
            "on" => PowerState::On,
            "off" => PowerState::Off,
            _ => PowerState::Unknown,
        }
    }
}

/// What a power operation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PowerResult {
    pub machine_id: String,
    pub action: PowerAction,
    /// The power state the BMC reported after the action.
    pub power_state: PowerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_device: Option<BootDevice>,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipmi(address: &str) -> BmcInput {
        BmcInput {
            protocol: BmcProtocol::Ipmi,
            address: address.into(),
            username: "admin".into(),
            password: Some("secret".into()),
            sealed_password: None,
            ca_certificate: None,
            insecure: false,
            system_id: None,
        }
    }

    #[test]
    fn addresses_by_protocol() {
        for good in [
            "10.0.0.5",
            "10.0.0.5:6230",
            "bmc-1.example",
            "[fd00::5]:623",
            "fd00::5",
        ] {
            assert!(ipmi(good).validated().is_ok(), "{good}");
        }
        for bad in [
            "",
            "10.0.0.5:0",
            "10.0.0.5:x",
            "a b",
            "-x",
            "https://10.0.0.5",
            "h:1:2",
        ] {
            let e = ipmi(bad).validated().expect_err(bad);
            assert_eq!(e.field.as_deref(), Some("bmc.address"), "{bad}");
        }
        let mut r = ipmi("https://10.0.0.5:8443/");
        r.protocol = BmcProtocol::Redfish;
        assert_eq!(
            r.validated().map(|b| b.address).as_deref(),
            Ok("https://10.0.0.5:8443")
        );
        for bad in [
            "10.0.0.5",
            "http://10.0.0.5",
            "https://10.0.0.5/redfish/v1",
            "https://",
        ] {
            let mut r = ipmi(bad);
            r.protocol = BmcProtocol::Redfish;
            let e = r.validated().expect_err(bad);
            assert_eq!(e.field.as_deref(), Some("bmc.address"), "{bad}");
        }
    }

    #[test]
    fn fields_name_themselves_and_debug_hides_the_password() {
        let mut b = ipmi("10.0.0.5");
        b.insecure = true;
        assert_eq!(
            b.validated().expect_err("insecure").field.as_deref(),
            Some("bmc.insecure")
        );
        let mut b = ipmi("10.0.0.5");
        b.password = Some("x".repeat(21));
        assert_eq!(
            b.validated().expect_err("long").field.as_deref(),
            Some("bmc.password")
        );
        let b = ipmi("10.0.0.5");
        assert!(!format!("{b:?}").contains("secret"));
    }
}
