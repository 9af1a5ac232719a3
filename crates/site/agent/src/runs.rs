//! Runs one command of a run (`POST /api/commands/:name/runs`) on a machine of this site over
//! SSH, and publishes its output lines as they arrive on the site's output subject
//! (`bootfleet.v1.actions.output.<site>`), where the `actions` service relays them to the
//! operator. The request's reply (one per request, as the site's NATS login allows) carries the
//! exit code or why it did not run to its end, and how many lines were published, so the
//! service knows when it has them all. Only a request it cannot take (no address) is an error.
//!
//! The machine's name, address and metadata arrive as environment variables; `ssh_exec` exports
//! them through its one quoting function, never splicing them into the script.

use std::time::Duration;

use bootfleet_api::{proto, subjects, ApiError};
use bootfleet_bus::Bus;
use prost::Message;
use tokio::sync::mpsc;

use crate::ssh_exec::{self, ExecError, ExecRequest, Stream};

/// Longest line published; a longer one goes out in pieces of this size.
pub const MAX_LINE_BYTES: usize = 4096;
/// Output kept and published per stream (beyond it the rest is dropped, `truncated` set).
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// Splits a stream's bytes into lines as they arrive.
#[derive(Debug, Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// The complete lines in `data` and what was pending (without their `\n`); a line longer
    /// than [`MAX_LINE_BYTES`] comes out in pieces.
    pub fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in data {
            if b == b'\n' {
                lines.push(self.take());
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_LINE_BYTES {
                    lines.push(self.take());
                }
            }
        }
        lines
    }

    /// The last, unterminated line, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let line = std::mem::take(&mut self.pending);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        String::from_utf8_lossy(line).into_owned()
    }
}

/// Publishes the lines of one machine's run, numbered.
struct Publisher<'a> {
    bus: &'a Bus,
    subject: String,
    template: proto::RunOutput,
    seq: u64,
}

impl Publisher<'_> {
    async fn line(&mut self, stream: Stream, line: String) {
        self.seq += 1;
        let msg = proto::RunOutput {
            stream: match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            }
            .into(),
            line,
            seq: self.seq,
            ..self.template.clone()
        };
        if let Err(e) = self
            .bus
            .client()
            .publish(self.subject.clone(), msg.encode_to_vec().into())
            .await
        {
            tracing::debug!(error = %e, "cannot publish a run's output line");
        }
    }
}

/// Runs `req` and publishes its lines; answers how it ended.
pub async fn run_command(
    bus: Bus,
    artifact_id: String,
    req: proto::NodeRun,
) -> Result<proto::NodeRunResult, ApiError> {
    let addr = ssh_exec::node_addr(&req.ip, req.port)?;
    let env: Vec<(String, String)> = req.env.clone().into_iter().collect();
    let request = ExecRequest {
        addr,
        user: &req.user,
        private_key: &req.private_key,
        script: &req.script,
        timeout: Duration::from_secs(u64::from(req.timeout_seconds.clamp(1, 3600))),
        known_host_key: (!req.known_host_key.is_empty()).then_some(req.known_host_key.as_str()),
        max_output: MAX_OUTPUT_BYTES,
    };
    let mut publisher = Publisher {
        bus: &bus,
        subject: subjects::actions_output(&artifact_id),
        template: proto::RunOutput {
            artifact_id,
            run_id: req.run_id.clone(),
            machine_id: req.machine_id.clone(),
            ..Default::default()
        },
        seq: 0,
    };
    tracing::info!(node = %addr, user = %req.user, run = %req.run_id, "running a command of a run");
    let (tx, mut rx) = mpsc::channel(64);
    let run = ssh_exec::run_streaming(&request, &env, Some(tx));
    tokio::pin!(run);
    let (mut stdout, mut stderr) = (Lines::default(), Lines::default());
    // Publishes lines as chunks come, until the run ends; then what is left in the channel.
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            Some((stream, data)) = rx.recv() => {
                let lines = match stream {
                    Stream::Stdout => stdout.push(&data),
                    Stream::Stderr => stderr.push(&data),
                };
                for line in lines {
                    publisher.line(stream, line).await;
                }
            }
        }
    };
    while let Ok((stream, data)) = rx.try_recv() {
        let lines = match stream {
            Stream::Stdout => stdout.push(&data),
            Stream::Stderr => stderr.push(&data),
        };
        for line in lines {
            publisher.line(stream, line).await;
        }
    }
    for (stream, lines) in [(Stream::Stdout, &mut stdout), (Stream::Stderr, &mut stderr)] {
        if let Some(line) = lines.finish() {
            publisher.line(stream, line).await;
        }
    }
    // The lines go out before the reply, on the same connection.
    let _ = bus.client().flush().await;
    Ok(match outcome {
        Ok(out) => proto::NodeRunResult {
            exit_code: out.exit_code,
            exit_signal: out.exit_signal.unwrap_or_default(),
            lines: publisher.seq,
            truncated: out.truncated,
            error: String::new(),
            host_key: out.host_key,
        },
        Err(e) => {
            tracing::info!(node = %addr, error = %e, "command not run to completion");
            let error = match e {
                ExecError::HostKeyChanged { expected, got } => format!(
                    "the machine at {} presented a different host key ({got}) than the one recorded at its first run ({expected}); refusing to run. If it was reinstalled, run again with \"acceptNewHostKeys\": true",
                    addr.ip()
                ),
                e => crate::agent::exec_error(e, &req.user, addr).message,
            };
            proto::NodeRunResult {
                lines: publisher.seq,
                error,
                ..Default::default()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_as_they_arrive() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"a"), Vec::<String>::new());
        assert_eq!(l.push(b"b\ncd\r\n\nx"), vec!["ab", "cd", ""]);
        assert_eq!(l.finish(), Some("x".into()));
        assert_eq!(l.finish(), None);
        let long = vec![b'y'; MAX_LINE_BYTES + 3];
        let got = l.push(&long);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), MAX_LINE_BYTES);
        assert_eq!(l.finish(), Some("yyy".into()));
        assert_eq!(l.push(&[0xff, b'\n']), vec!["\u{fffd}"]);
    }
}
