//! Builds boot artifacts from validated inputs with real tools: iPXE binaries ([`ipxe`]), GRUB EFI
//! images ([`grub`]), SYSLINUX pieces ([`syslinux`]) and hybrid BIOS+UEFI ISOs ([`iso`]). Every
//! external program runs through [`tool::Command`] (argument vectors, never a shell; bounded
//! output; timeout; cancellation that kills the whole process tree). Builds are synchronous and
//! write only below the `out_dir` they are given; scratch space is a temporary directory inside it.
//!
//! Errors name the client's field by its REST (JSON) name (`script`, `platform`, `label`,
//! `grubImgUrl`, …) so a caller can turn [`BuildError::Invalid`] into a 400 as it is.
//!
//! # The ISO layout, and why
//!
//! ```text
//! /isolinux/isolinux.bin, ldlinux.c32, isolinux.cfg, boot.cat   El Torito BIOS entry (no emulation)
//! /ipxe.lkrn          iPXE as a Linux kernel, started by isolinux
//! /script.ipxe        the BIOS script, given to ipxe.lkrn as its INITRD
//! /boot/efi.img       the GRUB FAT image: El Torito UEFI entry, and the ESP on a USB stick
//! /EFI/BOOT/BOOTX64.EFI, BOOTIA32.EFI   GRUB from the zips, for firmware that reads ISO 9660
//! /.bootfleet/<label> the marker GRUB searches for to find this medium
//! /grub/grub.cfg      chainloads /ipxe.efi with the UEFI script on its command line
//! /ipxe.efi           iPXE for x86-64 UEFI
//! ```
//!
//! `xorriso -as mkisofs` writes an isohybrid MBR (`isohdpfx.bin`) and a GPT whose EFI partition is
//! `/boot/efi.img` (`-isohybrid-gpt-basdat`), so the same file boots as a CD and as a disk/USB
//! stick, under BIOS and UEFI. All four were booted in QEMU (SeaBIOS, OVMF) by `tests/media.rs`.
//!
//! * **BIOS**: isolinux → `ipxe.lkrn` with the script as its INITRD. iPXE runs an initrd that starts
//!   with `#!ipxe` as a script; nothing has to be quoted or embedded, and it needs no compiler.
//! * **UEFI**: OVMF has no ISO 9660 driver, so all it can start is `EFI/BOOT/BOOTX64.EFI` inside
//!   the FAT image: GRUB. GRUB's image (see [`grub::embedded_config`]) `search`es every disk for
//!   `/.bootfleet/<label>` to find the ISO 9660 filesystem it came from (a CD is `(cd0)`, a USB
//!   stick `(hd0)`; the FAT image itself holds no marker), then reads `/grub/grub.cfg` there, which
//!   chainloads `/ipxe.efi` with the script as its EFI command line. iPXE treats that command line
//!   as a script after dropping its first word (so a dummy word comes first). An `autoexec.ipxe`
//!   would not work here: a chainloaded iPXE looks for it on the filesystem it was loaded from, which
//!   the firmware cannot read. The command line reaches iPXE as 16-bit characters that it narrows to
//!   bytes, so the UEFI script must be ASCII; it is single-quoted for GRUB (see [`iso::grub_quote`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub mod grub;
pub mod ipxe;
pub mod iso;
pub mod syslinux;
pub mod tool;

/// Where tools and package files live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolbox {
    /// Debian's `ipxe` (≥ 1.21.1) binaries: `ipxe-amd64.efi`, `snponly.efi`, `undionly.kpxe`, …
    pub ipxe_prebuilt_dir: PathBuf,
    /// An iPXE source tree (the directory holding `src/Makefile`). When set, iPXE is compiled with
    /// the script embedded instead of copying the prebuilt binaries.
    pub ipxe_source: Option<PathBuf>,
    /// Holds `x86_64-efi/` and `i386-efi/` GRUB module directories.
    pub grub_lib_dir: PathBuf,
    /// SYSLINUX BIOS modules (`ldlinux.c32`).
    pub syslinux_bios_dir: PathBuf,
    /// ISOLINUX files (`isolinux.bin`, `isohdpfx.bin`).
    pub isolinux_dir: PathBuf,
    /// The longest one build may run, all its tools together.
    pub timeout: Duration,
}

/// The default [`Toolbox::timeout`]: compiling iPXE from scratch takes minutes on two cores.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

impl Toolbox {
    /// Debian's paths, prebuilt iPXE, [`DEFAULT_TIMEOUT`].
    pub fn debian() -> Self {
        Toolbox {
            ipxe_prebuilt_dir: "/usr/lib/ipxe".into(),
            ipxe_source: None,
            grub_lib_dir: "/usr/lib/grub".into(),
            syslinux_bios_dir: "/usr/lib/syslinux/modules/bios".into(),
            isolinux_dir: "/usr/lib/ISOLINUX".into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// [`Toolbox::debian`] with overrides from the environment: `BOOTFLEET_IPXE_SOURCE` (enables
    /// the compile backend), `BOOTFLEET_BUILD_TIMEOUT_SECS`, and the directories
    /// `BOOTFLEET_IPXE_PREBUILT_DIR`, `BOOTFLEET_GRUB_LIB_DIR`, `BOOTFLEET_SYSLINUX_BIOS_DIR`,
    /// `BOOTFLEET_ISOLINUX_DIR`. An unusable timeout value is ignored (the default stays); use
    /// [`Toolbox::try_from_env`] to refuse it instead.
    pub fn from_env() -> Self {
        let mut tb = Self::debian();
        tb.apply_env(|name| std::env::var_os(name));
        if let Ok(Some(t)) = parse_timeout(std::env::var_os("BOOTFLEET_BUILD_TIMEOUT_SECS")) {
            tb.timeout = t;
        }
        tb
    }

    /// Like [`Toolbox::from_env`], but a `BOOTFLEET_BUILD_TIMEOUT_SECS` that is not a whole number
    /// of seconds ≥ 1 is an [`BuildError::Invalid`] naming that variable.
    pub fn try_from_env() -> Result<Self, BuildError> {
        let mut tb = Self::debian();
        tb.apply_env(|name| std::env::var_os(name));
        if let Some(t) = parse_timeout(std::env::var_os("BOOTFLEET_BUILD_TIMEOUT_SECS"))? {
            tb.timeout = t;
        }
        Ok(tb)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<std::ffi::OsString>) {
        let dir = |name: &str| get(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(p) = dir("BOOTFLEET_IPXE_SOURCE") {
            self.ipxe_source = Some(p);
        }
        if let Some(p) = dir("BOOTFLEET_IPXE_PREBUILT_DIR") {
            self.ipxe_prebuilt_dir = p;
        }
        if let Some(p) = dir("BOOTFLEET_GRUB_LIB_DIR") {
            self.grub_lib_dir = p;
        }
        if let Some(p) = dir("BOOTFLEET_SYSLINUX_BIOS_DIR") {
            self.syslinux_bios_dir = p;
        }
        if let Some(p) = dir("BOOTFLEET_ISOLINUX_DIR") {
            self.isolinux_dir = p;
        }
    }

    /// A stable string naming the tools and files a recipe of `kind` uses (tool versions, sha256
    /// of the package files it copies, the recipe's own version), for the caller to hash with the
    /// inputs into a content address. Errors ([`BuildError::Tool`]) if something needed is missing.
    pub fn versions(&self, kind: Kind) -> Result<String, BuildError> {
        let mut parts: Vec<String> = vec![format!("{kind:?}-recipe={}", kind.recipe_version())];
        match kind {
            Kind::Ipxe => match &self.ipxe_source {
                Some(source) => {
                    parts.push("backend=compile".into());
                    parts.push(tool_version("make", &["--version"])?);
                    parts.push(tool_version("gcc", &["--version"])?);
                    parts.push(tool_version("ld", &["--version"])?);
                    parts.push(format!("source={}", ipxe::source_digest(source)?));
                }
                None => {
                    parts.push("backend=prebuilt".into());
                    let mut found = 0;
                    for file in ipxe::prebuilt_files() {
                        let path = self.ipxe_prebuilt_dir.join(file);
                        match sha256_file(&path) {
                            Ok(sum) => {
                                found += 1;
                                parts.push(format!("{file}={sum}"));
                            }
                            Err(_) => parts.push(format!("{file}=absent")),
                        }
                    }
                    if found == 0 {
                        return Err(missing_package(
                            "ipxe",
                            &self.ipxe_prebuilt_dir,
                            "debian's ipxe >= 1.21.1",
                        ));
                    }
                }
            },
            Kind::Grub => {
                parts.push(tool_version("grub-mkimage", &["--version"])?);
                parts.push(tool_version("mformat", &["--version"])?);
                parts.push(tool_version("zip", &["-v"])?);
                for arch in [grub::GrubArch::X64, grub::GrubArch::X86] {
                    let dir = self.grub_lib_dir.join(arch.grub_format());
                    for file in ["kernel.img", "moddep.lst"]
                        .into_iter()
                        .map(String::from)
                        .chain(grub::MODULES.iter().map(|m| format!("{m}.mod")))
                    {
                        let sum = sha256_file(&dir.join(&file)).map_err(|_| {
                            missing_package("grub-mkimage", &dir.join(&file), arch.debian_package())
                        })?;
                        parts.push(format!("{}/{file}={sum}", arch.grub_format()));
                    }
                }
            }
            Kind::Syslinux => {
                for fragment in syslinux::SyslinuxFragment::ALL {
                    let path = fragment.source(self);
                    let sum = sha256_file(&path).map_err(|_| {
                        missing_package("syslinux", &path, fragment.debian_package())
                    })?;
                    parts.push(format!("{}={sum}", fragment.file_name()));
                }
            }
            Kind::Iso => {
                parts.push(tool_version("xorriso", &["--version"])?);
                parts.push(tool_version("mcopy", &["--version"])?);
                parts.push(tool_version("unzip", &["-v"])?);
            }
        }
        Ok(parts.join("\n"))
    }
}

fn parse_timeout(value: Option<std::ffi::OsString>) -> Result<Option<Duration>, BuildError> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value.to_str().and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(secs) if secs > 0 => Ok(Some(Duration::from_secs(secs))),
        _ => Err(BuildError::Invalid {
            field: "BOOTFLEET_BUILD_TIMEOUT_SECS",
            message: "must be a whole number of seconds, at least 1".into(),
        }),
    }
}

/// The first non-empty line a tool prints about its version (`grub-mkimage (GRUB) 2.06-13`).
fn tool_version(program: &str, args: &[&str]) -> Result<String, BuildError> {
    let ran = tool::Command::new(program)
        .args(args)
        .timeout(Duration::from_secs(30))
        .run(&Cancel::default())?;
    let line = ran
        .output
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown version");
    Ok(format!("{program}: {line}"))
}

fn missing_package(program: &str, path: &Path, package: &str) -> BuildError {
    BuildError::Tool {
        program: program.into(),
        message: format!("{} not found (install {package})", path.display()),
    }
}

/// The kinds of artifacts this crate builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Ipxe,
    Grub,
    Syslinux,
    Iso,
}

impl Kind {
    /// Bumped whenever a recipe's output changes for the same inputs and tools, so content
    /// addresses of older builds stop matching.
    fn recipe_version(self) -> u32 {
        match self {
            Kind::Ipxe => 1,
            Kind::Grub => 1,
            Kind::Syslinux => 1,
            Kind::Iso => 1,
        }
    }
}

/// Cooperative cancellation flag shared with the runner; set by the worker on shutdown/cancel.
/// A running tool is killed (with its whole process tree) within a few tens of milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Cancelled)` once cancelled; builders call it between steps.
    pub fn check(&self) -> Result<(), BuildError> {
        if self.is_cancelled() {
            Err(BuildError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Progress from real steps (0..=100) with a short lowercase step name.
pub type Progress<'a> = &'a (dyn Fn(u8, &str) + Sync);

/// What a build produced, all inside its `out_dir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub files: Vec<BuiltFile>,
    /// iPXE only: whether the script is compiled into the binary (`Some(true)`) or delivered
    /// beside it (`Some(false)`: `autoexec.ipxe`, proxyDHCP, the lkrn initrd). `None` otherwise.
    pub embedded: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltFile {
    /// The download name: `ipxe.efi`, `autoexec.ipxe`, `grub.img`, `dist.iso`, …
    pub name: String,
    pub path: PathBuf,
}

impl Built {
    /// The file called `name`, if this build produced one.
    pub fn file(&self, name: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.path.as_path())
    }
}

#[derive(thiserror::Error, Debug)]
pub enum BuildError {
    /// The client's input: `field` is its REST (JSON) name.
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A tool is missing or exited non-zero; `message` has the exit status and the last lines of
    /// its output (at most 4 KiB).
    #[error("{program} failed: {message}")]
    Tool { program: String, message: String },
    #[error("{program} timed out after {} s", after.as_secs())]
    Timeout { program: String, after: Duration },
    #[error("build cancelled")]
    Cancelled,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        field,
        message: message.into(),
    }
}

/// Checks a short identifier: 1..=`max` characters of `[A-Za-z0-9_-]`. Anything else (`/`,
/// `..`, spaces, `;`, `$(`, backticks, quotes) is refused before any allow-list lookup.
pub(crate) fn check_token(field: &'static str, value: &str, max: usize) -> Result<(), BuildError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(invalid(
            field,
            format!("must use only letters, digits, '-' and '_' ({c:?} is not allowed)"),
        ));
    }
    Ok(())
}

/// A medium label: 1–32 characters (an ISO 9660 volume id holds 32) of letters, digits, `-`,
/// `_`, `.` and single spaces inside (`Cluster Platform Provisioner ISO`, as the original
/// tutorial names its medium). It becomes the volume id as written; the marker file GRUB searches
/// for is named by [`label_marker`], which has no spaces or dots.
pub fn validate_label(label: &str) -> Result<(), BuildError> {
    if label.is_empty() {
        return Err(invalid("label", "must not be empty"));
    }
    if label.len() > 32 {
        return Err(invalid("label", "must be at most 32 characters"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ')))
    {
        return Err(invalid(
            "label",
            format!(
                "must use only letters, digits, '-', '_', '.' and spaces ({c:?} is not allowed)"
            ),
        ));
    }
    if label.starts_with(' ') || label.ends_with(' ') || label.contains("  ") {
        return Err(invalid(
            "label",
            "must not start or end with a space, nor hold two in a row",
        ));
    }
    Ok(())
}

/// The name of the marker file `/.bootfleet/<marker>` for a valid `label`: each character other
/// than a letter, a digit, `-` or `_` becomes `_`, so it is one plain word in GRUB's embedded
/// config and one path component (`..` cannot come out of it).
pub fn label_marker(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The whole build's time budget: each tool gets what is left of [`Toolbox::timeout`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    started: Instant,
    total: Duration,
}

impl Budget {
    pub(crate) fn new(total: Duration) -> Budget {
        Budget {
            started: Instant::now(),
            total,
        }
    }

    /// Runs `cmd` within what is left; a timeout reports the time the whole build had run.
    pub(crate) fn run(&self, cmd: tool::Command, cancel: &Cancel) -> Result<tool::Ran, BuildError> {
        let name = cmd.program_name();
        let left = self.total.saturating_sub(self.started.elapsed());
        if left.is_zero() {
            return Err(BuildError::Timeout {
                program: name,
                after: self.started.elapsed(),
            });
        }
        cmd.timeout(left).run(cancel).map_err(|e| match e {
            BuildError::Timeout { program, .. } => BuildError::Timeout {
                program,
                after: self.started.elapsed(),
            },
            other => other,
        })
    }
}

/// Scratch space for one build: a hidden temporary directory inside `out_dir`, removed on drop.
pub(crate) fn scratch(out_dir: &Path) -> Result<tempfile::TempDir, BuildError> {
    if !out_dir.is_dir() {
        return Err(BuildError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("output directory {} does not exist", out_dir.display()),
        )));
    }
    Ok(tempfile::Builder::new()
        .prefix(".work-")
        .tempdir_in(out_dir)?)
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// PE machine type of a PE/COFF image (`0x8664` x86-64, `0x14c` i386, `0xaa64` arm64), or `None`
/// if `bytes` is not one.
pub fn pe_machine(bytes: &[u8]) -> Option<u16> {
    if bytes.get(..2)? != b"MZ" {
        return None;
    }
    let at = u32::from_le_bytes(bytes.get(0x3c..0x40)?.try_into().ok()?) as usize;
    if bytes.get(at..at.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let machine = bytes.get(at + 4..at + 6)?;
    Some(u16::from_le_bytes([machine[0], machine[1]]))
}

pub const PE_X86_64: u16 = 0x8664;
pub const PE_I386: u16 = 0x14c;

/// Copies a package file the build needs; a missing one is a [`BuildError::Tool`] naming the
/// Debian package to install.
pub(crate) fn copy_package_file(
    src: &Path,
    dst: &Path,
    program: &str,
    package: &str,
) -> Result<(), BuildError> {
    match std::fs::copy(src, dst) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !src.exists() => {
            Err(missing_package(program, src, package))
        }
        Err(e) => Err(BuildError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_refuse_shell_and_path_characters() {
        for bad in [
            "", "../x", "a/b", "a;b", "$(id)", "`id`", "a b", "a'b", "a\"b", "a\nb", "é",
        ] {
            let err = check_token("driver", bad, 32).expect_err(bad);
            assert!(
                matches!(
                    err,
                    BuildError::Invalid {
                        field: "driver",
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
        }
        check_token("driver", "undionly", 32).expect("fine");
        check_token("platform", "bin-x86_64-efi", 32).expect("fine");
        assert!(check_token("label", &"a".repeat(33), 32).is_err());
    }

    #[test]
    fn pe_machine_reads_the_header() {
        let mut pe = vec![0u8; 0x100];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&PE_X86_64.to_le_bytes());
        assert_eq!(pe_machine(&pe), Some(PE_X86_64));
        assert_eq!(pe_machine(&pe[..0x84]), None);
        assert_eq!(pe_machine(b"ELF"), None);
    }

    #[test]
    fn timeout_variable_is_checked() {
        assert_eq!(parse_timeout(None).expect("unset"), None);
        assert_eq!(
            parse_timeout(Some("30".into())).expect("30"),
            Some(Duration::from_secs(30))
        );
        for bad in ["0", "-1", "soon", ""] {
            assert!(
                matches!(
                    parse_timeout(Some(bad.into())),
                    Err(BuildError::Invalid {
                        field: "BOOTFLEET_BUILD_TIMEOUT_SECS",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn env_overrides_apply() {
        let mut tb = Toolbox::debian();
        tb.apply_env(|name| match name {
            "BOOTFLEET_IPXE_SOURCE" => Some("/src/ipxe".into()),
            "BOOTFLEET_GRUB_LIB_DIR" => Some("".into()),
            _ => None,
        });
        assert_eq!(tb.ipxe_source, Some(PathBuf::from("/src/ipxe")));
        assert_eq!(tb.grub_lib_dir, PathBuf::from("/usr/lib/grub"));
    }
}
