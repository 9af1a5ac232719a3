//! Built files in the artifact bucket, named `<content key>/<file>`: equal content, one copy,
//! whoever asked for it.

use std::path::Path;

use bootfleet_api::artifacts::object_name;
use bootfleet_bus::{ArtifactStore, Bus};

use crate::{StartError, StoredFile};

#[derive(Clone, Debug)]
pub struct Objects {
    store: ArtifactStore,
}

impl Objects {
    /// Opens the bucket, creating it on first use.
    pub async fn open(bus: &Bus) -> Result<Objects, StartError> {
        let store = ArtifactStore::open_or_create(bus)
            .await
            .map_err(|e| StartError::Setup(e.to_string()))?;
        Ok(Objects { store })
    }

    /// Stores a built file; returns its size and SHA-256 (computed from the bytes sent).
    pub(crate) async fn put_file(
        &self,
        key: &str,
        name: &str,
        path: &Path,
    ) -> Result<StoredFile, String> {
        let stored = self
            .store
            .put_file(&object_name(key, name), path)
            .await
            .map_err(|e| e.to_string())?;
        Ok(StoredFile {
            name: name.to_owned(),
            size: stored.size,
            sha256: stored.sha256,
        })
    }

    /// Whether every file of a built artifact is still in the bucket.
    pub(crate) async fn has_all(&self, key: &str, files: &[StoredFile]) -> bool {
        if files.is_empty() {
            return false;
        }
        for f in files {
            match self.store.info(&object_name(key, &f.name)).await {
                Ok(stored) if stored.size == f.size => {}
                _ => return false,
            }
        }
        true
    }

    /// Best effort: bytes left behind are only unused space, never a wrong answer.
    pub(crate) async fn delete_all(&self, key: &str, files: &[StoredFile]) {
        for f in files {
            if let Err(e) = self.store.delete(&object_name(key, &f.name)).await {
                tracing::warn!(key, file = %f.name, error = %e, "cannot delete an artifact's bytes");
            }
        }
    }

    /// Reads a whole stored file into memory (ISO parts: a few MiB at most). Unbounded: the
    /// parts are this system's own builds.
    pub async fn read(&self, key: &str, name: &str) -> Result<Vec<u8>, String> {
        self.store
            .read(&object_name(key, name), u64::MAX)
            .await
            .map_err(|e| e.to_string())
    }
}
