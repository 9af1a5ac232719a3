//! The client subcommands, `bootfleet <resource> <verb>`, over the gateway's gRPC API.

pub mod client;
mod fleet;
pub mod output;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use bootfleet_api::proto;
use bootfleet_gateway::grpc::pb;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use client::{exit, ConfigFile, Conn, Failure};
use output::Output;

/// Where and as whom: flags, then `BOOTFLEET_GRPC_URL`/`BOOTFLEET_TOKEN`, then the config file.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The gateway's gRPC URL [default: http://127.0.0.1:8081].
    #[arg(long, env = "BOOTFLEET_GRPC_URL", global = true)]
    url: Option<String>,
    /// A token from `bootfleet token` (sent as `authorization: Bearer ...`).
    #[arg(long, env = "BOOTFLEET_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// How to print rows [default: table].
    #[arg(long, short, global = true, value_enum)]
    output: Option<Output>,
    /// PEM file of the CA that signed an `https://` gateway's certificate [default: the
    /// system's roots].
    #[arg(long, env = "BOOTFLEET_GRPC_CA", global = true, value_name = "PATH")]
    ca: Option<PathBuf>,
    /// Makes a write safe to repeat: the same write with the same key gets the first answer
    /// (a UUID is fine; reads ignore it).
    #[arg(long, global = true, value_name = "KEY")]
    idempotency_key: Option<String>,
}

/// Paging and search, as the REST list's query.
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    #[arg(long, default_value_t = 1)]
    page: u32,
    #[arg(long, default_value_t = 10)]
    page_size: u32,
    /// Comma-separated fields, `-` for descending (`-createdAt`).
    #[arg(long, default_value = "")]
    sort: String,
    /// Case-insensitive substring.
    #[arg(long, default_value = "")]
    search: String,
    /// Comma-separated fields to search.
    #[arg(long, default_value = "")]
    search_fields: String,
}

impl ListArgs {
    fn options(self) -> pb::ListOptions {
        pb::ListOptions {
            page: self.page,
            page_size: self.page_size,
            sort: self.sort,
            search: self.search,
            search_fields: self.search_fields,
        }
    }
}

/// A text: given inline or read from a file (`-` for standard input).
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct TextArgs {
    #[arg(long)]
    text: Option<String>,
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

impl TextArgs {
    fn read(self) -> Result<String, Failure> {
        match (self.text, self.file) {
            (Some(t), _) => Ok(t),
            (None, Some(p)) => read_file(&p),
            (None, None) => Err(Failure::usage("give --text or --file")),
        }
    }
}

fn read_file(path: &Path) -> Result<String, Failure> {
    let read = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
}

/// Which sites' node tokens may read a script.
#[derive(clap::Args, Debug)]
pub struct SitesArgs {
    /// Mark it for a site (repeat for several); node tokens bound to other sites may not read it.
    #[arg(long = "site", value_name = "SITE")]
    sites: Vec<String>,
    /// On update: readable by every site again (without this or --site, the sites stay).
    #[arg(long, conflicts_with = "sites")]
    every_site: bool,
}

#[derive(Subcommand, Debug)]
pub enum ScriptVerb {
    List(ListArgs),
    Get {
        id: String,
    },
    Create {
        #[command(flatten)]
        text: TextArgs,
        #[command(flatten)]
        sites: SitesArgs,
    },
    Update {
        id: String,
        #[command(flatten)]
        text: TextArgs,
        #[command(flatten)]
        sites: SitesArgs,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SshKeyVerb {
    List(ListArgs),
    Get {
        id: String,
    },
    /// Register a public key for a site.
    Create {
        /// The site (artifactId).
        #[arg(long)]
        site: String,
        #[command(flatten)]
        text: TextArgs,
    },
    Update {
        id: String,
        #[arg(long)]
        site: String,
        #[command(flatten)]
        text: TextArgs,
    },
    Delete {
        id: String,
    },
    /// Generate a key pair (nothing is stored).
    Generate {
        #[arg(long, default_value = "ed25519")]
        algorithm: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DistributorVerb {
    List(ListArgs),
    Get {
        id: String,
    },
    /// Start answering PXE clients.
    On {
        id: String,
    },
    /// Stop answering PXE clients.
    Off {
        id: String,
    },
    /// Hand ipxes artifacts to the site's PXE clients: the distributor fetches them, checks
    /// their digests and answers with what it now serves.
    Configure {
        id: String,
        /// The interface to answer on (one the distributor reported).
        #[arg(long)]
        device: String,
        /// The IPv4 network served (`192.168.1.0/24`, or one address in it).
        #[arg(long)]
        range: String,
        /// The ipxes artifact for x64 UEFI clients: its file's path (`/ipxes/<id>/ipxe.efi`) or id.
        #[arg(long, default_value = "", value_name = "PATH_OR_ID")]
        uefi: String,
        /// The ipxes artifact for BIOS clients: its file's path or id.
        #[arg(long, default_value = "", value_name = "PATH_OR_ID")]
        bios: String,
        /// The site (artifactId) the distributor must be of, checked [default: not checked].
        #[arg(long, default_value = "")]
        site: String,
    },
    /// Print the site's boot events as they happen (Ctrl-C ends).
    Events {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum LocalNodeVerb {
    List(ListArgs),
    Get {
        id: String,
    },
    Register {
        #[arg(long)]
        ip: String,
        /// The site (artifactId).
        #[arg(long)]
        site: String,
        #[arg(long, default_value = "")]
        mac: String,
        #[arg(long, default_value = "")]
        hostname: String,
        #[arg(long)]
        pingable: bool,
    },
    Delete {
        id: String,
    },
    /// Run a script on the node over SSH through its site's distributor: its stdout and stderr
    /// as they were, exit 1 when it exited non-zero (or was killed by a signal).
    Script {
        id: String,
        /// The script (`--text`) or a file of it (`--file`, `-` for standard input).
        #[command(flatten)]
        script: TextArgs,
        /// An unencrypted OpenSSH private key the node accepts; used for this run only.
        #[arg(long, value_name = "PATH")]
        private_key: PathBuf,
        /// The SSH user [default: root].
        #[arg(long, default_value = "", hide_default_value = true)]
        user: String,
        /// Seconds before the run is cut [default: 60; at most 3600].
        #[arg(long, default_value_t = 0, hide_default_value = true)]
        timeout: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum ArtifactVerb {
    List(ListArgs),
    Get {
        id: String,
    },
    /// Start a build from the kind's inputs (its REST body as JSON).
    Create {
        /// The inputs as JSON (`{"fragment": "isolinux.bin"}`).
        #[arg(long, group = "source", required = true)]
        inputs: Option<String>,
        /// The inputs from a JSON file (`-` for standard input).
        #[arg(long, group = "source", value_name = "PATH")]
        file: Option<PathBuf>,
        /// Follow the build until it is done (exit 0) or failed (exit 1, the builder's error).
        #[arg(long)]
        follow: bool,
    },
    Delete {
        id: String,
    },
    /// Follow a build until it is done or failed.
    Watch {
        id: String,
    },
    /// Download a built file, checking its SHA-256.
    Download {
        id: String,
        /// A file of the artifact (its row's `files`).
        file: String,
        /// Where to write it [default: the file's name, here].
        #[arg(long, short = 'O', value_name = "PATH")]
        out: Option<PathBuf>,
    },
}

/// The client subcommands, flattened into `bootfleet`'s own.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// iPXE main scripts (client; gRPC).
    Mainscripts(Resource<ScriptVerb>),
    /// iPXE sub scripts (client; gRPC).
    Subscripts(Resource<ScriptVerb>),
    /// Kickstarts (client; gRPC).
    Kickstarts(Resource<ScriptVerb>),
    /// Pre-boot scripts (client; gRPC).
    Prebootscripts(Resource<ScriptVerb>),
    /// Post-boot scripts (client; gRPC).
    Postbootscripts(Resource<ScriptVerb>),
    /// SSH public keys per site (client; gRPC).
    Sshkeys(Resource<SshKeyVerb>),
    /// Site agents (client; gRPC).
    Distributors(Resource<DistributorVerb>),
    /// Registered nodes (client; gRPC).
    Localnodes(Resource<LocalNodeVerb>),
    /// iPXE builds (client; gRPC).
    Ipxes(Resource<ArtifactVerb>),
    /// GRUB builds (client; gRPC).
    Grubs(Resource<ArtifactVerb>),
    /// SYSLINUX pieces (client; gRPC).
    Syslinuxs(Resource<ArtifactVerb>),
    /// ISO builds (client; gRPC).
    Isos(Resource<ArtifactVerb>),
    /// Machines by MAC: states, power, timelines (client; gRPC).
    Machines(Resource<fleet::MachineVerb>),
    /// Profiles of install templates (client; gRPC).
    Profiles(Resource<fleet::NamedVerb>),
    /// Groups of machines (client; gRPC).
    Groups(Resource<fleet::GroupVerb>),
    /// The command library, and runs on machines with live output (client; gRPC).
    Commands(Resource<fleet::CommandVerb>),
    /// What command runs did (client; gRPC).
    Runs(Resource<fleet::RunVerb>),
}

#[derive(Args, Debug)]
pub struct Resource<V: Subcommand> {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    verb: V,
}

/// A connected client and how to print.
struct Session {
    conn: Conn,
    output: Output,
}

impl Session {
    async fn open(c: Connection) -> Result<Session, Failure> {
        let file = ConfigFile::load()?;
        let output = match (c.output, file.output) {
            (Some(o), _) => o,
            (None, Some(o)) => o.parse()?,
            (None, None) => Output::Table,
        };
        let url = c
            .url
            .or(file.url)
            .unwrap_or_else(|| client::DEFAULT_URL.to_owned());
        let token = c.token.or(file.token);
        let ca = c.ca.or(file.ca);
        Ok(Session {
            conn: client::connect(
                &url,
                token.as_deref(),
                ca.as_deref(),
                c.idempotency_key.as_deref(),
            )
            .await?,
            output,
        })
    }

    fn print(&self, value: &Value, columns: &[&str]) {
        print!("{}", output::render(self.output, value, columns));
    }
}

const SCRIPT_COLUMNS: &[&str] = &["id", "text", "updatedAt"];
const SSHKEY_COLUMNS: &[&str] = &["id", "artifactId", "algorithm", "fingerprint", "comment"];
const DISTRIBUTOR_COLUMNS: &[&str] = &["id", "artifactId", "hostname", "on", "serving", "online"];
const LOCALNODE_COLUMNS: &[&str] = &["id", "ip", "artifactId", "mac", "hostname", "pingable"];
const ARTIFACT_COLUMNS: &[&str] = &["id", "status", "progress", "size", "sha256", "error"];

pub async fn run(command: ClientCommand) -> Result<(), Failure> {
    use ClientCommand as C;
    match command {
        C::Mainscripts(r) => scripts("mainscripts", r).await,
        C::Subscripts(r) => scripts("subscripts", r).await,
        C::Kickstarts(r) => scripts("kickstarts", r).await,
        C::Prebootscripts(r) => scripts("prebootscripts", r).await,
        C::Postbootscripts(r) => scripts("postbootscripts", r).await,
        C::Sshkeys(r) => sshkeys(r).await,
        C::Distributors(r) => distributors(r).await,
        C::Localnodes(r) => localnodes(r).await,
        C::Ipxes(r) => artifacts("ipxes", r).await,
        C::Grubs(r) => artifacts("grubs", r).await,
        C::Syslinuxs(r) => artifacts("syslinuxs", r).await,
        C::Isos(r) => artifacts("isos", r).await,
        C::Machines(r) => fleet::machines(r).await,
        C::Profiles(r) => fleet::profiles(r).await,
        C::Groups(r) => fleet::groups(r).await,
        C::Commands(r) => fleet::commands(r).await,
        C::Runs(r) => fleet::runs(r).await,
    }
}

async fn scripts(kind: &str, r: Resource<ScriptVerb>) -> Result<(), Failure> {
    let s = Session::open(r.connection).await?;
    let mut api = pb::scripts_client::ScriptsClient::new(s.conn.clone());
    let kind = kind.to_owned();
    let row = |id: String| pb::ScriptRef {
        kind: kind.clone(),
        id,
    };
    let value = match r.verb {
        ScriptVerb::List(l) => {
            let page = api
                .list_scripts(pb::ListScriptsRequest {
                    kind: kind.clone(),
                    list: Some(l.options()),
                })
                .await?
                .into_inner();
            output::page(
                page.rows.into_iter().map(output::script).collect(),
                page.page,
            )
        }
        ScriptVerb::Get { id } => output::script(api.get_script(row(id)).await?.into_inner()),
        ScriptVerb::Create { text, sites } => output::script(
            api.create_script(pb::CreateScriptRequest {
                kind: kind.clone(),
                text: text.read()?,
                sites: sites.sites,
            })
            .await?
            .into_inner(),
        ),
        ScriptVerb::Update { id, text, sites } => output::script(
            api.update_script(pb::UpdateScriptRequest {
                kind: kind.clone(),
                id,
                text: text.read()?,
                replace_sites: sites.every_site || !sites.sites.is_empty(),
                sites: sites.sites,
            })
            .await?
            .into_inner(),
        ),
        ScriptVerb::Delete { id } => output::script(api.delete_script(row(id)).await?.into_inner()),
    };
    s.print(&value, SCRIPT_COLUMNS);
    Ok(())
}

async fn sshkeys(r: Resource<SshKeyVerb>) -> Result<(), Failure> {
    let s = Session::open(r.connection).await?;
    let mut api = pb::ssh_keys_client::SshKeysClient::new(s.conn.clone());
    let id = |id| proto::IdRequest { id };
    let value = match r.verb {
        SshKeyVerb::List(l) => {
            let page = api.list_ssh_keys(l.options()).await?.into_inner();
            output::page(
                page.rows.into_iter().map(output::ssh_key).collect(),
                page.page,
            )
        }
        SshKeyVerb::Get { id: i } => output::ssh_key(api.get_ssh_key(id(i)).await?.into_inner()),
        SshKeyVerb::Create { site, text } => output::ssh_key(
            api.create_ssh_key(pb::SshKeyInput {
                text: text.read()?,
                artifact_id: site,
            })
            .await?
            .into_inner(),
        ),
        SshKeyVerb::Update { id: i, site, text } => output::ssh_key(
            api.update_ssh_key(pb::UpdateSshKeyRequest {
                id: i,
                text: text.read()?,
                artifact_id: site,
            })
            .await?
            .into_inner(),
        ),
        SshKeyVerb::Delete { id: i } => {
            output::ssh_key(api.delete_ssh_key(id(i)).await?.into_inner())
        }
        SshKeyVerb::Generate { algorithm } => {
            let pair = api
                .generate_ssh_key(proto::GenerateSshKey { algorithm })
                .await?
                .into_inner();
            serde_json::to_value(bootfleet_api::rest::GeneratedKeyPair::from(pair))
                .unwrap_or(Value::Null)
        }
    };
    s.print(&value, SSHKEY_COLUMNS);
    Ok(())
}

async fn distributors(r: Resource<DistributorVerb>) -> Result<(), Failure> {
    let s = Session::open(r.connection).await?;
    let mut api = pb::distributors_client::DistributorsClient::new(s.conn.clone());
    let set = |id, on| proto::SetDistributorStatus {
        id,
        on,
        artifact_id: String::new(),
    };
    let value = match r.verb {
        DistributorVerb::List(l) => {
            let page = api.list_distributors(l.options()).await?.into_inner();
            output::page(
                page.rows.into_iter().map(output::distributor).collect(),
                page.page,
            )
        }
        DistributorVerb::Get { id } => output::distributor(
            api.get_distributor(proto::IdRequest { id })
                .await?
                .into_inner(),
        ),
        DistributorVerb::On { id } => output::distributor(
            api.set_distributor_status(set(id, true))
                .await?
                .into_inner(),
        ),
        DistributorVerb::Off { id } => output::distributor(
            api.set_distributor_status(set(id, false))
                .await?
                .into_inner(),
        ),
        DistributorVerb::Configure {
            id,
            device,
            range,
            uefi,
            bios,
            site,
        } => output::distributor(
            api.configure_distributor(proto::ConfigureDistributor {
                id,
                artifact_id: site,
                ipxe_pxe_uefi: uefi,
                ipxe_pxe_bios: bios,
                device,
                range,
            })
            .await?
            .into_inner(),
        ),
        DistributorVerb::Events { id } => {
            let mut events = api
                .watch_boot_events(proto::IdRequest { id })
                .await?
                .into_inner();
            while let Some(event) = events.next().await {
                // One JSON object per line, whatever the output: a stream has no table.
                println!("{}", output::boot_event(event?));
            }
            return Ok(());
        }
    };
    s.print(&value, DISTRIBUTOR_COLUMNS);
    Ok(())
}

async fn localnodes(r: Resource<LocalNodeVerb>) -> Result<(), Failure> {
    let s = Session::open(r.connection).await?;
    let mut api = pb::local_nodes_client::LocalNodesClient::new(s.conn.clone());
    let value = match r.verb {
        LocalNodeVerb::List(l) => {
            let page = api.list_local_nodes(l.options()).await?.into_inner();
            output::page(
                page.rows.into_iter().map(output::local_node).collect(),
                page.page,
            )
        }
        LocalNodeVerb::Get { id } => output::local_node(
            api.get_local_node(proto::IdRequest { id })
                .await?
                .into_inner(),
        ),
        LocalNodeVerb::Register {
            ip,
            site,
            mac,
            hostname,
            pingable,
        } => {
            let registered = api
                .register_local_node(proto::RegisterLocalNode {
                    ip,
                    artifact_id: site,
                    mac,
                    hostname,
                    pingable,
                })
                .await?
                .into_inner();
            registered.node.map(output::local_node).unwrap_or_default()
        }
        LocalNodeVerb::Delete { id } => output::local_node(
            api.delete_local_node(proto::IdRequest { id })
                .await?
                .into_inner(),
        ),
        LocalNodeVerb::Script {
            id,
            script,
            private_key,
            user,
            timeout,
        } => {
            let result = api
                .run_local_node_script(proto::RunNodeScript {
                    id: id.clone(),
                    script: script.read()?,
                    private_key: read_file(&private_key)?,
                    user,
                    timeout_seconds: timeout,
                })
                .await?
                .into_inner();
            return script_result(&s, &id, result);
        }
    };
    s.print(&value, LOCALNODE_COLUMNS);
    Ok(())
}

/// What a script run on a node did: on a table its output as it was (stdout's on stdout,
/// stderr's on stderr), otherwise REST's `LocalNodeScriptResult`; a failure when it did not
/// exit 0.
fn script_result(s: &Session, id: &str, r: proto::NodeExecResult) -> Result<(), Failure> {
    let result = bootfleet_api::rest::LocalNodeScriptResult::from(r);
    if s.output == Output::Table {
        print!("{}", result.stdout);
        eprint!("{}", result.stderr);
    } else {
        s.print(&serde_json::to_value(&result).unwrap_or(Value::Null), &[]);
    }
    match (result.exit_code, &result.exit_signal) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(Failure::new(
            exit::FAILED,
            format!("the script exited with {code} on node {id}"),
        )),
        (None, signal) => Err(Failure::new(
            exit::FAILED,
            format!(
                "the script was ended by signal {} on node {id}",
                signal.as_deref().unwrap_or("?")
            ),
        )),
    }
}

async fn artifacts(kind: &str, r: Resource<ArtifactVerb>) -> Result<(), Failure> {
    let s = Session::open(r.connection).await?;
    let mut api = pb::artifacts_client::ArtifactsClient::new(s.conn.clone());
    let reference = |id| proto::ArtifactRef {
        kind: kind.to_owned(),
        id,
    };
    let value = match r.verb {
        ArtifactVerb::List(l) => {
            let page = api
                .list_artifacts(pb::ListArtifactsRequest {
                    kind: kind.to_owned(),
                    list: Some(l.options()),
                })
                .await?
                .into_inner();
            output::page(
                page.rows.into_iter().map(output::artifact).collect(),
                page.page,
            )
        }
        ArtifactVerb::Get { id } => {
            output::artifact(api.get_artifact(reference(id)).await?.into_inner())
        }
        ArtifactVerb::Create {
            inputs,
            file,
            follow,
        } => {
            let inputs_json = match (inputs, file) {
                (Some(i), _) => i,
                (None, Some(p)) => read_file(&p)?,
                (None, None) => return Err(Failure::usage("give --inputs or --file")),
            };
            let row = api
                .create_artifact(pb::CreateArtifactRequest {
                    kind: kind.to_owned(),
                    inputs_json,
                })
                .await?
                .into_inner();
            if follow {
                follow_build(&mut api, reference(row.id)).await?
            } else {
                output::artifact(row)
            }
        }
        ArtifactVerb::Delete { id } => {
            output::artifact(api.delete_artifact(reference(id)).await?.into_inner())
        }
        ArtifactVerb::Watch { id } => follow_build(&mut api, reference(id)).await?,
        ArtifactVerb::Download { id, file, out } => {
            let out = out.unwrap_or_else(|| PathBuf::from(&file));
            return download(&mut api, kind, id, file, &out).await;
        }
    };
    s.print(&value, ARTIFACT_COLUMNS);
    Ok(())
}

type ArtifactsClient = pb::artifacts_client::ArtifactsClient<Conn>;

/// Follows a build: a progress bar on a terminal, a line per change otherwise (on stderr, so
/// stdout keeps only the final row). A failed build is an error carrying the builder's message.
async fn follow_build(api: &mut ArtifactsClient, r: proto::ArtifactRef) -> Result<Value, Failure> {
    let what = format!("{} {}", r.kind, r.id);
    let mut rows = api.watch_artifact(r).await?.into_inner();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(100);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos:>3}% {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.clone());
        bar
    });
    let mut last = None;
    while let Some(row) = rows.next().await {
        let row = row?;
        match &bar {
            Some(bar) => bar.set_position(u64::from(row.progress)),
            None => eprintln!("{what}: {} {}%", row.status, row.progress),
        }
        last = Some(row);
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    let Some(row) = last else {
        return Err(Failure::new(
            exit::SERVER,
            format!("{what}: the stream ended without a row"),
        ));
    };
    if row.status == "failed" {
        return Err(
            Failure::new(exit::FAILED, format!("{what} failed: {}", row.error))
                .hint("fix the inputs the error names and create the build again"),
        );
    }
    if row.status != "done" {
        return Err(Failure::new(
            exit::SERVER,
            format!("{what}: the stream ended while it was {}", row.status),
        )
        .hint("follow it again with `watch`"));
    }
    Ok(output::artifact(row))
}

/// Writes the file beside `out` first and moves it there only when its size and SHA-256 are
/// the ones the API reported.
async fn download(
    api: &mut ArtifactsClient,
    kind: &str,
    id: String,
    file: String,
    out: &Path,
) -> Result<(), Failure> {
    let mut chunks = api
        .download_artifact(pb::DownloadArtifactRequest {
            kind: kind.to_owned(),
            id,
            file,
        })
        .await?
        .into_inner();
    let local = |e: std::io::Error, path: &Path| {
        Failure::new(
            exit::FAILED,
            format!("cannot write {}: {e}", path.display()),
        )
    };
    let mut partial = out.as_os_str().to_owned();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    let mut writer = std::fs::File::create(&partial).map_err(|e| local(e, &partial))?;
    let mut expected: Option<proto::ArtifactFile> = None;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut bar = None;
    let result = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if let Some(meta) = chunk.file {
                if std::io::stderr().is_terminal() {
                    bar = Some(indicatif::ProgressBar::new(meta.size));
                }
                expected = Some(meta);
            }
            hasher.update(&chunk.data);
            writer
                .write_all(&chunk.data)
                .map_err(|e| local(e, &partial))?;
            written += chunk.data.len() as u64;
            if let Some(bar) = &bar {
                bar.set_position(written);
            }
        }
        Ok::<(), Failure>(())
    }
    .await;
    if let Some(bar) = &bar {
        bar.finish();
    }
    let checked = result.and_then(|()| {
        let meta = expected
            .ok_or_else(|| Failure::new(exit::SERVER, "the download carried no file description"))?;
        let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if written != meta.size || digest != meta.sha256 {
            return Err(Failure::new(
                exit::FAILED,
                format!(
                    "{}: received {written} bytes with sha256 {digest}, the API reported {} bytes with sha256 {}",
                    meta.name, meta.size, meta.sha256
                ),
            )
            .hint("download it again; nothing was written"));
        }
        Ok(meta)
    });
    let meta = match checked {
        Ok(meta) => meta,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    writer.sync_all().map_err(|e| local(e, &partial))?;
    std::fs::rename(&partial, out).map_err(|e| local(e, out))?;
    println!("{}  {}", meta.sha256, out.display());
    Ok(())
}
