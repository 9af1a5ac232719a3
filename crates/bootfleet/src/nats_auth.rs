//! NATS users and subject permissions: one `services` user that may do anything, and one user
//! per distributor site that may do only what a distributor does, for its own site.
//!
//! Rendered as a nats-server `authorization { users = [...] }` block. Passwords are random and
//! the block holds only their bcrypt hashes, so the server's configuration (a Kubernetes secret,
//! a file an operator mails around) gives nobody a login; the clients get the passwords
//! (printed once, and kept by `bootfleet up` in a 0600 file). The file is still written 0600.
//!
//! Why each distributor permission exists (see `bootfleet_site_agent::agent`):
//! - publish `bootfleet.v1.distributors.heartbeat.<site>`, `bootfleet.v1.localnodes.site.<site>`,
//!   `bootfleet.v1.localnodes.reachability.<site>`, `bootfleet.v1.machines.boot.<site>`: its
//!   requests to the services, which accept them only for the site their subject names;
//! - publish `bootfleet.v1.events.boot.<site>`: its boot events;
//! - publish `bootfleet.v1.actions.output.<site>`: the output lines of the command runs it
//!   executes, as they arrive (a reply is one message, so a stream needs a subject; the actions
//!   service accepts lines only for runs it sent to the site the subject names);
//! - publish `<inbox prefix>.>`: subjects only it subscribes to; `bootfleet_bus::sync` sends a
//!   request there to learn that the server has its subscriptions;
//! - subscribe `bootfleet.v1.distributor.<site>.{control,apply,exec,run,power}`: what the
//!   services ask of it. Exact subjects, not `<site>.>`: an artifact id may contain dots, and site `a` with
//!   `bootfleet.v1.distributor.a.>` would receive the exec requests (with SSH private keys) of
//!   site `a.b`;
//! - subscribe `bootfleet.v1.distributor-agent.ping`: the agent's service answers the ping every
//!   bus service answers; nothing of value is sent there;
//! - subscribe `<inbox prefix>.>`: replies to its requests and its object store deliveries. The
//!   prefix is per site (`NATS_INBOX_PREFIX`), so it never sees replies meant for others (the
//!   gateway's `_INBOX` carries generated SSH private keys);
//! - publish the JetStream API subjects that read the artifact bucket's stream, and nothing that
//!   writes it (objects are written by publishing to `$O.<bucket>.>`, which is not allowed);
//! - `allow_responses`: it answers apply and exec requests, and JetStream flow control, on the
//!   reply subject it was given, once, within the longest exec the localnodes service allows.

use std::fmt::Write as _;

use bootfleet_api::subjects;
use rand_core::{OsRng, RngCore};

/// The user the services, the gateway and the builders connect as.
pub const SERVICES_USER: &str = "services";

/// How long a distributor may take to answer a request it received: the longest script run
/// (`bootfleet_localnodes::MAX_SCRIPT_TIMEOUT_SECS`, an hour) and the bus's slack, with margin.
pub const RESPONSE_EXPIRES: &str = "1h5m";

/// bcrypt's work factor. The passwords are 128 random bits, so no work factor is needed against
/// guessing them from a hash; it only costs nats-server time on every client's CONNECT (2^8
/// rounds, a few milliseconds, keeps a reconnect storm of many sites cheap).
const BCRYPT_COST: u32 = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NatsAuthError {
    #[error("distributor site {site:?}: {message}")]
    InvalidSite { site: String, message: String },
    #[error("distributor site {0:?} is given twice")]
    Duplicate(String),
    #[error("cannot hash a password: {0}")]
    Hash(String),
}

/// One NATS user's login.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// For distributor users: the inbox prefix they must connect with (`NATS_INBOX_PREFIX`).
    pub inbox_prefix: Option<String>,
}

// The password stays out of logs and panics.
bootfleet_api::debug_fields!(Credentials as c { user, inbox_prefix, .. });

/// What a user may publish and subscribe to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May answer requests it received (publish once to their reply subject).
    pub allow_responses: bool,
}

/// A distributor site and its login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distributor {
    pub site: String,
    pub credentials: Credentials,
}

/// Every user of one NATS server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsAuth {
    pub services: Credentials,
    pub distributors: Vec<Distributor>,
}

/// The NATS user name of a site's distributor.
pub fn distributor_user(site: &str) -> String {
    format!("distributor-{site}")
}

/// The inbox prefix of a site's distributor: one subject token, distinct for every site. Dots
/// (allowed in artifact ids) would split it into tokens and let `_INBOX_a.>` cover site `a.b`;
/// so `_` is escaped as `__` and `.` as `_d`, which keeps the mapping one-to-one.
pub fn inbox_prefix(site: &str) -> String {
    let mut token = String::with_capacity(site.len() + 8);
    token.push_str("_INBOX_");
    for c in site.chars() {
        match c {
            '_' => token.push_str("__"),
            '.' => token.push_str("_d"),
            c => token.push(c),
        }
    }
    token
}

/// The JetStream API subjects that read the artifact bucket, found by running the
/// distributor's read path (`bootfleet_bus::ArtifactStore`: open, info, chunks) against a
/// nats-server with only these allowed (see the `nats_permissions` tests).
fn artifact_read_subjects() -> Vec<String> {
    let stream = format!("OBJ_{}", subjects::ARTIFACT_BUCKET);
    vec![
        // get_object_store: the stream's info.
        format!("$JS.API.STREAM.INFO.{stream}"),
        // ObjectStore::info: the object's metadata, the last message on `$O.<bucket>.M.<name>`
        // (direct get when the stream allows it, else the stream's message get).
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        // Reading the chunks: direct get of the next message on `$O.<bucket>.C.<nuid>` (the
        // subject goes in the request body). No consumer: its delivery subject would be the
        // creator's choice, which these permissions could not bound.
        format!("$JS.API.DIRECT.GET.{stream}"),
    ]
}

/// What the distributor of `site` may do. `site` must be a valid artifact id.
pub fn distributor_permissions(site: &str) -> Permissions {
    let mut publish = vec![
        subjects::distributor_heartbeat(site),
        subjects::localnodes_of_site(site),
        subjects::localnodes_reachability(site),
        // What a PXE client of its site gets, by MAC (the machines service answers).
        subjects::machines_boot(site),
        subjects::boot_events(site),
        // The output lines of the command runs it executes, as they arrive.
        subjects::actions_output(site),
        // Its own inbox space, where only it listens: `bootfleet_bus::sync`'s round trip.
        format!("{}.>", inbox_prefix(site)),
    ];
    publish.extend(artifact_read_subjects());
    Permissions {
        publish,
        subscribe: vec![
            subjects::distributor_control(site),
            subjects::distributor_apply(site),
            subjects::distributor_exec(site),
            subjects::distributor_run(site),
            // Power through a machine's BMC (the request carries the BMC's password).
            subjects::distributor_power(site),
            subjects::ping(DISTRIBUTOR_AGENT_SERVICE),
            format!("{}.>", inbox_prefix(site)),
        ],
        allow_responses: true,
    }
}

/// The bus service name the distributor's agent registers (`ServiceBuilder::new` in
/// `bootfleet_site_agent::agent`); it subscribes `bootfleet.v1.<name>.ping`.
const DISTRIBUTOR_AGENT_SERVICE: &str = "distributor-agent";

/// A random password: 32 hex digits (128 bits from the OS), nothing to quote.
pub fn random_password() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl NatsAuth {
    /// Users for the services and each site, with random passwords.
    pub fn generate<S: AsRef<str>>(sites: &[S]) -> Result<NatsAuth, NatsAuthError> {
        NatsAuth::with_passwords(sites, random_password)
    }

    /// Like [`NatsAuth::generate`] with passwords from `password` (services first, then each
    /// site in order): for reproducible tests.
    pub fn with_passwords<S: AsRef<str>>(
        sites: &[S],
        mut password: impl FnMut() -> String,
    ) -> Result<NatsAuth, NatsAuthError> {
        let mut seen = std::collections::HashSet::new();
        for site in sites.iter().map(AsRef::as_ref) {
            bootfleet_api::validate::artifact_id("site", site).map_err(|e| {
                NatsAuthError::InvalidSite {
                    site: site.to_owned(),
                    message: e.message.trim_start_matches("site: ").to_owned(),
                }
            })?;
            if !seen.insert(site) {
                return Err(NatsAuthError::Duplicate(site.to_owned()));
            }
        }
        let services = Credentials {
            user: SERVICES_USER.to_owned(),
            password: password(),
            inbox_prefix: None,
        };
        let distributors = sites
            .iter()
            .map(|site| {
                let site = site.as_ref();
                Distributor {
                    site: site.to_owned(),
                    credentials: Credentials {
                        user: distributor_user(site),
                        password: password(),
                        inbox_prefix: Some(inbox_prefix(site)),
                    },
                }
            })
            .collect();
        Ok(NatsAuth {
            services,
            distributors,
        })
    }

    /// The nats-server configuration: an `authorization` block with every user and the bcrypt
    /// hash of its password. Anyone without a login is refused (no `no_auth_user`).
    pub fn render(&self) -> Result<String, NatsAuthError> {
        self.render_with(|password| {
            bcrypt::hash(password, BCRYPT_COST).map_err(|e| NatsAuthError::Hash(e.to_string()))
        })
    }

    /// [`NatsAuth::render`] with the password hash given (bcrypt salts at random).
    fn render_with(
        &self,
        mut hash: impl FnMut(&str) -> Result<String, NatsAuthError>,
    ) -> Result<String, NatsAuthError> {
        let mut out = String::new();
        out.push_str("# Generated by `bootfleet nats-config`: users, bcrypt hashes of their passwords, permissions.\n");
        out.push_str("authorization {\n  users = [\n");
        // The services may do anything: they own every subject and the JetStream API.
        render_user(
            &mut out,
            &self.services,
            &hash(&self.services.password)?,
            None,
        );
        for d in &self.distributors {
            render_user(
                &mut out,
                &d.credentials,
                &hash(&d.credentials.password)?,
                Some(&distributor_permissions(&d.site)),
            );
        }
        out.push_str("  ]\n}\n");
        Ok(out)
    }

    /// The `services` login for `bootfleet_bus::BusConfig`.
    pub fn services_auth(&self) -> bootfleet_bus::Auth {
        bootfleet_bus::Auth::UserPassword(
            self.services.user.clone(),
            self.services.password.clone(),
        )
    }
}

/// A config string in double quotes. Subjects (`$JS...`) must be quoted: unquoted, `$name` is a
/// variable reference. Everything rendered is a validated site, a fixed subject or hex, so
/// escaping is only a safeguard.
fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

fn render_user(
    out: &mut String,
    creds: &Credentials,
    password_hash: &str,
    perms: Option<&Permissions>,
) {
    // Quoted: unquoted, the hash's `$2b$...` would be read as a variable reference.
    let _ = write!(
        out,
        "    {{\n      user: {}\n      password: {}\n",
        quoted(&creds.user),
        quoted(password_hash)
    );
    match perms {
        None => {
            out.push_str("      permissions: { publish: \">\", subscribe: \">\" }\n");
        }
        Some(p) => {
            out.push_str("      permissions: {\n");
            let _ = writeln!(out, "        publish: {{ allow: {} }}", list(&p.publish));
            let _ = writeln!(
                out,
                "        subscribe: {{ allow: {} }}",
                list(&p.subscribe)
            );
            if p.allow_responses {
                let _ = writeln!(
                    out,
                    "        allow_responses: {{ max: 1, expires: {} }}",
                    quoted(RESPONSE_EXPIRES)
                );
            }
            out.push_str("      }\n");
        }
    }
    out.push_str("    }\n");
}

/// Shell lines that run a site's distributor with its login.
pub fn distributor_env(nats_url: &str, distributor: &Distributor) -> String {
    let c = &distributor.credentials;
    let mut s = format!(
        "NATS_URL={nats_url} NATS_USER={} NATS_PASSWORD={}",
        c.user, c.password
    );
    if let Some(prefix) = &c.inbox_prefix {
        let _ = write!(s, " NATS_INBOX_PREFIX={prefix}");
    }
    let _ = write!(
        s,
        " DISTRIBUTOR_ARTIFACT_ID={} bootfleet-distributor serve --interface <lan-if> --server-ip <lan-ip>",
        distributor.site
    );
    s
}

/// Writes `text` to `path` readable by its owner only (it holds passwords), replacing the file.
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open; make it private too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

/// The distributor logins `bootfleet up` keeps between starts, one `<site> <password>` per line:
/// a distributor's login must survive a restart of `up`, or every site would need its new
/// password after each one. Sites stay until their line is removed.
pub fn parse_saved_logins(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut saved = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(site), Some(password), None) => {
                bootfleet_api::validate::artifact_id("site", site)
                    .map_err(|e| format!("line {}: {}", n + 1, e.message))?;
                saved.push((site.to_owned(), password.to_owned()));
            }
            _ => return Err(format!("line {}: expected `<site> <password>`", n + 1)),
        }
    }
    Ok(saved)
}

/// The text [`parse_saved_logins`] reads back: every distributor of `auth`.
pub fn render_saved_logins(auth: &NatsAuth) -> String {
    let mut out = String::from(
        "# Distributor NATS logins kept by `bootfleet up` between starts: <site> <password>.\n\
         # Remove a line to drop that site's login at the next start.\n",
    );
    for d in &auth.distributors {
        let _ = writeln!(out, "{} {}", d.site, d.credentials.password);
    }
    out
}

impl NatsAuth {
    /// The saved sites with their passwords, plus `new_sites` with fresh ones; the services'
    /// password is new each time (only this process uses it).
    pub fn keeping<S: AsRef<str>>(
        saved: &[(String, String)],
        new_sites: &[S],
    ) -> Result<NatsAuth, NatsAuthError> {
        let mut sites: Vec<&str> = saved.iter().map(|(site, _)| site.as_str()).collect();
        for site in new_sites.iter().map(AsRef::as_ref) {
            if !sites.contains(&site) {
                sites.push(site);
            }
        }
        let mut passwords = std::iter::once(random_password())
            .chain(sites.iter().map(|site| {
                saved
                    .iter()
                    .find(|(s, _)| s == site)
                    .map_or_else(random_password, |(_, p)| p.clone())
            }))
            .collect::<Vec<_>>()
            .into_iter();
        NatsAuth::with_passwords(&sites, || passwords.next().unwrap_or_else(random_password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> NatsAuth {
        let mut n = 0;
        NatsAuth::with_passwords(&["site-1", "lab.b"], || {
            n += 1;
            format!("pw{n}")
        })
        .expect("valid sites")
    }

    #[test]
    fn renders_the_services_user_and_one_restricted_user_per_site() {
        let expected = r#"# Generated by `bootfleet nats-config`: users, bcrypt hashes of their passwords, permissions.
authorization {
  users = [
    {
      user: "services"
      password: "hash(pw1)"
      permissions: { publish: ">", subscribe: ">" }
    }
    {
      user: "distributor-site-1"
      password: "hash(pw2)"
      permissions: {
        publish: { allow: ["bootfleet.v1.distributors.heartbeat.site-1", "bootfleet.v1.localnodes.site.site-1", "bootfleet.v1.localnodes.reachability.site-1", "bootfleet.v1.machines.boot.site-1", "bootfleet.v1.events.boot.site-1", "bootfleet.v1.actions.output.site-1", "_INBOX_site-1.>", "$JS.API.STREAM.INFO.OBJ_bootfleet-artifacts", "$JS.API.DIRECT.GET.OBJ_bootfleet-artifacts.>", "$JS.API.STREAM.MSG.GET.OBJ_bootfleet-artifacts", "$JS.API.DIRECT.GET.OBJ_bootfleet-artifacts"] }
        subscribe: { allow: ["bootfleet.v1.distributor.site-1.control", "bootfleet.v1.distributor.site-1.apply", "bootfleet.v1.distributor.site-1.exec", "bootfleet.v1.distributor.site-1.run", "bootfleet.v1.distributor.site-1.power", "bootfleet.v1.distributor-agent.ping", "_INBOX_site-1.>"] }
        allow_responses: { max: 1, expires: "1h5m" }
      }
    }
    {
      user: "distributor-lab.b"
      password: "hash(pw3)"
      permissions: {
        publish: { allow: ["bootfleet.v1.distributors.heartbeat.lab.b", "bootfleet.v1.localnodes.site.lab.b", "bootfleet.v1.localnodes.reachability.lab.b", "bootfleet.v1.machines.boot.lab.b", "bootfleet.v1.events.boot.lab.b", "bootfleet.v1.actions.output.lab.b", "_INBOX_lab_db.>", "$JS.API.STREAM.INFO.OBJ_bootfleet-artifacts", "$JS.API.DIRECT.GET.OBJ_bootfleet-artifacts.>", "$JS.API.STREAM.MSG.GET.OBJ_bootfleet-artifacts", "$JS.API.DIRECT.GET.OBJ_bootfleet-artifacts"] }
        subscribe: { allow: ["bootfleet.v1.distributor.lab.b.control", "bootfleet.v1.distributor.lab.b.apply", "bootfleet.v1.distributor.lab.b.exec", "bootfleet.v1.distributor.lab.b.run", "bootfleet.v1.distributor.lab.b.power", "bootfleet.v1.distributor-agent.ping", "_INBOX_lab_db.>"] }
        allow_responses: { max: 1, expires: "1h5m" }
      }
    }
  ]
}
"#;
        let rendered = fixed()
            .render_with(|p| Ok(format!("hash({p})")))
            .expect("render");
        assert_eq!(rendered, expected);
    }

    #[test]
    fn the_configuration_holds_bcrypt_hashes_never_the_passwords() {
        let auth = NatsAuth::generate(&["site-1"]).expect("valid");
        let text = auth.render().expect("render");
        let hashes: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("password: "))
            .map(|h| h.trim_matches('"'))
            .collect();
        let passwords = [
            &auth.services.password,
            &auth.distributors[0].credentials.password,
        ];
        assert_eq!(hashes.len(), passwords.len(), "{text}");
        for (hash, password) in hashes.iter().zip(passwords) {
            assert!(!text.contains(password.as_str()), "a password in {text}");
            // nats-server takes a password starting `$2a$`/`$2b$` with a two-digit cost as bcrypt.
            assert!(hash.starts_with("$2b$08$"), "{hash}");
            assert!(bcrypt::verify(password, hash).expect("a bcrypt hash"));
            assert!(!bcrypt::verify("not it", hash).expect("a bcrypt hash"));
        }
    }

    #[test]
    fn refuses_invalid_and_duplicate_sites() {
        for bad in [
            "",
            "a b",
            "../x",
            "a>",
            "a*",
            ".a",
            "-a",
            "a\nb",
            &"x".repeat(200),
        ] {
            let err = NatsAuth::generate(&[bad]).expect_err(bad);
            assert!(
                matches!(&err, NatsAuthError::InvalidSite { site, .. } if site == bad),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains("letters, digits"), "{err}");
        }
        assert_eq!(
            NatsAuth::generate(&["a", "a"]),
            Err(NatsAuthError::Duplicate("a".into()))
        );
    }

    #[test]
    fn inbox_prefixes_are_one_token_and_distinct() {
        let sites = ["a", "a.b", "a_b", "a_db", "a.d", "a__b", "a_.b"];
        let prefixes: std::collections::HashSet<String> =
            sites.iter().map(|s| inbox_prefix(s)).collect();
        assert_eq!(prefixes.len(), sites.len(), "{prefixes:?}");
        assert!(prefixes.iter().all(|p| !p.contains('.')), "{prefixes:?}");
        assert_eq!(inbox_prefix("site-1"), "_INBOX_site-1");
    }

    #[test]
    fn no_distributor_subject_covers_another_sites() {
        // A site's subscriptions are exact subjects (plus its own inbox), never wildcards that
        // reach into another site's subjects, dots in ids included.
        let perms = distributor_permissions("a");
        for subject in &perms.subscribe {
            if subject.ends_with(".>") {
                assert!(subject.starts_with("_INBOX_a."), "{subject}");
            } else {
                assert!(
                    !subject.contains('*') && !subject.contains('>'),
                    "{subject}"
                );
            }
        }
        assert!(!perms.subscribe.contains(&subjects::distributor_exec("a.b")));
        assert!(!perms
            .subscribe
            .contains(&subjects::distributor_power("a.b")));
        assert!(!perms.subscribe.contains(&subjects::distributor_run("a.b")));
        assert!(perms.publish.contains(&subjects::actions_output("a")));
        assert!(!perms.publish.contains(&subjects::actions_output("a.b")));
        assert!(!perms.publish.iter().any(|s| s.starts_with("$O.")));
        // Its publish wildcards: its own inbox space and direct reads of the artifact bucket.
        for subject in perms
            .publish
            .iter()
            .filter(|s| s.contains('>') || s.contains('*'))
        {
            assert!(
                subject == "_INBOX_a.>" || subject.starts_with("$JS.API.DIRECT.GET."),
                "{subject}"
            );
        }
    }

    #[test]
    fn random_passwords_differ_and_are_long() {
        let auth = NatsAuth::generate(&["a", "b"]).expect("valid");
        let mut all = vec![auth.services.password.clone()];
        all.extend(
            auth.distributors
                .iter()
                .map(|d| d.credentials.password.clone()),
        );
        assert!(all.iter().all(|p| p.len() == 32));
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 3);
        assert!(!format!("{auth:?}").contains(&auth.services.password));
    }

    #[test]
    fn saved_logins_survive_a_restart_and_new_sites_are_added() {
        let first = NatsAuth::keeping(&[], &["site-1"]).expect("first start");
        let text = render_saved_logins(&first);
        let saved = parse_saved_logins(&text).expect("parse");
        assert_eq!(
            saved,
            [(
                "site-1".to_owned(),
                first.distributors[0].credentials.password.clone()
            )]
        );
        let second = NatsAuth::keeping(&saved, &["site-2", "site-1"]).expect("second start");
        let sites: Vec<&str> = second
            .distributors
            .iter()
            .map(|d| d.site.as_str())
            .collect();
        assert_eq!(sites, ["site-1", "site-2"]);
        assert_eq!(
            second.distributors[0].credentials,
            first.distributors[0].credentials
        );
        assert_ne!(second.services.password, first.services.password);
        assert_ne!(
            second.distributors[1].credentials.password,
            first.distributors[0].credentials.password
        );
    }

    #[test]
    fn malformed_saved_logins_name_the_line() {
        assert_eq!(
            parse_saved_logins("# comment\nsite-1 pw\n\nsite-2\n"),
            Err("line 4: expected `<site> <password>`".into())
        );
        let err = parse_saved_logins("bad$site pw\n").expect_err("bad site");
        assert!(err.starts_with("line 1: "), "{err}");
    }
}
