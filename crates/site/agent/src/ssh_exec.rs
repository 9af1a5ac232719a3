//! Runs one operator script on a node over SSH, in process (russh), on behalf of the site.
//!
//! How the script is delivered: it is the `exec` request's command string, verbatim, after a
//! fixed one-line prologue ([`LIFELINE`]) on the same first line. The node's sshd runs it with the
//! user's login shell (`$SHELL -c <command>`), so quoting, `$()` and newlines are interpreted on
//! the node only; nothing on the distributor ever hands it to a shell. The script's standard
//! input is /dev/null (reads see end of file at once instead of hanging; under `sh -s` the
//! script could swallow the rest of itself). A script is run as it would be by `ssh node
//! 'script'`, except that the process group is killed if the connection drops mid-run.
//!
//! Security:
//! - The private key is parsed from the caller's text into memory and kept in [`SecretKey`],
//!   whose `Debug` is redacted. The decoded key is `ssh_key::PrivateKey`, whose secret parts are
//!   zeroized on drop. Nothing is written to disk, and neither the key nor parser messages about
//!   it (which could quote it) reach logs or errors. (The caller's text is the caller's to wipe.)
//! - Host keys: with `known_host_key` set, only that exact key is accepted; anything else fails
//!   the key exchange with [`ExecError::HostKeyChanged`] before authentication, so nothing runs
//!   and the key is never offered to the impostor. With none (first contact) the key seen is
//!   returned in [`ExecOutcome::host_key`] for the caller to record.
//! - The timeout covers connect, handshake, authentication and the run. On expiry the remote
//!   command gets SIGKILL (the `signal` channel request; OpenSSH honours it for non-root users),
//!   the connection is disconnected, and the TCP socket shut down. The disconnect is what kills
//!   a root session's command: see [`LIFELINE`].
//! - Output is capped per stream; the rest is read and dropped so the command still finishes.
//!
//! Environment for a script ([`run_streaming`]): values reach the script as exported shell
//! variables, written by [`env_prologue`] after the lifeline and before the script. Each value
//! is quoted by [`shell_quote`], the one function that puts a caller's string into shell text:
//! inside single quotes a POSIX shell interprets nothing, and a `'` in the value is written
//! `'\''` (close the quote, an escaped quote, reopen). Names are checked to be `[A-Z_][A-Z0-9_]*`
//! and never quoted. SSH `env` requests would keep values out of shell text altogether, but
//! OpenSSH's sshd drops every variable its `AcceptEnv` does not list (by default only `LANG` and
//! `LC_*`), silently, so a script would run without them on most nodes; quoting works with any
//! sshd and is tested against every byte that means something to a shell.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Sig};

/// Put in front of the script, on its first line (so the shell's line numbers in error messages
/// still match the script). sshd does not kill a non-pty command when the client goes away, and
/// refuses the `signal` request for root sessions; so the command kills itself:
/// - the channel's stdin moves to fd 3 and the script gets /dev/null (reads see EOF at once, as
///   if stdin were closed; the script cannot consume the lifeline);
/// - a background watcher blocks reading fd 3. We never write to it nor close it, so it ends only
///   when sshd closes the pipe: when the connection is gone, or after the shell has exited and
///   been reaped. If the shell (`$$`) is still alive then, the connection died under it, and the
///   watcher kills the whole process group (`kill 0`: the shell and everything it started,
///   itself included). After a normal end `kill -0 $$` fails and nothing is killed, so processes
///   a script detached on purpose survive.
/// - the watcher's output goes to /dev/null so it never holds the channel open.
///
/// This needs a POSIX-compatible login shell (sh, dash, bash, zsh, busybox ash) for the user.
pub const LIFELINE: &str = "exec 3<&0 </dev/null; { while read -r _ <&3; do :; done; kill -0 $$ && kill -KILL 0; } >/dev/null 2>&1 & exec 3<&-; ";

/// How long the clean-up after a timeout may take (kill, disconnect, wait for the session to
/// end): `run` returns at most about this much after the timeout.
const CLEANUP_GRACE: Duration = Duration::from_millis(1000);

/// What to run where.
pub struct ExecRequest<'a> {
    /// The node's SSH address (ip:22).
    pub addr: SocketAddr,
    /// The remote user; the caller picks the default ("root").
    pub user: &'a str,
    /// OpenSSH private key text (ed25519, ecdsa or rsa), unencrypted. Legacy PEM (PKCS#1, SEC1,
    /// PKCS#8) is accepted too.
    pub private_key: &'a str,
    /// Sent as the exec request's command; the node's login shell interprets it.
    pub script: &'a str,
    /// The whole operation: connect, handshake, authentication and the run.
    pub timeout: Duration,
    /// The host key recorded earlier (`ssh-ed25519 AAAA...`); `None` = first contact.
    pub known_host_key: Option<&'a str>,
    /// Cap per stream, in bytes; beyond it output is dropped and `truncated` set.
    pub max_output: usize,
}

// By hand: the derived Debug would print the private key (and scripts may carry secrets too).
bootfleet_api::debug_fields!(ExecRequest<'_> as r {
    addr,
    user,
    private_key: "<redacted>",
    script_bytes: r.script.len(),
    timeout,
    known_host_key,
    max_output,
});

/// What the script did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// `None` if the command was killed by a signal (or the server sent no status at all).
    pub exit_code: Option<i32>,
    /// The signal's name without `SIG` (`TERM`, `KILL`), when killed by one.
    pub exit_signal: Option<String>,
    /// True when either stream exceeded `max_output` and was cut there.
    pub truncated: bool,
    /// The server's host key as seen, as an OpenSSH line (`ssh-ed25519 AAAA...`, no comment).
    pub host_key: String,
}

#[derive(thiserror::Error, Debug)]
pub enum ExecError {
    /// The private key does not parse. The message never quotes the key.
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    /// TCP connect or SSH handshake failed: unreachable, refused, not SSH, no common algorithm.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server's host key differs from the recorded one; nothing was sent or run.
    #[error("host key changed: expected {expected}, got {got}")]
    HostKeyChanged { expected: String, got: String },
    /// The server refused the key for this user.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The operation took longer than this; the session was killed and closed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Anything else going wrong in the SSH conversation (also: an unparsable `known_host_key`).
    #[error("ssh protocol error: {0}")]
    Protocol(String),
}

/// A decoded private key. Its `Debug` is redacted; the secret parts zeroize on drop.
pub struct SecretKey(Arc<PrivateKey>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({}, <redacted>)", self.0.algorithm())
    }
}

impl SecretKey {
    /// Parses OpenSSH (or legacy PEM) private key text. Errors are fixed sentences: parser
    /// messages are not passed on, as some quote the input.
    pub fn parse(text: &str) -> Result<SecretKey, ExecError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ExecError::InvalidKey("the private key is empty".into()));
        }
        let encrypted = || {
            ExecError::InvalidKey(
                "the private key is passphrase-protected; an unencrypted key is needed".into(),
            )
        };
        let key = if text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
            // ssh-key directly rather than russh's decoder: it keeps the decoded secret in
            // zeroizing types.
            PrivateKey::from_openssh(text).map_err(|_| unparsable())?
        } else if text.starts_with("-----BEGIN ") {
            russh::keys::decode_secret_key(text, None).map_err(|e| match e {
                russh::keys::Error::KeyIsEncrypted => encrypted(),
                _ => unparsable(),
            })?
        } else {
            return Err(unparsable());
        };
        if key.is_encrypted() {
            return Err(encrypted());
        }
        Ok(SecretKey(Arc::new(key)))
    }
}

fn unparsable() -> ExecError {
    ExecError::InvalidKey(
        "the private key does not parse (expected an unencrypted OpenSSH private key)".into(),
    )
}

/// `type base64`, without the comment: the form recorded and compared.
fn openssh_line(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh()
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| format!("{} <unencodable>", key.algorithm()))
}

/// Parses a recorded host key line (`type base64 [comment]`).
fn parse_known(line: &str) -> Result<PublicKey, ExecError> {
    PublicKey::from_openssh(line.trim()).map_err(|_| {
        ExecError::Protocol(format!(
            "the recorded host key does not parse as an OpenSSH public key line: {:?}",
            line.chars().take(120).collect::<String>()
        ))
    })
}

/// The russh handler: decides on the server's host key and remembers what it saw.
struct HostKeyCheck {
    known: Option<PublicKey>,
    seen: Arc<Mutex<Option<PublicKey>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Host certificates are not advertised (russh's default), so a certificate here is
        // unexpected; refuse rather than trust the key inside it.
        let PublicKeyOrCertificate::PublicKey { key, .. } = server else {
            return Ok(false);
        };
        let Ok(mut seen) = self.seen.lock() else {
            return Ok(false);
        };
        // Compared on the key data only: comments are not part of a key's identity. A later
        // call (re-key) must present the same key as the first.
        let expected = self.known.as_ref().or(seen.as_ref());
        let accept = expected.is_none_or(|k| k.key_data() == key.key_data());
        if seen.is_none() {
            *seen = Some(key.clone());
        }
        Ok(accept)
    }
}

/// The live parts of a session, kept outside the timed future so they can be killed and closed
/// once it is dropped.
#[derive(Default)]
struct Live {
    handle: Option<client::Handle<HostKeyCheck>>,
    channel: Option<russh::Channel<client::Msg>>,
    /// A duplicate of the TCP socket's descriptor: `shutdown` on it ends the connection even if
    /// the session task is stuck, as a last resort.
    socket: Option<std::net::TcpStream>,
}

impl Live {
    /// Ends the session: optionally kills the remote command first, then disconnects, gives the
    /// session task a moment to finish, and shuts the socket down regardless.
    async fn close(&mut self, kill: bool) {
        let work = async {
            if kill {
                if let Some(channel) = self.channel.as_ref() {
                    // Honoured by OpenSSH for unprivileged users only (a root session runs without
                    // privilege separation, and sshd then refuses signals); the lifeline covers
                    // root. No reply is asked for: it goes out ahead of the disconnect below on
                    // the same ordered queue.
                    let sent = channel.signal(Sig::KILL).await.is_ok();
                    tracing::debug!(sent, "ssh: sent SIGKILL to the remote command");
                }
            }
            if let Some(handle) = self.handle.as_mut() {
                let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
            }
            self.channel = None;
            if let Some(handle) = self.handle.as_mut() {
                // The handle resolves when the session task has ended.
                let _ = handle.await;
            }
        };
        if tokio::time::timeout(CLEANUP_GRACE, work).await.is_err() {
            tracing::warn!(
                "ssh: session did not end in time after disconnect; shutting the socket down"
            );
        }
        self.channel = None;
        self.handle = None;
        if let Some(socket) = self.socket.take() {
            // An error here means it is already closed.
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A node's SSH address from a request's `ip` and `port` (0: the default, 22).
pub fn node_addr(ip: &str, port: u32) -> Result<SocketAddr, bootfleet_api::ApiError> {
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| bootfleet_api::ApiError::invalid("ip", "must be an IP address"))?;
    let port = u16::try_from(port).ok().filter(|p| *p > 0).unwrap_or(22);
    Ok(SocketAddr::new(ip, port))
}

/// `value` as one single-quoted POSIX shell word: the value byte for byte, with nothing in it
/// interpreted (`$`, backquotes, `;`, newlines, globs stay literal). The one place a caller's
/// string becomes shell text. A NUL cannot be in a shell word: refused.
pub fn shell_quote(value: &str) -> Result<String, ExecError> {
    if value.contains('\0') {
        return Err(ExecError::Protocol(
            "an environment value contains a NUL byte, which a shell word cannot carry".into(),
        ));
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    Ok(quoted)
}

/// Whether `name` may be exported as it is: `[A-Z_][A-Z0-9_]*`, at most 128 bytes.
fn env_name_ok(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'A'..=b'Z' | b'_'))
        && bytes.all(|b| matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'_'))
        && name.len() <= 128
}

/// `export NAME='value'; ` for each pair, values through [`shell_quote`]; a bad name is refused.
pub fn env_prologue(env: &[(String, String)]) -> Result<String, ExecError> {
    let mut prologue = String::new();
    for (name, value) in env {
        if !env_name_ok(name) {
            return Err(ExecError::Protocol(format!(
                "{:?} is not an environment variable name ([A-Z_][A-Z0-9_]*)",
                name.chars().take(64).collect::<String>()
            )));
        }
        prologue.push_str("export ");
        prologue.push_str(name);
        prologue.push('=');
        prologue.push_str(&shell_quote(value)?);
        prologue.push_str("; ");
    }
    Ok(prologue)
}

/// Which stream a chunk of output came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A piece of output as it arrived.
pub type Chunk = (Stream, Vec<u8>);

/// Runs `req.script` on `req.addr` as `req.user`. See the module documentation.
pub async fn run(req: &ExecRequest<'_>) -> Result<ExecOutcome, ExecError> {
    run_streaming(req, &[], None).await
}

/// [`run`], with `env` exported for the script (see the module documentation) and each piece of
/// output also sent to `output` as it arrives (within the per-stream cap; a full channel makes
/// the reading wait, a closed one is ignored).
pub async fn run_streaming(
    req: &ExecRequest<'_>,
    env: &[(String, String)],
    output: Option<tokio::sync::mpsc::Sender<Chunk>>,
) -> Result<ExecOutcome, ExecError> {
    let prologue = env_prologue(env)?;
    let started = Instant::now();
    let key = SecretKey::parse(req.private_key)?;
    let known = req.known_host_key.map(parse_known).transpose()?;
    if req.script.contains('\0') {
        return Err(ExecError::Protocol(
            "the script contains a NUL byte, which an SSH command string cannot carry".into(),
        ));
    }
    tracing::debug!(addr = %req.addr, user = req.user, script_bytes = req.script.len(), first_contact = known.is_none(), "ssh: running script");
    let seen = Arc::new(Mutex::new(None));
    let mut live = Live::default();
    let result = tokio::time::timeout(
        req.timeout,
        session(
            req,
            &prologue,
            output,
            &key,
            known.clone(),
            seen.clone(),
            &mut live,
        ),
    )
    .await;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(Ok(outcome)) => {
            live.close(false).await;
            tracing::debug!(addr = %req.addr, exit_code = ?outcome.exit_code, exit_signal = ?outcome.exit_signal, stdout_bytes = outcome.stdout.len(), stderr_bytes = outcome.stderr.len(), truncated = outcome.truncated, elapsed_ms, "ssh: script finished");
            Ok(outcome)
        }
        Ok(Err(e)) => {
            live.close(false).await;
            // The handshake failure from a refused host key carries no detail: tell it apart
            // here, where the expected and seen keys are known.
            let e = match (e, known, seen_key(&seen)) {
                (ExecError::Connect(_), Some(known), Some(got))
                    if known.key_data() != got.key_data() =>
                {
                    ExecError::HostKeyChanged {
                        expected: openssh_line(&known),
                        got: openssh_line(&got),
                    }
                }
                (e, _, _) => e,
            };
            match &e {
                ExecError::HostKeyChanged { expected, got } => {
                    tracing::warn!(addr = %req.addr, expected = %expected, got = %got, "ssh: host key changed; refusing to authenticate or run anything");
                }
                e => {
                    tracing::debug!(addr = %req.addr, error = %e, elapsed_ms, "ssh: no result")
                }
            }
            Err(e)
        }
        Err(_) => {
            tracing::warn!(addr = %req.addr, timeout_ms = u64::try_from(req.timeout.as_millis()).unwrap_or(u64::MAX), "ssh: timed out; killing the remote command and closing the session");
            live.close(true).await;
            Err(ExecError::Timeout(req.timeout))
        }
    }
}

fn seen_key(seen: &Mutex<Option<PublicKey>>) -> Option<PublicKey> {
    seen.lock().ok().and_then(|s| s.clone())
}

/// Host key algorithms to negotiate. With a recorded key, only its algorithm: a server with
/// several host keys would otherwise present its preferred one and look "changed".
fn host_key_algorithms(known: Option<&PublicKey>) -> Vec<russh::keys::Algorithm> {
    let defaults = russh::Preferred::DEFAULT.key.to_vec();
    let Some(known) = known else {
        return defaults;
    };
    let algorithm = known.algorithm();
    if is_rsa(&algorithm) {
        defaults.into_iter().filter(is_rsa).collect()
    } else {
        vec![algorithm]
    }
}

fn is_rsa(algorithm: &russh::keys::Algorithm) -> bool {
    matches!(algorithm, russh::keys::Algorithm::Rsa { .. })
}

/// Connect, check the host key, authenticate, run and collect. Everything that must be closed
/// afterwards goes into `live` as soon as it exists.
async fn session(
    req: &ExecRequest<'_>,
    prologue: &str,
    output: Option<tokio::sync::mpsc::Sender<Chunk>>,
    key: &SecretKey,
    known: Option<PublicKey>,
    seen: Arc<Mutex<Option<PublicKey>>>,
    live: &mut Live,
) -> Result<ExecOutcome, ExecError> {
    let addr = req.addr;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| ExecError::Connect(format!("tcp connect to {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let std_tcp = tcp
        .into_std()
        .map_err(|e| ExecError::Connect(format!("tcp socket to {addr}: {e}")))?;
    live.socket = std_tcp.try_clone().ok();
    let tcp = tokio::net::TcpStream::from_std(std_tcp)
        .map_err(|e| ExecError::Connect(format!("tcp socket to {addr}: {e}")))?;

    let config = client::Config {
        preferred: russh::Preferred {
            key: host_key_algorithms(known.as_ref()).into(),
            ..russh::Preferred::DEFAULT
        },
        // The session task must end on its own even if nobody closes it (belt and braces; `run`
        // always disconnects).
        inactivity_timeout: Some(req.timeout.saturating_add(CLEANUP_GRACE)),
        nodelay: true,
        ..client::Config::default()
    };
    let handler = HostKeyCheck {
        known,
        seen: seen.clone(),
    };
    let handle = client::connect_stream(Arc::new(config), tcp, handler)
        .await
        .map_err(|e| ExecError::Connect(format!("ssh handshake with {addr}: {e}")))?;
    let handle = live.handle.insert(handle);
    // The handshake has accepted the key by now, so it was recorded.
    let host_key = seen_key(&seen)
        .map(|k| openssh_line(&k))
        .ok_or_else(|| ExecError::Protocol(format!("{addr} presented no host key")))?;

    let hash = if is_rsa(&key.0.algorithm()) {
        // RSA signatures need a hash the server accepts (rsa-sha2-512/256; OpenSSH refuses
        // SHA-1 by default). Only asked for RSA: it may wait up to a second for the answer.
        handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .unwrap_or(Some(HashAlg::Sha256))
    } else {
        None
    };
    let auth = handle
        .authenticate_publickey(req.user, PrivateKeyWithHashAlg::new(key.0.clone(), hash))
        .await
        .map_err(|e| ExecError::Protocol(format!("authentication with {addr}: {e}")))?;
    if !auth.success() {
        return Err(ExecError::AuthFailed(format!(
            "{addr} refused the key ({}) for user {:?}",
            key.0.algorithm(),
            req.user
        )));
    }
    tracing::debug!(addr = %addr, user = req.user, "ssh: authenticated");

    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| ExecError::Protocol(format!("opening a session channel on {addr}: {e}")))?;
    let channel = live.channel.insert(channel);
    // Stdin is deliberately left open (no EOF): it is the lifeline, see `LIFELINE`.
    let command = format!("{LIFELINE}{prologue}{}", req.script);
    channel
        .exec(true, command.into_bytes())
        .await
        .map_err(|e| ExecError::Protocol(format!("sending the command to {addr}: {e}")))?;

    let mut out = ExecOutcome {
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit_code: None,
        exit_signal: None,
        truncated: false,
        host_key,
    };
    // Ends when the server closes the channel (after exit-status and EOF) or the session ends.
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                let kept = out.stdout.len();
                out.truncated |= append_capped(&mut out.stdout, &data, req.max_output);
                forward(&output, Stream::Stdout, &out.stdout[kept..]).await;
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                let kept = out.stderr.len();
                out.truncated |= append_capped(&mut out.stderr, &data, req.max_output);
                forward(&output, Stream::Stderr, &out.stderr[kept..]).await;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                out.exit_code = Some(i32::try_from(exit_status).unwrap_or(i32::MAX));
            }
            ChannelMsg::ExitSignal { signal_name, .. } => {
                out.exit_signal = Some(signal_name_of(&signal_name));
            }
            ChannelMsg::Failure => {
                return Err(ExecError::Protocol(format!(
                    "{addr} refused to run the command"
                )));
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok(out)
}

/// Sends what was just kept to the caller's channel, if any.
async fn forward(output: &Option<tokio::sync::mpsc::Sender<Chunk>>, stream: Stream, data: &[u8]) {
    if let (Some(tx), false) = (output, data.is_empty()) {
        let _ = tx.send((stream, data.to_vec())).await;
    }
}

/// Appends up to `cap` bytes in total; true if something was dropped.
fn append_capped(buf: &mut Vec<u8>, data: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    let take = room.min(data.len());
    buf.extend_from_slice(&data[..take]);
    take < data.len()
}

fn signal_name_of(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_capped_cuts_at_the_cap() {
        let mut buf = Vec::new();
        assert!(!append_capped(&mut buf, b"abc", 5));
        assert!(append_capped(&mut buf, b"defg", 5));
        assert_eq!(buf, b"abcde");
        assert!(append_capped(&mut buf, b"h", 5));
        assert!(!append_capped(&mut buf, b"", 5));
    }

    /// What a POSIX shell makes of the quoted word: the value, byte for byte, with nothing run.
    #[test]
    fn quoted_values_come_back_intact_from_a_real_shell() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("pwned");
        let values = [
            String::new(),
            "plain".into(),
            "it's".into(),
            "'".into(),
            "''".into(),
            format!("'; touch {}; echo '", marker.display()),
            format!("$(touch {})", marker.display()),
            format!("`touch {}`", marker.display()),
            format!("a\ntouch {}\nb", marker.display()),
            "\\' \" $HOME ${HOME} * ? [a] ~ ! # & | < > ( ) { } ;".into(),
            "\t\r\u{1b}[31mred é 日本".into(),
        ];
        for value in &values {
            let script = format!(
                "{}printf '%s' \"$V\"",
                env_prologue(&[("V".into(), value.clone())]).expect("prologue")
            );
            let out = std::process::Command::new("sh")
                .args(["-c", &script])
                .output()
                .expect("sh");
            assert!(out.status.success(), "{value:?}: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), *value);
            assert!(!marker.exists(), "{value:?} ran something");
        }
    }

    #[test]
    fn bad_names_and_nul_values_are_refused() {
        for name in ["", "a", "1A", "A-B", "A B", "A;B", "A=B", "A\nB"] {
            assert!(
                env_prologue(&[(name.into(), "x".into())]).is_err(),
                "{name:?}"
            );
        }
        assert!(env_prologue(&[("A".into(), "x\0y".into())]).is_err());
        assert_eq!(
            env_prologue(&[("A".into(), "it's".into()), ("_B1".into(), "".into())]).expect("ok"),
            "export A='it'\\''s'; export _B1=''; "
        );
    }

    #[test]
    fn garbage_keys_are_invalid_and_not_quoted() {
        let text = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0c2VjcmV0c2VjcmV0\n-----END OPENSSH PRIVATE KEY-----\n";
        let err = SecretKey::parse(text).expect_err("garbage");
        assert!(matches!(err, ExecError::InvalidKey(_)), "{err:?}");
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
        assert!(matches!(
            SecretKey::parse("  "),
            Err(ExecError::InvalidKey(_))
        ));
        assert!(matches!(
            SecretKey::parse("hello"),
            Err(ExecError::InvalidKey(_))
        ));
    }
}
