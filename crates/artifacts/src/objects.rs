//! Built files in a JetStream object store bucket, named `<content key>/<file>`: equal content,
//! one copy, whoever asked for it.

use std::path::Path;

use async_nats::jetstream::{self, object_store};
use bootfleet_api::artifacts::object_name;
use bootfleet_api::subjects;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::{StartError, StoredFile};

#[derive(Clone)]
pub struct Objects {
    store: object_store::ObjectStore,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Objects(")?;
        f.write_str(subjects::ARTIFACT_BUCKET)?;
        f.write_str(")")
    }
}

impl Objects {
    /// Opens the bucket, creating it on first use.
    pub async fn open(js: &jetstream::Context) -> Result<Objects, StartError> {
        let store = match js.get_object_store(subjects::ARTIFACT_BUCKET).await {
            Ok(store) => store,
            Err(_) => {
                js.create_object_store(object_store::Config {
                    bucket: subjects::ARTIFACT_BUCKET.to_owned(),
                    description: Some("bootfleet boot artifacts by content address".into()),
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| StartError::Setup(format!("cannot create the artifact bucket: {e}")))?
            }
        };
        Ok(Objects { store })
    }

    /// Stores a built file; returns its size and SHA-256 (computed from the bytes sent).
    pub(crate) async fn put_file(
        &self,
        key: &str,
        name: &str,
        path: &Path,
    ) -> Result<StoredFile, String> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("cannot read the built file {name}: {e}"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .await
            .map_err(|e| format!("cannot read the built file {name}: {e}"))?;
        let sha256 = crate::inputs::hex(&Sha256::digest(&bytes));
        let size = bytes.len() as u64;
        self.store
            .put(object_name(key, name).as_str(), &mut bytes.as_slice())
            .await
            .map_err(|e| format!("cannot store {name} in the object store: {e}"))?;
        Ok(StoredFile {
            name: name.to_owned(),
            size,
            sha256,
        })
    }

    /// Whether every file of a built artifact is still in the bucket.
    pub(crate) async fn has_all(&self, key: &str, files: &[StoredFile]) -> bool {
        if files.is_empty() {
            return false;
        }
        for f in files {
            match self.store.info(object_name(key, &f.name).as_str()).await {
                Ok(info) if !info.deleted && info.size as u64 == f.size => {}
                _ => return false,
            }
        }
        true
    }

    /// Best effort: bytes left behind are only unused space, never a wrong answer.
    pub(crate) async fn delete_all(&self, key: &str, files: &[StoredFile]) {
        for f in files {
            if let Err(e) = self.store.delete(object_name(key, &f.name).as_str()).await {
                tracing::warn!(key, file = %f.name, error = %e, "cannot delete an artifact's bytes");
            }
        }
    }

    /// Reads a whole stored file into memory (ISO parts: a few MiB at most).
    pub async fn read(&self, key: &str, name: &str) -> Result<Vec<u8>, String> {
        let mut object = self
            .store
            .get(object_name(key, name).as_str())
            .await
            .map_err(|e| format!("cannot read {name} from the object store: {e}"))?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| format!("cannot read {name} from the object store: {e}"))?;
        Ok(bytes)
    }
}
