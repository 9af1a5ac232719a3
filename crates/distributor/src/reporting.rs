//! What the LAN loops (proxyDHCP, TFTP, HTTP boot) and the NATS link share: the counters they
//! add to, the boot events they emit, and the operator's on/off switch they obey. The loops
//! write here and the link reads (and sets the switch); neither knows the other, so this module
//! imports nothing of the crate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bootfleet_api::proto;
use tokio::sync::mpsc;

/// How many boot events may wait for the bus; more are dropped (and counted), never blocking
/// the DHCP and TFTP loops.
const EVENT_BUFFER: usize = 4096;

/// Where the DHCP and TFTP loops report what they did.
#[derive(Clone, Debug)]
pub struct Events {
    artifact_id: String,
    tx: Option<mpsc::Sender<proto::BootEvent>>,
    pub dropped: Arc<AtomicU64>,
}

impl Events {
    /// Events that go nowhere but the log (no NATS configured).
    pub fn log_only() -> Events {
        Events {
            artifact_id: String::new(),
            tx: None,
            dropped: Arc::default(),
        }
    }

    /// Events of site `artifact_id`, queued for whoever publishes them from the receiver.
    pub fn queued(artifact_id: String) -> (Events, mpsc::Receiver<proto::BootEvent>) {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let events = Events {
            artifact_id,
            tx: Some(tx),
            dropped: Arc::default(),
        };
        (events, rx)
    }

    pub fn emit(&self, mut event: proto::BootEvent) {
        let Some(tx) = &self.tx else { return };
        event.artifact_id = self.artifact_id.clone();
        event.at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
            .unwrap_or(0);
        if tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the DHCP and TFTP loops did; the heartbeat reports the answered/completed counts.
#[derive(Debug, Default)]
pub struct Counters {
    pub dhcp_answered: AtomicU64,
    pub dhcp_ignored: AtomicU64,
    pub dhcp_malformed: AtomicU64,
    pub tftp_completed: AtomicU64,
    /// Ended by the client after option negotiation (EDK2's size probe).
    pub tftp_declined: AtomicU64,
    pub tftp_failed: AtomicU64,
    pub tftp_refused: AtomicU64,
    pub tftp_malformed: AtomicU64,
    pub tftp_bytes: AtomicU64,
}

/// Whether to answer PXE clients (the operator's switch). Starts on.
#[derive(Clone, Debug)]
pub struct Switch(Arc<AtomicBool>);

impl Default for Switch {
    fn default() -> Self {
        Switch(Arc::new(AtomicBool::new(true)))
    }
}

impl Switch {
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The operator's choice, as the NATS link receives it.
    pub(crate) fn set(&self, on: bool) {
        if self.0.swap(on, Ordering::Relaxed) != on {
            tracing::info!(on, "operator switched the distributor");
        }
    }
}

/// What the loops share besides the sockets.
#[derive(Clone, Debug)]
pub struct Reporting {
    pub events: Events,
    pub switch: Switch,
    pub counters: Arc<Counters>,
}
