//! Two services over the same kind of registry, a table of texts:
//! - `mainscripts` owns `mainscripts` and `subscripts` (iPXE scripts: menus, and kernel/initrd
//!   entries they chain);
//! - `kickstarts` owns `kickstarts`, `prebootscripts` and `postbootscripts`.
//!
//! They share code because the registries have one shape; each service still owns its tables
//! and its migrations (its own migration table), and runs alone as its own process.

mod migrations;

use bootfleet_api::subjects::{self, Op, ScriptKind};
use bootfleet_api::{proto, validate, ApiError, ErrorCode, ListParams};
use bootfleet_bus::ServiceBuilder;
use bootfleet_service_kit::{handlers, Context, Routes, Service};
use bootfleet_store::sea_orm::sea_query::{Alias, Expr, OnConflict, Query};
use bootfleet_store::sea_orm::{ConnectionTrait, FromQueryResult};
use bootfleet_store::{db_error, now_ms, Database, TableSpec};

pub use migrations::{KickstartsMigrator, MainscriptsMigrator};

const FIELDS: &[(&str, &str)] = &[
    ("id", "id"),
    ("text", "text"),
    ("sites", "sites"),
    ("createdAt", "created_at"),
    ("updatedAt", "updated_at"),
];

macro_rules! spec {
    ($table:literal) => {
        TableSpec {
            table: $table,
            fields: FIELDS,
            list: bootfleet_api::list::fields::SCRIPTS,
        }
    };
}

static MAINSCRIPTS: TableSpec = spec!("mainscripts");
static SUBSCRIPTS: TableSpec = spec!("subscripts");
static KICKSTARTS: TableSpec = spec!("kickstarts");
static PREBOOTSCRIPTS: TableSpec = spec!("prebootscripts");
static POSTBOOTSCRIPTS: TableSpec = spec!("postbootscripts");

fn spec(kind: ScriptKind) -> &'static TableSpec {
    match kind {
        ScriptKind::Mainscripts => &MAINSCRIPTS,
        ScriptKind::Subscripts => &SUBSCRIPTS,
        ScriptKind::Kickstarts => &KICKSTARTS,
        ScriptKind::Prebootscripts => &PREBOOTSCRIPTS,
        ScriptKind::Postbootscripts => &POSTBOOTSCRIPTS,
    }
}

#[derive(Debug, FromQueryResult)]
struct Record {
    id: String,
    text: String,
    /// A JSON array of site ids.
    sites: String,
    created_at: i64,
    updated_at: i64,
}

impl From<Record> for proto::Script {
    fn from(r: Record) -> Self {
        proto::Script {
            id: r.id,
            text: r.text,
            // Written only by this service from a checked list.
            sites: serde_json::from_str(&r.sites).unwrap_or_default(),
            created_at_ms: r.created_at,
            updated_at_ms: r.updated_at,
        }
    }
}

fn sites_json(sites: &[String]) -> String {
    serde_json::to_string(sites).unwrap_or_else(|_| "[]".into())
}

/// The registry of one kind of text, on one database.
#[derive(Clone, Debug)]
pub struct TextRegistry {
    kind: ScriptKind,
    db: Database,
    /// Where changes are announced ([`subjects::script_changed`]), for the gateways' caches.
    changes: Option<async_nats::Client>,
}

impl TextRegistry {
    pub fn new(kind: ScriptKind, db: Database) -> Self {
        TextRegistry {
            kind,
            db,
            changes: None,
        }
    }

    /// Announces each update and delete on the bus before answering it.
    pub fn announcing_changes(mut self, client: async_nats::Client) -> Self {
        self.changes = Some(client);
        self
    }

    /// Tells the gateways that `id` changed. Sent on this connection before the write's reply,
    /// so a gateway on the same nats-server sees it first. If it cannot be sent the cached
    /// copies still expire (the gateway's cache keeps a script for a bounded time).
    async fn announce(&self, id: &str) {
        let Some(client) = &self.changes else { return };
        let subject = subjects::script_changed(self.kind);
        if let Err(e) = client.publish(subject, id.to_owned().into()).await {
            tracing::warn!(kind = self.kind.name(), id, error = %e, "cannot announce a change");
        }
    }

    fn not_found(&self, id: &str) -> ApiError {
        ApiError::not_found(format!("{} {id}", self.kind.singular()))
    }

    /// Creates the row with the caller's id. A repeat of the same create (a retry) returns the
    /// row it made; the same id with another text is a conflict.
    pub async fn create(&self, req: proto::CreateScript) -> Result<proto::Script, ApiError> {
        let id = validate::id("id", &req.id)?;
        validate::text("text", &req.text)?;
        validate::sites("sites", &req.sites)?;
        let sites = sites_json(&req.sites);
        let now = now_ms();
        let spec = spec(self.kind);
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new(spec.table))
            .columns(["id", "text", "sites", "created_at", "updated_at"].map(Alias::new))
            .values_panic([
                id.clone().into(),
                req.text.clone().into(),
                sites.clone().into(),
                now.into(),
                now.into(),
            ])
            .on_conflict(OnConflict::column(Alias::new("id")).do_nothing().to_owned());
        self.db
            .execute(self.db.get_database_backend().build(&insert))
            .await
            .map_err(db_error)?;
        let row: Record = bootfleet_store::get(&self.db, spec, &id)
            .await?
            .ok_or_else(|| ApiError::internal("created row vanished"))?;
        if row.text != req.text || row.sites != sites {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("{} {id} already exists", self.kind.singular()),
            ));
        }
        Ok(row.into())
    }

    pub async fn get(&self, req: proto::IdRequest) -> Result<proto::Script, ApiError> {
        let id = validate::id("id", &req.id)?;
        bootfleet_store::get::<Record>(&self.db, spec(self.kind), &id)
            .await?
            .map(Into::into)
            .ok_or_else(|| self.not_found(&id))
    }

    pub async fn update(&self, req: proto::UpdateScript) -> Result<proto::Script, ApiError> {
        let id = validate::id("id", &req.id)?;
        validate::text("text", &req.text)?;
        validate::sites("sites", &req.sites)?;
        let spec = spec(self.kind);
        let mut update = Query::update();
        update
            .table(Alias::new(spec.table))
            .value(Alias::new("text"), req.text)
            .value(Alias::new("updated_at"), now_ms())
            .and_where(Expr::col(Alias::new("id")).eq(id.as_str()));
        if req.replace_sites {
            update.value(Alias::new("sites"), sites_json(&req.sites));
        }
        let result = self
            .db
            .execute(self.db.get_database_backend().build(&update))
            .await
            .map_err(db_error)?;
        if result.rows_affected() == 0 {
            return Err(self.not_found(&id));
        }
        self.announce(&id).await;
        self.get(proto::IdRequest { id }).await
    }

    /// Deletes and returns the row.
    pub async fn delete(&self, req: proto::IdRequest) -> Result<proto::Script, ApiError> {
        let row = self.get(req).await?;
        if !bootfleet_store::delete(&self.db, spec(self.kind), &row.id).await? {
            return Err(self.not_found(&row.id));
        }
        self.announce(&row.id).await;
        Ok(row)
    }

    pub async fn list(&self, req: proto::ListRequest) -> Result<proto::ScriptList, ApiError> {
        let params = ListParams::from_proto(&req)?;
        let (rows, total) =
            bootfleet_store::list::<Record>(&self.db, spec(self.kind), &params).await?;
        Ok(proto::ScriptList {
            rows: rows.into_iter().map(Into::into).collect(),
            total,
        })
    }
}

/// Adds the five routes of one registry.
fn register(builder: ServiceBuilder, registry: TextRegistry) -> ServiceBuilder {
    let kind = registry.kind;
    handlers!(builder.with_state(registry), TextRegistry, [
        kind.subject(Op::Create) => create,
        kind.subject(Op::Get) => get,
        kind.subject(Op::Update) => update,
        kind.subject(Op::Delete) => delete,
        kind.subject(Op::List) => list,
    ])
    .builder()
}

/// The `mainscripts` service: mainscripts and subscripts.
pub fn mainscripts_service() -> Service {
    Service::new(
        subjects::MAINSCRIPTS,
        &migrations::MAINSCRIPTS_SCHEMA,
        routes,
    )
}

/// The `kickstarts` service: kickstarts, prebootscripts and postbootscripts.
pub fn kickstarts_service() -> Service {
    Service::new(subjects::KICKSTARTS, &migrations::KICKSTARTS_SCHEMA, routes)
}

/// Adds the registries the builder's service owns.
async fn routes(mut builder: ServiceBuilder, ctx: Context) -> Routes {
    let service = builder.service();
    for kind in ScriptKind::ALL
        .into_iter()
        .filter(|k| k.service() == service)
    {
        let registry =
            TextRegistry::new(kind, ctx.db.clone()).announcing_changes(ctx.bus.client().clone());
        builder = register(builder, registry);
    }
    Ok(builder)
}
