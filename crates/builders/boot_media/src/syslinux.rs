//! SYSLINUX pieces for hybrid ISOs, copied from Debian's packages. Only the names of a fixed
//! allow-list are accepted; no path ever comes from a request.

use std::path::{Path, PathBuf};

use crate::{copy_package_file, invalid, BuildError, Built, BuiltFile, Cancel, Progress, Toolbox};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyslinuxFragment {
    /// `ldlinux.c32` (syslinux-common, BIOS modules): isolinux's second stage.
    Ldlinux,
    /// `isolinux.bin` (isolinux): the El Torito BIOS boot image.
    IsolinuxBin,
    /// `isohdpfx.bin` (isolinux): the isohybrid MBR that makes an ISO boot from a disk.
    IsohdpfxBin,
}

impl SyslinuxFragment {
    pub const ALL: [SyslinuxFragment; 3] = [
        SyslinuxFragment::Ldlinux,
        SyslinuxFragment::IsolinuxBin,
        SyslinuxFragment::IsohdpfxBin,
    ];

    /// Accepts exactly `ldlinux.c32`, `isolinux.bin` or `isohdpfx.bin`; anything else is an
    /// [`BuildError::Invalid`] on `fragment` listing them.
    pub fn parse(fragment: &str) -> Result<SyslinuxFragment, BuildError> {
        Self::ALL
            .into_iter()
            .find(|f| f.file_name() == fragment)
            .ok_or_else(|| {
                invalid(
                    "fragment",
                    format!(
                        "must be one of {}",
                        Self::ALL.map(|f| f.file_name()).join(", ")
                    ),
                )
            })
    }

    pub fn file_name(self) -> &'static str {
        match self {
            SyslinuxFragment::Ldlinux => "ldlinux.c32",
            SyslinuxFragment::IsolinuxBin => "isolinux.bin",
            SyslinuxFragment::IsohdpfxBin => "isohdpfx.bin",
        }
    }

    /// Where the toolbox keeps it.
    pub fn source(self, tb: &Toolbox) -> PathBuf {
        match self {
            SyslinuxFragment::Ldlinux => tb.syslinux_bios_dir.join(self.file_name()),
            SyslinuxFragment::IsolinuxBin | SyslinuxFragment::IsohdpfxBin => {
                tb.isolinux_dir.join(self.file_name())
            }
        }
    }

    pub(crate) fn debian_package(self) -> &'static str {
        match self {
            SyslinuxFragment::Ldlinux => "syslinux-common",
            SyslinuxFragment::IsolinuxBin | SyslinuxFragment::IsohdpfxBin => "isolinux",
        }
    }
}

/// Copies the fragment into `out_dir` under its own name.
pub fn build(
    tb: &Toolbox,
    fragment: SyslinuxFragment,
    out_dir: &Path,
    progress: Progress,
    cancel: &Cancel,
) -> Result<Built, BuildError> {
    cancel.check()?;
    progress(10, "copying");
    let path = out_dir.join(fragment.file_name());
    copy_package_file(
        &fragment.source(tb),
        &path,
        "syslinux",
        fragment.debian_package(),
    )?;
    progress(100, "done");
    Ok(Built {
        files: vec![BuiltFile {
            name: fragment.file_name().into(),
            path,
        }],
        embedded: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allow_list_parses() {
        for f in ["ldlinux.c32", "isolinux.bin", "isohdpfx.bin"] {
            assert_eq!(SyslinuxFragment::parse(f).expect(f).file_name(), f);
        }
        for bad in [
            "../x",
            "../../etc/passwd",
            "/usr/lib/ISOLINUX/isolinux.bin",
            "isolinux.bin ",
            "ISOLINUX.BIN",
            "menu.c32",
            "isolinux.bin;id",
            "$(id)",
            "`id`",
            "",
        ] {
            match SyslinuxFragment::parse(bad) {
                Err(BuildError::Invalid { field, message }) => {
                    assert_eq!(field, "fragment");
                    assert!(
                        message.contains("ldlinux.c32, isolinux.bin, isohdpfx.bin"),
                        "{message}"
                    );
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
