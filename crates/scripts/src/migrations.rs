//! Each service has its own migration table, so services can share one database (the
//! laptop default) or have one each (production) without stepping on each other.

use bootfleet_store::sea_orm_migration::prelude::*;

/// Creates text tables: `id` (UUID as text), `text`, `created_at`, `updated_at` (unix ms).
struct CreateTextTables {
    name: &'static str,
    tables: &'static [&'static str],
}

impl MigrationName for CreateTextTables {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTextTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables {
            manager
                .create_table(
                    Table::create()
                        .table(Alias::new(*table))
                        .if_not_exists()
                        .col(
                            ColumnDef::new(Alias::new("id"))
                                .string_len(36)
                                .not_null()
                                .primary_key(),
                        )
                        .col(ColumnDef::new(Alias::new("text")).text().not_null())
                        .col(
                            ColumnDef::new(Alias::new("created_at"))
                                .big_integer()
                                .not_null(),
                        )
                        .col(
                            ColumnDef::new(Alias::new("updated_at"))
                                .big_integer()
                                .not_null(),
                        )
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name(format!("idx_{table}_created_at"))
                        .table(Alias::new(*table))
                        .col(Alias::new("created_at"))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables {
            manager
                .drop_table(
                    Table::drop()
                        .table(Alias::new(*table))
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct MainscriptsMigrator;

#[async_trait::async_trait]
impl MigratorTrait for MainscriptsMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateTextTables {
            name: "m20261123_000001_create_mainscripts_subscripts",
            tables: &["mainscripts", "subscripts"],
        })]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("mainscripts_migrations").into_iden()
    }
}

#[derive(Debug)]
pub struct KickstartsMigrator;

#[async_trait::async_trait]
impl MigratorTrait for KickstartsMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateTextTables {
            name: "m20261123_000001_create_kickstarts_boot_scripts",
            tables: &["kickstarts", "prebootscripts", "postbootscripts"],
        })]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("kickstarts_migrations").into_iden()
    }
}
