//! Any bytes: parsing must not panic; what parses must survive encode and parse unchanged; the
//! proxyDHCP decision on it must not panic and must never assign an address.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use bootfleet_netboot::dhcp::{decide, BootFiles, Decision, Packet, Port, ProxyConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(request) = Packet::parse(bytes) else {
        return;
    };
    assert_eq!(Packet::parse(&request.encode()).as_ref(), Ok(&request));

    let some = |name: &str| Some(name.to_owned());
    let config = ProxyConfig {
        server_ip: Ipv4Addr::new(192, 168, 1, 10),
        boot: BootFiles {
            bios: some("undionly.kpxe"),
            uefi_x64: some("ipxe.efi"),
            uefi_ia32: some("ipxe-ia32.efi"),
            uefi_arm64: some("ipxe-arm64.efi"),
            http_x64: some("http://192.168.1.10/ipxe.efi"),
            http_arm64: some("http://192.168.1.10/ipxe-arm64.efi"),
            ipxe_script: some("http://192.168.1.10/boot.ipxe"),
        },
    };
    let source = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 77), 68);
    for port in [Port::Dhcp, Port::Binl] {
        if let Decision::Reply { packet, .. } = decide(&request, port, source, &config) {
            assert_eq!(packet.yiaddr, Ipv4Addr::UNSPECIFIED);
            assert_eq!(Packet::parse(&packet.encode()).as_ref(), Ok(&packet));
        }
    }
});
