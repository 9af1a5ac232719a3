//! The `localnodes` service: hosts that came up and registered themselves (or were registered by
//! an operator). One row per (ip, artifact id): a node that registers again after a reinstall or
//! a reboot updates its row, never duplicates it.

mod migrations;

use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, validate, ApiError, ErrorCode, ListParams};
use bootfleet_bus::{Bus, ServiceBuilder};
use bootfleet_service_kit::{handlers, Context, Routes, Service};
use bootfleet_store::sea_orm::sea_query::{Alias, Expr, OnConflict, Query};
use bootfleet_store::sea_orm::{ConnectionTrait, FromQueryResult};
use bootfleet_store::{db_error, now_ms, Database, TableSpec};

pub use migrations::LocalnodesMigrator;

const SERVICE: &str = subjects::LOCALNODES;

static SPEC: TableSpec = TableSpec {
    table: "localnodes",
    fields: &[
        ("id", "id"),
        ("ip", "ip"),
        ("artifactId", "artifact_id"),
        ("mac", "mac"),
        ("hostname", "hostname"),
        ("pingable", "pingable"),
        ("lastSeen", "last_seen"),
        ("createdAt", "created_at"),
        ("updatedAt", "updated_at"),
        ("hostKey", "host_key"),
    ],
    list: bootfleet_api::list::fields::LOCALNODES,
};

#[derive(Debug, FromQueryResult)]
struct Record {
    id: String,
    ip: String,
    artifact_id: String,
    mac: String,
    hostname: String,
    pingable: bool,
    last_seen: i64,
    created_at: i64,
    updated_at: i64,
    host_key: String,
}

/// The columns a registration writes (the host key keeps its default until a script runs).
const REGISTER_COLUMNS: [&str; 9] = [
    "id",
    "ip",
    "artifact_id",
    "mac",
    "hostname",
    "pingable",
    "last_seen",
    "created_at",
    "updated_at",
];

impl From<Record> for proto::LocalNode {
    fn from(r: Record) -> Self {
        proto::LocalNode {
            id: r.id,
            ip: r.ip,
            artifact_id: r.artifact_id,
            mac: r.mac,
            hostname: r.hostname,
            pingable: r.pingable,
            last_seen_ms: r.last_seen,
            created_at_ms: r.created_at,
            updated_at_ms: r.updated_at,
            host_key: r.host_key,
            machine_id: String::new(),
        }
    }
}

/// Validates and canonicalises a registration (the gateway does too; a service trusts no caller).
pub fn validated(req: proto::RegisterLocalNode) -> Result<proto::RegisterLocalNode, ApiError> {
    let ip = validate::ip("ip", &req.ip)?;
    validate::artifact_id("artifactId", &req.artifact_id)?;
    let mac = if req.mac.is_empty() {
        String::new()
    } else {
        validate::mac("mac", &req.mac)?
    };
    if !req.hostname.is_empty() {
        validate::hostname("hostname", &req.hostname)?;
    }
    Ok(proto::RegisterLocalNode {
        ip,
        mac,
        hostname: req.hostname.to_ascii_lowercase(),
        ..req
    })
}

#[derive(Clone, Debug)]
pub struct Localnodes {
    db: Database,
    /// Asks the `machines` service which machine each node is (none in tests without a bus).
    bus: Option<Bus>,
}

/// How long a get or a list waits for the machines service to name the nodes' machines; without
/// an answer the rows go out without `machineId`.
const MACHINE_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

impl Localnodes {
    pub fn new(db: Database) -> Self {
        Localnodes { db, bus: None }
    }

    /// With a bus: rows carry the id of the machine with the node's MAC (or IP at its site).
    pub fn with_bus(db: Database, bus: Bus) -> Self {
        Localnodes { db, bus: Some(bus) }
    }

    async fn link_machines(&self, nodes: &mut [proto::LocalNode]) {
        let Some(bus) = &self.bus else {
            return;
        };
        if nodes.is_empty() {
            return;
        }
        let req = proto::MachineLookups {
            items: nodes
                .iter()
                .map(|n| proto::MachineLookup {
                    artifact_id: n.artifact_id.clone(),
                    ip: n.ip.clone(),
                    mac: n.mac.clone(),
                })
                .collect(),
        };
        let answer: Result<proto::MachineRefs, ApiError> = bus
            .with_timeout(MACHINE_LOOKUP_TIMEOUT, 1)
            .request(
                &bootfleet_bus::TraceParent::new_root(),
                &subjects::machines_lookup(),
                &req,
            )
            .await;
        match answer {
            Ok(refs) => {
                for (node, id) in nodes.iter_mut().zip(refs.machine_ids) {
                    node.machine_id = id;
                }
            }
            Err(e) => tracing::debug!(error = %e.message, "no machine ids for localnodes"),
        }
    }

    async fn find(&self, conditions: &[(&str, &str)]) -> Result<Option<Record>, ApiError> {
        bootfleet_store::one_where_all(&self.db, &SPEC, conditions).await
    }

    /// Registers a node, or updates the row of the same (ip, artifact id). A missing `mac` or
    /// `hostname` keeps what an earlier registration said.
    pub async fn register(
        &self,
        req: proto::RegisterLocalNode,
    ) -> Result<proto::RegisteredLocalNode, ApiError> {
        let req = validated(req)?;
        let key = [
            ("ip", req.ip.as_str()),
            ("artifact_id", req.artifact_id.as_str()),
        ];
        let existed = self.find(&key).await?.is_some();
        let now = now_ms();
        let mut update = vec!["pingable", "last_seen", "updated_at"];
        if !req.mac.is_empty() {
            update.push("mac");
        }
        if !req.hostname.is_empty() {
            update.push("hostname");
        }
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new(SPEC.table))
            .columns(REGISTER_COLUMNS.map(Alias::new))
            .values_panic([
                uuid::Uuid::new_v4().to_string().into(),
                req.ip.clone().into(),
                req.artifact_id.clone().into(),
                req.mac.into(),
                req.hostname.into(),
                req.pingable.into(),
                now.into(),
                now.into(),
                now.into(),
            ])
            .on_conflict(
                OnConflict::columns([Alias::new("ip"), Alias::new("artifact_id")])
                    .update_columns(update.into_iter().map(Alias::new))
                    .to_owned(),
            );
        self.db
            .execute(self.db.get_database_backend().build(&insert))
            .await
            .map_err(db_error)?;
        let node = self
            .find(&key)
            .await?
            .ok_or_else(|| ApiError::internal("registered node vanished"))?;
        Ok(proto::RegisteredLocalNode {
            node: Some(node.into()),
            created: !existed,
        })
    }

    pub async fn get(&self, req: proto::IdRequest) -> Result<proto::LocalNode, ApiError> {
        let id = validate::id("id", &req.id)?;
        let node: proto::LocalNode = self
            .find(&[("id", &id)])
            .await?
            .map(Into::into)
            .ok_or_else(|| ApiError::not_found(format!("localnode {id}")))?;
        let mut nodes = [node];
        self.link_machines(&mut nodes).await;
        let [node] = nodes;
        Ok(node)
    }

    pub async fn list(&self, req: proto::ListRequest) -> Result<proto::LocalNodeList, ApiError> {
        let params = ListParams::from_proto(&req)?;
        let (rows, total) = bootfleet_store::list::<Record>(&self.db, &SPEC, &params).await?;
        let mut rows: Vec<proto::LocalNode> = rows.into_iter().map(Into::into).collect();
        self.link_machines(&mut rows).await;
        Ok(proto::LocalNodeList { rows, total })
    }

    /// Deletes the row and answers with it.
    pub async fn delete(&self, req: proto::IdRequest) -> Result<proto::LocalNode, ApiError> {
        let node = self.get(req).await?;
        if bootfleet_store::delete(&self.db, &SPEC, &node.id).await? {
            Ok(node)
        } else {
            Err(ApiError::not_found(format!("localnode {}", node.id)))
        }
    }
}

/// At most this many nodes per site are probed (and listed to its distributor).
pub const MAX_SITE_NODES: u64 = 4096;
/// Script runs: defaults and bounds.
pub const DEFAULT_SCRIPT_TIMEOUT_SECS: u32 = 60;
pub const MAX_SCRIPT_TIMEOUT_SECS: u32 = 3600;
const MAX_PRIVATE_KEY_BYTES: usize = 16 * 1024;

/// A POSIX user name: what `useradd` accepts by default, nothing a shell would read.
fn user_name(value: &str) -> bool {
    let mut bytes = value.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
        && value.len() <= 32
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

impl Localnodes {
    /// The nodes of one site, for its distributor to probe.
    pub async fn site_nodes(
        &self,
        req: proto::SiteNodesRequest,
    ) -> Result<proto::LocalNodeList, ApiError> {
        validate::artifact_id("artifactId", &req.artifact_id)?;
        let mut select = SPEC.select();
        select
            .and_where(Expr::col(Alias::new("artifact_id")).eq(req.artifact_id.as_str()))
            .limit(MAX_SITE_NODES);
        let rows = Record::find_by_statement(self.db.get_database_backend().build(&select))
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let total = rows.len() as u64;
        Ok(proto::LocalNodeList {
            rows: rows.into_iter().map(Into::into).collect(),
            total,
        })
    }

    /// A distributor's probe results; only nodes of its own site are touched.
    pub async fn reachability(
        &self,
        report: proto::ReachabilityReport,
    ) -> Result<proto::Empty, ApiError> {
        validate::artifact_id("artifactId", &report.artifact_id)?;
        let now = now_ms();
        for node in report.nodes.iter().take(MAX_SITE_NODES as usize) {
            let Ok(id) = validate::id("id", &node.id) else {
                continue;
            };
            let mut update = Query::update();
            update
                .table(Alias::new(SPEC.table))
                .value(Alias::new("pingable"), node.reachable)
                .and_where(Expr::col(Alias::new("id")).eq(id.as_str()))
                .and_where(Expr::col(Alias::new("artifact_id")).eq(report.artifact_id.as_str()));
            if node.reachable {
                update.value(Alias::new("last_seen"), now);
            }
            self.db
                .execute(self.db.get_database_backend().build(&update))
                .await
                .map_err(db_error)?;
        }
        Ok(proto::Empty {})
    }

    /// Runs an operator's script on a node through its site's distributor. The host key seen
    /// first is recorded; the distributor refuses a different one later.
    pub async fn run_script(
        &self,
        bus: &Bus,
        req: proto::RunNodeScript,
    ) -> Result<proto::NodeExecResult, ApiError> {
        validate::text("script", &req.script)?;
        if req.private_key.trim().is_empty() || req.private_key.len() > MAX_PRIVATE_KEY_BYTES {
            return Err(ApiError::invalid(
                "privateKey",
                format!("must be an OpenSSH private key of at most {MAX_PRIVATE_KEY_BYTES} bytes"),
            ));
        }
        let user = if req.user.is_empty() {
            "root".to_owned()
        } else {
            req.user
        };
        if !user_name(&user) {
            return Err(ApiError::invalid(
                "user",
                "must be a user name: lowercase letters, digits, '_' or '-', at most 32",
            ));
        }
        let timeout = match req.timeout_seconds {
            0 => DEFAULT_SCRIPT_TIMEOUT_SECS,
            t if t <= MAX_SCRIPT_TIMEOUT_SECS => t,
            _ => {
                return Err(ApiError::invalid(
                    "timeoutSeconds",
                    format!("must be 1 to {MAX_SCRIPT_TIMEOUT_SECS}"),
                ))
            }
        };
        let node = self.get(proto::IdRequest { id: req.id }).await?;
        let exec = proto::NodeExec {
            ip: node.ip.clone(),
            port: 22,
            user,
            private_key: req.private_key,
            script: req.script,
            timeout_seconds: timeout,
            known_host_key: node.host_key.clone(),
        };
        // The distributor enforces the timeout; the bus waits a little longer for its answer.
        let wait = std::time::Duration::from_secs(u64::from(timeout) + 15);
        let result: proto::NodeExecResult = bus
            .with_timeout(wait, 1)
            .request(
                &bootfleet_bus::TraceParent::new_root(),
                &subjects::distributor_exec(&node.artifact_id),
                &exec,
            )
            .await
            .map_err(|e| match e.code {
                ErrorCode::Unavailable => ApiError::unavailable(format!(
                    "no distributor of site {} is online to reach node {}",
                    node.artifact_id, node.ip
                )),
                _ => e,
            })?;
        if node.host_key.is_empty() && !result.host_key.is_empty() {
            let mut update = Query::update();
            update
                .table(Alias::new(SPEC.table))
                .value(Alias::new("host_key"), result.host_key.as_str())
                .and_where(Expr::col(Alias::new("id")).eq(node.id.as_str()))
                .and_where(Expr::col(Alias::new("host_key")).eq(""));
            self.db
                .execute(self.db.get_database_backend().build(&update))
                .await
                .map_err(db_error)?;
            tracing::info!(node = %node.id, "host key recorded on first contact");
        }
        Ok(result)
    }
}

/// The `localnodes` service.
pub fn service() -> Service {
    Service::new(SERVICE, &migrations::SCHEMA, routes)
}

async fn routes(service: ServiceBuilder, ctx: Context) -> Routes {
    let script_bus = ctx.bus.clone();
    let service = service.with_state(Localnodes::with_bus(ctx.db.clone(), ctx.bus.clone()));
    let service = handlers!(service, Localnodes, sites [
        subjects::localnodes_of_sites() => site_nodes,
        subjects::localnodes_reachabilities() => reachability,
    ]);
    Ok(handlers!(service, Localnodes, [
        subjects::subject(SERVICE, Op::Create) => register,
        subjects::subject(SERVICE, Op::Get) => get,
        subjects::subject(SERVICE, Op::List) => list,
        subjects::subject(SERVICE, Op::Delete) => delete,
    ])
    .route(
        subjects::localnodes_run_script(),
        move |n: Localnodes, _, req| {
            let bus = script_bus.clone();
            async move { n.run_script(&bus, req).await }
        },
    )
    .builder())
}
