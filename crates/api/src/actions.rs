//! The `actions` service's REST types and their validation: groups of machines, the command
//! library (a default script and rank variants), runs of a command on machines and the lines a
//! run streams. The gateway and the service exchange these as JSON inside
//! `ActionsCall`/`ActionsReply` (see `proto/bootfleet/v1/bus.proto`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::machines::{metadata, word, words};

/// The operations of the `actions` service (`subjects::actions_op`).
pub mod ops {
    pub const GROUP_CREATE: &str = "groups.create";
    pub const GROUP_LIST: &str = "groups.list";
    pub const GROUP_GET: &str = "groups.get";
    pub const GROUP_PUT: &str = "groups.put";
    pub const GROUP_DELETE: &str = "groups.delete";
    pub const GROUP_MACHINES: &str = "groups.machines";
    pub const COMMAND_CREATE: &str = "commands.create";
    pub const COMMAND_LIST: &str = "commands.list";
    pub const COMMAND_GET: &str = "commands.get";
    pub const COMMAND_PUT: &str = "commands.put";
    pub const COMMAND_DELETE: &str = "commands.delete";
    pub const RUN_START: &str = "runs.start";
    pub const RUN_GET: &str = "runs.get";
    pub const RUN_LIST: &str = "runs.list";
}

/// The built-in power commands: `(name, action)` of the machines service's power operation.
pub const POWER_COMMANDS: [(&str, &str); 4] = [
    ("power-on", "on"),
    ("power-off", "off"),
    ("power-cycle", "cycle"),
    ("power-status", "status"),
];

/// The power action of a built-in command, `None` for any other name.
pub fn power_action(command: &str) -> Option<&'static str> {
    POWER_COMMANDS
        .iter()
        .find(|(name, _)| *name == command)
        .map(|(_, action)| *action)
}

pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
pub const MAX_SUMMARY_BYTES: usize = 256;
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
pub const MAX_VARIANTS: usize = 32;
/// Members of a group, and machines or groups named by a run.
pub const MAX_MEMBERS: usize = 1000;
/// Machines one run may target.
pub const MAX_RUN_MACHINES: usize = 1000;
pub const DEFAULT_CONCURRENCY: u32 = 8;
pub const MAX_CONCURRENCY: u32 = 64;
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 300;
pub const MAX_TIMEOUT_SECONDS: u32 = 3600;
/// The output a run keeps per machine (its last bytes).
pub const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// A group's selector: machines with any of `ranks` (when given) and every `metadata` pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupMatch {
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::ranks)]
    pub ranks: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::metadata)]
    pub metadata: BTreeMap<String, String>,
}

impl GroupMatch {
    /// Whether a machine with these ranks and metadata matches. An empty selector matches none.
    pub fn matches(&self, ranks: &[String], meta: &BTreeMap<String, String>) -> bool {
        if self.ranks.is_empty() && self.metadata.is_empty() {
            return false;
        }
        let rank_ok = self.ranks.is_empty() || self.ranks.iter().any(|r| ranks.contains(r));
        rank_ok
            && self
                .metadata
                .iter()
                .all(|(k, v)| meta.get(k).is_some_and(|m| m == v))
    }
}

/// `POST /api/groups`, `PUT /api/groups/:name`. Every name in `members` must be an existing
/// machine's id or unique name; on `PUT` a `name` must be the path's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupInput {
    /// Letters, digits, `_`, `-`, `.`; required on `POST` (on `PUT` the path names it).
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::word_nullable)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::description_nullable)]
    pub description: Option<String>,
    /// Machines by id or name (a name must be unique among the machines; each must exist).
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::refs)]
    pub members: Vec<String>,
    /// Every machine with one of these ranks and all of these metadata pairs.
    #[serde(default, rename = "match")]
    pub selector: Option<GroupMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub members: Vec<String>,
    #[serde(rename = "match")]
    pub selector: Option<GroupMatch>,
    pub created_at: String,
    pub updated_at: String,
}

/// A machine a group or a run resolved to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMachine {
    pub id: String,
    pub name: Option<String>,
    pub artifact_id: String,
    pub ip: String,
    pub ranks: Vec<String>,
    /// Why it is in: `member`, `match`, `groups` (its own `groups` field names the group).
    pub via: Vec<String>,
}

/// `GET /api/groups/:name/machines`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMachines {
    pub group: String,
    pub machines: Vec<GroupMachine>,
}

/// A rank's own script.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Variant {
    #[schema(schema_with = crate::rules::schema::word)]
    pub rank: String,
    #[schema(schema_with = crate::rules::schema::command_script)]
    pub script: String,
}

/// `POST /api/commands`, `PUT /api/commands/:name`. At most one variant per rank; the name is
/// not a built-in command's (`power-on`, `power-off`, `power-cycle`, `power-status`); on `PUT`
/// a `name` must be the path's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandInput {
    /// Letters, digits, `_`, `-`, `.`; required on `POST` (on `PUT` the path names it). Not
    /// the name of a built-in command.
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::word_nullable)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::summary_nullable)]
    pub summary: Option<String>,
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::description_nullable)]
    pub description: Option<String>,
    /// The default script (at most 64 KiB), run by the node's login shell.
    #[schema(schema_with = crate::rules::schema::command_script)]
    pub script: String,
    /// Per-rank scripts: a machine runs the variant of its first rank that has one.
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::variants)]
    pub variants: Vec<Variant>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandRow {
    pub name: String,
    pub summary: String,
    pub description: String,
    /// `""` for a built-in command.
    pub script: String,
    pub variants: Vec<Variant>,
    /// A built-in power command: runs the machines service's power operation, not a script;
    /// it cannot be changed or deleted.
    pub built_in: bool,
    /// `null` for a built-in command.
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// `POST /api/commands/:name/runs`: at least one of `machines` and `groups`, each naming an
/// existing machine or group; a script command needs `privateKey`.
// Its `Debug` leaves the private key out.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunInput {
    /// Machines by id or name. At least one machine or group.
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::refs)]
    pub machines: Vec<String>,
    /// Groups by name: their machines are added.
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::refs)]
    pub groups: Vec<String>,
    /// The SSH user (default `root`).
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::run_user_nullable)]
    pub user: Option<String>,
    /// An unencrypted OpenSSH private key; needed by script commands, not by power commands.
    /// Never stored or logged.
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::private_key_nullable)]
    pub private_key: Option<String>,
    /// Machines at a time (default 8, at most 64).
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::concurrency_nullable)]
    pub concurrency: Option<u32>,
    /// Per machine, from connecting to the end (default 300, at most 3600).
    #[serde(default)]
    #[schema(schema_with = crate::rules::schema::timeout_seconds_nullable)]
    pub timeout_seconds: Option<u32>,
    /// Each machine's SSH host key is recorded at its first run and must be the same at every
    /// later run (else the machine is refused before the key is offered). `true` accepts and
    /// records whatever key each machine presents now: after a reinstall.
    #[serde(default)]
    pub accept_new_host_keys: bool,
}

crate::debug_fields!(RunInput as r {
    machines,
    groups,
    user,
    private_key: r.private_key.as_ref().map(|_| "<redacted>"),
    concurrency,
    timeout_seconds,
    accept_new_host_keys,
});

/// One line of a run's stream (NDJSON): a line of output, a machine's end, or the run's end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunEvent {
    /// The machine's name (its id when it has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// `stdout` or `stderr`, with `line`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// The machine's script ended with this code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The machine did not run to the end (unreachable, refused key, timeout, killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A power command's answer for the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<String>,
    /// The run's id, on its first and last lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The machines the run targets, on its first line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machines: Option<Vec<String>>,
    /// True on the last line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<bool>,
}

/// What one machine did in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunMachine {
    pub machine_id: String,
    pub machine: String,
    /// The rank whose variant ran, `default`, or `power` for a built-in command.
    pub variant: String,
    /// `running`, `done` (exit code known) or `failed` (error).
    pub status: String,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub power_state: Option<String>,
    /// The last 64 KiB of its output (stdout and stderr lines, interleaved as they came).
    pub output: String,
    /// True when earlier output was dropped from `output`.
    pub truncated: bool,
    pub finished_at: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRow {
    pub id: String,
    pub command: String,
    /// Who started it: the operator token's subject.
    pub actor: String,
    /// `running` or `done`.
    pub status: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub machines: Vec<RunMachine>,
}

/// The environment variable a metadata key becomes: `BF_META_` and the key in upper case with
/// `-` and `.` as `_` (keys are words: letters, digits, `_`, `-`, `.`).
pub fn metadata_env_name(key: &str) -> String {
    let mapped: String = key
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => c.to_ascii_uppercase(),
            _ => '_',
        })
        .collect();
    format!("BF_META_{mapped}")
}

/// Whether a name is a portable environment variable name (`[A-Z_][A-Z0-9_]*`).
pub fn env_name_ok(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z' | b'_'))
        && bytes.all(|b| matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'_'))
        && name.len() <= 128
}

/// The environment of a machine's script: `BF_NODE_ID`, `BF_NODE_NAME`, `BF_NODE_ADDRESS`,
/// `BF_NODE_SITE`, `BF_NODE_RANKS` (space-separated) and `BF_META_<KEY>` per metadata key.
/// Two keys that map to one name are refused (naming `field`).
pub fn machine_env(
    field: &str,
    machine: &str,
    fixed: [(&str, String); 5],
    meta: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut env: BTreeMap<String, String> =
        fixed.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let mut from: BTreeMap<String, &str> = BTreeMap::new();
    for (key, value) in meta {
        let name = metadata_env_name(key);
        if !env_name_ok(&name) {
            return Err(ApiError::invalid(
                field,
                format!("metadata key {key:?} of machine {machine} makes no valid environment variable name"),
            ));
        }
        if let Some(other) = from.insert(name.clone(), key) {
            return Err(ApiError::invalid(
                field,
                format!("metadata keys {other:?} and {key:?} of machine {machine} both map to {name}; rename one"),
            ));
        }
        env.insert(name, value.clone());
    }
    Ok(env)
}

/// The variant a machine runs: that of its first rank (in its own order) that has one.
pub fn pick_variant<'a>(ranks: &[String], variants: &'a [Variant]) -> Option<&'a Variant> {
    ranks
        .iter()
        .find_map(|rank| variants.iter().find(|v| &v.rank == rank))
}

fn bounded(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max || value.contains('\0') {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {max} bytes, without NUL"),
        ));
    }
    Ok(())
}

fn script(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    bounded(field, value, MAX_SCRIPT_BYTES)
}

/// A command's or a group's name; built-in command names are refused by the caller.
pub fn name(field: &str, value: &str) -> Result<(), ApiError> {
    word(field, value)
}

/// Checks a command; `name` is the name it will have.
pub fn check_command(name_: &str, input: &CommandInput) -> Result<(), ApiError> {
    name("name", name_)?;
    if power_action(name_).is_some() {
        return Err(built_in(name_));
    }
    bounded(
        "summary",
        input.summary.as_deref().unwrap_or_default(),
        MAX_SUMMARY_BYTES,
    )?;
    bounded(
        "description",
        input.description.as_deref().unwrap_or_default(),
        MAX_DESCRIPTION_BYTES,
    )?;
    script("script", &input.script)?;
    if input.variants.len() > MAX_VARIANTS {
        return Err(ApiError::invalid(
            "variants",
            format!("must have at most {MAX_VARIANTS} entries"),
        ));
    }
    for (i, v) in input.variants.iter().enumerate() {
        word("variants", &v.rank).map_err(|e| {
            ApiError::invalid("variants", format!("[{i}].rank {}", strip_field(&e)))
        })?;
        script("variants", &v.script).map_err(|e| {
            ApiError::invalid("variants", format!("[{i}].script {}", strip_field(&e)))
        })?;
        if input.variants[..i].iter().any(|o| o.rank == v.rank) {
            return Err(ApiError::invalid(
                "variants",
                format!("rank {:?} has two variants", v.rank),
            ));
        }
    }
    Ok(())
}

/// 409 for a write to a built-in command.
pub fn built_in(name: &str) -> ApiError {
    ApiError {
        code: ErrorCode::Conflict,
        message: format!(
            "name: {name} is a built-in command; it cannot be created, changed or deleted"
        ),
        field: Some("name".into()),
    }
}

fn strip_field(e: &ApiError) -> String {
    let field = e.field.as_deref().unwrap_or_default();
    e.message
        .strip_prefix(field)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(&e.message)
        .to_owned()
}

/// Checks a group; `name` is the name it will have.
pub fn check_group(name_: &str, input: &GroupInput) -> Result<(), ApiError> {
    name("name", name_)?;
    bounded(
        "description",
        input.description.as_deref().unwrap_or_default(),
        MAX_DESCRIPTION_BYTES,
    )?;
    refs("members", &input.members)?;
    if let Some(selector) = &input.selector {
        words("match.ranks", &selector.ranks)
            .map_err(|e| ApiError::invalid("match", strip_field(&e)))?;
        metadata("match", &selector.metadata)?;
    }
    Ok(())
}

/// Machines or groups named in a list: words or ids, at most [`MAX_MEMBERS`].
pub fn refs(field: &str, values: &[String]) -> Result<(), ApiError> {
    if values.len() > MAX_MEMBERS {
        return Err(ApiError::invalid(
            field,
            format!("must have at most {MAX_MEMBERS} entries"),
        ));
    }
    for v in values {
        word(field, v)?;
    }
    Ok(())
}

/// Checks a run's request (not the machines it names: the service resolves them).
pub fn check_run(input: &RunInput, needs_key: bool) -> Result<(), ApiError> {
    refs("machines", &input.machines)?;
    refs("groups", &input.groups)?;
    if input.machines.is_empty() && input.groups.is_empty() {
        return Err(ApiError::invalid(
            "machines",
            "name at least one machine or group",
        ));
    }
    if let Some(user) = &input.user {
        let ok = !user.is_empty()
            && user.len() <= 32
            && user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(ApiError::invalid(
                "user",
                "must be 1 to 32 letters, digits, '_', '-' or '.'",
            ));
        }
    }
    match input.private_key.as_deref() {
        Some(k) if k.len() > 16 * 1024 => {
            return Err(ApiError::invalid("privateKey", "must be at most 16 KiB"))
        }
        None | Some("") if needs_key => {
            return Err(ApiError::invalid(
                "privateKey",
                "is required: the machines are reached over ssh with it",
            ))
        }
        _ => {}
    }
    if let Some(c) = input.concurrency {
        if !(1..=MAX_CONCURRENCY).contains(&c) {
            return Err(ApiError::invalid(
                "concurrency",
                format!("must be from 1 to {MAX_CONCURRENCY}"),
            ));
        }
    }
    if let Some(t) = input.timeout_seconds {
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&t) {
            return Err(ApiError::invalid(
                "timeoutSeconds",
                format!("must be from 1 to {MAX_TIMEOUT_SECONDS}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn the_first_rank_with_a_variant_wins() {
        let variants = vec![
            Variant {
                rank: "aws".into(),
                script: "a".into(),
            },
            Variant {
                rank: "metal".into(),
                script: "m".into(),
            },
        ];
        assert_eq!(
            pick_variant(&s(&["gpu", "metal", "aws"]), &variants).map(|v| v.script.as_str()),
            Some("m")
        );
        assert_eq!(
            pick_variant(&s(&["aws", "metal"]), &variants).map(|v| v.script.as_str()),
            Some("a")
        );
        assert_eq!(pick_variant(&s(&["gpu"]), &variants), None);
        assert_eq!(pick_variant(&[], &variants), None);
    }

    #[test]
    fn metadata_keys_become_env_names_and_collisions_are_refused() {
        assert_eq!(metadata_env_name("ec2_id"), "BF_META_EC2_ID");
        assert_eq!(metadata_env_name("rack.row-1"), "BF_META_RACK_ROW_1");
        assert!(env_name_ok("BF_META_X"));
        assert!(!env_name_ok("1X") && !env_name_ok("a") && !env_name_ok("A-B") && !env_name_ok(""));
        let fixed = || {
            [
                ("BF_NODE_ID", "i".to_owned()),
                ("BF_NODE_NAME", "n".to_owned()),
                ("BF_NODE_ADDRESS", "a".to_owned()),
                ("BF_NODE_SITE", "s".to_owned()),
                ("BF_NODE_RANKS", "r".to_owned()),
            ]
        };
        let mut meta = BTreeMap::new();
        meta.insert("rack".to_owned(), "r1".to_owned());
        let env = machine_env("machines", "n1", fixed(), &meta).expect("env");
        assert_eq!(env["BF_META_RACK"], "r1");
        assert_eq!(env["BF_NODE_NAME"], "n");
        meta.insert("RACK".to_owned(), "r2".to_owned());
        let e = machine_env("machines", "n1", fixed(), &meta).expect_err("collision");
        assert_eq!(e.field.as_deref(), Some("machines"));
        assert!(e.message.contains("BF_META_RACK"), "{}", e.message);
    }

    #[test]
    fn selectors_need_a_rank_and_every_pair() {
        let mut meta = BTreeMap::new();
        meta.insert("rack".to_owned(), "r1".to_owned());
        let m = GroupMatch {
            ranks: s(&["metal", "gpu"]),
            metadata: meta.clone(),
        };
        assert!(m.matches(&s(&["gpu"]), &meta));
        assert!(!m.matches(&s(&["aws"]), &meta));
        assert!(!m.matches(&s(&["gpu"]), &BTreeMap::new()));
        assert!(!GroupMatch::default().matches(&s(&["gpu"]), &meta));
        let only_meta = GroupMatch {
            ranks: vec![],
            metadata: meta.clone(),
        };
        assert!(only_meta.matches(&[], &meta));
    }

    #[test]
    fn commands_are_checked_with_fields_named() {
        let ok = CommandInput {
            script: "echo hi".into(),
            ..Default::default()
        };
        assert!(check_command("hello", &ok).is_ok());
        assert_eq!(
            check_command("a b", &ok)
                .expect_err("name")
                .field
                .as_deref(),
            Some("name")
        );
        assert_eq!(
            check_command("power-on", &ok).expect_err("builtin").code,
            ErrorCode::Conflict
        );
        let empty = CommandInput {
            script: " \n".into(),
            ..Default::default()
        };
        assert_eq!(
            check_command("x", &empty)
                .expect_err("empty")
                .field
                .as_deref(),
            Some("script")
        );
        let twice = CommandInput {
            script: "x".into(),
            variants: vec![
                Variant {
                    rank: "metal".into(),
                    script: "a".into(),
                },
                Variant {
                    rank: "metal".into(),
                    script: "b".into(),
                },
            ],
            ..Default::default()
        };
        let e = check_command("x", &twice).expect_err("twice");
        assert_eq!(e.field.as_deref(), Some("variants"));
        assert!(e.message.starts_with("variants"), "{}", e.message);
        let big = CommandInput {
            script: "x".repeat(MAX_SCRIPT_BYTES + 1),
            ..Default::default()
        };
        assert_eq!(
            check_command("x", &big).expect_err("big").field.as_deref(),
            Some("script")
        );
    }
}
