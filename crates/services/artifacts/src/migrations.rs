use bootfleet_store::schema::{column, create_tables, RegistryTable};
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
            .col(column::string(A::Kind, 16))
            .col(column::string(A::Status, 16))
            .col(column::integer(A::Progress))
            .col(column::text(A::Error))
            .col(column::text(A::Inputs))
            .col(column::string(A::ContentKey, 64))
            .col(column::text(A::Files))
            .col(column::big_integer(A::Size))
            .col(column::optional_boolean(A::Embedded))
            // "Is this content built already?" is asked on every create.
            .index("artifacts_content_key", false, [A::ContentKey])],
    )]
});
