//! The one way builders run external programs: an argument vector (never a shell), a working
//! directory, a minimal environment, stdout and stderr merged into one bounded capture, a
//! timeout, cooperative cancellation, and the whole process tree killed when either fires.
//!
//! Each command starts in a process group of its own (`process_group(0)` in duct's
//! `before_spawn`), so `make`'s compilers or a shell script's background jobs can be killed
//! together with `killpg`. The group is also swept once the command itself has exited, so no
//! stray process keeps writing into a build directory that is about to be deleted.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use crate::{BuildError, Cancel};

/// Bytes of merged output kept (the tail); older output is dropped.
const CAPTURE_LIMIT: usize = 64 * 1024;
/// The most output an error message carries.
const ERROR_TAIL_BYTES: usize = 4 * 1024;
/// Lines of output an error message carries at most.
const ERROR_TAIL_LINES: usize = 40;
/// How often a running command is checked for exit, cancellation and its deadline.
const POLL: Duration = Duration::from_millis(20);
/// How long to wait for the output pipe to close once the process group is gone.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// The `PATH` children get when the builder's own environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One external program to run. Build it, then [`Command::run`] it.
#[derive(Clone, Debug)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    dir: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
}

/// A command that exited with status 0.
#[derive(Clone, Debug)]
pub struct Ran {
    /// Its merged stdout and stderr, lossily decoded; only the last 64 KiB when it printed more.
    pub output: String,
    /// True when older output was dropped to stay within the bound.
    pub truncated: bool,
    pub elapsed: Duration,
}

impl Command {
    /// `program` is looked up on `PATH` unless it contains a `/`. The default timeout is 10 minutes.
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            dir: None,
            env: Vec::new(),
            timeout: Duration::from_secs(600),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Command {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Working directory; also the child's `HOME` and `TMPDIR`, so no dotfile of the builder's
    /// user (`~/.mtoolsrc`, `~/.xorrisorc`) changes what a tool does.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Command {
        self.dir = Some(dir.into());
        self
    }

    /// Adds one variable to the otherwise minimal environment.
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Command {
        self.env
            .push((name.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Command {
        self.timeout = timeout;
        self
    }

    /// The program's name as error messages show it (its file name, not its whole path).
    pub fn program_name(&self) -> String {
        Path::new(&self.program)
            .file_name()
            .unwrap_or(self.program.as_os_str())
            .to_string_lossy()
            .into_owned()
    }

    /// The environment the child gets: nothing inherited except `PATH`; C locale so messages
    /// are stable; UTC so file times inside images do not depend on the host's zone.
    fn environment(&self) -> Vec<(OsString, OsString)> {
        let path = std::env::var_os("PATH")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.into());
        let home = self
            .dir
            .as_ref()
            .map(|d| d.as_os_str().to_owned())
            .unwrap_or_else(|| "/nonexistent".into());
        let mut env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), path),
            ("LC_ALL".into(), "C".into()),
            ("LANG".into(), "C".into()),
            ("TZ".into(), "UTC".into()),
            ("HOME".into(), home.clone()),
        ];
        if self.dir.is_some() {
            env.push(("TMPDIR".into(), home));
        }
        for (name, value) in &self.env {
            env.retain(|(n, _)| n != name);
            env.push((name.clone(), value.clone()));
        }
        env
    }

    /// Runs it to completion. Errors: [`BuildError::Tool`] when it cannot start or exits
    /// non-zero (with the tail of its output), [`BuildError::Timeout`], [`BuildError::Cancelled`].
    pub fn run(&self, cancel: &Cancel) -> Result<Ran, BuildError> {
        let name = self.program_name();
        if cancel.is_cancelled() {
            return Err(BuildError::Cancelled);
        }
        if let Some(dir) = &self.dir {
            if !dir.is_dir() {
                return Err(BuildError::Tool {
                    program: name,
                    message: format!("working directory {} does not exist", dir.display()),
                });
            }
        }

        let (reader, writer) = std::io::pipe()?;
        let writer2 = writer.try_clone()?;
        // The reader starts before the child: if it could not, no child is left running unwatched.
        let capture = Arc::new(Mutex::new(Capture::default()));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        {
            let capture = capture.clone();
            let mut reader = reader;
            std::thread::Builder::new()
                .name("tool-output".into())
                .spawn(move || {
                    let mut buf = [0u8; 8192];
                    loop {
                        match reader.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                if let Ok(mut c) = capture.lock() {
                                    c.push(&buf[..n]);
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    let _ = done_tx.send(());
                })?;
        }

        let mut expr = duct::cmd(&self.program, &self.args)
            .full_env(self.environment())
            .stdin_null()
            .stdout_file(writer)
            .stderr_file(writer2)
            .unchecked()
            .before_spawn(|cmd| {
                // Its own process group, so a timeout or cancel can kill everything it started.
                cmd.process_group(0);
                Ok(())
            });
        if let Some(dir) = &self.dir {
            expr = expr.dir(dir);
        }
        let started = Instant::now();
        let handle = expr
            .start()
            .map_err(|e| start_error(&name, &self.program, e));
        // The expression holds our copies of the pipe's write end; drop them now so the reader
        // sees end-of-file once the children are gone (or at once, if none started).
        drop(expr);
        let handle = handle?;

        let pid = handle
            .pids()
            .first()
            .and_then(|p| i32::try_from(*p).ok())
            .and_then(Pid::from_raw);
        let mut reaped_elsewhere = false;
        let outcome = loop {
            match leader_state(pid) {
                Leader::Running => {}
                Leader::Exited => break Outcome::Exited,
                Leader::Gone => {
                    reaped_elsewhere = true;
                    break Outcome::Exited;
                }
            }
            if cancel.is_cancelled() {
                break Outcome::Cancelled;
            }
            if started.elapsed() >= self.timeout {
                break Outcome::TimedOut;
            }
            std::thread::sleep(POLL);
        };
        // The leader is not reaped yet (waitid with WNOWAIT only peeks), so its pid is still its
        // group's id and cannot have been reused: killing the group is safe, on every path.
        if let Some(pid) = pid.filter(|_| !reaped_elsewhere) {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
        if outcome != Outcome::Exited {
            let _ = handle.kill();
        }
        let status = handle.wait().map(|o| o.status);
        let _ = done_rx.recv_timeout(DRAIN_GRACE);
        let elapsed = started.elapsed();
        let (output, truncated) = match capture.lock() {
            Ok(c) => (c.text(), c.dropped > 0),
            Err(_) => (String::new(), false),
        };

        match outcome {
            Outcome::Cancelled => return Err(BuildError::Cancelled),
            Outcome::TimedOut => {
                return Err(BuildError::Timeout {
                    program: name,
                    after: elapsed,
                })
            }
            Outcome::Exited => {}
        }
        let status = status?;
        if status.success() {
            Ok(Ran {
                output,
                truncated,
                elapsed,
            })
        } else {
            let code = match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                (None, None) => "abnormal exit".to_owned(),
            };
            let tail = error_tail(&output);
            Err(BuildError::Tool {
                program: name,
                message: if tail.is_empty() {
                    format!("{code} (no output)")
                } else {
                    format!("{code}:\n{tail}")
                },
            })
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Exited,
    Cancelled,
    TimedOut,
}

enum Leader {
    Running,
    /// Exited and not yet reaped: its pid (the group's id) is still reserved.
    Exited,
    /// Reaped by someone else (or never known): its pid may already be reused.
    Gone,
}

/// Whether the command's own process has exited, without reaping it (duct reaps it later).
fn leader_state(pid: Option<Pid>) -> Leader {
    let Some(pid) = pid else {
        return Leader::Gone;
    };
    match rustix::process::waitid(
        WaitId::Pid(pid),
        WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG,
    ) {
        Ok(Some(_)) => Leader::Exited,
        Ok(None) | Err(rustix::io::Errno::INTR) => Leader::Running,
        Err(_) => Leader::Gone,
    }
}

fn start_error(name: &str, program: &OsStr, e: std::io::Error) -> BuildError {
    let message = match e.kind() {
        std::io::ErrorKind::NotFound => {
            if Path::new(program).components().count() > 1 {
                format!("{} not found", Path::new(program).display())
            } else {
                "not found on PATH (is its package installed?)".to_owned()
            }
        }
        std::io::ErrorKind::PermissionDenied => "permission denied (not executable?)".to_owned(),
        _ => format!("could not start: {e}"),
    };
    BuildError::Tool {
        program: name.to_owned(),
        message,
    }
}

/// The last lines of `output`, at most [`ERROR_TAIL_LINES`] lines and [`ERROR_TAIL_BYTES`] bytes.
pub fn error_tail(output: &str) -> String {
    let lines: Vec<&str> = output.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(ERROR_TAIL_LINES)..].join("\n");
    if tail.len() <= ERROR_TAIL_BYTES {
        return tail;
    }
    let mut cut = tail.len() - ERROR_TAIL_BYTES;
    while !tail.is_char_boundary(cut) {
        cut += 1;
    }
    tail[cut..].to_owned()
}

/// The newest [`CAPTURE_LIMIT`] bytes of output.
#[derive(Default)]
struct Capture {
    bytes: VecDeque<u8>,
    dropped: usize,
}

impl Capture {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        if self.bytes.len() > CAPTURE_LIMIT {
            let excess = self.bytes.len() - CAPTURE_LIMIT;
            self.bytes.drain(..excess);
            self.dropped += excess;
        }
    }

    fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut all = Vec::with_capacity(a.len() + b.len());
        all.extend_from_slice(a);
        all.extend_from_slice(b);
        String::from_utf8_lossy(&all).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture script, run as `sh <file>`: executing a file this process has just written can
    /// fail with ETXTBSY when another test thread forks while the file is still open for writing.
    fn script(dir: &Path, name: &str, body: &str) -> Command {
        let path = dir.join(name);
        std::fs::write(&path, body).expect("write script");
        Command::new("sh").arg(path)
    }

    fn alive(pid: i32) -> bool {
        // A zombie counts as gone: it is not running and holds nothing.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    fn wait_gone(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !alive(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn read_pid(path: &Path) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(s) = std::fs::read_to_string(path) {
                if let Ok(pid) = s.trim().parse() {
                    return pid;
                }
            }
            assert!(Instant::now() < deadline, "no pid file {}", path.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn success_captures_merged_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(
            dir.path(),
            "both.sh",
            "#!/bin/sh\necho to-stdout\necho to-stderr >&2\necho \"$HOME|$LC_ALL|${CARGO_MANIFEST_DIR-unset}\"\n",
        );
        // Cargo sets CARGO_MANIFEST_DIR for test processes; the child must not see it.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let ran = s.dir(dir.path()).run(&Cancel::default()).expect("runs");
        assert!(ran.output.contains("to-stdout"), "{}", ran.output);
        assert!(ran.output.contains("to-stderr"), "{}", ran.output);
        // The environment is minimal: nothing of the parent's leaks but PATH.
        let expected = format!("{}|C|unset", dir.path().display());
        assert!(ran.output.contains(&expected), "{}", ran.output);
    }

    #[test]
    fn arguments_are_passed_verbatim_not_through_a_shell() {
        let ran = Command::new("printf")
            .args(["%s|", "a b", "$(id)", "`id`", ";", "'"])
            .run(&Cancel::default())
            .expect("printf");
        assert_eq!(ran.output, "a b|$(id)|`id`|;|'|");
    }

    #[test]
    fn nonzero_exit_carries_status_and_output_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut body = String::from("#!/bin/sh\n");
        for i in 0..500 {
            body.push_str(&format!("echo line-{i}\n"));
        }
        body.push_str("echo 'fatal: the real reason' >&2\nexit 3\n");
        let s = script(dir.path(), "fail.sh", &body);
        let err = s.run(&Cancel::default()).expect_err("fails");
        let BuildError::Tool { program, message } = &err else {
            panic!("expected a tool error, got {err:?}");
        };
        assert_eq!(program, "sh");
        assert!(message.starts_with("exit status 3:"), "{message}");
        assert!(message.contains("fatal: the real reason"), "{message}");
        assert!(message.contains("line-499"), "{message}");
        assert!(
            !message.contains("line-10\n"),
            "older lines are dropped: {message}"
        );
        assert!(message.len() <= ERROR_TAIL_BYTES + 64, "{}", message.len());
        assert!(
            err.to_string().starts_with("sh failed: exit status 3"),
            "{err}"
        );
    }

    #[test]
    fn missing_program_is_a_clear_tool_error() {
        let err = Command::new("bootfleet-no-such-tool")
            .run(&Cancel::default())
            .expect_err("missing");
        match &err {
            BuildError::Tool { program, message } => {
                assert_eq!(program, "bootfleet-no-such-tool");
                assert!(message.contains("not found"), "{message}");
            }
            other => panic!("expected a tool error, got {other:?}"),
        }
    }

    /// In a new directory, a script whose child `sleep` (its pid written to the returned
    /// pidfile) outlives it unless the whole process tree is killed; `more` runs before it waits.
    fn process_tree(more: &str) -> (tempfile::TempDir, PathBuf, Command) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("grandchild.pid");
        let command = script(
            dir.path(),
            "tree.sh",
            &format!(
                "#!/bin/sh\nsleep 100 &\necho $! > {}\n{more}wait\n",
                pidfile.display()
            ),
        );
        (dir, pidfile, command)
    }

    fn assert_tree_gone(pidfile: &Path) {
        let grandchild = read_pid(pidfile);
        assert!(
            wait_gone(grandchild),
            "grandchild sleep {grandchild} survived"
        );
    }

    #[test]
    fn timeout_kills_the_whole_process_tree() {
        let (_dir, pidfile, s) = process_tree("echo started\n");
        let started = Instant::now();
        let err = s
            .timeout(Duration::from_millis(700))
            .run(&Cancel::default())
            .expect_err("times out");
        assert!(
            matches!(&err, BuildError::Timeout { program, after } if program == "sh" && *after >= Duration::from_millis(700)),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_tree_gone(&pidfile);
    }

    #[test]
    fn cancel_kills_the_whole_process_tree() {
        let (_dir, pidfile, s) = process_tree("");
        let cancel = Cancel::default();
        let trigger = cancel.clone();
        let pidfile2 = pidfile.clone();
        let canceller = std::thread::spawn(move || {
            read_pid(&pidfile2);
            trigger.cancel();
        });
        let started = Instant::now();
        let err = s
            .timeout(Duration::from_secs(60))
            .run(&cancel)
            .expect_err("cancelled");
        canceller.join().expect("canceller");
        assert!(matches!(err, BuildError::Cancelled), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_tree_gone(&pidfile);
    }

    #[test]
    fn already_cancelled_does_not_start() {
        let cancel = Cancel::default();
        cancel.cancel();
        let err = Command::new("true").run(&cancel).expect_err("cancelled");
        assert!(matches!(err, BuildError::Cancelled));
    }

    #[test]
    fn output_is_bounded() {
        let ran = Command::new("head")
            .args(["-c", "1000000", "/dev/zero"])
            .run(&Cancel::default())
            .expect("head");
        assert!(ran.truncated);
        assert_eq!(ran.output.len(), CAPTURE_LIMIT);
    }

    #[test]
    fn error_tail_keeps_the_last_lines() {
        let text: String = (0..100).map(|i| format!("l{i}\n")).collect();
        let tail = error_tail(&text);
        assert!(tail.starts_with("l60\n"), "{tail}");
        assert!(tail.ends_with("l99"), "{tail}");
        assert_eq!(error_tail("one\ntwo\n"), "one\ntwo");
    }
}
