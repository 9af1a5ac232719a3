//! Following boot events as they happen. A site's distributor publishes each DHCP answer and
//! each file served on `bootfleet.v1.events.boot.<site>`; an operator's stream (the gateway's
//! server-sent events) follows one site, and optionally one MAC.
//!
//! A slow reader never makes memory grow: a task takes every message off the subscription at
//! once and hands it over through a bounded queue. What finds the queue full is dropped and
//! counted, and the reader gets [`BootEventItem::Missed`] with that count where the gap is.

use std::time::Duration;

use bootfleet_api::{proto, subjects};
use futures_util::StreamExt;
use prost::Message;
use tokio::sync::mpsc;

use crate::{sync, Bus, BusError};

/// Boot events are a few hundred bytes; anything much larger is not one (a site's login may
/// publish what it likes on its subject) and is skipped rather than queued.
const MAX_EVENT_BYTES: usize = 4096;

/// What a [`BootEvents`] stream yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootEventItem {
    /// An event of the site (its `artifact_id` is the site the subject names).
    Event(proto::BootEvent),
    /// This many events were dropped here because the reader fell behind.
    Missed(u64),
}

/// One site's boot events, from the moment [`Bus::boot_events`] returned until the stream is
/// dropped (which unsubscribes) or the bus connection closes.
#[derive(Debug)]
pub struct BootEvents {
    rx: mpsc::Receiver<BootEventItem>,
    forwarder: tokio::task::JoinHandle<()>,
}

impl BootEvents {
    /// The next event or gap; `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<BootEventItem> {
        self.rx.recv().await
    }
}

impl Drop for BootEvents {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

/// Which events a stream keeps.
#[derive(Clone, Debug)]
struct Filter {
    site: String,
    /// Lowercase, colon-separated.
    mac: Option<String>,
}

impl Filter {
    /// The event in `payload`, if it is one this stream keeps.
    fn keep(&self, payload: &[u8]) -> Option<proto::BootEvent> {
        if payload.len() > MAX_EVENT_BYTES {
            return None;
        }
        let mut event = proto::BootEvent::decode(payload).ok()?;
        // Any bytes decode as some message; an event says what happened.
        if event.kind.is_empty() {
            return None;
        }
        if let Some(mac) = &self.mac {
            if !event.mac.eq_ignore_ascii_case(mac) {
                return None;
            }
        }
        // The subject names the site (a login may publish only its own); the body is only
        // what the publisher says.
        event.artifact_id.clone_from(&self.site);
        Some(event)
    }
}

impl Bus {
    /// Follows the boot events of `site` (only `mac`'s, if given: lowercase, colon-separated),
    /// holding at most `queue` of them for a reader that falls behind. The server has the
    /// subscription when this returns: every event published afterwards reaches the stream.
    pub async fn boot_events(
        &self,
        site: &str,
        mac: Option<String>,
        queue: usize,
    ) -> Result<BootEvents, BusError> {
        let subject = subjects::boot_events(site);
        let subscriber = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|source| BusError::Subscribe {
                subject: subject.clone(),
                source,
            })?;
        sync(&self.client, self.timeout).await?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let filter = Filter {
            site: site.to_owned(),
            mac,
        };
        let payloads = subscriber.map(|message| message.payload);
        let forwarder = tokio::spawn(forward(payloads, filter, tx));
        Ok(BootEvents { rx, forwarder })
    }
}

/// Moves the subscription's messages into the queue without ever waiting for the reader; a
/// gap is reported as soon as there is room for the notice, in its place among the events.
async fn forward(
    mut payloads: impl futures_util::Stream<Item = bytes::Bytes> + Unpin,
    filter: Filter,
    tx: mpsc::Sender<BootEventItem>,
) {
    let mut missed: u64 = 0;
    loop {
        tokio::select! {
            permit = tx.reserve(), if missed > 0 => match permit {
                Ok(permit) => {
                    permit.send(BootEventItem::Missed(missed));
                    missed = 0;
                }
                Err(_) => return,
            },
            payload = payloads.next() => {
                let Some(payload) = payload else { break };
                let Some(event) = filter.keep(&payload) else { continue };
                if missed > 0 {
                    missed += 1;
                    continue;
                }
                match tx.try_send(BootEventItem::Event(event)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => missed = 1,
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            () = tx.closed() => return,
        }
    }
    // The subscription ended: the reader still learns of a last gap.
    if missed > 0 {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tx.send(BootEventItem::Missed(missed)),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> bytes::Bytes {
        proto::BootEvent {
            kind: "tftp_served".into(),
            detail: n.to_string(),
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    }

    fn number(item: Option<BootEventItem>) -> usize {
        match item {
            Some(BootEventItem::Event(e)) => e.detail.parse().expect("numbered"),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// 20 events for a reader that takes none: 4 wait in the queue, 16 are dropped and counted,
    /// and the count comes in their place, as soon as there is room for it.
    #[tokio::test]
    async fn a_reader_that_falls_behind_gets_the_gap_counted_in_its_place() {
        let (consumed_tx, consumed) = tokio::sync::oneshot::channel();
        let mut consumed_tx = Some(consumed_tx);
        // The 20 events, then word that the forwarder took them all, then an open end.
        let (more_tx, more_rx) = mpsc::unbounded_channel::<bytes::Bytes>();
        let payloads = futures_util::stream::iter((0..20).map(numbered))
            .chain(futures_util::stream::poll_fn(move |_| {
                if let Some(tx) = consumed_tx.take() {
                    let _ = tx.send(());
                }
                std::task::Poll::Ready(None::<bytes::Bytes>)
            }))
            .chain(tokio_stream_of(more_rx));
        let (tx, mut rx) = mpsc::channel(4);
        let filter = Filter {
            site: "a".into(),
            mac: None,
        };
        let forwarder = tokio::spawn(forward(Box::pin(payloads), filter, tx));
        consumed.await.expect("the forwarder took every message");
        for n in 0..4 {
            assert_eq!(number(rx.recv().await), n);
        }
        assert_eq!(rx.recv().await, Some(BootEventItem::Missed(16)));
        more_tx.send(numbered(20)).expect("send");
        assert_eq!(number(rx.recv().await), 20);
        // The source ends: so does the stream.
        drop(more_tx);
        assert_eq!(rx.recv().await, None);
        forwarder.await.expect("forwarder ends");
    }

    /// An unbounded receiver as a stream (tokio's own adapter is in a crate we do not use).
    fn tokio_stream_of(
        mut rx: mpsc::UnboundedReceiver<bytes::Bytes>,
    ) -> impl futures_util::Stream<Item = bytes::Bytes> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    fn encoded(mac: &str, artifact_id: &str) -> Vec<u8> {
        proto::BootEvent {
            kind: "dhcp_answered".into(),
            mac: mac.into(),
            artifact_id: artifact_id.into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn keeps_the_sites_events_of_its_mac_named_by_the_subject() {
        let all = Filter {
            site: "a".into(),
            mac: None,
        };
        let event = all.keep(&encoded("52:54:00:12:34:56", "b")).expect("kept");
        assert_eq!(event.artifact_id, "a", "the subject's site, not the body's");
        let one = Filter {
            site: "a".into(),
            mac: Some("52:54:00:12:34:56".into()),
        };
        assert!(one.keep(&encoded("52:54:00:12:34:56", "a")).is_some());
        assert!(one.keep(&encoded("52:54:00:AB:34:56", "a")).is_none());
        assert!(one.keep(&encoded("", "a")).is_none());
        assert!(all.keep(b"\xff\xff not protobuf").is_none());
        assert!(all.keep(b"").is_none(), "no kind, no event");
        let huge = proto::BootEvent {
            detail: "x".repeat(MAX_EVENT_BYTES),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(all.keep(&huge).is_none());
    }
}
