//! The artifact registry (`artifacts` service) and the build workers (`builders`).
//!
//! A create validates the inputs, computes the content address (kind + inputs + tool versions)
//! and either answers `done` at once (that content was built before) or stores a `queued` row
//! and puts a job on the JetStream work queue. A builder takes the job, builds in a temporary
//! directory, puts the files in the object store under `<key>/<file>`, marks the row `done`,
//! and only then acks; a builder that dies mid-build leaves the job unacked, so JetStream
//! hands it to another one after the ack wait.

mod inputs;
mod migrations;
pub mod objects;
pub mod worker;

use std::sync::Arc;

use async_nats::jetstream;
use bootfleet_api::artifacts::{ArtifactKind, GrubInput, IpxeInput, SyslinuxInput};
use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, validate, ApiError, ErrorCode, ListParams};
use bootfleet_boot_media::{Kind, Toolbox};
use bootfleet_bus::{Bus, RunningService, ServiceBuilder};
use bootfleet_service_kit::{handlers, Context, Routes, Schema, Service};
use bootfleet_store::sea_orm::sea_query::{Alias, Condition, Expr, Query};
use bootfleet_store::sea_orm::{ConnectionTrait, FromQueryResult};
use bootfleet_store::{db_error, now_ms, Database, TableSpec};
use prost::Message;
use serde::{Deserialize, Serialize};

pub use inputs::{content_key, IsoRefs, Request};
pub use migrations::ArtifactsMigrator;

pub use bootfleet_service_kit::StartError;

const SERVICE: &str = subjects::ARTIFACTS;

pub const QUEUED: &str = "queued";
pub const WORKING: &str = "working";
pub const DONE: &str = "done";
pub const FAILED: &str = "failed";

static SPEC: TableSpec = TableSpec {
    table: "artifacts",
    fields: &[
        ("id", "id"),
        ("kind", "kind"),
        ("status", "status"),
        ("progress", "progress"),
        ("error", "error"),
        ("inputs", "inputs"),
        ("key", "content_key"),
        ("files", "files"),
        ("size", "size"),
        ("embedded", "embedded"),
        ("createdAt", "created_at"),
        ("updatedAt", "updated_at"),
    ],
    list: bootfleet_api::list::fields::ARTIFACTS,
};

#[derive(Clone, Debug, FromQueryResult)]
pub(crate) struct Record {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub progress: i32,
    pub error: String,
    pub inputs: String,
    pub content_key: String,
    pub files: String,
    pub size: i64,
    pub embedded: Option<bool>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A built file as stored in the row (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl Record {
    pub(crate) fn files(&self) -> Vec<StoredFile> {
        serde_json::from_str(&self.files).unwrap_or_default()
    }

    pub(crate) fn into_proto(self) -> proto::Artifact {
        let files = self
            .files()
            .into_iter()
            .map(|f| proto::ArtifactFile {
                name: f.name,
                size: f.size,
                sha256: f.sha256,
            })
            .collect();
        proto::Artifact {
            id: self.id,
            kind: self.kind,
            status: self.status,
            progress: u32::try_from(self.progress).unwrap_or(0),
            error: self.error,
            inputs_json: self.inputs,
            key: self.content_key,
            files,
            embedded: self.embedded,
            created_at_ms: self.created_at,
            updated_at_ms: self.updated_at,
        }
    }
}

pub(crate) fn kind_of(name: &str) -> Result<ArtifactKind, ApiError> {
    ArtifactKind::parse(name)
        .ok_or_else(|| ApiError::invalid("kind", "must be ipxes, grubs, syslinuxs or isos"))
}

pub(crate) fn tool_kind(kind: ArtifactKind) -> Kind {
    match kind {
        ArtifactKind::Ipxes => Kind::Ipxe,
        ArtifactKind::Grubs => Kind::Grub,
        ArtifactKind::Syslinuxs => Kind::Syslinux,
        ArtifactKind::Isos => Kind::Iso,
    }
}

/// The registry, shared by the `artifacts` service and the builders.
#[derive(Clone, Debug)]
pub struct Registry {
    db: Database,
}

impl Registry {
    pub fn new(db: Database) -> Self {
        Registry { db }
    }

    pub(crate) async fn find(&self, id: &str) -> Result<Option<Record>, ApiError> {
        bootfleet_store::get::<Record>(&self.db, &SPEC, id).await
    }

    pub(crate) async fn find_done_by_key(&self, key: &str) -> Result<Option<Record>, ApiError> {
        let mut select = SPEC.select();
        select
            .and_where(Expr::col(Alias::new("content_key")).eq(key))
            .and_where(Expr::col(Alias::new("status")).eq(DONE))
            .limit(1);
        Record::find_by_statement(self.db.get_database_backend().build(&select))
            .one(&self.db)
            .await
            .map_err(db_error)
    }

    pub(crate) async fn count_by_key(&self, key: &str) -> Result<u64, ApiError> {
        let mut select = Query::select();
        select
            .expr(Expr::col(Alias::new("id")).count())
            .from(Alias::new(SPEC.table))
            .and_where(Expr::col(Alias::new("content_key")).eq(key));
        let row = self
            .db
            .query_one(self.db.get_database_backend().build(&select))
            .await
            .map_err(db_error)?;
        let n = row
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()
            .map_err(db_error)?
            .unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn insert(&self, r: &Record) -> Result<(), ApiError> {
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new(SPEC.table))
            .columns(SPEC.fields.iter().map(|(_, c)| Alias::new(*c)))
            .values_panic([
                r.id.clone().into(),
                r.kind.clone().into(),
                r.status.clone().into(),
                r.progress.into(),
                r.error.clone().into(),
                r.inputs.clone().into(),
                r.content_key.clone().into(),
                r.files.clone().into(),
                r.size.into(),
                r.embedded.into(),
                r.created_at.into(),
                r.updated_at.into(),
            ]);
        self.db
            .execute(self.db.get_database_backend().build(&insert))
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Updates status-related columns of a row; false if the row is gone.
    pub(crate) async fn update_state(
        &self,
        id: &str,
        status: &str,
        progress: i32,
        error: &str,
        done: Option<(&[StoredFile], Option<bool>)>,
    ) -> Result<bool, ApiError> {
        let mut update = Query::update();
        update
            .table(Alias::new(SPEC.table))
            .value(Alias::new("status"), status)
            .value(Alias::new("progress"), progress)
            .value(Alias::new("error"), error)
            .value(Alias::new("updated_at"), now_ms())
            .and_where(Expr::col(Alias::new("id")).eq(id));
        if let Some((files, embedded)) = done {
            let size = files.first().map(|f| f.size).unwrap_or(0);
            update
                .value(
                    Alias::new("files"),
                    serde_json::to_string(files).unwrap_or_else(|_| "[]".into()),
                )
                .value(Alias::new("size"), i64::try_from(size).unwrap_or(i64::MAX))
                .value(Alias::new("embedded"), embedded);
        }
        let result = self
            .db
            .execute(self.db.get_database_backend().build(&update))
            .await
            .map_err(db_error)?;
        Ok(result.rows_affected() > 0)
    }

    /// Progress only while the build is under way: a late tick never rewinds a finished row.
    pub(crate) async fn update_progress(&self, id: &str, progress: i32) -> Result<(), ApiError> {
        let mut update = Query::update();
        update
            .table(Alias::new(SPEC.table))
            .value(Alias::new("progress"), progress)
            .value(Alias::new("updated_at"), now_ms())
            .and_where(Expr::col(Alias::new("id")).eq(id))
            .and_where(Expr::col(Alias::new("status")).eq(WORKING));
        self.db
            .execute(self.db.get_database_backend().build(&update))
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn delete_row(&self, id: &str) -> Result<bool, ApiError> {
        bootfleet_store::delete(&self.db, &SPEC, id).await
    }

    async fn list(
        &self,
        kind: ArtifactKind,
        params: &ListParams,
    ) -> Result<(Vec<Record>, u64), ApiError> {
        let scope = Condition::all().add(Expr::col(Alias::new("kind")).eq(kind.name()));
        bootfleet_store::list_where::<Record>(&self.db, &SPEC, params, scope).await
    }
}

/// How long a kind's tool versions are reused. Finding them runs the tools and hashes package
/// files (a whole iPXE tree with the compile backend): too much for every create. After a
/// package upgrade, creates within this window may still reuse an artifact built before it.
const VERSIONS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a create keeps offering its job to a build queue that cannot take it before the
/// row is marked `failed`.
pub const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The `artifacts` service: validates, deduplicates by content, queues.
#[derive(Clone, Debug)]
pub struct Artifacts {
    registry: Registry,
    js: jetstream::Context,
    objects: objects::Objects,
    toolbox: Arc<Toolbox>,
    versions: Arc<
        std::sync::Mutex<std::collections::HashMap<ArtifactKind, (std::time::Instant, String)>>,
    >,
}

impl Artifacts {
    /// Computes what a request's content address is made of: its normalised inputs (for an
    /// ISO, its parts' addresses, which must all be `done`) and the tool versions.
    async fn canonical_inputs(&self, request: &Request) -> Result<String, ApiError> {
        // `sites` says who may download the bytes, not what they are: left out of the address.
        let parts = match request {
            Request::Ipxe(input, _) => serde_json::to_string(&IpxeInput {
                sites: Vec::new(),
                ..input.clone()
            }),
            Request::Grub(input, _) => serde_json::to_string(&GrubInput {
                sites: Vec::new(),
                ..input.clone()
            }),
            Request::Syslinux(input, _) => serde_json::to_string(&SyslinuxInput {
                sites: Vec::new(),
                ..input.clone()
            }),
            Request::Iso(input, refs) => {
                let parts = worker::resolve_iso_parts(&self.registry, &input.label, refs).await?;
                let keys: Vec<&str> = parts.iter().map(|p| p.content_key.as_str()).collect();
                serde_json::to_string(&(input.label.as_str(), keys))
            }
        };
        parts.map_err(|e| ApiError::internal(format!("cannot encode the inputs: {e}")))
    }

    pub async fn create(&self, req: proto::CreateArtifact) -> Result<proto::Artifact, ApiError> {
        let kind = kind_of(&req.kind)?;
        let id = validate::id("id", &req.id)?;
        let request = inputs::parse(kind, &req.inputs_json)?;
        if let Request::Ipxe(_, target) = &request {
            // ipxe.kpxe, say, needs the compile backend: refuse now rather than fail later.
            target
                .check_backend(&self.toolbox)
                .map_err(inputs::invalid)?;
        }
        let stored_inputs = match &request {
            Request::Ipxe(i, _) => serde_json::to_string(i),
            Request::Grub(i, _) => serde_json::to_string(i),
            Request::Syslinux(i, _) => serde_json::to_string(i),
            Request::Iso(i, _) => serde_json::to_string(i),
        }
        .map_err(|e| ApiError::internal(format!("cannot encode the inputs: {e}")))?;
        // A retried create (the reply was lost) finds its row.
        if let Some(existing) = self.registry.find(&id).await? {
            if existing.kind == kind.name() && existing.inputs == stored_inputs {
                return Ok(existing.into_proto());
            }
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("id {id} is taken by another artifact"),
            ));
        }
        let canonical = self.canonical_inputs(&request).await?;
        let versions = self.tool_versions(kind).await?;
        let key = content_key(kind, &canonical, &versions);
        let now = now_ms();
        let mut record = Record {
            id: id.clone(),
            kind: kind.name().to_owned(),
            status: QUEUED.into(),
            progress: 0,
            error: String::new(),
            inputs: stored_inputs,
            content_key: key.clone(),
            files: "[]".into(),
            size: 0,
            embedded: None,
            created_at: now,
            updated_at: now,
        };
        if let Some(built) = self.registry.find_done_by_key(&key).await? {
            // The same content was built before and its bytes are in the object store.
            if self.objects.has_all(&key, &built.files()).await {
                record.status = DONE.into();
                record.progress = 100;
                record.files = built.files;
                record.size = built.size;
                record.embedded = built.embedded;
                self.registry.insert(&record).await?;
                tracing::info!(artifact = %id, kind = kind.name(), key = %key, "already built");
                return Ok(record.into_proto());
            }
        }
        self.registry.insert(&record).await?;
        let job = proto::BuildJob {
            id: id.clone(),
            kind: kind.name().to_owned(),
            key,
        };
        let mut headers = async_nats::HeaderMap::new();
        // JetStream drops a second publish of the same job within its duplicate window.
        headers.insert("Nats-Msg-Id", id.as_str());
        // The builder's span joins this request's trace.
        if let Some(trace) = bootfleet_bus::TraceParent::of_current_span() {
            headers.insert(
                bootfleet_bus::TRACEPARENT_HEADER,
                trace.to_string().as_str(),
            );
        }
        if let Err(e) = self.enqueue(&job, headers).await {
            // The row is stored and may already have been answered (the gateway repeats a
            // request that takes longer than its attempt timeout and finds the row), so it is
            // kept and marked, never answered as "not taken".
            let message = format!("cannot queue the build: {e}");
            tracing::warn!(artifact = %id, kind = kind.name(), error = %e, "build not queued");
            self.registry
                .update_state(&id, FAILED, 0, &message, None)
                .await?;
            record.status = FAILED.into();
            record.error = message;
            return Ok(record.into_proto());
        }
        tracing::info!(artifact = %id, kind = kind.name(), "build queued");
        Ok(record.into_proto())
    }

    /// Publishes a build job, repeating for up to [`QUEUE_WAIT`] while the build queue cannot take
    /// it (a NATS node lost and the stream electing a new leader, measured at 2-6 s). The job's
    /// `Nats-Msg-Id` makes a repeat of a publish that did land a no-op.
    async fn enqueue(
        &self,
        job: &proto::BuildJob,
        headers: async_nats::HeaderMap,
    ) -> Result<(), String> {
        let deadline = std::time::Instant::now() + QUEUE_WAIT;
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            let published = async {
                self.js
                    .publish_with_headers(
                        subjects::build_job(&job.kind),
                        headers.clone(),
                        job.encode_to_vec().into(),
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match published {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() + pause >= deadline => return Err(e),
                Err(e) => {
                    tracing::info!(artifact = %job.id, error = %e, "the build queue did not take the job; repeating");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
            }
        }
    }

    async fn tool_versions(&self, kind: ArtifactKind) -> Result<String, ApiError> {
        let cached = self.versions.lock().ok().and_then(|m| {
            m.get(&kind)
                .filter(|(at, _)| at.elapsed() < VERSIONS_TTL)
                .map(|(_, v)| v.clone())
        });
        if let Some(versions) = cached {
            return Ok(versions);
        }
        let toolbox = self.toolbox.clone();
        let versions = tokio::task::spawn_blocking(move || toolbox.versions(tool_kind(kind)))
            .await
            .map_err(|e| ApiError::internal(format!("tool version check panicked: {e}")))?
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!("the build tools are not usable here: {e}"),
                )
            })?;
        if let Ok(mut m) = self.versions.lock() {
            m.insert(kind, (std::time::Instant::now(), versions.clone()));
        }
        Ok(versions)
    }

    async fn get_of_kind(&self, req: &proto::ArtifactRef) -> Result<Record, ApiError> {
        let kind = kind_of(&req.kind)?;
        let id = validate::id("id", &req.id)?;
        self.registry
            .find(&id)
            .await?
            .filter(|r| r.kind == kind.name())
            .ok_or_else(|| ApiError::not_found(format!("{} {id}", kind.singular())))
    }

    pub async fn get(&self, req: proto::ArtifactRef) -> Result<proto::Artifact, ApiError> {
        Ok(self.get_of_kind(&req).await?.into_proto())
    }

    pub async fn list(&self, req: proto::ListArtifacts) -> Result<proto::ArtifactList, ApiError> {
        let kind = kind_of(&req.kind)?;
        let params = ListParams::from_proto(&req.list.unwrap_or_default())?;
        let (rows, total) = self.registry.list(kind, &params).await?;
        Ok(proto::ArtifactList {
            rows: rows.into_iter().map(Record::into_proto).collect(),
            total,
        })
    }

    /// Removes the row, and the bytes once no other row shares them.
    pub async fn delete(&self, req: proto::ArtifactRef) -> Result<proto::Artifact, ApiError> {
        let record = self.get_of_kind(&req).await?;
        if !self.registry.delete_row(&record.id).await? {
            return Err(ApiError::not_found(format!("artifact {}", record.id)));
        }
        if self.registry.count_by_key(&record.content_key).await? == 0 {
            self.objects
                .delete_all(&record.content_key, &record.files())
                .await;
        }
        Ok(record.into_proto())
    }
}

/// The `artifacts` service: the registry, and the producer of build jobs, with these tools
/// (their versions are part of every content address).
pub fn service(toolbox: Toolbox) -> Service {
    let toolbox = Arc::new(toolbox);
    Service::new(SERVICE, &SCHEMA, move |service, ctx| {
        routes(service, ctx, toolbox.clone())
    })
}

/// The `artifacts` service with the tools the environment names (see [`Toolbox::from_env`]).
pub fn service_from_env() -> Service {
    service(Toolbox::from_env())
}

/// The artifacts' rows. The builders, a worker role of this service, share it.
pub(crate) static SCHEMA: Schema = Schema::new::<ArtifactsMigrator>(&["artifacts"]);

/// Makes sure the queue and the bucket exist, then answers.
async fn routes(service: ServiceBuilder, ctx: Context, toolbox: Arc<Toolbox>) -> Routes {
    let js = jetstream::new(ctx.bus.client().clone());
    worker::ensure_stream(&ctx.bus).await?;
    let objects = objects::Objects::open(&ctx.bus).await?;
    let artifacts = Artifacts {
        registry: Registry::new(ctx.db.clone()),
        js,
        objects,
        toolbox,
        versions: Arc::default(),
    };
    Ok(handlers!(service.with_state(artifacts), Artifacts, [
        subjects::subject(SERVICE, Op::Create) => create,
        subjects::subject(SERVICE, Op::Get) => get,
        subjects::subject(SERVICE, Op::List) => list,
        subjects::subject(SERVICE, Op::Delete) => delete,
    ])
    .builder())
}

/// Migrates and starts the `artifacts` service with these tools, alone (tests, benchmarks).
pub async fn start_with(
    bus: Bus,
    db: Database,
    toolbox: Toolbox,
) -> Result<RunningService, StartError> {
    bootfleet_service_kit::start_one(&Context { bus, db }, &service(toolbox)).await
}
