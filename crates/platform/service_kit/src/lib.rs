//! The service kit: what a Bootfleet service is, and the one way services start.
//!
//! A service is a name on the bus (its queue group and the stem of its subjects), the tables it
//! owns (a [`Schema`]: its migrations, under its own migration table) and its request handlers.
//! `bootfleet up` and `bootfleet service <name>` both start services from one list (the
//! `bootfleet` crate's `services()`) through [`Services::start`]: every schema is migrated
//! once, then every service answers. `docs/architecture.md` has the recipe for a new one.

use std::collections::HashSet;
use std::fmt::Debug;

use bootfleet_bus::{Bus, BusError, RunningService, ServiceBuilder};
use bootfleet_store::sea_orm_migration::MigratorTrait;
use bootfleet_store::Database;
use bootfleet_store::StoreError;
use futures_util::future::BoxFuture;

/// The tables a service owns and the migrations that make them.
pub struct Schema {
    tables: &'static [&'static str],
    migration_table: fn() -> String,
    migrate: for<'a> fn(&'a Database) -> BoxFuture<'a, Result<(), StoreError>>,
}

impl Schema {
    /// The schema `M` migrates; `tables` names what it creates (a test checks the two agree).
    pub const fn new<M: MigratorTrait + 'static>(tables: &'static [&'static str]) -> Schema {
        Schema {
            tables,
            migration_table: migration_table::<M>,
            migrate: run_migrator::<M>,
        }
    }

    pub fn tables(&self) -> &'static [&'static str] {
        self.tables
    }

    /// Where its migrations are recorded (one table per schema, so services can share a
    /// database or have one each).
    pub fn migration_table(&self) -> String {
        (self.migration_table)()
    }

    pub async fn migrate(&self, db: &Database) -> Result<(), StoreError> {
        (self.migrate)(db).await
    }
}

impl Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("tables", &self.tables)
            .field("migration_table", &self.migration_table())
            .finish()
    }
}

fn migration_table<M: MigratorTrait>() -> String {
    M::migration_table_name().to_string()
}

fn run_migrator<M: MigratorTrait + 'static>(
    db: &Database,
) -> BoxFuture<'_, Result<(), StoreError>> {
    Box::pin(bootfleet_store::migrate::<M>(db))
}

/// What every service gets to build its handlers from.
#[derive(Clone, Debug)]
pub struct Context {
    pub bus: Bus,
    /// Migrated already: a service never migrates itself.
    pub db: Database,
}

/// What a service's routes function gives back: its builder with every handler added.
pub type Routes = Result<ServiceBuilder, StartError>;

type RoutesFn = dyn Fn(ServiceBuilder, Context) -> BoxFuture<'static, Routes> + Send + Sync;

/// A service of the system: its name on the bus, the tables it owns and the function that adds
/// its handlers. Its handlers run in every instance; NATS shares the requests among the
/// instances of one name (its queue group). A service crate exports one function that makes it:
///
/// ```ignore
/// pub fn service() -> Service {
///     Service::new(subjects::WIDGETS, &migrations::SCHEMA, routes)
/// }
///
/// async fn routes(service: ServiceBuilder, ctx: Context) -> Routes { ... }
/// ```
pub struct Service {
    name: &'static str,
    schema: Option<&'static Schema>,
    routes: Box<RoutesFn>,
}

impl Service {
    /// `name` from `bootfleet_api::subjects` (`bootfleet.v1.<name>.*`); `routes` adds the
    /// handlers (and background tasks) to a builder already named `name`, which answers `ping`
    /// on its own. Two services may name the same schema only when one is a worker role of the
    /// other (the builders of `artifacts`).
    pub fn new<F, Fut>(name: &'static str, schema: &'static Schema, routes: F) -> Service
    where
        F: Fn(ServiceBuilder, Context) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Routes> + Send + 'static,
    {
        Service {
            name,
            schema: Some(schema),
            routes: Box::new(move |builder, ctx| Box::pin(routes(builder, ctx))),
        }
    }

    /// The name it answers under on the bus.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The tables it owns, or `None` when it keeps no rows of its own.
    pub fn schema(&self) -> Option<&'static Schema> {
        self.schema
    }
}

impl Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Something the service needs besides its tables (a JetStream stream, say) is not there.
    #[error("{0}")]
    Setup(String),
    #[error("service {service} failed to start: {source}")]
    Service {
        service: &'static str,
        #[source]
        source: Box<StartError>,
    },
}

impl StartError {
    fn of(service: &Service) -> impl FnOnce(StartError) -> StartError + '_ {
        move |e| StartError::Service {
            service: service.name(),
            source: Box::new(e),
        }
    }
}

/// Migrates the schemas of `services`, each once, in list order. Every schema change comes
/// before any serving: no connection serves on a schema it read before another service's
/// migration (see `bootfleet_store::migrate`).
pub async fn migrate(db: &Database, services: &[&Service]) -> Result<(), StartError> {
    let mut done = HashSet::new();
    for service in services {
        let Some(schema) = service.schema() else {
            continue;
        };
        if done.insert(schema.migration_table()) {
            schema
                .migrate(db)
                .await
                .map_err(|e| StartError::of(service)(e.into()))?;
        }
    }
    Ok(())
}

/// `service`'s builder with every handler added, not yet answering: what it would subscribe.
pub async fn build(service: &Service, ctx: &Context) -> Routes {
    (service.routes)(
        ServiceBuilder::new(ctx.bus.clone(), service.name()),
        ctx.clone(),
    )
    .await
    .map_err(StartError::of(service))
}

/// Migrates, then starts every service on the bus. On an error the services already started
/// are stopped again.
pub fn start<'a>(
    ctx: &'a Context,
    services: &'a [&'a Service],
) -> BoxFuture<'a, Result<Vec<RunningService>, StartError>> {
    // Boxed, as the other entry points here: see docs/architecture.md, "Compile time".
    Box::pin(start_all(ctx, services))
}

async fn start_all(
    ctx: &Context,
    services: &[&Service],
) -> Result<Vec<RunningService>, StartError> {
    migrate(&ctx.db, services).await?;
    let mut running = Vec::with_capacity(services.len());
    for &service in services {
        let started = match build(service, ctx).await {
            Ok(builder) => builder
                .start()
                .await
                .map_err(|e| StartError::of(service)(e.into())),
            Err(e) => Err(e),
        };
        match started {
            Ok(s) => running.push(s),
            Err(e) => {
                for s in running {
                    s.stop().await;
                }
                return Err(e);
            }
        }
    }
    Ok(running)
}

/// Migrates and starts one service (a test or benchmark that runs a service alone).
pub fn start_one<'a>(
    ctx: &'a Context,
    service: &'a Service,
) -> BoxFuture<'a, Result<RunningService, StartError>> {
    Box::pin(async move {
        migrate(&ctx.db, &[service]).await?;
        build(service, ctx)
            .await?
            .start()
            .await
            .map_err(|e| StartError::of(service)(e.into()))
    })
}

/// Started services and the database pool they share.
#[derive(Debug)]
pub struct Services {
    running: Vec<RunningService>,
    db: Database,
}

impl Services {
    /// Connects to `database_url`, migrates and starts `services` on `bus`.
    pub fn start<'a>(
        bus: &'a Bus,
        database_url: &'a str,
        services: &'a [&'a Service],
    ) -> BoxFuture<'a, Result<Services, StartError>> {
        Box::pin(async move {
            let db = bootfleet_store::connect(database_url).await?;
            let ctx = Context {
                bus: bus.clone(),
                db: db.clone(),
            };
            match start(&ctx, services).await {
                Ok(running) => Ok(Services { running, db }),
                Err(e) => {
                    let _ = db.close().await;
                    Err(e)
                }
            }
        })
    }

    /// Stops every service (requests under way finish), then closes the database pool while the
    /// runtime still runs: a pool dropped during runtime teardown closes its connections on a
    /// runtime that is gone.
    pub fn stop(self) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // Together: a builder finishing its build must not hold up the others' goodbyes.
            futures_util::future::join_all(self.running.into_iter().map(RunningService::stop))
                .await;
            if let Err(e) = self.db.close().await {
                tracing::warn!(error = %e, "closing the database pool failed");
            }
        })
    }
}

/// Adds one route per `subject => method` to a builder that has state of type `$state`: each
/// handler calls `state.method(request)`. A handler that needs more (the request's site, a
/// second argument) is written out with `.route` instead.
///
/// ```ignore
/// handlers!(service.with_state(Widgets::new(db)), Widgets, [
///     subjects::subject(WIDGETS, Op::Create) => create,
///     subjects::subject(WIDGETS, Op::Get) => get,
/// ])
/// ```
#[macro_export]
macro_rules! handlers {
    ($builder:expr, $state:ty, [$($subject:expr => $method:ident),+ $(,)?]) => {
        $builder$(.route($subject, |state: $state, _, request| async move {
            state.$method(request).await
        }))+
    };
    // Requests of a site's distributor on its per-site subject (`StatefulRoutes::site_route`).
    ($builder:expr, $state:ty, sites [$($subject:expr => $method:ident),+ $(,)?]) => {
        $builder$(.site_route($subject, |state: $state, request| async move {
            state.$method(request).await
        }))+
    };
}
