//! How to reach NATS. Read from the environment by the binaries:
//! `NATS_URL` (or the seed's `TRANSPORTER`, with or without its `nats://` scheme),
//! `NATS_USER`/`NATS_PASSWORD`, `NATS_TOKEN`, `NATS_CREDS` (a credentials file) or
//! `NATS_NKEY_SEED`, `NATS_INBOX_PREFIX` (where replies to this client's requests go; a
//! distributor's NATS user may subscribe to its own prefix only), `NATS_TLS_CA`,
//! `NATS_TLS_CERT`/`NATS_TLS_KEY` (TLS to a server with a private CA, and a client certificate
//! for one that verifies clients), `BOOTFLEET_BUS_TIMEOUT_MS` / `BOOTFLEET_BUS_ATTEMPTS`, and
//! `BOOTFLEET_JETSTREAM_REPLICAS` (the replicas of the streams and buckets this process makes),
//! `BOOTFLEET_NATS_PING_SECS` (how soon a server that stopped answering is left).

use std::path::PathBuf;
use std::time::Duration;

use async_nats::ConnectOptions;

use crate::BusError;

#[derive(Clone)]
pub struct BusConfig {
    pub url: String,
    /// Shown in the NATS server's connection list.
    pub name: String,
    /// How long one attempt of a request waits for its reply.
    pub request_timeout: Duration,
    /// Attempts per request when no instance answers (service restarting, instance killed).
    pub attempts: u32,
    pub auth: Auth,
    /// Replaces `_INBOX` as the prefix of this client's reply subjects (`NATS_INBOX_PREFIX`).
    /// A restricted NATS user may subscribe only to its own prefix, so it never sees replies
    /// meant for other clients.
    pub inbox_prefix: Option<String>,
    /// TLS to nats-server. Without it, TLS is still used when the URL is `tls://` or the
    /// server demands it, trusting only the built-in roots.
    pub tls: Option<Tls>,
    /// Replicas of the JetStream streams, object stores and buckets this process makes, and
    /// the least it raises an existing one to (`BOOTFLEET_JETSTREAM_REPLICAS`, default 1; 3 on
    /// a three-node NATS cluster).
    pub jetstream_replicas: usize,
    /// How often the client pings its server (`BOOTFLEET_NATS_PING_SECS`, default 10). Three
    /// unanswered pings end the connection and the client moves to another server: a server cut
    /// off by the network (no reset ever arrives) is left within about three of these.
    pub ping_interval: Duration,
}

/// TLS settings for the connection to nats-server (`NATS_TLS_CA`, `NATS_TLS_CERT`,
/// `NATS_TLS_KEY`). Given at all, TLS is required: the client never falls back to plain text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificates of the CA that signed the server's certificate (a site's own CA).
    pub ca_file: Option<PathBuf>,
    /// This client's PEM certificate and key, for a server that verifies clients
    /// (`verify: true`). Both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Tls {
    fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions, BusError> {
        let readable = |var: &str, path: &PathBuf| {
            if path.is_file() {
                Ok(())
            } else {
                Err(BusError::Tls(format!(
                    "{var}: {} is not a readable file",
                    path.display()
                )))
            }
        };
        if let Some(ca) = &self.ca_file {
            readable("NATS_TLS_CA", ca)?;
            options = options.add_root_certificates(ca.clone());
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                readable("NATS_TLS_CERT", cert)?;
                readable("NATS_TLS_KEY", key)?;
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => {
                return Err(BusError::Tls(
                    "NATS_TLS_CERT and NATS_TLS_KEY go together: set both for a client certificate, or neither".into(),
                ))
            }
        }
        Ok(options.require_tls(true))
    }
}

#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    UserPassword(String, String),
    Token(String),
    CredsFile(std::path::PathBuf),
    NkeySeed(String),
}

// Secrets stay out of logs and panics.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "none",
            Auth::UserPassword(..) => "user/password",
            Auth::Token(_) => "token",
            Auth::CredsFile(_) => "creds file",
            Auth::NkeySeed(_) => "nkey",
        })
    }
}

bootfleet_api::debug_fields!(BusConfig as c {
    url,
    name,
    request_timeout,
    attempts,
    auth,
    inbox_prefix,
    tls,
    jetstream_replicas,
    ping_interval,
});

/// `nats://` before each URL of a comma-separated list that has no scheme; None when empty.
fn with_schemes(raw: &str) -> Option<String> {
    let urls: Vec<String> = servers(raw)
        .into_iter()
        .map(|url| {
            if url.contains("://") {
                url.to_owned()
            } else {
                format!("nats://{url}")
            }
        })
        .collect();
    (!urls.is_empty()).then(|| urls.join(","))
}

/// The URLs of a comma-separated list.
fn servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_ATTEMPTS: u32 = 3;
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(10);

impl BusConfig {
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        BusConfig {
            url: url.into(),
            name: name.into(),
            request_timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            auth: Auth::None,
            inbox_prefix: None,
            tls: None,
            jetstream_replicas: 1,
            ping_interval: DEFAULT_PING_INTERVAL,
        }
    }

    /// The NATS URL from the environment, if one is set (`NATS_URL`, else `TRANSPORTER`). A
    /// comma-separated list names several nodes of one NATS cluster: the client connects to one
    /// of them, and moves to another when it goes away.
    pub fn url_from_env() -> Option<String> {
        let raw = std::env::var("NATS_URL")
            .ok()
            .or_else(|| std::env::var("TRANSPORTER").ok())?;
        with_schemes(&raw)
    }

    /// Everything but the URL from the environment.
    pub fn from_env(url: String, name: impl Into<String>) -> Self {
        let mut config = BusConfig::new(url, name);
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(ms) = var("BOOTFLEET_BUS_TIMEOUT_MS").and_then(|v| v.parse().ok()) {
            config.request_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = var("BOOTFLEET_BUS_ATTEMPTS").and_then(|v| v.parse().ok()) {
            config.attempts = n;
        }
        if let Some(secs) = var("BOOTFLEET_NATS_PING_SECS").and_then(|v| v.parse::<u64>().ok()) {
            config.ping_interval = Duration::from_secs(secs.max(1));
        }
        config.auth = if let (Some(u), Some(p)) = (var("NATS_USER"), var("NATS_PASSWORD")) {
            Auth::UserPassword(u, p)
        } else if let Some(t) = var("NATS_TOKEN") {
            Auth::Token(t)
        } else if let Some(f) = var("NATS_CREDS") {
            Auth::CredsFile(f.into())
        } else if let Some(s) = var("NATS_NKEY_SEED") {
            Auth::NkeySeed(s)
        } else {
            Auth::None
        };
        config.inbox_prefix = var("NATS_INBOX_PREFIX");
        if let Some(value) = var(crate::streams::REPLICAS_VAR) {
            match crate::streams::parse_replicas(&value) {
                Ok(n) => config.jetstream_replicas = n,
                Err(e) => tracing::warn!("{e}; using 1"),
            }
        }
        let tls = Tls {
            ca_file: var("NATS_TLS_CA").map(PathBuf::from),
            client_cert: var("NATS_TLS_CERT").map(PathBuf::from),
            client_key: var("NATS_TLS_KEY").map(PathBuf::from),
        };
        config.tls = (tls != Tls::default()).then_some(tls);
        config
    }

    pub(crate) async fn connect(&self) -> Result<async_nats::Client, BusError> {
        let mut options = match &self.auth {
            Auth::None => async_nats::ConnectOptions::new(),
            Auth::UserPassword(u, p) => {
                async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
            Auth::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
            Auth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(BusError::Credentials)?,
            Auth::NkeySeed(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
        };
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        if let Some(tls) = &self.tls {
            options = tls.apply(options)?;
        }
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        options = options
            .name(self.name.clone())
            .ping_interval(self.ping_interval)
            .max_reconnects(None)
            // Reconnect quickly after a NATS restart; back off to at most 2 s.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100u64 << attempts.min(5) as u64).min(2000))
            })
            .event_callback(move |event| {
                let lost = lost.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            // The first connection reports `Connected` too; only one after a
                            // loss is a reconnect.
                            if lost.swap(false, std::sync::atomic::Ordering::Relaxed) {
                                crate::metrics::METRICS.reconnects.inc();
                            }
                            tracing::info!("connected to nats");
                        }
                        async_nats::Event::Disconnected => {
                            lost.store(true, std::sync::atomic::Ordering::Relaxed);
                            crate::metrics::METRICS.disconnects.inc();
                            tracing::warn!("disconnected from nats");
                        }
                        other => tracing::debug!(event = %other, "nats event"),
                    }
                }
            });
        options
            .connect(servers(&self.url))
            .await
            .map_err(|source| BusError::Connect {
                url: self.url.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::with_schemes;

    #[test]
    fn urls_get_a_scheme_each_and_lists_keep_their_order() {
        assert_eq!(with_schemes(" "), None);
        assert_eq!(
            with_schemes("nats:4222").as_deref(),
            Some("nats://nats:4222")
        );
        assert_eq!(
            with_schemes("tls://a:4222, b:4222,,").as_deref(),
            Some("tls://a:4222,nats://b:4222")
        );
    }
}
