//! The gateway's copy of recently read scripts, so the node-facing `GET /api/<scripts>/:id`
//! (every booting node fetches its scripts) skips the NATS round trip, the service and the
//! database while nothing changes.
//!
//! Why a copy is never served after its change was acknowledged: the scripts services publish
//! `bootfleet.v1.events.changed.<kind>` (the id) before they answer an update or a delete, on the
//! same connection as the answer. The gateway's subscription to those events lives on its one
//! bus connection, which receives them in the server's order, so the event is in the
//! subscription's queue before the write's answer is; every lookup first applies whatever is
//! queued. Whichever gateway relayed the write, the copy is gone before a read that follows the
//! acknowledgment looks. Gateway replicas on other nodes of a NATS cluster get the event through
//! the cluster's routes, a fraction of a millisecond behind (docs/reliability.md). A copy read
//! from the service while a change was on its way is not kept (an epoch counter), and after the
//! bus reconnects (events may have been missed) the cache starts empty. Whatever happens, a copy
//! is dropped after [`MAX_AGE`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bootfleet_api::proto;
use bootfleet_api::subjects::{self, ScriptKind};
use futures_util::{FutureExt, StreamExt};

/// How long a copy is served at most, whatever the events say.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// Copies kept at most, and their texts' bytes at most; the oldest go first.
const MAX_ENTRIES: usize = 4096;
const MAX_BYTES: usize = 32 << 20;

#[derive(Debug)]
struct Entry {
    script: Arc<proto::Script>,
    at: Instant,
}

#[derive(Debug, Default)]
struct Copies {
    entries: HashMap<(ScriptKind, String), Entry>,
    bytes: usize,
}

impl Copies {
    fn remove(&mut self, key: &(ScriptKind, String)) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.script.text.len();
        }
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
struct State {
    copies: Copies,
    /// The change events not applied yet.
    changes: async_nats::Subscriber,
    /// The connection's connect count when the cache was last known complete.
    connects: u64,
}

/// Recently read scripts, dropped on their change events.
#[derive(Debug)]
pub struct ScriptCache {
    client: async_nats::Client,
    state: Mutex<State>,
    /// Raised by every change applied: a copy fetched across a change is not kept.
    epoch: AtomicU64,
}

impl ScriptCache {
    /// Subscribes to the change events and waits until nats-server has the subscription, so
    /// every change committed after this returns is seen.
    pub async fn open(bus: &bootfleet_bus::Bus) -> Result<ScriptCache, String> {
        let client = bus.client().clone();
        let changes = client
            .subscribe(subjects::ALL_SCRIPT_CHANGES)
            .await
            .map_err(|e| format!("cannot subscribe to script changes: {e}"))?;
        bus.sync().await.map_err(|e| e.to_string())?;
        let connects = client.statistics().connects.load(Ordering::Relaxed);
        Ok(ScriptCache {
            client,
            state: Mutex::new(State {
                copies: Copies::default(),
                changes,
                connects,
            }),
            epoch: AtomicU64::new(0),
        })
    }

    /// The epoch to hand back to [`ScriptCache::keep`] with a copy fetched after this call.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The kept copy of `id`, if it is there and still good.
    pub fn get(&self, kind: ScriptKind, id: &str) -> Option<Arc<proto::Script>> {
        let mut state = self.current()?;
        let key = (kind, id.to_owned());
        match state.copies.entries.get(&key) {
            Some(entry) if entry.at.elapsed() < MAX_AGE => Some(entry.script.clone()),
            Some(_) => {
                state.copies.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Keeps `script`, fetched from its service after [`ScriptCache::epoch`] gave `epoch`,
    /// unless a change was applied meanwhile.
    pub fn keep(&self, kind: ScriptKind, script: proto::Script, epoch: u64) {
        let size = script.text.len();
        if size > MAX_BYTES / 64 {
            return;
        }
        let Some(mut state) = self.current() else {
            return;
        };
        if self.epoch() != epoch {
            return;
        }
        let key = (kind, script.id.clone());
        state.copies.remove(&key);
        while state.copies.entries.len() >= MAX_ENTRIES || state.copies.bytes + size > MAX_BYTES {
            state.copies.evict_oldest();
        }
        state.copies.bytes += size;
        state.copies.entries.insert(
            key,
            Entry {
                script: Arc::new(script),
                at: Instant::now(),
            },
        );
    }

    /// The state with every queued change applied; `None` (and nothing kept) while the bus is
    /// not connected. After a reconnect the copies are dropped: events may have been missed.
    fn current(&self) -> Option<std::sync::MutexGuard<'_, State>> {
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
            let kind = message
                .subject
                .rsplit('.')
                .next()
                .and_then(|name| ScriptKind::ALL.into_iter().find(|k| k.name() == name));
            match (kind, std::str::from_utf8(&message.payload)) {
                (Some(kind), Ok(id)) => state.copies.remove(&(kind, id.to_owned())),
                // Not understood: nothing kept can be trusted.
                _ => state.copies.clear(),
            }
        }
        Some(state)
    }

    /// Applies the queued changes now and then, so the subscription's queue never fills while
    /// no node reads.
    pub fn spawn_drain(cache: Arc<ScriptCache>) {
        let weak = Arc::downgrade(&cache);
        drop(cache);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                let Some(cache) = weak.upgrade() else { return };
                drop(cache.current());
            }
        });
    }
}
