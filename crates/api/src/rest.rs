//! JSON bodies of the REST API. Field names are camelCase, as in the original tutorial.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::format_timestamp;
use crate::list::ListParams;
use crate::proto;

pub use crate::error::{ErrorBody, ErrorEnvelope};

// One page of a list (`GET /api/<collection>?page=&pageSize=`), whatever its rows. Its schema
// is per row type (`rows` refers to `T`'s schema), but utoipa names it `Page` whatever `T` is:
// the document registers it under `Page::schema_name`. (Plain comments: a doc comment would
// become the schema's description.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
    pub total_pages: u64,
}

impl<T> Page<T> {
    /// The page `params` asked for, of a list of `total` rows.
    pub fn new(rows: Vec<T>, total: u64, params: &ListParams) -> Page<T> {
        Page {
            rows,
            total,
            page: params.page,
            page_size: params.page_size,
            total_pages: params.total_pages(total),
        }
    }
}

impl<T: ToSchema> Page<T> {
    /// The name of this page's schema in the OpenAPI document: `Page_ScriptRow`, ...
    pub fn schema_name() -> String {
        format!("{}_{}", <Self as ToSchema>::name(), T::name())
    }
}

/// `POST`/`PUT` body of the text registries (mainscripts, subscripts, kickstarts,
/// prebootscripts, postbootscripts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptInput {
    /// The script itself; at most 256 KiB.
    #[schema(schema_with = crate::rules::schema::text)]
    pub text: String,
    /// The sites whose site-bound node tokens may read the script; empty: every site. Left out
    /// of a `PUT`, the script keeps the sites it has (an update written for the original API
    /// never widens who may read a script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::rules::schema::sites_nullable)]
    pub sites: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScriptRow {
    pub id: String,
    pub text: String,
    /// The sites whose node tokens may read it; empty: every site.
    pub sites: Vec<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
}

impl From<proto::Script> for ScriptRow {
    fn from(s: proto::Script) -> Self {
        ScriptRow {
            id: s.id,
            text: s.text,
            sites: s.sites,
            created_at: format_timestamp(s.created_at_ms),
            updated_at: format_timestamp(s.updated_at_ms),
        }
    }
}

/// `POST`/`PUT` body of `/api/sshkeys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshKeyInput {
    /// An OpenSSH public key line (`ssh-ed25519 AAAA... comment`). Private keys are refused.
    pub text: String,
    /// The site (distributor artifact id) the key belongs to.
    #[schema(schema_with = crate::rules::schema::artifact_id)]
    pub artifact_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshKeyRow {
    pub id: String,
    pub text: String,
    pub artifact_id: String,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, ...
    pub algorithm: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub comment: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<proto::SshKey> for SshKeyRow {
    fn from(k: proto::SshKey) -> Self {
        SshKeyRow {
            id: k.id,
            text: k.text,
            artifact_id: k.artifact_id,
            algorithm: k.algorithm,
            fingerprint: k.fingerprint,
            comment: k.comment,
            created_at: format_timestamp(k.created_at_ms),
            updated_at: format_timestamp(k.updated_at_ms),
        }
    }
}

/// `GET /api/sshkey?algorithm=`: a fresh key pair; nothing is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedKeyPair {
    pub algorithm: String,
    /// OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`), unencrypted.
    pub private_key: String,
    pub public_key: String,
    pub fingerprint: String,
}

impl From<proto::GeneratedSshKey> for GeneratedKeyPair {
    fn from(k: proto::GeneratedSshKey) -> Self {
        GeneratedKeyPair {
            algorithm: k.algorithm,
            private_key: k.private_key,
            public_key: k.public_key,
            fingerprint: k.fingerprint,
        }
    }
}

/// `/readyz`: whether each service answers on the bus.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub nats: bool,
    pub services: Vec<ServiceReadiness>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceReadiness {
    pub service: String,
    pub ready: bool,
}

/// A site agent as the registry knows it. Rows are never removed because a heartbeat was
/// missed: `online` says whether one arrived recently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DistributorRow {
    pub id: String,
    pub artifact_id: String,
    pub hostname: String,
    pub version: String,
    /// Network interfaces the distributor reported.
    pub interfaces: Vec<String>,
    /// Whether the operator wants it to answer PXE clients.
    pub on: bool,
    /// Whether it reported that it is answering.
    pub serving: bool,
    /// A heartbeat arrived within the last 15 seconds.
    pub online: bool,
    /// RFC 3339, UTC; the last heartbeat.
    pub last_seen: String,
    pub dhcp_answered: u64,
    pub tftp_completed: u64,
    /// The interface and range of the operator's configuration (empty until configured).
    pub device: String,
    pub range: String,
    /// What the distributor serves from that configuration, as it reported.
    pub boot_files: Vec<ServedFileRow>,
    pub created_at: String,
    pub updated_at: String,
}

/// One boot file a distributor serves from its cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServedFileRow {
    /// `bios` or `uefi_x64`.
    pub role: String,
    /// Its path in the distributor's cache (TFTP and HTTP boot name).
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// One boot event of a site, as `GET /api/distributors/:id/events` streams it (the `data` of a
/// server-sent event named after its `kind`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootEventRow {
    /// The site (the distributor's artifactId).
    pub artifact_id: String,
    /// `dhcp_answered`, `tftp_served`, `tftp_failed`, `http_served`.
    pub kind: String,
    /// The client's MAC, lowercase; empty when the distributor could not tell.
    pub mac: String,
    /// The client's architecture (DHCP answers).
    pub arch: String,
    /// The boot file offered or served.
    pub file: String,
    pub bytes: u64,
    pub duration_ms: u64,
    /// Where the answer went, or the client's address and port.
    pub peer: String,
    /// The client already ran iPXE (DHCP answers).
    pub ipxe: bool,
    pub detail: String,
    /// RFC 3339, UTC, as the distributor saw it.
    pub at: String,
}

impl From<proto::BootEvent> for BootEventRow {
    fn from(e: proto::BootEvent) -> Self {
        BootEventRow {
            artifact_id: e.artifact_id,
            kind: e.kind,
            mac: e.mac,
            arch: e.arch,
            file: e.file,
            bytes: e.bytes,
            duration_ms: e.duration_ms,
            peer: e.peer,
            ipxe: e.ipxe,
            detail: e.detail,
            at: format_timestamp(e.at_ms),
        }
    }
}

/// `PUT /api/distributors/:id`: hand these ipxes artifacts to the site's PXE clients. Each URL
/// names an artifact of this system (`/ipxes/<id>/<file>`, a URL on this gateway, or the id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DistributorConfigInput {
    /// An ipxes artifact for x64 UEFI clients (`bin-x86_64-efi`, `.efi`).
    #[serde(default)]
    pub ipxe_pxe_uefi_url: Option<String>,
    /// An ipxes artifact for BIOS clients (`bin-x86_64-pcbios`, `.kpxe`).
    #[serde(default)]
    pub ipxe_pxe_bios_url: Option<String>,
    /// Optional (the original tutorial sends it): the site's artifact id, which must be the
    /// row's, or the tutorial's row number, which is not checked.
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::site_check)]
    pub artifact_id: Option<SiteCheck>,
    /// The interface to answer on: one the distributor reported.
    #[schema(min_length = 1)]
    pub device: String,
    /// The IPv4 network served: `192.168.1.0/24`, or one address in it (`192.168.1.1`, as the
    /// original tutorial and dnsmasq's proxy `dhcp-range` take it: the interface's own network
    /// that holds that address). The distributor's address must be in it.
    #[schema(schema_with = crate::rules::schema::ipv4_range)]
    pub range: String,
}

impl From<proto::Distributor> for DistributorRow {
    fn from(d: proto::Distributor) -> Self {
        let (device, range) = d
            .config
            .as_ref()
            .map(|c| (c.device.clone(), c.range.clone()))
            .unwrap_or_default();
        DistributorRow {
            device,
            range,
            boot_files: d
                .boot_files
                .into_iter()
                .map(|f| ServedFileRow {
                    role: f.role,
                    path: f.path,
                    sha256: f.sha256,
                    size: f.size,
                })
                .collect(),
            id: d.id,
            artifact_id: d.artifact_id,
            hostname: d.hostname,
            version: d.version,
            interfaces: d.interfaces,
            on: d.on,
            serving: d.serving,
            online: d.online,
            last_seen: format_timestamp(d.last_seen_ms),
            dhcp_answered: d.dhcp_answered,
            tftp_completed: d.tftp_completed,
            created_at: format_timestamp(d.created_at_ms),
            updated_at: format_timestamp(d.updated_at_ms),
        }
    }
}

/// `PUT /api/distributors/:id/status`: start or stop answering PXE clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DistributorStatusInput {
    pub on: bool,
    /// Optional (the original tutorial sends it): the site's artifact id, which must be the
    /// row's, or the tutorial's row number, which is not checked.
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::site_check)]
    pub artifact_id: Option<SiteCheck>,
}

/// The `artifactId` a distributor's `PUT` bodies may carry. A string is the site's artifact id
/// and must be the row's. A number is what the original tutorial sends there (`"artifactId": 1`,
/// its row number, which names no site of this system): accepted so the tutorial's requests work
/// as written, and not checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum SiteCheck {
    /// The site's artifact id; it must be the distributor's.
    ArtifactId(String),
    /// The original tutorial's row number; not checked.
    RowNumber(u64),
}

impl SiteCheck {
    /// The artifact id to check the row against, if this names one.
    pub fn artifact_id(&self) -> Option<&str> {
        match self {
            SiteCheck::ArtifactId(id) => Some(id),
            SiteCheck::RowNumber(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for SiteCheck {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SiteCheck;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the site's artifact id (a string) or the tutorial's row number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SiteCheck, E> {
                Ok(SiteCheck::ArtifactId(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SiteCheck, E> {
                Ok(SiteCheck::RowNumber(v))
            }
            // JSON has one number type: `1.0` is the row number 1 as much as `1` is.
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<SiteCheck, E> {
                if v.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&v) {
                    Ok(SiteCheck::RowNumber(v as u64))
                } else {
                    Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `POST /api/localnodes`: a node registers itself (or an operator registers it). The same
/// fields may come as a query string instead (`?ip=..&artifactId=..&pingable=true`), as the
/// original tutorial's nodes send them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalNodeInput {
    /// The node's IPv4 or IPv6 address.
    #[schema(schema_with = crate::rules::schema::ip)]
    pub ip: String,
    /// The site (distributor) the node booted at.
    #[schema(schema_with = crate::rules::schema::artifact_id)]
    pub artifact_id: String,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::mac)]
    pub mac: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// What the node says of itself; the site's reachability probes overwrite it.
    #[serde(default)]
    pub pingable: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalNodeRow {
    pub id: String,
    pub ip: String,
    pub artifact_id: String,
    /// Empty when not reported.
    pub mac: String,
    /// Empty when not reported.
    pub hostname: String,
    pub pingable: bool,
    /// RFC 3339, UTC: the last registration or successful probe.
    pub last_seen: String,
    /// The SSH host key recorded at the first script run (empty until then).
    pub host_key: String,
    /// The machine record (`/api/machines/:id`) with this node's MAC, or its IP at its site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<proto::LocalNode> for LocalNodeRow {
    fn from(n: proto::LocalNode) -> Self {
        LocalNodeRow {
            id: n.id,
            ip: n.ip,
            artifact_id: n.artifact_id,
            mac: n.mac,
            hostname: n.hostname,
            pingable: n.pingable,
            last_seen: format_timestamp(n.last_seen_ms),
            host_key: n.host_key,
            machine_id: (!n.machine_id.is_empty()).then_some(n.machine_id),
            created_at: format_timestamp(n.created_at_ms),
            updated_at: format_timestamp(n.updated_at_ms),
        }
    }
}

/// `PUT /api/localnodes/:id/script`: run a script on the node over SSH, through its site's
/// distributor. The private key is used in memory for this one run: never stored, never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalNodeScriptInput {
    /// Run by the user's shell on the node; at most 256 KiB.
    #[schema(schema_with = crate::rules::schema::text)]
    pub script: String,
    /// An OpenSSH private key (unencrypted) the node accepts.
    pub private_key: String,
    /// Default `root`.
    #[serde(default)]
    pub user: Option<String>,
    /// Default 60, at most 3600: the run is cut and the session closed after this.
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
}

crate::debug_fields!(LocalNodeScriptInput as i {
    script_bytes: i.script.len(),
    private_key: "***",
    user,
    timeout_seconds,
});

/// What the script did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalNodeScriptResult {
    /// Invalid UTF-8 is replaced (U+FFFD).
    pub stdout: String,
    pub stderr: String,
    /// Absent when the script was ended by a signal.
    pub exit_code: Option<i32>,
    pub exit_signal: Option<String>,
    /// Output beyond the cap (1 MiB per stream) was dropped.
    pub truncated: bool,
}

impl From<proto::NodeExecResult> for LocalNodeScriptResult {
    fn from(r: proto::NodeExecResult) -> Self {
        LocalNodeScriptResult {
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            exit_code: r.exit_code,
            exit_signal: (!r.exit_signal.is_empty()).then_some(r.exit_signal),
            truncated: r.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn a_site_check_is_a_name_or_the_tutorials_row_number() {
        let status = |body: &str| serde_json::from_str::<DistributorStatusInput>(body);
        let named = status(r#"{"on": true, "artifactId": "site-1"}"#).expect("a name");
        assert_eq!(
            named.artifact_id.as_ref().and_then(SiteCheck::artifact_id),
            Some("site-1")
        );
        let numbered = status(r#"{"on": false, "artifactId": 1}"#).expect("a row number");
        assert_eq!(numbered.artifact_id, Some(SiteCheck::RowNumber(1)));
        assert_eq!(
            numbered
                .artifact_id
                .as_ref()
                .and_then(SiteCheck::artifact_id),
            None
        );
        let err = status(r#"{"on": true, "artifactId": true}"#).expect_err("a boolean");
        assert!(err.to_string().contains("row number"), "{err}");
        status(r#"{"on": true, "artifactId": -1}"#).expect_err("a negative number");
    }

    #[test]
    fn a_page_is_camel_case_and_its_schema_is_per_row_type() {
        let params = ListParams {
            page: 2,
            page_size: 10,
            ..ListParams::default()
        };
        let page = Page::new(
            vec![ServiceReadiness {
                service: "x".into(),
                ready: true,
            }],
            11,
            &params,
        );
        let json = serde_json::to_value(&page).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "rows": [{"service": "x", "ready": true}],
                "total": 11,
                "page": 2,
                "pageSize": 10,
                "totalPages": 2
            })
        );
        // The schema documents exactly the fields serde writes, and its rows are the row type's.
        let schema = serde_json::to_value(Page::<ScriptRow>::schema()).expect("schema");
        let mut documented: Vec<&str> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        let mut written: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        written.sort_unstable();
        assert_eq!(documented, written);
        assert_eq!(
            schema["properties"]["rows"]["items"]["$ref"],
            "#/components/schemas/ScriptRow"
        );
        assert_eq!(Page::<ScriptRow>::schema_name(), "Page_ScriptRow");
        assert_eq!(Page::<SshKeyRow>::schema_name(), "Page_SshKeyRow");
    }
}
