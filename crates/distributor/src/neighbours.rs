//! A LAN peer's hardware address, from the kernel's neighbour table: TFTP and HTTP requests
//! carry no MAC, yet an operator follows a boot by its MAC. By the time a transfer is reported
//! the kernel has resolved the client's address (it sent the client data), so the entry is
//! there. `/proc/self/net/arp` is this process's network namespace's table.

use std::net::{IpAddr, Ipv4Addr};

/// `ATF_COM` in the table's flags: the entry is resolved (an unresolved one shows zeros).
const RESOLVED: u32 = 0x2;

/// The MAC (lowercase, colon-separated) the kernel has for `ip`, if it has one.
pub fn mac_of(ip: IpAddr) -> Option<String> {
    let IpAddr::V4(ip) = ip else { return None };
    let table = std::fs::read_to_string("/proc/self/net/arp").ok()?;
    mac_in(&table, ip)
}

/// The MAC of `ip` in the text of `/proc/net/arp`:
/// `IP address  HW type  Flags  HW address  Mask  Device`, one entry a line after a header.
fn mac_in(table: &str, ip: Ipv4Addr) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
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
        (address == ip && flags & RESOLVED != 0 && well_formed && mac != "00:00:00:00:00:00")
            .then(|| mac.to_ascii_lowercase())
    })
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
        let mac = |ip: &str| mac_in(TABLE, ip.parse().expect("ip"));
        assert_eq!(mac("10.77.0.150").as_deref(), Some("52:54:00:77:00:10"));
        // Permanent entries (0x6) are resolved too, and come out lowercase.
        assert_eq!(mac("10.77.0.152").as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(mac("10.77.0.151"), None, "incomplete");
        assert_eq!(mac("10.77.0.153"), None, "malformed");
        assert_eq!(mac("10.77.0.9"), None, "absent");
        assert_eq!(mac_in("", Ipv4Addr::LOCALHOST), None);
        assert_eq!(mac_of("::1".parse().expect("ip")), None);
    }
}
