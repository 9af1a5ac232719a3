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

/// The node's SSH host key, recorded on first contact (trust on first use) and checked after.
struct AddHostKey;

impl MigrationName for AddHostKey {
    fn name(&self) -> &str {
        "m20261123_000002_add_localnode_host_key"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddHostKey {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("localnodes"))
                    .add_column(
                        ColumnDef::new(Alias::new("host_key"))
                            .text()
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("localnodes"))
                    .drop_column(Alias::new("host_key"))
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
        vec![Box::new(CreateLocalnodes), Box::new(AddHostKey)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("localnodes_migrations").into_iden()
    }
}
