//! Per-MAC boot decisions (issue 15): what the `machines` service says each PXE client of this
//! site gets, asked over NATS (`BootDecisionRequest` on `machines_boot(<site>)`), cached, and
//! turned into what proxyDHCP and TFTP serve.
//!
//! - The DHCP socket loop never waits: a client without a fresh answer is decided in a task of
//!   its own, which asks with a short timeout ([`REQUEST_TIMEOUT`]) and then answers.
//! - Each answer is kept for its `max_age_secs`, at most [`MAX_AGE`]; a stale one stays as the
//!   MAC's *last known* answer (at most [`MAX_ENTRIES`] MACs, the oldest answer evicted first).
//! - While NATS is away, or the machines service times out or has no instance, a MAC with a
//!   last known answer keeps getting it (logged); a MAC without one gets the site default, which
//!   is exactly what the distributor did before machines existed.
//! - `SCRIPT` and `LOCAL_DISK` reach the MAC's iPXE as a per-MAC file over TFTP
//!   ([`script_file_name`]); the file is computed from the MAC's last answer when asked for, and
//!   only served to the client the kernel's neighbour table knows under that MAC.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bootfleet_api::proto::{self, boot_decision::Action};
use bootfleet_api::subjects;
use bootfleet_bus::{Bus, TraceParent};
use prost::Message;

/// How long a DHCP answer may wait for the machines service. PXE firmware and iPXE collect
/// proxy offers for a second or more after the site server's offer, and retry DISCOVER; a
/// local answer takes a few milliseconds (measured in the lab test), so 750 ms leaves room for
/// a loaded service and still answers inside the client's first round.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(750);
/// The longest an answer is used without asking again, whatever `max_age_secs` says.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// How many MACs' answers are kept.
pub const MAX_ENTRIES: usize = 4096;
/// After a timeout or a lost connection, answer from the cache without asking for this long
/// (a booting site must not wait `REQUEST_TIMEOUT` per packet while NATS is away).
const BACKOFF: Duration = Duration::from_secs(5);
/// After "no responders" (no machines service deployed), do not ask for this long.
const NO_RESPONDERS_BACKOFF: Duration = Duration::from_secs(2);
/// Decisions waiting for the service at once; more are answered from the cache at once.
const MAX_PENDING: usize = 256;
/// The longest script accepted from the service.
const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Per-MAC script files: `bootfleet-mac-<12 hex digits>.ipxe`.
const FILE_PREFIX: &str = "bootfleet-mac-";
const FILE_SUFFIX: &str = ".ipxe";
/// The script iPXE for UEFI asks TFTP for before its own DHCP round.
pub const EFI_AUTOEXEC: &str = "autoexec.ipxe";

/// The firmware of a client, from DHCP option 93.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
    Unknown,
}

impl Firmware {
    pub fn as_str(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::Unknown => "",
        }
    }
}

/// What one MAC gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MacBoot {
    /// No answer at all.
    Ignore,
    /// The site's configured boot file and script, as before machines existed.
    SiteDefault,
    /// This iPXE script.
    Script { script: String, machine_id: String },
    /// The firmware's local-boot script.
    LocalDisk { machine_id: String },
}

impl MacBoot {
    pub fn name(&self) -> &'static str {
        match self {
            MacBoot::Ignore => "ignore",
            MacBoot::SiteDefault => "site_default",
            MacBoot::Script { .. } => "script",
            MacBoot::LocalDisk { .. } => "local_disk",
        }
    }

    pub fn machine_id(&self) -> &str {
        match self {
            MacBoot::Script { machine_id, .. } | MacBoot::LocalDisk { machine_id } => machine_id,
            MacBoot::Ignore | MacBoot::SiteDefault => "",
        }
    }

    /// Reads the service's answer; anything unusable is the site default (and says why).
    pub fn from_decision(d: &proto::BootDecision) -> Result<MacBoot, String> {
        match Action::try_from(d.action) {
            Ok(Action::Ignore) => Ok(MacBoot::Ignore),
            Ok(Action::SiteDefault) => Ok(MacBoot::SiteDefault),
            Ok(Action::LocalDisk) => Ok(MacBoot::LocalDisk {
                machine_id: bounded(&d.machine_id),
            }),
            Ok(Action::Script) => {
                if d.ipxe_script.trim().is_empty() {
                    Err("script decision without a script".into())
                } else if d.ipxe_script.len() > MAX_SCRIPT_BYTES {
                    Err(format!(
                        "script of {} bytes is longer than {MAX_SCRIPT_BYTES}",
                        d.ipxe_script.len()
                    ))
                } else {
                    Ok(MacBoot::Script {
                        script: d.ipxe_script.clone(),
                        machine_id: bounded(&d.machine_id),
                    })
                }
            }
            Ok(Action::Unspecified) | Err(_) => Err(format!("unknown action {}", d.action)),
        }
    }
}

fn bounded(s: &str) -> String {
    s.chars().take(128).collect()
}

/// Where a decision came from (for the log and the boot event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Asked just now.
    Machines,
    /// A fresh cached answer.
    Cache,
    /// A stale answer, because the service could not be asked (NATS away, timeout).
    LastKnown,
    /// Nothing known and the service not asked or not answering: the site default.
    Default,
    /// No NATS configured: the site default, as always.
    Local,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Machines => "machines",
            Source::Cache => "cache",
            Source::LastKnown => "last_known",
            Source::Default => "default",
            Source::Local => "local",
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    boot: MacBoot,
    firmware: Firmware,
    fetched: Instant,
    max_age: Duration,
}

/// The answers kept per MAC (pure: the caller says what time it is).
#[derive(Debug)]
pub struct DecisionCache {
    entries: HashMap<[u8; 6], Entry>,
    max_entries: usize,
}

impl DecisionCache {
    pub fn new(max_entries: usize) -> DecisionCache {
        DecisionCache {
            entries: HashMap::new(),
            max_entries: max_entries.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The MAC's answer if it is younger than its max age.
    pub fn fresh(&self, mac: [u8; 6], now: Instant) -> Option<&MacBoot> {
        self.entries
            .get(&mac)
            .filter(|e| now.saturating_duration_since(e.fetched) < e.max_age)
            .map(|e| &e.boot)
    }

    /// The MAC's last answer, however old.
    pub fn last_known(&self, mac: [u8; 6]) -> Option<&MacBoot> {
        self.entries.get(&mac).map(|e| &e.boot)
    }

    /// The firmware the MAC's last request said.
    pub fn firmware(&self, mac: [u8; 6]) -> Option<Firmware> {
        self.entries.get(&mac).map(|e| e.firmware)
    }

    /// Keeps `boot` for `max_age_secs` (at most [`MAX_AGE`]); when full, the oldest answer of
    /// another MAC goes.
    pub fn insert(
        &mut self,
        mac: [u8; 6],
        boot: MacBoot,
        firmware: Firmware,
        max_age_secs: u32,
        now: Instant,
    ) {
        if !self.entries.contains_key(&mac) && self.entries.len() >= self.max_entries {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.fetched)
                .map(|(m, _)| *m)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            mac,
            Entry {
                boot,
                firmware,
                fetched: now,
                max_age: Duration::from_secs(u64::from(max_age_secs)).min(MAX_AGE),
            },
        );
    }
}

/// The per-MAC script file's name in DHCP's boot-file option and on TFTP.
pub fn script_file_name(mac: [u8; 6]) -> String {
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("{FILE_PREFIX}{hex}{FILE_SUFFIX}")
}

/// The MAC a per-MAC script file name names.
pub fn mac_of_file(name: &str) -> Option<[u8; 6]> {
    let hex = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, byte) in mac.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(mac)
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The local-boot script (LAB-NOTES-localboot.md): `sanboot --no-describe --drive 0x80` boots
/// the first disk under SeaBIOS (QEMU's 2019 iPXE ROM included) and under UEFI with iPXE ≥ 1.21
/// (\EFI\BOOT\BOOTX64.EFI of that disk). Should it fail: BIOS `exit` hands back to SeaBIOS,
/// which tries the next device; UEFI `exit 1` (plain `exit` from an ipxe.efi loaded over PXE
/// leaves OVMF in its setup menu), so the firmware goes on to its next boot option.
pub fn local_disk_script(firmware: Firmware) -> String {
    let fallback = match firmware {
        Firmware::Uefi => "exit 1",
        Firmware::Bios => "exit",
        Firmware::Unknown => "iseq ${platform} efi && exit 1 || exit",
    };
    format!(
        "#!ipxe\necho bootfleet: booting from the local disk\nsanboot --no-describe --drive 0x80 || {fallback}\n"
    )
}

/// What the MAC's iPXE gets for `boot`; `None` for the decisions that serve no per-MAC script.
/// `autoexec`: asked for as `autoexec.ipxe`, before iPXE configured its network: a script that
/// chains URLs needs a `dhcp` first.
pub fn script_for(boot: &MacBoot, firmware: Firmware, autoexec: bool) -> Option<String> {
    match boot {
        MacBoot::Ignore | MacBoot::SiteDefault => None,
        MacBoot::LocalDisk { .. } => Some(local_disk_script(firmware)),
        MacBoot::Script { script, .. } => {
            let body = script
                .strip_prefix("#!ipxe")
                .map(|rest| rest.strip_prefix('\n').unwrap_or(rest))
                .unwrap_or(script);
            let dhcp = if autoexec { "dhcp\n" } else { "" };
            let mut text = format!("#!ipxe\n{dhcp}{body}");
            if !text.ends_with('\n') {
                text.push('\n');
            }
            Some(text)
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    backoff_until: Option<Instant>,
    no_responders_until: Option<Instant>,
}

/// The site's per-MAC decisions: the cache, and the NATS link to ask through once connected.
#[derive(Debug)]
pub struct Machines {
    artifact_id: String,
    bus: OnceLock<Bus>,
    cache: Mutex<DecisionCache>,
    health: Mutex<Health>,
    pending: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
}

/// Why the service gave no answer.
#[derive(Debug)]
enum AskError {
    NoResponders,
    Unreachable(String),
}

impl Machines {
    pub fn new(artifact_id: String) -> Machines {
        Machines {
            artifact_id,
            bus: OnceLock::new(),
            cache: Mutex::new(DecisionCache::new(MAX_ENTRIES)),
            health: Mutex::new(Health::default()),
            pending: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING)),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The NATS connection, once the agent has one.
    pub fn connected(&self, bus: Bus) {
        let _ = self.bus.set(bus);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, DecisionCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh answer, without asking: the socket loop's fast path.
    pub fn fresh(&self, mac: [u8; 6]) -> Option<MacBoot> {
        self.cache().fresh(mac, Instant::now()).cloned()
    }

    /// Keeps an answer (as the service gave it).
    pub fn remember(&self, mac: [u8; 6], boot: MacBoot, firmware: Firmware, max_age_secs: u32) {
        self.cache()
            .insert(mac, boot, firmware, max_age_secs, Instant::now());
    }

    /// What the cache can say without the service.
    fn fallback(&self, mac: [u8; 6], why: &str) -> (MacBoot, Source) {
        match self.cache().last_known(mac).cloned() {
            Some(boot) => {
                tracing::warn!(mac = %fmt_mac(mac), decision = boot.name(), reason = why, "machines service not answering: serving this MAC's last known decision");
                (boot, Source::LastKnown)
            }
            None => {
                tracing::debug!(mac = %fmt_mac(mac), reason = why, "no decision known for this MAC: site default");
                (MacBoot::SiteDefault, Source::Default)
            }
        }
    }

    /// The decision for a client: fresh from the cache, else asked (at most the timeout), else
    /// the last known one, else the site default.
    pub async fn decide(
        &self,
        mac: [u8; 6],
        firmware: Firmware,
        client_ip: Option<Ipv4Addr>,
    ) -> (MacBoot, Source) {
        if let Some(boot) = self.fresh(mac) {
            return (boot, Source::Cache);
        }
        let Some(bus) = self.bus.get() else {
            return self.fallback(mac, "not connected to NATS yet");
        };
        if !bus.is_connected() {
            return self.fallback(mac, "NATS connection lost");
        }
        let now = Instant::now();
        {
            let health = self.health();
            if health.backoff_until.is_some_and(|t| now < t) {
                return self.fallback(mac, "machines service timed out recently");
            }
            if health.no_responders_until.is_some_and(|t| now < t) {
                return self.fallback(mac, "no machines service answers");
            }
        }
        let Ok(_permit) = self.pending.clone().try_acquire_owned() else {
            return self.fallback(mac, "too many decisions pending");
        };
        let request = proto::BootDecisionRequest {
            artifact_id: self.artifact_id.clone(),
            mac: fmt_mac(mac),
            firmware: firmware.as_str().to_owned(),
            client_ip: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        };
        let started = Instant::now();
        match self.ask(bus, &request).await {
            Ok(decision) => {
                let boot = match MacBoot::from_decision(&decision) {
                    Ok(boot) => boot,
                    Err(e) => {
                        tracing::warn!(mac = %request.mac, error = %e, "unusable decision from the machines service: site default");
                        MacBoot::SiteDefault
                    }
                };
                tracing::info!(mac = %request.mac, decision = boot.name(), machine = boot.machine_id(), max_age_secs = decision.max_age_secs, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "machines service decided");
                self.remember(mac, boot.clone(), firmware, decision.max_age_secs);
                (boot, Source::Machines)
            }
            Err(AskError::NoResponders) => {
                self.health().no_responders_until = Some(Instant::now() + NO_RESPONDERS_BACKOFF);
                self.fallback(mac, "no machines service answers")
            }
            Err(AskError::Unreachable(e)) => {
                self.health().backoff_until = Some(Instant::now() + BACKOFF);
                self.fallback(mac, &e)
            }
        }
    }

    async fn ask(
        &self,
        bus: &Bus,
        request: &proto::BootDecisionRequest,
    ) -> Result<proto::BootDecision, AskError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            bootfleet_bus::TRACEPARENT_HEADER,
            TraceParent::new_root().to_string().as_str(),
        );
        let req = async_nats::Request::new()
            .payload(request.encode_to_vec().into())
            .headers(headers)
            .timeout(Some(self.timeout));
        let subject = subjects::machines_boot(&self.artifact_id);
        let reply = bus
            .client()
            .send_request(subject, req)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => AskError::NoResponders,
                _ => AskError::Unreachable(e.to_string()),
            })?;
        let status = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(bootfleet_bus::STATUS_HEADER))
            .map(|v| v.as_str().to_owned());
        if status.as_deref() != Some("ok") {
            let message = proto::ServiceError::decode(reply.payload.clone())
                .map(|e| e.message)
                .unwrap_or_default();
            return Err(AskError::Unreachable(format!(
                "the machines service answered {status:?}: {message}"
            )));
        }
        proto::BootDecision::decode(reply.payload)
            .map_err(|e| AskError::Unreachable(format!("undecodable decision: {e}")))
    }

    /// The per-MAC script TFTP serves as `name` to `peer_mac` (the neighbour table's MAC of the
    /// requester, if it has one): the MAC's own file, or `autoexec.ipxe` for a MAC with a
    /// script. `Err` refuses a file naming another MAC than the requester's.
    pub fn tftp_file(
        &self,
        name: &str,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<Option<Vec<u8>>, NotYours> {
        let (mac, autoexec) = if let Some(mac) = mac_of_file(name) {
            if peer_mac.is_some_and(|p| p != mac) {
                return Err(NotYours);
            }
            (mac, false)
        } else if name == EFI_AUTOEXEC {
            match peer_mac {
                Some(mac) => (mac, true),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        let cache = self.cache();
        let Some(boot) = cache.last_known(mac) else {
            return Ok(None);
        };
        let firmware = cache.firmware(mac).unwrap_or(Firmware::Unknown);
        Ok(script_for(boot, firmware, autoexec).map(String::into_bytes))
    }
}

/// A per-MAC script asked for by another MAC than the one it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotYours;

pub fn fmt_mac(mac: [u8; 6]) -> String {
    bootfleet_netboot::dhcp::MacAddr(mac).to_string()
}

/// The client's address for the request: its source on udp/4011, else `ciaddr`.
pub fn client_ip(source: SocketAddrV4, ciaddr: Ipv4Addr) -> Option<Ipv4Addr> {
    [*source.ip(), ciaddr]
        .into_iter()
        .find(|ip| !ip.is_unspecified() && !ip.is_broadcast())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0x52, 0x54, 0, 0x77, 0, 0x10];
    const B: [u8; 6] = [0x52, 0x54, 0, 0x77, 0, 0x11];

    fn script(s: &str) -> MacBoot {
        MacBoot::Script {
            script: s.into(),
            machine_id: "m1".into(),
        }
    }

    #[test]
    fn answers_are_fresh_for_their_max_age_then_last_known() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(8);
        cache.insert(A, MacBoot::Ignore, Firmware::Bios, 5, t0);
        assert_eq!(cache.fresh(A, t0), Some(&MacBoot::Ignore));
        assert_eq!(
            cache.fresh(A, t0 + Duration::from_millis(4999)),
            Some(&MacBoot::Ignore)
        );
        assert_eq!(cache.fresh(A, t0 + Duration::from_secs(5)), None);
        // Stale, but still the last known answer (served while the service is away).
        assert_eq!(cache.last_known(A), Some(&MacBoot::Ignore));
        assert_eq!(cache.fresh(B, t0), None);
        assert_eq!(cache.last_known(B), None);
        // max_age 0: never fresh, still known.
        cache.insert(B, MacBoot::SiteDefault, Firmware::Uefi, 0, t0);
        assert_eq!(cache.fresh(B, t0), None);
        assert_eq!(cache.last_known(B), Some(&MacBoot::SiteDefault));
        assert_eq!(cache.firmware(B), Some(Firmware::Uefi));
    }

    #[test]
    fn max_age_is_bounded() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(8);
        cache.insert(A, MacBoot::Ignore, Firmware::Bios, u32::MAX, t0);
        assert!(cache
            .fresh(A, t0 + MAX_AGE - Duration::from_secs(1))
            .is_some());
        assert!(cache.fresh(A, t0 + MAX_AGE).is_none());
    }

    #[test]
    fn entries_are_bounded_and_the_oldest_goes() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(3);
        for i in 0..3u8 {
            cache.insert(
                [0, 0, 0, 0, 0, i],
                MacBoot::SiteDefault,
                Firmware::Bios,
                60,
                t0 + Duration::from_secs(u64::from(i)),
            );
        }
        // Renewing a MAC already there evicts nothing.
        cache.insert(
            [0, 0, 0, 0, 0, 0],
            MacBoot::Ignore,
            Firmware::Bios,
            60,
            t0 + Duration::from_secs(10),
        );
        assert_eq!(cache.len(), 3);
        cache.insert(
            A,
            MacBoot::Ignore,
            Firmware::Bios,
            60,
            t0 + Duration::from_secs(11),
        );
        assert_eq!(cache.len(), 3);
        // [..1] was the oldest answer left ([..0] was renewed at t0+10).
        assert_eq!(cache.last_known([0, 0, 0, 0, 0, 1]), None);
        assert!(cache.last_known([0, 0, 0, 0, 0, 0]).is_some());
        assert!(cache.last_known(A).is_some());
    }

    #[test]
    fn decisions_from_the_service() {
        let d = |action: Action, script: &str| proto::BootDecision {
            action: action as i32,
            ipxe_script: script.into(),
            machine_id: "m1".into(),
            max_age_secs: 10,
        };
        assert_eq!(
            MacBoot::from_decision(&d(Action::Ignore, "")),
            Ok(MacBoot::Ignore)
        );
        assert_eq!(
            MacBoot::from_decision(&d(Action::SiteDefault, "")),
            Ok(MacBoot::SiteDefault)
        );
        assert_eq!(
            MacBoot::from_decision(&d(Action::LocalDisk, "")),
            Ok(MacBoot::LocalDisk {
                machine_id: "m1".into()
            })
        );
        assert_eq!(
            MacBoot::from_decision(&d(Action::Script, "#!ipxe\nshell\n")),
            Ok(script("#!ipxe\nshell\n"))
        );
        assert!(MacBoot::from_decision(&d(Action::Script, " \n")).is_err());
        assert!(
            MacBoot::from_decision(&d(Action::Script, &"x".repeat(MAX_SCRIPT_BYTES + 1))).is_err()
        );
        assert!(MacBoot::from_decision(&d(Action::Unspecified, "")).is_err());
        let mut odd = d(Action::Ignore, "");
        odd.action = 99;
        assert!(MacBoot::from_decision(&odd).is_err());
    }

    #[test]
    fn served_script_per_action() {
        assert_eq!(script_for(&MacBoot::Ignore, Firmware::Bios, false), None);
        assert_eq!(
            script_for(&MacBoot::SiteDefault, Firmware::Uefi, false),
            None
        );
        let local = MacBoot::LocalDisk {
            machine_id: "m1".into(),
        };
        let sanboot = "#!ipxe\necho bootfleet: booting from the local disk\nsanboot --no-describe --drive 0x80";
        let s = script("#!ipxe\nchain http://x/y\n");
        for (boot, firmware, autoexec, want) in [
            (
                &local,
                Firmware::Bios,
                false,
                format!("{sanboot} || exit\n"),
            ),
            (
                &local,
                Firmware::Uefi,
                false,
                format!("{sanboot} || exit 1\n"),
            ),
            (
                &s,
                Firmware::Bios,
                false,
                "#!ipxe\nchain http://x/y\n".into(),
            ),
            (
                &s,
                Firmware::Uefi,
                true,
                "#!ipxe\ndhcp\nchain http://x/y\n".into(),
            ),
        ] {
            assert_eq!(
                script_for(boot, firmware, autoexec),
                Some(want),
                "{boot:?} {firmware:?} {autoexec}"
            );
        }
        // Local boot needs no network: no dhcp line even as autoexec.
        assert!(!script_for(&local, Firmware::Uefi, true)
            .unwrap_or_default()
            .contains("dhcp"));
        assert!(script_for(&local, Firmware::Unknown, false)
            .unwrap_or_default()
            .contains("iseq ${platform} efi && exit 1 || exit"));
        // A script without its magic line gets one, and a final newline.
        assert_eq!(
            script_for(&script("chain http://x/y"), Firmware::Bios, false).as_deref(),
            Some("#!ipxe\nchain http://x/y\n")
        );
    }

    #[test]
    fn per_mac_file_names() {
        assert_eq!(script_file_name(A), "bootfleet-mac-525400770010.ipxe");
        assert_eq!(mac_of_file("bootfleet-mac-525400770010.ipxe"), Some(A));
        for bad in [
            "bootfleet-mac-52540077001.ipxe",
            "bootfleet-mac-5254007700zz.ipxe",
            "bootfleet-mac-525400770010.ipx",
            "bootfleet.ipxe",
            "bootfleet-mac-+25400770010.ipxe",
        ] {
            assert_eq!(mac_of_file(bad), None, "{bad}");
        }
        assert_eq!(parse_mac("52:54:00:77:00:10"), Some(A));
        assert_eq!(parse_mac("52:54:00:77:00"), None);
        assert_eq!(parse_mac("52:54:00:77:00:10:00"), None);
        assert_eq!(fmt_mac(A), "52:54:00:77:00:10");
    }

    #[test]
    fn tftp_serves_a_macs_script_to_that_mac_only() {
        let m = Machines::new("site".into());
        m.remember(A, script("#!ipxe\nchain http://x/a\n"), Firmware::Uefi, 10);
        m.remember(B, MacBoot::SiteDefault, Firmware::Bios, 10);
        let file = script_file_name(A);
        let text = |r: Result<Option<Vec<u8>>, NotYours>| {
            r.map(|o| o.map(|b| String::from_utf8_lossy(&b).into_owned()))
        };
        assert_eq!(
            text(m.tftp_file(&file, Some(A))),
            Ok(Some("#!ipxe\nchain http://x/a\n".into()))
        );
        // The neighbour table could not tell: served (the name came in this MAC's DHCP answer).
        assert_eq!(
            text(m.tftp_file(&file, None)),
            Ok(Some("#!ipxe\nchain http://x/a\n".into()))
        );
        assert_eq!(
            m.tftp_file(&file, Some(B)),
            Err(NotYours),
            "another MAC's script"
        );
        assert_eq!(
            text(m.tftp_file(EFI_AUTOEXEC, Some(A))),
            Ok(Some("#!ipxe\ndhcp\nchain http://x/a\n".into()))
        );
        // Site default or unknown: the cache's own files, as before.
        assert_eq!(m.tftp_file(EFI_AUTOEXEC, Some(B)), Ok(None));
        assert_eq!(m.tftp_file(EFI_AUTOEXEC, None), Ok(None));
        assert_eq!(m.tftp_file(&script_file_name(B), Some(B)), Ok(None));
        assert_eq!(m.tftp_file("undionly.kpxe", Some(A)), Ok(None));
    }

    #[tokio::test]
    async fn without_nats_the_last_known_answer_or_the_site_default() {
        let m = Machines::new("site".into());
        // Never connected, nothing known: the site default.
        assert_eq!(
            m.decide(A, Firmware::Bios, None).await,
            (MacBoot::SiteDefault, Source::Default)
        );
        // A fresh answer is used as is; a stale one is served as the last known.
        m.remember(
            A,
            MacBoot::LocalDisk {
                machine_id: "m1".into(),
            },
            Firmware::Bios,
            30,
        );
        assert_eq!(m.decide(A, Firmware::Bios, None).await.1, Source::Cache);
        m.remember(B, MacBoot::Ignore, Firmware::Bios, 0);
        assert_eq!(
            m.decide(B, Firmware::Bios, None).await,
            (MacBoot::Ignore, Source::LastKnown)
        );
    }

    #[test]
    fn client_addresses() {
        let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
        assert_eq!(client_ip(any, Ipv4Addr::UNSPECIFIED), None);
        assert_eq!(
            client_ip(any, Ipv4Addr::new(10, 0, 0, 5)),
            Some(Ipv4Addr::new(10, 0, 0, 5))
        );
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 6), 4011);
        assert_eq!(
            client_ip(from, Ipv4Addr::UNSPECIFIED),
            Some(Ipv4Addr::new(10, 0, 0, 6))
        );
    }

    /// Against a real nats-server: answers are asked and kept; no responders is the site
    /// default (or the last known answer); a service that does not answer in time leaves the
    /// last known answer, within the timeout, and the next packets are answered at once.
    #[tokio::test]
    async fn asks_over_nats_and_falls_back() {
        use futures_util::StreamExt;
        let nats = bootfleet_testkit::NatsServer::start();
        let bus = Bus::connect(&bootfleet_bus::BusConfig::new(nats.url(), "machines-test"))
            .await
            .expect("connect");
        let m = Machines::new("site".into());
        m.connected(bus.clone());
        // No machines service: the site default, quickly.
        let started = Instant::now();
        assert_eq!(
            m.decide(A, Firmware::Bios, None).await,
            (MacBoot::SiteDefault, Source::Default)
        );
        assert!(started.elapsed() < Duration::from_millis(500));

        // A service that answers LOCAL_DISK for A, then goes silent.
        let client = bus.client().clone();
        let mut requests = client
            .subscribe(subjects::machines_boot("site"))
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (responder, quiet) = (client.clone(), silent.clone());
        tokio::spawn(async move {
            while let Some(msg) = requests.next().await {
                let request = proto::BootDecisionRequest::decode(msg.payload).expect("request");
                assert_eq!(
                    (request.artifact_id.as_str(), request.firmware.as_str()),
                    ("site", "bios")
                );
                if quiet.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let decision = proto::BootDecision {
                    action: Action::LocalDisk as i32,
                    machine_id: "m1".into(),
                    max_age_secs: 0,
                    ..Default::default()
                };
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(bootfleet_bus::STATUS_HEADER, "ok");
                if let Some(reply) = msg.reply {
                    let _ = responder
                        .publish_with_headers(reply, headers, decision.encode_to_vec().into())
                        .await;
                }
            }
        });
        // Past the no-responders pause.
        tokio::time::sleep(NO_RESPONDERS_BACKOFF).await;
        let local = MacBoot::LocalDisk {
            machine_id: "m1".into(),
        };
        assert_eq!(
            m.decide(A, Firmware::Bios, None).await,
            (local.clone(), Source::Machines)
        );

        silent.store(true, std::sync::atomic::Ordering::SeqCst);
        let started = Instant::now();
        assert_eq!(
            m.decide(A, Firmware::Bios, None).await,
            (local.clone(), Source::LastKnown)
        );
        let waited = started.elapsed();
        assert!(
            waited >= REQUEST_TIMEOUT && waited < REQUEST_TIMEOUT + Duration::from_millis(500),
            "{waited:?}"
        );
        // Backing off: answered from the cache at once; a MAC never seen gets the site default.
        let started = Instant::now();
        assert_eq!(
            m.decide(A, Firmware::Bios, None).await,
            (local, Source::LastKnown)
        );
        assert_eq!(
            m.decide(B, Firmware::Bios, None).await,
            (MacBoot::SiteDefault, Source::Default)
        );
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
