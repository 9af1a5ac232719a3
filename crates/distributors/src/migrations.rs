use bootfleet_store::sea_orm_migration::prelude::*;

struct CreateDistributors;

impl MigrationName for CreateDistributors {
    fn name(&self) -> &str {
        "m20261123_000001_create_distributors"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateDistributors {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let c = Alias::new;
        manager
            .create_table(
                Table::create()
                    .table(c("distributors"))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(c("id"))
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(c("artifact_id"))
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(c("hostname")).string_len(255).not_null())
                    .col(ColumnDef::new(c("version")).string_len(255).not_null())
                    .col(ColumnDef::new(c("interfaces")).text().not_null())
                    .col(ColumnDef::new(c("switched_on")).boolean().not_null())
                    .col(ColumnDef::new(c("serving")).boolean().not_null())
                    .col(ColumnDef::new(c("last_seen")).big_integer().not_null())
                    .col(ColumnDef::new(c("dhcp_answered")).big_integer().not_null())
                    .col(ColumnDef::new(c("tftp_completed")).big_integer().not_null())
                    .col(ColumnDef::new(c("created_at")).big_integer().not_null())
                    .col(ColumnDef::new(c("updated_at")).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new("distributors"))
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

/// The operator's configuration and what the distributor said it serves, both as protobuf
/// (`DistributorConfig`, `DistributorConfigApplied`); empty until configured.
struct AddConfig;

impl MigrationName for AddConfig {
    fn name(&self) -> &str {
        "m20261123_000002_add_distributor_config"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddConfig {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["config", "boot_files"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("distributors"))
                        .add_column(
                            ColumnDef::new(Alias::new(column))
                                .binary()
                                .not_null()
                                .default(Vec::<u8>::new()),
                        )
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["config", "boot_files"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("distributors"))
                        .drop_column(Alias::new(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct DistributorsMigrator;

#[async_trait::async_trait]
impl MigratorTrait for DistributorsMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateDistributors), Box::new(AddConfig)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("distributors_migrations").into_iden()
    }
}
