//! Assertions on a finished `bootfleet` CLI process, shared by the CLI tests.

use std::process::Output;

/// The exit code and both streams, for a failed assertion's message.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts the exit code and that stderr says `stderr_has`.
pub fn expect_exit(out: &Output, code: i32, stderr_has: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(stderr_has), "{}", text(out));
}
