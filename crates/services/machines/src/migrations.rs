use bootfleet_store::schema::{add_columns, column, create_tables, RegistryTable};
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
                .col(column::string(Machines::Mac, 17))
                .col(column::optional_string(Machines::Name, 63))
                .col(column::string(Machines::ArtifactId, 64))
                .col(column::string(Machines::Firmware, 8))
                .col(column::string(Machines::Ip, 45))
                .col(column::text(Machines::Ranks))
                .col(column::text(Machines::Groups))
                .col(column::text(Machines::Metadata))
                .col(column::string(Machines::Profile, 64))
                .col(column::string(Machines::State, 16))
                .col(column::text(Machines::Inventory))
                .index("machines_mac", true, [Machines::Mac])
                // NULL names (no name) do not collide, on SQLite and PostgreSQL alike.
                .index(
                    "machines_artifact_id_name",
                    true,
                    [Machines::ArtifactId, Machines::Name],
                ),
            RegistryTable::new(MachineHistory::Table)
                .col(column::string(MachineHistory::MachineId, 36))
                .col(column::string(MachineHistory::FromState, 16))
                .col(column::string(MachineHistory::ToState, 16))
                .col(column::text(MachineHistory::Reason))
                .col(column::string(MachineHistory::Actor, 128))
                .col(column::big_integer(MachineHistory::At))
                .index(
                    "machine_history_machine_id",
                    false,
                    [MachineHistory::MachineId],
                ),
            RegistryTable::new(MachineProfiles::Table)
                .col(column::string(MachineProfiles::Name, 64))
                .col(column::text(MachineProfiles::IpxeTemplate))
                .col(column::optional_text(MachineProfiles::RescueTemplate))
                .col(column::text(MachineProfiles::Templates))
                .index("machine_profiles_name", true, [MachineProfiles::Name]),
            RegistryTable::new(MachineSites::Table)
                .col(column::string(MachineSites::ArtifactId, 64))
                .col(column::string(MachineSites::UnknownMacs, 16))
                .col(column::optional_string(MachineSites::DiscoveryProfile, 64))
                .index(
                    "machine_sites_artifact_id",
                    true,
                    [MachineSites::ArtifactId],
                ),
            RegistryTable::new(MachineEvents::Table)
                .col(column::string(MachineEvents::Mac, 17))
                .col(column::string(MachineEvents::ArtifactId, 64))
                .col(column::string(MachineEvents::Kind, 32))
                .col(column::text(MachineEvents::Detail))
                .col(column::big_integer(MachineEvents::At))
                .index(
                    "machine_events_mac_at",
                    false,
                    [MachineEvents::Mac, MachineEvents::At],
                ),
            RegistryTable::new(MachineKeys::Table).col(column::string(MachineKeys::Secret, 128)),
        ],
    ),
    add_columns(
        "m20261203_000002_machine_bmc",
        Machines::Table,
        vec![
            column::string(Machines::BmcProtocol, 8).default(""),
            column::string(Machines::BmcAddress, 300).default(""),
            column::string(Machines::BmcUsername, 64).default(""),
            column::text(Machines::BmcPassword).default(""),
            column::text(Machines::BmcCaCertificate).default(""),
            column::boolean(Machines::BmcInsecure).default(false),
            column::string(Machines::BmcSystemId, 128).default(""),
        ],
    ),
]);
