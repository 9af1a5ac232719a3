use bootfleet_service_kit::Schema;
use bootfleet_store::schema::{add_columns, column, create_tables, RegistryTable};
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
                .col(column::string(D::ArtifactId, 64).unique_key())
                .col(column::string(D::Hostname, 255))
                .col(column::string(D::Version, 255))
                .col(column::text(D::Interfaces))
                .col(column::boolean(D::SwitchedOn))
                .col(column::boolean(D::Serving))
                .col(column::big_integer(D::LastSeen))
                .col(column::big_integer(D::DhcpAnswered))
                .col(column::big_integer(D::TftpCompleted))],
        ),
        add_columns(
            "m20261123_000002_add_distributor_config",
            D::Table,
            vec![
                column::binary(D::Config).default(Vec::<u8>::new()),
                column::binary(D::BootFiles).default(Vec::<u8>::new()),
            ],
        ),
    ]
});
