//! The `localnodes` service: hosts that came up and registered themselves (or were registered by
//! an operator). One row per (ip, artifact id): a node that registers again after a reinstall or
//! a reboot updates its row, never duplicates it.

mod migrations;

use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, validate, ApiError, ListParams};
use bootfleet_bus::{Bus, BusError, RunningService, ServiceBuilder};
use bootfleet_store::sea_orm::sea_query::{Alias, Expr, OnConflict, Query};
use bootfleet_store::sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult};
use bootfleet_store::{db_error, now_ms, StoreError, TableSpec};

pub use migrations::LocalnodesMigrator;

pub const SERVICE: &str = subjects::LOCALNODES;

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
    ],
    sortable: &[
        "id",
        "ip",
        "artifactId",
        "hostname",
        "lastSeen",
        "createdAt",
        "updatedAt",
    ],
    searchable: &["ip", "artifactId", "mac", "hostname", "id"],
    default_sort: "createdAt",
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
}

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
    db: DatabaseConnection,
}

impl Localnodes {
    pub fn new(db: DatabaseConnection) -> Self {
        Localnodes { db }
    }

    async fn find(&self, conditions: &[(&str, &str)]) -> Result<Option<Record>, ApiError> {
        let mut select = SPEC.select();
        for (column, value) in conditions {
            select.and_where(Expr::col(Alias::new(*column)).eq(*value));
        }
        Record::find_by_statement(self.db.get_database_backend().build(&select))
            .one(&self.db)
            .await
            .map_err(db_error)
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
            .columns(SPEC.fields.iter().map(|(_, c)| Alias::new(*c)))
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
        self.find(&[("id", &id)])
            .await?
            .map(Into::into)
            .ok_or_else(|| ApiError::not_found(format!("localnode {id}")))
    }

    pub async fn list(&self, req: proto::ListRequest) -> Result<proto::LocalNodeList, ApiError> {
        let params = ListParams::from_proto(&req)?;
        let (rows, total) = bootfleet_store::list::<Record>(&self.db, &SPEC, &params).await?;
        Ok(proto::LocalNodeList {
            rows: rows.into_iter().map(Into::into).collect(),
            total,
        })
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

    /// Records the outcome of a reachability probe (from the site's distributor).
    pub async fn set_pingable(&self, id: &str, pingable: bool) -> Result<(), ApiError> {
        let id = validate::id("id", id)?;
        let now = now_ms();
        let mut update = Query::update();
        update
            .table(Alias::new(SPEC.table))
            .value(Alias::new("pingable"), pingable)
            .value(Alias::new("updated_at"), now)
            .and_where(Expr::col(Alias::new("id")).eq(id.as_str()));
        if pingable {
            update.value(Alias::new("last_seen"), now);
        }
        self.db
            .execute(self.db.get_database_backend().build(&update))
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Migrates and starts the `localnodes` service.
pub async fn start(bus: Bus, db: DatabaseConnection) -> Result<RunningService, StartError> {
    bootfleet_store::migrate::<LocalnodesMigrator>(&db).await?;
    let n = Localnodes::new(db);
    let (n1, n2, n3, n4) = (n.clone(), n.clone(), n.clone(), n);
    Ok(ServiceBuilder::new(bus, SERVICE)
        .route(subjects::subject(SERVICE, Op::Create), move |_, req| {
            let n = n1.clone();
            async move { n.register(req).await }
        })
        .route(subjects::subject(SERVICE, Op::Get), move |_, req| {
            let n = n2.clone();
            async move { n.get(req).await }
        })
        .route(subjects::subject(SERVICE, Op::List), move |_, req| {
            let n = n3.clone();
            async move { n.list(req).await }
        })
        .route(subjects::subject(SERVICE, Op::Delete), move |_, req| {
            let n = n4.clone();
            async move { n.delete(req).await }
        })
        .start()
        .await?)
}
