//! The gateway's copies of machines' rendered files (`GET /api/machines/:id/files/:template`:
//! an installer's kickstart, user-data, ...), so a node that reads its file again is answered
//! here rather than by the `machines` service.
//!
//! - A copy is kept per machine, template and machine token, and served only to a request
//!   with that same token, which the service verified when it rendered the copy; the token's
//!   expiry is checked again on every hit. Operators' reads always go to the service.
//! - The `machines` service announces every write of a machine, a profile or a site's policy on
//!   [`subjects::MACHINE_CHANGES`] before it answers it; [`crate::read_cache`] says why a copy
//!   is then never served after that answer. A copy lives [`crate::read_cache::MAX_AGE`] at
//!   most, so the token rendered into it is at most that much older than a fresh render's.
//! - The service writes a fetch it answers into the machine's timeline before answering. A
//!   fetch answered from a copy is reported to the service after it, on
//!   [`subjects::MACHINE_FETCHES`], within [`REPORT_EVERY`]: the fetches of one copy in that
//!   time become one report with their count, so a node that loops on its file cannot flood
//!   the timeline's writer.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bootfleet_api::machines::MACHINE_TOKEN_PREFIX;
use bootfleet_api::{proto, subjects};
use prost::Message;

use crate::read_cache::{Dropped, ReadCache, Weighed};

/// How often the fetches answered from copies are reported.
pub const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Whose copy: the machine, its template and the machine token that read it.
#[derive(Clone, PartialEq, Eq, Hash)]
struct FileKey {
    machine: String,
    template: String,
    token: String,
}

/// One rendered file as the service answered it, and the fetches answered from it since the
/// last report.
#[derive(Debug)]
pub struct FileCopy {
    pub text: String,
    /// As the service answered it, so a copy is answered as the service answered.
    pub content_type: String,
    mac: String,
    site: String,
    template: String,
    unreported: AtomicU32,
    /// When the first unreported fetch was answered (unix ms).
    first_at_ms: AtomicI64,
}

impl Weighed for Arc<FileCopy> {
    fn bytes(&self) -> usize {
        self.text.len()
            + self.content_type.len()
            + self.mac.len()
            + self.site.len()
            + self.template.len()
    }
}

/// The rendered files kept, and the copies with fetches to report.
pub struct MachineFiles {
    cache: ReadCache<FileKey, Arc<FileCopy>>,
    client: async_nats::Client,
    unreported: Mutex<Vec<Arc<FileCopy>>>,
}

impl std::fmt::Debug for MachineFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineFiles").finish_non_exhaustive()
    }
}

/// The copies a machine change drops: the machine's (its id is the payload), or every one.
fn dropped(message: &async_nats::Message) -> Dropped<FileKey> {
    match std::str::from_utf8(&message.payload) {
        Ok("") | Err(_) => Dropped::All,
        Ok(id) => {
            let id = id.to_owned();
            Dropped::Matching(Box::new(move |key: &FileKey| key.machine == id))
        }
    }
}

/// The expiry a machine token carries (`bfm1.<id>.<exp>.<signature>`), unix seconds.
fn token_expiry(token: &str) -> Option<u64> {
    let rest = token.strip_prefix(MACHINE_TOKEN_PREFIX)?;
    let mut parts = rest.rsplitn(3, '.');
    let _signature = parts.next()?;
    parts.next()?.parse().ok()
}

fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

impl MachineFiles {
    /// Subscribes to the machine changes (see [`ReadCache::open`]) and starts reporting.
    pub async fn open(bus: &bootfleet_bus::Bus) -> Result<Arc<MachineFiles>, String> {
        let files = Arc::new(MachineFiles {
            cache: ReadCache::open(bus, subjects::MACHINE_CHANGES, dropped).await?,
            client: bus.client().clone(),
            unreported: Mutex::new(Vec::new()),
        });
        crate::read_cache::spawn_housekeeping(files.clone(), |files| async move {
            files.cache.apply_changes();
            files.report().await;
        });
        Ok(files)
    }

    /// The epoch to hand back to [`MachineFiles::keep`] with a file rendered after this call.
    pub fn epoch(&self) -> u64 {
        self.cache.epoch()
    }

    /// The copy of `template` of machine `id` that `token` read before, if it is still good;
    /// the fetch it answers is counted for the next report.
    pub fn get(&self, id: &str, template: &str, token: &str) -> Option<Arc<FileCopy>> {
        let now = now();
        if token_expiry(token).is_none_or(|exp| exp <= now.as_secs()) {
            return None;
        }
        let key = FileKey {
            machine: id.to_owned(),
            template: template.to_owned(),
            token: token.to_owned(),
        };
        let copy = self.cache.get(&key)?;
        if copy.unreported.fetch_add(1, Ordering::AcqRel) == 0 {
            let at = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
            copy.first_at_ms.store(at, Ordering::Release);
            self.unreported
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(copy.clone());
        }
        Some(copy)
    }

    /// Keeps the file the service rendered for machine `id` and answered to `token`.
    pub fn keep(
        &self,
        id: &str,
        template: &str,
        token: &str,
        reply: &proto::MachinesReply,
        epoch: u64,
    ) {
        if reply.mac.is_empty() || reply.artifact_id.is_empty() {
            return;
        }
        let copy = FileCopy {
            text: reply.body.clone(),
            content_type: reply.content_type.clone(),
            mac: reply.mac.clone(),
            site: reply.artifact_id.clone(),
            template: template.to_owned(),
            unreported: AtomicU32::new(0),
            first_at_ms: AtomicI64::new(0),
        };
        let key = FileKey {
            machine: id.to_owned(),
            template: template.to_owned(),
            token: token.to_owned(),
        };
        self.cache.keep(key, Arc::new(copy), epoch);
    }

    /// Publishes one report per copy with unreported fetches.
    async fn report(&self) {
        let copies =
            std::mem::take(&mut *self.unreported.lock().unwrap_or_else(|p| p.into_inner()));
        for copy in copies {
            let count = copy.unreported.swap(0, Ordering::AcqRel);
            if count == 0 {
                continue;
            }
            let event = proto::BootEvent {
                artifact_id: copy.site.clone(),
                kind: "template_fetched".to_owned(),
                mac: copy.mac.clone(),
                file: copy.template.clone(),
                bytes: copy.text.len() as u64,
                at_ms: copy.first_at_ms.load(Ordering::Acquire),
                count,
                ..Default::default()
            };
            let payload = event.encode_to_vec().into();
            if let Err(e) = self
                .client
                .publish(subjects::MACHINE_FETCHES, payload)
                .await
            {
                tracing::warn!(mac = %copy.mac, count, error = %e, "cannot report fetches answered from the gateway's copy");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_expiry() {
        assert_eq!(
            token_expiry("bfm1.6f1c2a9e-0000-4000-8000-000000000001.1900000000.ab12"),
            Some(1_900_000_000)
        );
        for bad in ["", "bfm1.", "bfm1.x.y", "bfm1.id.notanumber.sig", "eyJ.a.b"] {
            assert_eq!(token_expiry(bad), None, "{bad}");
        }
    }
}
