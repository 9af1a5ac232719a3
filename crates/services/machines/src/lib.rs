//! The `machines` service: a record per MAC (site, firmware, ranks, groups, metadata, profile,
//! state), what each MAC gets when it PXE-boots (answered to its site's distributor), profiles
//! of templates rendered per machine, inventory, the install callback, and each machine's boot
//! timeline from the distributors' boot events and its own fetches.

mod event_log;
mod import;
mod migrations;
mod power;
pub mod render;
pub mod token;

use std::collections::BTreeMap;
use std::sync::Arc;

use bootfleet_api::machines::{
    self as m, ops, Inventory, MachineEventInput, MachineInput, MachineRow, MachineState,
    ProfileInput, ProfileRow, SitePolicy, SitePolicyInput, StateChange, StateInput, Timeline,
    TimelineBoot, TimelineStep, UnknownMacs,
};
use bootfleet_api::subjects;
use bootfleet_api::{format_timestamp, proto, validate, ApiError, ErrorCode, ListParams};
use bootfleet_bus::ServiceBuilder;
use bootfleet_service_kit::{handlers, Context, Routes, Schema, Service, StartError};
use bootfleet_store::sea_orm::sea_query::{Alias, Expr, OnConflict, Order, Query};
use bootfleet_store::sea_orm::{ConnectionTrait, FromQueryResult, StatementBuilder};
use bootfleet_store::{db_error, now_ms, Database, TableSpec};
use serde::Serialize;

pub use migrations::MachinesMigrator;
use token::TokenKey;

const SERVICE: &str = subjects::MACHINES;

/// How long a distributor may keep a boot decision.
pub const DECISION_MAX_AGE_SECS: u32 = 10;
/// Boots a timeline shows.
pub const TIMELINE_BOOTS: usize = 20;
/// Events kept per MAC (the oldest go first).
pub const MAX_EVENTS_PER_MAC: u64 = 400;
/// Events older than this go, whatever their MAC (MACs that booted once and never again would
/// otherwise keep theirs for ever).
pub const MAX_EVENT_AGE_MS: i64 = 30 * 86_400_000;
/// How often an instance drops events past that age.
const EVENT_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// History entries a machine shows (the newest).
pub const MAX_HISTORY: u64 = 200;
/// The environment variable naming the gateway's address as nodes reach it.
pub const NODE_API_URL_ENV: &str = "BOOTFLEET_NODE_API_URL";
/// Its default: the gateway's default listen address (right for a one-host lab only).
pub const DEFAULT_NODE_API_URL: &str = "http://127.0.0.1:8080";

static MACHINES: TableSpec = TableSpec {
    table: "machines",
    fields: &[
        ("id", "id"),
        ("mac", "mac"),
        ("name", "name"),
        ("artifactId", "artifact_id"),
        ("firmware", "firmware"),
        ("ip", "ip"),
        ("ranks", "ranks"),
        ("groups", "groups"),
        ("metadata", "metadata"),
        ("profile", "profile"),
        ("state", "state"),
        ("inventory", "inventory"),
        // Not sortable or searchable: only read.
        ("bmc.protocol", "bmc_protocol"),
        ("bmc.address", "bmc_address"),
        ("bmc.username", "bmc_username"),
        ("bmc.password", "bmc_password"),
        ("bmc.caCertificate", "bmc_ca_certificate"),
        ("bmc.insecure", "bmc_insecure"),
        ("bmc.systemId", "bmc_system_id"),
        ("createdAt", "created_at"),
        ("updatedAt", "updated_at"),
    ],
    list: bootfleet_api::list::fields::MACHINES,
};

static PROFILES: TableSpec = TableSpec {
    table: "machine_profiles",
    fields: &[
        ("id", "id"),
        ("name", "name"),
        ("ipxeTemplate", "ipxe_template"),
        ("rescueTemplate", "rescue_template"),
        ("templates", "templates"),
        ("createdAt", "created_at"),
        ("updatedAt", "updated_at"),
    ],
    list: bootfleet_api::list::fields::PROFILES,
};

#[derive(Clone, FromQueryResult)]
struct MachineRec {
    id: String,
    mac: String,
    name: Option<String>,
    artifact_id: String,
    firmware: String,
    ip: String,
    ranks: String,
    groups: String,
    metadata: String,
    profile: String,
    state: String,
    inventory: String,
    bmc_protocol: String,
    bmc_address: String,
    bmc_username: String,
    /// Encrypted (see `power.rs`); never shown.
    bmc_password: String,
    bmc_ca_certificate: String,
    bmc_insecure: bool,
    bmc_system_id: String,
    created_at: i64,
    updated_at: i64,
}

// The encrypted BMC password stays out of logs too.
bootfleet_api::debug_fields!(MachineRec as m {
    id,
    mac,
    name,
    artifact_id,
    state,
    bmc_protocol,
    bmc_address,
    ..
});

impl MachineRec {
    fn state(&self) -> MachineState {
        MachineState::parse(&self.state).unwrap_or(MachineState::Ready)
    }

    fn row(&self) -> MachineRow {
        MachineRow {
            id: self.id.clone(),
            mac: self.mac.clone(),
            name: self.name.clone(),
            artifact_id: self.artifact_id.clone(),
            firmware: self.firmware.clone(),
            ip: self.ip.clone(),
            ranks: serde_json::from_str(&self.ranks).unwrap_or_default(),
            groups: serde_json::from_str(&self.groups).unwrap_or_default(),
            metadata: serde_json::from_str(&self.metadata).unwrap_or_default(),
            profile: (!self.profile.is_empty()).then(|| self.profile.clone()),
            state: self.state(),
            inventory: serde_json::from_str(&self.inventory).ok(),
            bmc: self.bmc_row(),
            created_at: format_timestamp(self.created_at),
            updated_at: format_timestamp(self.updated_at),
        }
    }
}

#[derive(Clone, Debug, FromQueryResult)]
struct ProfileRec {
    id: String,
    name: String,
    ipxe_template: String,
    rescue_template: Option<String>,
    templates: String,
    created_at: i64,
    updated_at: i64,
}

impl ProfileRec {
    fn templates(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.templates).unwrap_or_default()
    }

    fn row(&self) -> ProfileRow {
        ProfileRow {
            id: self.id.clone(),
            name: self.name.clone(),
            ipxe_template: self.ipxe_template.clone(),
            rescue_template: self.rescue_template.clone(),
            templates: self.templates(),
            created_at: format_timestamp(self.created_at),
            updated_at: format_timestamp(self.updated_at),
        }
    }
}

#[derive(Debug, FromQueryResult)]
struct SiteRec {
    unknown_macs: String,
    discovery_profile: Option<String>,
    updated_at: i64,
}

#[derive(Debug, FromQueryResult)]
struct HistoryRec {
    from_state: String,
    to_state: String,
    reason: String,
    actor: String,
    at: i64,
}

#[derive(Debug, FromQueryResult)]
struct EventRec {
    kind: String,
    detail: String,
    at: i64,
}

fn json<T: Serialize>(value: &T) -> Result<proto::MachinesReply, ApiError> {
    Ok(proto::MachinesReply {
        body: serde_json::to_string(value)
            .map_err(|e| ApiError::internal(format!("cannot encode the answer: {e}")))?,
        content_type: "application/json".into(),
        ..Default::default()
    })
}

fn text(body: String) -> proto::MachinesReply {
    proto::MachinesReply {
        body,
        content_type: "text/plain".into(),
        ..Default::default()
    }
}

/// Parses a call's JSON body (the gateway checked its shape already; a service trusts no caller).
fn body<T: serde::de::DeserializeOwned>(call: &proto::MachinesCall) -> Result<T, ApiError> {
    serde_json::from_str(&call.body).map_err(|e| ApiError::invalid("body", e))
}

/// One or more fetches of a machine's rendered file, for its timeline.
#[derive(Clone, Copy, Debug)]
struct TemplateFetch<'a> {
    template: &'a str,
    bytes: u64,
    peer: &'a str,
    count: u32,
}

fn detail(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Who made a call, for the history.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Caller {
    Operator(String),
    Machine(String),
}

impl Caller {
    fn name(&self) -> String {
        match self {
            Caller::Operator(sub) if sub.is_empty() => "operator".to_owned(),
            Caller::Operator(sub) => sub.clone(),
            Caller::Machine(id) => format!("machine:{id}"),
        }
    }
}

/// The service's state: its database, its token key, the node-facing address of the API, the
/// keys of BMC passwords (at rest, and the key the gateway seals them to), the timeline's
/// writer and, once serving, the bus to reach distributors.
#[derive(Clone, Debug)]
pub struct Machines {
    db: Database,
    key: Arc<TokenKey>,
    api_url: Arc<str>,
    bmc: Arc<power::BmcKeys>,
    bus: Option<bootfleet_bus::Bus>,
    events: event_log::EventLog,
}

impl Machines {
    /// Loads the token key, making it on first start (a second instance starting at the same
    /// time reads the one the first stored).
    pub async fn open(db: Database, api_url: &str) -> Result<Machines, ApiError> {
        let mut insert = Query::insert();
        let now = now_ms();
        insert
            .into_table(Alias::new("machine_keys"))
            .columns(["id", "secret", "created_at", "updated_at"].map(Alias::new))
            .values_panic([
                "token-key".into(),
                TokenKey::generate_hex().into(),
                now.into(),
                now.into(),
            ])
            .on_conflict(OnConflict::column(Alias::new("id")).do_nothing().to_owned());
        let backend = db.get_database_backend();
        // "Do nothing" on a conflict reports no row to some drivers; that is fine.
        let _ = db.execute(backend.build(&insert)).await;
        let mut select = Query::select();
        select
            .column(Alias::new("secret"))
            .from(Alias::new("machine_keys"))
            .and_where(Expr::col(Alias::new("id")).eq("token-key"));
        let row = db
            .query_one(backend.build(&select))
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::internal("the machine token key is missing"))?;
        let secret: String = row.try_get_by_index(0).map_err(db_error)?;
        let key = TokenKey::from_hex(&secret)
            .ok_or_else(|| ApiError::internal("the stored machine token key is unusable"))?;
        Ok(Machines {
            events: event_log::EventLog::start(db.clone()),
            db,
            bmc: Arc::new(power::BmcKeys::derive(key.bytes())),
            key: Arc::new(key),
            api_url: api_url.trim_end_matches('/').into(),
            bus: None,
        })
    }

    /// The bus to reach the sites' distributors (for power operations).
    pub fn with_bus(mut self, bus: bootfleet_bus::Bus) -> Machines {
        self.bus = Some(bus);
        self
    }

    /// Tells the gateways that machine `id` (`None`: every machine) may render differently now,
    /// so they drop the rendered files they keep ([`subjects::MACHINE_CHANGES`]). Every write
    /// of a machine row, a profile or a site's policy calls this before its answer leaves, on
    /// the connection that carries the answer. If it cannot be sent, the gateways' copies still
    /// expire on their own (after 30 s).
    async fn announce(&self, id: Option<&str>) {
        let Some(bus) = &self.bus else { return };
        let payload = id.unwrap_or_default().to_owned();
        if let Err(e) = bus
            .client()
            .publish(subjects::MACHINE_CHANGES, payload.into())
            .await
        {
            tracing::warn!(machine = id.unwrap_or("*"), error = %e, "cannot announce a machine change");
        }
    }

    fn build<S: StatementBuilder>(&self, s: &S) -> bootfleet_store::sea_orm::Statement {
        self.db.get_database_backend().build(s)
    }

    async fn exec<S: StatementBuilder>(&self, s: &S) -> Result<u64, ApiError> {
        bootfleet_store::execute(&self.db, s).await
    }

    async fn machine_where(
        &self,
        column: &str,
        value: &str,
    ) -> Result<Option<MachineRec>, ApiError> {
        bootfleet_store::one_where(&self.db, &MACHINES, column, value).await
    }

    async fn machine(&self, id: &str) -> Result<MachineRec, ApiError> {
        let id = validate::id("id", id)?;
        self.machine_where("id", &id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("machine {id}")))
    }

    async fn profile_rec(&self, name: &str) -> Result<Option<ProfileRec>, ApiError> {
        bootfleet_store::one_where(&self.db, &PROFILES, "name", name).await
    }

    /// Who may make a node-facing call for machine `id`: its own token, or an operator (an
    /// admin for writes, an admin or a user for reads).
    fn node_caller(
        &self,
        call: &proto::MachinesCall,
        id: &str,
        write: bool,
    ) -> Result<Caller, ApiError> {
        if !call.machine_token.is_empty() {
            self.key
                .verify(&call.machine_token, id, token::now_secs())?;
            return Ok(Caller::Machine(id.to_owned()));
        }
        match call.role.as_str() {
            "admin" => Ok(Caller::Operator(call.actor.clone())),
            "user" if !write => Ok(Caller::Operator(call.actor.clone())),
            "" => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "token: a machine token or an operator token is required",
            )),
            role => Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!("a {role} token may not do this"),
            )),
        }
    }

    // ---- machines -----------------------------------------------------------------------

    /// Checks the fields an input gives and returns them canonical.
    async fn checked(&self, mut input: MachineInput) -> Result<MachineInput, ApiError> {
        if let Some(mac) = &input.mac {
            input.mac = Some(m::mac("mac", mac)?);
        }
        if let Some(name) = &input.name {
            input.name = if name.is_empty() {
                Some(String::new())
            } else {
                Some(m::machine_name("name", name)?)
            };
        }
        if let Some(site) = &input.artifact_id {
            validate::artifact_id("artifactId", site)?;
        }
        if let Some(fw) = &input.firmware {
            m::firmware("firmware", fw, true)?;
        }
        if let Some(ip) = &input.ip {
            if !ip.is_empty() {
                input.ip = Some(validate::ip("ip", ip)?);
            }
        }
        if let Some(ranks) = &input.ranks {
            m::words("ranks", ranks)?;
        }
        if let Some(groups) = &input.groups {
            m::words("groups", groups)?;
        }
        if let Some(meta) = &input.metadata {
            m::metadata("metadata", meta)?;
        }
        if let Some(bmc) = input.bmc.as_mut().and_then(Option::take) {
            input.bmc = Some(Some(self.checked_bmc(bmc)?));
        }
        if let Some(profile) = input.profile.as_deref().filter(|p| !p.is_empty()) {
            m::word("profile", profile)?;
            if self.profile_rec(profile).await?.is_none() {
                return Err(ApiError::invalid(
                    "profile",
                    format!("no profile named {profile:?} (see /api/profiles)"),
                ));
            }
        }
        Ok(input)
    }

    async fn name_taken(
        &self,
        site: &str,
        name: &str,
        except: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        let mut select = Query::select();
        select
            .column(Alias::new("id"))
            .from(Alias::new("machines"))
            .and_where(Expr::col(Alias::new("artifact_id")).eq(site))
            .and_where(Expr::col(Alias::new("name")).eq(name));
        if let Some(id) = except {
            select.and_where(Expr::col(Alias::new("id")).ne(id));
        }
        let row = self
            .db
            .query_one(self.build(&select))
            .await
            .map_err(db_error)?;
        row.map(|r| r.try_get_by_index::<String>(0))
            .transpose()
            .map_err(db_error)
    }

    async fn record_history(
        &self,
        machine_id: &str,
        from: Option<MachineState>,
        to: MachineState,
        reason: &str,
        by: &str,
    ) -> Result<(), ApiError> {
        let now = now_ms();
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new("machine_history"))
            .columns(
                [
                    "id",
                    "machine_id",
                    "from_state",
                    "to_state",
                    "reason",
                    "actor",
                    "at",
                    "created_at",
                    "updated_at",
                ]
                .map(Alias::new),
            )
            .values_panic([
                uuid::Uuid::new_v4().to_string().into(),
                machine_id.into(),
                from.map(MachineState::as_str).unwrap_or_default().into(),
                to.as_str().into(),
                reason.into(),
                by.chars().take(128).collect::<String>().into(),
                now.into(),
                now.into(),
                now.into(),
            ]);
        self.exec(&insert).await?;
        Ok(())
    }

    /// Inserts a machine from a checked input (mac and site required).
    async fn insert_machine(
        &self,
        id: &str,
        input: &MachineInput,
        by: &str,
        reason: &str,
    ) -> Result<MachineRec, ApiError> {
        let mac = input
            .mac
            .clone()
            .ok_or_else(|| ApiError::invalid("mac", "is required"))?;
        let site = input
            .artifact_id
            .clone()
            .ok_or_else(|| ApiError::invalid("artifactId", "is required"))?;
        if let Some(existing) = self.machine_where("mac", &mac).await? {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("mac: machine {} already has mac {mac}", existing.id),
            )
            .with_field("mac"));
        }
        let name = input.name.clone().filter(|n| !n.is_empty());
        if let Some(name) = &name {
            if let Some(other) = self.name_taken(&site, name, None).await? {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("name: machine {other} of site {site} is already named {name}"),
                )
                .with_field("name"));
            }
        }
        if matches!(&input.bmc, Some(Some(bmc)) if bmc.password.is_none()) {
            return Err(ApiError::invalid(
                "bmc.password",
                "is required with a new bmc",
            ));
        }
        let state = input.state.unwrap_or(MachineState::Ready);
        let now = now_ms();
        let to_json = |v: &dyn erased::Json| v.json();
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new("machines"))
            .columns(
                [
                    "id",
                    "mac",
                    "name",
                    "artifact_id",
                    "firmware",
                    "ip",
                    "ranks",
                    "groups",
                    "metadata",
                    "profile",
                    "state",
                    "inventory",
                    "created_at",
                    "updated_at",
                ]
                .map(Alias::new),
            )
            .values_panic([
                id.into(),
                mac.clone().into(),
                name.into(),
                site.into(),
                input.firmware.clone().unwrap_or_default().into(),
                input.ip.clone().unwrap_or_default().into(),
                to_json(&input.ranks.clone().unwrap_or_default()).into(),
                to_json(&input.groups.clone().unwrap_or_default()).into(),
                to_json(&input.metadata.clone().unwrap_or_default()).into(),
                input.profile.clone().unwrap_or_default().into(),
                state.as_str().into(),
                String::new().into(),
                now.into(),
                now.into(),
            ]);
        self.exec(&insert).await?;
        if let Some(Some(bmc)) = &input.bmc {
            let mut update = Query::update();
            update.table(Alias::new("machines"));
            self.set_bmc(&mut update, id, Some(bmc));
            update.and_where(Expr::col(Alias::new("id")).eq(id));
            self.exec(&update).await?;
        }
        self.record_history(id, None, state, reason, by).await?;
        self.machine_where("id", id)
            .await?
            .ok_or_else(|| ApiError::internal("created machine vanished"))
    }

    /// Applies the fields `input` gives to `current`; records a state change.
    async fn update_machine(
        &self,
        current: &MachineRec,
        input: &MachineInput,
        by: &str,
        reason: &str,
    ) -> Result<MachineRec, ApiError> {
        let mut update = Query::update();
        update.table(Alias::new("machines"));
        if let Some(mac) = input.mac.as_ref().filter(|mac| **mac != current.mac) {
            if let Some(existing) = self.machine_where("mac", mac).await? {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("mac: machine {} already has mac {mac}", existing.id),
                )
                .with_field("mac"));
            }
            update.value(Alias::new("mac"), mac.as_str());
        }
        let site = input
            .artifact_id
            .clone()
            .unwrap_or_else(|| current.artifact_id.clone());
        let name = match &input.name {
            Some(n) if n.is_empty() => None,
            Some(n) => Some(n.clone()),
            None => current.name.clone(),
        };
        if let Some(name) = &name {
            if let Some(other) = self.name_taken(&site, name, Some(&current.id)).await? {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("name: machine {other} of site {site} is already named {name}"),
                )
                .with_field("name"));
            }
        }
        update
            .value(Alias::new("name"), name)
            .value(Alias::new("artifact_id"), site);
        if let Some(v) = &input.firmware {
            update.value(Alias::new("firmware"), v.as_str());
        }
        if let Some(v) = &input.ip {
            update.value(Alias::new("ip"), v.as_str());
        }
        if let Some(v) = &input.ranks {
            update.value(Alias::new("ranks"), v.json());
        }
        if let Some(v) = &input.groups {
            update.value(Alias::new("groups"), v.json());
        }
        if let Some(v) = &input.metadata {
            update.value(Alias::new("metadata"), erased::Json::json(v));
        }
        if let Some(v) = &input.profile {
            update.value(Alias::new("profile"), v.as_str());
        }
        let from = current.state();
        if let Some(state) = input.state {
            update.value(Alias::new("state"), state.as_str());
        }
        match &input.bmc {
            None => {}
            Some(Some(bmc)) if bmc.password.is_none() && current.bmc_password.is_empty() => {
                return Err(ApiError::invalid(
                    "bmc.password",
                    "is required: the machine has no bmc password yet",
                ));
            }
            Some(bmc) => self.set_bmc(&mut update, &current.id, bmc.as_ref()),
        }
        update
            .value(Alias::new("updated_at"), now_ms())
            .and_where(Expr::col(Alias::new("id")).eq(current.id.as_str()));
        let written = self.exec(&update).await;
        self.announce(Some(&current.id)).await;
        written?;
        if let Some(state) = input.state.filter(|s| *s != from) {
            self.record_history(&current.id, Some(from), state, reason, by)
                .await?;
        }
        self.machine(&current.id).await
    }

    async fn create(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        let id = validate::id("id", &call.id)?;
        let input = self.checked(body::<MachineInput>(&call)?).await?;
        if input.mac.is_none() {
            return Err(ApiError::invalid("mac", "is required"));
        }
        if input.artifact_id.is_none() {
            return Err(ApiError::invalid("artifactId", "is required"));
        }
        // A retried create finds the row it made.
        if let Some(existing) = self.machine_where("id", &id).await? {
            return json(&existing.row());
        }
        let by = Caller::Operator(call.actor.clone()).name();
        let rec = self.insert_machine(&id, &input, &by, "created").await?;
        let mut reply = json(&rec.row())?;
        reply.created = true;
        Ok(reply)
    }

    async fn update(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        let current = self.machine(&call.id).await?;
        let input = self.checked(body::<MachineInput>(&call)?).await?;
        let by = Caller::Operator(call.actor.clone()).name();
        let rec = self
            .update_machine(&current, &input, &by, "updated")
            .await?;
        json(&rec.row())
    }

    async fn get(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        json(&self.machine(&call.id).await?.row())
    }

    async fn list(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        let params = ListParams::from_proto(&call.list.unwrap_or_default())?;
        let (rows, total) =
            bootfleet_store::list::<MachineRec>(&self.db, &MACHINES, &params).await?;
        json(&bootfleet_api::rest::Page::new(
            rows.iter().map(MachineRec::row).collect::<Vec<_>>(),
            total,
            &params,
        ))
    }

    async fn delete(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        let rec = self.machine(&call.id).await?;
        let deleted = bootfleet_store::delete(&self.db, &MACHINES, &rec.id).await;
        self.announce(Some(&rec.id)).await;
        if !deleted? {
            return Err(ApiError::not_found(format!("machine {}", rec.id)));
        }
        let mut delete = Query::delete();
        delete
            .from_table(Alias::new("machine_history"))
            .and_where(Expr::col(Alias::new("machine_id")).eq(rec.id.as_str()));
        self.exec(&delete).await?;
        json(&rec.row())
    }

    async fn set_state(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        let current = self.machine(&call.id).await?;
        let input: StateInput = body(&call)?;
        let reason = input.reason.unwrap_or_default();
        if reason.len() > m::MAX_REASON_BYTES || reason.contains('\0') {
            return Err(ApiError::invalid(
                "reason",
                format!("must be at most {} bytes, without NUL", m::MAX_REASON_BYTES),
            ));
        }
        if input.state == MachineState::Install && current.profile.is_empty() {
            return Err(ApiError::invalid(
                "state",
                "install needs a profile: set the machine's profile first",
            ));
        }
        let by = Caller::Operator(call.actor.clone()).name();
        let from = current.state();
        self.set_state_of(&current, input.state, &reason, &by)
            .await?;
        if from == input.state {
            // Asked again (a reinstall of a machine already installing, say): still recorded.
            self.record_history(&current.id, Some(from), input.state, &reason, &by)
                .await?;
        }
        let rec = self.machine(&current.id).await?;
        self.record_event(
            &rec.mac,
            &rec.artifact_id,
            "state_changed",
            detail(&[
                ("from", from.as_str().to_owned()),
                ("to", input.state.as_str().to_owned()),
                ("by", by),
            ]),
            now_ms(),
        )
        .await?;
        json(&rec.row())
    }

    async fn set_state_of(
        &self,
        current: &MachineRec,
        state: MachineState,
        reason: &str,
        by: &str,
    ) -> Result<MachineRec, ApiError> {
        let input = MachineInput {
            state: Some(state),
            ..Default::default()
        };
        self.update_machine(current, &input, by, reason).await
    }

    async fn history(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        let rec = self.machine(&call.id).await?;
        let mut select = Query::select();
        select
            .columns(["from_state", "to_state", "reason", "actor", "at"].map(Alias::new))
            .from(Alias::new("machine_history"))
            .and_where(Expr::col(Alias::new("machine_id")).eq(rec.id.as_str()))
            .order_by(Alias::new("at"), Order::Desc)
            .order_by(Alias::new("created_at"), Order::Desc)
            .limit(MAX_HISTORY);
        let rows = HistoryRec::find_by_statement(self.build(&select))
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let changes: Vec<StateChange> = rows
            .into_iter()
            .rev()
            .map(|h| StateChange {
                from: MachineState::parse(&h.from_state),
                to: MachineState::parse(&h.to_state).unwrap_or(MachineState::Ready),
                reason: h.reason,
                by: h.actor,
                at: format_timestamp(h.at),
            })
            .collect();
        json(&m::MachineHistory {
            machine_id: rec.id,
            changes,
        })
    }

    // ---- node-facing ----------------------------------------------------------------------

    async fn event(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        let rec = self.machine(&call.id).await?;
        let caller = self.node_caller(&call, &rec.id, true)?;
        let input: MachineEventInput = body(&call)?;
        match input.kind.as_str() {
            "installed" => {
                let from = rec.state();
                let updated = self
                    .set_state_of(
                        &rec,
                        MachineState::Installed,
                        "install-complete callback",
                        &caller.name(),
                    )
                    .await?;
                self.record_event(
                    &rec.mac,
                    &rec.artifact_id,
                    "installed",
                    detail(&[
                        ("from", from.as_str().to_owned()),
                        ("by", caller.name()),
                        ("peer", call.client_ip.clone()),
                    ]),
                    now_ms(),
                )
                .await?;
                json(&updated.row())
            }
            other => Err(ApiError::invalid(
                "type",
                format!("unknown event type {other:?} (installed)"),
            )),
        }
    }

    async fn inventory(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        let rec = self.machine(&call.id).await?;
        let caller = self.node_caller(&call, &rec.id, true)?;
        let inventory = body::<Inventory>(&call)?.validated()?;
        let encoded = serde_json::to_string(&inventory)
            .map_err(|e| ApiError::internal(format!("cannot encode inventory: {e}")))?;
        let mut update = Query::update();
        update
            .table(Alias::new("machines"))
            .value(Alias::new("inventory"), encoded)
            .value(Alias::new("firmware"), inventory.firmware.as_str())
            .value(Alias::new("updated_at"), now_ms())
            .and_where(Expr::col(Alias::new("id")).eq(rec.id.as_str()));
        let written = self.exec(&update).await;
        self.announce(Some(&rec.id)).await;
        written?;
        let from = rec.state();
        let mut updated = self.machine(&rec.id).await?;
        if matches!(from, MachineState::Discovered | MachineState::Inventory) {
            updated = self
                .set_state_of(
                    &updated,
                    MachineState::Ready,
                    "inventory reported",
                    &caller.name(),
                )
                .await?;
        }
        self.record_event(
            &rec.mac,
            &rec.artifact_id,
            "inventory_reported",
            detail(&[
                ("cpus", inventory.cpu.count.to_string()),
                ("memoryBytes", inventory.memory_bytes.to_string()),
                ("disks", inventory.disks.len().to_string()),
                ("by", caller.name()),
                ("peer", call.client_ip.clone()),
            ]),
            now_ms(),
        )
        .await?;
        json(&updated.row())
    }

    fn vars(&self, rec: &MachineRec) -> render::Vars {
        let row = rec.row();
        let exp = token::now_secs() + token::TOKEN_TTL_SECS;
        render::Vars {
            machine: render::MachineVars {
                id: row.id.clone(),
                name: row.name.unwrap_or_default(),
                mac: row.mac,
                ip: row.ip,
                site: row.artifact_id,
                firmware: row.firmware,
                state: row.state.as_str().to_owned(),
                ranks: row.ranks,
                groups: row.groups,
                metadata: row.metadata,
            },
            token: self.key.mint(&row.id, exp),
            api: self.api_url.to_string(),
            files: format!("{}/api/machines/{}/files", self.api_url, row.id),
        }
    }

    /// The iPXE script machine `rec` boots in its state, rendered; `None` for the site's
    /// default script; `Some(Err)` when its template does not render.
    async fn state_script(
        &self,
        rec: &MachineRec,
        policy: &SitePolicy,
    ) -> Result<Outcome, ApiError> {
        let profile_template = |name: &str, rescue: bool| {
            let name = name.to_owned();
            async move {
                let Some(p) = self.profile_rec(&name).await? else {
                    return Ok::<_, ApiError>(None);
                };
                Ok(if rescue {
                    p.rescue_template.filter(|t| !t.trim().is_empty())
                } else {
                    Some(p.ipxe_template)
                })
            }
        };
        let template = match rec.state() {
            MachineState::Discovered | MachineState::Inventory => {
                match policy.discovery_profile.as_deref() {
                    Some(p) => profile_template(p, false).await?,
                    None => None,
                }
            }
            MachineState::Ready => None,
            MachineState::Install if !rec.profile.is_empty() => {
                profile_template(&rec.profile, false).await?
            }
            MachineState::Install => None,
            MachineState::Installed => return Ok(Outcome::LocalDisk),
            MachineState::Rescue if !rec.profile.is_empty() => {
                profile_template(&rec.profile, true).await?
            }
            MachineState::Rescue => None,
        };
        Ok(match template {
            Some(t) => Outcome::Script(render::render("ipxe", &t, &self.vars(rec))?),
            None => Outcome::SiteDefault,
        })
    }

    async fn script(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        let rec = self.machine(&call.id).await?;
        self.node_caller(&call, &rec.id, false)?;
        let policy = self.policy(&rec.artifact_id).await?;
        let script = match self.state_script(&rec, &policy).await? {
            Outcome::Script(s) => s,
            Outcome::LocalDisk => local_disk_script(&rec.firmware),
            Outcome::SiteDefault => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "state: a {} machine boots its site's default script, not one of its own",
                        rec.state
                    ),
                )
                .with_field("state"))
            }
        };
        self.record_event(
            &rec.mac,
            &rec.artifact_id,
            "script_fetched",
            detail(&[
                ("state", rec.state.clone()),
                ("peer", call.client_ip.clone()),
            ]),
            now_ms(),
        )
        .await?;
        Ok(text(script))
    }

    async fn file(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        let rec = self.machine(&call.id).await?;
        self.node_caller(&call, &rec.id, false)?;
        m::template_name("template", &call.name)?;
        let profile = match rec.profile.as_str() {
            "" => {
                // A discovered machine may fetch its site's discovery profile's files.
                let policy = self.policy(&rec.artifact_id).await?;
                match policy.discovery_profile {
                    Some(p)
                        if matches!(
                            rec.state(),
                            MachineState::Discovered | MachineState::Inventory
                        ) =>
                    {
                        p
                    }
                    _ => {
                        return Err(ApiError::not_found(format!(
                            "template {}: machine {} has no profile",
                            call.name, rec.id
                        )))
                    }
                }
            }
            p => p.to_owned(),
        };
        let template = self
            .profile_rec(&profile)
            .await?
            .and_then(|p| p.templates().remove(&call.name))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "template {}: profile {profile} has no such template",
                    call.name
                ))
            })?;
        let rendered = render::render(&call.name, &template, &self.vars(&rec))?;
        let fetch = TemplateFetch {
            template: &call.name,
            bytes: rendered.len() as u64,
            peer: &call.client_ip,
            count: 1,
        };
        self.record_template_fetch(&rec.mac, &rec.artifact_id, fetch, now_ms())
            .await?;
        let mut reply = text(rendered);
        reply.mac = rec.mac;
        reply.artifact_id = rec.artifact_id;
        Ok(reply)
    }

    // ---- profiles ---------------------------------------------------------------------------

    fn checked_profile(name: &str, input: &ProfileInput) -> Result<(), ApiError> {
        m::word("name", name)?;
        validate::text("ipxeTemplate", &input.ipxe_template)?;
        render::check("ipxeTemplate", &input.ipxe_template)?;
        if let Some(rescue) = input.rescue_template.as_deref().filter(|t| !t.is_empty()) {
            validate::text("rescueTemplate", rescue)?;
            render::check("rescueTemplate", rescue)?;
        }
        if input.templates.len() > m::MAX_TEMPLATES {
            return Err(ApiError::invalid(
                "templates",
                format!("must have at most {} templates", m::MAX_TEMPLATES),
            ));
        }
        for (tname, source) in &input.templates {
            m::template_name("templates", tname).map_err(|_| {
                ApiError::invalid(
                    "templates",
                    format!("template name {tname:?} must be 1 to 64 of a-z, 0-9 or '-'"),
                )
            })?;
            let field = format!("templates.{tname}");
            validate::text(&field, source)?;
            render::check(&field, source)?;
        }
        Ok(())
    }

    async fn upsert_profile(
        &self,
        id: &str,
        name: &str,
        input: &ProfileInput,
    ) -> Result<(ProfileRec, bool), ApiError> {
        Self::checked_profile(name, input)?;
        let templates = serde_json::to_string(&input.templates)
            .map_err(|e| ApiError::internal(format!("cannot encode templates: {e}")))?;
        let rescue = input.rescue_template.clone().filter(|t| !t.is_empty());
        let now = now_ms();
        let existing = self.profile_rec(name).await?;
        if let Some(p) = &existing {
            let mut update = Query::update();
            update
                .table(Alias::new("machine_profiles"))
                .value(Alias::new("ipxe_template"), input.ipxe_template.as_str())
                .value(Alias::new("rescue_template"), rescue)
                .value(Alias::new("templates"), templates)
                .value(Alias::new("updated_at"), now)
                .and_where(Expr::col(Alias::new("id")).eq(p.id.as_str()));
            let written = self.exec(&update).await;
            self.announce(None).await;
            written?;
        } else {
            let mut insert = Query::insert();
            insert
                .into_table(Alias::new("machine_profiles"))
                .columns(
                    [
                        "id",
                        "name",
                        "ipxe_template",
                        "rescue_template",
                        "templates",
                        "created_at",
                        "updated_at",
                    ]
                    .map(Alias::new),
                )
                .values_panic([
                    id.into(),
                    name.into(),
                    input.ipxe_template.clone().into(),
                    rescue.into(),
                    templates.into(),
                    now.into(),
                    now.into(),
                ]);
            self.exec(&insert).await?;
        }
        let rec = self
            .profile_rec(name)
            .await?
            .ok_or_else(|| ApiError::internal("stored profile vanished"))?;
        Ok((rec, existing.is_none()))
    }

    async fn profile_create(
        &self,
        call: proto::MachinesCall,
    ) -> Result<proto::MachinesReply, ApiError> {
        let id = validate::id("id", &call.id)?;
        let input: ProfileInput = body(&call)?;
        let name = input
            .name
            .clone()
            .ok_or_else(|| ApiError::invalid("name", "is required"))?;
        m::word("name", &name)?;
        if let Some(p) = self.profile_rec(&name).await? {
            if p.id == id {
                return json(&p.row());
            }
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "name: a profile named {name} exists (PUT /api/profiles/{name} replaces it)"
                ),
            )
            .with_field("name"));
        }
        let (rec, _) = self.upsert_profile(&id, &name, &input).await?;
        let mut reply = json(&rec.row())?;
        reply.created = true;
        Ok(reply)
    }

    async fn profile_put(
        &self,
        call: proto::MachinesCall,
    ) -> Result<proto::MachinesReply, ApiError> {
        let input: ProfileInput = body(&call)?;
        m::word("name", &call.id)?;
        if let Some(n) = input.name.as_deref().filter(|n| *n != call.id) {
            return Err(ApiError::invalid(
                "name",
                format!(
                    "{n:?} differs from the profile named in the path ({:?})",
                    call.id
                ),
            ));
        }
        let (rec, created) = self
            .upsert_profile(&uuid::Uuid::new_v4().to_string(), &call.id, &input)
            .await?;
        let mut reply = json(&rec.row())?;
        reply.created = created;
        Ok(reply)
    }

    async fn profile_named(&self, name: &str) -> Result<ProfileRec, ApiError> {
        m::word("name", name)?;
        self.profile_rec(name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("profile {name}")))
    }

    async fn profile_get(
        &self,
        call: proto::MachinesCall,
    ) -> Result<proto::MachinesReply, ApiError> {
        json(&self.profile_named(&call.id).await?.row())
    }

    async fn profile_list(
        &self,
        call: proto::MachinesCall,
    ) -> Result<proto::MachinesReply, ApiError> {
        let params = ListParams::from_proto(&call.list.unwrap_or_default())?;
        let (rows, total) =
            bootfleet_store::list::<ProfileRec>(&self.db, &PROFILES, &params).await?;
        json(&bootfleet_api::rest::Page::new(
            rows.iter().map(ProfileRec::row).collect::<Vec<_>>(),
            total,
            &params,
        ))
    }

    async fn profile_delete(
        &self,
        call: proto::MachinesCall,
    ) -> Result<proto::MachinesReply, ApiError> {
        let rec = self.profile_named(&call.id).await?;
        if let Some(user) = self.machine_where("profile", &rec.name).await? {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("profile {} is the profile of machine {}", rec.name, user.id),
            ));
        }
        let mut select = Query::select();
        select
            .column(Alias::new("artifact_id"))
            .from(Alias::new("machine_sites"))
            .and_where(Expr::col(Alias::new("discovery_profile")).eq(rec.name.as_str()));
        if let Some(row) = self
            .db
            .query_one(self.build(&select))
            .await
            .map_err(db_error)?
        {
            let site: String = row.try_get_by_index(0).map_err(db_error)?;
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "profile {} is the discovery profile of site {site}",
                    rec.name
                ),
            ));
        }
        let deleted = bootfleet_store::delete(&self.db, &PROFILES, &rec.id).await;
        self.announce(None).await;
        deleted?;
        json(&rec.row())
    }

    // ---- sites ------------------------------------------------------------------------------

    /// A site's policy; the defaults (`serve`, no discovery profile) when never set.
    async fn policy(&self, site: &str) -> Result<SitePolicy, ApiError> {
        let mut select = Query::select();
        select
            .columns(["unknown_macs", "discovery_profile", "updated_at"].map(Alias::new))
            .from(Alias::new("machine_sites"))
            .and_where(Expr::col(Alias::new("artifact_id")).eq(site));
        let rec = SiteRec::find_by_statement(self.build(&select))
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(match rec {
            Some(r) => SitePolicy {
                artifact_id: site.to_owned(),
                unknown_macs: UnknownMacs::parse(&r.unknown_macs).unwrap_or_default(),
                discovery_profile: r.discovery_profile.filter(|p| !p.is_empty()),
                updated_at: Some(format_timestamp(r.updated_at)),
            },
            None => SitePolicy {
                artifact_id: site.to_owned(),
                unknown_macs: UnknownMacs::default(),
                discovery_profile: None,
                updated_at: None,
            },
        })
    }

    async fn site_get(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        validate::artifact_id("artifactId", &call.id)?;
        json(&self.policy(&call.id).await?)
    }

    async fn site_put(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        validate::artifact_id("artifactId", &call.id)?;
        let input: SitePolicyInput = body(&call)?;
        let profile = input.discovery_profile.filter(|p| !p.is_empty());
        if let Some(p) = &profile {
            m::word("discoveryProfile", p)?;
            if self.profile_rec(p).await?.is_none() {
                return Err(ApiError::invalid(
                    "discoveryProfile",
                    format!("no profile named {p:?} (see /api/profiles)"),
                ));
            }
        }
        let now = now_ms();
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new("machine_sites"))
            .columns(
                [
                    "id",
                    "artifact_id",
                    "unknown_macs",
                    "discovery_profile",
                    "created_at",
                    "updated_at",
                ]
                .map(Alias::new),
            )
            .values_panic([
                uuid::Uuid::new_v4().to_string().into(),
                call.id.clone().into(),
                input.unknown_macs.as_str().into(),
                profile.into(),
                now.into(),
                now.into(),
            ])
            .on_conflict(
                OnConflict::column(Alias::new("artifact_id"))
                    .update_columns(
                        ["unknown_macs", "discovery_profile", "updated_at"].map(Alias::new),
                    )
                    .to_owned(),
            );
        let written = self.exec(&insert).await;
        self.announce(None).await;
        written?;
        json(&self.policy(&call.id).await?)
    }

    // ---- boot decisions ------------------------------------------------------------------

    /// What a PXE client of a site gets, by its MAC.
    pub async fn decide(
        &self,
        req: proto::BootDecisionRequest,
    ) -> Result<proto::BootDecision, ApiError> {
        use proto::boot_decision::Action;
        validate::artifact_id("artifactId", &req.artifact_id)?;
        let mac = m::mac("mac", &req.mac)?;
        let firmware = match req.firmware.as_str() {
            "bios" | "uefi" => req.firmware.clone(),
            _ => String::new(),
        };
        let client_ip = validate::ip("clientIp", &req.client_ip).unwrap_or_default();
        let policy = self.policy(&req.artifact_id).await?;
        let answer = |action: Action, script: String, id: String| proto::BootDecision {
            action: action as i32,
            ipxe_script: script,
            machine_id: id,
            max_age_secs: DECISION_MAX_AGE_SECS,
        };
        let rec = match self.machine_where("mac", &mac).await? {
            Some(rec) => {
                // What the boot tells us: its firmware and, from iPXE's round, its address.
                let mut input = MachineInput::default();
                if !firmware.is_empty() && firmware != rec.firmware {
                    input.firmware = Some(firmware.clone());
                }
                if !client_ip.is_empty() && client_ip != rec.ip {
                    input.ip = Some(client_ip.clone());
                }
                if input.firmware.is_some() || input.ip.is_some() {
                    self.update_machine(&rec, &input, "distributor", "").await?
                } else {
                    rec
                }
            }
            None => match policy.unknown_macs {
                UnknownMacs::Ignore => {
                    return Ok(answer(Action::Ignore, String::new(), String::new()))
                }
                UnknownMacs::Serve => {
                    return Ok(answer(Action::SiteDefault, String::new(), String::new()))
                }
                UnknownMacs::Discover => {
                    let input = MachineInput {
                        mac: Some(mac.clone()),
                        artifact_id: Some(req.artifact_id.clone()),
                        firmware: Some(firmware.clone()),
                        ip: Some(client_ip.clone()),
                        state: Some(MachineState::Discovered),
                        ..Default::default()
                    };
                    let id = uuid::Uuid::new_v4().to_string();
                    match self
                        .insert_machine(&id, &input, "distributor", "unknown mac booted")
                        .await
                    {
                        Ok(rec) => rec,
                        // Two decisions for one new MAC at once: the other made it.
                        Err(e) if e.code == ErrorCode::Conflict => {
                            self.machine_where("mac", &mac).await?.ok_or(e)?
                        }
                        Err(e) => return Err(e),
                    }
                }
            },
        };
        let outcome = match self.state_script(&rec, &policy).await {
            Ok(o) => o,
            Err(e) => {
                // A template that does not fit this machine: it boots what the site serves,
                // and the timeline says why.
                tracing::warn!(machine = %rec.id, error = %e.message, "boot script did not render");
                self.record_event(
                    &mac,
                    &req.artifact_id,
                    "render_failed",
                    detail(&[("error", e.message.clone())]),
                    now_ms(),
                )
                .await?;
                Outcome::SiteDefault
            }
        };
        let (action, script) = match outcome {
            Outcome::Script(s) => (Action::Script, s),
            Outcome::LocalDisk => (Action::LocalDisk, String::new()),
            Outcome::SiteDefault => (Action::SiteDefault, String::new()),
        };
        self.record_event(
            &mac,
            &req.artifact_id,
            "boot_decision",
            detail(&[
                ("action", action.as_str_name().to_ascii_lowercase()),
                ("state", rec.state.clone()),
                ("firmware", firmware),
            ]),
            now_ms(),
        )
        .await?;
        Ok(answer(action, script, rec.id))
    }

    // ---- timeline -------------------------------------------------------------------------

    /// Stores one event under its MAC and drops the MAC's oldest beyond the bound; returns once
    /// it is committed (with whatever other events were waiting: `event_log.rs`).
    pub async fn record_event(
        &self,
        mac: &str,
        site: &str,
        kind: &str,
        detail: BTreeMap<String, String>,
        at: i64,
    ) -> Result<(), ApiError> {
        let event = event_log::Event {
            mac: mac.to_owned(),
            site: site.to_owned(),
            kind: kind.to_owned(),
            detail: serde_json::to_string(&detail).unwrap_or_else(|_| "{}".into()),
            at,
        };
        self.events.record(event).await
    }

    /// Drops every event older than [`MAX_EVENT_AGE_MS`].
    pub async fn prune_old_events(&self) -> Result<u64, ApiError> {
        let mut prune = Query::delete();
        prune
            .from_table(Alias::new("machine_events"))
            .and_where(Expr::col(Alias::new("at")).lt(now_ms() - MAX_EVENT_AGE_MS));
        self.exec(&prune).await
    }

    /// A fetch of a machine's rendered file, into its timeline: the ones this service answers,
    /// and the ones a gateway answered from its copy and reported ([`Machines::fetch_report`]).
    async fn record_template_fetch(
        &self,
        mac: &str,
        site: &str,
        fetch: TemplateFetch<'_>,
        at: i64,
    ) -> Result<(), ApiError> {
        let fetches = if fetch.count > 1 {
            fetch.count.to_string()
        } else {
            String::new()
        };
        self.record_event(
            mac,
            site,
            "template_fetched",
            detail(&[
                ("template", fetch.template.to_owned()),
                ("fetches", fetches),
                ("bytes", fetch.bytes.to_string()),
                ("peer", fetch.peer.to_owned()),
            ]),
            at,
        )
        .await
    }

    /// Fetches a gateway answered from its copy of a rendered file
    /// ([`subjects::MACHINE_FETCHES`]).
    pub async fn fetch_report(&self, event: proto::BootEvent) -> Result<(), ApiError> {
        validate::artifact_id("artifactId", &event.artifact_id)?;
        let mac = m::mac("mac", &event.mac)?;
        m::template_name("file", &event.file)?;
        let at = if event.at_ms > 0 {
            event.at_ms
        } else {
            now_ms()
        };
        let fetch = TemplateFetch {
            template: &event.file,
            bytes: event.bytes,
            peer: &event.peer,
            count: event.count.max(1),
        };
        self.record_template_fetch(&mac, &event.artifact_id, fetch, at)
            .await
    }

    /// A boot event a distributor published (on its site's subject).
    pub async fn boot_event(&self, site: &str, event: proto::BootEvent) -> Result<(), ApiError> {
        validate::artifact_id("artifactId", site)?;
        let mac = m::mac("mac", &event.mac)?;
        let kind: String = event
            .kind
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(32)
            .collect();
        if kind.is_empty() {
            return Err(ApiError::invalid("kind", "must not be empty"));
        }
        let num = |n: u64| if n == 0 { String::new() } else { n.to_string() };
        let cut = |s: &str| s.chars().take(256).collect::<String>();
        let at = if event.at_ms > 0 {
            event.at_ms
        } else {
            now_ms()
        };
        self.record_event(
            &mac,
            site,
            &kind,
            detail(&[
                ("arch", cut(&event.arch)),
                ("file", cut(&event.file)),
                ("bytes", num(event.bytes)),
                ("durationMs", num(event.duration_ms)),
                ("peer", cut(&event.peer)),
                (
                    "ipxe",
                    if event.ipxe {
                        "true".into()
                    } else {
                        String::new()
                    },
                ),
                ("detail", cut(&event.detail)),
            ]),
            at,
        )
        .await
    }

    async fn timeline(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        let rec = self.machine(&call.id).await?;
        let mut select = Query::select();
        select
            .columns(["kind", "detail", "at"].map(Alias::new))
            .from(Alias::new("machine_events"))
            .and_where(Expr::col(Alias::new("mac")).eq(rec.mac.as_str()))
            .order_by(Alias::new("at"), Order::Asc)
            .order_by(Alias::new("created_at"), Order::Asc)
            .limit(MAX_EVENTS_PER_MAC);
        let events = EventRec::find_by_statement(self.build(&select))
            .all(&self.db)
            .await
            .map_err(db_error)?;
        json(&Timeline {
            machine_id: rec.id,
            mac: rec.mac,
            boots: boots(events),
        })
    }

    // ---- localnodes link ------------------------------------------------------------------

    /// Which machine each node is: the same MAC, else the same IP at the same site.
    pub async fn lookup(&self, req: proto::MachineLookups) -> Result<proto::MachineRefs, ApiError> {
        let mut ids = Vec::with_capacity(req.items.len());
        for item in req.items.iter().take(1000) {
            let mut found = None;
            if let Ok(mac) = m::mac("mac", &item.mac) {
                found = self.machine_where("mac", &mac).await?;
            }
            if found.is_none() && !item.ip.is_empty() {
                let mut select = MACHINES.select();
                select
                    .and_where(Expr::col(Alias::new("ip")).eq(item.ip.as_str()))
                    .and_where(Expr::col(Alias::new("artifact_id")).eq(item.artifact_id.as_str()));
                found = MachineRec::find_by_statement(self.build(&select))
                    .one(&self.db)
                    .await
                    .map_err(db_error)?;
            }
            ids.push(found.map(|r| r.id).unwrap_or_default());
        }
        Ok(proto::MachineRefs { machine_ids: ids })
    }

    // ---- import -----------------------------------------------------------------------------

    async fn import(&self, call: proto::MachinesCall) -> Result<proto::MachinesReply, ApiError> {
        validate::artifact_id("artifactId", &call.id)?;
        let by = format!("import by {}", Caller::Operator(call.actor.clone()).name());
        let report = import::run(self, &call.id, &call.name, &call.body, &by).await?;
        json(&report)
    }

    /// Creates the machine of an imported line, or updates the one with its MAC.
    async fn import_one(
        &self,
        input: MachineInput,
        by: &str,
    ) -> Result<(MachineRec, bool), ApiError> {
        let input = self.checked(input).await?;
        let mac = input
            .mac
            .clone()
            .ok_or_else(|| ApiError::invalid("mac", "is required"))?;
        match self.machine_where("mac", &mac).await? {
            Some(current) => Ok((
                self.update_machine(&current, &input, by, "imported")
                    .await?,
                false,
            )),
            None => Ok((
                self.insert_machine(&uuid::Uuid::new_v4().to_string(), &input, by, "imported")
                    .await?,
                true,
            )),
        }
    }
}

/// What a machine boots, before it becomes a decision.
#[derive(Debug)]
enum Outcome {
    Script(String),
    LocalDisk,
    SiteDefault,
}

/// The iPXE script that boots the local disk, the same the distributor serves for `LOCAL_DISK`
/// (LAB-NOTES-localboot): the first disk by `sanboot`, else back to the firmware (`exit 1` under
/// UEFI: a plain `exit` from an ipxe.efi loaded over PXE leaves OVMF in its setup menu).
pub fn local_disk_script(firmware: &str) -> String {
    let fallback = if firmware == "uefi" { "exit 1" } else { "exit" };
    format!("#!ipxe\necho bootfleet: booting from the local disk\nsanboot --no-describe --drive 0x80 || {fallback}\n")
}

/// DHCP answers of one kind this close together are one round (a DISCOVER and its REQUEST, or
/// a client's quick retries), not two boots; so is a boot decision and the answer it made (ms
/// apart). Short: under emulation a whole boot to an installer's callback takes ~15 s, and the
/// next boot's decision must open a boot of its own.
const SAME_ROUND_MS: i64 = 8_000;

/// What opens a boot: the service's decision for a MAC, or a DHCP answer (or refusal) to the
/// firmware's PXE or to iPXE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    Decision,
    Firmware,
    Ipxe,
}

/// Events in time order grouped into boots, newest boot first, at most [`TIMELINE_BOOTS`]. A
/// boot starts at a boot decision or a DHCP answer: to the firmware's PXE, or to an iPXE that is
/// the firmware (a NIC whose ROM is iPXE, as QEMU's). iPXE's own DHCP round after a firmware's
/// belongs to that boot, and so do a decision and the answer it made, or a repeated answer of the
/// same kind, within [`SAME_ROUND_MS`].
fn boots(events: Vec<EventRec>) -> Vec<TimelineBoot> {
    let mut boots: Vec<TimelineBoot> = Vec::new();
    let mut last_at: Option<i64> = None;
    // The current boot's last round event: its kind and when.
    let mut last_round: Option<(Round, i64)> = None;
    for e in events {
        let detail: BTreeMap<String, String> = serde_json::from_str(&e.detail).unwrap_or_default();
        let ipxe = detail.get("ipxe").map(String::as_str) == Some("true");
        let round = match e.kind.as_str() {
            "boot_decision" => Some(Round::Decision),
            "dhcp_answered" | "dhcp_ignored" if ipxe => Some(Round::Ipxe),
            "dhcp_answered" | "dhcp_ignored" => Some(Round::Firmware),
            _ => None,
        };
        let starts = match (round, last_round) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(now), Some((before, at))) => {
                let close = e.at - at < SAME_ROUND_MS;
                let continues = match (before, now) {
                    // iPXE chained from the firmware's PXE asks again.
                    (Round::Firmware, Round::Ipxe) => true,
                    (Round::Decision, _) | (_, Round::Decision) => close,
                    (a, b) => a == b && close,
                };
                !continues
            }
        };
        if starts {
            last_round = None;
        }
        if let Some(now) = round {
            // A decision leaves the round as it was (the answer it made says which).
            let kept = match (now, last_round) {
                (Round::Decision, Some((before, _))) => before,
                _ => now,
            };
            last_round = Some((kept, e.at));
        }
        if starts || boots.is_empty() {
            boots.push(TimelineBoot {
                started_at: format_timestamp(e.at),
                steps: Vec::new(),
            });
            last_at = None;
        }
        let since = last_at.map(|l| (e.at - l).max(0) as u64).unwrap_or(0);
        last_at = Some(e.at);
        if let Some(boot) = boots.last_mut() {
            boot.steps.push(TimelineStep {
                kind: e.kind,
                at: format_timestamp(e.at),
                since_previous_ms: since,
                detail,
            });
        }
    }
    boots.reverse();
    boots.truncate(TIMELINE_BOOTS);
    boots
}

/// JSON text of a value for a text column.
mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}
use erased::Json as _;

trait WithField {
    fn with_field(self, field: &str) -> Self;
}

impl WithField for ApiError {
    fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }
}

/// The `machines` service; `api_url` is the node-facing API address its scripts and templates
/// name.
pub fn service(api_url: impl Into<String>) -> Service {
    let api_url: Arc<str> = api_url.into().into();
    Service::new(SERVICE, &SCHEMA, move |service, ctx| {
        routes(service, ctx, api_url.clone())
    })
}

/// The `machines` service with the node-facing API address from `BOOTFLEET_NODE_API_URL`, or
/// its default.
pub fn service_from_env() -> Service {
    let url = match std::env::var(NODE_API_URL_ENV) {
        Ok(u) if node_api_url_ok(u.trim()) => u.trim().to_owned(),
        Ok(u) if !u.trim().is_empty() => {
            tracing::warn!(
                value = %u,
                "{NODE_API_URL_ENV} is not an http(s) URL without spaces; using {DEFAULT_NODE_API_URL}"
            );
            DEFAULT_NODE_API_URL.to_owned()
        }
        _ => DEFAULT_NODE_API_URL.to_owned(),
    };
    service(url)
}

/// An `http://` or `https://` URL with a host and nothing a template or iPXE would split on.
fn node_api_url_ok(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/'))
        && url.len() <= 512
        && !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '"' | '\''))
}

static SCHEMA: Schema = Schema::new::<MachinesMigrator>(&[
    "machines",
    "machine_history",
    "machine_profiles",
    "machine_sites",
    "machine_events",
    "machine_keys",
]);

type Handler = fn(
    Machines,
    proto::MachinesCall,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<proto::MachinesReply, ApiError>> + Send>,
>;

macro_rules! handler {
    ($method:ident) => {
        (|m: Machines, call: proto::MachinesCall| Box::pin(async move { m.$method(call).await }))
            as Handler
    };
}

fn handlers() -> Vec<(&'static str, Handler)> {
    vec![
        (ops::CREATE, handler!(create)),
        (ops::LIST, handler!(list)),
        (ops::GET, handler!(get)),
        (ops::UPDATE, handler!(update)),
        (ops::DELETE, handler!(delete)),
        (ops::STATE, handler!(set_state)),
        (ops::HISTORY, handler!(history)),
        (ops::IMPORT, handler!(import)),
        (ops::EVENT, handler!(event)),
        (ops::INVENTORY, handler!(inventory)),
        (ops::SCRIPT, handler!(script)),
        (ops::FILE, handler!(file)),
        (ops::TIMELINE, handler!(timeline)),
        (ops::PROFILE_CREATE, handler!(profile_create)),
        (ops::PROFILE_LIST, handler!(profile_list)),
        (ops::PROFILE_GET, handler!(profile_get)),
        (ops::PROFILE_PUT, handler!(profile_put)),
        (ops::PROFILE_DELETE, handler!(profile_delete)),
        (ops::SITE_GET, handler!(site_get)),
        (ops::SITE_PUT, handler!(site_put)),
        (ops::SEAL_KEY, handler!(seal_key)),
    ]
}

/// Follows every site's boot events and the gateways' fetch reports (one instance of the
/// service's queue group takes each) and stores them under their MACs.
async fn consume_boot_events(
    machines: Machines,
    mut sub: async_nats::Subscriber,
    mut fetches: async_nats::Subscriber,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use futures_util::StreamExt;
    use prost::Message;
    let prefix = subjects::ALL_BOOT_EVENTS.trim_end_matches('>');
    let mut prune = tokio::time::interval(EVENT_PRUNE_EVERY);
    loop {
        let msg = tokio::select! {
            msg = sub.next() => match msg { Some(m) => m, None => break },
            report = fetches.next() => {
                let Some(report) = report else { break };
                let event = (report.payload.len() <= 4096)
                    .then(|| proto::BootEvent::decode(report.payload.clone()).ok())
                    .flatten();
                if let Some(event) = event {
                    if let Err(e) = machines.fetch_report(event).await {
                        tracing::debug!(error = %e.message, "fetch report not stored");
                    }
                }
                continue;
            }
            _ = prune.tick() => {
                if let Err(e) = machines.prune_old_events().await {
                    tracing::warn!(error = %e.message, "old boot events not pruned");
                }
                continue;
            }
            _ = stop.changed() => break,
        };
        if msg.payload.len() > 4096 {
            continue;
        }
        let Some(site) = msg.subject.as_str().strip_prefix(prefix) else {
            continue;
        };
        let Ok(event) = proto::BootEvent::decode(msg.payload.clone()) else {
            continue;
        };
        if let Err(e) = machines.boot_event(site, event).await {
            tracing::debug!(error = %e.message, "boot event not stored");
        }
    }
    let _ = sub.unsubscribe().await;
    let _ = fetches.unsubscribe().await;
}

async fn routes(service: ServiceBuilder, ctx: Context, api_url: Arc<str>) -> Routes {
    let machines = Machines::open(ctx.db.clone(), &api_url)
        .await
        .map_err(|e| StartError::Setup(e.message))?
        .with_bus(ctx.bus.clone());
    // Subscribed here, so the service's start confirms it with its routes.
    let events = ctx
        .bus
        .client()
        .queue_subscribe(subjects::ALL_BOOT_EVENTS, SERVICE.to_owned())
        .await
        .map_err(|e| StartError::Setup(format!("cannot follow boot events: {e}")))?;
    let fetches = ctx
        .bus
        .client()
        .queue_subscribe(subjects::MACHINE_FETCHES, SERVICE.to_owned())
        .await
        .map_err(|e| {
            StartError::Setup(format!("cannot follow the gateways' fetch reports: {e}"))
        })?;
    let background = machines.clone();
    let mut routes = service
        .background(move |stop| consume_boot_events(background, events, fetches, stop))
        .with_state(machines);
    for (op, handler) in handlers() {
        routes = routes.route(subjects::machines_op(op), move |m: Machines, _, call| {
            handler(m, call)
        });
    }
    let routes = routes.route(
        subjects::machines_op(ops::POWER),
        |m: Machines, ctx, call| async move { m.power_call(&ctx.trace, call).await },
    );
    let routes = handlers!(routes, Machines, sites [subjects::machines_boots() => decide]);
    Ok(handlers!(routes, Machines, [subjects::machines_lookup() => lookup]).builder())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, at: i64, ipxe: bool) -> EventRec {
        let mut d = BTreeMap::new();
        if ipxe {
            d.insert("ipxe".to_owned(), "true".to_owned());
        }
        EventRec {
            kind: kind.into(),
            detail: serde_json::to_string(&d).unwrap_or_default(),
            at,
        }
    }

    #[test]
    fn node_api_urls() {
        for good in ["http://10.0.2.100:8080", "https://boot.example/bootfleet"] {
            assert!(node_api_url_ok(good), "{good}");
        }
        for bad in [
            "",
            "10.0.2.100:8080",
            "http://",
            "http:///x",
            "http://a b",
            "ftp://x",
            "http://x/?a",
        ] {
            assert!(!node_api_url_ok(bad), "{bad}");
        }
    }

    #[test]
    fn boots_start_at_the_firmware_dhcp_answer() {
        let b = boots(vec![
            ev("dhcp_answered", 1000, false),
            ev("tftp_served", 1500, false),
            ev("dhcp_answered", 2000, true),
            ev("script_fetched", 2100, false),
            ev("dhcp_answered", 9000, false),
            ev("boot_decision", 9001, false),
        ]);
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].steps.len(), 4);
        assert_eq!(b[1].steps[1].since_previous_ms, 500);
        assert_eq!(b[0].steps[1].since_previous_ms, 1);
    }

    #[test]
    fn a_nic_whose_rom_is_ipxe_starts_a_boot_at_each_dhcp_round() {
        let b = boots(vec![
            ev("dhcp_answered", 1000, true),
            ev("dhcp_answered", 1200, true),
            ev("tftp_served", 1500, false),
            ev("inventory", 20_000, false),
            ev("dhcp_answered", 60_000, true),
            ev("tftp_served", 60_500, false),
        ]);
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[1].steps.len(), 4);
        assert_eq!(b[0].steps.len(), 2);
        assert_eq!(b[0].steps[1].since_previous_ms, 500);
    }

    #[test]
    fn a_boot_decision_opens_the_boot_its_answer_belongs_to() {
        let b = boots(vec![
            ev("boot_decision", 0, false),
            ev("dhcp_answered", 5, false),
            ev("tftp_served", 900, false),
            ev("dhcp_answered", 2_000, true),
            ev("installed", 20_000, false),
            ev("boot_decision", 40_000, false),
            ev("dhcp_answered", 40_005, true),
            ev("tftp_served", 40_100, false),
        ]);
        assert_eq!(b.len(), 2, "{b:?}");
        let kinds = |i: usize| {
            b[i].steps
                .iter()
                .map(|s| s.kind.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(1),
            [
                "boot_decision",
                "dhcp_answered",
                "tftp_served",
                "dhcp_answered",
                "installed"
            ]
        );
        assert_eq!(kinds(0), ["boot_decision", "dhcp_answered", "tftp_served"]);
    }
}
