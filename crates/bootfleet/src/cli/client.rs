//! The CLI's side of the wire: where the gateway's gRPC API is, the token it sends, the config
//! file they may come from, and what each failure means as an exit code and a hint.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

/// Where the gRPC API listens when nothing else says (`bootfleet up`'s default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8081";

/// Exit codes (README, "CLI"): each kind of failure its own, so scripts can tell them apart.
pub mod exit {
    pub const OK: u8 = 0;
    /// The operation ran and failed: a followed build failed, a download's checksum differs.
    pub const FAILED: u8 = 1;
    /// Bad flags or bad input (also what the API refused as INVALID_ARGUMENT).
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    /// No token, a bad or expired one, or a role that may not do this.
    pub const AUTH: u8 = 4;
    pub const CONFLICT: u8 = 5;
    /// The system's side failed (a bug, a service down, a timeout).
    pub const SERVER: u8 = 6;
    /// The gateway could not be reached.
    pub const NETWORK: u8 = 7;
}

/// Why a command failed: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(exit::USAGE, message)
    }

    pub fn report(&self) -> ExitCode {
        eprintln!("bootfleet: {}", self.message);
        if let Some(hint) = &self.hint {
            eprintln!("hint: {hint}");
        }
        ExitCode::from(self.code)
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        let message = if s.message().is_empty() {
            format!("{:?}", s.code())
        } else {
            s.message().to_owned()
        };
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                Failure::new(exit::USAGE, message)
            }
            Code::NotFound => Failure::new(exit::NOT_FOUND, message)
                .hint("check the id (and the kind); `bootfleet <resource> list` shows what exists"),
            Code::Unauthenticated => Failure::new(exit::AUTH, message).hint(
                "pass --token or set BOOTFLEET_TOKEN (mint one on the server with `bootfleet token --role admin`)",
            ),
            Code::PermissionDenied => Failure::new(exit::AUTH, message)
                .hint("this needs a token with another role (writes need an admin token)"),
            Code::AlreadyExists | Code::Aborted => Failure::new(exit::CONFLICT, message)
                .hint("the object is not in a state that allows this; get it and try again"),
            Code::Unavailable => Failure::new(exit::SERVER, message)
                .hint("a service of the system is down or restarting; try again shortly"),
            Code::DeadlineExceeded => Failure::new(exit::SERVER, message)
                .hint("the system did not answer in time; try again"),
            _ => Failure::new(exit::SERVER, message)
                .hint("this is the system's side; its logs carry the details"),
        }
    }
}

/// `url`, `token` and `output` from `$XDG_CONFIG_HOME/bootfleet/config.toml` (or
/// `~/.config/bootfleet/config.toml`); flags and the environment come first.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub url: Option<String>,
    pub token: Option<String>,
    pub output: Option<String>,
    /// PEM file of the CA that signed an `https://` gateway's certificate.
    pub ca: Option<PathBuf>,
}

pub fn config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("bootfleet").join("config.toml"))
}

impl ConfigFile {
    /// The file, or nothing when it does not exist; a file that does not parse is an error.
    pub fn load() -> Result<ConfigFile, Failure> {
        let Some(path) = config_path() else {
            return Ok(ConfigFile::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                Failure::usage(format!("{}: {e}", path.display()))
                    .hint("its keys are url, token, output (table, json or yaml) and ca")
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(Failure::usage(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }
}

/// Sends the bearer token, and the idempotency key when one is given, with every call (the
/// gateway ignores a key on reads).
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    bearer: Option<MetadataValue<Ascii>>,
    idempotency_key: Option<MetadataValue<Ascii>>,
}

impl tonic::service::Interceptor for Metadata {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        for (name, value) in [
            ("authorization", &self.bearer),
            ("idempotency-key", &self.idempotency_key),
        ] {
            if let Some(value) = value {
                req.metadata_mut().insert(name, value.clone());
            }
        }
        Ok(req)
    }
}

/// A connection to the gateway's gRPC API, with the metadata every client sends.
pub type Conn = InterceptedService<Channel, Metadata>;

/// Connects to `url`: plain HTTP/2 for `http://`, TLS for `https://`, trusting the CA in the
/// PEM file `ca` or, without one, the system's roots.
pub async fn connect(
    url: &str,
    token: Option<&str>,
    ca: Option<&Path>,
    idempotency_key: Option<&str>,
) -> Result<Conn, Failure> {
    let bearer = token
        .map(|t| {
            format!("Bearer {t}").parse().map_err(|_| {
                Failure::usage("the token has characters a header cannot carry")
                    .hint("copy the token again, without line breaks")
            })
        })
        .transpose()?;
    let idempotency_key = idempotency_key
        .map(|k| {
            k.parse().map_err(|_| {
                Failure::usage("--idempotency-key: must be 1 to 255 visible ASCII characters")
            })
        })
        .transpose()?;
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| {
            Failure::usage(format!("--url {url:?}: {e}"))
                .hint("give the gateway's gRPC URL, e.g. http://127.0.0.1:8081")
        })?
        .connect_timeout(std::time::Duration::from_secs(5));
    if url.starts_with("https://") {
        let tls = match ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Failure::usage(format!("--ca {}: {e}", path.display()))
                        .hint("give the PEM file of the CA that signed the gateway's certificate")
                })?;
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Failure::usage(format!("tls for {url}: {e}")))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string());
        Failure::new(exit::NETWORK, format!("cannot reach {url}: {cause}")).hint(
            "is the gateway's gRPC listener up (BOOTFLEET_GRPC_LISTEN)? set --url or BOOTFLEET_GRPC_URL to it",
        )
    })?;
    Ok(InterceptedService::new(
        channel,
        Metadata {
            bearer,
            idempotency_key,
        },
    ))
}
