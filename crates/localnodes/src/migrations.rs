use bootfleet_store::sea_orm_migration::prelude::*;

struct CreateLocalnodes;

impl MigrationName for CreateLocalnodes {
    fn name(&self) -> &str {
        "m20261123_000001_create_localnodes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateLocalnodes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let c = Alias::new;
        manager
            .create_table(
                Table::create()
                    .table(c("localnodes"))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(c("id"))
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(c("ip")).string_len(45).not_null())
                    .col(ColumnDef::new(c("artifact_id")).string_len(64).not_null())
                    .col(ColumnDef::new(c("mac")).string_len(17).not_null())
                    .col(ColumnDef::new(c("hostname")).string_len(253).not_null())
                    .col(ColumnDef::new(c("pingable")).boolean().not_null())
                    .col(ColumnDef::new(c("last_seen")).big_integer().not_null())
                    .col(ColumnDef::new(c("created_at")).big_integer().not_null())
                    .col(ColumnDef::new(c("updated_at")).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // One row per address per site: registering again updates it.
        manager
            .create_index(
                Index::create()
                    .name("localnodes_ip_artifact_id")
                    .table(c("localnodes"))
                    .col(c("ip"))
                    .col(c("artifact_id"))
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new("localnodes"))
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(Debug)]
pub struct LocalnodesMigrator;

#[async_trait::async_trait]
impl MigratorTrait for LocalnodesMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateLocalnodes)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("localnodes_migrations").into_iden()
    }
}
