use bootfleet_service_kit::Schema;
use bootfleet_store::schema::{create_tables, RegistryTable};
use bootfleet_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Sshkeys {
    Table,
    Text,
    ArtifactId,
    Algorithm,
    Fingerprint,
    Comment,
}

/// The tables of the `sshkeys` service.
pub(crate) static SCHEMA: Schema = Schema::new::<SshkeysMigrator>(&["sshkeys"]);

bootfleet_store::migrator!(pub SshkeysMigrator, "sshkeys_migrations", vec![create_tables(
    "m20261123_000001_create_sshkeys",
    vec![RegistryTable::new(Sshkeys::Table)
        .col(ColumnDef::new(Sshkeys::Text).text().not_null())
        .col(
            ColumnDef::new(Sshkeys::ArtifactId)
                .string_len(64)
                .not_null(),
        )
        .col(ColumnDef::new(Sshkeys::Algorithm).string_len(64).not_null())
        .col(
            ColumnDef::new(Sshkeys::Fingerprint)
                .string_len(128)
                .not_null(),
        )
        .col(ColumnDef::new(Sshkeys::Comment).text().not_null())
        // One registration of a key per site.
        .index(
            "idx_sshkeys_site_fingerprint",
            true,
            [Sshkeys::ArtifactId, Sshkeys::Fingerprint],
        )],
)]);
