use bootfleet_store::schema::{add_columns, create_tables, RegistryTable};
use bootfleet_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Machines {
    Table,
    Mac,
    Name,
    ArtifactId,
    Firmware,
    Ip,
    /// JSON arrays and object, as the API shows them.
    Ranks,
    Groups,
    Metadata,
    Profile,
    State,
    /// The last inventory as JSON ("" until one is reported).
    Inventory,
    /// A machine's BMC (protocol "": none). The password is encrypted at rest (ChaCha20-Poly1305
    /// under a key derived from the service's secret, bound to the machine's id), hex.
    BmcProtocol,
    BmcAddress,
    BmcUsername,
    BmcPassword,
    BmcCaCertificate,
    BmcInsecure,
    BmcSystemId,
}

#[derive(DeriveIden)]
enum MachineHistory {
    Table,
    MachineId,
    FromState,
    ToState,
    Reason,
    Actor,
    At,
}

#[derive(DeriveIden)]
enum MachineProfiles {
    Table,
    Name,
    IpxeTemplate,
    RescueTemplate,
    /// JSON object: template name → text.
    Templates,
}

#[derive(DeriveIden)]
enum MachineSites {
    Table,
    ArtifactId,
    UnknownMacs,
    DiscoveryProfile,
}

#[derive(DeriveIden)]
enum MachineEvents {
    Table,
    /// Events are kept by MAC: an unknown MAC's events become its machine's when it gets one.
    Mac,
    ArtifactId,
    Kind,
    /// JSON object of strings.
    Detail,
    At,
}

#[derive(DeriveIden)]
enum MachineKeys {
    Table,
    /// The HMAC key of machine tokens, hex; made once by the first instance that starts.
    Secret,
}

bootfleet_store::migrator!(pub MachinesMigrator, "machines_migrations", vec![
    create_tables(
        "m20261203_000001_create_machines",
        vec![
            RegistryTable::new(Machines::Table)
                .col(ColumnDef::new(Machines::Mac).string_len(17).not_null())
                .col(ColumnDef::new(Machines::Name).string_len(63).null())
                .col(
                    ColumnDef::new(Machines::ArtifactId)
                        .string_len(64)
                        .not_null(),
                )
                .col(ColumnDef::new(Machines::Firmware).string_len(8).not_null())
                .col(ColumnDef::new(Machines::Ip).string_len(45).not_null())
                .col(ColumnDef::new(Machines::Ranks).text().not_null())
                .col(ColumnDef::new(Machines::Groups).text().not_null())
                .col(ColumnDef::new(Machines::Metadata).text().not_null())
                .col(ColumnDef::new(Machines::Profile).string_len(64).not_null())
                .col(ColumnDef::new(Machines::State).string_len(16).not_null())
                .col(ColumnDef::new(Machines::Inventory).text().not_null())
                .index("machines_mac", true, [Machines::Mac])
                // NULL names (no name) do not collide, on SQLite and PostgreSQL alike.
                .index(
                    "machines_artifact_id_name",
                    true,
                    [Machines::ArtifactId, Machines::Name],
                ),
            RegistryTable::new(MachineHistory::Table)
                .col(
                    ColumnDef::new(MachineHistory::MachineId)
                        .string_len(36)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(MachineHistory::FromState)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(MachineHistory::ToState)
                        .string_len(16)
                        .not_null(),
                )
                .col(ColumnDef::new(MachineHistory::Reason).text().not_null())
                .col(
                    ColumnDef::new(MachineHistory::Actor)
                        .string_len(128)
                        .not_null(),
                )
                .col(ColumnDef::new(MachineHistory::At).big_integer().not_null())
                .index(
                    "machine_history_machine_id",
                    false,
                    [MachineHistory::MachineId],
                ),
            RegistryTable::new(MachineProfiles::Table)
                .col(
                    ColumnDef::new(MachineProfiles::Name)
                        .string_len(64)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(MachineProfiles::IpxeTemplate)
                        .text()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(MachineProfiles::RescueTemplate)
                        .text()
                        .null(),
                )
                .col(ColumnDef::new(MachineProfiles::Templates).text().not_null())
                .index("machine_profiles_name", true, [MachineProfiles::Name]),
            RegistryTable::new(MachineSites::Table)
                .col(
                    ColumnDef::new(MachineSites::ArtifactId)
                        .string_len(64)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(MachineSites::UnknownMacs)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(MachineSites::DiscoveryProfile)
                        .string_len(64)
                        .null(),
                )
                .index(
                    "machine_sites_artifact_id",
                    true,
                    [MachineSites::ArtifactId],
                ),
            RegistryTable::new(MachineEvents::Table)
                .col(ColumnDef::new(MachineEvents::Mac).string_len(17).not_null())
                .col(
                    ColumnDef::new(MachineEvents::ArtifactId)
                        .string_len(64)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(MachineEvents::Kind)
                        .string_len(32)
                        .not_null(),
                )
                .col(ColumnDef::new(MachineEvents::Detail).text().not_null())
                .col(ColumnDef::new(MachineEvents::At).big_integer().not_null())
                .index(
                    "machine_events_mac_at",
                    false,
                    [MachineEvents::Mac, MachineEvents::At],
                ),
            RegistryTable::new(MachineKeys::Table).col(
                ColumnDef::new(MachineKeys::Secret)
                    .string_len(128)
                    .not_null(),
            ),
        ],
    ),
    add_columns(
        "m20261203_000002_machine_bmc",
        Machines::Table,
        vec![
            ColumnDef::new(Machines::BmcProtocol)
                .string_len(8)
                .not_null()
                .default(""),
            ColumnDef::new(Machines::BmcAddress)
                .string_len(300)
                .not_null()
                .default(""),
            ColumnDef::new(Machines::BmcUsername)
                .string_len(64)
                .not_null()
                .default(""),
            ColumnDef::new(Machines::BmcPassword)
                .text()
                .not_null()
                .default(""),
            ColumnDef::new(Machines::BmcCaCertificate)
                .text()
                .not_null()
                .default(""),
            ColumnDef::new(Machines::BmcInsecure)
                .boolean()
                .not_null()
                .default(false),
            ColumnDef::new(Machines::BmcSystemId)
                .string_len(128)
                .not_null()
                .default(""),
        ],
    ),
]);
