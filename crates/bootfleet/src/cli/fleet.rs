//! The client verbs of the fleet: machines, profiles, groups, commands and runs. Their rows
//! come over gRPC as REST's JSON (`JsonRow`), so they print exactly as REST shows them.

use std::path::PathBuf;

use bootfleet_api::proto;
use bootfleet_gateway::grpc::pb;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tonic::Response;

use super::client::{exit, Conn, Failure};
use super::output::{self, Output};
use super::{read_file, ListArgs, Resource, Session, TextArgs};

/// A REST body: given inline or read from a file (`-` for standard input).
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct JsonArgs {
    /// The body as JSON, as the REST route takes it.
    #[arg(long)]
    json: Option<String>,
    /// The body from a JSON file (`-` for standard input).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

impl JsonArgs {
    fn write(self, key: String) -> Result<pb::JsonWrite, Failure> {
        let json = match (self.json, self.file) {
            (Some(j), _) => j,
            (None, Some(p)) => read_file(&p)?,
            (None, None) => return Err(Failure::usage("give --json or --file")),
        };
        Ok(pb::JsonWrite { key, json })
    }
}

/// The verbs of a registry keyed by name (profiles, groups, commands).
#[derive(Subcommand, Debug)]
pub enum NamedVerb {
    List(ListArgs),
    Get {
        name: String,
    },
    /// Create from REST's body (it names the row).
    Create(JsonArgs),
    /// Create or replace the row of this name.
    Update {
        name: String,
        #[command(flatten)]
        body: JsonArgs,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum MachineVerb {
    List(ListArgs),
    Get {
        id: String,
    },
    /// Register a machine from REST's body (`{"mac": ..., "artifactId": ...}`).
    Create(JsonArgs),
    /// Change the fields the body gives.
    Update {
        id: String,
        #[command(flatten)]
        body: JsonArgs,
    },
    Delete {
        id: String,
    },
    /// Move it to a state: discovered, inventory, ready, install, installed or rescue.
    State {
        id: String,
        state: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// State install; with --power-cycle, a one-time PXE boot and a power cycle.
    Reinstall {
        id: String,
        #[arg(long)]
        power_cycle: bool,
    },
    /// Power it through its BMC: on, off, cycle, reset or status.
    Power {
        id: String,
        action: String,
        /// pxe or disk, for the next boot.
        #[arg(long, default_value = "")]
        boot_device: String,
    },
    /// Its state changes, oldest first.
    History {
        id: String,
    },
    /// Its last boots; with --follow, each step as it happens (Ctrl-C ends).
    Timeline {
        id: String,
        #[arg(long)]
        follow: bool,
    },
    /// Bulk import into a site: a machines.txt (`<mac> <management-ip>` per line) or, with
    /// `--content-type application/yaml`, a YAML nodes file. Prints each line's outcome.
    Import {
        /// The site (artifactId).
        #[arg(long)]
        site: String,
        #[command(flatten)]
        text: TextArgs,
        /// text/plain (machines.txt) or application/yaml (a nodes file).
        #[arg(long, default_value = "text/plain")]
        content_type: String,
    },
    /// A site's policy for MACs it has no machine for.
    SitePolicy {
        /// The site (artifactId).
        site: String,
    },
    /// Set a site's policy from REST's body (`{"unknownMacs": "discover", "discoveryProfile": ...}`).
    SetSitePolicy {
        /// The site (artifactId).
        site: String,
        #[command(flatten)]
        body: JsonArgs,
    },
    /// The iPXE script it boots in its state, rendered for it (as the machine fetches it).
    Script {
        id: String,
    },
    /// One of its profile's templates (kickstart, user-data, ...) rendered for it.
    File {
        id: String,
        template: String,
    },
    /// Report its hardware (REST's `Inventory`): a discovered or inventory machine becomes ready.
    Inventory {
        id: String,
        #[command(flatten)]
        body: JsonArgs,
    },
    /// Report an event of its install (`{"type": "installed"}`).
    Event {
        id: String,
        #[command(flatten)]
        body: JsonArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupVerb {
    #[command(flatten)]
    Row(NamedVerb),
    /// The group's machines now, each with why it is in.
    Machines { name: String },
}

#[derive(Subcommand, Debug)]
pub enum CommandVerb {
    #[command(flatten)]
    Row(NamedVerb),
    /// Run it on machines and groups, printing each machine's output as it comes. Exits 1 when
    /// a machine failed or exited non-zero.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    name: String,
    /// A machine by id or name (repeat for more).
    #[arg(long = "target", value_name = "MACHINE")]
    targets: Vec<String>,
    /// A group by name: its machines (repeat for more).
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// The SSH user [default: root].
    #[arg(long, default_value = "", hide_default_value = true)]
    user: String,
    /// An unencrypted OpenSSH private key (`-` for standard input); script commands need one.
    #[arg(long, value_name = "PATH")]
    private_key: Option<PathBuf>,
    /// Machines at a time [default: 8].
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    concurrency: u32,
    /// Seconds per machine [default: 300].
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    timeout: u32,
    /// Accept and record each machine's SSH host key as it is now (after a reinstall).
    #[arg(long)]
    accept_new_host_keys: bool,
}

#[derive(Subcommand, Debug)]
pub enum RunVerb {
    List(ListArgs),
    Get { id: String },
}

const MACHINE_COLUMNS: &[&str] = &["id", "mac", "name", "artifactId", "state", "profile", "ip"];
const PROFILE_COLUMNS: &[&str] = &["id", "name", "updatedAt"];
const GROUP_COLUMNS: &[&str] = &["id", "name", "description", "members"];
const COMMAND_COLUMNS: &[&str] = &["name", "summary", "builtIn", "updatedAt"];
const RUN_COLUMNS: &[&str] = &[
    "id",
    "command",
    "actor",
    "status",
    "createdAt",
    "finishedAt",
];

type Answer<T> = Result<Response<T>, tonic::Status>;

/// A row as REST shows it.
fn row(answer: Answer<pb::JsonRow>) -> Result<Value, Failure> {
    let json = answer?.into_inner().json;
    serde_json::from_str(&json).map_err(|e| {
        Failure::new(
            exit::SERVER,
            format!("the API answered a row that does not parse: {e}"),
        )
    })
}

/// A page as REST shows it.
fn page(answer: Answer<pb::JsonPage>) -> Result<Value, Failure> {
    let page = answer?.into_inner();
    let rows = page
        .rows
        .into_iter()
        .map(|r| row(Ok(Response::new(r))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(output::page(rows, page.page))
}

/// The calls of a registry keyed by name, on its generated client.
#[tonic::async_trait]
trait NamedRegistry {
    async fn list(&mut self, o: pb::ListOptions) -> Answer<pb::JsonPage>;
    async fn get(&mut self, n: pb::NameRef) -> Answer<pb::JsonRow>;
    async fn create(&mut self, w: pb::JsonWrite) -> Answer<pb::JsonRow>;
    async fn put(&mut self, w: pb::JsonWrite) -> Answer<pb::JsonRow>;
    async fn delete(&mut self, n: pb::NameRef) -> Answer<pb::JsonRow>;
}

macro_rules! named_registry {
    ($client:ty: $list:ident, $get:ident, $create:ident, $put:ident, $delete:ident) => {
        #[tonic::async_trait]
        impl NamedRegistry for $client {
            async fn list(&mut self, o: pb::ListOptions) -> Answer<pb::JsonPage> {
                self.$list(o).await
            }
            async fn get(&mut self, n: pb::NameRef) -> Answer<pb::JsonRow> {
                self.$get(n).await
            }
            async fn create(&mut self, w: pb::JsonWrite) -> Answer<pb::JsonRow> {
                self.$create(w).await
            }
            async fn put(&mut self, w: pb::JsonWrite) -> Answer<pb::JsonRow> {
                self.$put(w).await
            }
            async fn delete(&mut self, n: pb::NameRef) -> Answer<pb::JsonRow> {
                self.$delete(n).await
            }
        }
    };
}

named_registry!(pb::profiles_client::ProfilesClient<Conn>:
    list_profiles, get_profile, create_profile, put_profile, delete_profile);
named_registry!(pb::groups_client::GroupsClient<Conn>:
    list_groups, get_group, create_group, put_group, delete_group);
named_registry!(pb::commands_client::CommandsClient<Conn>:
    list_commands, get_command, create_command, put_command, delete_command);

/// Runs `verb` and prints its answer with `columns`.
async fn named(
    s: &Session,
    api: &mut impl NamedRegistry,
    verb: NamedVerb,
    columns: &[&str],
) -> Result<(), Failure> {
    let name_ref = |name| pb::NameRef { name };
    let value = match verb {
        NamedVerb::List(l) => page(api.list(l.options()).await),
        NamedVerb::Get { name } => row(api.get(name_ref(name)).await),
        NamedVerb::Create(body) => row(api.create(body.write(String::new())?).await),
        NamedVerb::Update { name, body } => row(api.put(body.write(name)?).await),
        NamedVerb::Delete { name } => row(api.delete(name_ref(name)).await),
    }?;
    s.print(&value, columns);
    Ok(())
}

pub(super) async fn profiles(r: Resource<NamedVerb>) -> Result<(), Failure> {
    let s = Session::open(r.connection).await?;
    let mut api = pb::profiles_client::ProfilesClient::new(s.conn.clone());
    named(&s, &mut api, r.verb, PROFILE_COLUMNS).await
}

pub(super) async fn groups(r: Resource<GroupVerb>) -> Result<(), Failure> {
    let s = Session::open(r.connection).await?;
    let mut api = pb::groups_client::GroupsClient::new(s.conn.clone());
    match r.verb {
        GroupVerb::Row(verb) => named(&s, &mut api, verb, GROUP_COLUMNS).await?,
        GroupVerb::Machines { name } => {
            let value = row(api.get_group_machines(pb::NameRef { name }).await)?;
            // The machines as a table of their own.
            let listed = json!({
                "rows": value["machines"],
                "total": value["machines"].as_array().map_or(0, Vec::len),
                "page": 1,
                "totalPages": 1,
            });
            let shown = if s.output == Output::Table {
                &listed
            } else {
                &value
            };
            s.print(shown, &["id", "name", "artifactId", "ip", "ranks", "via"]);
        }
    }
    Ok(())
}

pub(super) async fn commands(r: Resource<CommandVerb>) -> Result<(), Failure> {
    let s = Session::open(r.connection).await?;
    let mut api = pb::commands_client::CommandsClient::new(s.conn.clone());
    match r.verb {
        CommandVerb::Row(verb) => named(&s, &mut api, verb, COMMAND_COLUMNS).await,
        CommandVerb::Run(args) => run(&mut api, s.output, args).await,
    }
}

/// Prints a run as it happens: on a table, each output line as `<machine>: <line>` (stderr's
/// on stderr) and each machine's end; otherwise REST's NDJSON, one event per line.
async fn run(
    api: &mut pb::commands_client::CommandsClient<Conn>,
    out: Output,
    a: RunArgs,
) -> Result<(), Failure> {
    let private_key = a.private_key.map(|p| read_file(&p)).transpose()?;
    let mut events = api
        .run_command(pb::RunCommandRequest {
            name: a.name,
            machines: a.targets,
            groups: a.groups,
            user: a.user,
            private_key: private_key.unwrap_or_default(),
            concurrency: a.concurrency,
            timeout_seconds: a.timeout,
            accept_new_host_keys: a.accept_new_host_keys,
        })
        .await?
        .into_inner();
    let (mut failed, mut run_id, mut done) = (Vec::new(), String::new(), false);
    while let Some(event) = events.next().await {
        let e = event?;
        if let Some(run) = &e.run {
            run_id.clone_from(run);
        }
        let machine = e.machine.clone().unwrap_or_default();
        if e.error.is_some() || e.exit_code.is_some_and(|c| c != 0) {
            failed.push(machine.clone());
        }
        done |= e.done == Some(true);
        if out != Output::Table {
            println!("{}", output::run_event(&e));
            continue;
        }
        match (&e.line, &e.exit_code, &e.error, &e.power_state) {
            (Some(line), ..) if e.stream.as_deref() == Some("stderr") => {
                eprintln!("{machine}: {line}");
            }
            (Some(line), ..) => println!("{machine}: {line}"),
            (None, Some(code), ..) => eprintln!("{machine}: exit code {code}"),
            (None, None, Some(error), _) if machine.is_empty() => eprintln!("run: {error}"),
            (None, None, Some(error), _) => eprintln!("{machine}: failed: {error}"),
            (None, None, None, Some(state)) => println!("{machine}: power {state}"),
            _ if !e.machines.is_empty() => {
                eprintln!("run {run_id} on {}", e.machines.join(", "));
            }
            _ => {}
        }
    }
    if !done {
        return Err(Failure::new(
            exit::SERVER,
            format!("run {run_id}: the stream ended before the run did"),
        )
        .hint(format!("`bootfleet runs get {run_id}` shows how it ended")));
    }
    if !failed.is_empty() {
        return Err(Failure::new(
            exit::FAILED,
            format!("run {run_id}: failed on {}", failed.join(", ")),
        )
        .hint(format!(
            "`bootfleet runs get {run_id}` shows each machine's output"
        )));
    }
    Ok(())
}

pub(super) async fn runs(r: Resource<RunVerb>) -> Result<(), Failure> {
    let s = Session::open(r.connection).await?;
    let mut api = pb::runs_client::RunsClient::new(s.conn.clone());
    let value = match r.verb {
        RunVerb::List(l) => page(api.list_runs(l.options()).await)?,
        RunVerb::Get { id } => row(api.get_run(proto::IdRequest { id }).await)?,
    };
    s.print(&value, RUN_COLUMNS);
    Ok(())
}

pub(super) async fn machines(r: Resource<MachineVerb>) -> Result<(), Failure> {
    let s = Session::open(r.connection).await?;
    let mut api = pb::machines_client::MachinesClient::new(s.conn.clone());
    let id_ref = |id| proto::IdRequest { id };
    let value = match r.verb {
        MachineVerb::List(l) => page(api.list_machines(l.options()).await)?,
        MachineVerb::Get { id } => row(api.get_machine(id_ref(id)).await)?,
        MachineVerb::Create(body) => row(api.create_machine(body.write(String::new())?).await)?,
        MachineVerb::Update { id, body } => row(api.update_machine(body.write(id)?).await)?,
        MachineVerb::Delete { id } => row(api.delete_machine(id_ref(id)).await)?,
        MachineVerb::State { id, state, reason } => row(api
            .set_machine_state(pb::SetMachineStateRequest { id, state, reason })
            .await)?,
        MachineVerb::Reinstall { id, power_cycle } => row(api
            .reinstall_machine(pb::ReinstallMachineRequest { id, power_cycle })
            .await)?,
        MachineVerb::Power {
            id,
            action,
            boot_device,
        } => row(api
            .power_machine(pb::PowerMachineRequest {
                id,
                action,
                boot_device,
            })
            .await)?,
        MachineVerb::History { id } => row(api.get_machine_history(id_ref(id)).await)?,
        MachineVerb::Timeline { id, follow: false } => {
            row(api.get_machine_timeline(id_ref(id)).await)?
        }
        MachineVerb::Import {
            site,
            text,
            content_type,
        } => {
            let report = row(api
                .import_machines(pb::ImportMachinesRequest {
                    artifact_id: site,
                    content_type,
                    text: text.read()?,
                })
                .await)?;
            s.print(&report, &[]);
            return match report["refused"].as_u64() {
                Some(0) | None => Ok(()),
                Some(n) => Err(Failure::new(
                    exit::FAILED,
                    format!("{n} lines were refused; the others landed"),
                )
                .hint("fix the lines whose `reason` is shown and import them again")),
            };
        }
        MachineVerb::SitePolicy { site } => row(api
            .get_machine_site_policy(pb::SiteRef { artifact_id: site })
            .await)?,
        MachineVerb::SetSitePolicy { site, body } => {
            row(api.set_machine_site_policy(body.write(site)?).await)?
        }
        MachineVerb::Script { id } => {
            print!(
                "{}",
                api.get_machine_script(id_ref(id)).await?.into_inner().text
            );
            return Ok(());
        }
        MachineVerb::File { id, template } => {
            let file = api
                .get_machine_file(pb::MachineFileRequest { id, template })
                .await?;
            print!("{}", file.into_inner().text);
            return Ok(());
        }
        MachineVerb::Inventory { id, body } => {
            row(api.report_machine_inventory(body.write(id)?).await)?
        }
        MachineVerb::Event { id, body } => row(api.report_machine_event(body.write(id)?).await)?,
        MachineVerb::Timeline { id, follow: true } => {
            let mut steps = api.watch_machine_timeline(id_ref(id)).await?.into_inner();
            while let Some(step) = steps.next().await {
                // One JSON object per line, whatever the output: a stream has no table.
                println!("{}", output::timeline_step(step?));
            }
            return Ok(());
        }
    };
    s.print(&value, MACHINE_COLUMNS);
    Ok(())
}
