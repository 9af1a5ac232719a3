//! The operator's configuration (`PUT /api/distributors/:id`): which ipxes artifacts to hand to
//! BIOS and UEFI clients. The distributor fetches each file from the system's object store over
//! NATS (it connects out only), checks its SHA-256, installs it in the cache under
//! `artifacts/<artifact>/`, and switches proxyDHCP to it. Nothing is served that failed its check.

use std::sync::{Arc, Mutex};

use bootfleet_api::artifacts::object_name;
use bootfleet_api::{proto, ApiError, ErrorCode};
use bootfleet_bus::ArtifactStore;
use bootfleet_netboot::dhcp::{BootFiles, ProxyConfig};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::lan::{self, Lan};
use crate::proxy_dhcp::LiveConfig;

/// The script iPXE clients get once boot files came from artifacts: it runs the artifact's own
/// script for the client's platform.
pub const ARTIFACT_BOOTSTRAP: &str = "bootfleet-artifacts.ipxe";
/// The script iPXE for UEFI runs at start when it finds one (`efi_autoexec.c`).
const EFI_AUTOEXEC: &str = "autoexec.ipxe";
/// Boot programs are a few MiB; this bounds what a bad row could make us download.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct Applier {
    cache: Cache,
    live: LiveConfig,
    /// What the distributor was started with: the configuration replaces only what it names.
    base: ProxyConfig,
    /// The listeners; a configuration naming another interface moves them there.
    lan: Arc<Lan>,
    /// The encoded configuration applied last, and what it serves.
    applied: Mutex<(Vec<u8>, Vec<proto::ServedFile>)>,
    /// One application at a time.
    busy: tokio::sync::Mutex<()>,
}

fn conflict(message: String) -> ApiError {
    ApiError::new(ErrorCode::Conflict, message)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// File and artifact names from a row are checked again here: they become paths in the cache.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Applier {
    pub fn new(cache: Cache, live: LiveConfig, lan: Arc<Lan>) -> Applier {
        let base = (*live.get()).clone();
        Applier {
            cache,
            live,
            base,
            lan,
            applied: Mutex::new((Vec::new(), Vec::new())),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// What the applied configuration serves (for heartbeats).
    pub fn served(&self) -> Vec<proto::ServedFile> {
        self.applied.lock().map(|a| a.1.clone()).unwrap_or_default()
    }

    /// Whether `config` is the one applied last.
    pub fn is_applied(&self, config: &proto::DistributorConfig) -> bool {
        self.applied
            .lock()
            .map(|a| a.0 == config.encode_to_vec())
            .unwrap_or(false)
    }

    pub async fn apply(
        &self,
        store: &ArtifactStore,
        config: proto::DistributorConfig,
    ) -> Result<proto::DistributorConfigApplied, ApiError> {
        let _one_at_a_time = self.busy.lock().await;
        let mut range = bootfleet_api::validate::ipv4_range("range", &config.range)?;
        if !config.range.contains('/') {
            // One address: the interface's own network that holds it (the tutorial's form).
            if let Some(network) = lan::network_holding(&config.device, range.0).map_err(|e| {
                conflict(format!(
                    "cannot read the addresses of {}: {e}",
                    config.device
                ))
            })? {
                range = network;
            }
        }
        let current = self.lan.current();
        let server_ip = lan::choose_address(
            current.as_ref().map(|(device, ip)| (device.as_str(), *ip)),
            &config.device,
            &config.range,
            |ip| bootfleet_api::validate::in_ipv4_range(ip, range),
            || lan::ipv4_addresses(&config.device),
        )
        .map_err(conflict)?;
        // Bound before anything changes: if the new interface cannot be served, nothing moves.
        let moving = current.as_ref() != Some(&(config.device.clone(), server_ip));
        let bound = if moving {
            Some(
                self.lan
                    .bind(&config.device, server_ip)
                    .await
                    .map_err(conflict)?,
            )
        } else {
            None
        };
        let mut boot = self.base.boot.clone();
        let mut served = Vec::new();
        let mut scripts: Vec<(String, String)> = Vec::new();
        for entry in &config.boot {
            if !plain_name(&entry.artifact) || !entry.key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ApiError::invalid("boot", "malformed artifact reference"));
            }
            let dir = format!("artifacts/{}", entry.artifact);
            let mut main = None;
            for file in &entry.files {
                if !plain_name(&file.name) {
                    return Err(ApiError::invalid(
                        "boot",
                        format!("malformed file name {:?}", file.name),
                    ));
                }
                let path = format!("{dir}/{}", file.name);
                self.install(store, &entry.key, file, &path).await?;
                served.push(proto::ServedFile {
                    role: entry.role.clone(),
                    path: path.clone(),
                    sha256: file.sha256.clone(),
                    size: file.size,
                });
                if file.name == EFI_AUTOEXEC {
                    scripts.push((entry.role.clone(), path));
                } else if main.is_none() {
                    main = Some(path);
                }
            }
            let main = main.ok_or_else(|| {
                conflict(format!("artifact {} has no boot program", entry.artifact))
            })?;
            match entry.role.as_str() {
                "bios" => boot.bios = Some(main),
                "uefi_x64" => boot.uefi_x64 = Some(main),
                other => return Err(ApiError::invalid("boot", format!("unknown role {other:?}"))),
            }
        }
        if !scripts.is_empty() {
            self.write_bootstrap(&scripts, boot.ipxe_script.as_deref())?;
            boot.ipxe_script = Some(ARTIFACT_BOOTSTRAP.to_owned());
        }
        // iPXE for UEFI loaded over PXE asks TFTP for `autoexec.ipxe` before anything else:
        // Debian 13's at the root, newer ones beside themselves first. Found, its script runs
        // at once; refused, iPXE does a DHCP round of its own to get the bootstrap.
        let uefi_script = scripts.iter().find(|(role, _)| role == "uefi_x64");
        self.cache
            .set_link(EFI_AUTOEXEC, uefi_script.map(|(_, path)| path.as_str()))
            .map_err(|e| ApiError::internal(format!("cannot link {EFI_AUTOEXEC}: {e}")))?;
        self.live.set(ProxyConfig {
            server_ip,
            boot: BootFiles { ..boot },
        });
        if let Some(bound) = bound {
            self.lan.serve(bound);
        }
        if let Ok(mut applied) = self.applied.lock() {
            *applied = (config.encode_to_vec(), served.clone());
        }
        tracing::info!(files = served.len(), "configuration applied");
        Ok(proto::DistributorConfigApplied { files: served })
    }

    /// Fetches one file, checks its digest, and renames it into place.
    async fn install(
        &self,
        store: &ArtifactStore,
        key: &str,
        file: &proto::ArtifactFile,
        path: &str,
    ) -> Result<(), ApiError> {
        let unavailable = |e: bootfleet_bus::ArtifactStoreError| {
            ApiError::unavailable(format!("cannot fetch {}: {e}", file.name))
        };
        // Read by direct get only: a distributor's login may not create a consumer.
        let bytes = store
            .read(&object_name(key, &file.name), MAX_FILE_BYTES)
            .await
            .map_err(unavailable)?;
        let digest = hex(&Sha256::digest(&bytes));
        if bytes.len() as u64 > MAX_FILE_BYTES
            || digest != file.sha256
            || bytes.len() as u64 != file.size
        {
            return Err(conflict(format!(
                "{} failed its check (sha256 {digest}, {} bytes; expected {}, {} bytes): not installed",
                file.name,
                bytes.len(),
                file.sha256,
                file.size
            )));
        }
        let target = self.cache.root().join(path);
        let write = || -> std::io::Result<()> {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = target.with_extension("bootfleet-tmp");
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &target)
        };
        write().map_err(|e| ApiError::internal(format!("cannot install {path} in the cache: {e}")))
    }

    /// The bootstrap iPXE runs: the artifact script for its platform (`pcbios` or `efi`).
    fn write_bootstrap(
        &self,
        scripts: &[(String, String)],
        fallback: Option<&str>,
    ) -> Result<(), ApiError> {
        let find = |role: &str| {
            scripts
                .iter()
                .find(|(r, _)| r == role)
                .map(|(_, p)| p.as_str())
        };
        let line = |script: Option<&str>| match script.or(fallback) {
            Some(path) => format!("chain --autofree {path}"),
            None => "echo bootfleet: no script for this platform && exit 1".to_owned(),
        };
        let text = format!(
            "#!ipxe\niseq ${{platform}} pcbios && goto bios || goto efi\n:bios\n{}\n:efi\n{}\n",
            line(find("bios")),
            line(find("uefi_x64")),
        );
        let target = self.cache.root().join(ARTIFACT_BOOTSTRAP);
        let tmp = self.cache.root().join(format!(".{ARTIFACT_BOOTSTRAP}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &target))
            .map_err(|e| ApiError::internal(format!("cannot write {ARTIFACT_BOOTSTRAP}: {e}")))
    }
}
