//! The lab itself: a QEMU guest on the namespaced bridge gets its address from the plain site
//! DHCP server. If this fails, the distributor's boot tests cannot mean anything.

use std::time::Duration;

use bootfleet_testkit::netlab::{NetLab, SiteDhcp};
use bootfleet_testkit::qemu::{Firmware, Qemu};

#[test]
fn a_bios_guest_gets_an_address_from_the_site_dhcp_server() {
    let mut lab = NetLab::new();
    let router = lab.host("router", "r0", "10.77.0.1/24", Some("fd77::1/64"));
    lab.tap("tap0");
    let dhcp = SiteDhcp::start(&lab, &router, "r0", "10.77.0.100,10.77.0.199", true);
    let guest = Qemu::netboot(&lab, "tap0", "52:54:00:77:00:01", Firmware::Bios);
    // iPXE prints the address it configured, then finds no boot file (plain DHCP has none).
    let configured = guest.wait_for_serial("net0: 10.77.0.1", Duration::from_secs(60));
    assert!(
        configured,
        "guest never configured an address.\nserial:\n{}\ndnsmasq:\n{}",
        guest.serial(),
        dhcp.log()
    );
    assert!(
        dhcp.wait_for_log("DHCPACK(r0) 10.77.0.", Duration::from_secs(10)),
        "{}",
        dhcp.log()
    );
    // The site server's RA spares iPXE its ~13 s IPv6 wait. iPXE prints the IPv6 address after
    // the IPv4 one, so it is waited for too (bounded well below that 13 s).
    guest.expect_serial("net0: fd77::", Duration::from_secs(10));
    assert!(dhcp.log().contains("52:54:00:77:00:01"));
}
