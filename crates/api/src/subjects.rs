//! Versioned NATS subjects: `bootfleet.v1.<registry>.<operation>`.

pub const PREFIX: &str = "bootfleet.v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    List,
    Get,
    Update,
    Delete,
    Generate,
    Ping,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::List => "list",
            Op::Get => "get",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Generate => "generate",
            Op::Ping => "ping",
        }
    }
}

pub fn subject(registry: &str, op: Op) -> String {
    format!("{PREFIX}.{registry}.{}", op.as_str())
}

/// Every service answers `bootfleet.v1.<service>.ping`; the gateway's `/readyz` asks each.
pub fn ping(service: &str) -> String {
    subject(service, Op::Ping)
}

/// The text registries and the service that owns each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScriptKind {
    Mainscripts,
    Subscripts,
    Kickstarts,
    Prebootscripts,
    Postbootscripts,
}

impl ScriptKind {
    pub const ALL: [ScriptKind; 5] = [
        ScriptKind::Mainscripts,
        ScriptKind::Subscripts,
        ScriptKind::Kickstarts,
        ScriptKind::Prebootscripts,
        ScriptKind::Postbootscripts,
    ];

    /// The plural name used in REST paths, subjects and table names.
    pub fn name(self) -> &'static str {
        match self {
            ScriptKind::Mainscripts => "mainscripts",
            ScriptKind::Subscripts => "subscripts",
            ScriptKind::Kickstarts => "kickstarts",
            ScriptKind::Prebootscripts => "prebootscripts",
            ScriptKind::Postbootscripts => "postbootscripts",
        }
    }

    /// The singular, for messages.
    pub fn singular(self) -> &'static str {
        let name = self.name();
        &name[..name.len() - 1]
    }

    pub fn service(self) -> &'static str {
        match self {
            ScriptKind::Mainscripts | ScriptKind::Subscripts => MAINSCRIPTS,
            ScriptKind::Kickstarts | ScriptKind::Prebootscripts | ScriptKind::Postbootscripts => {
                KICKSTARTS
            }
        }
    }

    pub fn subject(self, op: Op) -> String {
        subject(self.name(), op)
    }
}

// The services' names on the bus. The `bootfleet` crate's one list of services says which run.
/// Mainscripts and subscripts.
pub const MAINSCRIPTS: &str = "mainscripts";
/// Kickstarts, prebootscripts and postbootscripts.
pub const KICKSTARTS: &str = "kickstarts";
pub const SSHKEYS: &str = "sshkeys";
pub const DISTRIBUTORS: &str = "distributors";
pub const LOCALNODES: &str = "localnodes";
/// The artifact registry (all four kinds). Its rows are built by a builder service per kind,
/// named after the kind (`ArtifactKind::name`: `ipxes`, `grubs`, ...); builders answer only `ping`.
pub const ARTIFACTS: &str = "artifacts";
/// The JetStream work-queue stream the builders consume, and its subjects.
pub const BUILD_STREAM: &str = "BOOTFLEET_BUILDS";
pub const BUILD_SUBJECTS: &str = "bootfleet.v1.builds.*";

/// A build job for one kind of artifact.
pub fn build_job(kind: &str) -> String {
    format!("{PREFIX}.builds.{kind}")
}

/// The JetStream object store bucket that holds built artifacts, by content address.
pub const ARTIFACT_BUCKET: &str = "bootfleet-artifacts";

/// The key-value bucket where the gateway keeps the first answer to each `Idempotency-Key`.
pub const IDEMPOTENCY_BUCKET: &str = "bootfleet-idempotency";

/// Distributors report here, each under its own site (so a site's NATS login can be allowed
/// exactly its own subject); the `distributors` service answers with the row.
pub fn distributor_heartbeat(artifact_id: &str) -> String {
    format!("{PREFIX}.{DISTRIBUTORS}.heartbeat.{artifact_id}")
}

/// What the `distributors` service subscribes for heartbeats (site ids may contain dots).
pub fn distributor_heartbeats() -> String {
    format!("{PREFIX}.{DISTRIBUTORS}.heartbeat.>")
}

/// Setting a distributor's status (on/off).
pub fn distributor_set_status() -> String {
    format!("{PREFIX}.{DISTRIBUTORS}.status")
}

/// Pushed to one distributor when its row changes (it also learns it from its next heartbeat).
pub fn distributor_control(artifact_id: &str) -> String {
    format!("{PREFIX}.distributor.{artifact_id}.control")
}

/// The operator's configuration (`PUT /api/distributors/:id`).
pub fn distributor_configure() -> String {
    format!("{PREFIX}.{DISTRIBUTORS}.configure")
}

/// Asked of one distributor: apply this configuration and say what you serve.
pub fn distributor_apply(artifact_id: &str) -> String {
    format!("{PREFIX}.distributor.{artifact_id}.apply")
}

/// Per-MAC machine records, their states, profiles, inventory and boot timelines.
pub const MACHINES: &str = "machines";

/// A distributor asks what a PXE client of its site gets (`BootDecisionRequest`).
pub fn machines_boot(artifact_id: &str) -> String {
    format!("{PREFIX}.{MACHINES}.boot.{artifact_id}")
}

/// What the `machines` service subscribes for boot decisions.
pub fn machines_boots() -> String {
    format!("{PREFIX}.{MACHINES}.boot.>")
}

/// The gateway's calls of the `machines` service (`MachinesCall` → `MachinesReply`), one
/// subject per operation: `create`, `list`, `get`, `update`, `delete`, `state`, `history`,
/// `import`, `event`, `inventory`, `script`, `file`, `timeline`, `profiles.*`, `sites.*`.
pub fn machines_op(op: &str) -> String {
    format!("{PREFIX}.{MACHINES}.{op}")
}

/// The `localnodes` service asks which machines its nodes are (`MachineLookups`).
pub fn machines_lookup() -> String {
    format!("{PREFIX}.{MACHINES}.lookup")
}

/// A distributor asks for the nodes of its site (to probe them).
pub fn localnodes_of_site(artifact_id: &str) -> String {
    format!("{PREFIX}.{LOCALNODES}.site.{artifact_id}")
}

/// What the `localnodes` service subscribes for site listings.
pub fn localnodes_of_sites() -> String {
    format!("{PREFIX}.{LOCALNODES}.site.>")
}

/// A distributor reports which nodes of its site answered its probes.
pub fn localnodes_reachability(artifact_id: &str) -> String {
    format!("{PREFIX}.{LOCALNODES}.reachability.{artifact_id}")
}

/// What the `localnodes` service subscribes for reachability reports.
pub fn localnodes_reachabilities() -> String {
    format!("{PREFIX}.{LOCALNODES}.reachability.>")
}

/// Checks that a distributor's message names the site of the subject it came on: the subject
/// is what a site's NATS login is allowed, the message is only what it says. `pattern` is the
/// subscription (ending in `.>`).
pub fn check_site(pattern: &str, subject: &str, artifact_id: &str) -> Result<(), String> {
    let prefix = pattern.strip_suffix('>').unwrap_or(pattern);
    match subject.strip_prefix(prefix) {
        Some(site) if site == artifact_id => Ok(()),
        Some(site) => Err(format!(
            "a message for site {artifact_id:?} came on the subject of site {site:?}"
        )),
        None => Err(format!("unexpected subject {subject:?}")),
    }
}

/// An operator's script for one node.
pub fn localnodes_run_script() -> String {
    format!("{PREFIX}.{LOCALNODES}.script")
}

/// Asked of one site's distributor: run this over SSH on a node of the site.
pub fn distributor_exec(artifact_id: &str) -> String {
    format!("{PREFIX}.distributor.{artifact_id}.exec")
}

/// Asked of one site's distributor: power a machine through its BMC (`PowerRequest` →
/// `PowerReply`). The request carries the BMC's password: the only message that does.
pub fn distributor_power(artifact_id: &str) -> String {
    format!("{PREFIX}.distributor.{artifact_id}.power")
}

/// Groups of machines, the command library and runs of commands on machines.
pub const ACTIONS: &str = "actions";

/// The gateway's calls of the `actions` service (`ActionsCall` → `ActionsReply`), one subject
/// per operation (`bootfleet_api::actions::ops`).
pub fn actions_op(op: &str) -> String {
    format!("{PREFIX}.{ACTIONS}.{op}")
}

/// Asked of one site's distributor: run a command's script on a machine of the site over SSH,
/// publishing its output lines on [`actions_output`] as they come.
pub fn distributor_run(artifact_id: &str) -> String {
    format!("{PREFIX}.distributor.{artifact_id}.run")
}

/// Where a site's distributor publishes the output lines of the runs it executes (`RunOutput`).
pub fn actions_output(artifact_id: &str) -> String {
    format!("{PREFIX}.{ACTIONS}.output.{artifact_id}")
}

/// What the `actions` service subscribes for run output (every site).
pub fn actions_outputs() -> String {
    format!("{PREFIX}.{ACTIONS}.output.>")
}

/// A run's events for the gateway that streams it (JSON lines, `bootfleet_api::actions::RunEvent`),
/// published by the `actions` service instance that executes the run.
pub fn run_events(run_id: &str) -> String {
    format!("{PREFIX}.{ACTIONS}.events.{run_id}")
}

/// A script of this kind was changed or deleted; the payload is its id. Its service publishes
/// this before it answers the write, so a gateway drops its cached copy (the gateways' read
/// cache) before the write's answer can reach anyone.
pub fn script_changed(kind: ScriptKind) -> String {
    format!("{PREFIX}.events.changed.{}", kind.name())
}

/// Every script change (a subscription wildcard).
pub const ALL_SCRIPT_CHANGES: &str = "bootfleet.v1.events.changed.*";

/// A machine changed, or something every machine's rendered files depend on (a profile, a
/// site's policy): the payload is the machine's id, or empty for every machine. The `machines`
/// service publishes this before it answers the write, as the scripts services do
/// [`script_changed`], so a gateway drops the rendered files it keeps first.
pub const MACHINE_CHANGES: &str = "bootfleet.v1.machines.changed";

/// Fetches of a machine's rendered file that a gateway answered from its copy (a `BootEvent`
/// of kind `template_fetched`, its `file` the template, `count` the fetches it stands for), for
/// the `machines` service to write into the machine's timeline as it writes the fetches it
/// answers itself. Not a site's boot-event subject: those carry what distributors saw.
pub const MACHINE_FETCHES: &str = "bootfleet.v1.machines.fetched";

/// Boot events of one site.
pub fn boot_events(artifact_id: &str) -> String {
    format!("{PREFIX}.events.boot.{artifact_id}")
}

/// Boot events of every site (a subscription wildcard; `>` because site ids may contain dots).
pub const ALL_BOOT_EVENTS: &str = "bootfleet.v1.events.boot.>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_message_must_come_on_its_own_subject() {
        let pattern = distributor_heartbeats();
        assert_eq!(
            check_site(&pattern, &distributor_heartbeat("lab.b"), "lab.b"),
            Ok(())
        );
        assert_eq!(
            check_site(&pattern, &distributor_heartbeat("a"), "b"),
            Err("a message for site \"b\" came on the subject of site \"a\"".into())
        );
        // A dotted site is not a prefix match of another.
        assert!(check_site(&pattern, &distributor_heartbeat("a.b"), "a").is_err());
        assert!(check_site(&pattern, "bootfleet.v1.other.a", "a").is_err());
    }
}
