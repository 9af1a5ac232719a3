//! The systemd units pass `systemd-analyze verify` with no message, in a scratch root that holds
//! systemd's own units and stand-ins for the two binaries (so nothing is installed here).

use std::process::Command;

use crate::support::workspace_root;

const UNITS: [&str; 2] = ["bootfleet.service", "bootfleet-distributor.service"];

fn verify(root: &std::path::Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(UNITS)
        .output()
        .expect("systemd-analyze (Debian: systemd)")
}

fn scratch_root(units_from: &std::path::Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let system = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&system).expect("mkdir");
    for entry in std::fs::read_dir("/usr/lib/systemd/system").expect("systemd's units") {
        let entry = entry.expect("entry");
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(entry.path(), system.join(entry.file_name())).expect("copy unit");
        }
    }
    let etc = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&etc).expect("mkdir");
    for unit in UNITS {
        std::fs::copy(units_from.join(unit), etc.join(unit)).expect("copy ours");
    }
    let bin = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for program in ["bootfleet", "bootfleet-distributor"] {
        use std::os::unix::fs::PermissionsExt;
        let path = bin.join(program);
        std::fs::write(&path, "#!/bin/sh\n").expect("stand-in");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    root
}

#[test]
fn units_verify_clean_and_hold_only_the_distributors_two_capabilities() {
    let units = workspace_root().join("deploy/systemd");
    let root = scratch_root(&units);
    let out = verify(root.path());
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let read = |unit: &str| std::fs::read_to_string(units.join(unit)).expect("unit");
    let expect_lines = |unit: &str, wanted: &[&str]| {
        let text = read(unit);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for line in wanted {
            assert!(lines.contains(line), "{unit} lacks {line}");
        }
    };
    expect_lines(
        "bootfleet-distributor.service",
        &[
            "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW",
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
        ],
    );
    expect_lines(
        "bootfleet.service",
        &[
            "ExecStart=/usr/local/bin/bootfleet up",
            "DynamicUser=yes",
            "StateDirectory=bootfleet",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=",
        ],
    );

    // A mistake in a unit is reported (the check is not a no-op).
    let broken = tempfile::tempdir().expect("tempdir");
    for unit in UNITS {
        let text = read(unit).replace("ProtectSystem=strict", "ProtectSytem=strict");
        std::fs::write(broken.path().join(unit), text).expect("write");
    }
    let root = scratch_root(broken.path());
    let out = verify(root.path());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key 'ProtectSytem'"),
        "a misspelt key went unreported: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
