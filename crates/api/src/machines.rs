//! The `machines` service's REST types and their validation: machines keyed by MAC, their
//! states and history, profiles of templates, per-site policies for unknown MACs, inventory,
//! bulk import reports and boot timelines. The gateway and the service exchange these as JSON
//! inside `MachinesCall`/`MachinesReply` (see `proto/bootfleet/v1/bus.proto`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::validate::bytes_of;

pub use crate::bmc::*;

/// What a machine gets at its next PXE boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MachineState {
    /// An unknown MAC booted on a site that discovers: it boots the discovery profile.
    Discovered,
    /// Asked to report its hardware (again): boots the discovery profile.
    Inventory,
    /// Known and audited: boots the site's default.
    Ready,
    /// Boots its profile's installer.
    Install,
    /// Boots its own disk.
    Installed,
    /// Boots its profile's rescue template (the site's default without one).
    Rescue,
}

impl MachineState {
    pub const ALL: [MachineState; 6] = [
        MachineState::Discovered,
        MachineState::Inventory,
        MachineState::Ready,
        MachineState::Install,
        MachineState::Installed,
        MachineState::Rescue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Discovered => "discovered",
            MachineState::Inventory => "inventory",
            MachineState::Ready => "ready",
            MachineState::Install => "install",
            MachineState::Installed => "installed",
            MachineState::Rescue => "rescue",
        }
    }

    pub fn parse(s: &str) -> Option<MachineState> {
        MachineState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What a site does with a MAC that has no machine record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnknownMacs {
    /// No answer at all: only known machines boot (an allow-list, as Tinkerbell does).
    Ignore,
    /// Record it as a `discovered` machine and boot the site's discovery profile.
    Discover,
    /// The site's configured script, exactly as before machines existed (the default).
    #[default]
    Serve,
}

impl UnknownMacs {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownMacs::Ignore => "ignore",
            UnknownMacs::Discover => "discover",
            UnknownMacs::Serve => "serve",
        }
    }

    pub fn parse(s: &str) -> Option<UnknownMacs> {
        [
            UnknownMacs::Ignore,
            UnknownMacs::Discover,
            UnknownMacs::Serve,
        ]
        .into_iter()
        .find(|u| u.as_str() == s)
    }
}

/// `POST /api/machines`, `PUT /api/machines/:id`. On update, a field left out keeps its value.
/// A `name` is unique per site; a `profile` must exist (`/api/profiles`); `bmc` is checked for
/// its `protocol` (see `BmcInput`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineInput {
    /// The key: `52:54:00:12:34:56`, `52-54-00-12-34-56` or `5254.0012.3456`, any case; stored
    /// lowercase with `:`. Required on create.
    #[schema(schema_with = crate::rules::schema::mac_nullable)]
    #[serde(default)]
    pub mac: Option<String>,
    /// Unique per site; a host name label (letters, digits, `-`).
    #[schema(schema_with = crate::rules::schema::machine_name_or_empty_nullable)]
    #[serde(default)]
    pub name: Option<String>,
    /// The site (its distributor's artifact id). Required on create.
    #[schema(schema_with = crate::rules::schema::artifact_id_nullable)]
    #[serde(default)]
    pub artifact_id: Option<String>,
    /// `bios` or `uefi` (learned from DHCP option 93 when not given).
    #[schema(schema_with = crate::rules::schema::firmware_or_empty_nullable)]
    #[serde(default)]
    pub firmware: Option<String>,
    /// The machine's management address, if known.
    #[schema(schema_with = crate::rules::schema::ip_or_empty_nullable)]
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::words_nullable)]
    pub ranks: Option<Vec<String>>,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::words_nullable)]
    pub groups: Option<Vec<String>>,
    /// Free string values; keys of letters, digits, `_`, `-`, `.` (at most 64 keys).
    #[schema(schema_with = crate::rules::schema::metadata_nullable)]
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// A profile's name (`/api/profiles`); `""` clears it.
    #[schema(schema_with = crate::rules::schema::word_or_empty_nullable)]
    #[serde(default)]
    pub profile: Option<String>,
    /// Default on create: `ready`. Changing it here is recorded in the history like
    /// `PUT /api/machines/:id/state`.
    #[serde(default)]
    pub state: Option<MachineState>,
    /// The machine's BMC, for `POST /api/machines/:id/power`; `null` removes it. Its
    /// `password` is write-only.
    #[serde(
        default,
        deserialize_with = "present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<BmcInput>)]
    pub bmc: Option<Option<BmcInput>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineRow {
    pub id: String,
    pub mac: String,
    pub name: Option<String>,
    pub artifact_id: String,
    /// `bios`, `uefi` or `""` when not known yet.
    pub firmware: String,
    /// The last known address (`""` when none).
    pub ip: String,
    pub ranks: Vec<String>,
    pub groups: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub profile: Option<String>,
    pub state: MachineState,
    /// The last inventory the machine reported.
    pub inventory: Option<Inventory>,
    /// Its BMC, without the password.
    pub bmc: Option<BmcRow>,
    pub created_at: String,
    pub updated_at: String,
}

/// `PUT /api/machines/:id/state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateInput {
    pub state: MachineState,
    /// Why, for the history (at most 1024 bytes).
    #[serde(default)]
    pub reason: Option<String>,
}

/// One entry of a machine's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateChange {
    /// `null` when the machine was created.
    pub from: Option<MachineState>,
    pub to: MachineState,
    pub reason: String,
    /// The operator token's subject, `machine:<id>` for the machine's own calls, `distributor`
    /// for a discovery, `import` for a bulk import.
    pub by: String,
    pub at: String,
}

/// `GET /api/machines/:id/history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineHistory {
    pub machine_id: String,
    /// Oldest first.
    pub changes: Vec<StateChange>,
}

/// `POST /api/machines/:id/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineEventInput {
    /// `installed`: the installed system (or its installer's postboot) calls back; the next
    /// PXE boot boots the local disk.
    #[serde(rename = "type")]
    pub kind: String,
}

/// `PUT /api/machines/sites/:artifactId`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SitePolicyInput {
    pub unknown_macs: UnknownMacs,
    /// The profile whose iPXE template `discovered` and `inventory` machines boot (it must
    /// exist; `""` or `null`: none).
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::word_or_empty_nullable)]
    pub discovery_profile: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SitePolicy {
    pub artifact_id: String,
    pub unknown_macs: UnknownMacs,
    pub discovery_profile: Option<String>,
    /// `null` while the site has never been set (the defaults apply).
    pub updated_at: Option<String>,
}

/// `POST /api/profiles`, `PUT /api/profiles/:name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileInput {
    /// Letters, digits, `_`, `-`, `.`; at most 64. On PUT it must match the path (or be left out).
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::word_nullable)]
    pub name: Option<String>,
    /// MiniJinja template of the iPXE script an `install` machine boots; it must compile.
    #[schema(schema_with = crate::rules::schema::text)]
    pub ipxe_template: String,
    /// The iPXE script a `rescue` machine boots (MiniJinja that must compile).
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::text_or_empty_nullable)]
    pub rescue_template: Option<String>,
    /// Installer templates by name (`kickstart`, `user-data`, `preseed`, `postboot`, ...; names
    /// of `a-z`, `0-9`, `-`, at most 64), served at `{files}/<name>`.
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::templates)]
    pub templates: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileRow {
    pub id: String,
    pub name: String,
    pub ipxe_template: String,
    pub rescue_template: Option<String>,
    pub templates: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /api/machines/:id/inventory`: what the discovery image found in /proc and /sys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    /// `bios` or `uefi`.
    #[schema(schema_with = crate::rules::schema::firmware)]
    pub firmware: String,
    pub cpu: InventoryCpu,
    #[serde(deserialize_with = "crate::whole_number::u64")]
    pub memory_bytes: u64,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::disks)]
    pub disks: Vec<InventoryDisk>,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::nics)]
    pub nics: Vec<InventoryNic>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryCpu {
    #[schema(schema_with = crate::rules::schema::inventory_text)]
    pub model: String,
    #[serde(deserialize_with = "crate::whole_number::u32")]
    #[schema(schema_with = crate::rules::schema::cpu_count)]
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryDisk {
    #[schema(schema_with = crate::rules::schema::inventory_name)]
    pub name: String,
    #[serde(deserialize_with = "crate::whole_number::u64")]
    pub size_bytes: u64,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::inventory_text)]
    pub model: String,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::inventory_text)]
    pub serial: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryNic {
    #[schema(schema_with = crate::rules::schema::mac)]
    pub mac: String,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::inventory_text)]
    pub driver: String,
    #[serde(default, deserialize_with = "crate::whole_number::option_u32")]
    pub speed_mbps: Option<u32>,
    #[serde(default)]
    pub link: bool,
}

/// `POST /api/machines/import`: what became of each line (or YAML entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub created: u32,
    pub updated: u32,
    pub refused: u32,
    pub lines: Vec<ImportLine>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportLine {
    /// 1-based line number in the uploaded text (a YAML entry's is the line of its name).
    pub line: u32,
    /// `created`, `updated` or `refused`.
    pub outcome: String,
    pub mac: Option<String>,
    pub name: Option<String>,
    pub machine_id: Option<String>,
    /// Why it was refused.
    pub reason: Option<String>,
}

/// `GET /api/machines/:id/timeline`: the last boots, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub machine_id: String,
    pub mac: String,
    pub boots: Vec<TimelineBoot>,
}

/// One boot: from a DHCP answer (or the first event seen) to the next one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineBoot {
    pub started_at: String,
    pub steps: Vec<TimelineStep>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineStep {
    /// `dhcp_answered`, `tftp_served`, `tftp_failed`, `http_served`, `boot_decision`,
    /// `script_fetched`, `template_fetched`, `inventory_reported`, `installed`, `state_changed`.
    pub kind: String,
    pub at: String,
    /// Milliseconds since the boot's previous step (0 for the first).
    pub since_previous_ms: u64,
    /// What the step carried: arch, file, bytes, durationMs, template, state, ...
    pub detail: BTreeMap<String, String>,
}

// ---- validation -------------------------------------------------------------------------

pub const MAX_LIST_ITEMS: usize = 64;
pub const MAX_METADATA_KEYS: usize = 64;
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_REASON_BYTES: usize = 1024;
pub const MAX_TEMPLATES: usize = 32;
pub const MAX_INVENTORY_ITEMS: usize = 64;
pub const MAX_INVENTORY_TEXT: usize = 256;

/// A MAC address as `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` or `aabb.ccdd.eeff`, any case;
/// returned lowercase with `:`.
pub fn mac(field: &str, value: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::invalid(
            field,
            "must be a MAC address like 52:54:00:12:34:56 (or with '-', or 5254.0012.3456)",
        )
    };
    let hex: String = if value.contains('.') {
        let groups: Vec<&str> = value.split('.').collect();
        if groups.len() != 3 || groups.iter().any(|g| g.len() != 4) {
            return Err(bad());
        }
        groups.concat()
    } else {
        let parts: Vec<&str> = value.split([':', '-']).collect();
        if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
            return Err(bad());
        }
        // One separator only.
        if value.contains(':') && value.contains('-') {
            return Err(bad());
        }
        parts.concat()
    };
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let hex = hex.to_ascii_lowercase();
    Ok((0..6)
        .map(|i| &hex[i * 2..i * 2 + 2])
        .collect::<Vec<_>>()
        .join(":"))
}

/// A machine's name: one host name label, lowercase.
pub fn machine_name(field: &str, value: &str) -> Result<String, ApiError> {
    let v = value.to_ascii_lowercase();
    let ok = !v.is_empty()
        && v.len() <= 63
        && !v.starts_with('-')
        && !v.ends_with('-')
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(v)
    } else {
        Err(ApiError::invalid(
            field,
            "must be a host name label: 1 to 63 letters, digits or '-', not starting or ending with '-'",
        ))
    }
}

/// Names in ranks, groups, profiles and metadata keys: letters, digits, `_`, `-`, `.`.
pub fn word(field: &str, value: &str) -> Result<(), ApiError> {
    bytes_of(
        field,
        value,
        MAX_NAME_LEN,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'),
        format_args!("must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.'"),
    )
}

/// A template's name: `a-z`, `0-9`, `-`, at most 64.
pub fn template_name(field: &str, value: &str) -> Result<(), ApiError> {
    bytes_of(
        field,
        value,
        MAX_NAME_LEN,
        |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
        format_args!("must be 1 to {MAX_NAME_LEN} of a-z, 0-9 or '-'"),
    )
}

/// `bios` or `uefi` (`""` allowed when `optional`).
pub fn firmware(field: &str, value: &str, optional: bool) -> Result<(), ApiError> {
    match value {
        "bios" | "uefi" => Ok(()),
        "" if optional => Ok(()),
        _ => Err(ApiError::invalid(field, "must be bios or uefi")),
    }
}

pub fn words(field: &str, values: &[String]) -> Result<(), ApiError> {
    if values.len() > MAX_LIST_ITEMS {
        return Err(ApiError::invalid(
            field,
            format!("must have at most {MAX_LIST_ITEMS} entries"),
        ));
    }
    for v in values {
        word(field, v)?;
    }
    Ok(())
}

pub fn metadata(field: &str, values: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if values.len() > MAX_METADATA_KEYS {
        return Err(ApiError::invalid(
            field,
            format!("must have at most {MAX_METADATA_KEYS} keys"),
        ));
    }
    for (k, v) in values {
        word(&format!("{field}.{k}"), k).map_err(|_| {
            ApiError::invalid(
                field,
                format!("key {k:?} must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.'"),
            )
        })?;
        if v.len() > MAX_METADATA_VALUE_BYTES || v.contains('\0') {
            return Err(ApiError::invalid(
                field,
                format!(
                    "value of {k:?} must be at most {MAX_METADATA_VALUE_BYTES} bytes, without NUL"
                ),
            ));
        }
    }
    Ok(())
}

fn bounded_text(field: &str, value: &str) -> Result<(), ApiError> {
    crate::validate::printable(field, value, MAX_INVENTORY_TEXT)
}

impl Inventory {
    /// Checks bounds and forms; NIC MACs come back normalised.
    pub fn validated(mut self) -> Result<Inventory, ApiError> {
        firmware("firmware", &self.firmware, false)?;
        bounded_text("cpu.model", &self.cpu.model)?;
        if self.cpu.count == 0 || self.cpu.count > 65_536 {
            return Err(ApiError::invalid("cpu.count", "must be 1 to 65536"));
        }
        if self.disks.len() > MAX_INVENTORY_ITEMS {
            return Err(ApiError::invalid(
                "disks",
                format!("must have at most {MAX_INVENTORY_ITEMS} entries"),
            ));
        }
        if self.nics.len() > MAX_INVENTORY_ITEMS {
            return Err(ApiError::invalid(
                "nics",
                format!("must have at most {MAX_INVENTORY_ITEMS} entries"),
            ));
        }
        for d in &self.disks {
            if d.name.is_empty() {
                return Err(ApiError::invalid("disks.name", "must not be empty"));
            }
            bounded_text("disks.name", &d.name)?;
            bounded_text("disks.model", &d.model)?;
            bounded_text("disks.serial", &d.serial)?;
        }
        for n in &mut self.nics {
            n.mac = mac("nics.mac", &n.mac)?;
            bounded_text("nics.driver", &n.driver)?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_in_every_usual_form() {
        for good in [
            "52:54:00:AB:cd:01",
            "52-54-00-ab-cd-01",
            "5254.00ab.cd01",
            "52:54:00:ab:cd:01",
        ] {
            assert_eq!(
                mac("mac", good).as_deref(),
                Ok("52:54:00:ab:cd:01"),
                "{good}"
            );
        }
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0g",
            "52:54-00:ab:cd:01",
            "525400abcd01",
            "5254.00ab.cd0",
            "52:54:00:ab:cd:01;reboot",
        ] {
            let e = mac("mac", bad).expect_err(bad);
            assert_eq!(e.field.as_deref(), Some("mac"));
        }
    }

    #[test]
    fn names_and_words() {
        assert_eq!(machine_name("name", "Node-1").as_deref(), Ok("node-1"));
        assert!(machine_name("name", "a.b").is_err());
        assert!(template_name("templates", "user-data").is_ok());
        assert!(template_name("templates", "User").is_err());
        assert!(template_name("templates", "../x").is_err());
        assert!(word("ranks", "rank_0.a-b").is_ok());
        assert!(word("ranks", "a b").is_err());
        let mut m = BTreeMap::new();
        m.insert("rack".to_owned(), "r1; rm -rf /".to_owned());
        assert!(metadata("metadata", &m).is_ok());
        m.insert("bad key".to_owned(), String::new());
        assert_eq!(
            metadata("metadata", &m)
                .expect_err("bad key")
                .field
                .as_deref(),
            Some("metadata")
        );
    }
}

/// The operations of `subjects::machines_op`, shared by the gateway and the service.
pub mod ops {
    pub const CREATE: &str = "create";
    pub const LIST: &str = "list";
    pub const GET: &str = "get";
    pub const UPDATE: &str = "update";
    pub const DELETE: &str = "delete";
    pub const STATE: &str = "state";
    pub const HISTORY: &str = "history";
    pub const IMPORT: &str = "import";
    pub const EVENT: &str = "event";
    pub const INVENTORY: &str = "inventory";
    pub const SCRIPT: &str = "script";
    pub const FILE: &str = "file";
    pub const TIMELINE: &str = "timeline";
    pub const PROFILE_CREATE: &str = "profiles.create";
    pub const PROFILE_LIST: &str = "profiles.list";
    pub const PROFILE_GET: &str = "profiles.get";
    pub const PROFILE_PUT: &str = "profiles.put";
    pub const PROFILE_DELETE: &str = "profiles.delete";
    pub const SITE_GET: &str = "sites.get";
    pub const SITE_PUT: &str = "sites.put";
    /// `PowerInput` → `PowerResult`: runs through the machine's BMC, in its site's distributor.
    pub const POWER: &str = "power";
    /// The public key (hex X25519) to seal BMC passwords to (`BmcInput::sealed_password`).
    pub const SEAL_KEY: &str = "seal-key";

    pub const ALL: [&str; 22] = [
        CREATE,
        LIST,
        GET,
        UPDATE,
        DELETE,
        STATE,
        HISTORY,
        IMPORT,
        EVENT,
        INVENTORY,
        SCRIPT,
        FILE,
        TIMELINE,
        PROFILE_CREATE,
        PROFILE_LIST,
        PROFILE_GET,
        PROFILE_PUT,
        PROFILE_DELETE,
        SITE_GET,
        SITE_PUT,
        POWER,
        SEAL_KEY,
    ];
}

/// Machine tokens start with this, so the gateway tells them from operator JWTs at a glance.
pub const MACHINE_TOKEN_PREFIX: &str = "bfm1.";
