//! The artifact bucket (the JetStream object store [`subjects::ARTIFACT_BUCKET`]): built files by
//! name (`<content key>/<file>`, `bootfleet_api::artifacts::object_name`). The one way to their
//! bytes for the builders, the gateway and the distributors.
//!
//! Reads use JetStream direct get only: the object's metadata, then its chunks one by one. No
//! consumer is created, so a distributor's NATS login, which may not create one (a consumer's
//! delivery subject is its creator's choice, which subject permissions cannot bound), reads the
//! way everyone else does.

use std::ops::Range;
use std::path::Path;

use async_nats::jetstream::object_store::{self, DeleteErrorKind, InfoErrorKind, ObjectInfo};
use async_nats::jetstream::{self, stream};
use bootfleet_api::{subjects, ApiError};
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};

use crate::Bus;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactStoreError {
    #[error("the artifact store is not reachable: {0}")]
    Unreachable(String),
    #[error("{0} is not in the artifact store")]
    NotFound(String),
    #[error("{name} in the artifact store is {size} bytes, more than {limit}")]
    TooLarge { name: String, size: u64, limit: u64 },
    #[error("cannot read {name} from the artifact store: {message}")]
    Read { name: String, message: String },
    #[error("cannot store {name} in the artifact store: {message}")]
    Write { name: String, message: String },
    #[error("cannot delete {name} from the artifact store: {message}")]
    Delete { name: String, message: String },
}

/// Every failure is `unavailable`, a missing object too: callers ask only for objects a row
/// lists, so a missing one means the store lost it or is not there yet, which a retry may
/// mend; it is never the client's 404.
impl From<ArtifactStoreError> for ApiError {
    fn from(e: ArtifactStoreError) -> ApiError {
        ApiError::unavailable(e.to_string())
    }
}

/// An object as stored: its length and the SHA-256 of its bytes (lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub size: u64,
    pub sha256: String,
}

/// An object's bytes (or a range of them) as they come from the store, a chunk at a time.
pub type ObjectChunks = BoxStream<'static, Result<Bytes, ArtifactStoreError>>;

/// The artifact bucket. Cheap to clone.
#[derive(Clone)]
pub struct ArtifactStore {
    store: object_store::ObjectStore,
    /// The bucket's stream, for the direct gets of chunks.
    stream: stream::Stream<()>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArtifactStore({})", subjects::ARTIFACT_BUCKET)
    }
}

fn unreachable(e: impl std::fmt::Display) -> ArtifactStoreError {
    ArtifactStoreError::Unreachable(e.to_string())
}

impl ArtifactStore {
    /// Opens the bucket; it must exist (the artifacts service makes it).
    pub async fn open(bus: &Bus) -> Result<ArtifactStore, ArtifactStoreError> {
        let js = jetstream::new(bus.client().clone());
        let store = js
            .get_object_store(subjects::ARTIFACT_BUCKET)
            .await
            .map_err(unreachable)?;
        ArtifactStore::with_stream(&js, store).await
    }

    /// Opens the bucket, making it on first use (the artifacts service, at its start) with the
    /// bus's JetStream replicas, and raising an existing one that has fewer.
    pub async fn open_or_create(bus: &Bus) -> Result<ArtifactStore, ArtifactStoreError> {
        let js = jetstream::new(bus.client().clone());
        let replicas = bus.jetstream_replicas();
        let store = match js.get_object_store(subjects::ARTIFACT_BUCKET).await {
            Ok(store) => {
                let stream = format!("OBJ_{}", subjects::ARTIFACT_BUCKET);
                crate::streams::raise_replicas(&js, &stream, replicas)
                    .await
                    .map_err(unreachable)?;
                store
            }
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: subjects::ARTIFACT_BUCKET.to_owned(),
                    description: Some("bootfleet boot artifacts by content address".into()),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| unreachable(format!("cannot create the bucket: {e}")))?,
        };
        ArtifactStore::with_stream(&js, store).await
    }

    async fn with_stream(
        js: &jetstream::Context,
        store: object_store::ObjectStore,
    ) -> Result<ArtifactStore, ArtifactStoreError> {
        let stream = js
            .get_stream_no_info(format!("OBJ_{}", subjects::ARTIFACT_BUCKET))
            .await
            .map_err(unreachable)?;
        Ok(ArtifactStore { store, stream })
    }

    /// Stores `data` as `name`, read to its end and sent a chunk at a time (replacing an
    /// object of that name). The digest is of the bytes sent.
    pub async fn put(
        &self,
        name: &str,
        data: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> Result<StoredObject, ArtifactStoreError> {
        let write = |message: String| ArtifactStoreError::Write {
            name: name.to_owned(),
            message,
        };
        let info = self
            .store
            .put(name, data)
            .await
            .map_err(|e| write(e.to_string()))?;
        stored(&info).ok_or_else(|| write("the store answered without a SHA-256 digest".into()))
    }

    /// [`ArtifactStore::put`] of the file at `path`.
    pub async fn put_file(
        &self,
        name: &str,
        path: &Path,
    ) -> Result<StoredObject, ArtifactStoreError> {
        let mut file =
            tokio::fs::File::open(path)
                .await
                .map_err(|e| ArtifactStoreError::Write {
                    name: name.to_owned(),
                    message: format!("cannot open {}: {e}", path.display()),
                })?;
        self.put(name, &mut file).await
    }

    /// The object's size and digest; `NotFound` when there is none (or it was deleted).
    pub async fn info(&self, name: &str) -> Result<StoredObject, ArtifactStoreError> {
        let info = self.object_info(name).await?;
        stored(&info).ok_or_else(|| ArtifactStoreError::Read {
            name: name.to_owned(),
            message: format!("malformed digest {:?}", info.digest),
        })
    }

    async fn object_info(&self, name: &str) -> Result<ObjectInfo, ArtifactStoreError> {
        match self.store.info(name).await {
            Ok(info) if info.deleted => Err(ArtifactStoreError::NotFound(name.to_owned())),
            Ok(info) => Ok(info),
            Err(e) if e.kind() == InfoErrorKind::NotFound => {
                Err(ArtifactStoreError::NotFound(name.to_owned()))
            }
            Err(e) => Err(ArtifactStoreError::Read {
                name: name.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    /// The whole object, refused unread when it is larger than `limit` bytes.
    pub async fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>, ArtifactStoreError> {
        let info = self.object_info(name).await?;
        let size = info.size as u64;
        if size > limit {
            return Err(ArtifactStoreError::TooLarge {
                name: name.to_owned(),
                size,
                limit,
            });
        }
        let mut chunks = self.chunks_of(name, &info, 0..size);
        let mut bytes = Vec::with_capacity(info.size);
        while let Some(chunk) = chunks.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }

    /// The bytes of `range` (cut to the object's end; empty from there on), as a stream that
    /// fetches chunks as it is read. The object has no seek: the chunks before the range are
    /// fetched and skipped inside the stream, so a caller may answer before that work.
    pub async fn chunks(
        &self,
        name: &str,
        range: Range<u64>,
    ) -> Result<ObjectChunks, ArtifactStoreError> {
        let info = self.object_info(name).await?;
        Ok(self.chunks_of(name, &info, range))
    }

    fn chunks_of(&self, name: &str, info: &ObjectInfo, range: Range<u64>) -> ObjectChunks {
        let size = info.size as u64;
        let end = range.end.min(size);
        let reading = Reading {
            stream: self.stream.clone(),
            name: name.to_owned(),
            subject: format!("$O.{}.C.{}", subjects::ARTIFACT_BUCKET, info.nuid),
            next_sequence: None,
            chunks_left: info.chunks,
            at: 0,
            size,
            start: range.start.min(end),
            end,
        };
        futures_util::stream::unfold(Some(reading), |reading| async move {
            let mut reading = reading?;
            match reading.next_slice().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(reading))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }

    /// Removes the object (its chunks are purged).
    pub async fn delete(&self, name: &str) -> Result<(), ArtifactStoreError> {
        self.store.delete(name).await.map_err(|e| match e.kind() {
            DeleteErrorKind::NotFound => ArtifactStoreError::NotFound(name.to_owned()),
            _ => ArtifactStoreError::Delete {
                name: name.to_owned(),
                message: e.to_string(),
            },
        })
    }
}

/// Where a read of one object's chunks stands.
struct Reading {
    stream: stream::Stream<()>,
    name: String,
    /// `$O.<bucket>.C.<nuid>`: the object's chunks, in order.
    subject: String,
    /// The stream sequence after the last chunk fetched.
    next_sequence: Option<u64>,
    chunks_left: usize,
    /// The object's offset of the next chunk.
    at: u64,
    size: u64,
    start: u64,
    end: u64,
}

impl Reading {
    /// The next piece of `start..end`, or `None` once it is all out.
    async fn next_slice(&mut self) -> Result<Option<Bytes>, ArtifactStoreError> {
        while self.at < self.end {
            let failed = |message: String| ArtifactStoreError::Read {
                name: self.name.clone(),
                message,
            };
            if self.chunks_left == 0 {
                return Err(failed(format!(
                    "the object ended after {} of its {} bytes",
                    self.at, self.size
                )));
            }
            let chunk = self
                .stream
                .direct_get_next_for_subject(self.subject.as_str(), self.next_sequence)
                .await
                .map_err(|e| failed(e.to_string()))?;
            self.chunks_left -= 1;
            self.next_sequence = Some(chunk.sequence + 1);
            let from = self.at;
            self.at += chunk.payload.len() as u64;
            if self.at <= self.start {
                continue;
            }
            // Both within this chunk's payload: `from < at` and `start < at`.
            let skip = usize::try_from(self.start.saturating_sub(from)).unwrap_or(usize::MAX);
            let take = usize::try_from(self.at.min(self.end) - from).unwrap_or(usize::MAX);
            return Ok(Some(chunk.payload.slice(skip..take)));
        }
        Ok(None)
    }
}

/// The size and hex SHA-256 of an object's metadata, whose digest is `SHA-256=<base64url>`.
fn stored(info: &ObjectInfo) -> Option<StoredObject> {
    let encoded = info.digest.as_deref()?.strip_prefix("SHA-256=")?;
    let sha256 = hex_of_base64url(encoded).filter(|hex| hex.len() == 64)?;
    Some(StoredObject {
        size: info.size as u64,
        sha256,
    })
}

fn hex_of_base64url(text: &str) -> Option<String> {
    let mut hex = String::with_capacity(text.len() * 3 / 2);
    let (mut bits, mut held) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        held += 6;
        if held >= 8 {
            held -= 8;
            hex.push_str(&format!("{:02x}", (bits >> held) & 0xff));
            bits &= (1 << held) - 1;
        }
    }
    Some(hex)
}

#[cfg(test)]
mod tests {
    use super::hex_of_base64url;

    #[test]
    fn base64url_digests_become_hex() {
        // SHA-256 of "abc", as the object store writes it and as sha256sum prints it.
        assert_eq!(
            hex_of_base64url("ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=").as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(hex_of_base64url("").as_deref(), Some(""));
        assert_eq!(
            hex_of_base64url("ab+/"),
            None,
            "standard base64 is not base64url"
        );
    }
}
