//! Building blocks for the services' migrations. Every registry table has the same key and
//! timestamps, and a migration that creates tables or adds columns is data rather than a new
//! type with its own `up` and `down`.

use sea_orm_migration::prelude::*;

/// The columns every registry table has, around its own.
#[derive(Debug, DeriveIden)]
pub enum RegistryColumn {
    /// A UUID as text, chosen by the gateway (so a retried create finds the row it made).
    Id,
    /// Unix milliseconds.
    CreatedAt,
    /// Unix milliseconds.
    UpdatedAt,
}

/// Columns by kind, `NOT NULL` unless the name says `optional`: a table reads one line a
/// column (`.col(column::string(Machines::Mac, 17))`). A default goes on the result
/// (`column::boolean(C).default(false)`).
pub mod column {
    use sea_orm_migration::prelude::*;

    /// `varchar(len)`.
    pub fn string(name: impl IntoIden, len: u32) -> ColumnDef {
        ColumnDef::new(name).string_len(len).not_null().to_owned()
    }

    /// `varchar(len)`, `NULL` allowed.
    pub fn optional_string(name: impl IntoIden, len: u32) -> ColumnDef {
        ColumnDef::new(name).string_len(len).null().to_owned()
    }

    /// `kind / optional_kind`: the two constructors of a column type without arguments.
    macro_rules! kinds {
        ($($kind:ident / $optional:ident),+) => {$(
            #[doc = concat!("`", stringify!($kind), "`.")]
            pub fn $kind(name: impl IntoIden) -> ColumnDef {
                ColumnDef::new(name).$kind().not_null().to_owned()
            }

            #[doc = concat!("`", stringify!($kind), "`, `NULL` allowed.")]
            pub fn $optional(name: impl IntoIden) -> ColumnDef {
                ColumnDef::new(name).$kind().null().to_owned()
            }
        )+};
    }

    // `big_integer` holds Unix milliseconds and counts.
    kinds!(
        text / optional_text,
        integer / optional_integer,
        big_integer / optional_big_integer,
        boolean / optional_boolean,
        binary / optional_binary
    );
}

/// What [`RegistryTable::col`] and [`add_columns`] take: a column, or one borrowed from a
/// builder call such as `.default(..)`.
pub trait IntoColumn {
    fn into_column(self) -> ColumnDef;
}

impl IntoColumn for ColumnDef {
    fn into_column(self) -> ColumnDef {
        self
    }
}

impl IntoColumn for &mut ColumnDef {
    fn into_column(self) -> ColumnDef {
        self.to_owned()
    }
}

/// A registry table: `id` first, its own columns, then `created_at` and `updated_at`.
#[derive(Debug)]
pub struct RegistryTable {
    name: DynIden,
    columns: Vec<ColumnDef>,
    indexes: Vec<IndexCreateStatement>,
}

impl RegistryTable {
    pub fn new(name: impl IntoIden) -> Self {
        RegistryTable {
            name: name.into_iden(),
            columns: Vec::new(),
            indexes: Vec::new(),
        }
    }

    /// A column of the table: one of [`column`]'s, or a `ColumnDef` of its own.
    pub fn col(mut self, column: impl IntoColumn) -> Self {
        self.columns.push(column.into_column());
        self
    }

    /// An index over `columns`. Index names are part of the schema of databases already made,
    /// so each is spelled out rather than derived.
    pub fn index<C: IntoIden>(
        mut self,
        name: &str,
        unique: bool,
        columns: impl IntoIterator<Item = C>,
    ) -> Self {
        let mut index = Index::create();
        index.if_not_exists().name(name).table(self.name.clone());
        if unique {
            index.unique();
        }
        for column in columns {
            index.col(column.into_iden());
        }
        self.indexes.push(index);
        self
    }

    fn create(&self) -> TableCreateStatement {
        let mut table = Table::create();
        table
            .table(self.name.clone())
            .if_not_exists()
            .col(column::string(RegistryColumn::Id, 36).primary_key());
        for own in &self.columns {
            table.col(own.clone());
        }
        table
            .col(column::big_integer(RegistryColumn::CreatedAt))
            .col(column::big_integer(RegistryColumn::UpdatedAt))
            .to_owned()
    }
}

/// A migration that creates registry tables and their indexes, and drops them on the way down.
#[derive(Debug)]
pub struct CreateTables {
    name: &'static str,
    tables: Vec<RegistryTable>,
}

/// See [`CreateTables`].
pub fn create_tables(name: &'static str, tables: Vec<RegistryTable>) -> Box<dyn MigrationTrait> {
    Box::new(CreateTables { name, tables })
}

/// Both migrations here are named by their `name` field.
macro_rules! named_by_field {
    ($($migration:ty),+) => {
        $(impl MigrationName for $migration {
            fn name(&self) -> &str {
                self.name
            }
        })+
    };
}

named_by_field!(CreateTables, AddColumns);

#[async_trait::async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in &self.tables {
            manager.create_table(table.create()).await?;
            for index in &table.indexes {
                manager.create_index(index.clone()).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables.iter().rev() {
            manager
                .drop_table(
                    Table::drop()
                        .table(table.name.clone())
                        .if_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// A migration that adds columns to a table, and drops them on the way down. Each column needs
/// a default, for the rows already there.
#[derive(Debug)]
pub struct AddColumns {
    name: &'static str,
    table: DynIden,
    columns: Vec<ColumnDef>,
}

/// See [`AddColumns`].
pub fn add_columns(
    name: &'static str,
    table: impl IntoIden,
    columns: Vec<impl IntoColumn>,
) -> Box<dyn MigrationTrait> {
    Box::new(AddColumns {
        name,
        table: table.into_iden(),
        columns: columns.into_iter().map(IntoColumn::into_column).collect(),
    })
}

#[async_trait::async_trait]
impl MigrationTrait for AddColumns {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.alter_each(manager, |alter, column| {
            alter.add_column(column.clone());
        })
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.alter_each(manager, |alter, column| {
            alter.drop_column(Alias::new(column.get_column_name()));
        })
        .await
    }
}

impl AddColumns {
    /// One ALTER TABLE of the table per column, `change` saying what it does to the column:
    /// SQLite adds or drops one column per ALTER TABLE.
    async fn alter_each(
        &self,
        manager: &SchemaManager<'_>,
        change: impl Fn(&mut TableAlterStatement, &ColumnDef),
    ) -> Result<(), DbErr> {
        for column in &self.columns {
            let mut alter = Table::alter();
            alter.table(self.table.clone());
            change(&mut alter, column);
            manager.alter_table(alter).await?;
        }
        Ok(())
    }
}

/// Declares a migrator: `struct $name`, whose migrations (`$migrations`, a
/// `Vec<Box<dyn MigrationTrait>>`, usually [`create_tables`] and [`add_columns`] steps) are
/// recorded in the table `$table` (`<service>_migrations`, one per service).
#[macro_export]
macro_rules! migrator {
    ($vis:vis $name:ident, $table:literal, $migrations:expr) => {
        #[derive(Debug)]
        $vis struct $name;

        #[$crate::sea_orm_migration::async_trait::async_trait]
        impl $crate::sea_orm_migration::MigratorTrait for $name {
            fn migrations() -> Vec<Box<dyn $crate::sea_orm_migration::MigrationTrait>> {
                $migrations
            }

            fn migration_table_name() -> $crate::sea_orm::sea_query::DynIden {
                use $crate::sea_orm::sea_query::IntoIden;
                $crate::sea_orm::sea_query::Alias::new($table).into_iden()
            }
        }
    };
}
