//! The machines' timeline events, written with group commit.
//!
//! Every node-facing fetch (a machine's iPXE script, each rendered template) and every boot event
//! lands in the timeline before it is answered, so a boot storm is a storm of small writes. One
//! transaction each made SQLite sync its log once per write (twice: the insert and the prune), and
//! a node's fetch waited behind every other node's sync. Here one task takes whatever events are
//! waiting, writes them (and prunes their MACs) in one transaction, and then answers each caller:
//! a caller still hears "recorded" only once its event is committed, but a storm pays one sync per
//! batch instead of one per event. A lone event costs one transaction, as before.

use std::collections::BTreeSet;

use bootfleet_api::ApiError;
use bootfleet_store::sea_orm::sea_query::{Alias, Expr, Order, Query};
use bootfleet_store::sea_orm::ConnectionTrait;
use bootfleet_store::{db_error, now_ms, Database};
use tokio::sync::{mpsc, oneshot};

use crate::MAX_EVENTS_PER_MAC;

/// Events written in one transaction at most (8 bound values each: well inside SQLite's and
/// PostgreSQL's limits on one statement).
const MAX_BATCH: usize = 256;
/// Events waiting for the writer at most; a caller past that waits for room.
const QUEUE: usize = 4096;

/// One timeline event, as stored.
#[derive(Debug)]
pub struct Event {
    pub mac: String,
    pub site: String,
    pub kind: String,
    /// A JSON object of strings.
    pub detail: String,
    pub at: i64,
}

struct Pending {
    event: Event,
    /// When it was handed over (its `created_at`, as if written alone).
    at: i64,
    done: oneshot::Sender<Result<(), ApiError>>,
}

/// The handle callers record through; the writer task ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct EventLog {
    queue: mpsc::Sender<Pending>,
}

impl EventLog {
    /// Starts the writer on the current runtime.
    pub fn start(db: Database) -> EventLog {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(db, waiting));
        EventLog { queue }
    }

    /// Writes `event`; returns once it is committed (or the write failed).
    pub async fn record(&self, event: Event) -> Result<(), ApiError> {
        let (done, written) = oneshot::channel();
        self.queue
            .send(Pending {
                event,
                at: now_ms(),
                done,
            })
            .await
            .map_err(|_| ApiError::unavailable("the timeline writer has stopped"))?;
        written
            .await
            .map_err(|_| ApiError::internal("the timeline writer stopped before writing"))?
    }
}

async fn write_batches(db: Database, mut waiting: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = write(&db, &batch).await;
        if let Err(e) = &outcome {
            tracing::warn!(events = batch.len(), error = %e.message, "timeline events not written");
        }
        for pending in batch.drain(..) {
            // A caller that gave up (its request timed out) no longer listens; nothing to do.
            let _ = pending.done.send(outcome.clone());
        }
    }
}

/// Inserts the batch and keeps the newest [`MAX_EVENTS_PER_MAC`] of each MAC it touched, in one
/// transaction.
async fn write(db: &Database, batch: &[Pending]) -> Result<(), ApiError> {
    let mut insert = Query::insert();
    insert.into_table(Alias::new("machine_events")).columns(
        [
            "id",
            "mac",
            "artifact_id",
            "kind",
            "detail",
            "at",
            "created_at",
            "updated_at",
        ]
        .map(Alias::new),
    );
    for Pending { event: e, at, .. } in batch {
        insert.values_panic([
            uuid::Uuid::new_v4().to_string().into(),
            e.mac.clone().into(),
            e.site.chars().take(64).collect::<String>().into(),
            e.kind.chars().take(32).collect::<String>().into(),
            e.detail.clone().into(),
            e.at.into(),
            (*at).into(),
            (*at).into(),
        ]);
    }
    let backend = db.get_database_backend();
    let txn = db.begin().await.map_err(db_error)?;
    txn.execute(backend.build(&insert))
        .await
        .map_err(db_error)?;
    let macs: BTreeSet<&str> = batch.iter().map(|p| p.event.mac.as_str()).collect();
    for mac in macs {
        let mut newest = Query::select();
        newest
            .column(Alias::new("id"))
            .from(Alias::new("machine_events"))
            .and_where(Expr::col(Alias::new("mac")).eq(mac))
            .order_by(Alias::new("at"), Order::Desc)
            .order_by(Alias::new("created_at"), Order::Desc)
            .limit(MAX_EVENTS_PER_MAC);
        let mut prune = Query::delete();
        prune
            .from_table(Alias::new("machine_events"))
            .and_where(Expr::col(Alias::new("mac")).eq(mac))
            .and_where(Expr::col(Alias::new("id")).not_in_subquery(newest));
        txn.execute(backend.build(&prune)).await.map_err(db_error)?;
    }
    txn.commit().await.map_err(db_error)
}

#[cfg(test)]
mod tests {
    use bootfleet_store::sea_orm::{FromQueryResult, Statement};

    use super::*;

    #[derive(Debug, FromQueryResult)]
    struct Row {
        mac: String,
        at: i64,
    }

    async fn rows(db: &Database) -> Vec<Row> {
        let backend = db.get_database_backend();
        Row::find_by_statement(Statement::from_string(
            backend,
            "SELECT mac, at FROM machine_events ORDER BY mac, at",
        ))
        .all(db)
        .await
        .expect("select")
    }

    fn event(mac: &str, at: i64) -> Event {
        Event {
            mac: mac.to_owned(),
            site: "site-1".to_owned(),
            kind: "template_fetched".to_owned(),
            detail: "{}".to_owned(),
            at,
        }
    }

    /// Events recorded at once are each committed before their caller hears so, and each MAC
    /// keeps only its newest `MAX_EVENTS_PER_MAC` however the events were batched.
    #[tokio::test]
    async fn concurrent_events_are_all_written_and_each_mac_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/machines.db?mode=rwc", dir.path().display());
        let db = bootfleet_store::connect(&url).await.expect("connect");
        bootfleet_store::migrate::<crate::MachinesMigrator>(&db)
            .await
            .expect("migrate");
        let log = EventLog::start(db.clone());

        // One event alone: readable as soon as `record` returns.
        log.record(event("52:54:00:00:00:02", 1))
            .await
            .expect("record");
        assert_eq!(rows(&db).await.len(), 1);

        let many = i64::try_from(MAX_EVENTS_PER_MAC).expect("small") + 100;
        let records = (1..=many).map(|i| {
            let log = log.clone();
            async move { log.record(event("52:54:00:00:00:01", i)).await }
        });
        let others = (2..=20).map(|i| {
            let log = log.clone();
            async move { log.record(event("52:54:00:00:00:02", i)).await }
        });
        let (a, b) = tokio::join!(
            futures_util::future::join_all(records),
            futures_util::future::join_all(others)
        );
        assert!(a.iter().chain(&b).all(Result::is_ok), "{a:?} {b:?}");

        let rows = rows(&db).await;
        let first: Vec<i64> = rows
            .iter()
            .filter(|r| r.mac == "52:54:00:00:00:01")
            .map(|r| r.at)
            .collect();
        let kept = i64::try_from(MAX_EVENTS_PER_MAC).expect("small");
        assert_eq!(
            u64::try_from(first.len()).expect("small"),
            MAX_EVENTS_PER_MAC,
            "bounded per MAC"
        );
        assert_eq!(first[0], many - kept + 1, "the oldest went");
        assert_eq!(first.last(), Some(&many));
        let second = rows.iter().filter(|r| r.mac == "52:54:00:00:00:02").count();
        assert_eq!(second, 20, "another MAC's events are not pruned");
    }

    /// A batch that cannot be written fails every caller in it, and nothing of it is kept.
    #[tokio::test]
    async fn a_failed_batch_fails_its_callers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/machines.db?mode=rwc", dir.path().display());
        let db = bootfleet_store::connect(&url).await.expect("connect");
        // No migrations: the table is missing, so the insert fails.
        let log = EventLog::start(db.clone());
        let (a, b) = tokio::join!(
            log.record(event("52:54:00:00:00:01", 1)),
            log.record(event("52:54:00:00:00:02", 2))
        );
        assert!(a.is_err() && b.is_err(), "{a:?} {b:?}");
    }
}
