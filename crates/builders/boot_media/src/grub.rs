//! GRUB EFI bootloaders for media: `grub-mkimage` with a small embedded config that finds the
//! medium by its marker file (see [`embedded_config`]), packed as a FAT image (`img`, for an El
//! Torito UEFI entry and a USB stick's ESP) or as a zip of `EFI/BOOT/` (`efi`).

use std::path::Path;

use crate::{
    check_token, invalid, label_marker, scratch, tool, validate_label, Budget, BuildError, Built,
    BuiltFile, Cancel, Progress, Toolbox,
};

/// Modules built into every image: partition tables and filesystems of hybrid media (`iso9660`:
/// the firmware cannot read the CD's filesystem, GRUB must), the marker search, the config parser
/// (`normal`, `configfile`, `test` for `if`), `chain` for `chainloader`, and console output.
pub const MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "iso9660",
    "search",
    "search_fs_file",
    "search_label",
    "configfile",
    "normal",
    "test",
    "chain",
    "echo",
    "sleep",
    "reboot",
    "halt",
    "ls",
    "cat",
    "efi_gop",
    "efi_uga",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrubArch {
    /// x86-64 UEFI: `BOOTX64.EFI`.
    X64,
    /// 32-bit (IA-32) UEFI: a real i386 PE, `BOOTIA32.EFI`.
    X86,
}

impl GrubArch {
    /// `grub-mkimage -O` format, also the module directory's name.
    pub fn grub_format(self) -> &'static str {
        match self {
            GrubArch::X64 => "x86_64-efi",
            GrubArch::X86 => "i386-efi",
        }
    }

    /// The removable-media file name UEFI firmware starts.
    pub fn efi_file(self) -> &'static str {
        match self {
            GrubArch::X64 => "BOOTX64.EFI",
            GrubArch::X86 => "BOOTIA32.EFI",
        }
    }

    pub(crate) fn debian_package(self) -> &'static str {
        match self {
            GrubArch::X64 => "grub-efi-amd64-bin",
            GrubArch::X86 => "grub-efi-ia32-bin",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrubFragment {
    /// A FAT image holding `EFI/BOOT/<file>`; output `grub.img`.
    Img,
    /// A zip of `EFI/BOOT/<file>`; output `grub.zip`.
    Efi,
}

impl GrubFragment {
    pub fn file_name(self) -> &'static str {
        match self {
            GrubFragment::Img => "grub.img",
            GrubFragment::Efi => "grub.zip",
        }
    }
}

/// A validated GRUB request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrubSpec {
    pub label: String,
    pub arch: GrubArch,
    pub fragment: GrubFragment,
}

impl GrubSpec {
    /// `platform` must be `efi` (or GRUB's own name of an EFI platform, `x86_64-efi` or
    /// `i386-efi`, as the original tutorial sends it: the architecture decides what is built),
    /// `architecture` `x64` or `x86`, `extension` `efi`, `fragment` `img` or `efi`; `label` as
    /// [`validate_label`] says.
    pub fn parse(
        label: &str,
        platform: &str,
        architecture: &str,
        extension: &str,
        fragment: &str,
    ) -> Result<GrubSpec, BuildError> {
        validate_label(label)?;
        check_token("platform", platform, 16)?;
        check_token("architecture", architecture, 16)?;
        check_token("extension", extension, 16)?;
        check_token("fragment", fragment, 16)?;
        if !matches!(platform, "efi" | "x86_64-efi" | "i386-efi") {
            return Err(invalid(
                "platform",
                "must be efi (x86_64-efi and i386-efi are taken as efi)",
            ));
        }
        let arch = match architecture {
            "x64" => GrubArch::X64,
            "x86" => GrubArch::X86,
            _ => return Err(invalid("architecture", "must be x64 or x86")),
        };
        if extension != "efi" {
            return Err(invalid("extension", "must be efi"));
        }
        let fragment = match fragment {
            "img" => GrubFragment::Img,
            "efi" => GrubFragment::Efi,
            _ => {
                return Err(invalid(
                    "fragment",
                    "must be img (a fat image) or efi (a zip of EFI/BOOT)",
                ))
            }
        };
        Ok(GrubSpec {
            label: label.to_owned(),
            arch,
            fragment,
        })
    }
}

/// The config built into the image. The firmware starts GRUB from a FAT image (the El Torito EFI
/// image, or a USB stick's ESP) that does not hold the medium's files; GRUB finds the ISO 9660
/// filesystem it came with by searching all disks for the marker file, then reads the config there.
/// Only simple commands: this runs before the normal-mode parser is up.
pub fn embedded_config(label: &str) -> String {
    let label = label_marker(label);
    format!(
        "search --no-floppy --set=root --file /.bootfleet/{label}\n\
         set prefix=($root)/grub\n\
         configfile ($root)/grub/grub.cfg\n\
         echo bootfleet: no medium holding /.bootfleet/{label} was found\n"
    )
}

/// The marker a GRUB image built here searches for (read back from its embedded config; see
/// [`label_marker`]), or `None` if `efi` is not such an image.
pub fn marker_label(efi: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"--file /.bootfleet/";
    let at = efi.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let label: String = efi[at..]
        .iter()
        .take(33)
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_')
        .map(|b| char::from(*b))
        .collect();
    (label_marker(&label) == label && validate_label(&label).is_ok()).then_some(label)
}

/// Builds the GRUB image for `spec` into `out_dir` (`grub.img` or `grub.zip`).
pub fn build(
    tb: &Toolbox,
    spec: &GrubSpec,
    out_dir: &Path,
    progress: Progress,
    cancel: &Cancel,
) -> Result<Built, BuildError> {
    validate_label(&spec.label)?;
    cancel.check()?;
    let budget = Budget::new(tb.timeout);
    let work = scratch(out_dir)?;
    let modules = tb.grub_lib_dir.join(spec.arch.grub_format());
    if !modules.join("kernel.img").is_file() {
        return Err(BuildError::Tool {
            program: "grub-mkimage".into(),
            message: format!(
                "{} has no grub modules (install {})",
                modules.display(),
                spec.arch.debian_package()
            ),
        });
    }

    progress(10, "making grub image");
    let config = work.path().join("embedded.cfg");
    std::fs::write(&config, embedded_config(&spec.label))?;
    let efi = work.path().join(spec.arch.efi_file());
    let cmd = tool::Command::new("grub-mkimage")
        .arg("-d")
        .arg(&modules)
        .args(["-O", spec.arch.grub_format(), "-p", "/grub", "-c"])
        .arg(&config)
        .arg("-o")
        .arg(&efi)
        .args(MODULES)
        .dir(work.path());
    budget.run(cmd, cancel)?;

    let output = out_dir.join(spec.fragment.file_name());
    match spec.fragment {
        GrubFragment::Img => {
            progress(50, "making fat image");
            fat_image(
                &output,
                &[(spec.arch.efi_file(), &efi)],
                work.path(),
                &budget,
                cancel,
            )?;
        }
        GrubFragment::Efi => {
            progress(50, "zipping");
            let root = work.path().join("zip");
            let boot = root.join("EFI").join("BOOT");
            std::fs::create_dir_all(&boot)?;
            std::fs::rename(&efi, boot.join(spec.arch.efi_file()))?;
            // -X: no uid/gid extra fields, so the zip does not depend on who built it.
            let cmd = tool::Command::new("zip")
                .args(["-q", "-r", "-X"])
                .arg(&output)
                .arg("EFI")
                .dir(&root);
            budget.run(cmd, cancel)?;
        }
    }
    drop(work);
    progress(100, "done");
    Ok(Built {
        files: vec![BuiltFile {
            name: spec.fragment.file_name().into(),
            path: output,
        }],
        embedded: None,
    })
}

/// A FAT image at `image` holding each `(name, file)` as `EFI/BOOT/<name>`, sized to fit (at least
/// a floppy's 1.44 MB, which every firmware's FAT driver reads).
fn fat_image(
    image: &Path,
    files: &[(&str, &Path)],
    work: &Path,
    budget: &Budget,
    cancel: &Cancel,
) -> Result<(), BuildError> {
    let mut payload: u64 = 0;
    for (_, f) in files {
        payload += std::fs::metadata(f)?.len();
    }
    // Room for FAT tables, directories and cluster slack; whole 64-sector "cylinders" of the
    // 2-head, 32-sector geometry given to mformat.
    let bytes = (payload + payload / 10 + 256 * 1024).max(1_474_560);
    let sectors = bytes.div_ceil(512).div_ceil(64) * 64;
    // mtools refuses images whose geometry it finds odd unless told not to check.
    let mtools = |program: &str| {
        tool::Command::new(program)
            .env("MTOOLS_SKIP_CHECK", "1")
            .dir(work)
    };
    budget.run(
        mtools("mformat")
            .arg("-i")
            .arg(image)
            .args(["-C", "-T", &sectors.to_string(), "-h", "2", "-s", "32"])
            // A fixed serial number: the same inputs give the same image.
            .args(["-N", "b007f1ee", "-v", "BOOTFLEET", "::"]),
        cancel,
    )?;
    budget.run(
        mtools("mmd")
            .arg("-i")
            .arg(image)
            .args(["::/EFI", "::/EFI/BOOT"]),
        cancel,
    )?;
    for (name, file) in files {
        budget.run(
            mtools("mcopy")
                .arg("-i")
                .arg(image)
                .arg(file)
                .arg(format!("::/EFI/BOOT/{name}")),
            cancel,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_both_architectures_and_fragments() {
        let s = GrubSpec::parse("media-1", "efi", "x64", "efi", "img").expect("ok");
        assert_eq!((s.arch, s.fragment), (GrubArch::X64, GrubFragment::Img));
        let s = GrubSpec::parse("M_2", "efi", "x86", "efi", "efi").expect("ok");
        assert_eq!((s.arch, s.fragment), (GrubArch::X86, GrubFragment::Efi));
    }

    /// The original tutorial's three GRUB requests, as written.
    #[test]
    fn the_tutorials_requests_parse_and_name_a_plain_marker() {
        let label = "Cluster Platform Provisioner ISO";
        for (arch, fragment, want) in [
            ("x64", "img", GrubArch::X64),
            ("x64", "efi", GrubArch::X64),
            ("x86", "efi", GrubArch::X86),
        ] {
            let s = GrubSpec::parse(label, "x86_64-efi", arch, "efi", fragment).expect("tutorial");
            assert_eq!(s.arch, want);
        }
        assert_eq!(label_marker(label), "Cluster_Platform_Provisioner_ISO");
        assert_eq!(label_marker(".."), "__");
        let config = embedded_config(label);
        assert!(
            config.contains("--file /.bootfleet/Cluster_Platform_Provisioner_ISO\n"),
            "{config}"
        );
        assert_eq!(
            marker_label(config.as_bytes()).as_deref(),
            Some("Cluster_Platform_Provisioner_ISO")
        );
    }

    #[test]
    fn parse_names_the_bad_field() {
        let cases = [
            (("", "efi", "x64", "efi", "img"), "label"),
            (("../x", "efi", "x64", "efi", "img"), "label"),
            (("a  b", "efi", "x64", "efi", "img"), "label"),
            ((" ab", "efi", "x64", "efi", "img"), "label"),
            (("ab ", "efi", "x64", "efi", "img"), "label"),
            (("a/b", "efi", "x64", "efi", "img"), "label"),
            (("a;b", "efi", "x64", "efi", "img"), "label"),
            (("$(id)", "efi", "x64", "efi", "img"), "label"),
            (("`id`", "efi", "x64", "efi", "img"), "label"),
            (("a'b", "efi", "x64", "efi", "img"), "label"),
            ((&*"x".repeat(33), "efi", "x64", "efi", "img"), "label"),
            (("ok", "bios", "x64", "efi", "img"), "platform"),
            (("ok", "../efi", "x64", "efi", "img"), "platform"),
            (("ok", "efi", "arm64", "efi", "img"), "architecture"),
            (("ok", "efi", "x64", "exe", "img"), "extension"),
            (("ok", "efi", "x64", "efi", "iso"), "fragment"),
            (("ok", "efi", "x64", "efi", "../img"), "fragment"),
            (("x;reboot", "efi", "x64", "efi", "img"), "label"),
            (("two  spaces", "efi", "x64", "efi", "img"), "label"),
            (("ok", "efi;", "x64", "efi", "img"), "platform"),
            (("ok", "efi", "$(x)", "efi", "img"), "architecture"),
            (("ok", "efi", "x64", "e fi", "img"), "extension"),
            (("ok", "efi", "x64", "efi", "`img`"), "fragment"),
        ];
        for ((l, p, a, e, f), want) in cases {
            match GrubSpec::parse(l, p, a, e, f) {
                Err(BuildError::Invalid { field, .. }) => {
                    assert_eq!(field, want, "{l} {p} {a} {e} {f}")
                }
                other => panic!("{l} {p} {a} {e} {f}: {other:?}"),
            }
        }
    }

    #[test]
    fn embedded_config_searches_the_marker() {
        let cfg = embedded_config("lab-1");
        assert!(cfg.contains("search --no-floppy --set=root --file /.bootfleet/lab-1\n"));
        assert!(cfg.contains("configfile ($root)/grub/grub.cfg"));
    }
}
