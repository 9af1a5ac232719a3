use bootfleet_service_kit::Schema;
use bootfleet_store::schema::{column, create_tables, RegistryTable};
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
        .col(column::text(Sshkeys::Text))
        .col(column::string(Sshkeys::ArtifactId, 64))
        .col(column::string(Sshkeys::Algorithm, 64))
        .col(column::string(Sshkeys::Fingerprint, 128))
        .col(column::text(Sshkeys::Comment))
        // One registration of a key per site.
        .index(
            "idx_sshkeys_site_fingerprint",
            true,
            [Sshkeys::ArtifactId, Sshkeys::Fingerprint],
        )],
)]);
