//! The database handle the services use: reads on a pool, and on SQLite every write of the
//! process through one connection of its own.
//!
//! Why: SQLite lets one connection write at a time. When several pooled connections write at
//! once, all but one find the lock taken and sleep in SQLite's busy handler, in steps of 1, 2, 5,
//! 10 ... 100 ms, however soon the lock is free again; 64 concurrent creates through the gateway
//! measured a p99 of 0.5 s that way (BENCHMARKS.md, "Rendered templates"). With one writing
//! connection, writers queue for it in the pool instead and each starts as soon as the previous
//! one finishes. Reads stay parallel (WAL), and a read that follows a write sees it (the write
//! has committed before its call returns). Other processes writing the same file still meet the
//! busy handler, as before; PostgreSQL needs none of this, so there both are the same pool.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, TransactionTrait,
};

/// A service's database (see the module's comment).
#[derive(Clone, Debug)]
pub struct Database {
    reads: DatabaseConnection,
    /// SQLite files only: a pool of one connection for every write and transaction.
    writes: Option<DatabaseConnection>,
}

impl Database {
    pub(crate) fn new(reads: DatabaseConnection, writes: Option<DatabaseConnection>) -> Database {
        Database { reads, writes }
    }

    /// The connection writes go through (on SQLite a pool of one), for what needs a sea-orm
    /// connection itself, such as a migrator's `down`.
    pub fn writer(&self) -> &DatabaseConnection {
        self.writes.as_ref().unwrap_or(&self.reads)
    }

    /// The pool reads go through (what migrations copy their connect options from).
    pub(crate) fn reads(&self) -> &DatabaseConnection {
        &self.reads
    }

    /// A transaction, on the writing connection: it holds that connection until it ends, so
    /// inside it use the transaction, never this handle, for writes.
    pub async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        self.writer().begin().await
    }

    /// Closes the pools.
    pub async fn close(self) -> Result<(), DbErr> {
        if let Some(writes) = self.writes {
            writes.close().await?;
        }
        self.reads.close().await
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Database {
    fn get_database_backend(&self) -> DbBackend {
        self.reads.get_database_backend()
    }

    async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.writer().execute(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.writer().execute_unprepared(sql).await
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.reads.query_one(stmt).await
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.reads.query_all(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.reads.support_returning()
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::FromQueryResult;

    use super::*;

    #[derive(Debug, FromQueryResult)]
    struct Count {
        n: i64,
    }

    /// The rows of table `t`, read through the readers' pool.
    async fn rows(db: &Database) -> i64 {
        Count::find_by_statement(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM t",
        ))
        .one(db)
        .await
        .expect("count")
        .map_or(0, |c| c.n)
    }

    fn max_connections(db: &DatabaseConnection) -> u32 {
        db.get_sqlite_connection_pool()
            .options()
            .get_max_connections()
    }

    /// A SQLite file gets one writing connection beside its pool of readers; 100 writes at once
    /// all land (they queue for that connection) and a read right after sees every one.
    #[tokio::test]
    async fn a_sqlite_file_writes_through_one_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
        let db = crate::connect(&url).await.expect("connect");
        assert_eq!(max_connections(db.writer()), 1);
        assert_eq!(max_connections(db.reads()), 16);
        db.execute_unprepared("CREATE TABLE t (n INTEGER NOT NULL)")
            .await
            .expect("create");
        let writes = (0..100).map(|n| {
            let db = db.clone();
            async move {
                db.execute_unprepared(&format!("INSERT INTO t (n) VALUES ({n})"))
                    .await
            }
        });
        let done = futures_util::future::join_all(writes).await;
        assert!(done.iter().all(Result::is_ok), "{done:?}");
        assert_eq!(rows(&db).await, 100);
        db.close().await.expect("close");
    }

    /// An in-memory database exists once per pool: reads and writes share the one pool.
    #[tokio::test]
    async fn an_in_memory_database_keeps_one_pool() {
        let db = crate::connect("sqlite::memory:").await.expect("connect");
        assert!(std::ptr::eq(db.writer(), db.reads()));
        db.execute_unprepared("CREATE TABLE t (n INTEGER NOT NULL)")
            .await
            .expect("create");
        db.execute_unprepared("INSERT INTO t (n) VALUES (1)")
            .await
            .expect("insert");
        assert_eq!(rows(&db).await, 1);
    }
}
