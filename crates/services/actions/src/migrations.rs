//! The `actions` service's tables: groups, commands, runs and each run's machines. Lists are
//! JSON text (members, variants, a selector).

use bootfleet_service_kit::Schema;
use bootfleet_store::schema::{column, create_tables, RegistryColumn, RegistryTable};
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

/// A name of the command library or a group: `varchar(64)`.
fn name(name: impl IntoIden) -> ColumnDef {
    column::string(name, 64)
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
            .col(name(ActionGroups::Name))
            .col(column::text(ActionGroups::Description))
            .col(column::text(ActionGroups::Members))
            .col(column::text(ActionGroups::Selector))
            .index("idx_action_groups_name", true, [ActionGroups::Name]),
        RegistryTable::new(ActionCommands::Table)
            .col(name(ActionCommands::Name))
            .col(column::text(ActionCommands::Summary))
            .col(column::text(ActionCommands::Description))
            .col(column::text(ActionCommands::Script))
            .col(column::text(ActionCommands::Variants))
            .col(column::boolean(ActionCommands::BuiltIn).default(false))
            .index("idx_action_commands_name", true, [ActionCommands::Name]),
        RegistryTable::new(ActionRuns::Table)
            .col(name(ActionRuns::Command))
            .col(column::text(ActionRuns::Actor))
            .col(column::string(ActionRuns::Status, 16))
            .col(column::optional_big_integer(ActionRuns::FinishedAt))
            .index(
                "idx_action_runs_created_at",
                false,
                [RegistryColumn::CreatedAt],
            ),
        RegistryTable::new(ActionRunMachines::Table)
            .col(column::string(ActionRunMachines::RunId, 36))
            .col(column::integer(ActionRunMachines::Position))
            .col(column::string(ActionRunMachines::MachineId, 36))
            .col(column::text(ActionRunMachines::Machine))
            .col(name(ActionRunMachines::Variant))
            .col(column::string(ActionRunMachines::Status, 16))
            .col(column::optional_integer(ActionRunMachines::ExitCode))
            .col(column::optional_text(ActionRunMachines::Error))
            .col(column::optional_text(ActionRunMachines::PowerState))
            .col(column::text(ActionRunMachines::Output))
            .col(column::boolean(ActionRunMachines::Truncated).default(false))
            .col(column::optional_big_integer(ActionRunMachines::FinishedAt))
            .index(
                "idx_action_run_machines_run",
                true,
                [ActionRunMachines::RunId, ActionRunMachines::Position],
            ),
        RegistryTable::new(ActionHostKeys::Table).col(column::text(ActionHostKeys::HostKey)),
    ],
)]);
