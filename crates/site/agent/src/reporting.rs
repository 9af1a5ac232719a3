//! What the LAN loops (proxyDHCP, TFTP, HTTP boot) and the NATS link share: the counters they
//! add to, the boot events they emit, and the operator's on/off switch they obey. The loops
//! write here and the link reads (and sets the switch); neither knows the other, so this module
//! imports nothing of the crate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use bootfleet_api::proto;
use bootfleet_telemetry::{counter, plain_counter, LabeledCounter, PlainCounter};
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

/// The distributor's series on `/metrics` (one agent per process; labels from fixed sets,
/// never a MAC or a file name).
struct LanMetrics {
    dhcp_answers: LabeledCounter<1>,
    dhcp_silences: LabeledCounter<1>,
    tftp_transfers: LabeledCounter<1>,
    tftp_bytes: PlainCounter,
    http_boot_responses: LabeledCounter<1>,
    http_boot_bytes: PlainCounter,
    http_boot_incomplete: PlainCounter,
}

static METRICS: LazyLock<LanMetrics> = LazyLock::new(|| {
    LanMetrics {
    dhcp_answers: counter(
        "dhcp_answers",
        "proxyDHCP answers sent, by client architecture",
        ["arch"],
    ),
    dhcp_silences: counter(
        "dhcp_silences",
        "DHCP requests left unanswered, by reason",
        ["reason"],
    ),
    tftp_transfers: counter(
        "tftp_transfers",
        "TFTP requests by outcome: completed, declined (ended by the client after negotiation), failed, refused, malformed",
        ["outcome"],
    ),
    tftp_bytes: plain_counter("tftp_bytes", "Bytes TFTP clients acknowledged"),
    http_boot_responses: counter(
        "http_boot_responses",
        "HTTP boot responses by status",
        ["status"],
    ),
    http_boot_bytes: plain_counter(
        "http_boot_bytes",
        "Body bytes HTTP boot handed to connections",
    ),
    http_boot_incomplete: plain_counter(
        "http_boot_incomplete",
        "HTTP boot bodies that ended early (the client left, or the file could not be read)",
    ),
}
});

/// Puts the distributor's series on the page before its first client.
pub fn register_metrics() {
    LazyLock::force(&METRICS);
}

/// How a TFTP request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TftpOutcome {
    Completed,
    /// Ended by the client after option negotiation (EDK2's size probe).
    Declined,
    Failed,
    Refused,
    Malformed,
}

/// What the DHCP and TFTP loops did; the heartbeat reports the answered/completed counts.
/// The methods also count for `/metrics`, with the labels the plain counts lack.
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

impl Counters {
    /// A proxyDHCP answer sent to a client of `arch` (`ClientArch::name`).
    pub fn dhcp_answered(&self, arch: &'static str) {
        self.dhcp_answered.fetch_add(1, Ordering::Relaxed);
        METRICS.dhcp_answers.inc([arch]);
    }

    /// A DHCP request left unanswered, for `reason` (`IgnoreReason::kind`, or the socket
    /// loop's own: `switched_off`, `machine_ignored`, ...).
    pub fn dhcp_silent(&self, reason: &'static str) {
        self.dhcp_ignored.fetch_add(1, Ordering::Relaxed);
        METRICS.dhcp_silences.inc([reason]);
    }

    /// A datagram that is not DHCP at all.
    pub fn dhcp_malformed(&self) {
        self.dhcp_malformed.fetch_add(1, Ordering::Relaxed);
        METRICS.dhcp_silences.inc(["malformed"]);
    }

    /// A TFTP request that ended as `outcome` after `bytes` acknowledged bytes.
    pub fn tftp(&self, outcome: TftpOutcome, bytes: u64) {
        let (count, label) = match outcome {
            TftpOutcome::Completed => (&self.tftp_completed, "completed"),
            TftpOutcome::Declined => (&self.tftp_declined, "declined"),
            TftpOutcome::Failed => (&self.tftp_failed, "failed"),
            TftpOutcome::Refused => (&self.tftp_refused, "refused"),
            TftpOutcome::Malformed => (&self.tftp_malformed, "malformed"),
        };
        count.fetch_add(1, Ordering::Relaxed);
        METRICS.tftp_transfers.inc([label]);
        if outcome == TftpOutcome::Completed {
            self.tftp_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        METRICS.tftp_bytes.inc_by(bytes);
    }

    /// An HTTP boot response with `status`.
    pub fn http_response(&self, status: u16) {
        // Statuses come from this crate's own small set, not from clients.
        METRICS.http_boot_responses.inc([&status.to_string()]);
    }

    /// An HTTP boot body that handed out `sent` of `planned` bytes.
    pub fn http_body(&self, sent: u64, planned: u64) {
        METRICS.http_boot_bytes.inc_by(sent);
        if sent < planned {
            METRICS.http_boot_incomplete.inc();
        }
    }
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
