use bootfleet_store::schema::{create_tables, RegistryTable};
use bootfleet_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Artifacts {
    Table,
    Kind,
    Status,
    Progress,
    Error,
    Inputs,
    ContentKey,
    Files,
    Size,
    Embedded,
}

bootfleet_store::migrator!(pub ArtifactsMigrator, "artifacts_migrations", {
    use Artifacts as A;
    vec![create_tables(
        "m20261123_000001_create_artifacts",
        vec![RegistryTable::new(A::Table)
            .col(ColumnDef::new(A::Kind).string_len(16).not_null())
            .col(ColumnDef::new(A::Status).string_len(16).not_null())
            .col(ColumnDef::new(A::Progress).integer().not_null())
            .col(ColumnDef::new(A::Error).text().not_null())
            .col(ColumnDef::new(A::Inputs).text().not_null())
            .col(ColumnDef::new(A::ContentKey).string_len(64).not_null())
            .col(ColumnDef::new(A::Files).text().not_null())
            .col(ColumnDef::new(A::Size).big_integer().not_null())
            .col(ColumnDef::new(A::Embedded).boolean().null())
            // "Is this content built already?" is asked on every create.
            .index("artifacts_content_key", false, [A::ContentKey])],
    )]
});
