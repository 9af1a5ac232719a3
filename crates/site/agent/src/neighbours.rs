//! A LAN peer's hardware address, from the kernel's neighbour table: TFTP and HTTP requests
//! carry no MAC, yet an operator follows a boot by its MAC. By the time a transfer is reported
//! the kernel has resolved the client's address (it sent the client data), so the entry is
//! there. `/proc/self/net/arp` is this process's network namespace's table.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `ATF_COM` in the table's flags: the entry is resolved (an unresolved one shows zeros).
const RESOLVED: u32 = 0x2;

/// How long one read of the table answers lookups. The kernel writes the whole table out for
/// each read (0.28 ms with 500 entries, 0.02 ms empty: BENCHMARKS.md), and a boot storm looks
/// up every transfer's client twice. A lookup the snapshot cannot answer reads the table
/// again, so a client resolved since the last read is still found.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The MAC (lowercase, colon-separated) the kernel has for `ip`, if it has one.
pub fn mac_of(ip: IpAddr) -> Option<String> {
    static TABLE: Snapshot = Snapshot::new();
    let IpAddr::V4(ip) = ip else { return None };
    TABLE.mac_of(ip, Instant::now(), || {
        std::fs::read_to_string("/proc/self/net/arp").ok()
    })
}

/// The resolved entries of the table as last read, and when.
#[derive(Debug)]
struct Snapshot(Mutex<Option<(Instant, HashMap<Ipv4Addr, String>)>>);

impl Snapshot {
    const fn new() -> Snapshot {
        Snapshot(Mutex::new(None))
    }

    fn mac_of(
        &self,
        ip: Ipv4Addr,
        now: Instant,
        read: impl FnOnce() -> Option<String>,
    ) -> Option<String> {
        if let Ok(last) = self.0.lock() {
            let fresh = last
                .as_ref()
                .filter(|(at, _)| now.saturating_duration_since(*at) < FRESH_FOR);
            if let Some(mac) = fresh.and_then(|(_, table)| table.get(&ip)) {
                return Some(mac.clone());
            }
        }
        let table = resolved(&read()?);
        let mac = table.get(&ip).cloned();
        if let Ok(mut last) = self.0.lock() {
            *last = Some((now, table));
        }
        mac
    }
}

/// The resolved entries in the text of `/proc/net/arp`, by address:
/// `IP address  HW type  Flags  HW address  Mask  Device`, one entry a line after a header.
fn resolved(table: &str) -> HashMap<Ipv4Addr, String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address: Ipv4Addr = fields.next()?.parse().ok()?;
            let _hw_type = fields.next()?;
            let flags = u32::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
            let mac = fields.next()?;
            let well_formed = mac.len() == 17
                && mac.split(':').count() == 6
                && mac
                    .split(':')
                    .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
            (flags & RESOLVED != 0 && well_formed && mac != "00:00:00:00:00:00")
                .then(|| (address, mac.to_ascii_lowercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
IP address       HW type     Flags       HW address            Mask     Device
10.77.0.150      0x1         0x2         52:54:00:77:00:10     *        i0
10.77.0.151      0x1         0x0         00:00:00:00:00:00     *        i0
10.77.0.152      0x1         0x6         52:54:00:AB:CD:EF     *        i0
10.77.0.153      0x1         0x2         garbage               *        i0
";

    #[test]
    fn resolved_entries_only() {
        let table = resolved(TABLE);
        let mac = |ip: &str| table.get(&ip.parse().expect("ip")).map(String::as_str);
        assert_eq!(mac("10.77.0.150"), Some("52:54:00:77:00:10"));
        // Permanent entries (0x6) are resolved too, and come out lowercase.
        assert_eq!(mac("10.77.0.152"), Some("52:54:00:ab:cd:ef"));
        assert_eq!(mac("10.77.0.151"), None, "incomplete");
        assert_eq!(mac("10.77.0.153"), None, "malformed");
        assert_eq!(mac("10.77.0.9"), None, "absent");
        assert!(resolved("").is_empty());
        assert_eq!(mac_of("::1".parse().expect("ip")), None);
    }

    /// A read answers for a second; an address it does not know, or a later lookup, reads the
    /// table again and sees what changed.
    #[test]
    fn a_snapshot_answers_until_it_is_stale_or_misses() {
        let snapshot = Snapshot::new();
        let reads = std::cell::Cell::new(0);
        let table = std::cell::RefCell::new(TABLE.to_owned());
        let read = || {
            reads.set(reads.get() + 1);
            Some(table.borrow().clone())
        };
        let ip = |s: &str| -> Ipv4Addr { s.parse().expect("ip") };
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let known = Some("52:54:00:77:00:10".to_owned());

        assert_eq!(snapshot.mac_of(ip("10.77.0.150"), at(0), read), known);
        assert_eq!(snapshot.mac_of(ip("10.77.0.150"), at(900), read), known);
        assert_eq!(reads.get(), 1, "answered from the snapshot");

        // A client resolved since the read: a miss reads again and finds it.
        table.borrow_mut().push_str(
            "10.77.0.160      0x1         0x2         52:54:00:77:00:60     *        i0\n",
        );
        assert_eq!(
            snapshot.mac_of(ip("10.77.0.160"), at(950), read).as_deref(),
            Some("52:54:00:77:00:60")
        );
        assert_eq!(reads.get(), 2);

        // An address that moved to another MAC is seen once the snapshot is a second old.
        *table.borrow_mut() = TABLE.replace("52:54:00:77:00:10", "52:54:00:77:00:99");
        assert_eq!(snapshot.mac_of(ip("10.77.0.150"), at(1500), read), known);
        assert_eq!(
            snapshot
                .mac_of(ip("10.77.0.150"), at(1950), read)
                .as_deref(),
            Some("52:54:00:77:00:99")
        );
        assert_eq!(reads.get(), 3);

        // No table to read: no MAC, and nothing cached wrongly.
        assert_eq!(
            Snapshot::new().mac_of(ip("10.77.0.150"), at(0), || None),
            None
        );
    }
}
