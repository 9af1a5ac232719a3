//! The `sshkeys` service: a registry of SSH **public** keys per site, and a key-pair generator
//! whose private keys are returned once and never stored or logged.

pub mod keys;
mod migrations;

use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, validate, ApiError, ErrorCode, ListParams};
use bootfleet_bus::ServiceBuilder;
use bootfleet_service_kit::{handlers, Context, Routes, Service};
use bootfleet_store::sea_orm::sea_query::{Alias, Expr, OnConflict, Query};
use bootfleet_store::sea_orm::{ConnectionTrait, DbErr, FromQueryResult, SqlErr};
use bootfleet_store::{db_error, now_ms, Database, TableSpec};

pub use migrations::SshkeysMigrator;

static SPEC: TableSpec = TableSpec {
    table: "sshkeys",
    fields: &[
        ("id", "id"),
        ("text", "text"),
        ("artifactId", "artifact_id"),
        ("algorithm", "algorithm"),
        ("fingerprint", "fingerprint"),
        ("comment", "comment"),
        ("createdAt", "created_at"),
        ("updatedAt", "updated_at"),
    ],
    list: bootfleet_api::list::fields::SSHKEYS,
};

#[derive(Debug, FromQueryResult)]
struct Record {
    id: String,
    text: String,
    artifact_id: String,
    algorithm: String,
    fingerprint: String,
    comment: String,
    created_at: i64,
    updated_at: i64,
}

impl From<Record> for proto::SshKey {
    fn from(r: Record) -> Self {
        proto::SshKey {
            id: r.id,
            text: r.text,
            artifact_id: r.artifact_id,
            algorithm: r.algorithm,
            fingerprint: r.fingerprint,
            comment: r.comment,
            created_at_ms: r.created_at,
            updated_at_ms: r.updated_at,
        }
    }
}

fn duplicate(artifact_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!("this key is already registered for site {artifact_id}"),
    )
}

fn map_write_error(e: DbErr, artifact_id: &str) -> ApiError {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => duplicate(artifact_id),
        _ => db_error(e),
    }
}

#[derive(Clone, Debug)]
pub struct SshKeys {
    db: Database,
}

impl SshKeys {
    pub fn new(db: Database) -> Self {
        SshKeys { db }
    }

    async fn find(&self, id: &str) -> Result<Option<Record>, ApiError> {
        bootfleet_store::get(&self.db, &SPEC, id).await
    }

    pub async fn create(&self, req: proto::CreateSshKey) -> Result<proto::SshKey, ApiError> {
        let id = validate::id("id", &req.id)?;
        let key = keys::parse_public("text", &req.text)?;
        validate::artifact_id("artifactId", &req.artifact_id)?;
        let now = now_ms();
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new(SPEC.table))
            .columns(SPEC.fields.iter().map(|(_, c)| Alias::new(*c)))
            .values_panic([
                id.clone().into(),
                key.text.into(),
                req.artifact_id.clone().into(),
                key.algorithm.into(),
                key.fingerprint.clone().into(),
                key.comment.into(),
                now.into(),
                now.into(),
            ])
            // Any conflict (the id of a retried request, or the same key for the same site)
            // inserts nothing; which one it was is told apart below.
            .on_conflict(OnConflict::new().do_nothing().to_owned());
        self.db
            .execute(self.db.get_database_backend().build(&insert))
            .await
            .map_err(|e| map_write_error(e, &req.artifact_id))?;
        match self.find(&id).await? {
            Some(row)
                if row.fingerprint == key.fingerprint && row.artifact_id == req.artifact_id =>
            {
                Ok(row.into())
            }
            Some(_) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!("sshkey {id} already exists"),
            )),
            None => Err(duplicate(&req.artifact_id)),
        }
    }

    pub async fn get(&self, req: proto::IdRequest) -> Result<proto::SshKey, ApiError> {
        let id = validate::id("id", &req.id)?;
        self.find(&id)
            .await?
            .map(Into::into)
            .ok_or_else(|| ApiError::not_found(format!("sshkey {id}")))
    }

    pub async fn update(&self, req: proto::UpdateSshKey) -> Result<proto::SshKey, ApiError> {
        let id = validate::id("id", &req.id)?;
        let key = keys::parse_public("text", &req.text)?;
        validate::artifact_id("artifactId", &req.artifact_id)?;
        let mut update = Query::update();
        update
            .table(Alias::new(SPEC.table))
            .values([
                (Alias::new("text"), key.text.into()),
                (Alias::new("artifact_id"), req.artifact_id.clone().into()),
                (Alias::new("algorithm"), key.algorithm.into()),
                (Alias::new("fingerprint"), key.fingerprint.into()),
                (Alias::new("comment"), key.comment.into()),
                (Alias::new("updated_at"), now_ms().into()),
            ])
            .and_where(Expr::col(Alias::new("id")).eq(id.as_str()));
        let result = self
            .db
            .execute(self.db.get_database_backend().build(&update))
            .await
            .map_err(|e| map_write_error(e, &req.artifact_id))?;
        if result.rows_affected() == 0 {
            return Err(ApiError::not_found(format!("sshkey {id}")));
        }
        self.get(proto::IdRequest { id }).await
    }

    pub async fn delete(&self, req: proto::IdRequest) -> Result<proto::SshKey, ApiError> {
        let row = self.get(req).await?;
        if !bootfleet_store::delete(&self.db, &SPEC, &row.id).await? {
            return Err(ApiError::not_found(format!("sshkey {}", row.id)));
        }
        Ok(row)
    }

    pub async fn list(&self, req: proto::ListRequest) -> Result<proto::SshKeyList, ApiError> {
        let params = ListParams::from_proto(&req)?;
        let (rows, total) = bootfleet_store::list::<Record>(&self.db, &SPEC, &params).await?;
        Ok(proto::SshKeyList {
            rows: rows.into_iter().map(Into::into).collect(),
            total,
        })
    }
}

/// Generates a key pair off the async threads (RSA generation takes long).
pub async fn generate(req: proto::GenerateSshKey) -> Result<proto::GeneratedSshKey, ApiError> {
    let algorithm = keys::generated_algorithm(&req.algorithm)?;
    tokio::task::spawn_blocking(move || keys::generate(algorithm))
        .await
        .map_err(|e| ApiError::internal(format!("key generation task failed: {e}")))?
}

/// The `sshkeys` service.
pub fn service() -> Service {
    Service::new(subjects::SSHKEYS, &migrations::SCHEMA, routes)
}

async fn routes(service: ServiceBuilder, ctx: Context) -> Routes {
    let subject = |op| subjects::subject(subjects::SSHKEYS, op);
    let service = service
        .route(subject(Op::Generate), |_, req| generate(req))
        .with_state(SshKeys::new(ctx.db.clone()));
    Ok(handlers!(service, SshKeys, [
        subject(Op::Create) => create,
        subject(Op::Get) => get,
        subject(Op::Update) => update,
        subject(Op::Delete) => delete,
        subject(Op::List) => list,
    ])
    .builder())
}
