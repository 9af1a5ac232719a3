//! Machines' BMCs and power: the BMC password is opened from the gateway's sealed box, kept
//! encrypted at rest, decrypted only to build the one request to the machine's site
//! distributor, which runs the operation (`bootfleet_site_agent::power`).

use std::time::Duration;

use bootfleet_api::machines::{BmcInput, BmcProtocol, BmcRow, PowerInput, PowerResult, PowerState};
use bootfleet_api::{proto, subjects, ApiError, ErrorCode};
use bootfleet_bus::TraceParent;
use bootfleet_sealbox::{AtRest, SealKey};
use bootfleet_store::sea_orm::sea_query::{Alias, UpdateStatement};
use serde::Serialize;

use crate::{body, json, MachineRec, Machines};

/// How long the service waits for the distributor's answer. The distributor bounds its own
/// work below this (`bootfleet_site_agent::power::DEADLINE`), and the gateway waits a little
/// longer than this, within its own request timeout (30 s by default).
pub const POWER_WAIT: Duration = Duration::from_secs(27);

/// The keys of BMC passwords, derived from the service's secret (the machine token key) under
/// their own labels: nothing new to store, and a new secret retires them all together.
pub(crate) struct BmcKeys {
    at_rest: AtRest,
    seal: SealKey,
}

bootfleet_api::debug_fields!(BmcKeys as k { seal, .. });

impl BmcKeys {
    pub(crate) fn derive(secret: &[u8]) -> BmcKeys {
        BmcKeys {
            at_rest: AtRest::derive(secret, "bootfleet machines bmc password at rest v1"),
            seal: SealKey::derive(secret, "bootfleet machines bmc password seal v1"),
        }
    }
}

/// `seal-key`'s answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SealKeyReply {
    public_key: String,
}

impl MachineRec {
    pub(crate) fn bmc_row(&self) -> Option<BmcRow> {
        let protocol = BmcProtocol::parse(&self.bmc_protocol)?;
        Some(BmcRow {
            protocol,
            address: self.bmc_address.clone(),
            username: self.bmc_username.clone(),
            password_set: !self.bmc_password.is_empty(),
            ca_certificate: (!self.bmc_ca_certificate.is_empty())
                .then(|| self.bmc_ca_certificate.clone()),
            insecure: self.bmc_insecure,
            system_id: (!self.bmc_system_id.is_empty()).then(|| self.bmc_system_id.clone()),
        })
    }

    /// `node-1 (<id>)`, or the id alone: how errors name the machine.
    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.id),
            None => self.id.clone(),
        }
    }
}

impl Machines {
    /// Validates a BMC and opens its sealed password: what comes back carries the cleartext
    /// in `password` (for [`Machines::set_bmc`] to encrypt) and no sealed one.
    pub(crate) fn checked_bmc(&self, mut bmc: BmcInput) -> Result<BmcInput, ApiError> {
        if let Some(sealed) = bmc.sealed_password.take() {
            if bmc.password.is_some() {
                return Err(ApiError::invalid(
                    "bmc.password",
                    "give password or sealedPassword, not both",
                ));
            }
            let opened = self.bmc.seal.open(&sealed).map_err(|e| {
                ApiError::invalid(
                    "bmc.sealedPassword",
                    format!("must be sealed to this service's key (op seal-key): {e}"),
                )
            })?;
            let text = String::from_utf8(opened)
                .map_err(|_| ApiError::invalid("bmc.sealedPassword", "must seal UTF-8 text"))?;
            bmc.password = Some(text);
        }
        bmc.validated()
    }

    /// Writes `bmc` (or clears it) into `update`; a BMC without a password keeps the stored
    /// one. The password is encrypted, bound to machine `id`.
    pub(crate) fn set_bmc(&self, update: &mut UpdateStatement, id: &str, bmc: Option<&BmcInput>) {
        let col = Alias::new;
        let Some(bmc) = bmc else {
            for c in [
                "bmc_protocol",
                "bmc_address",
                "bmc_username",
                "bmc_password",
                "bmc_ca_certificate",
                "bmc_system_id",
            ] {
                update.value(col(c), "");
            }
            update.value(col("bmc_insecure"), false);
            return;
        };
        update
            .value(col("bmc_protocol"), bmc.protocol.as_str())
            .value(col("bmc_address"), bmc.address.as_str())
            .value(col("bmc_username"), bmc.username.as_str())
            .value(
                col("bmc_ca_certificate"),
                bmc.ca_certificate.clone().unwrap_or_default(),
            )
            .value(col("bmc_insecure"), bmc.insecure)
            .value(
                col("bmc_system_id"),
                bmc.system_id.clone().unwrap_or_default(),
            );
        if let Some(password) = &bmc.password {
            update.value(
                col("bmc_password"),
                self.bmc.at_rest.encrypt(password.as_bytes(), id),
            );
        }
    }

    /// The public key the gateway seals BMC passwords to.
    pub(crate) async fn seal_key(
        &self,
        _call: proto::MachinesCall,
    ) -> Result<proto::MachinesReply, ApiError> {
        json(&SealKeyReply {
            public_key: self.bmc.seal.public_hex(),
        })
    }

    /// The bus operation `power` (`PowerInput` → `PowerResult`), for an admin.
    pub(crate) async fn power_call(
        &self,
        trace: &TraceParent,
        call: proto::MachinesCall,
    ) -> Result<proto::MachinesReply, ApiError> {
        match call.role.as_str() {
            "admin" => {}
            "" => {
                return Err(ApiError::new(
                    ErrorCode::Unauthenticated,
                    "token: an operator token is required",
                ))
            }
            role => {
                return Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    format!("a {role} token may not do this"),
                ))
            }
        }
        let input: PowerInput = body(&call)?;
        json(&self.power(trace, &call.id, input, &call.actor).await?)
    }

    /// Powers machine `id` through its BMC, in its site's distributor: one request, the only
    /// message that carries the BMC's password.
    pub async fn power(
        &self,
        trace: &TraceParent,
        id: &str,
        input: PowerInput,
        actor: &str,
    ) -> Result<PowerResult, ApiError> {
        let rec = self.machine(id).await?;
        let label = rec.label();
        if rec.bmc_protocol.is_empty() {
            return Err(ApiError::invalid(
                "bmc",
                format!("machine {label} has no bmc: set its bmc first"),
            ));
        }
        if rec.bmc_password.is_empty() {
            return Err(ApiError::invalid(
                "bmc.password",
                format!("machine {label} has no bmc password: set it first"),
            ));
        }
        let password = self
            .bmc
            .at_rest
            .decrypt(&rec.bmc_password, &rec.id)
            .ok()
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "the stored bmc password of machine {label} does not decrypt"
                ))
            })?;
        let bus = self
            .bus
            .as_ref()
            .ok_or_else(|| ApiError::internal("the machines service has no bus"))?;
        let request = proto::PowerRequest {
            artifact_id: rec.artifact_id.clone(),
            machine_id: rec.id.clone(),
            machine_name: rec.name.clone().unwrap_or_default(),
            protocol: rec.bmc_protocol.clone(),
            address: rec.bmc_address.clone(),
            username: rec.bmc_username.clone(),
            password,
            ca_certificate: rec.bmc_ca_certificate.clone(),
            insecure: rec.bmc_insecure,
            system_id: rec.bmc_system_id.clone(),
            action: input.action.as_str().to_owned(),
            boot_device: input
                .boot_device
                .map(|d| d.as_str().to_owned())
                .unwrap_or_default(),
        };
        tracing::info!(
            machine = %rec.id,
            action = input.action.as_str(),
            boot_device = ?input.boot_device,
            bmc = %rec.bmc_address,
            by = actor,
            "power requested"
        );
        let reply: proto::PowerReply = bus
            .with_timeout(POWER_WAIT, 1)
            .request(
                trace,
                &subjects::distributor_power(&rec.artifact_id),
                &request,
            )
            .await
            .map_err(|e| match e.code {
                // The bus's own errors (the distributor's name the machine already).
                ErrorCode::Unavailable if e.message.starts_with("no instance") => {
                    ApiError::unavailable(format!(
                        "machine {label}: no distributor of site {} is online to reach its bmc at {}",
                        rec.artifact_id, rec.bmc_address
                    ))
                }
                ErrorCode::Timeout if !e.message.starts_with("machine ") => ApiError::new(
                    ErrorCode::Timeout,
                    format!(
                        "machine {label}: the distributor of site {} did not answer within {} s (bmc {})",
                        rec.artifact_id,
                        POWER_WAIT.as_secs(),
                        rec.bmc_address
                    ),
                ),
                _ => e,
            })?;
        tracing::info!(machine = %rec.id, power_state = %reply.power_state, "power done");
        Ok(PowerResult {
            machine_id: rec.id,
            action: input.action,
            power_state: PowerState::parse(&reply.power_state),
            boot_device: input.boot_device,
            message: reply.message,
        })
    }
}
