//! The first answer to a write that carried an `Idempotency-Key`, kept for a day in a JetStream
//! key-value bucket, so a client that repeats the write (its reply was lost) gets that answer
//! again instead of a second effect. The gateway owns the policy (what is kept, for whom); this
//! is only the storage, so the gateway never opens JetStream itself.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bootfleet_api::{subjects, ApiError, ErrorCode};
use bytes::Bytes;

use crate::Bus;

/// How long an answer is kept.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// A claim older than this belongs to a gateway that died before it finished: another may
/// take the key over (longer than any request the gateway lets run).
const ABANDONED_AFTER_MS: u64 = 10 * 60 * 1000;

const PENDING: &[u8] = b"pending:";

/// How long the outcome of a claimed key is retried when the bucket does not take it (its
/// stream electing a new leader after a NATS cluster node went away): a key neither finished
/// nor released refuses every repeat until it is abandoned.
const OUTCOME_RETRIED_FOR: Duration = Duration::from_secs(8);
const OUTCOME_RETRY_EVERY: Duration = Duration::from_millis(500);

/// Runs `write` until it succeeds, for at most [`OUTCOME_RETRIED_FOR`]: the last error.
async fn retried<T, E: std::fmt::Display, F>(mut write: impl FnMut() -> F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + OUTCOME_RETRIED_FOR;
    loop {
        let error = match tokio::time::timeout_at(deadline, write()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {OUTCOME_RETRIED_FOR:?}"),
        };
        if tokio::time::Instant::now() + OUTCOME_RETRY_EVERY >= deadline {
            return Err(error);
        }
        tokio::time::sleep(OUTCOME_RETRY_EVERY).await;
    }
}

/// What a key holds when a write arrives with it.
#[derive(Debug)]
pub enum Claim {
    /// Nobody has used the key: this request runs, then [`ReplayStore::finish`] or
    /// [`ReplayStore::release`].
    Taken,
    /// Another request with the key is running now.
    Running,
    /// The key's first answer, as [`ReplayStore::finish`] stored it.
    Answered(Bytes),
}

#[derive(Clone, Debug)]
pub struct ReplayStore {
    kv: kv::Store,
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("the idempotency store is unavailable: {e}"),
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl ReplayStore {
    /// Opens the bucket, making it on first use. The bucket's stream is made here with the
    /// settings a key-value bucket has, rather than by `create_key_value`, which first asks
    /// the account's JetStream limits in a form nats-server 2.9 (Debian 12's) does not answer;
    /// its replicas are the bus's (`BOOTFLEET_JETSTREAM_REPLICAS`).
    pub async fn open(bus: &Bus) -> Result<ReplayStore, ApiError> {
        let js = jetstream::new(bus.client().clone());
        let bucket = subjects::IDEMPOTENCY_BUCKET;
        let config = jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("first answers to writes with an Idempotency-Key".into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: KEPT_FOR,
            storage: jetstream::stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        };
        crate::streams::ensure_stream(&js, config, bus.jetstream_replicas())
            .await
            .map_err(unavailable)?;
        let kv = js.get_key_value(bucket).await.map_err(unavailable)?;
        Ok(ReplayStore { kv })
    }

    /// Claims `key` for this request, or says who has it. `key` is a bucket key (letters,
    /// digits, `-`, `_`, `=`, `.`; the gateway passes a digest).
    pub async fn claim(&self, key: &str) -> Result<Claim, ApiError> {
        let pending = || {
            let mut v = PENDING.to_vec();
            v.extend_from_slice(now_ms().to_string().as_bytes());
            Bytes::from(v)
        };
        match self.kv.create(key, pending()).await {
            Ok(_) => return Ok(Claim::Taken),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(unavailable(e)),
        }
        let entry = self.kv.entry(key).await.map_err(unavailable)?;
        // A released key reads back as its delete marker (no value): as good as new, like one
        // that expired between the two calls. (Seen on a NATS cluster when a node rejoined.)
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            let revision = self.kv.entry(key).await.ok().flatten().map(|e| e.revision);
            let taken = match revision {
                Some(revision) => self.kv.update(key, pending(), revision).await.is_ok(),
                None => self.kv.create(key, pending()).await.is_ok(),
            };
            return Ok(if taken { Claim::Taken } else { Claim::Running });
        };
        let Some(since) = entry.value.strip_prefix(PENDING) else {
            return Ok(Claim::Answered(entry.value));
        };
        let since: u64 = std::str::from_utf8(since)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if now_ms().saturating_sub(since) < ABANDONED_AFTER_MS {
            return Ok(Claim::Running);
        }
        // Taken over only if nobody else did since we read it.
        Ok(match self.kv.update(key, pending(), entry.revision).await {
            Ok(_) => Claim::Taken,
            Err(_) => Claim::Running,
        })
    }

    /// Keeps `answer` as the key's first answer.
    /// Retried for a few seconds while the bucket does not answer.
    pub async fn finish(&self, key: &str, answer: Bytes) -> Result<(), ApiError> {
        retried(|| self.kv.put(key, answer.clone()))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Gives the key back (the request's outcome is not one to repeat, say a 5xx): the next
    /// request with it runs again. Retried for a few seconds while the bucket does not answer.
    pub async fn release(&self, key: &str) {
        if let Err(e) = retried(|| self.kv.delete(key)).await {
            tracing::warn!(error = %e, "cannot release an idempotency key; it stays claimed until it is abandoned");
        }
    }
}
