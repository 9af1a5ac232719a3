//! Configuration from the environment (every setting) and flags (the common ones).
//! See the README's configuration reference.

use std::path::{Path, PathBuf};

use bootfleet_gateway::auth::{Secret, Verifier};
use bootfleet_gateway::server::ServeLimits;
use bootfleet_gateway::{GatewayConfig, TlsIdentity, DEFAULT_BODY_LIMIT};
use rand_core::{OsRng, RngCore};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where the gRPC API listens by default (its own port beside REST).
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:8081";

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// `BOOTFLEET_DATA_DIR`, else `$XDG_DATA_HOME/bootfleet`, else `~/.local/share/bootfleet`.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = env("BOOTFLEET_DATA_DIR") {
        return dir.into();
    }
    if let Some(xdg) = env("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("bootfleet");
    }
    match env("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/bootfleet"),
        None => PathBuf::from("bootfleet-data"),
    }
}

/// `DATABASE_URL`, else SQLite in the data directory.
pub fn database_url(data_dir: &Path) -> String {
    env("DATABASE_URL").unwrap_or_else(|| bootfleet_store::default_sqlite_url(data_dir))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HS256 secret: `BOOTFLEET_JWT_SECRET`, else the file `BOOTFLEET_JWT_SECRET_FILE`, else
/// `<data dir>/jwt-secret`, which is created (mode 0600, 32 random bytes) when `create` is set.
pub fn jwt_secret(data_dir: &Path, create: bool) -> Result<Secret, String> {
    if let Some(s) = env("BOOTFLEET_JWT_SECRET") {
        return Secret::new(s.into_bytes());
    }
    let path = env("BOOTFLEET_JWT_SECRET_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("jwt-secret"));
    match std::fs::read_to_string(&path) {
        Ok(s) => Secret::new(s.trim().as_bytes().to_vec())
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let mut bytes = [0u8; 32];
            OsRng.fill_bytes(&mut bytes);
            let secret = hex(&bytes);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            write_private(&path, secret.as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "created a new jwt secret");
            Secret::new(secret.into_bytes())
        }
        Err(e) => Err(format!(
            "no jwt secret: set BOOTFLEET_JWT_SECRET or create {} ({e}); `bootfleet up` creates it",
            path.display()
        )),
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}

/// The gateway's settings: the secret, optional public keys, the lab switch.
pub fn gateway_config(secret: Secret) -> Result<GatewayConfig, String> {
    let mut verifier = Verifier::new(secret);
    if let Some(files) = env("BOOTFLEET_JWT_PUBLIC_KEY_FILES") {
        for file in files.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let pem = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            verifier = verifier
                .with_public_key_pem(&pem)
                .map_err(|e| format!("{file}: {e}"))?;
        }
    }
    let open_node_reads = match env("BOOTFLEET_OPEN_NODE_READS").as_deref() {
        None | Some("0" | "false" | "no" | "off") => false,
        Some("1" | "true" | "yes" | "on") => true,
        Some(other) => {
            return Err(format!(
                "BOOTFLEET_OPEN_NODE_READS must be true or false, not {other:?}"
            ))
        }
    };
    let body_limit = match env("BOOTFLEET_BODY_LIMIT") {
        Some(v) => v
            .parse()
            .map_err(|_| format!("BOOTFLEET_BODY_LIMIT must be a number of bytes, not {v:?}"))?,
        None => DEFAULT_BODY_LIMIT,
    };
    let defaults = ServeLimits::default();
    let secs = |name: &str, default: std::time::Duration| match env(name) {
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(std::time::Duration::from_secs(n)),
            _ => Err(format!(
                "{name} must be a positive number of seconds, not {v:?}"
            )),
        },
        None => Ok(default),
    };
    let limits = ServeLimits {
        header_read_timeout: secs(
            "BOOTFLEET_HTTP_HEADER_TIMEOUT_SECS",
            defaults.header_read_timeout,
        )?,
        body_read_timeout: secs(
            "BOOTFLEET_HTTP_BODY_TIMEOUT_SECS",
            defaults.body_read_timeout,
        )?,
        max_connections: match env("BOOTFLEET_HTTP_MAX_CONNECTIONS") {
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(format!(
                        "BOOTFLEET_HTTP_MAX_CONNECTIONS must be a positive number, not {v:?}"
                    ))
                }
            },
            None => defaults.max_connections,
        },
        request_timeout: secs(
            "BOOTFLEET_HTTP_REQUEST_TIMEOUT_SECS",
            defaults.request_timeout,
        )?,
        write_timeout: secs("BOOTFLEET_HTTP_WRITE_TIMEOUT_SECS", defaults.write_timeout)?,
        event_keep_alive: secs(
            "BOOTFLEET_HTTP_EVENT_KEEPALIVE_SECS",
            defaults.event_keep_alive,
        )?,
    };
    Ok(GatewayConfig {
        verifier,
        open_node_reads,
        body_limit,
        limits,
        services: crate::service_names(),
        grpc_tls: grpc_tls()?,
    })
}

/// `BOOTFLEET_GRPC_TLS_CERT` and `BOOTFLEET_GRPC_TLS_KEY`: PEM files of the gRPC API's
/// certificate chain and key (both or neither).
fn grpc_tls() -> Result<Option<TlsIdentity>, String> {
    let read = |name: &str, path: String| {
        std::fs::read(&path).map_err(|e| format!("{name}: cannot read {path}: {e}"))
    };
    match (
        env("BOOTFLEET_GRPC_TLS_CERT"),
        env("BOOTFLEET_GRPC_TLS_KEY"),
    ) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsIdentity {
            cert_pem: read("BOOTFLEET_GRPC_TLS_CERT", cert)?,
            key_pem: read("BOOTFLEET_GRPC_TLS_KEY", key)?,
        })),
        _ => Err("set both BOOTFLEET_GRPC_TLS_CERT and BOOTFLEET_GRPC_TLS_KEY, or neither".into()),
    }
}
