//! Hybrid BIOS+UEFI ISOs that boot as a CD and as a disk (USB stick). The layout and the reasons
//! for it are in the crate docs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::grub::{marker_label, GrubArch};
use crate::{
    invalid, ipxe, label_marker, pe_machine, scratch, tool, validate_label, Budget, BuildError,
    Built, BuiltFile, Cancel, Progress, Toolbox, PE_I386, PE_X86_64,
};

/// Inputs are files of artifacts already built (resolved by the caller from their URLs) and the
/// iPXE scripts that go with the two iPXE binaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsoInputs {
    pub label: String,
    /// x86-64 UEFI iPXE (`ipxe.efi`; not `snponly.efi`, which cannot use a NIC it was not loaded from).
    pub ipxe_efi: PathBuf,
    /// Passed on `ipxe.efi`'s command line: must be ASCII.
    pub ipxe_efi_script: String,
    /// `ipxe.lkrn`.
    pub ipxe_lkrn: PathBuf,
    /// Given to `ipxe.lkrn` as its initrd.
    pub ipxe_lkrn_script: String,
    /// A GRUB `img` (x64): the El Torito UEFI image and the USB stick's ESP.
    pub grub_img: PathBuf,
    /// A GRUB `efi` zip, x64: copied to `/EFI/BOOT/BOOTX64.EFI`.
    pub grub_efi_x64_zip: PathBuf,
    /// A GRUB `efi` zip, x86: copied to `/EFI/BOOT/BOOTIA32.EFI`.
    pub grub_efi_x86_zip: PathBuf,
    pub ldlinux: PathBuf,
    pub isolinux_bin: PathBuf,
    pub isohdpfx_bin: PathBuf,
}

/// The output's name.
pub const ISO_NAME: &str = "dist.iso";

/// Input files are boot programs of a few MiB; anything far larger is not what was asked for.
const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Quotes `text` as one GRUB word: single quotes keep everything literal (`$`, `;`, newlines);
/// a single quote itself is closed, escaped and reopened (`'\''`), as in a POSIX shell.
pub fn grub_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Checks the UEFI script for the command-line route: a valid script, and ASCII only (iPXE
/// narrows each UTF-16 unit of its command line to one byte). Errors name `ipxeUefiUrl`.
pub fn validate_efi_script(script: &str) -> Result<(), BuildError> {
    ipxe::validate_script(script).map_err(|e| rename_field(e, "ipxeUefiUrl"))?;
    if !script.is_ascii() {
        return Err(invalid(
            "ipxeUefiUrl",
            "its script must be ascii: on the iso it travels on ipxe.efi's command line, which ipxe reads as ascii",
        ));
    }
    Ok(())
}

/// The `/grub/grub.cfg` that GRUB reads from the medium: chainload `/ipxe.efi` with the script as
/// its command line. `bootfleet` is the dummy first word iPXE drops (it expects an image name).
pub fn grub_cfg(efi_script: &str) -> Result<String, BuildError> {
    validate_efi_script(efi_script)?;
    // iPXE strips a CR before each LF itself; dropping it here keeps the GRUB file plain.
    let script = efi_script.replace("\r\n", "\n");
    Ok(format!(
        "# written by bootfleet: start iPXE with the script on its command line\n\
         if [ \"$grub_cpu\" != x86_64 ]; then\n\
         \x20 echo \"bootfleet: this medium has no iPXE for $grub_cpu-$grub_platform\"\n\
         \x20 sleep 30\n\
         \x20 exit\n\
         fi\n\
         echo 'bootfleet: starting ipxe.efi'\n\
         chainloader ($root)/ipxe.efi bootfleet {}\n\
         boot\n",
        grub_quote(&script)
    ))
}

fn isolinux_cfg() -> &'static str {
    "# written by bootfleet: iPXE as a kernel, the script as its initrd\n\
     DEFAULT bootfleet\n\
     PROMPT 0\n\
     TIMEOUT 0\n\
     LABEL bootfleet\n\
     \x20 KERNEL /ipxe.lkrn\n\
     \x20 INITRD /script.ipxe\n"
}

fn rename_field(e: BuildError, field: &'static str) -> BuildError {
    match e {
        BuildError::Invalid { message, .. } => BuildError::Invalid {
            field,
            message: format!("script: {message}"),
        },
        other => other,
    }
}

/// Reads an input file, refusing absurd sizes.
fn read_input(path: &Path, field: &'static str) -> Result<Vec<u8>, BuildError> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_INPUT_BYTES {
        return Err(invalid(
            field,
            format!("the file is {len} bytes, too large"),
        ));
    }
    Ok(std::fs::read(path)?)
}

/// A tool that exited non-zero on an input file means the input is not what it should be: that
/// is the client's mistake; a missing tool, a timeout or cancellation stays what it is.
fn input_error(e: BuildError, field: &'static str, what: &str) -> BuildError {
    match e {
        BuildError::Tool { message, .. } if message.starts_with("exit status") => invalid(
            field,
            format!(
                "must be {what} ({})",
                message.lines().last().unwrap_or("").trim()
            ),
        ),
        other => other,
    }
}

/// Builds `dist.iso` into `out_dir`.
pub fn build(
    tb: &Toolbox,
    inputs: &IsoInputs,
    out_dir: &Path,
    progress: Progress,
    cancel: &Cancel,
) -> Result<Built, BuildError> {
    validate_label(&inputs.label)?;
    let grub_cfg = grub_cfg(&inputs.ipxe_efi_script)?;
    ipxe::validate_script(&inputs.ipxe_lkrn_script).map_err(|e| rename_field(e, "ipxeBiosUrl"))?;
    cancel.check()?;
    let budget = Budget::new(tb.timeout);

    progress(5, "checking inputs");
    let ipxe_efi = read_input(&inputs.ipxe_efi, "ipxeUefiUrl")?;
    if pe_machine(&ipxe_efi) != Some(PE_X86_64) {
        return Err(invalid(
            "ipxeUefiUrl",
            "must be an x86-64 uefi ipxe (bin-x86_64-efi/ipxe.efi)",
        ));
    }
    let lkrn = read_input(&inputs.ipxe_lkrn, "ipxeBiosUrl")?;
    if lkrn.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err(invalid(
            "ipxeBiosUrl",
            "must be ipxe.lkrn (bin/ipxe.lkrn, ipxe as a linux kernel)",
        ));
    }
    let ldlinux = read_input(&inputs.ldlinux, "ldLinuxUrl")?;
    if !ldlinux.starts_with(b"\x7fELF") {
        return Err(invalid("ldLinuxUrl", "must be syslinux's ldlinux.c32"));
    }
    let isolinux = read_input(&inputs.isolinux_bin, "isolinuxBinUrl")?;
    if !isolinux.windows(8).any(|w| w == b"ISOLINUX") {
        return Err(invalid("isolinuxBinUrl", "must be isolinux.bin"));
    }
    let isohdpfx = read_input(&inputs.isohdpfx_bin, "isohdpfxBinUrl")?;
    if isohdpfx.len() != 432 {
        return Err(invalid(
            "isohdpfxBinUrl",
            "must be isohdpfx.bin (a 432-byte isohybrid mbr)",
        ));
    }

    let work = scratch(out_dir)?;
    let root = work.path().join("root");
    let extract = work.path().join("extract");
    for dir in [
        root.join(".bootfleet"),
        root.join("grub"),
        root.join("isolinux"),
        root.join("boot"),
        root.join("EFI").join("BOOT"),
        extract.clone(),
    ] {
        std::fs::create_dir_all(dir)?;
    }

    progress(15, "reading grub images");
    let mut labels = BTreeSet::from([label_marker(&inputs.label)]);
    // The FAT image must carry an x64 GRUB: it is what UEFI firmware starts from the CD or the ESP.
    let from_img = extract.join("img-BOOTX64.EFI");
    let cmd = tool::Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&inputs.grub_img)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .arg(&from_img)
        .dir(work.path());
    budget
        .run(cmd, cancel)
        .map_err(|e| input_error(e, "grubImgUrl", "a fat image holding EFI/BOOT/BOOTX64.EFI"))?;
    labels.insert(grub_label(&from_img, PE_X86_64, "grubImgUrl")?);
    std::fs::copy(&inputs.grub_img, root.join("boot").join("efi.img"))?;

    for (zip, arch, field) in [
        (&inputs.grub_efi_x64_zip, GrubArch::X64, "grubEfiX64Url"),
        (&inputs.grub_efi_x86_zip, GrubArch::X86, "grubEfiX86Url"),
    ] {
        cancel.check()?;
        let dir = extract.join(arch.grub_format());
        std::fs::create_dir_all(&dir)?;
        let member = format!("EFI/BOOT/{}", arch.efi_file());
        // Only the one member is extracted (by name), so nothing else in the zip lands anywhere.
        let cmd = tool::Command::new("unzip")
            .args(["-q", "-o"])
            .arg(zip)
            .arg(&member)
            .arg("-d")
            .arg(&dir)
            .dir(work.path());
        budget
            .run(cmd, cancel)
            .map_err(|e| input_error(e, field, &format!("a grub efi zip holding {member}")))?;
        let efi = dir.join(&member);
        let machine = match arch {
            GrubArch::X64 => PE_X86_64,
            GrubArch::X86 => PE_I386,
        };
        labels.insert(grub_label(&efi, machine, field)?);
        std::fs::copy(&efi, root.join("EFI").join("BOOT").join(arch.efi_file()))?;
    }

    progress(40, "staging files");
    // GRUB images built for another label search for that one's marker: mark the medium for
    // each, so any GRUB artifact of this system finds it.
    for label in &labels {
        std::fs::write(
            root.join(".bootfleet").join(label),
            "bootfleet medium marker\n",
        )?;
    }
    std::fs::write(root.join("grub").join("grub.cfg"), grub_cfg)?;
    std::fs::write(root.join("ipxe.efi"), &ipxe_efi)?;
    std::fs::write(root.join("ipxe.lkrn"), &lkrn)?;
    std::fs::write(root.join("script.ipxe"), &inputs.ipxe_lkrn_script)?;
    std::fs::write(root.join("isolinux").join("isolinux.bin"), &isolinux)?;
    std::fs::write(root.join("isolinux").join("ldlinux.c32"), &ldlinux)?;
    std::fs::write(root.join("isolinux").join("isolinux.cfg"), isolinux_cfg())?;
    let mbr = work.path().join("isohdpfx.bin");
    std::fs::write(&mbr, &isohdpfx)?;
    cancel.check()?;

    progress(60, "writing iso");
    let iso = out_dir.join(ISO_NAME);
    let cmd = tool::Command::new("xorriso")
        .args(["-as", "mkisofs", "-o"])
        .arg(&iso)
        .args(["-V", &inputs.label, "-r", "-J"])
        // BIOS: isolinux from El Torito (CD) or from the isohybrid MBR (disk).
        .args([
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "-isohybrid-mbr",
        ])
        .arg(&mbr)
        // UEFI: the GRUB FAT image as El Torito EFI entry (CD) and as a GPT partition (disk).
        .args([
            "-eltorito-alt-boot",
            "-e",
            "boot/efi.img",
            "-no-emul-boot",
            "-isohybrid-gpt-basdat",
        ])
        .arg(&root)
        .dir(work.path());
    budget.run(cmd, cancel)?;
    drop(work);
    progress(100, "done");
    Ok(Built {
        files: vec![BuiltFile {
            name: ISO_NAME.into(),
            path: iso,
        }],
        embedded: None,
    })
}

/// Checks an extracted GRUB binary's machine type and returns the label it searches for.
fn grub_label(efi: &Path, machine: u16, field: &'static str) -> Result<String, BuildError> {
    let bytes = read_input(efi, field)?;
    if pe_machine(&bytes) != Some(machine) {
        let want = if machine == PE_X86_64 { "x64" } else { "x86" };
        return Err(invalid(
            field,
            format!("must hold an {want} grub efi binary"),
        ));
    }
    marker_label(&bytes).ok_or_else(|| {
        invalid(
            field,
            "is not a grub image built by bootfleet (it searches for no /.bootfleet/ marker)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_quote_keeps_everything_literal() {
        assert_eq!(grub_quote("a b"), "'a b'");
        assert_eq!(grub_quote("it's"), r"'it'\''s'");
        assert_eq!(grub_quote("$x;`y`\nz"), "'$x;`y`\nz'");
        assert_eq!(grub_quote("'"), r"''\'''");
    }

    #[test]
    fn grub_cfg_quotes_the_script_and_refuses_what_ipxe_cannot_read() {
        let cfg = grub_cfg("#!ipxe\r\necho it's $x\r\nchain http://h/p\r\n").expect("ascii");
        assert!(
            cfg.contains("chainloader ($root)/ipxe.efi bootfleet '#!ipxe\necho it'\\''s $x\nchain http://h/p\n'\nboot\n"),
            "{cfg}"
        );
        for bad in ["#!ipxe\necho café\n", "dhcp\n", "#!ipxe\n\0"] {
            assert!(
                matches!(
                    grub_cfg(bad),
                    Err(BuildError::Invalid {
                        field: "ipxeUefiUrl",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn grub_cfg_passes_grub_script_check() {
        // grub-script-check (grub-common) parses a config as GRUB would; skip where it is absent.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("grub.cfg");
        let cfg = grub_cfg("#!ipxe\necho it's a 'test' \"x\" $y ${z} \\\n; `id` {}\ndhcp\n")
            .expect("cfg");
        std::fs::write(&path, cfg).expect("write");
        match tool::Command::new("grub-script-check")
            .arg(&path)
            .run(&Cancel::default())
        {
            Ok(_) => {}
            Err(BuildError::Tool { message, .. }) if message.contains("not found") => {
                eprintln!("grub-script-check not installed: skipped");
            }
            Err(e) => panic!("{e}"),
        }
    }
}
