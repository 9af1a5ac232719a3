//! The gateway's copy of recently read scripts, so the node-facing `GET /api/<scripts>/:id`
//! (every booting node fetches its scripts) skips the NATS round trip, the service and the
//! database while nothing changes. The scripts services publish
//! `bootfleet.v1.events.changed.<kind>` (the id) before they answer an update or a delete;
//! [`crate::read_cache`] says why a copy is then never served after the change's answer.

use std::sync::Arc;

use bootfleet_api::proto;
use bootfleet_api::subjects::{self, ScriptKind};

use crate::read_cache::{Dropped, ReadCache, Weighed};

impl Weighed for Arc<proto::Script> {
    fn bytes(&self) -> usize {
        self.text.len()
    }
}

/// Recently read scripts, dropped on their change events.
#[derive(Debug)]
pub struct ScriptCache(ReadCache<(ScriptKind, String), Arc<proto::Script>>);

/// The copy a script change event drops: the script its subject's kind and its payload name.
fn dropped(message: &async_nats::Message) -> Dropped<(ScriptKind, String)> {
    let kind = message
        .subject
        .rsplit('.')
        .next()
        .and_then(|name| ScriptKind::ALL.into_iter().find(|k| k.name() == name));
    match (kind, std::str::from_utf8(&message.payload)) {
        (Some(kind), Ok(id)) => Dropped::Key((kind, id.to_owned())),
        _ => Dropped::All,
    }
}

impl ScriptCache {
    /// Subscribes to the change events and waits until nats-server has the subscription, so
    /// every change committed after this returns is seen; a task applies the queued changes
    /// now and then, so the subscription's queue never fills while no node reads.
    pub async fn open(bus: &bootfleet_bus::Bus) -> Result<Arc<ScriptCache>, String> {
        let cache = Arc::new(ScriptCache(
            ReadCache::open(bus, subjects::ALL_SCRIPT_CHANGES, dropped).await?,
        ));
        crate::read_cache::spawn_housekeeping(
            cache.clone(),
            |c| async move { c.0.apply_changes() },
        );
        Ok(cache)
    }

    /// The epoch to hand back to [`ScriptCache::keep`] with a copy fetched after this call.
    pub fn epoch(&self) -> u64 {
        self.0.epoch()
    }

    /// The kept copy of `id`, if it is there and still good.
    pub fn get(&self, kind: ScriptKind, id: &str) -> Option<Arc<proto::Script>> {
        self.0.get(&(kind, id.to_owned()))
    }

    /// Keeps `script`, fetched from its service after [`ScriptCache::epoch`] gave `epoch`,
    /// unless a change was applied meanwhile.
    pub fn keep(&self, kind: ScriptKind, script: proto::Script, epoch: u64) {
        self.0
            .keep((kind, script.id.clone()), Arc::new(script), epoch);
    }
}
