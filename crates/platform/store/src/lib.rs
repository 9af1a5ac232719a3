//! Persistence on sea-orm: connecting (`sqlite://` by default, `postgres://` for production),
//! running a service's own migrations, and the paged, sorted, searched listing every registry
//! offers. Each service owns its tables; this crate knows none of them.

use bootfleet_api::{ApiError, ErrorCode, ListParams};
use futures_util::future::BoxFuture;
use sea_orm::sea_query::{
    Alias, Asterisk, Condition, Expr, Func, LikeExpr, Order, Query, SelectStatement,
};
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, StatementBuilder,
};

pub use database::Database;
use sea_orm_migration::MigratorTrait;

pub use sea_orm;
pub use sea_orm_migration;

mod database;
pub mod schema;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {url}: {source}")]
    Connect { url: String, source: DbErr },
    #[error("cannot create the database directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(DbErr),
}

/// The default database: a SQLite file in the data directory.
pub fn default_sqlite_url(data_dir: &std::path::Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("bootfleet.db").display()
    )
}

/// Hides the password of a database URL, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// How long a request waits for a pooled connection before answering "database unavailable".
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

pub fn connect(url: &str) -> BoxFuture<'_, Result<Database, StoreError>> {
    // Boxed: rustc compiles an async body again in every crate that awaits it, and sqlx's
    // connection code under this one is large (see docs/architecture.md, "Compile time").
    Box::pin(open(url))
}

async fn open(url: &str) -> Result<Database, StoreError> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap_or_default();
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|source| StoreError::Dir {
                    path: parent.display().to_string(),
                    source,
                })?;
            }
        }
    }
    let reads = pool(url, 16).await?;
    // An in-memory database exists once per pool, so it cannot have a second one for writes.
    let file =
        url.starts_with("sqlite:") && !url.contains(":memory:") && !url.contains("mode=memory");
    let writes = if file {
        Some(pool(url, 1).await?)
    } else {
        None
    };
    Ok(Database::new(reads, writes))
}

async fn pool(url: &str, connections: u32) -> Result<DatabaseConnection, StoreError> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(connections)
        .sqlx_logging(false)
        .connect_timeout(std::time::Duration::from_secs(10))
        // Shorter than the gateway's per-attempt bus timeout (2 s), so a service whose database
        // is down answers "database unavailable" rather than letting the gateway time out.
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // WAL lets several processes (two instances of a service) share one file. Set on every
        // connection as it opens: a PRAGMA run through `execute` afterwards returns a row that is
        // never stepped to its end, and the statement's open read transaction pinned that
        // connection to an old snapshot (it then missed tables and columns migrations added).
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(std::time::Duration::from_secs(10))
        });
    if url.starts_with("sqlite:") {
        // A connection to a local file does not go stale, and the ping sqlx sends to test one
        // before lending it is one more round trip to its thread per statement.
        options.test_before_acquire(false);
    }
    let db = sea_orm::Database::connect(options)
        .await
        .map_err(|source| StoreError::Connect {
            url: redact_url(url),
            source,
        })?;
    Ok(db)
}

/// Applies the migrations of one service (each service has its own migration table).
///
/// On SQLite they run on a pool of their own, closed afterwards. A connection caches the schema
/// it first read; one that a migration's own queries opened mid-migration kept the old schema,
/// and SQLite does not notice that for every statement (an upsert's conflict target, say), so
/// no connection that saw a half-migrated schema may go on serving. Run every migration before
/// serving from `db` (see `bootfleet_service_kit::migrate`).
pub async fn migrate<M: MigratorTrait>(db: &Database) -> Result<(), StoreError> {
    let db = db.reads();
    if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        return migrate_locked::<M>(db).await.map_err(StoreError::Migrate);
    }
    let options = db.get_sqlite_connection_pool().connect_options();
    let pool = sea_orm::sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with((*options).clone())
        .await
        .map_err(|e| StoreError::Migrate(DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e))))?;
    let migrations = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
    let outcome = M::up(&migrations, None).await.map_err(StoreError::Migrate);
    let _ = migrations.close().await;
    outcome
}

/// The key of the PostgreSQL advisory lock every Bootfleet migration holds ("bootflt").
const MIGRATION_LOCK: i64 = 0x0062_6f6f_7466_6c74;

/// On PostgreSQL, instances that start together (replicas, services restarted at once) would
/// race to create the same tables and the loser would fail to start (a unique violation in the
/// catalog). Each runs its migrations in one transaction holding a transaction-level advisory
/// lock, so they take turns; the second finds the work done and applies nothing. The lock goes
/// with the transaction, also when the process dies.
async fn migrate_locked<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), DbErr> {
    use sea_orm::TransactionTrait;
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await?;
    // sea-orm-migration runs PostgreSQL migrations in a transaction of their own: nested in
    // this one, a savepoint.
    M::up(&txn, None).await?;
    txn.commit().await
}

/// Turns a database failure into the error the client sees: the detail goes to the log, the
/// client gets a generic message (no SQL, no paths).
/// A unique index refusing a write is the client's conflict, not our failure: two writers raced
/// past a service's own check for a taken name (the loser gets 409, never a 500).
pub fn db_error(e: DbErr) -> ApiError {
    if let Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) = e.sql_err() {
        tracing::info!(error = %e, "a write met a unique index");
        return ApiError::new(
            ErrorCode::Conflict,
            "another request wrote the same unique value (a name, a key) at the same time; read it and retry",
        );
    }
    match connection_failure(&e) {
        // No connection: no statement of this call ran.
        Some(Lost::BeforeStatement) => {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::database_unavailable("no connection")
        }
        // The connection broke while a read ran: nothing changed.
        Some(Lost::DuringRead) => {
            tracing::warn!(error = %e, "database connection lost during a read");
            ApiError::database_unavailable("the connection was lost")
        }
        // The connection broke while a write ran: it may have committed.
        Some(Lost::DuringWrite) => {
            tracing::warn!(error = %e, "database connection lost during a write");
            ApiError::outcome_unknown("the database connection was lost during a write")
        }
        None => {
            tracing::error!(error = %e, "database error");
            ApiError::new(ErrorCode::Internal, "database error (see the service log)")
        }
    }
}

/// When a database failure is the connection's (the server is down, restarting or shutting
/// down), not the statement's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lost {
    BeforeStatement,
    DuringRead,
    DuringWrite,
}

fn connection_failure(e: &DbErr) -> Option<Lost> {
    use sea_orm::RuntimeErr;
    let (sqlx, during) = match e {
        DbErr::ConnectionAcquire(_) => return Some(Lost::BeforeStatement),
        DbErr::Conn(_) => return Some(Lost::BeforeStatement),
        DbErr::Exec(RuntimeErr::SqlxError(x)) => (x, Lost::DuringWrite),
        DbErr::Query(RuntimeErr::SqlxError(x)) => (x, Lost::DuringRead),
        _ => return None,
    };
    use sea_orm::sqlx::Error as X;
    let lost = match sqlx {
        X::Io(_) | X::Tls(_) | X::Protocol(_) | X::WorkerCrashed => true,
        X::PoolTimedOut | X::PoolClosed => return Some(Lost::BeforeStatement),
        // SQLSTATE class 08 (connection exception) and 57P01-57P03 (the server shutting down,
        // crashing, or not accepting connections yet).
        X::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    };
    lost.then_some(during)
}

/// How a registry's table is listed: its REST field names mapped to columns.
#[derive(Debug)]
pub struct TableSpec {
    pub table: &'static str,
    /// `(REST name, column)` for every selectable column.
    pub fields: &'static [(&'static str, &'static str)],
    /// What the list may be sorted and searched by (the API contract's).
    pub list: bootfleet_api::list::ListFields,
}

impl TableSpec {
    fn column(&self, rest: &str) -> Alias {
        let column = self
            .fields
            .iter()
            .find(|(r, _)| *r == rest)
            .map(|(_, c)| *c)
            .unwrap_or(rest);
        Alias::new(column)
    }

    /// `SELECT <fields> FROM <table>`.
    pub fn select(&self) -> SelectStatement {
        let mut select = Query::select();
        select
            .from(Alias::new(self.table))
            .columns(self.fields.iter().map(|(_, c)| Alias::new(*c)));
        select
    }
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One page of rows and the total count, filtered by `search`, ordered by `sort`.
pub async fn list<T: FromQueryResult>(
    db: &Database,
    spec: &TableSpec,
    params: &ListParams,
) -> Result<(Vec<T>, u64), ApiError> {
    list_where(db, spec, params, Condition::all()).await
}

/// [`list`] within the rows that meet `scope` (one kind of several in a table, say).
pub async fn list_where<T: FromQueryResult>(
    db: &Database,
    spec: &TableSpec,
    params: &ListParams,
    scope: Condition,
) -> Result<(Vec<T>, u64), ApiError> {
    params.check_fields(spec.list.sortable, spec.list.searchable)?;
    let mut condition = scope;
    if let Some(search) = &params.search {
        let fields: Vec<&str> = if params.search_fields.is_empty() {
            spec.list.searchable.to_vec()
        } else {
            params.search_fields.iter().map(String::as_str).collect()
        };
        let pattern = format!("%{}%", escape_like(&search.to_lowercase()));
        let mut any = Condition::any();
        for field in fields {
            any = any.add(
                Expr::expr(Func::lower(Expr::col(spec.column(field))))
                    .like(LikeExpr::new(pattern.clone()).escape('\\')),
            );
        }
        condition = condition.add(any);
    }

    let backend = db.get_database_backend();
    let mut count = Query::select();
    count
        .expr(Func::count(Expr::col(Asterisk)))
        .from(Alias::new(spec.table))
        .cond_where(condition.clone());
    let total = db
        .query_one(backend.build(&count))
        .await
        .map_err(db_error)?
        .map(|row| row.try_get_by_index::<i64>(0))
        .transpose()
        .map_err(db_error)?
        .unwrap_or(0);

    let mut select = spec.select();
    select.cond_where(condition);
    if params.sort.is_empty() {
        select.order_by(spec.column(spec.list.default_sort), Order::Asc);
    }
    for key in &params.sort {
        let order = if key.descending {
            Order::Desc
        } else {
            Order::Asc
        };
        select.order_by(spec.column(&key.field), order);
    }
    // A total order, so pages neither repeat nor skip rows.
    select
        .order_by(Alias::new("id"), Order::Asc)
        .limit(u64::from(params.page_size))
        .offset(u64::from(params.page - 1) * u64::from(params.page_size));
    let rows = T::find_by_statement(backend.build(&select))
        .all(db)
        .await
        .map_err(db_error)?;
    Ok((rows, u64::try_from(total).unwrap_or(0)))
}

/// The row with this id, if any.
pub async fn get<T: FromQueryResult>(
    db: &Database,
    spec: &TableSpec,
    id: &str,
) -> Result<Option<T>, ApiError> {
    one_where(db, spec, "id", id).await
}

/// The first row whose `column` is `value` (a unique column: an id, a name), if any.
pub async fn one_where<T: FromQueryResult>(
    db: &Database,
    spec: &TableSpec,
    column: &str,
    value: &str,
) -> Result<Option<T>, ApiError> {
    one_where_all(db, spec, &[(column, value)]).await
}

/// The first row whose columns have all these values (together unique), if any.
pub async fn one_where_all<T: FromQueryResult>(
    db: &Database,
    spec: &TableSpec,
    conditions: &[(&str, &str)],
) -> Result<Option<T>, ApiError> {
    let mut select = spec.select();
    for (column, value) in conditions {
        select.and_where(Expr::col(Alias::new(*column)).eq(*value));
    }
    T::find_by_statement(db.get_database_backend().build(&select))
        .one(db)
        .await
        .map_err(db_error)
}

/// Runs a statement that returns no rows; how many rows it changed.
pub async fn execute<S: StatementBuilder>(db: &Database, s: &S) -> Result<u64, ApiError> {
    db.execute(db.get_database_backend().build(s))
        .await
        .map(|r| r.rows_affected())
        .map_err(db_error)
}

/// Deletes the row with this id; whether there was one.
pub async fn delete(db: &Database, spec: &TableSpec, id: &str) -> Result<bool, ApiError> {
    let mut delete = Query::delete();
    delete
        .from_table(Alias::new(spec.table))
        .and_where(Expr::col(Alias::new("id")).eq(id));
    let result = db
        .execute(db.get_database_backend().build(&delete))
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected() > 0)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_unique_index_refusing_a_write_is_a_conflict() {
        let db = connect("sqlite::memory:").await.expect("connect");
        for sql in [
            "CREATE TABLE t (name TEXT NOT NULL)",
            "CREATE UNIQUE INDEX t_name ON t (name)",
            "INSERT INTO t (name) VALUES ('a')",
        ] {
            db.execute_unprepared(sql).await.expect(sql);
        }
        let err = db
            .execute_unprepared("INSERT INTO t (name) VALUES ('a')")
            .await
            .expect_err("taken");
        assert_eq!(db_error(err).code, ErrorCode::Conflict);
        let err = db
            .execute_unprepared("INSERT INTO missing (name) VALUES ('a')")
            .await
            .expect_err("no table");
        assert_eq!(db_error(err).code, ErrorCode::Internal);
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://bf:s3cret@db:5432/bf"),
            "postgres://bf:***@db:5432/bf"
        );
        assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }
}
