//! The `actions` service's tables: groups, commands, runs and each run's machines. Lists are
//! JSON text (members, variants, a selector).

use bootfleet_service_kit::Schema;
use bootfleet_store::schema::{create_tables, RegistryColumn, RegistryTable};
use bootfleet_store::sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum ActionGroups {
    Table,
    Name,
    Description,
    /// JSON array of machine ids or names.
    Members,
    /// JSON `GroupMatch`, `""` for none.
    Selector,
}

#[derive(DeriveIden)]
enum ActionCommands {
    Table,
    Name,
    Summary,
    Description,
    Script,
    /// JSON array of `Variant`.
    Variants,
    /// The power commands, put there by the service as it starts.
    BuiltIn,
}

#[derive(DeriveIden)]
enum ActionRuns {
    Table,
    Command,
    Actor,
    /// `running`, `done`.
    Status,
    FinishedAt,
}

/// The SSH host key each machine presented at its first run; `id` is the machine's id.
#[derive(DeriveIden)]
enum ActionHostKeys {
    Table,
    HostKey,
}

#[derive(DeriveIden)]
enum ActionRunMachines {
    Table,
    RunId,
    /// Its place in the run, for a stable order.
    Position,
    MachineId,
    Machine,
    Variant,
    /// `running`, `done`, `failed`.
    Status,
    ExitCode,
    Error,
    PowerState,
    Output,
    Truncated,
    FinishedAt,
}

fn text(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).text().not_null().to_owned()
}

fn name(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column).string_len(64).not_null().to_owned()
}

/// The tables of the `actions` service.
pub(crate) static SCHEMA: Schema = Schema::new::<ActionsMigrator>(&[
    "action_groups",
    "action_commands",
    "action_runs",
    "action_run_machines",
    "action_host_keys",
]);

bootfleet_store::migrator!(pub ActionsMigrator, "actions_migrations", vec![create_tables(
    "m20261203_000001_create_actions",
    vec![
        RegistryTable::new(ActionGroups::Table)
            .col(&mut name(ActionGroups::Name))
            .col(&mut text(ActionGroups::Description))
            .col(&mut text(ActionGroups::Members))
            .col(&mut text(ActionGroups::Selector))
            .index("idx_action_groups_name", true, [ActionGroups::Name]),
        RegistryTable::new(ActionCommands::Table)
            .col(&mut name(ActionCommands::Name))
            .col(&mut text(ActionCommands::Summary))
            .col(&mut text(ActionCommands::Description))
            .col(&mut text(ActionCommands::Script))
            .col(&mut text(ActionCommands::Variants))
            .col(
                ColumnDef::new(ActionCommands::BuiltIn)
                    .boolean()
                    .not_null()
                    .default(false),
            )
            .index("idx_action_commands_name", true, [ActionCommands::Name]),
        RegistryTable::new(ActionRuns::Table)
            .col(&mut name(ActionRuns::Command))
            .col(&mut text(ActionRuns::Actor))
            .col(ColumnDef::new(ActionRuns::Status).string_len(16).not_null())
            .col(ColumnDef::new(ActionRuns::FinishedAt).big_integer().null())
            .index(
                "idx_action_runs_created_at",
                false,
                [RegistryColumn::CreatedAt],
            ),
        RegistryTable::new(ActionRunMachines::Table)
            .col(
                ColumnDef::new(ActionRunMachines::RunId)
                    .string_len(36)
                    .not_null(),
            )
            .col(
                ColumnDef::new(ActionRunMachines::Position)
                    .integer()
                    .not_null(),
            )
            .col(
                ColumnDef::new(ActionRunMachines::MachineId)
                    .string_len(36)
                    .not_null(),
            )
            .col(&mut text(ActionRunMachines::Machine))
            .col(&mut name(ActionRunMachines::Variant))
            .col(
                ColumnDef::new(ActionRunMachines::Status)
                    .string_len(16)
                    .not_null(),
            )
            .col(ColumnDef::new(ActionRunMachines::ExitCode).integer().null())
            .col(ColumnDef::new(ActionRunMachines::Error).text().null())
            .col(ColumnDef::new(ActionRunMachines::PowerState).text().null())
            .col(&mut text(ActionRunMachines::Output))
            .col(
                ColumnDef::new(ActionRunMachines::Truncated)
                    .boolean()
                    .not_null()
                    .default(false),
            )
            .col(
                ColumnDef::new(ActionRunMachines::FinishedAt)
                    .big_integer()
                    .null(),
            )
            .index(
                "idx_action_run_machines_run",
                true,
                [ActionRunMachines::RunId, ActionRunMachines::Position],
            ),
        RegistryTable::new(ActionHostKeys::Table).col(&mut text(ActionHostKeys::HostKey)),
    ],
)]);
