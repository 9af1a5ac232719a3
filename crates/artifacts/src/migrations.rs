use bootfleet_store::sea_orm_migration::prelude::*;

struct CreateArtifacts;

impl MigrationName for CreateArtifacts {
    fn name(&self) -> &str {
        "m20261123_000001_create_artifacts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateArtifacts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let c = Alias::new;
        manager
            .create_table(
                Table::create()
                    .table(c("artifacts"))
                    .if_not_exists()
                    .col(
                        ColumnDef::new(c("id"))
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(c("kind")).string_len(16).not_null())
                    .col(ColumnDef::new(c("status")).string_len(16).not_null())
                    .col(ColumnDef::new(c("progress")).integer().not_null())
                    .col(ColumnDef::new(c("error")).text().not_null())
                    .col(ColumnDef::new(c("inputs")).text().not_null())
                    .col(ColumnDef::new(c("content_key")).string_len(64).not_null())
                    .col(ColumnDef::new(c("files")).text().not_null())
                    .col(ColumnDef::new(c("size")).big_integer().not_null())
                    .col(ColumnDef::new(c("embedded")).boolean().null())
                    .col(ColumnDef::new(c("created_at")).big_integer().not_null())
                    .col(ColumnDef::new(c("updated_at")).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        // "Is this content built already?" is asked on every create.
        manager
            .create_index(
                Index::create()
                    .name("artifacts_content_key")
                    .table(c("artifacts"))
                    .col(c("content_key"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new("artifacts"))
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(Debug)]
pub struct ArtifactsMigrator;

#[async_trait::async_trait]
impl MigratorTrait for ArtifactsMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateArtifacts)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("artifacts_migrations").into_iden()
    }
}
