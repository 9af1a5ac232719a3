#![no_main]
use bootfleet_netboot::tftp::{normalize, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(packet) = Packet::parse(bytes) {
        let encoded = packet.encode();
        // ERROR is parsed leniently (a missing NUL, invalid UTF-8), so only it may grow.
        if !matches!(packet, Packet::Error { .. }) {
            assert!(encoded.len() <= bytes.len(), "encoding never grows a parsed packet");
        }
        assert_eq!(Packet::parse(&encoded).as_ref(), Ok(&packet));
    }
    if let Ok(name) = std::str::from_utf8(bytes) {
        if let Ok(path) = normalize(name) {
            for component in path.to_path_buf().components() {
                assert!(matches!(component, std::path::Component::Normal(_)));
            }
            assert_eq!(normalize(path.as_str()).as_ref(), Ok(&path));
        }
    }
});
