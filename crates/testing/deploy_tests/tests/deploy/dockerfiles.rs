//! hadolint (from PyPI, `scripts/deploy-tools`) over every Dockerfile, with no finding at all.

use crate::support::{deploy_tools, workspace_root};

#[test]
fn every_dockerfile_is_hadolint_clean() {
    let tools = deploy_tools();
    let mut dockerfiles: Vec<_> = std::fs::read_dir(workspace_root().join("docker"))
        .expect("docker/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "Dockerfile"))
        .collect();
    dockerfiles.sort();
    assert!(dockerfiles.len() >= 5, "{dockerfiles:?}");
    for file in &dockerfiles {
        let out = tools
            .tool("hadolint")
            .args(["--no-color", "--failure-threshold", "info"])
            .arg(file)
            .output()
            .expect("hadolint");
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "hadolint {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A finding fails the check (the tool is not a no-op here).
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.Dockerfile");
    std::fs::write(&bad, "FROM debian:trixie-slim\nRUN apt-get install curl\n").expect("write");
    let out = tools.tool("hadolint").arg(&bad).output().expect("hadolint");
    assert!(
        !out.status.success(),
        "hadolint passed an unpinned, unconfirmed apt-get install"
    );
}
