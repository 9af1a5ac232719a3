//! Migrations on a real PostgreSQL server when several instances start at the same instant
//! (a Deployment's replicas, `bootfleet service` processes restarted together).

use bootfleet_store::schema::{add_columns, create_tables, RegistryTable};
use bootfleet_store::sea_orm::{ConnectionTrait, Statement};
use bootfleet_store::sea_orm_migration::prelude::*;
use bootfleet_testkit::{database_url, Backend};

#[derive(DeriveIden)]
enum Widgets {
    Table,
    Name,
    Colour,
}

// Two steps, as a service's schema grows: a registry table, then a column.
bootfleet_store::migrator!(
    WidgetsMigrator,
    "widgets_migrations",
    vec![
        create_tables(
            "m20261203_000001_create_widgets",
            vec![RegistryTable::new(Widgets::Table)
                .col(ColumnDef::new(Widgets::Name).string().not_null())],
        ),
        add_columns(
            "m20261203_000002_add_colour",
            Widgets::Table,
            vec![ColumnDef::new(Widgets::Colour)
                .string()
                .not_null()
                .default("")],
        ),
    ]
);

/// Without a lock, the instances race to create the migration table and the tables (a unique
/// violation in PostgreSQL's catalog, or "already exists"), and one of them fails to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_migrating_postgresql_at_once_all_start() {
    for round in 0..3 {
        let url = database_url(Backend::Postgres, std::path::Path::new("/nonexistent"));
        let mut pools = Vec::new();
        for _ in 0..6 {
            pools.push(bootfleet_store::connect(&url).await.expect("connect"));
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(pools.len()));
        let runs: Vec<_> = pools
            .iter()
            .cloned()
            .map(|db| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    bootfleet_store::migrate::<WidgetsMigrator>(&db).await
                })
            })
            .collect();
        for (i, run) in runs.into_iter().enumerate() {
            let outcome = run.await.expect("task");
            assert!(outcome.is_ok(), "round {round}, instance {i}: {outcome:?}");
        }
        let db = &pools[0];
        let applied = db
            .query_one(Statement::from_string(
                db.get_database_backend(),
                "SELECT count(*) AS n FROM widgets_migrations",
            ))
            .await
            .expect("count")
            .expect("a row");
        let n: i64 = applied.try_get("", "n").expect("n");
        assert_eq!(n, 2, "each migration recorded once");
        db.execute_unprepared("INSERT INTO widgets (id, name, colour, created_at, updated_at) VALUES ('a', 'b', 'c', 0, 0)")
            .await
            .expect("the migrated table takes a row");
        for db in pools {
            let _ = db.close().await;
        }
    }
}

/// Down undoes the steps in reverse, the added column by an ALTER TABLE of its own, then the
/// table.
#[tokio::test]
async fn down_drops_the_added_column_then_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = bootfleet_store::connect(&database_url(Backend::Sqlite, dir.path()))
        .await
        .expect("connect");
    bootfleet_store::migrate::<WidgetsMigrator>(&db)
        .await
        .expect("up");
    let fails = |sql: &'static str| {
        let db = db.clone();
        async move { db.execute_unprepared(sql).await.is_err() }
    };
    WidgetsMigrator::down(db.writer(), Some(1))
        .await
        .expect("down one step");
    assert!(
        fails("SELECT colour FROM widgets").await,
        "the column is dropped"
    );
    assert!(!fails("SELECT name FROM widgets").await, "the table stays");
    WidgetsMigrator::down(db.writer(), None)
        .await
        .expect("down");
    assert!(
        fails("SELECT name FROM widgets").await,
        "the table is dropped"
    );
}
