//! The gateway's copies of node-facing reads (scripts, machines' rendered files), so a read
//! that booting nodes repeat skips the NATS round trip, the service and the database while
//! nothing changes. [`crate::script_cache`] and [`crate::machine_files`] are the two users.
//!
//! Why a copy is never served after its change was acknowledged: a service publishes a change
//! event (its subject per user) before it answers the write, on the same connection as the
//! answer. The gateway's subscription to those events lives on its one bus connection, which
//! receives them in the server's order, so the event is in the subscription's queue before the
//! write's answer is; every lookup first applies whatever is queued. Whichever gateway relayed
//! the write, the copy is gone before a read that follows the acknowledgment looks. Gateway
//! replicas on other nodes of a NATS cluster get the event through the cluster's routes, a
//! fraction of a millisecond behind (docs/reliability.md). A copy read from the service while a
//! change was on its way is not kept (an epoch counter), and after the bus reconnects (events
//! may have been missed) the cache starts empty. Whatever happens, a copy is dropped after
//! [`MAX_AGE`].

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};

/// How long a copy is served at most, whatever the events say.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// How long after a failed open (the bus away) a cache is not tried again: its reads go to the
/// service meanwhile, without waiting on another attempt each.
pub const RETRY_OPEN_AFTER: Duration = Duration::from_secs(5);
/// Copies kept at most, and their bytes at most; the oldest go first.
const MAX_ENTRIES: usize = 4096;
const MAX_BYTES: usize = 32 << 20;

/// What a kept value weighs against the cache's byte budget.
pub trait Weighed {
    fn bytes(&self) -> usize;
}

/// What one change event drops.
pub enum Dropped<K> {
    /// The copy of this key.
    Key(K),
    /// Every copy whose key this says yes to.
    Matching(Box<dyn Fn(&K) -> bool>),
    /// Every copy (also for an event that is not understood: nothing kept can be trusted).
    All,
}

impl<K> std::fmt::Debug for Dropped<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dropped::Key(_) => "Key",
            Dropped::Matching(_) => "Matching",
            Dropped::All => "All",
        })
    }
}

/// Reads a change event: which copies it drops.
pub type ChangeReader<K> = fn(&async_nats::Message) -> Dropped<K>;

#[derive(Debug)]
struct Entry<V> {
    value: V,
    at: Instant,
}

#[derive(Debug)]
struct Copies<K, V> {
    entries: HashMap<K, Entry<V>>,
    bytes: usize,
}

impl<K: Eq + Hash + Clone, V: Weighed> Copies<K, V> {
    fn remove(&mut self, key: &K) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.value.bytes();
        }
    }

    fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        let mut freed = 0;
        self.entries.retain(|k, e| {
            let kept = keep(k);
            if !kept {
                freed += e.value.bytes();
            }
            kept
        });
        self.bytes -= freed;
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.at)
            .map(|(k, _)| k.clone());
        if let Some(key) = oldest {
            self.remove(&key);
        }
    }
}

#[derive(Debug)]
struct State<K, V> {
    copies: Copies<K, V>,
    /// The change events not applied yet.
    changes: async_nats::Subscriber,
    /// The connection's connect count when the cache was last known complete.
    connects: u64,
}

/// Recently read values, dropped on their change events.
pub struct ReadCache<K, V> {
    client: async_nats::Client,
    state: Mutex<State<K, V>>,
    /// Raised by every change applied: a copy fetched across a change is not kept.
    epoch: AtomicU64,
    read_change: ChangeReader<K>,
}

impl<K, V> std::fmt::Debug for ReadCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V: Weighed + Clone> ReadCache<K, V> {
    /// Subscribes to the change events on `subject` and waits until nats-server has the
    /// subscription, so every change committed after this returns is seen.
    pub async fn open(
        bus: &bootfleet_bus::Bus,
        subject: &'static str,
        read_change: ChangeReader<K>,
    ) -> Result<Self, String> {
        let client = bus.client().clone();
        let changes = client
            .subscribe(subject)
            .await
            .map_err(|e| format!("cannot subscribe to {subject}: {e}"))?;
        bus.sync().await.map_err(|e| e.to_string())?;
        let connects = client.statistics().connects.load(Ordering::Relaxed);
        Ok(ReadCache {
            client,
            state: Mutex::new(State {
                copies: Copies {
                    entries: HashMap::new(),
                    bytes: 0,
                },
                changes,
                connects,
            }),
            epoch: AtomicU64::new(0),
            read_change,
        })
    }

    /// The epoch to hand back to [`ReadCache::keep`] with a copy fetched after this call.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The kept copy of `key`, if it is there and still good.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut state = self.current()?;
        match state.copies.entries.get(key) {
            Some(entry) if entry.at.elapsed() < MAX_AGE => Some(entry.value.clone()),
            Some(_) => {
                state.copies.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value`, fetched from its service after [`ReadCache::epoch`] gave `epoch`, unless
    /// a change was applied meanwhile.
    pub fn keep(&self, key: K, value: V, epoch: u64) {
        let size = value.bytes();
        if size > MAX_BYTES / 64 {
            return;
        }
        let Some(mut state) = self.current() else {
            return;
        };
        if self.epoch() != epoch {
            return;
        }
        state.copies.remove(&key);
        while state.copies.entries.len() >= MAX_ENTRIES || state.copies.bytes + size > MAX_BYTES {
            state.copies.evict_oldest();
        }
        state.copies.bytes += size;
        state.copies.entries.insert(
            key,
            Entry {
                value,
                at: Instant::now(),
            },
        );
    }

    /// The state with every queued change applied; `None` (and nothing kept) while the bus is
    /// not connected. After a reconnect the copies are dropped: events may have been missed.
    fn current(&self) -> Option<std::sync::MutexGuard<'_, State<K, V>>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        if !connected || connects != state.connects {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            state.copies.clear();
            if !connected {
                return None;
            }
            state.connects = connects;
        }
        while let Some(Some(message)) = state.changes.next().now_or_never() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            match (self.read_change)(&message) {
                Dropped::Key(key) => state.copies.remove(&key),
                Dropped::Matching(drops) => state.copies.retain(|k| !drops(k)),
                Dropped::All => state.copies.clear(),
            }
        }
        Some(state)
    }

    /// Applies the queued changes (the drain task's step).
    pub fn apply_changes(&self) {
        drop(self.current());
    }
}

/// A cache opened on its first use. While it cannot be opened, reads go uncached; a failed
/// open is logged once and tried again on a read [`RETRY_OPEN_AFTER`] later, not on every read.
#[derive(Debug)]
pub struct LazyCache<T> {
    cell: tokio::sync::OnceCell<Arc<T>>,
    failed_at: Mutex<Option<Instant>>,
    retry_after: Duration,
}

impl<T> Default for LazyCache<T> {
    fn default() -> Self {
        LazyCache::retrying_after(RETRY_OPEN_AFTER)
    }
}

impl<T> LazyCache<T> {
    fn retrying_after(retry_after: Duration) -> Self {
        LazyCache {
            cell: tokio::sync::OnceCell::new(),
            failed_at: Mutex::new(None),
            retry_after,
        }
    }

    /// The cache, opened by `open` if it is not yet; `None` while it cannot be.
    pub async fn get<F, Fut>(&self, what: &str, open: F) -> Option<&T>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<T>, String>>,
    {
        if let Some(cache) = self.cell.get() {
            return Some(cache);
        }
        let failed_at = || self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
        let attempt = || async {
            // Readers queued behind a failed attempt do not each try again.
            if failed_at().is_some_and(|at| at.elapsed() < self.retry_after) {
                return Err(None);
            }
            open().await.map_err(|e| {
                *failed_at() = Some(Instant::now());
                Some(e)
            })
        };
        match self.cell.get_or_try_init(attempt).await {
            Ok(cache) => Some(cache),
            Err(Some(e)) => {
                tracing::warn!(error = %e, retry_in_ms = self.retry_after.as_millis(), "{what} are read uncached");
                None
            }
            Err(None) => None,
        }
    }
}

/// Runs `step` on `owner` every 250 ms while anything else holds it: a cache's housekeeping
/// (applying queued changes, so the subscription's queue never fills while no node reads).
pub fn spawn_housekeeping<T, F, Fut>(owner: Arc<T>, step: F)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(&owner);
    drop(owner);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            let Some(owner) = weak.upgrade() else { return };
            step(owner).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    #[tokio::test]
    async fn a_failed_open_is_tried_again_only_after_its_wait() {
        let cache: LazyCache<u32> = LazyCache::retrying_after(Duration::from_millis(200));
        let tries = AtomicU32::new(0);
        let failing = || async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err::<Arc<u32>, _>("the bus is away".to_owned())
        };
        let opening = || async {
            tries.fetch_add(1, Ordering::Relaxed);
            Ok::<_, String>(Arc::new(7))
        };
        assert_eq!(cache.get("test", failing).await, None);
        // Within the wait: uncached at once, not another attempt.
        assert_eq!(cache.get("test", opening).await, None);
        assert_eq!(tries.load(Ordering::Relaxed), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(cache.get("test", opening).await, Some(&7));
        assert_eq!(tries.load(Ordering::Relaxed), 2);
        // Open: kept, never opened again.
        assert_eq!(cache.get("test", failing).await, Some(&7));
        assert_eq!(tries.load(Ordering::Relaxed), 2);
    }
}
