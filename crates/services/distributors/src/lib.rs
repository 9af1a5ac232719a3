//! The `distributors` service: the registry of site agents. A distributor registers itself with
//! its first heartbeat (upsert by artifact id) and keeps its row fresh; a missed heartbeat only
//! turns `online` false, it never removes the row. The operator's on/off is stored here, pushed
//! to the distributor at once, and returned with every heartbeat so the agent converges.

mod migrations;

use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, validate, ApiError, ErrorCode, ListParams};
use bootfleet_bus::{Bus, ServiceBuilder};
use bootfleet_service_kit::{handlers, Context, Routes, Service};
use bootfleet_store::sea_orm::sea_query::{Alias, Expr, OnConflict, Query, SimpleExpr};
use bootfleet_store::sea_orm::{ConnectionTrait, FromQueryResult};
use bootfleet_store::{db_error, now_ms, Database, TableSpec};
use prost::Message;

pub use migrations::DistributorsMigrator;

const SERVICE: &str = subjects::DISTRIBUTORS;
/// Three missed heartbeats (sent every 5 s) and a distributor counts as offline.
pub const ONLINE_WINDOW_MS: i64 = 15_000;
const MAX_INTERFACES: usize = 64;
const MAX_TEXT: usize = 255;

static SPEC: TableSpec = TableSpec {
    table: "distributors",
    fields: &[
        ("id", "id"),
        ("artifactId", "artifact_id"),
        ("hostname", "hostname"),
        ("version", "version"),
        ("interfaces", "interfaces"),
        ("on", "switched_on"),
        ("serving", "serving"),
        ("lastSeen", "last_seen"),
        ("dhcpAnswered", "dhcp_answered"),
        ("tftpCompleted", "tftp_completed"),
        ("createdAt", "created_at"),
        ("updatedAt", "updated_at"),
        ("config", "config"),
        ("bootFiles", "boot_files"),
    ],
    list: bootfleet_api::list::fields::DISTRIBUTORS,
};

#[derive(Debug, FromQueryResult)]
struct Record {
    id: String,
    artifact_id: String,
    hostname: String,
    version: String,
    interfaces: String,
    switched_on: bool,
    serving: bool,
    last_seen: i64,
    dhcp_answered: i64,
    tftp_completed: i64,
    created_at: i64,
    updated_at: i64,
    config: Vec<u8>,
    boot_files: Vec<u8>,
}

/// The columns a heartbeat writes (the configuration columns keep their defaults).
const HEARTBEAT_COLUMNS: [&str; 13] = [
    "id",
    "artifact_id",
    "hostname",
    "version",
    "interfaces",
    "switched_on",
    "serving",
    "last_seen",
    "dhcp_answered",
    "tftp_completed",
    "created_at",
    "updated_at",
    "boot_files",
];

impl Record {
    fn into_proto(self, now: i64) -> proto::Distributor {
        proto::Distributor {
            online: self.last_seen > 0 && now - self.last_seen <= ONLINE_WINDOW_MS,
            id: self.id,
            artifact_id: self.artifact_id,
            hostname: self.hostname,
            version: self.version,
            interfaces: self
                .interfaces
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            on: self.switched_on,
            serving: self.serving,
            last_seen_ms: self.last_seen,
            dhcp_answered: u64::try_from(self.dhcp_answered).unwrap_or(0),
            tftp_completed: u64::try_from(self.tftp_completed).unwrap_or(0),
            created_at_ms: self.created_at,
            updated_at_ms: self.updated_at,
            config: (!self.config.is_empty())
                .then(|| proto::DistributorConfig::decode(self.config.as_slice()).ok())
                .flatten(),
            boot_files: proto::DistributorConfigApplied::decode(self.boot_files.as_slice())
                .map(|a| a.files)
                .unwrap_or_default(),
        }
    }
}

/// Interface names: shorter than IFNAMSIZ (16), of the characters real names use. Linux allows
/// more, but nothing a device name needs, and these never need quoting anywhere.
fn interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':'))
}

fn bounded(field: &str, value: &str) -> Result<(), ApiError> {
    validate::printable(field, value, MAX_TEXT)
}

#[derive(Clone, Debug)]
pub struct Distributors {
    db: Database,
    bus: Bus,
}

impl Distributors {
    pub fn new(db: Database, bus: Bus) -> Self {
        Distributors { db, bus }
    }

    async fn find(&self, column: &str, value: &str) -> Result<Option<Record>, ApiError> {
        bootfleet_store::one_where(&self.db, &SPEC, column, value).await
    }

    /// Registers or refreshes the distributor; answers with its row (and so the wanted status).
    pub async fn heartbeat(
        &self,
        hb: proto::DistributorHeartbeat,
    ) -> Result<proto::Distributor, ApiError> {
        validate::artifact_id("artifactId", &hb.artifact_id)?;
        bounded("hostname", &hb.hostname)?;
        bounded("version", &hb.version)?;
        if hb.interfaces.len() > MAX_INTERFACES || !hb.interfaces.iter().all(|i| interface_name(i))
        {
            return Err(ApiError::invalid(
                "interfaces",
                "must be at most 64 interface names",
            ));
        }
        let now = now_ms();
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new(SPEC.table))
            .columns(HEARTBEAT_COLUMNS.map(Alias::new))
            .values_panic([
                uuid::Uuid::new_v4().to_string().into(),
                hb.artifact_id.clone().into(),
                hb.hostname.into(),
                hb.version.into(),
                hb.interfaces.join(",").into(),
                // A new distributor serves as it was started to; the operator can switch it off.
                true.into(),
                hb.serving.into(),
                now.into(),
                clamp(hb.dhcp_answered).into(),
                clamp(hb.tftp_completed).into(),
                now.into(),
                now.into(),
                proto::DistributorConfigApplied {
                    files: hb.boot_files,
                }
                .encode_to_vec()
                .into(),
            ])
            .on_conflict(
                OnConflict::column(Alias::new("artifact_id"))
                    .update_columns(
                        [
                            "hostname",
                            "version",
                            "interfaces",
                            "serving",
                            "last_seen",
                            "dhcp_answered",
                            "tftp_completed",
                            "updated_at",
                            "boot_files",
                        ]
                        .map(Alias::new),
                    )
                    .to_owned(),
            );
        self.db
            .execute(self.db.get_database_backend().build(&insert))
            .await
            .map_err(db_error)?;
        self.find("artifact_id", &hb.artifact_id)
            .await?
            .map(|r| r.into_proto(now_ms()))
            .ok_or_else(|| ApiError::internal("registered distributor vanished"))
    }

    pub async fn get(&self, req: proto::IdRequest) -> Result<proto::Distributor, ApiError> {
        let id = validate::id("id", &req.id)?;
        self.find("id", &id)
            .await?
            .map(|r| r.into_proto(now_ms()))
            .ok_or_else(|| ApiError::not_found(format!("distributor {id}")))
    }

    pub async fn list(&self, req: proto::ListRequest) -> Result<proto::DistributorList, ApiError> {
        let params = ListParams::from_proto(&req)?;
        let (rows, total) = bootfleet_store::list::<Record>(&self.db, &SPEC, &params).await?;
        let now = now_ms();
        Ok(proto::DistributorList {
            rows: rows.into_iter().map(|r| r.into_proto(now)).collect(),
            total,
        })
    }

    /// The row `id`, when `artifact_id` (the site the operator's body names, if any) is its site.
    async fn current(&self, id: &str, artifact_id: &str) -> Result<proto::Distributor, ApiError> {
        let current = self.get(proto::IdRequest { id: id.to_owned() }).await?;
        if !artifact_id.is_empty() && artifact_id != current.artifact_id {
            return Err(ApiError::invalid(
                "artifactId",
                format!(
                    "does not match distributor {} ({})",
                    current.id, current.artifact_id
                ),
            ));
        }
        Ok(current)
    }

    /// Stores the operator's on/off and pushes the row to the distributor.
    pub async fn set_status(
        &self,
        req: proto::SetDistributorStatus,
    ) -> Result<proto::Distributor, ApiError> {
        let current = self.current(&req.id, &req.artifact_id).await?;
        let row = self
            .update_row(current.id, [("switched_on", req.on.into())])
            .await?;
        // Best effort: an offline distributor learns it from its next heartbeat.
        let subject = subjects::distributor_control(&row.artifact_id);
        if let Err(e) = self
            .bus
            .client()
            .publish(subject, row.encode_to_vec().into())
            .await
        {
            tracing::warn!(artifact_id = %row.artifact_id, error = %e, "cannot push the status; the next heartbeat carries it");
        }
        Ok(row)
    }
}

/// How long a distributor may take to fetch, verify and install its boot files.
const APPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Distributors {
    /// Resolves an ipxes artifact for a role and checks it fits (`done`, the right platform).
    async fn boot_file(
        &self,
        field: &'static str,
        role: &str,
        value: &str,
        platforms: &[(&str, &[&str])],
    ) -> Result<proto::DistributorBootFile, ApiError> {
        use bootfleet_api::artifacts::{artifact_id_of, ArtifactKind, IpxeInput};
        let id = artifact_id_of(field, value, ArtifactKind::Ipxes)?;
        let artifact: proto::Artifact = self
            .bus
            .request(
                &bootfleet_bus::TraceParent::new_root(),
                &subjects::subject(subjects::ARTIFACTS, Op::Get),
                &proto::ArtifactRef {
                    kind: ArtifactKind::Ipxes.name().into(),
                    id: id.clone(),
                },
            )
            .await
            .map_err(|e| match e.code {
                ErrorCode::NotFound => {
                    ApiError::invalid(field, format!("names no ipxe of this system ({id})"))
                }
                _ => e,
            })?;
        let input: IpxeInput = serde_json::from_str(&artifact.inputs_json)
            .map_err(|e| ApiError::internal(format!("ipxe {id} has unreadable inputs: {e}")))?;
        let fits = platforms
            .iter()
            .any(|(p, exts)| input.platform == *p && exts.contains(&input.extension.as_str()));
        if !fits {
            let wanted: Vec<String> = platforms
                .iter()
                .map(|(p, exts)| format!("{p} ({})", exts.join(", ")))
                .collect();
            return Err(ApiError::invalid(
                field,
                format!(
                    "ipxe {id} is {}/{}.{}; {role} clients need {}",
                    input.platform,
                    input.driver,
                    input.extension,
                    wanted.join(" or ")
                ),
            ));
        }
        if artifact.status != "done" {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("ipxe {id} is {}, not built yet", artifact.status),
            ));
        }
        Ok(proto::DistributorBootFile {
            role: role.to_owned(),
            artifact: id,
            key: artifact.key,
            files: artifact.files,
        })
    }

    /// Validates the operator's configuration, has the distributor apply it (it fetches and
    /// verifies the files), and stores it with what the distributor now serves.
    pub async fn configure(
        &self,
        req: proto::ConfigureDistributor,
    ) -> Result<proto::Distributor, ApiError> {
        let current = self.current(&req.id, &req.artifact_id).await?;
        if !current.interfaces.contains(&req.device) {
            return Err(ApiError::invalid(
                "device",
                format!(
                    "is not an interface of distributor {} (it reported: {})",
                    current.artifact_id,
                    current.interfaces.join(", ")
                ),
            ));
        }
        validate::ipv4_range("range", &req.range)?;
        let mut boot = Vec::new();
        if !req.ipxe_pxe_uefi.is_empty() {
            boot.push(
                self.boot_file(
                    "ipxePxeUefiUrl",
                    "uefi_x64",
                    &req.ipxe_pxe_uefi,
                    &[("bin-x86_64-efi", &["efi"])],
                )
                .await?,
            );
        }
        if !req.ipxe_pxe_bios.is_empty() {
            boot.push(
                self.boot_file(
                    "ipxePxeBiosUrl",
                    "bios",
                    &req.ipxe_pxe_bios,
                    &[("bin-x86_64-pcbios", &["kpxe", "kkpxe", "pxe"])],
                )
                .await?,
            );
        }
        if boot.is_empty() {
            return Err(ApiError::invalid(
                "ipxePxeUefiUrl",
                "name at least one of ipxePxeUefiUrl and ipxePxeBiosUrl",
            ));
        }
        if !current.online {
            return Err(ApiError::unavailable(format!(
                "distributor {} is offline; it must be online to take a configuration",
                current.artifact_id
            )));
        }
        let config = proto::DistributorConfig {
            device: req.device,
            range: req.range,
            boot,
        };
        let applied: proto::DistributorConfigApplied = self
            .bus
            .with_timeout(APPLY_TIMEOUT, 1)
            .request(
                &bootfleet_bus::TraceParent::new_root(),
                &subjects::distributor_apply(&current.artifact_id),
                &config,
            )
            .await
            .map_err(|e| match e.code {
                ErrorCode::Unavailable | ErrorCode::Timeout => ApiError::unavailable(format!(
                    "distributor {} did not take the configuration: {}",
                    current.artifact_id, e.message
                )),
                _ => e,
            })?;
        self.update_row(
            current.id,
            [
                ("config", config.encode_to_vec().into()),
                ("boot_files", applied.encode_to_vec().into()),
            ],
        )
        .await
    }

    /// Sets `values` and `updated_at` on the row `id`; answers the row as it is now.
    async fn update_row<const N: usize>(
        &self,
        id: String,
        values: [(&'static str, SimpleExpr); N],
    ) -> Result<proto::Distributor, ApiError> {
        let mut update = Query::update();
        update
            .table(Alias::new(SPEC.table))
            .values(
                values
                    .into_iter()
                    .chain([("updated_at", now_ms().into())])
                    .map(|(column, value)| (Alias::new(column), value)),
            )
            .and_where(Expr::col(Alias::new("id")).eq(id.as_str()));
        self.db
            .execute(self.db.get_database_backend().build(&update))
            .await
            .map_err(db_error)?;
        self.get(proto::IdRequest { id }).await
    }
}

/// The `distributors` service.
pub fn service() -> Service {
    Service::new(SERVICE, &migrations::SCHEMA, routes)
}

async fn routes(service: ServiceBuilder, ctx: Context) -> Routes {
    let service = service.with_state(Distributors::new(ctx.db.clone(), ctx.bus.clone()));
    let service = handlers!(service, Distributors, sites [
        subjects::distributor_heartbeats() => heartbeat,
    ]);
    Ok(handlers!(service, Distributors, [
        subjects::subject(SERVICE, Op::Get) => get,
        subjects::subject(SERVICE, Op::List) => list,
        subjects::distributor_set_status() => set_status,
        subjects::distributor_configure() => configure,
    ])
    .builder())
}

#[cfg(test)]
mod tests {
    use super::interface_name;

    #[test]
    fn interface_names() {
        for good in ["eth0", "enp3s0", "br-lan", "wlan0.100", "i0"] {
            assert!(interface_name(good), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "eth 0",
            "x,y",
            "sixteen-chars-xx",
            "..",
            "eth0;reboot",
        ] {
            assert!(!interface_name(bad), "{bad}");
        }
    }
}
