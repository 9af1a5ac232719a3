//! Each service has its own migration table, so services can share one database (the
//! laptop default) or have one each (production) without stepping on each other.

use bootfleet_service_kit::Schema;
use bootfleet_store::schema::{column, create_tables, RegistryColumn, RegistryTable};
use bootfleet_store::sea_orm_migration::prelude::*;

/// The text tables (one shape, five tables).
#[derive(Clone, Copy, DeriveIden)]
enum TextTable {
    Mainscripts,
    Subscripts,
    Kickstarts,
    Prebootscripts,
    Postbootscripts,
}

#[derive(DeriveIden)]
enum TextColumn {
    Text,
    Sites,
}

/// Text tables: `id`, `text`, `created_at`, `updated_at`; listed by creation time.
fn text_tables(tables: &[TextTable]) -> Vec<RegistryTable> {
    tables
        .iter()
        .map(|&table| {
            RegistryTable::new(table)
                .col(column::text(TextColumn::Text))
                .index(
                    &format!("idx_{}_created_at", table.to_string()),
                    false,
                    [RegistryColumn::CreatedAt],
                )
        })
        .collect()
}

/// Scripts marked for sites (a JSON array of site ids; `[]`, every site) came after the tables.
fn add_sites(name: &'static str, table: TextTable) -> Box<dyn MigrationTrait> {
    bootfleet_store::schema::add_columns(
        name,
        table,
        vec![column::text(TextColumn::Sites).default("[]")],
    )
}

/// The tables of the `mainscripts` service.
pub(crate) static MAINSCRIPTS_SCHEMA: Schema =
    Schema::new::<MainscriptsMigrator>(&["mainscripts", "subscripts"]);

bootfleet_store::migrator!(pub MainscriptsMigrator, "mainscripts_migrations", vec![
    create_tables(
        "m20261123_000001_create_mainscripts_subscripts",
        text_tables(&[TextTable::Mainscripts, TextTable::Subscripts]),
    ),
    add_sites("m20261204_000001_mainscripts_sites", TextTable::Mainscripts),
    add_sites("m20261204_000002_subscripts_sites", TextTable::Subscripts),
]);

/// The tables of the `kickstarts` service.
pub(crate) static KICKSTARTS_SCHEMA: Schema =
    Schema::new::<KickstartsMigrator>(&["kickstarts", "prebootscripts", "postbootscripts"]);

bootfleet_store::migrator!(pub KickstartsMigrator, "kickstarts_migrations", vec![
    create_tables(
        "m20261123_000001_create_kickstarts_boot_scripts",
        text_tables(&[
            TextTable::Kickstarts,
            TextTable::Prebootscripts,
            TextTable::Postbootscripts,
        ]),
    ),
    add_sites("m20261204_000001_kickstarts_sites", TextTable::Kickstarts),
    add_sites("m20261204_000002_prebootscripts_sites", TextTable::Prebootscripts),
    add_sites("m20261204_000003_postbootscripts_sites", TextTable::Postbootscripts),
]);
