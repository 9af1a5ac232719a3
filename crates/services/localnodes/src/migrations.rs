use bootfleet_service_kit::Schema;
use bootfleet_store::schema::{add_columns, column, create_tables, RegistryTable};
use bootfleet_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Localnodes {
    Table,
    Ip,
    ArtifactId,
    Mac,
    Hostname,
    Pingable,
    LastSeen,
    /// The node's SSH host key, recorded on first contact (trust on first use) and checked after.
    HostKey,
}

/// The tables of the `localnodes` service.
pub(crate) static SCHEMA: Schema = Schema::new::<LocalnodesMigrator>(&["localnodes"]);

bootfleet_store::migrator!(pub LocalnodesMigrator, "localnodes_migrations", {
    use Localnodes as N;
    vec![
        create_tables(
            "m20261123_000001_create_localnodes",
            vec![RegistryTable::new(N::Table)
                .col(column::string(N::Ip, 45))
                .col(column::string(N::ArtifactId, 64))
                .col(column::string(N::Mac, 17))
                .col(column::string(N::Hostname, 253))
                .col(column::boolean(N::Pingable))
                .col(column::big_integer(N::LastSeen))
                // One row per address per site: registering again updates it.
                .index("localnodes_ip_artifact_id", true, [N::Ip, N::ArtifactId])],
        ),
        add_columns(
            "m20261123_000002_add_localnode_host_key",
            N::Table,
            vec![column::text(N::HostKey).default("")],
        ),
    ]
});
