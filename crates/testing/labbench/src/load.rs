//! Other people's CPU use, so a round measured on a busy machine is waited out or flagged.
//!
//! "Foreign" CPU is the machine's user time (from /proc/stat) minus this process's and the
//! server's user time. Kernel time is left out: packet processing on the lab's veths lands in
//! softirq time that belongs to no process, and it is ours.

use std::time::{Duration, Instant};

const TICKS_PER_SECOND: f64 = 100.0; // USER_HZ on Linux

fn machine_user_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?;
    let mut fields = cpu
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>().ok());
    let user = fields.next()??;
    let nice = fields.next()??;
    Some(user + nice)
}

/// utime of a process (all its threads), in ticks; 0 if it is gone.
fn process_user_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let Some(after) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return 0;
    };
    // utime is field 14 overall, the 12th after the name (state is the 1st).
    after
        .split_whitespace()
        .nth(11)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds; 0 if it is gone.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(after) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / TICKS_PER_SECOND
}

/// A reading to compare a later one against.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    machine: u64,
    ours: u64,
}

pub fn sample(server_pid: Option<u32>) -> Sample {
    let server = server_pid.map_or(0, |p| process_user_ticks(&p.to_string()));
    Sample {
        at: Instant::now(),
        machine: machine_user_ticks().unwrap_or(0),
        ours: process_user_ticks("self") + server,
    }
}

/// Foreign user CPU between two samples, in cores (1.0 = one core busy all along).
pub fn foreign_cores(before: Sample, after: Sample) -> f64 {
    let secs = after.at.duration_since(before.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    let machine = after.machine.saturating_sub(before.machine);
    let ours = after.ours.saturating_sub(before.ours);
    machine.saturating_sub(ours) as f64 / TICKS_PER_SECOND / secs
}

/// Waits until other processes use less than `max_cores` over a 3 s window, at most `limit`.
/// Returns the last reading.
pub fn wait_quiet(max_cores: f64, limit: Duration) -> f64 {
    let give_up = Instant::now() + limit;
    let mut announced = false;
    loop {
        let before = sample(None);
        std::thread::sleep(Duration::from_secs(3));
        let busy = foreign_cores(before, sample(None));
        if busy < max_cores || Instant::now() >= give_up {
            if busy >= max_cores {
                eprintln!("labbench: machine still busy ({busy:.2} cores used by other processes); measuring anyway, the round will be flagged");
            }
            return busy;
        }
        if !announced {
            eprintln!("labbench: other processes use {busy:.2} cores; waiting for a quiet machine (up to {} s)", limit.as_secs());
            announced = true;
        }
    }
}
