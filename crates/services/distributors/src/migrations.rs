use bootfleet_service_kit::Schema;
use bootfleet_store::schema::{add_columns, create_tables, RegistryTable};
use bootfleet_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Distributors {
    Table,
    ArtifactId,
    Hostname,
    Version,
    Interfaces,
    SwitchedOn,
    Serving,
    LastSeen,
    DhcpAnswered,
    TftpCompleted,
    /// The operator's configuration (`DistributorConfig` as protobuf); empty until configured.
    Config,
    /// What the distributor said it serves (`DistributorConfigApplied` as protobuf).
    BootFiles,
}

/// The tables of the `distributors` service.
pub(crate) static SCHEMA: Schema = Schema::new::<DistributorsMigrator>(&["distributors"]);

bootfleet_store::migrator!(pub DistributorsMigrator, "distributors_migrations", {
    use Distributors as D;
    vec![
        create_tables(
            "m20261123_000001_create_distributors",
            vec![RegistryTable::new(D::Table)
                .col(
                    ColumnDef::new(D::ArtifactId)
                        .string_len(64)
                        .not_null()
                        .unique_key(),
                )
                .col(ColumnDef::new(D::Hostname).string_len(255).not_null())
                .col(ColumnDef::new(D::Version).string_len(255).not_null())
                .col(ColumnDef::new(D::Interfaces).text().not_null())
                .col(ColumnDef::new(D::SwitchedOn).boolean().not_null())
                .col(ColumnDef::new(D::Serving).boolean().not_null())
                .col(ColumnDef::new(D::LastSeen).big_integer().not_null())
                .col(ColumnDef::new(D::DhcpAnswered).big_integer().not_null())
                .col(ColumnDef::new(D::TftpCompleted).big_integer().not_null())],
        ),
        add_columns(
            "m20261123_000002_add_distributor_config",
            D::Table,
            vec![
                ColumnDef::new(D::Config)
                    .binary()
                    .not_null()
                    .default(Vec::<u8>::new()),
                ColumnDef::new(D::BootFiles)
                    .binary()
                    .not_null()
                    .default(Vec::<u8>::new()),
            ],
        ),
    ]
});
