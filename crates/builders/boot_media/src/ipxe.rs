//! iPXE network bootloaders, from an allow-list of `<platform>/<driver>.<extension>` targets.
//!
//! Two backends (see [`build`]):
//! * **compile** ([`Toolbox::ipxe_source`] set): a private copy of the source tree, then
//!   `make -C <copy>/src -j<n> EMBED=<script> NO_WERROR=1 <platform>/<driver>.<extension>`;
//!   the script is inside the binary (`embedded: Some(true)`).
//! * **prebuilt** (default): Debian's binary copied as `<driver>.<extension>`, the script written
//!   beside it as `autoexec.ipxe` (`embedded: Some(false)`): media put it next to `ipxe.efi`,
//!   proxyDHCP hands it out, `ipxe.lkrn` takes it as its initrd.
//!
//! Scripts must start with `#!ipxe` (or `#!gpxe`): that line is how iPXE recognises an embedded
//! image or an initrd as a script, so one without it would build fine and then do nothing.
//! The builder refuses it rather than add the line, so what is stored is what was sent.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{
    check_token, copy_package_file, invalid, scratch, tool, Budget, BuildError, Built, BuiltFile,
    Cancel, Progress, Toolbox,
};

/// The largest script accepted.
pub const MAX_SCRIPT_BYTES: usize = 256 * 1024;

/// One allowed target: platform, driver, extension, and Debian's file for it (if Debian ships it).
struct TargetDef {
    platform: &'static str,
    driver: &'static str,
    extension: &'static str,
    prebuilt: Option<&'static str>,
}

const fn t(
    platform: &'static str,
    driver: &'static str,
    extension: &'static str,
    prebuilt: Option<&'static str>,
) -> TargetDef {
    TargetDef {
        platform,
        driver,
        extension,
        prebuilt,
    }
}

/// The allow-list. Debian's `ipxe` builds its BIOS binaries for the `bin` (i386) platform; they
/// run on x86-64 machines too, so both platform names map to them.
const TARGETS: &[TargetDef] = &[
    t("bin-x86_64-efi", "ipxe", "efi", Some("ipxe-amd64.efi")),
    t("bin-x86_64-efi", "snponly", "efi", Some("snponly.efi")),
    t("bin-arm64-efi", "ipxe", "efi", Some("ipxe-arm64.efi")),
    t("bin-arm64-efi", "snponly", "efi", None),
    t("bin-x86_64-pcbios", "ipxe", "kpxe", None),
    t(
        "bin-x86_64-pcbios",
        "undionly",
        "kpxe",
        Some("undionly.kpxe"),
    ),
    t(
        "bin-x86_64-pcbios",
        "undionly",
        "kkpxe",
        Some("undionly.kkpxe"),
    ),
    t("bin-x86_64-pcbios", "ipxe", "pxe", Some("ipxe.pxe")),
    t("bin", "ipxe", "kpxe", None),
    t("bin", "undionly", "kpxe", Some("undionly.kpxe")),
    t("bin", "undionly", "kkpxe", Some("undionly.kkpxe")),
    t("bin", "ipxe", "pxe", Some("ipxe.pxe")),
    t("bin", "ipxe", "lkrn", Some("ipxe.lkrn")),
];

/// Debian's files the prebuilt backend may copy (for [`Toolbox::versions`]).
pub(crate) fn prebuilt_files() -> Vec<&'static str> {
    let mut files: Vec<&'static str> = TARGETS.iter().filter_map(|t| t.prebuilt).collect();
    files.sort_unstable();
    files.dedup();
    files
}

fn allowed_list() -> String {
    TARGETS
        .iter()
        .map(|t| format!("{}/{}.{}", t.platform, t.driver, t.extension))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A validated target from the allow-list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpxeTarget {
    platform: &'static str,
    driver: &'static str,
    extension: &'static str,
    prebuilt: Option<&'static str>,
}

impl IpxeTarget {
    /// Checks each field's characters, then the combination against the allow-list; errors name
    /// the first field that is wrong and list the allowed combinations.
    pub fn parse(platform: &str, driver: &str, extension: &str) -> Result<IpxeTarget, BuildError> {
        check_token("platform", platform, 32)?;
        check_token("driver", driver, 32)?;
        check_token("extension", extension, 16)?;
        if let Some(def) = TARGETS
            .iter()
            .find(|t| t.platform == platform && t.driver == driver && t.extension == extension)
        {
            return Ok(IpxeTarget {
                platform: def.platform,
                driver: def.driver,
                extension: def.extension,
                prebuilt: def.prebuilt,
            });
        }
        let field = if !TARGETS.iter().any(|t| t.platform == platform) {
            "platform"
        } else if !TARGETS
            .iter()
            .any(|t| t.platform == platform && t.driver == driver)
        {
            "driver"
        } else {
            "extension"
        };
        Err(invalid(
            field,
            format!(
                "{platform}/{driver}.{extension} is not a supported target; allowed: {}",
                allowed_list()
            ),
        ))
    }

    pub fn platform(&self) -> &str {
        self.platform
    }

    pub fn driver(&self) -> &str {
        self.driver
    }

    pub fn extension(&self) -> &str {
        self.extension
    }

    /// The output's file name, `<driver>.<extension>`.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.driver, self.extension)
    }

    /// The make target, `<platform>/<driver>.<extension>`.
    pub fn make_target(&self) -> String {
        format!("{}/{}.{}", self.platform, self.driver, self.extension)
    }

    /// Debian's file used by the prebuilt backend, if Debian ships one for this target.
    pub fn prebuilt_file(&self) -> Option<&'static str> {
        self.prebuilt
    }

    /// Whether `tb`'s backend can build this target (so a caller can refuse a request at once).
    /// Only the prebuilt backend can fail: Debian does not ship every target.
    pub fn check_backend(&self, tb: &Toolbox) -> Result<(), BuildError> {
        if tb.ipxe_source.is_some() || self.prebuilt.is_some() {
            return Ok(());
        }
        let alternative = TARGETS
            .iter()
            .find(|t| {
                t.platform == self.platform && t.extension == self.extension && t.prebuilt.is_some()
            })
            .map(|t| {
                format!(
                    "; the prebuilt alternative is {}/{}.{}",
                    t.platform, t.driver, t.extension
                )
            })
            .unwrap_or_default();
        Err(invalid(
            "driver",
            format!(
                "{} needs the compile backend (set BOOTFLEET_IPXE_SOURCE to an ipxe source tree): debian ships no prebuilt {}{alternative}",
                self.make_target(),
                self.file_name(),
            ),
        ))
    }
}

/// Checks a script: at most [`MAX_SCRIPT_BYTES`], text (no NUL or control characters other
/// than tab, CR, LF), starting with `#!ipxe` or `#!gpxe`. Errors name the field `script`.
pub fn validate_script(script: &str) -> Result<(), BuildError> {
    if script.len() > MAX_SCRIPT_BYTES {
        return Err(invalid(
            "script",
            format!(
                "is {} bytes; at most {MAX_SCRIPT_BYTES} are allowed",
                script.len()
            ),
        ));
    }
    if let Some(c) = script
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(invalid(
            "script",
            format!("must be text: control character {c:?} is not allowed"),
        ));
    }
    let first = script.lines().next().unwrap_or("").trim_end();
    let magic = first.get(..6).unwrap_or("");
    let rest = first.get(6..).unwrap_or("");
    if !(magic.eq_ignore_ascii_case("#!ipxe") || magic.eq_ignore_ascii_case("#!gpxe"))
        || !(rest.is_empty() || rest.starts_with([' ', '\t']))
    {
        return Err(invalid(
            "script",
            "must start with the line #!ipxe (that is how ipxe recognises a script)",
        ));
    }
    Ok(())
}

/// Builds `target` with `script` into `out_dir`. The compile backend is used when
/// [`Toolbox::ipxe_source`] is set, the prebuilt one otherwise (see the module docs).
pub fn build(
    tb: &Toolbox,
    target: &IpxeTarget,
    script: &str,
    out_dir: &Path,
    progress: Progress,
    cancel: &Cancel,
) -> Result<Built, BuildError> {
    validate_script(script)?;
    target.check_backend(tb)?;
    cancel.check()?;
    let job = Job {
        tb,
        target,
        script,
        out_dir,
        progress,
        cancel,
    };
    match &tb.ipxe_source {
        Some(source) => compile(&job, source),
        None => prebuilt(&job),
    }
}

/// What both backends build from: [`build`]'s arguments, checked.
struct Job<'a> {
    tb: &'a Toolbox,
    target: &'a IpxeTarget,
    script: &'a str,
    out_dir: &'a Path,
    progress: Progress<'a>,
    cancel: &'a Cancel,
}

fn prebuilt(job: &Job<'_>) -> Result<Built, BuildError> {
    let Some(file) = job.target.prebuilt else {
        return Err(invalid("driver", "no prebuilt binary for this target"));
    };
    (job.progress)(10, "copying prebuilt ipxe");
    let binary = job.out_dir.join(job.target.file_name());
    copy_package_file(
        &job.tb.ipxe_prebuilt_dir.join(file),
        &binary,
        "ipxe",
        "debian's ipxe >= 1.21.1",
    )?;
    job.cancel.check()?;
    (job.progress)(80, "writing script");
    let autoexec = job.out_dir.join("autoexec.ipxe");
    std::fs::write(&autoexec, job.script)?;
    (job.progress)(100, "done");
    Ok(Built {
        files: vec![
            BuiltFile {
                name: job.target.file_name(),
                path: binary,
            },
            BuiltFile {
                name: "autoexec.ipxe".into(),
                path: autoexec,
            },
        ],
        embedded: Some(false),
    })
}

fn compile(job: &Job<'_>, source: &Path) -> Result<Built, BuildError> {
    let budget = Budget::new(job.tb.timeout);
    check_source_tree(source)?;
    let work = scratch(job.out_dir)?;
    (job.progress)(5, "copying source");
    // make writes objects into the tree; builds never share one, so concurrent builds and the
    // configured tree itself stay untouched.
    let copy = work.path().join("ipxe");
    copy_tree(source, &copy, job.cancel)?;
    let embed = work.path().join("script.ipxe");
    std::fs::write(&embed, job.script)?;

    (job.progress)(20, "compiling");
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let src = copy.join("src");
    let mut embed_arg = std::ffi::OsString::from("EMBED=");
    embed_arg.push(&embed);
    let cmd = tool::Command::new("make")
        .arg("-C")
        .arg(&src)
        .arg(format!("-j{jobs}"))
        .arg(embed_arg)
        .arg("NO_WERROR=1")
        .arg(job.target.make_target())
        .dir(work.path());
    budget.run(cmd, job.cancel)?;

    (job.progress)(95, "collecting");
    let produced = src.join(job.target.make_target());
    if !produced.is_file() {
        return Err(BuildError::Tool {
            program: "make".into(),
            message: format!("succeeded but produced no {}", job.target.make_target()),
        });
    }
    let binary = job.out_dir.join(job.target.file_name());
    std::fs::copy(&produced, &binary)?;
    drop(work);
    (job.progress)(100, "done");
    Ok(Built {
        files: vec![BuiltFile {
            name: job.target.file_name(),
            path: binary,
        }],
        embedded: Some(true),
    })
}

/// An ipxe source tree has `src/Makefile`.
fn check_source_tree(source: &Path) -> Result<(), BuildError> {
    if source.join("src").join("Makefile").is_file() {
        return Ok(());
    }
    Err(BuildError::Tool {
        program: "make".into(),
        message: format!(
            "{} is not an ipxe source tree (no src/Makefile)",
            source.display()
        ),
    })
}

/// Whether `rel` (relative to the tree's root) is left out of copies and digests: the git
/// database is not needed to build.
fn skip_in_copy(rel: &Path) -> bool {
    rel == Path::new(".git")
}

/// Build outputs (`src/bin`, `src/bin-*`) do not change what the tree builds; they are left out of
/// the digest, but copied (with their times) so make can reuse objects prebuilt in the tree.
fn skip_in_digest(rel: &Path) -> bool {
    skip_in_copy(rel)
        || (rel.parent() == Some(Path::new("src"))
            && rel
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "bin" || n.starts_with("bin-")))
}

/// Copies a tree keeping symlinks as symlinks and modification times (make compares them).
fn copy_tree(from: &Path, to: &Path, cancel: &Cancel) -> Result<(), BuildError> {
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    std::fs::create_dir_all(to)?;
    while let Some(rel) = stack.pop() {
        cancel.check()?;
        for entry in std::fs::read_dir(from.join(&rel))? {
            let entry = entry?;
            let rel_child = rel.join(entry.file_name());
            if skip_in_copy(&rel_child) {
                continue;
            }
            let src = from.join(&rel_child);
            let dst = to.join(&rel_child);
            let meta = std::fs::symlink_metadata(&src)?;
            if meta.file_type().is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
            } else if meta.is_dir() {
                std::fs::create_dir(&dst)?;
                stack.push(rel_child);
            } else if meta.is_file() {
                std::fs::copy(&src, &dst)?;
                let file = std::fs::File::options().write(true).open(&dst)?;
                file.set_modified(meta.modified()?)?;
            }
        }
    }
    Ok(())
}

/// sha256 over the source tree's paths, link targets and file contents (sorted; no `.git`, no
/// build outputs), so a changed tree changes the content address of what it builds.
pub(crate) fn source_digest(source: &Path) -> Result<String, BuildError> {
    check_source_tree(source)?;
    let mut hasher = Sha256::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(source.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        // Directories are visited after this one's files, in reverse-sorted push order; the
        // order is deterministic, which is all a digest needs.
        for name in entries {
            let rel_child = rel.join(&name);
            if skip_in_digest(&rel_child) {
                continue;
            }
            let path = source.join(&rel_child);
            let meta = std::fs::symlink_metadata(&path)?;
            let rel_bytes = rel_child.as_os_str().as_encoded_bytes();
            if meta.file_type().is_symlink() {
                hasher.update(b"L");
                hasher.update(rel_bytes);
                hasher.update([0]);
                hasher.update(std::fs::read_link(&path)?.as_os_str().as_encoded_bytes());
                hasher.update([0]);
            } else if meta.is_dir() {
                stack.push(rel_child);
            } else if meta.is_file() {
                hasher.update(b"F");
                hasher.update(rel_bytes);
                hasher.update([0]);
                hasher.update(crate::sha256_file(&path)?.as_bytes());
            }
        }
    }
    Ok(crate::hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field and message `IpxeTarget::parse` refuses `p`/`d`.`e` with.
    fn refusal(p: &str, d: &str, e: &str) -> (&'static str, String) {
        match IpxeTarget::parse(p, d, e) {
            Err(BuildError::Invalid { field, message }) => (field, message),
            other => panic!("{p}/{d}.{e}: {other:?}"),
        }
    }

    #[test]
    fn allow_list_accepts_the_documented_targets() {
        for (p, d, e) in [
            ("bin-x86_64-efi", "ipxe", "efi"),
            ("bin-x86_64-efi", "snponly", "efi"),
            ("bin-x86_64-pcbios", "ipxe", "kpxe"),
            ("bin-x86_64-pcbios", "undionly", "kpxe"),
            ("bin", "ipxe", "lkrn"),
            ("bin-arm64-efi", "ipxe", "efi"),
            ("bin-x86_64-pcbios", "ipxe", "pxe"),
            ("bin-x86_64-pcbios", "undionly", "kkpxe"),
        ] {
            let t = IpxeTarget::parse(p, d, e).expect("allowed");
            assert_eq!(t.make_target(), format!("{p}/{d}.{e}"));
            assert_eq!(t.file_name(), format!("{d}.{e}"));
        }
    }

    #[test]
    fn unknown_combinations_name_the_field_and_list_the_allowed_ones() {
        let cases = [
            (("bin-x86_64-linux", "ipxe", "efi"), "platform"),
            (("bin-x86_64-efi", "intel", "efi"), "driver"),
            (("bin-x86_64-efi", "ipxe", "kpxe"), "extension"),
        ];
        for ((p, d, e), want) in cases {
            let (field, message) = refusal(p, d, e);
            assert_eq!(field, want);
            assert!(message.contains("bin-x86_64-efi/ipxe.efi"), "{message}");
            assert!(message.contains("bin/ipxe.lkrn"), "{message}");
        }
    }

    #[test]
    fn hostile_fields_are_refused_by_character_first() {
        let cases = [
            (("../bin", "ipxe", "efi"), "platform"),
            (("bin/../..", "ipxe", "efi"), "platform"),
            (("bin", "ipxe;reboot", "lkrn"), "driver"),
            (("bin", "$(id)", "lkrn"), "driver"),
            (("bin", "ipxe", "`id`"), "extension"),
            (("bin", "ipxe", "lk rn"), "extension"),
            (("", "ipxe", "lkrn"), "platform"),
        ];
        for ((p, d, e), want) in cases {
            let (field, message) = refusal(p, d, e);
            assert_eq!(field, want, "{p}/{d}.{e}");
            assert!(
                !message.contains("allowed: bin"),
                "charset first: {message}"
            );
        }
    }

    #[test]
    fn ipxe_kpxe_needs_the_compile_backend() {
        let t = IpxeTarget::parse("bin-x86_64-pcbios", "ipxe", "kpxe").expect("allowed");
        let tb = Toolbox::debian();
        match t.check_backend(&tb) {
            Err(BuildError::Invalid { field, message }) => {
                assert_eq!(field, "driver");
                assert!(message.contains("BOOTFLEET_IPXE_SOURCE"), "{message}");
                assert!(message.contains("undionly.kpxe"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let compiled = Toolbox {
            ipxe_source: Some("/src/ipxe".into()),
            ..Toolbox::debian()
        };
        t.check_backend(&compiled)
            .expect("compile backend builds it");
    }

    #[test]
    fn scripts_are_checked() {
        validate_script("#!ipxe\ndhcp\nchain http://x/y\n").expect("fine");
        validate_script("#!ipxe\r\ndhcp\r\n").expect("crlf is fine");
        validate_script("#!gpxe\n").expect("legacy magic");
        validate_script("#!ipxe").expect("just the magic");
        for bad in [
            "dhcp\nchain http://x/y",
            "",
            " #!ipxe\n",
            "#!ipxe2\n",
            "\u{feff}#!ipxe\n",
            "#!ipxe\n\0",
            "#!ipxe\necho \u{1b}[2J",
        ] {
            assert!(
                matches!(
                    validate_script(bad),
                    Err(BuildError::Invalid {
                        field: "script",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        let big = format!("#!ipxe\n{}", "x".repeat(MAX_SCRIPT_BYTES));
        assert!(validate_script(&big).is_err());
    }

    #[test]
    fn copy_tree_keeps_times_and_links_and_skips_git() {
        let from = tempfile::tempdir().expect("tempdir");
        let to = tempfile::tempdir().expect("tempdir");
        let root = from.path();
        std::fs::create_dir_all(root.join("src/include")).expect("mkdir");
        std::fs::create_dir_all(root.join(".git/objects")).expect("mkdir");
        std::fs::write(root.join("src/include/a.h"), "int a;").expect("write");
        std::os::unix::fs::symlink("include/a.h", root.join("src/a.h")).expect("symlink");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(root.join("src/include/a.h"))
            .and_then(|f| f.set_modified(old))
            .expect("set time");
        let dst = to.path().join("copy");
        copy_tree(root, &dst, &Cancel::default()).expect("copy");
        let meta = std::fs::metadata(dst.join("src/include/a.h")).expect("copied");
        assert_eq!(meta.modified().expect("mtime"), old);
        assert_eq!(
            std::fs::read_link(dst.join("src/a.h")).expect("link"),
            PathBuf::from("include/a.h")
        );
        assert!(!dst.join(".git").exists());

        let cancel = Cancel::default();
        cancel.cancel();
        assert!(matches!(
            copy_tree(root, &to.path().join("again"), &cancel),
            Err(BuildError::Cancelled)
        ));
    }

    #[test]
    fn digest_ignores_git_and_build_outputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/bin")).expect("mkdir");
        std::fs::create_dir_all(root.join(".git")).expect("mkdir");
        std::fs::write(root.join("src/Makefile"), "all:\n").expect("write");
        let a = source_digest(root).expect("digest");
        std::fs::write(root.join("src/bin/x.o"), "obj").expect("write");
        std::fs::write(root.join(".git/HEAD"), "ref").expect("write");
        assert_eq!(source_digest(root).expect("digest"), a);
        std::fs::write(root.join("src/core.c"), "int x;").expect("write");
        assert_ne!(source_digest(root).expect("digest"), a);
    }
}
