use bootfleet_store::sea_orm_migration::prelude::*;

struct CreateSshkeys;

impl MigrationName for CreateSshkeys {
    fn name(&self) -> &str {
        "m20261123_000001_create_sshkeys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSshkeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let t = || Alias::new("sshkeys");
        let c = Alias::new;
        manager
            .create_table(
                Table::create()
                    .table(t())
                    .if_not_exists()
                    .col(
                        ColumnDef::new(c("id"))
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(c("text")).text().not_null())
                    .col(ColumnDef::new(c("artifact_id")).string_len(64).not_null())
                    .col(ColumnDef::new(c("algorithm")).string_len(64).not_null())
                    .col(ColumnDef::new(c("fingerprint")).string_len(128).not_null())
                    .col(ColumnDef::new(c("comment")).text().not_null())
                    .col(ColumnDef::new(c("created_at")).big_integer().not_null())
                    .col(ColumnDef::new(c("updated_at")).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // One registration of a key per site.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .unique()
                    .name("idx_sshkeys_site_fingerprint")
                    .table(t())
                    .col(c("artifact_id"))
                    .col(c("fingerprint"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new("sshkeys"))
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(Debug)]
pub struct SshkeysMigrator;

#[async_trait::async_trait]
impl MigratorTrait for SshkeysMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateSshkeys)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("sshkeys_migrations").into_iden()
    }
}
