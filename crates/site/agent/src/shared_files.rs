//! One copy in memory of a boot file that TFTP transfers are reading now. In a boot storm
//! hundreds of clients fetch the same file at once; each block read from that copy is a
//! memory copy instead of a `pread` (a system call per block, a third of a lock-step
//! transfer's calls). The copy lives as long as a transfer holds it, so an idle distributor
//! holds none, and a file that changes on disk (another inode, size or modification time) is
//! read again.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A file larger than this is read block by block (a kernel or an initrd fetched over TFTP
/// would otherwise hold the listener while it is read).
pub const MAX_FILE: u64 = 8 << 20;
/// What all copies together may hold; past it, transfers read from their file.
pub const BUDGET: u64 = 128 << 20;

/// Which file, as it is on disk now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Key {
    fn of(meta: &Metadata) -> Key {
        Key {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// A file's bytes, shared by the transfers reading it.
#[derive(Debug)]
pub struct Contents {
    bytes: Box<[u8]>,
    held: Arc<AtomicU64>,
}

impl Contents {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Contents {
    fn drop(&mut self) {
        self.held
            .fetch_sub(self.bytes.len() as u64, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug)]
pub struct SharedFiles {
    live: Arc<Mutex<HashMap<Key, Weak<Contents>>>>,
    held: Arc<AtomicU64>,
    max_file: u64,
    budget: u64,
}

impl Default for SharedFiles {
    fn default() -> SharedFiles {
        SharedFiles::new(MAX_FILE, BUDGET)
    }
}

impl SharedFiles {
    pub fn new(max_file: u64, budget: u64) -> SharedFiles {
        SharedFiles {
            live: Arc::default(),
            held: Arc::default(),
            max_file,
            budget,
        }
    }

    /// The bytes of `file` (opened, with its `meta`): the copy a transfer holds now, else a
    /// new one. `None` when the file is too large, the budget is spent or the read fails: the
    /// caller reads from the file itself.
    pub fn get(&self, file: &File, meta: &Metadata) -> Option<Arc<Contents>> {
        let key = Key::of(meta);
        if key.size > self.max_file {
            return None;
        }
        if let Some(found) = self
            .live
            .lock()
            .ok()
            .and_then(|live| live.get(&key).and_then(Weak::upgrade))
        {
            return Some(found);
        }
        let len = usize::try_from(key.size).ok()?;
        // Reserve before reading, so two reads at once cannot both pass the budget.
        let held = self.held.fetch_add(key.size, Ordering::Relaxed);
        if held.saturating_add(key.size) > self.budget {
            self.held.fetch_sub(key.size, Ordering::Relaxed);
            return None;
        }
        // Holds the reservation from here: its drop gives it back on every path.
        let mut contents = Contents {
            bytes: vec![0; len].into_boxed_slice(),
            held: self.held.clone(),
        };
        if let Err(e) = file.read_exact_at(&mut contents.bytes, 0) {
            // A file cut short since it was opened: its own reads report that, block by block.
            tracing::debug!(error = %e, "cannot read a boot file whole; reading it by block");
            return None;
        }
        let contents = Arc::new(contents);
        if let Ok(mut live) = self.live.lock() {
            live.retain(|_, held| held.strong_count() > 0);
            live.insert(key, Arc::downgrade(&contents));
        }
        Some(contents)
    }

    /// Bytes held by copies now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens `path` as a transfer does and asks for its copy.
    fn get(shared: &SharedFiles, path: &std::path::Path) -> Option<Arc<Contents>> {
        let file = File::open(path).expect("open");
        let meta = file.metadata().expect("metadata");
        shared.get(&file, &meta)
    }

    /// `bytes` written to a new file `name` in a new directory (kept while the test holds it).
    fn written(name: &str, bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        (dir, path)
    }

    #[test]
    fn transfers_of_one_file_share_one_copy_until_the_last_ends() {
        let (_dir, path) = written("ipxe.efi", b"MZ boot file");
        let shared = SharedFiles::new(1 << 20, 1 << 20);

        let first = get(&shared, &path).expect("first copy");
        assert_eq!(first.bytes(), b"MZ boot file");
        let second = get(&shared, &path).expect("second");
        assert!(Arc::ptr_eq(&first, &second), "one copy for both");
        assert_eq!(shared.held(), 12);

        drop(first);
        drop(second);
        assert_eq!(shared.held(), 0, "nothing held once no transfer reads it");
    }

    #[test]
    fn a_changed_file_is_read_again() {
        let (dir, path) = written("autoexec.ipxe", b"#!ipxe\nold\n");
        let shared = SharedFiles::new(1 << 20, 1 << 20);
        let old = get(&shared, &path).expect("old");

        // Replaced as the distributor replaces files: a new file renamed over the old one.
        let tmp = dir.path().join("autoexec.ipxe.tmp");
        std::fs::write(&tmp, b"#!ipxe\nnew!\n").expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        let new = get(&shared, &path).expect("new");
        assert_eq!(
            old.bytes(),
            b"#!ipxe\nold\n",
            "a transfer under way keeps its copy"
        );
        assert_eq!(new.bytes(), b"#!ipxe\nnew!\n");
    }

    #[test]
    fn a_file_cut_short_since_it_was_opened_is_read_by_block_and_holds_nothing() {
        let (_dir, path) = written("ipxe.efi", &[1u8; 4096]);
        let file = File::open(&path).expect("open");
        let meta = file.metadata().expect("metadata");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(100))
            .expect("truncate");
        let shared = SharedFiles::new(1 << 20, 1 << 20);
        assert!(shared.get(&file, &meta).is_none());
        assert_eq!(shared.held(), 0, "the reservation is given back");
    }

    #[test]
    fn large_files_and_a_spent_budget_read_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, len: usize| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![7u8; len]).expect("write");
            path
        };
        let (a, b, big) = (file("a", 600), file("b", 600), file("big", 2000));
        let shared = SharedFiles::new(1000, 1000);

        assert!(get(&shared, &big).is_none(), "over the per-file limit");
        let held_a = get(&shared, &a).expect("a fits");
        assert!(
            get(&shared, &b).is_none(),
            "a and b together exceed the budget"
        );
        assert_eq!(shared.held(), 600);
        drop(held_a);
        assert!(get(&shared, &b).is_some(), "room again once a is released");
    }
}
