//! Maps a requested file name onto relative components inside the cache, refusing anything
//! that could name a file outside it or a file the cache keeps for itself.
//!
//! Accepted spellings: `undionly.kpxe`, `/ipxe.efi` (leading separators are stripped; iPXE sends
//! the URI path and many firmwares prefix a slash), `\EFI\BOOT\bootx64.efi` (backslash is a
//! separator, as Windows-minded firmware sends it), `pxelinux.cfg/01-aa-bb-cc-dd-ee-ff`. Empty
//! components (`a//b`, a trailing `/`) are dropped.
//!
//! Refused: empty names, names over [`MAX_PATH_LEN`] bytes, NUL and other control characters,
//! non-ASCII characters (boot file names are ASCII, and refusing the rest rules out look-alike
//! names), drive prefixes such as `C:`, `..` anywhere, and every component that starts with a
//! dot. The last rule covers `.` as well, so each file has one spelling in logs and counts, and
//! it leaves dot-names free for the cache's own bookkeeping (partial downloads, digests) without
//! any chance of serving them.
//!
//! This is lexical only. The caller opens the result relative to the cache root and must not
//! follow symbolic links out of it: open each component with `openat(O_NOFOLLOW)` from the root
//! directory, or canonicalize the joined path and check it still starts with the canonical root.
//! The caller also checks that the result is a regular file before serving it.

use std::fmt;
use std::path::PathBuf;

/// Longest requested name we look at, in bytes. DHCP hands out boot file names in option 67,
/// which cannot exceed 255 bytes, and no cache name comes near it.
pub const MAX_PATH_LEN: usize = 255;

/// A cache-relative path: non-empty ASCII components joined by `/`, none starting with a dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelativePath {
    joined: String,
}

impl RelativePath {
    /// The components joined by `/`.
    pub fn as_str(&self) -> &str {
        &self.joined
    }

    /// The components in order; never empty, none empty.
    pub fn components(&self) -> impl Iterator<Item = &str> + '_ {
        self.joined.split('/')
    }

    /// The path to join onto the cache root.
    pub fn to_path_buf(&self) -> PathBuf {
        self.components().collect()
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty file name")]
    Empty,
    #[error("file name of {len} bytes exceeds {max}")]
    TooLong { len: usize, max: usize },
    #[error("file name contains a nul byte")]
    Nul,
    #[error("file name contains a control character")]
    ControlCharacter,
    #[error("file name contains a non-ascii character")]
    NonAscii,
    #[error("file name has a drive prefix")]
    DrivePrefix,
    #[error("file name has a parent-directory component")]
    ParentComponent,
    #[error("file name has a component starting with a dot")]
    DotComponent,
}

/// Normalizes a requested file name; see the module documentation for the rules.
pub fn normalize(requested: &str) -> Result<RelativePath, PathError> {
    // Bounded before any other work, so a long name costs nothing more.
    if requested.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong {
            len: requested.len(),
            max: MAX_PATH_LEN,
        });
    }
    for c in requested.chars() {
        if c == '\0' {
            return Err(PathError::Nul);
        }
        if c.is_ascii_control() {
            return Err(PathError::ControlCharacter);
        }
        if !c.is_ascii() {
            return Err(PathError::NonAscii);
        }
    }
    let mut joined = String::with_capacity(requested.len());
    for component in requested.split(['/', '\\']) {
        if component.is_empty() {
            continue;
        }
        if component == ".." {
            return Err(PathError::ParentComponent);
        }
        if component.starts_with('.') {
            return Err(PathError::DotComponent);
        }
        if has_drive_prefix(component) {
            return Err(PathError::DrivePrefix);
        }
        if !joined.is_empty() {
            joined.push('/');
        }
        joined.push_str(component);
    }
    if joined.is_empty() {
        return Err(PathError::Empty);
    }
    Ok(RelativePath { joined })
}

/// `C:` or `c:anything`: a Windows drive, absolute or drive-relative. Checked on every
/// component because a drive can follow stripped separators (`\C:\x`).
fn has_drive_prefix(component: &str) -> bool {
    matches!(component.as_bytes(), [letter, b':', ..] if letter.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts() {
        let cases = [
            ("undionly.kpxe", "undionly.kpxe"),
            ("/ipxe.efi", "ipxe.efi"),
            ("///ipxe.efi", "ipxe.efi"),
            (r"\EFI\BOOT\bootx64.efi", "EFI/BOOT/bootx64.efi"),
            (
                "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff",
                "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff",
            ),
            ("a//b/", "a/b"),
            (r"mixed\sep/arators", "mixed/sep/arators"),
            ("file.with..dots", "file.with..dots"),
            ("ab:c", "ab:c"),
            ("1:2", "1:2"),
            ("name with spaces", "name with spaces"),
        ];
        for (requested, expected) in cases {
            let path = normalize(requested).unwrap_or_else(|e| panic!("{requested:?}: {e}"));
            assert_eq!(path.as_str(), expected, "{requested:?}");
        }
    }

    #[test]
    fn refuses() {
        let long = "a".repeat(MAX_PATH_LEN + 1);
        let cases = [
            (PathError::Empty, &["", "/", r"\\"][..]),
            (
                PathError::ParentComponent,
                &["../etc/passwd", "/../x", "a/../../x", r"a\..\x", "a/.."],
            ),
            (
                PathError::DotComponent,
                &[
                    "./ipxe.efi",
                    "a/./b",
                    ".partial-ipxe.efi",
                    "dir/.hidden",
                    "...",
                ],
            ),
            (
                PathError::DrivePrefix,
                &["C:", r"C:\Windows\x", "c:file", r"\d:\x"],
            ),
            (PathError::Nul, &["a\0b"]),
            (PathError::ControlCharacter, &["a\nb", "a\u{7f}"]),
            (PathError::NonAscii, &["caf\u{e9}", "a\u{2215}b"]),
            (
                PathError::TooLong {
                    len: MAX_PATH_LEN + 1,
                    max: MAX_PATH_LEN,
                },
                &[long.as_str()],
            ),
        ];
        for (expected, requested) in cases {
            for requested in requested {
                assert_eq!(normalize(requested), Err(expected.clone()), "{requested:?}");
            }
        }
    }

    #[test]
    fn components_and_path_buf() {
        let path = normalize(r"\EFI\BOOT\bootx64.efi").expect("valid");
        assert_eq!(
            path.components().collect::<Vec<_>>(),
            ["EFI", "BOOT", "bootx64.efi"]
        );
        assert_eq!(path.to_path_buf(), PathBuf::from("EFI/BOOT/bootx64.efi"));
        assert_eq!(path.to_string(), "EFI/BOOT/bootx64.efi");
    }

    proptest! {
        #[test]
        fn normalized_paths_stay_inside(requested in "[a-zA-Z0-9./\\\\:\u{0}\n-]{0,40}") {
            if let Ok(path) = normalize(&requested) {
                let pathbuf = path.to_path_buf();
                prop_assert!(pathbuf.is_relative());
                for component in pathbuf.components() {
                    prop_assert!(matches!(component, std::path::Component::Normal(_)));
                }
                for component in path.components() {
                    prop_assert!(!component.is_empty());
                    prop_assert!(!component.starts_with('.'));
                    prop_assert!(!component.contains(['/', '\\']));
                }
                // Normalizing is idempotent: one spelling per file.
                prop_assert_eq!(normalize(path.as_str()), Ok(path.clone()));
            }
        }
    }
}
