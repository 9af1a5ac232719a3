//! The measurements, run on a tokio runtime inside the client namespace against whichever
//! server is up. Every loop is bounded in count and in time.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dhcp_client::{DhcpClient, Firmware, PxeIdentity, Retry};
use crate::tftp_client::{self, GetOptions};

/// SplitMix64: deterministic, good enough for file contents and identities.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Which firmware the simulated clients play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Every other client BIOS (arch 0), the others x64 UEFI (arch 7).
    Mixed,
    Bios,
    Uefi,
}

/// Fresh MAC/xid/UUID per simulated client.
#[derive(Debug)]
pub struct Identities {
    seed: u64,
    next: AtomicU64,
    mix: Mix,
}

impl Identities {
    pub fn new(seed: u64, mix: Mix) -> Identities {
        Identities {
            seed,
            next: AtomicU64::new(1),
            mix,
        }
    }

    pub fn next(&self) -> PxeIdentity {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut state = self.seed ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let r = splitmix(&mut state);
        let [_, _, _, _, a, b, c, d] = n.to_be_bytes();
        let mut uuid = [0u8; 16];
        uuid[..8].copy_from_slice(&splitmix(&mut state).to_le_bytes());
        uuid[8..].copy_from_slice(&splitmix(&mut state).to_le_bytes());
        PxeIdentity {
            // Locally administered, unicast.
            mac: [0x02, 0xbf, a, b, c, d],
            // Distinct per client: the low 32 bits of the counter, scrambled by the seed's.
            xid: (n as u32) ^ (r as u32 & 0xfff0_0000),
            uuid,
            firmware: match self.mix {
                Mix::Bios => Firmware::Bios,
                Mix::Uefi => Firmware::UefiX64,
                Mix::Mixed if n.is_multiple_of(2) => Firmware::Bios,
                Mix::Mixed => Firmware::UefiX64,
            },
        }
    }
}

/// What every measurement needs, shared by the simulated clients.
#[derive(Debug)]
pub struct Ctx {
    pub dhcp: DhcpClient,
    pub ids: Identities,
    pub server_ip: Ipv4Addr,
    pub boot_content: Arc<Vec<u8>>,
    pub big_file: String,
    pub big_content: Arc<Vec<u8>>,
    pub ready_file: String,
    pub ready_content: Arc<Vec<u8>>,
    pub blksize: u16,
}

fn tftp_addr(ip: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(ip, 69)
}

/// Waits (at most `within`) until the server answers a PXE DISCOVER and a TFTP read.
pub async fn wait_ready(ctx: &Ctx, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        let quick = Retry {
            timeout: Duration::from_millis(300),
            attempts: 1,
        };
        match ctx.dhcp.exchange(&ctx.ids.next(), quick).await {
            Ok(_) => {
                let got = tftp_client::get(
                    tftp_addr(ctx.server_ip),
                    &ctx.ready_file,
                    &ctx.ready_content,
                    GetOptions {
                        blksize: Some(ctx.blksize),
                        windowsize: None,
                        tsize: true,
                        timeout: Duration::from_millis(300),
                        max_retries: 2,
                        deadline: Duration::from_secs(3),
                    },
                )
                .await;
                match got {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("tftp: {e}"),
                }
            }
            Err(e) => last = format!("dhcp: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// DISCOVER sent to OFFER received, microseconds.
    pub offer_us: Vec<f64>,
    /// DISCOVER sent to boot file known (after the udp/4011 round trip if one was needed).
    pub boot_file_us: Vec<f64>,
    pub lost: u32,
    pub boot_server_rounds: u32,
}

/// `n` sequential PXE exchanges, one attempt each (a missing answer within 1 s is a loss).
pub async fn latency(ctx: &Ctx, n: u32) -> Latency {
    let mut out = Latency::default();
    let once = Retry {
        timeout: Duration::from_secs(1),
        attempts: 1,
    };
    for _ in 0..n {
        match ctx.dhcp.exchange(&ctx.ids.next(), once).await {
            Ok(ex) => {
                out.offer_us.push(ex.offer_after.as_secs_f64() * 1e6);
                out.boot_file_us
                    .push(ex.boot_file_after.as_secs_f64() * 1e6);
                if ex.used_boot_server {
                    out.boot_server_rounds += 1;
                }
            }
            Err(_) => out.lost += 1,
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct Throughput {
    pub mb_per_s: f64,
    pub windowsize: u16,
    pub blksize: u16,
    pub timeouts: u32,
    /// Whether the server sent an OACK; blocks seen twice or out of order.
    pub oack: bool,
    pub unexpected_blocks: u32,
}

/// One read of the big file with the given window; MB/s as 10^6 bytes per second.
pub async fn throughput(ctx: &Ctx, windowsize: Option<u16>) -> Result<Throughput, String> {
    let r = tftp_client::get(
        tftp_addr(ctx.server_ip),
        &ctx.big_file,
        &ctx.big_content,
        GetOptions {
            blksize: Some(ctx.blksize),
            windowsize,
            tsize: true,
            timeout: Duration::from_secs(1),
            max_retries: 5,
            deadline: Duration::from_secs(120),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(Throughput {
        mb_per_s: r.bytes as f64 / r.elapsed.as_secs_f64() / 1e6,
        windowsize: r.windowsize,
        blksize: r.blksize,
        timeouts: r.timeouts,
        oack: r.oack,
        unexpected_blocks: r.unexpected_blocks,
    })
}

#[derive(Debug, Clone, Default)]
pub struct Storm {
    pub clients: u32,
    /// Windowsize the TFTP clients asked for (1: lock-step, no option sent).
    pub windowsize: u16,
    /// Per client that got an OFFER: first DISCOVER to the OFFER on its socket (kernel
    /// timestamp), ms: the server's share.
    pub offer_wire_ms: Vec<f64>,
    /// The same, to the OFFER read by the client's receiver task, ms: adds the client's delay.
    pub offer_task_ms: Vec<f64>,
    /// From the first client's start to the last client's end (success or failure).
    pub total: Duration,
    pub ok: u32,
    pub failures: BTreeMap<String, u32>,
    /// Per-client time from its first DISCOVER to its last byte, successful clients only.
    pub per_client_ms: Vec<f64>,
    pub discover_retransmits: u32,
    pub tftp_timeouts: u32,
    pub boot_server_rounds: u32,
}

impl Storm {
    pub fn failed(&self) -> u32 {
        self.failures.values().sum()
    }
}

enum ClientEnd {
    Ok {
        took: Duration,
        discovers: u32,
        timeouts: u32,
        boot_server: bool,
        offer: Offer,
    },
    Failed(String, Option<Offer>),
}

/// When a storm client's OFFER came: (kernel timestamp, receiver task), after its first DISCOVER.
type Offer = (Option<Duration>, Duration);

/// `n` simulated PXE clients, started evenly over `spread`, each doing the proxyDHCP exchange
/// (with the udp/4011 round where its firmware takes it) then a TFTP read of the boot file it
/// was given, lock-step or asking `windowsize` (> 1). Bounded by `limit`.
pub async fn storm(
    ctx: Arc<Ctx>,
    n: u32,
    windowsize: u16,
    spread: Duration,
    limit: Duration,
) -> Storm {
    let start = tokio::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let ctx = ctx.clone();
        let offset = spread.mul_f64(f64::from(i) / f64::from(n.max(1)));
        set.spawn(async move {
            tokio::time::sleep_until(start + offset).await;
            let t0 = Instant::now();
            let who = ctx.ids.next();
            // A PXE ROM waits 4, 8, 16, 32 s; a bench cannot, but 2 s is ample on a LAN.
            let retry = Retry {
                timeout: Duration::from_secs(2),
                attempts: 4,
            };
            let ex = match ctx.dhcp.exchange(&who, retry).await {
                Ok(ex) => ex,
                Err(e) => return ClientEnd::Failed(format!("dhcp: {e}"), None),
            };
            let offer = (ex.offer_wire, ex.offer_after);
            let got = tftp_client::get(
                tftp_addr(ex.tftp_server),
                &ex.boot_file,
                &ctx.boot_content,
                GetOptions {
                    blksize: Some(ctx.blksize),
                    windowsize: (windowsize > 1).then_some(windowsize),
                    tsize: true,
                    timeout: Duration::from_secs(1),
                    max_retries: 8,
                    deadline: Duration::from_secs(90),
                },
            )
            .await;
            match got {
                Ok(r) => ClientEnd::Ok {
                    took: t0.elapsed(),
                    discovers: ex.discovers_sent,
                    timeouts: r.timeouts,
                    boot_server: ex.used_boot_server,
                    offer,
                },
                Err(e) => ClientEnd::Failed(format!("tftp: {}", error_kind(&e)), Some(offer)),
            }
        });
    }
    let mut out = Storm {
        clients: n,
        windowsize: windowsize.max(1),
        ..Storm::default()
    };
    let mut offers = Vec::new();
    let deadline = start + limit;
    let mut last_end = start;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(None) => break,
            Ok(Some(joined)) => {
                last_end = tokio::time::Instant::now();
                match joined {
                    Ok(ClientEnd::Ok {
                        took,
                        discovers,
                        timeouts,
                        boot_server,
                        offer,
                    }) => {
                        offers.push(offer);
                        out.ok += 1;
                        out.per_client_ms.push(took.as_secs_f64() * 1e3);
                        out.discover_retransmits += discovers.saturating_sub(1);
                        out.tftp_timeouts += timeouts;
                        out.boot_server_rounds += u32::from(boot_server);
                    }
                    Ok(ClientEnd::Failed(why, offer)) => {
                        offers.extend(offer);
                        *out.failures.entry(why).or_default() += 1;
                    }
                    Err(e) => *out.failures.entry(format!("task: {e}")).or_default() += 1,
                }
            }
            Err(_elapsed) => {
                let left = u32::try_from(set.len()).unwrap_or(u32::MAX);
                set.abort_all();
                *out.failures
                    .entry(format!("storm limit of {} s", limit.as_secs()))
                    .or_default() += left;
                last_end = tokio::time::Instant::now();
                break;
            }
        }
    }
    out.total = last_end.duration_since(start);
    for (wire, task) in offers {
        out.offer_task_ms.push(task.as_secs_f64() * 1e3);
        if let Some(wire) = wire {
            out.offer_wire_ms.push(wire.as_secs_f64() * 1e3);
        }
    }
    out
}

/// Error kinds without byte offsets, so failures group in the report.
fn error_kind(e: &tftp_client::GetError) -> String {
    use tftp_client::GetError;
    match e {
        GetError::TimedOut { .. } => "timed out".into(),
        GetError::Deadline { .. } => "deadline".into(),
        GetError::Mismatch { .. } => "content mismatch".into(),
        other => other.to_string(),
    }
}
