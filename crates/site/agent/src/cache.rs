//! The distributor's local cache of boot files: the only place TFTP and HTTP boot read from.
//! Requested names are normalized by `bootfleet_netboot::tftp` (no `..`, no absolute paths);
//! here, symlinks are resolved and the result must still lie inside the cache.

use std::fs::{File, Metadata};
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

    /// Makes `name` (at the cache root) a symlink to `target` (relative to the cache), replacing
    /// it at once; with no target, removes `name` if it is such a link. Only links are ours to
    /// remove: a file an operator put there stays.
    pub fn set_link(&self, name: &str, target: Option<&str>) -> std::io::Result<()> {
        let link = self.root.join(name);
        match target {
            Some(target) => {
                let tmp = self.root.join(format!(".{name}.link-tmp"));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(target, &tmp)?;
                std::fs::rename(&tmp, &link)
            }
            None => match std::fs::symlink_metadata(&link) {
                Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(&link),
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// Opens a file by its path relative to the cache, read-only, with its metadata.
    pub fn open(&self, relative: &Path) -> Result<(File, Metadata), OpenError> {
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
        Ok((file, meta))
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

        let (_, meta) = cache.open(Path::new("efi/ipxe.efi")).expect("inside");
        assert_eq!(meta.len(), 6);
        assert!(
            cache.open(Path::new("alias.efi")).is_ok(),
            "a link that stays inside is fine"
        );
        for path in ["link", "../secret", "/etc/passwd", ""] {
            let got = cache.open(Path::new(path));
            assert!(matches!(got, Err(OpenError::Escape)), "{path:?}: {got:?}");
        }
        let got = cache.open(Path::new("efi"));
        assert!(matches!(got, Err(OpenError::NotAFile)), "{got:?}");
        let got = cache.open(Path::new("missing"));
        assert!(matches!(got, Err(OpenError::NotFound)), "{got:?}");
    }

    #[test]
    fn links_are_set_replaced_and_removed_but_files_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path()).expect("cache");
        std::fs::create_dir_all(dir.path().join("artifacts/a")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("artifacts/b")).expect("mkdir");
        std::fs::write(dir.path().join("artifacts/a/autoexec.ipxe"), b"a").expect("write");
        std::fs::write(dir.path().join("artifacts/b/autoexec.ipxe"), b"b").expect("write");
        let read = |cache: &Cache| {
            let (mut file, _) = cache.open(Path::new("autoexec.ipxe")).expect("open");
            let mut text = String::new();
            std::io::Read::read_to_string(&mut file, &mut text).expect("read");
            text
        };
        cache
            .set_link("autoexec.ipxe", Some("artifacts/a/autoexec.ipxe"))
            .expect("link");
        assert_eq!(read(&cache), "a");
        cache
            .set_link("autoexec.ipxe", Some("artifacts/b/autoexec.ipxe"))
            .expect("relink");
        assert_eq!(read(&cache), "b");
        cache.set_link("autoexec.ipxe", None).expect("unlink");
        assert!(matches!(
            cache.open(Path::new("autoexec.ipxe")),
            Err(OpenError::NotFound)
        ));
        cache
            .set_link("autoexec.ipxe", None)
            .expect("nothing to remove");
        // An operator's own file is not a link of ours.
        std::fs::write(dir.path().join("autoexec.ipxe"), b"mine").expect("write");
        cache.set_link("autoexec.ipxe", None).expect("kept");
        assert_eq!(read(&cache), "mine");
    }
}
