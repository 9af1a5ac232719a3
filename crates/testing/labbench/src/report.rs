//! Collects the rounds and prints them: progress lines on stderr, a markdown table on stdout.

use std::fmt::Write;

use crate::dhcp_client::BinlRound;
use crate::measure::{Latency, Mix, Storm, Throughput};
use crate::servers::ServerKind;

/// One server, one repeat.
#[derive(Debug, Default)]
pub struct Round {
    pub latency: Option<Latency>,
    pub lockstep: Option<Result<Throughput, String>>,
    pub windowed: Option<Result<Throughput, String>>,
    pub storms: Vec<Storm>,
    pub unclaimed_replies: u64,
    /// Other processes' user CPU during the round, in cores.
    pub foreign_cores: f64,
    /// The server's CPU time (user + system) over the whole round, seconds.
    pub server_cpu_s: f64,
    pub notes: Vec<String>,
}

#[derive(Debug)]
pub struct Rounds {
    servers: Vec<ServerKind>,
    rounds: Vec<(ServerKind, Vec<Round>)>,
}

impl Rounds {
    pub fn new(servers: Vec<ServerKind>) -> Rounds {
        let rounds = servers.iter().map(|&k| (k, Vec::new())).collect();
        Rounds { servers, rounds }
    }

    pub fn push(&mut self, kind: ServerKind, round: Round) {
        if let Some((_, list)) = self.rounds.iter_mut().find(|(k, _)| *k == kind) {
            list.push(round);
        }
    }

    fn of(&self, kind: ServerKind) -> &[Round] {
        self.rounds
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, r)| r.as_slice())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Params {
    pub latency_requests: u32,
    pub throughput_mib: u64,
    pub windowsize: u16,
    pub blksize: u16,
    pub boot_file_kib: u64,
    pub spread_ms: u64,
    pub repeats: u32,
    /// (clients, windowsize) in the order run.
    pub storms: Vec<(u32, u16)>,
    pub firmware: Mix,
    pub binl_round: BinlRound,
}

/// Nearest-rank percentile of unsorted values.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v.get(rank - 1).copied()
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v.get(mid).copied()
    } else {
        Some((v.get(mid - 1)? + v.get(mid)?) / 2.0)
    }
}

fn spread(values: &[f64], digits: usize) -> String {
    let Some(m) = median(values) else {
        return "n/a".into();
    };
    if values.len() < 2 {
        return format!("{m:.digits$}");
    }
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

pub fn progress(kind: ServerKind, rep: u32, round: &Round) {
    let mut line = format!("labbench: {} rep{rep}:", kind.name());
    if let Some(l) = &round.latency {
        let _ = write!(
            line,
            " offer p50 {:.0} µs p99 {:.0} µs, boot file p50 {:.0} µs, lost {};",
            percentile(&l.offer_us, 0.5).unwrap_or(f64::NAN),
            percentile(&l.offer_us, 0.99).unwrap_or(f64::NAN),
            percentile(&l.boot_file_us, 0.5).unwrap_or(f64::NAN),
            l.lost
        );
    }
    for (label, t) in [
        ("lock-step", &round.lockstep),
        ("windowed", &round.windowed),
    ] {
        match t {
            Some(Ok(t)) => {
                let _ = write!(
                    line,
                    " {label} {:.1} MB/s (oack {}, blksize {}, window {}, timeouts {}, unexpected blocks {});",
                    t.mb_per_s, t.oack, t.blksize, t.windowsize, t.timeouts, t.unexpected_blocks
                );
            }
            Some(Err(e)) => {
                let _ = write!(line, " {label} FAILED: {e};");
            }
            None => {}
        }
    }
    for s in &round.storms {
        let _ = write!(
            line,
            " storm {}{}: {:.2} s, {} ok, {} failed {:?}, offer p50/p99/max {:.2}/{:.2}/{:.2} ms (task p99 {:.2} ms), udp/4011 rounds {}, p99 client {:.0} ms, discover resends {}, tftp timeouts {};",
            s.clients,
            window_label(s.windowsize),
            s.total.as_secs_f64(),
            s.ok,
            s.failed(),
            s.failures,
            percentile(&s.offer_wire_ms, 0.5).unwrap_or(f64::NAN),
            percentile(&s.offer_wire_ms, 0.99).unwrap_or(f64::NAN),
            percentile(&s.offer_wire_ms, 1.0).unwrap_or(f64::NAN),
            percentile(&s.offer_task_ms, 0.99).unwrap_or(f64::NAN),
            s.boot_server_rounds,
            percentile(&s.per_client_ms, 0.99).unwrap_or(f64::NAN),
            s.discover_retransmits,
            s.tftp_timeouts
        );
    }
    let _ = write!(
        line,
        " unclaimed dhcp replies {}; other processes {:.2} cores; server cpu {:.2} s",
        round.unclaimed_replies, round.foreign_cores, round.server_cpu_s
    );
    eprintln!("{line}");
    for note in &round.notes {
        eprintln!("labbench: {} rep{rep}: NOTE {note}", kind.name());
    }
}

fn window_label(windowsize: u16) -> String {
    if windowsize > 1 {
        format!(" windowsize {windowsize}")
    } else {
        String::new()
    }
}

/// Medians over the storms of each storm's p50 / p99 / max of `pick`, ms.
fn percentiles_cell(storms: &[Storm], pick: fn(&Storm) -> &Vec<f64>) -> String {
    let at = |q: f64| -> f64 {
        let per: Vec<f64> = storms
            .iter()
            .filter_map(|s| percentile(pick(s), q))
            .collect();
        median(&per).unwrap_or(f64::NAN)
    };
    let p99: Vec<f64> = storms
        .iter()
        .filter_map(|s| percentile(pick(s), 0.99))
        .collect();
    format!(
        "{:.2} / {:.2} / {:.2} (p99 {})",
        at(0.5),
        at(0.99),
        at(1.0),
        spread(&p99, 2)
    )
}

/// The sums over the storms of `a` and of `b`, as `{a}{sep}{b}`.
fn sums_cell(storms: &[Storm], a: fn(&Storm) -> u32, sep: &str, b: fn(&Storm) -> u32) -> String {
    let a: u32 = storms.iter().map(a).sum();
    let b: u32 = storms.iter().map(b).sum();
    format!("{a}{sep}{b}")
}

fn row(out: &mut String, label: &str, cells: &[String]) {
    let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
}

pub fn markdown(rounds: &Rounds, p: &Params) -> String {
    let servers = &rounds.servers;
    let mut out = String::new();
    let header: Vec<String> = servers.iter().map(|k| format!("`{}`", k.name())).collect();
    row(&mut out, "measurement", &header);
    let _ = writeln!(out, "|---|{}", "---|".repeat(servers.len()));
    let cells = |f: &dyn Fn(&[Round]) -> String| -> Vec<String> {
        servers.iter().map(|&k| f(rounds.of(k))).collect()
    };

    if p.latency_requests > 0 {
        let lat = |rs: &[Round], pick: fn(&Latency) -> &Vec<f64>, q: f64| -> String {
            let per: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.latency.as_ref())
                .filter_map(|l| percentile(pick(l), q))
                .collect();
            spread(&per, 0)
        };
        let n = p.latency_requests;
        let offer: fn(&Latency) -> &Vec<f64> = |l| &l.offer_us;
        let boot_file: fn(&Latency) -> &Vec<f64> = |l| &l.boot_file_us;
        for (label, pick, q) in [
            (
                format!("proxyDHCP DISCOVER→OFFER p50, µs ({n} sequential)"),
                offer,
                0.5,
            ),
            ("proxyDHCP DISCOVER→OFFER p99, µs".into(), offer, 0.99),
            (
                "DISCOVER→boot file known p50, µs (incl. udp/4011 round if needed)".into(),
                boot_file,
                0.5,
            ),
            ("DISCOVER→boot file known p99, µs".into(), boot_file, 0.99),
        ] {
            row(&mut out, &label, &cells(&|rs| lat(rs, pick, q)));
        }
        row(
            &mut out,
            "udp/4011 boot-server round trips needed",
            &cells(&|rs| {
                let used = latency_total(rs, |l| u64::from(l.boot_server_rounds));
                let done = latency_total(rs, |l| l.offer_us.len() as u64);
                format!("{used} / {done}")
            }),
        );
        row(
            &mut out,
            "DISCOVERs unanswered within 1 s",
            &cells(&|rs| {
                let lost = latency_total(rs, |l| u64::from(l.lost));
                format!("{lost} / {}", u64::from(n) * rs.len() as u64)
            }),
        );
    }

    if p.throughput_mib > 0 {
        let tput =
            |rs: &[Round], pick: fn(&Round) -> &Option<Result<Throughput, String>>| -> String {
                let ok: Vec<&Throughput> = rs
                    .iter()
                    .filter_map(|r| pick(r).as_ref()?.as_ref().ok())
                    .collect();
                let failed = rs
                    .iter()
                    .filter(|r| matches!(pick(r), Some(Err(_))))
                    .count();
                let values: Vec<f64> = ok.iter().map(|t| t.mb_per_s).collect();
                let mut cell = spread(&values, 1);
                if let Some(t) = ok.first() {
                    if t.windowsize <= 1 {
                        let _ = write!(cell, " [window 1]");
                    } else {
                        let _ = write!(cell, " [window {}]", t.windowsize);
                    }
                }
                if failed > 0 {
                    let _ = write!(cell, " ({failed} failed)");
                }
                cell
            };
        let mib = p.throughput_mib;
        row(
            &mut out,
            &format!("TFTP {mib} MiB lock-step, blksize {}, MB/s", p.blksize),
            &cells(&|rs| tput(rs, |r| &r.lockstep)),
        );
        row(
            &mut out,
            &format!("TFTP {mib} MiB asking windowsize {}, MB/s", p.windowsize),
            &cells(&|rs| tput(rs, |r| &r.windowed)),
        );
    }

    for (i, &(n, windowsize)) in p.storms.iter().enumerate() {
        let pick = |rs: &[Round]| -> Vec<Storm> {
            rs.iter().filter_map(|r| r.storms.get(i).cloned()).collect()
        };
        let kib = p.boot_file_kib;
        let tftp = if windowsize > 1 {
            format!("{kib} KiB TFTP asking windowsize {windowsize}")
        } else {
            format!("{kib} KiB TFTP lock-step")
        };
        let w = window_label(windowsize);
        row(
            &mut out,
            &format!("storm {n}{w} clients (DHCP + {tftp}), all done in, s"),
            &cells(&|rs| {
                let totals: Vec<f64> = pick(rs).iter().map(|s| s.total.as_secs_f64()).collect();
                spread(&totals, 2)
            }),
        );
        row(
            &mut out,
            &format!("storm {n}{w}: OFFER latency p50 / p99 / max, ms (kernel receive stamp)"),
            &cells(&|rs| percentiles_cell(&pick(rs), |s| &s.offer_wire_ms)),
        );
        row(
            &mut out,
            &format!(
                "storm {n}{w}: OFFER latency p50 / p99 / max, ms (as the client task read it)"
            ),
            &cells(&|rs| percentiles_cell(&pick(rs), |s| &s.offer_task_ms)),
        );
        row(
            &mut out,
            &format!("storm {n}{w}: udp/4011 rounds (all repeats)"),
            &cells(&|rs| sums_cell(&pick(rs), |s| s.boot_server_rounds, " / ", |s| s.ok)),
        );
        row(
            &mut out,
            &format!("storm {n}{w}: failed clients (all repeats)"),
            &cells(&|rs| sums_cell(&pick(rs), Storm::failed, " / ", |s| s.clients)),
        );
        row(
            &mut out,
            &format!("storm {n}{w}: per-client p50 / p99, ms"),
            &cells(&|rs| {
                let storms = pick(rs);
                let p50: Vec<f64> = storms
                    .iter()
                    .filter_map(|s| percentile(&s.per_client_ms, 0.5))
                    .collect();
                let p99: Vec<f64> = storms
                    .iter()
                    .filter_map(|s| percentile(&s.per_client_ms, 0.99))
                    .collect();
                format!(
                    "{:.0} / {:.0}",
                    median(&p50).unwrap_or(f64::NAN),
                    median(&p99).unwrap_or(f64::NAN)
                )
            }),
        );
        row(
            &mut out,
            &format!("storm {n}{w}: client resends (DISCOVER + TFTP timeouts)"),
            &cells(&|rs| {
                sums_cell(
                    &pick(rs),
                    |s| s.discover_retransmits,
                    " + ",
                    |s| s.tftp_timeouts,
                )
            }),
        );
    }
    row(
        &mut out,
        "server CPU time (user + sys) per round, s",
        &cells(&|rs| {
            let v: Vec<f64> = rs.iter().map(|r| r.server_cpu_s).collect();
            spread(&v, 2)
        }),
    );
    row(
        &mut out,
        "other processes' CPU during the rounds, cores (max)",
        &cells(&|rs| {
            let max = rs.iter().map(|r| r.foreign_cores).fold(0.0, f64::max);
            format!("{max:.2}")
        }),
    );
    let _ = writeln!(
        out,
        "\nMedians of {} repeats, (min–max) where shown; MB/s = 10^6 bytes/s; storm clients start evenly within {} ms; clients: {}; udp/4011 round: {}.",
        p.repeats,
        p.spread_ms,
        match p.firmware {
            Mix::Mixed => "BIOS (arch 0) and x64 UEFI (arch 7) alternating",
            Mix::Bios => "BIOS (arch 0)",
            Mix::Uefi => "x64 UEFI (arch 7)",
        },
        match p.binl_round {
            BinlRound::Firmware => "as firmware (UEFI always, BIOS when the OFFER names no file)",
            BinlRound::Always => "every client",
        }
    );
    let mut notes = String::new();
    for &k in servers {
        for (rep, r) in rounds.of(k).iter().enumerate() {
            for n in &r.notes {
                let _ = writeln!(notes, "- {} rep{rep}: {n}", k.name());
            }
            for s in &r.storms {
                if !s.failures.is_empty() {
                    let _ = writeln!(
                        notes,
                        "- {} rep{rep} storm {}{}: failures {:?}",
                        k.name(),
                        s.clients,
                        window_label(s.windowsize),
                        s.failures
                    );
                }
            }
            for (label, t) in [("lock-step", &r.lockstep), ("windowed", &r.windowed)] {
                if let Some(Err(e)) = t {
                    let _ = writeln!(notes, "- {} rep{rep} {label}: {e}", k.name());
                }
            }
        }
    }
    if !notes.is_empty() {
        let _ = write!(out, "\nNotes:\n{notes}");
    }
    out
}

/// The sum of `pick` over the rounds that measured latency.
fn latency_total(rs: &[Round], pick: impl Fn(&Latency) -> u64) -> u64 {
    rs.iter().filter_map(|r| r.latency.as_ref()).map(pick).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
    }
}
