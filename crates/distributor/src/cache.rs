//! The distributor's local cache of boot files: the only place TFTP and HTTP boot read from.
//! Requested names are normalized by `bootfleet_netboot::tftp` (no `..`, no absolute paths);
//! here, symlinks are resolved and the result must still lie inside the cache.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("not found")]
    NotFound,
    #[error("outside the cache")]
    Escape,
    #[error("not a regular file")]
    NotAFile,
    #[error("cannot read: {0}")]
    Io(std::io::Error),
}

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// Creates the directory if needed.
    pub fn new(dir: &Path) -> std::io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        Ok(Cache {
            root: dir.canonicalize()?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens a file by its path relative to the cache, read-only, with its length.
    pub fn open(&self, relative: &Path) -> Result<(File, u64), OpenError> {
        if relative.as_os_str().is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(OpenError::Escape);
        }
        let joined = self.root.join(relative);
        let resolved = joined.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OpenError::NotFound,
            _ => OpenError::Io(e),
        })?;
        // A symlink inside the cache may point anywhere; only what resolves inside is served.
        if !resolved.starts_with(&self.root) {
            return Err(OpenError::Escape);
        }
        let file = File::open(&resolved).map_err(OpenError::Io)?;
        let meta = file.metadata().map_err(OpenError::Io)?;
        if !meta.is_file() {
            return Err(OpenError::NotAFile);
        }
        Ok((file, meta.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_files_inside_and_nothing_outside() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"no").expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path()).expect("cache");
        std::fs::create_dir_all(dir.path().join("efi")).expect("mkdir");
        std::fs::write(dir.path().join("efi/ipxe.efi"), b"MZ....").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link"))
            .expect("symlink");
        std::os::unix::fs::symlink("efi/ipxe.efi", dir.path().join("alias.efi")).expect("symlink");

        let (_, len) = cache.open(Path::new("efi/ipxe.efi")).expect("inside");
        assert_eq!(len, 6);
        assert!(
            cache.open(Path::new("alias.efi")).is_ok(),
            "a link that stays inside is fine"
        );
        assert!(matches!(
            cache.open(Path::new("link")),
            Err(OpenError::Escape)
        ));
        assert!(matches!(
            cache.open(Path::new("../secret")),
            Err(OpenError::Escape)
        ));
        assert!(matches!(
            cache.open(Path::new("/etc/passwd")),
            Err(OpenError::Escape)
        ));
        assert!(matches!(cache.open(Path::new("")), Err(OpenError::Escape)));
        assert!(matches!(
            cache.open(Path::new("efi")),
            Err(OpenError::NotAFile)
        ));
        assert!(matches!(
            cache.open(Path::new("missing")),
            Err(OpenError::NotFound)
        ));
    }
}
