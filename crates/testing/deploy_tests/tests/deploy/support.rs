//! What the deployment tests share: the workspace root, the tools fetched by the project's own
//! scripts, the release binaries and the images (each made once per test run), and a few
//! command helpers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace root. The only place that knows where this crate sits in the tree.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    root.canonicalize()
        .unwrap_or_else(|e| panic!("workspace root {}: {e}", root.display()))
}

/// A command run from the workspace root.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root()).stdin(Stdio::null());
    cmd
}

/// Runs `cmd`; panics with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    bootfleet_testkit::run_ok(cmd, &what)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a Docker engine answers. The container tests skip (loudly) only when it does not:
/// a machine without one cannot run them; everything they check needs one.
fn docker_ready(test: &str) -> bool {
    let answered = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !answered {
        eprintln!(
            "\n=============================================================================\n\
             SKIPPED {test}: no Docker engine answers (`docker info` failed).\n\
             These tests build and run the images for real; install and start Docker Engine\n\
             (Debian: docker.io, docker-compose) to run them.\n\
             =============================================================================\n"
        );
    }
    answered
}

/// The start of every container test: None (skipped, loudly) without a Docker engine; else
/// the machine, held so that container tests run one at a time (they take both cores), and the
/// images of this run. The skip names the test by its thread, which the test harness names
/// after it.
pub fn container_test() -> Option<(MutexGuard<'static, ()>, &'static Images)> {
    static HEAVY: Mutex<()> = Mutex::new(());
    let thread = std::thread::current();
    if !docker_ready(thread.name().unwrap_or("this test")) {
        return None;
    }
    let machine = HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Some((machine, images()))
}

/// helm, hadolint and kubernetes-validate, from PyPI through `scripts/deploy-tools`.
#[derive(Debug)]
pub struct DeployTools {
    pub bin: PathBuf,
    /// Their Python packages (PyYAML among them, which reads YAML for the tests).
    pub python_path: PathBuf,
}

impl DeployTools {
    pub fn tool(&self, name: &str) -> Command {
        command(self.bin.join(name))
    }
}

pub fn deploy_tools() -> &'static DeployTools {
    static TOOLS: OnceLock<DeployTools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let out = run(&mut command("scripts/deploy-tools"));
        let text = stdout(&out);
        let bin = PathBuf::from(text.lines().last().unwrap_or_default().trim());
        assert!(
            bin.join("helm").is_file(),
            "scripts/deploy-tools printed {text:?}"
        );
        let python_path = bin.parent().expect("cache dir").join("py");
        DeployTools { bin, python_path }
    })
}

/// Every YAML document of `text`, as JSON (PyYAML from the deploy tools; no YAML crate needed).
pub fn yaml_documents(text: &str) -> Vec<Value> {
    use std::io::Write;
    let tools = deploy_tools();
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))",
        ])
        .env("PYTHONPATH", &tools.python_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write YAML");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "YAML does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("json") {
        Value::Array(docs) => docs,
        other => panic!("not a list: {other}"),
    }
}

pub fn yaml_file(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_documents(&text)
}

/// `target/release/<name>`, built once per test run (`cargo build --release`): the binaries
/// the images copy.
pub fn release_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let started = Instant::now();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = command(cargo);
        build
            .args(["build", "--release", "--locked", "-p", "bootfleet", "-p"])
            .arg("bootfleet-site-agent");
        // The environment `cargo test` gives a test (CARGO_PKG_*, CARGO_MANIFEST_DIR, ...) makes
        // the release build look dirty to cargo and rebuild from scratch; give it a shell's.
        build.env_clear();
        for key in [
            "PATH",
            "HOME",
            "USER",
            "LANG",
            "TMPDIR",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
        ] {
            if let Some(value) = std::env::var_os(key) {
                build.env(key, value);
            }
        }
        bootfleet_testkit::try_run(&mut build, "cargo build --release")?;
        eprintln!("release binaries built in {:?}", started.elapsed());
        Ok(())
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    workspace_root().join("target/release").join(name)
}

/// The images every container test uses, tagged for this test run.
#[derive(Debug)]
pub struct Images {
    pub tag: String,
}

impl Images {
    pub fn image(&self, name: &str) -> String {
        format!("{name}:{}", self.tag)
    }
}

/// Every image of `scripts/docker-images`, built once per test run from the release binaries
/// and the base image `scripts/docker-base` makes (kept by tag across runs).
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();
    let images = IMAGES.get_or_init(|| {
        let tag = format!("{TAG_PREFIX}{}", std::process::id());
        // The base and the images that need no binaries wait on downloads, the release build
        // on the CPU: side by side.
        let without_binaries = std::thread::spawn({
            let tag = tag.clone();
            move || {
                let started = Instant::now();
                script(&["scripts/docker-base"])?;
                script(&[
                    "scripts/docker-images",
                    "--tag",
                    &tag,
                    "--only",
                    "bootfleet-nats",
                    "--only",
                    "bootfleet-postgres",
                ])?;
                eprintln!(
                    "base, NATS and PostgreSQL images ready in {:?}",
                    started.elapsed()
                );
                Ok::<(), String>(())
            }
        });
        release_binary("bootfleet");
        without_binaries
            .join()
            .map_err(|_| "the base image thread panicked".to_owned())??;
        let started = Instant::now();
        let sizes = script(&["scripts/docker-images", "--tag", &tag])?;
        eprintln!("images built in {:?}:\n{sizes}", started.elapsed());
        // After the build, so that the layers of the last run's images serve as its cache.
        remove_stale_test_tags();
        Ok(Images { tag })
    });
    match images {
        Ok(images) => images,
        Err(e) => panic!("{e}"),
    }
}

/// Runs a project script from the workspace root; its standard output, or why it failed.
fn script(args: &[&str]) -> Result<String, String> {
    let out = command(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout(&out))
}

/// Images are tagged `deploytest-<pid>` per run; a run's tags outlive it (statics are never
/// dropped), so each run removes those of runs whose process is gone.
const TAG_PREFIX: &str = "deploytest-";

fn remove_stale_test_tags() {
    let Ok(out) = Command::new("docker")
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
    else {
        return;
    };
    for reference in stdout(&out).lines() {
        let Some((_, tag)) = reference.split_once(':') else {
            continue;
        };
        let Some(pid) = tag.strip_prefix(TAG_PREFIX) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("docker")
                .args(["rmi", reference])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `docker inspect -f <format> <what>`, trimmed.
pub fn inspect(what: &str, format: &str) -> String {
    let out = run(Command::new("docker").args(["inspect", "-f", format, what]));
    stdout(&out).trim().to_owned()
}

/// Polls `ready` every half second for at most `within`.
pub fn wait_for(within: Duration, ready: impl FnMut() -> bool) -> bool {
    bootfleet_testkit::wait_until(within, Duration::from_millis(500), ready)
}

/// A container started by a test, removed (with its anonymous volumes) by its id on drop.
#[derive(Debug)]
pub struct Container {
    pub id: String,
}

impl Container {
    /// `docker run -d <args>`.
    pub fn run(args: &[&str]) -> Container {
        let out = run(Command::new("docker").arg("run").arg("-d").args(args));
        Container {
            id: stdout(&out).trim().to_owned(),
        }
    }

    pub fn logs(&self) -> String {
        docker_output(&["logs", "--tail", "200", &self.id])
    }

    /// Whether its own health check passes within `within`.
    pub fn healthy_within(&self, within: Duration) -> bool {
        wait_for(within, || is_healthy(&self.id))
    }
}

/// Whether container `id`'s health check passes now.
pub fn is_healthy(id: &str) -> bool {
    inspect(id, "{{.State.Health.Status}}") == "healthy"
}

/// What the deployment files grant the distributor's container (`docker run` flags): every
/// capability dropped but binding udp/67 and udp/69 and binding its sockets to its interface
/// (`SO_BINDTODEVICE` needs `NET_RAW`).
pub const DISTRIBUTOR_CAPABILITIES: [&str; 6] = [
    "--cap-drop",
    "ALL",
    "--cap-add",
    "NET_BIND_SERVICE",
    "--cap-add",
    "NET_RAW",
];

/// `docker <args>`'s stdout and stderr together, for a failure's diagnostics (never panics).
pub fn docker_output(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_else(|e| format!("docker {args:?}: {e}\n"))
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
