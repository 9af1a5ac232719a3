//! The `actions` service: groups of machines (explicit members, a rank/metadata selector, and
//! machines whose own `groups` name the group), a library of commands whose script is chosen by
//! the machine's ranks, and runs of a command on machines.
//!
//! A run of a script command asks each machine's site distributor to run the chosen script over
//! SSH (`bootfleet.v1.distributor.<site>.run`), at most `concurrency` machines at a time. The
//! machine's name, address and metadata travel as environment variables, never in the script
//! text. The distributor publishes the output lines on its site's output subject; every
//! instance of this service follows those subjects and relays the lines of the runs it executes
//! to `bootfleet.v1.actions.events.<run>` (which the gateway streams to the operator) and keeps
//! a bounded tail per machine. A run of a built-in power command asks the machines service's
//! `power` operation instead. Machines are always read from the machines service over the bus,
//! never from its tables.

mod migrations;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bootfleet_api::actions::{
    self as a, ops, CommandInput, CommandRow, GroupInput, GroupMachine, GroupMachines, GroupMatch,
    GroupRow, RunEvent, RunInput, RunMachine, RunRow, Variant,
};
use bootfleet_api::machines::MachineRow;
use bootfleet_api::rest::Page;
use bootfleet_api::{format_timestamp, proto, subjects, validate, ApiError, ErrorCode, ListParams};
use bootfleet_bus::{Bus, ServiceBuilder, TraceParent};
use bootfleet_service_kit::{Context, Routes, Service, StartError};
use bootfleet_store::sea_orm::sea_query::{Alias, Expr, OnConflict, Order, Query, SimpleExpr};
use bootfleet_store::sea_orm::{ConnectionTrait, FromQueryResult, StatementBuilder};
use bootfleet_store::{db_error, now_ms, Database, TableSpec};
use serde::Serialize;
use tokio::sync::watch;

pub use migrations::ActionsMigrator;

const SERVICE: &str = subjects::ACTIONS;
/// Machines read from the machines service per page, and pages at most (10 000 machines).
const MACHINES_PAGE: u32 = 100;
const MAX_MACHINE_PAGES: u32 = 100;
/// How long a machine's end waits for the relay to catch up with the lines the distributor
/// says it published (they left before its answer; this only bounds a lost one).
const RELAY_CATCH_UP: Duration = Duration::from_secs(10);

static GROUPS: TableSpec = TableSpec {
    table: "action_groups",
    fields: &[
        ("id", "id"),
        ("name", "name"),
        ("description", "description"),
        ("members", "members"),
        ("match", "selector"),
        ("createdAt", "created_at"),
        ("updatedAt", "updated_at"),
    ],
    list: bootfleet_api::list::fields::GROUPS,
};

static COMMANDS: TableSpec = TableSpec {
    table: "action_commands",
    fields: &[
        ("id", "id"),
        ("name", "name"),
        ("summary", "summary"),
        ("description", "description"),
        ("script", "script"),
        ("variants", "variants"),
        ("builtIn", "built_in"),
        ("createdAt", "created_at"),
        ("updatedAt", "updated_at"),
    ],
    list: bootfleet_api::list::fields::COMMANDS,
};

static RUNS: TableSpec = TableSpec {
    table: "action_runs",
    fields: &[
        ("id", "id"),
        ("command", "command"),
        ("actor", "actor"),
        ("status", "status"),
        ("finishedAt", "finished_at"),
        ("createdAt", "created_at"),
        ("updatedAt", "updated_at"),
    ],
    list: bootfleet_api::list::fields::RUNS,
};

#[derive(Debug, FromQueryResult)]
struct GroupRec {
    id: String,
    name: String,
    description: String,
    members: String,
    selector: String,
    created_at: i64,
    updated_at: i64,
}

impl GroupRec {
    fn members(&self) -> Vec<String> {
        serde_json::from_str(&self.members).unwrap_or_default()
    }

    fn selector(&self) -> Option<GroupMatch> {
        serde_json::from_str(&self.selector).ok()
    }

    fn row(&self) -> GroupRow {
        GroupRow {
            id: self.id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            members: self.members(),
            selector: self.selector(),
            created_at: format_timestamp(self.created_at),
            updated_at: format_timestamp(self.updated_at),
        }
    }
}

#[derive(Debug, FromQueryResult)]
struct CommandRec {
    id: String,
    name: String,
    summary: String,
    description: String,
    script: String,
    variants: String,
    built_in: bool,
    created_at: i64,
    updated_at: i64,
}

impl CommandRec {
    fn variants(&self) -> Vec<Variant> {
        serde_json::from_str(&self.variants).unwrap_or_default()
    }

    fn row(&self) -> CommandRow {
        let at = |ms| (!self.built_in).then(|| format_timestamp(ms));
        CommandRow {
            name: self.name.clone(),
            summary: self.summary.clone(),
            description: self.description.clone(),
            script: self.script.clone(),
            variants: self.variants(),
            built_in: self.built_in,
            created_at: at(self.created_at),
            updated_at: at(self.updated_at),
        }
    }
}

#[derive(Debug, FromQueryResult)]
struct RunRec {
    id: String,
    command: String,
    actor: String,
    status: String,
    finished_at: Option<i64>,
    created_at: i64,
}

#[derive(Debug, FromQueryResult)]
struct RunMachineRec {
    run_id: String,
    machine_id: String,
    machine: String,
    variant: String,
    status: String,
    exit_code: Option<i32>,
    error: Option<String>,
    power_state: Option<String>,
    output: String,
    truncated: bool,
    finished_at: Option<i64>,
}

impl RunMachineRec {
    fn row(self) -> RunMachine {
        RunMachine {
            machine_id: self.machine_id,
            machine: self.machine,
            variant: self.variant,
            status: self.status,
            exit_code: self.exit_code,
            error: self.error,
            power_state: self.power_state,
            output: self.output,
            truncated: self.truncated,
            finished_at: self.finished_at.map(format_timestamp),
        }
    }
}

fn json<T: Serialize>(value: &T, created: bool) -> Result<proto::ActionsReply, ApiError> {
    Ok(proto::ActionsReply {
        body: serde_json::to_string(value)
            .map_err(|e| ApiError::internal(format!("cannot encode the answer: {e}")))?,
        created,
    })
}

/// Parses a call's JSON body (the gateway checked its shape already; a service trusts no caller).
fn body<T: serde::de::DeserializeOwned>(call: &proto::ActionsCall) -> Result<T, ApiError> {
    serde_json::from_str(&call.body).map_err(|e| ApiError::invalid("body", e))
}

fn to_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The last [`a::OUTPUT_TAIL_BYTES`] of a machine's output.
#[derive(Debug, Default)]
struct Tail {
    text: String,
    truncated: bool,
}

impl Tail {
    fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        if self.text.len() > a::OUTPUT_TAIL_BYTES {
            let mut cut = self.text.len() - a::OUTPUT_TAIL_BYTES;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
            self.truncated = true;
        }
    }
}

/// A machine of a run this instance executes: where its lines may come from and what came.
#[derive(Debug)]
struct Relay {
    site: String,
    label: String,
    tail: Tail,
    /// Lines relayed so far.
    relayed: watch::Sender<u64>,
}

/// Runs this instance executes: run id → machine id → relay.
type Active = Arc<Mutex<HashMap<String, HashMap<String, Relay>>>>;

/// A machine of a run and what it runs.
#[derive(Debug, Clone)]
struct Target {
    position: i32,
    machine: MachineRow,
    label: String,
    variant: String,
    script: String,
    env: BTreeMap<String, String>,
}

/// What every machine of a run shares. Its `Debug` leaves the private key out.
#[derive(Clone)]
struct RunPlan {
    run_id: String,
    power: Option<&'static str>,
    user: String,
    private_key: String,
    timeout_seconds: u32,
    concurrency: u32,
    accept_new_host_keys: bool,
    actor: String,
    role: String,
    trace: TraceParent,
}

bootfleet_api::debug_fields!(RunPlan as p {
    run_id,
    power,
    user,
    private_key: "<redacted>",
    timeout_seconds,
    concurrency,
    accept_new_host_keys,
    actor,
});

/// How one machine ended.
#[derive(Debug, Default)]
struct Outcome {
    exit_code: Option<i32>,
    error: Option<String>,
    power_state: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Actions {
    db: Database,
    bus: Bus,
    active: Active,
}

impl Actions {
    pub fn new(db: Database, bus: Bus) -> Actions {
        Actions {
            db,
            bus,
            active: Arc::default(),
        }
    }

    fn build<S: StatementBuilder>(&self, s: &S) -> bootfleet_store::sea_orm::Statement {
        self.db.get_database_backend().build(s)
    }

    async fn exec<S: StatementBuilder>(&self, s: &S) -> Result<u64, ApiError> {
        bootfleet_store::execute(&self.db, s).await
    }

    async fn one_by_name<T: FromQueryResult>(
        &self,
        spec: &TableSpec,
        name: &str,
    ) -> Result<Option<T>, ApiError> {
        bootfleet_store::one_where(&self.db, spec, "name", name).await
    }

    /// The built-in power commands, as rows (put there once; every instance may try).
    pub async fn ensure_built_ins(&self) -> Result<(), ApiError> {
        for (i, (name, action)) in a::POWER_COMMANDS.iter().enumerate() {
            let mut insert = Query::insert();
            insert
                .into_table(Alias::new(COMMANDS.table))
                .columns(
                    [
                        "id",
                        "name",
                        "summary",
                        "description",
                        "script",
                        "variants",
                        "built_in",
                        "created_at",
                        "updated_at",
                    ]
                    .map(Alias::new),
                )
                .values_panic([
                    format!("00000000-0000-4000-8000-00000000000{}", i + 1).into(),
                    (*name).into(),
                    format!("power {action}, through the machine's bmc (machines service)").into(),
                    format!("built in: asks the machines service's power operation with action {action:?} for each machine").into(),
                    "".into(),
                    "[]".into(),
                    true.into(),
                    0i64.into(),
                    0i64.into(),
                ])
                .on_conflict(OnConflict::column(Alias::new("name")).do_nothing().to_owned());
            self.exec(&insert).await?;
        }
        Ok(())
    }

    // ---- machines, from the machines service -------------------------------------------

    /// Every machine (bounded), asked of the machines service as the caller.
    async fn all_machines(
        &self,
        trace: &TraceParent,
        actor: &str,
        role: &str,
    ) -> Result<Vec<MachineRow>, ApiError> {
        let mut all = Vec::new();
        for page in 1..=MAX_MACHINE_PAGES {
            let call = proto::MachinesCall {
                actor: actor.to_owned(),
                role: role.to_owned(),
                list: Some(proto::ListRequest {
                    page,
                    page_size: MACHINES_PAGE,
                    sort: "createdAt".into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let reply: proto::MachinesReply = self
                .bus
                .request(trace, &subjects::machines_op("list"), &call)
                .await?;
            let page_rows: Page<MachineRow> = serde_json::from_str(&reply.body).map_err(|e| {
                ApiError::internal(format!(
                    "the machines service answered a list that does not parse: {e}"
                ))
            })?;
            let last = u64::from(page) >= page_rows.total_pages;
            all.extend(page_rows.rows);
            if last {
                break;
            }
        }
        Ok(all)
    }

    // ---- groups ---------------------------------------------------------------------------

    async fn group_rec(&self, name: &str) -> Result<GroupRec, ApiError> {
        self.one_by_name(&GROUPS, name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("group {name}")))
    }

    /// Checks a group and that its members exist.
    async fn checked_group(
        &self,
        call: &proto::ActionsCall,
        name: &str,
        input: &GroupInput,
    ) -> Result<(), ApiError> {
        a::check_group(name, input)?;
        if !input.members.is_empty() {
            let machines = self
                .all_machines(&TraceParent::new_root(), &call.actor, &call.role)
                .await?;
            for member in &input.members {
                find_machine(&machines, member, "members")?;
            }
        }
        Ok(())
    }

    async fn write_group(
        &self,
        name: &str,
        input: &GroupInput,
        existing: Option<&GroupRec>,
    ) -> Result<GroupRec, ApiError> {
        let values = vec![
            (
                "description",
                input.description.clone().unwrap_or_default().into(),
            ),
            ("members", to_text(&input.members).into()),
            (
                "selector",
                input
                    .selector
                    .as_ref()
                    .map(to_text)
                    .unwrap_or_default()
                    .into(),
            ),
        ];
        self.write_named(&GROUPS, name, values, existing.map(|r| r.id.as_str()))
            .await?;
        self.group_rec(name).await
    }

    /// Inserts a row of a table keyed by name (no `existing` id) or updates the row with that
    /// id; `values` are the table's own columns.
    async fn write_named(
        &self,
        spec: &TableSpec,
        name: &str,
        mut values: Vec<(&'static str, SimpleExpr)>,
        existing: Option<&str>,
    ) -> Result<(), ApiError> {
        let now = now_ms();
        values.push(("updated_at", now.into()));
        match existing {
            Some(id) => {
                let mut update = Query::update();
                update
                    .table(Alias::new(spec.table))
                    .values(values.into_iter().map(|(c, v)| (Alias::new(c), v)))
                    .and_where(Expr::col(Alias::new("id")).eq(id));
                self.exec(&update).await?;
            }
            None => {
                values.push(("id", uuid::Uuid::new_v4().to_string().into()));
                values.push(("name", name.into()));
                values.push(("created_at", now.into()));
                let mut insert = Query::insert();
                insert
                    .into_table(Alias::new(spec.table))
                    .columns(values.iter().map(|(c, _)| Alias::new(*c)))
                    .values_panic(values.into_iter().map(|(_, v)| v));
                self.exec(&insert).await?;
            }
        }
        Ok(())
    }

    async fn group_create(
        &self,
        call: proto::ActionsCall,
    ) -> Result<proto::ActionsReply, ApiError> {
        let input: GroupInput = body(&call)?;
        let name = input
            .name
            .clone()
            .ok_or_else(|| ApiError::invalid("name", "is required"))?;
        self.checked_group(&call, &name, &input).await?;
        if self
            .one_by_name::<GroupRec>(&GROUPS, &name)
            .await?
            .is_some()
        {
            return Err(conflict("name", format!("a group named {name} exists")));
        }
        json(&self.write_group(&name, &input, None).await?.row(), true)
    }

    async fn group_put(&self, call: proto::ActionsCall) -> Result<proto::ActionsReply, ApiError> {
        let mut input: GroupInput = body(&call)?;
        let name = call.id.clone();
        match &input.name {
            Some(n) if *n != name => {
                return Err(ApiError::invalid("name", "must match the name in the path"))
            }
            _ => input.name = Some(name.clone()),
        }
        self.checked_group(&call, &name, &input).await?;
        let existing = self.one_by_name::<GroupRec>(&GROUPS, &name).await?;
        let created = existing.is_none();
        json(
            &self
                .write_group(&name, &input, existing.as_ref())
                .await?
                .row(),
            created,
        )
    }

    async fn group_get(&self, call: proto::ActionsCall) -> Result<proto::ActionsReply, ApiError> {
        json(&self.group_rec(&call.id).await?.row(), false)
    }

    async fn group_delete(
        &self,
        call: proto::ActionsCall,
    ) -> Result<proto::ActionsReply, ApiError> {
        let rec = self.group_rec(&call.id).await?;
        bootfleet_store::delete(&self.db, &GROUPS, &rec.id).await?;
        json(&rec.row(), false)
    }

    async fn group_list(&self, call: proto::ActionsCall) -> Result<proto::ActionsReply, ApiError> {
        let params = ListParams::from_proto(&call.list.unwrap_or_default())?;
        let (rows, total) = bootfleet_store::list::<GroupRec>(&self.db, &GROUPS, &params).await?;
        json(
            &Page::new(
                rows.iter().map(GroupRec::row).collect::<Vec<_>>(),
                total,
                &params,
            ),
            false,
        )
    }

    async fn group_machines(
        &self,
        call: proto::ActionsCall,
    ) -> Result<proto::ActionsReply, ApiError> {
        let rec = self.group_rec(&call.id).await?;
        let machines = self
            .all_machines(&TraceParent::new_root(), &call.actor, &call.role)
            .await?;
        let resolved = resolve_group(&rec, &machines);
        json(
            &GroupMachines {
                group: rec.name.clone(),
                machines: resolved
                    .into_iter()
                    .map(|(m, via)| GroupMachine {
                        id: m.id.clone(),
                        name: m.name.clone(),
                        artifact_id: m.artifact_id.clone(),
                        ip: m.ip.clone(),
                        ranks: m.ranks.clone(),
                        via,
                    })
                    .collect(),
            },
            false,
        )
    }

    // ---- commands -------------------------------------------------------------------------

    async fn command_rec(&self, name: &str) -> Result<CommandRec, ApiError> {
        self.one_by_name(&COMMANDS, name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("command {name}")))
    }

    async fn write_command(
        &self,
        name: &str,
        input: &CommandInput,
        existing: Option<&CommandRec>,
    ) -> Result<CommandRec, ApiError> {
        let values = vec![
            ("summary", input.summary.clone().unwrap_or_default().into()),
            (
                "description",
                input.description.clone().unwrap_or_default().into(),
            ),
            ("script", input.script.clone().into()),
            ("variants", to_text(&input.variants).into()),
        ];
        self.write_named(&COMMANDS, name, values, existing.map(|r| r.id.as_str()))
            .await?;
        self.command_rec(name).await
    }

    async fn command_create(
        &self,
        call: proto::ActionsCall,
    ) -> Result<proto::ActionsReply, ApiError> {
        let input: CommandInput = body(&call)?;
        let name = input
            .name
            .clone()
            .ok_or_else(|| ApiError::invalid("name", "is required"))?;
        a::check_command(&name, &input)?;
        if self
            .one_by_name::<CommandRec>(&COMMANDS, &name)
            .await?
            .is_some()
        {
            return Err(conflict("name", format!("a command named {name} exists")));
        }
        json(&self.write_command(&name, &input, None).await?.row(), true)
    }

    async fn command_put(&self, call: proto::ActionsCall) -> Result<proto::ActionsReply, ApiError> {
        let input: CommandInput = body(&call)?;
        let name = call.id.clone();
        if input.name.as_ref().is_some_and(|n| *n != name) {
            return Err(ApiError::invalid("name", "must match the name in the path"));
        }
        a::check_command(&name, &input)?;
        let existing = self.one_by_name::<CommandRec>(&COMMANDS, &name).await?;
        let created = existing.is_none();
        json(
            &self
                .write_command(&name, &input, existing.as_ref())
                .await?
                .row(),
            created,
        )
    }

    async fn command_get(&self, call: proto::ActionsCall) -> Result<proto::ActionsReply, ApiError> {
        json(&self.command_rec(&call.id).await?.row(), false)
    }

    async fn command_delete(
        &self,
        call: proto::ActionsCall,
    ) -> Result<proto::ActionsReply, ApiError> {
        let rec = self.command_rec(&call.id).await?;
        if rec.built_in {
            return Err(a::built_in(&rec.name));
        }
        bootfleet_store::delete(&self.db, &COMMANDS, &rec.id).await?;
        json(&rec.row(), false)
    }

    async fn command_list(
        &self,
        call: proto::ActionsCall,
    ) -> Result<proto::ActionsReply, ApiError> {
        let params = ListParams::from_proto(&call.list.unwrap_or_default())?;
        let (rows, total) =
            bootfleet_store::list::<CommandRec>(&self.db, &COMMANDS, &params).await?;
        json(
            &Page::new(
                rows.iter().map(CommandRec::row).collect::<Vec<_>>(),
                total,
                &params,
            ),
            false,
        )
    }

    // ---- runs -----------------------------------------------------------------------------

    async fn run_machines(&self, run_ids: &[String]) -> Result<Vec<RunMachineRec>, ApiError> {
        let mut select = Query::select();
        select
            .from(Alias::new("action_run_machines"))
            .columns(
                [
                    "run_id",
                    "machine_id",
                    "machine",
                    "variant",
                    "status",
                    "exit_code",
                    "error",
                    "power_state",
                    "output",
                    "truncated",
                    "finished_at",
                ]
                .map(Alias::new),
            )
            .and_where(Expr::col(Alias::new("run_id")).is_in(run_ids.iter().map(String::as_str)))
            .order_by(Alias::new("run_id"), Order::Asc)
            .order_by(Alias::new("position"), Order::Asc);
        RunMachineRec::find_by_statement(self.build(&select))
            .all(&self.db)
            .await
            .map_err(db_error)
    }

    async fn run_rows(&self, runs: Vec<RunRec>) -> Result<Vec<RunRow>, ApiError> {
        let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
        let mut machines: HashMap<String, Vec<RunMachine>> = HashMap::new();
        for m in self.run_machines(&ids).await? {
            machines.entry(m.run_id.clone()).or_default().push(m.row());
        }
        Ok(runs
            .into_iter()
            .map(|r| RunRow {
                machines: machines.remove(&r.id).unwrap_or_default(),
                id: r.id,
                command: r.command,
                actor: r.actor,
                status: r.status,
                created_at: format_timestamp(r.created_at),
                finished_at: r.finished_at.map(format_timestamp),
            })
            .collect())
    }

    async fn run_row(&self, id: &str) -> Result<Option<RunRow>, ApiError> {
        let Some(rec) = bootfleet_store::get::<RunRec>(&self.db, &RUNS, id).await? else {
            return Ok(None);
        };
        Ok(self.run_rows(vec![rec]).await?.pop())
    }

    async fn run_get(&self, call: proto::ActionsCall) -> Result<proto::ActionsReply, ApiError> {
        let id = validate::id("id", &call.id)?;
        let row = self
            .run_row(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("run {id}")))?;
        json(&row, false)
    }

    async fn run_list(&self, call: proto::ActionsCall) -> Result<proto::ActionsReply, ApiError> {
        let params = ListParams::from_proto(&call.list.unwrap_or_default())?;
        let (rows, total) = bootfleet_store::list::<RunRec>(&self.db, &RUNS, &params).await?;
        json(
            &Page::new(self.run_rows(rows).await?, total, &params),
            false,
        )
    }

    /// Starts a run: checks it, resolves its machines and their variants and environments,
    /// records it and answers; the machines then run in the background, their lines and ends
    /// going out on the run's events subject (which the gateway already follows).
    async fn run_start(
        &self,
        trace: TraceParent,
        call: proto::ActionsCall,
    ) -> Result<proto::ActionsReply, ApiError> {
        let run_id = validate::id("runId", &call.run_id)?;
        let command = self.command_rec(&call.id).await?;
        let input: RunInput = body(&call)?;
        let power = a::power_action(&command.name).filter(|_| command.built_in);
        a::check_run(&input, power.is_none())?;
        // A retried start finds the run its first attempt made.
        if let Some(row) = self.run_row(&run_id).await? {
            return json(&row, false);
        }
        let machines = self.all_machines(&trace, &call.actor, &call.role).await?;
        let targets = self
            .targets(&command, &input, &machines, power.is_some())
            .await?;
        let plan = RunPlan {
            run_id: run_id.clone(),
            power,
            user: input.user.clone().unwrap_or_else(|| "root".into()),
            private_key: input.private_key.clone().unwrap_or_default(),
            timeout_seconds: input.timeout_seconds.unwrap_or(a::DEFAULT_TIMEOUT_SECONDS),
            concurrency: input.concurrency.unwrap_or(a::DEFAULT_CONCURRENCY),
            accept_new_host_keys: input.accept_new_host_keys,
            actor: call.actor.clone(),
            role: call.role.clone(),
            trace,
        };
        self.record_run(&plan, &command.name, &targets).await?;
        {
            let mut active = self
                .active
                .lock()
                .map_err(|_| ApiError::internal("poisoned"))?;
            active.insert(
                run_id.clone(),
                targets
                    .iter()
                    .map(|t| {
                        (
                            t.machine.id.clone(),
                            Relay {
                                site: t.machine.artifact_id.clone(),
                                label: t.label.clone(),
                                tail: Tail::default(),
                                relayed: watch::channel(0).0,
                            },
                        )
                    })
                    .collect(),
            );
        }
        let row = self
            .run_row(&run_id)
            .await?
            .ok_or_else(|| ApiError::internal("the run just recorded vanished"))?;
        tokio::spawn(self.clone().execute(plan, targets));
        json(&row, true)
    }

    /// The machines a run names, once each, in the order named (machines, then groups), with
    /// the script each runs and its environment.
    async fn targets(
        &self,
        command: &CommandRec,
        input: &RunInput,
        machines: &[MachineRow],
        power: bool,
    ) -> Result<Vec<Target>, ApiError> {
        let mut chosen: Vec<&MachineRow> = Vec::new();
        for named in &input.machines {
            chosen.push(find_machine(machines, named, "machines")?);
        }
        for group in &input.groups {
            let rec = self
                .one_by_name::<GroupRec>(&GROUPS, group)
                .await?
                .ok_or_else(|| ApiError::invalid("groups", format!("no group named {group:?}")))?;
            chosen.extend(resolve_group(&rec, machines).into_iter().map(|(m, _)| m));
        }
        let mut seen = std::collections::HashSet::new();
        chosen.retain(|m| seen.insert(m.id.clone()));
        if chosen.is_empty() {
            return Err(ApiError::invalid(
                "groups",
                "the groups named have no machines",
            ));
        }
        if chosen.len() > a::MAX_RUN_MACHINES {
            return Err(ApiError::invalid(
                "machines",
                format!("a run may target at most {} machines", a::MAX_RUN_MACHINES),
            ));
        }
        let variants = command.variants();
        chosen
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let label = m.name.clone().unwrap_or_else(|| m.id.clone());
                let (variant, script) = if power {
                    ("power".to_owned(), String::new())
                } else {
                    match a::pick_variant(&m.ranks, &variants) {
                        Some(v) => (v.rank.clone(), v.script.clone()),
                        None => ("default".to_owned(), command.script.clone()),
                    }
                };
                let env = a::machine_env(
                    "machines",
                    &label,
                    [
                        ("BF_NODE_ID", m.id.clone()),
                        ("BF_NODE_NAME", label.clone()),
                        ("BF_NODE_ADDRESS", m.ip.clone()),
                        ("BF_NODE_SITE", m.artifact_id.clone()),
                        ("BF_NODE_RANKS", m.ranks.join(" ")),
                    ],
                    &m.metadata,
                )?;
                Ok(Target {
                    position: i32::try_from(i).unwrap_or(i32::MAX),
                    machine: m.clone(),
                    label,
                    variant,
                    script,
                    env,
                })
            })
            .collect()
    }

    async fn record_run(
        &self,
        plan: &RunPlan,
        command: &str,
        targets: &[Target],
    ) -> Result<(), ApiError> {
        let now = now_ms();
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new(RUNS.table))
            .columns(
                [
                    "id",
                    "command",
                    "actor",
                    "status",
                    "created_at",
                    "updated_at",
                ]
                .map(Alias::new),
            )
            .values_panic([
                plan.run_id.clone().into(),
                command.into(),
                plan.actor.clone().into(),
                "running".into(),
                now.into(),
                now.into(),
            ]);
        self.exec(&insert).await?;
        for chunk in targets.chunks(100) {
            let mut insert = Query::insert();
            insert
                .into_table(Alias::new("action_run_machines"))
                .columns(
                    [
                        "id",
                        "run_id",
                        "position",
                        "machine_id",
                        "machine",
                        "variant",
                        "status",
                        "output",
                        "truncated",
                        "created_at",
                        "updated_at",
                    ]
                    .map(Alias::new),
                );
            for t in chunk {
                insert.values_panic([
                    uuid::Uuid::new_v4().to_string().into(),
                    plan.run_id.clone().into(),
                    t.position.into(),
                    t.machine.id.clone().into(),
                    t.label.clone().into(),
                    t.variant.clone().into(),
                    "running".into(),
                    "".into(),
                    false.into(),
                    now.into(),
                    now.into(),
                ]);
            }
            self.exec(&insert).await?;
        }
        Ok(())
    }

    /// Runs every target, `concurrency` at a time, then closes the run.
    async fn execute(self, plan: RunPlan, targets: Vec<Target>) {
        let permits = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(plan.concurrency.clamp(1, a::MAX_CONCURRENCY)).unwrap_or(1),
        ));
        let mut running = tokio::task::JoinSet::new();
        for target in targets {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (this, plan) = (self.clone(), plan.clone());
            running.spawn(async move {
                let _permit = permit;
                this.one(&plan, target).await;
            });
        }
        while running.join_next().await.is_some() {}
        let now = now_ms();
        let mut update = Query::update();
        update
            .table(Alias::new(RUNS.table))
            .values([
                (Alias::new("status"), "done".into()),
                (Alias::new("finished_at"), now.into()),
                (Alias::new("updated_at"), now.into()),
            ])
            .and_where(Expr::col(Alias::new("id")).eq(plan.run_id.as_str()));
        if let Err(e) = self.exec(&update).await {
            tracing::warn!(run = %plan.run_id, error = %e.message, "the run's end not recorded");
        }
        if let Ok(mut active) = self.active.lock() {
            active.remove(&plan.run_id);
        }
        self.event(
            &plan.run_id,
            &RunEvent {
                run: Some(plan.run_id.clone()),
                done: Some(true),
                ..Default::default()
            },
        )
        .await;
    }

    /// Publishes one line of the run's stream.
    async fn event(&self, run_id: &str, event: &RunEvent) {
        let payload = to_text(event);
        if let Err(e) = self
            .bus
            .client()
            .publish(subjects::run_events(run_id), payload.into())
            .await
        {
            tracing::debug!(run = %run_id, error = %e, "cannot publish a run event");
        }
    }

    /// One machine of a run: runs it, records how it ended, says so on the stream.
    async fn one(&self, plan: &RunPlan, target: Target) {
        let outcome = match plan.power {
            Some(action) => self.power(plan, &target, action).await,
            None => self.script(plan, &target).await,
        };
        let (tail, truncated) = self
            .active
            .lock()
            .ok()
            .and_then(|mut active| {
                let relay = active.get_mut(&plan.run_id)?.get_mut(&target.machine.id)?;
                Some((std::mem::take(&mut relay.tail.text), relay.tail.truncated))
            })
            .unwrap_or_default();
        let now = now_ms();
        let status = if outcome.error.is_some() {
            "failed"
        } else {
            "done"
        };
        let mut update = Query::update();
        update
            .table(Alias::new("action_run_machines"))
            .values([
                (Alias::new("status"), status.into()),
                (Alias::new("exit_code"), outcome.exit_code.into()),
                (Alias::new("error"), outcome.error.clone().into()),
                (
                    Alias::new("power_state"),
                    outcome.power_state.clone().into(),
                ),
                (Alias::new("output"), tail.into()),
                (Alias::new("truncated"), truncated.into()),
                (Alias::new("finished_at"), now.into()),
                (Alias::new("updated_at"), now.into()),
            ])
            .and_where(Expr::col(Alias::new("run_id")).eq(plan.run_id.as_str()))
            .and_where(Expr::col(Alias::new("position")).eq(target.position));
        if let Err(e) = self.exec(&update).await {
            tracing::warn!(run = %plan.run_id, error = %e.message, "a machine's end not recorded");
        }
        self.event(
            &plan.run_id,
            &RunEvent {
                machine: Some(target.label.clone()),
                exit_code: outcome.exit_code,
                error: outcome.error,
                power_state: outcome.power_state,
                ..Default::default()
            },
        )
        .await;
    }

    /// A script, through the machine's site distributor.
    async fn script(&self, plan: &RunPlan, target: &Target) -> Outcome {
        let failed = |error: String| Outcome {
            error: Some(error),
            ..Default::default()
        };
        let m = &target.machine;
        if m.ip.is_empty() {
            return failed("the machine has no address (ip) to reach it at".into());
        }
        let known_host_key = if plan.accept_new_host_keys {
            String::new()
        } else {
            match self.host_key(&m.id).await {
                Ok(key) => key.unwrap_or_default(),
                Err(e) => return failed(e.message),
            }
        };
        let request = proto::NodeRun {
            known_host_key: known_host_key.clone(),
            run_id: plan.run_id.clone(),
            machine_id: m.id.clone(),
            ip: m.ip.clone(),
            port: 22,
            user: plan.user.clone(),
            private_key: plan.private_key.clone(),
            script: target.script.clone(),
            timeout_seconds: plan.timeout_seconds,
            env: target.env.clone().into_iter().collect(),
            artifact_id: m.artifact_id.clone(),
        };
        // Past the distributor's own timeout, so its answer (a timeout) arrives first.
        let wait = Duration::from_secs(u64::from(plan.timeout_seconds) + 15);
        let answer: Result<proto::NodeRunResult, ApiError> = self
            .bus
            .with_timeout(wait, 1)
            .request(
                &plan.trace,
                &subjects::distributor_run(&m.artifact_id),
                &request,
            )
            .await;
        match answer {
            Ok(result) => {
                self.caught_up(&plan.run_id, &m.id, result.lines).await;
                if !result.host_key.is_empty() && result.host_key != known_host_key {
                    if let Err(e) = self.record_host_key(&m.id, &result.host_key).await {
                        tracing::warn!(machine = %m.id, error = %e.message, "host key not recorded");
                    }
                }
                if !result.error.is_empty() {
                    return failed(result.error);
                }
                match result.exit_code {
                    Some(code) => Outcome {
                        exit_code: Some(code),
                        ..Default::default()
                    },
                    None => failed(format!(
                        "the script was killed by signal {}",
                        if result.exit_signal.is_empty() {
                            "(unknown)"
                        } else {
                            &result.exit_signal
                        }
                    )),
                }
            }
            Err(e) if e.code == ErrorCode::Unavailable && e.message.contains("no responders") => {
                failed(format!(
                    "the distributor of site {} is not connected: {}",
                    m.artifact_id, e.message
                ))
            }
            Err(e) => failed(e.message),
        }
    }

    /// The host key recorded at the machine's first run.
    async fn host_key(&self, machine_id: &str) -> Result<Option<String>, ApiError> {
        let mut select = Query::select();
        select
            .from(Alias::new("action_host_keys"))
            .column(Alias::new("host_key"))
            .and_where(Expr::col(Alias::new("id")).eq(machine_id));
        let row = self
            .db
            .query_one(self.build(&select))
            .await
            .map_err(db_error)?;
        row.map(|r| r.try_get_by_index::<String>(0))
            .transpose()
            .map_err(db_error)
    }

    /// Records (or, when the operator accepted new keys, replaces) a machine's host key.
    async fn record_host_key(&self, machine_id: &str, key: &str) -> Result<(), ApiError> {
        let now = now_ms();
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new("action_host_keys"))
            .columns(["id", "host_key", "created_at", "updated_at"].map(Alias::new))
            .values_panic([machine_id.into(), key.into(), now.into(), now.into()])
            .on_conflict(
                OnConflict::column(Alias::new("id"))
                    .update_columns(["host_key", "updated_at"].map(Alias::new))
                    .to_owned(),
            );
        self.exec(&insert).await.map(|_| ())
    }

    /// Waits (bounded) until `lines` lines of the machine were relayed.
    async fn caught_up(&self, run_id: &str, machine_id: &str, lines: u64) {
        let rx = self
            .active
            .lock()
            .ok()
            .and_then(|active| Some(active.get(run_id)?.get(machine_id)?.relayed.subscribe()));
        if let Some(mut rx) = rx {
            let caught = tokio::time::timeout(RELAY_CATCH_UP, rx.wait_for(|n| *n >= lines)).await;
            if caught.is_err() {
                tracing::warn!(run = %run_id, machine = %machine_id, lines, "not every output line arrived");
            }
        }
    }

    /// A built-in power command, through the machines service's power operation.
    async fn power(&self, plan: &RunPlan, target: &Target, action: &str) -> Outcome {
        let call = proto::MachinesCall {
            id: target.machine.id.clone(),
            body: serde_json::json!({ "action": action }).to_string(),
            actor: plan.actor.clone(),
            role: plan.role.clone(),
            ..Default::default()
        };
        let wait = Duration::from_secs(u64::from(plan.timeout_seconds) + 15);
        let answer: Result<proto::MachinesReply, ApiError> = self
            .bus
            .with_timeout(wait, 1)
            .request(&plan.trace, &subjects::machines_op("power"), &call)
            .await;
        match answer {
            Ok(reply) => {
                let value: serde_json::Value =
                    serde_json::from_str(&reply.body).unwrap_or_default();
                match value.get("powerState").and_then(|s| s.as_str()) {
                    Some(state) => Outcome {
                        power_state: Some(state.to_owned()),
                        ..Default::default()
                    },
                    None => Outcome {
                        error: Some("the machines service answered without a powerState".into()),
                        ..Default::default()
                    },
                }
            }
            Err(e) => Outcome {
                error: Some(e.message),
                ..Default::default()
            },
        }
    }

    /// One output line from a distributor: kept and relayed if it belongs to a run of this
    /// instance, for a machine of the site whose subject it came on.
    async fn relay(&self, site: &str, line: proto::RunOutput) {
        if line.artifact_id != site {
            return;
        }
        let label = {
            let Ok(mut active) = self.active.lock() else {
                return;
            };
            let Some(relay) = active
                .get_mut(&line.run_id)
                .and_then(|run| run.get_mut(&line.machine_id))
            else {
                return;
            };
            if relay.site != site {
                return;
            }
            relay.tail.push(&line.line);
            relay.label.clone()
        };
        self.event(
            &line.run_id,
            &RunEvent {
                machine: Some(label),
                stream: Some(
                    if line.stream == "stderr" {
                        "stderr"
                    } else {
                        "stdout"
                    }
                    .into(),
                ),
                line: Some(line.line),
                ..Default::default()
            },
        )
        .await;
        if let Ok(active) = self.active.lock() {
            if let Some(relay) = active
                .get(&line.run_id)
                .and_then(|run| run.get(&line.machine_id))
            {
                relay.relayed.send_modify(|n| *n += 1);
            }
        }
    }
}

fn conflict(field: &str, message: String) -> ApiError {
    ApiError {
        code: ErrorCode::Conflict,
        message: format!("{field}: {message}"),
        field: Some(field.to_owned()),
    }
}

/// A machine by id or (unique) name; a client's mistake names `field`.
fn find_machine<'a>(
    machines: &'a [MachineRow],
    wanted: &str,
    field: &str,
) -> Result<&'a MachineRow, ApiError> {
    if let Some(m) = machines.iter().find(|m| m.id == wanted) {
        return Ok(m);
    }
    let lower = wanted.to_ascii_lowercase();
    let named: Vec<&MachineRow> = machines
        .iter()
        .filter(|m| m.name.as_deref() == Some(lower.as_str()))
        .collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => Err(ApiError::invalid(
            field,
            format!("no machine with id or name {wanted:?}"),
        )),
        _ => Err(ApiError::invalid(
            field,
            format!("several machines (at different sites) are named {wanted:?}; name it by id"),
        )),
    }
}

/// A group's machines and why each is in: `member`, `match`, `groups`. Members that no longer
/// exist are left out.
fn resolve_group<'a>(
    group: &GroupRec,
    machines: &'a [MachineRow],
) -> Vec<(&'a MachineRow, Vec<String>)> {
    let members = group.members();
    let selector = group.selector();
    machines
        .iter()
        .filter_map(|m| {
            let mut via = Vec::new();
            let named = members
                .iter()
                .any(|r| r == &m.id || m.name.as_deref() == Some(r.to_ascii_lowercase().as_str()));
            if named {
                via.push("member".to_owned());
            }
            if selector
                .as_ref()
                .is_some_and(|s| s.matches(&m.ranks, &m.metadata))
            {
                via.push("match".to_owned());
            }
            if m.groups.contains(&group.name) {
                via.push("groups".to_owned());
            }
            (!via.is_empty()).then_some((m, via))
        })
        .collect()
}

/// Follows every site's run output and relays what belongs to this instance's runs.
async fn relay_output(
    actions: Actions,
    mut sub: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    use futures_util::StreamExt;
    use prost::Message;
    let prefix = subjects::actions_outputs();
    let prefix = prefix.trim_end_matches('>');
    loop {
        let msg = tokio::select! {
            msg = sub.next() => match msg { Some(m) => m, None => break },
            _ = stop.changed() => break,
        };
        if msg.payload.len() > 16 * 1024 {
            continue;
        }
        let Some(site) = msg.subject.as_str().strip_prefix(prefix) else {
            continue;
        };
        let Ok(line) = proto::RunOutput::decode(msg.payload.clone()) else {
            continue;
        };
        actions.relay(site, line).await;
    }
    let _ = sub.unsubscribe().await;
}

type Handler = fn(
    Actions,
    TraceParent,
    proto::ActionsCall,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<proto::ActionsReply, ApiError>> + Send>,
>;

macro_rules! handler {
    ($method:ident) => {
        (|s: Actions, _t: TraceParent, call: proto::ActionsCall| {
            Box::pin(async move { s.$method(call).await })
        }) as Handler
    };
}

fn handlers() -> Vec<(&'static str, Handler)> {
    vec![
        (ops::GROUP_CREATE, handler!(group_create)),
        (ops::GROUP_LIST, handler!(group_list)),
        (ops::GROUP_GET, handler!(group_get)),
        (ops::GROUP_PUT, handler!(group_put)),
        (ops::GROUP_DELETE, handler!(group_delete)),
        (ops::GROUP_MACHINES, handler!(group_machines)),
        (ops::COMMAND_CREATE, handler!(command_create)),
        (ops::COMMAND_LIST, handler!(command_list)),
        (ops::COMMAND_GET, handler!(command_get)),
        (ops::COMMAND_PUT, handler!(command_put)),
        (ops::COMMAND_DELETE, handler!(command_delete)),
        (ops::RUN_GET, handler!(run_get)),
        (ops::RUN_LIST, handler!(run_list)),
        (
            ops::RUN_START,
            (|s: Actions, t: TraceParent, call: proto::ActionsCall| {
                Box::pin(async move { s.run_start(t, call).await })
            }) as Handler,
        ),
    ]
}

/// The `actions` service.
pub fn service() -> Service {
    Service::new(SERVICE, &migrations::SCHEMA, routes)
}

async fn routes(service: ServiceBuilder, ctx: Context) -> Routes {
    let actions = Actions::new(ctx.db.clone(), ctx.bus.clone());
    actions
        .ensure_built_ins()
        .await
        .map_err(|e| StartError::Setup(e.message))?;
    // Every instance sees every line (no queue group) and keeps those of its own runs.
    let output = ctx
        .bus
        .client()
        .subscribe(subjects::actions_outputs())
        .await
        .map_err(|e| StartError::Setup(format!("cannot follow run output: {e}")))?;
    let background = actions.clone();
    let mut routes = service
        .background(move |stop| relay_output(background, output, stop))
        .with_state(actions);
    for (op, handler) in handlers() {
        routes = routes.route(subjects::actions_op(op), move |s: Actions, ctx, call| {
            handler(s, ctx.trace, call)
        });
    }
    Ok(routes.builder())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_on_a_char_boundary() {
        let mut t = Tail::default();
        t.push("first");
        assert_eq!(t.text, "first\n");
        assert!(!t.truncated);
        let long = "é".repeat(a::OUTPUT_TAIL_BYTES);
        t.push(&long);
        assert!(t.truncated);
        assert!(t.text.len() <= a::OUTPUT_TAIL_BYTES);
        assert!(t.text.ends_with("é\n"));
        assert!(!t.text.contains("first"));
    }
}
