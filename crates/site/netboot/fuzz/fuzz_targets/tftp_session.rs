#![no_main]
use bootfleet_netboot::tftp::{Limits, Mode, Outcome, Packet, ReadTransfer, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let [mode, blksize, windowsize, size_hi, size_lo, script @ ..] = bytes else { return };
    let blksize = 8 + usize::from(blksize % 64);
    let windowsize = 1 + usize::from(windowsize % 8);
    // At most 4095 bytes in blocks of at least 8: no rollover, so a DATA's number is its index.
    let size = usize::from(u16::from_be_bytes([*size_hi, *size_lo]) % 4096);
    let file: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mode = if mode & 1 == 0 { Mode::Octet } else { Mode::Netascii };
    let option = |name: &str, value: String| (name.to_owned(), value);
    let request = Request {
        filename: "ipxe.efi".into(),
        mode,
        options: vec![
            option("blksize", blksize.to_string()),
            option("windowsize", windowsize.to_string()),
            option("tsize", "0".into()),
        ],
    };
    let limits = Limits { max_retries: 3, ..Limits::default() };
    let mut transfer = ReadTransfer::start(&request, size as u64, &limits);
    let mut buf = Vec::new();
    let mut script = script;
    loop {
        let mut emitted = 0;
        while let Some(datagram) = transfer.poll_transmit(file.as_slice(), &mut buf) {
            emitted += 1;
            assert!(emitted <= windowsize + 1, "poll_transmit must run dry");
            match Packet::parse(datagram) {
                Ok(Packet::Data { block, data }) => {
                    assert!(data.len() <= blksize);
                    if mode == Mode::Octet {
                        let start = (usize::from(block) - 1) * blksize;
                        assert_eq!(Some(data), file.get(start..(start + blksize).min(size)));
                    }
                }
                Ok(Packet::Oack { .. } | Packet::Error { .. }) => {}
                other => panic!("server sent {other:?}"),
            }
        }
        let Some((&event, rest)) = script.split_first() else { break };
        script = rest;
        match event % 4 {
            0 => transfer.on_timeout(),
            1 => {
                transfer.on_packet(&[0, 4, 0, event / 4]);
            }
            2 => {
                let [hi, lo, rest @ ..] = script else { break };
                transfer.on_packet(&[0, 4, *hi, *lo]);
                script = rest;
            }
            _ => {
                let len = usize::from(event / 4 % 16).min(script.len());
                let (datagram, rest) = script.split_at(len);
                transfer.on_packet(datagram);
                script = rest;
            }
        }
    }
    if let Some(Outcome::Completed(stats)) = transfer.outcome() {
        if mode == Mode::Octet {
            assert_eq!(stats.bytes_acknowledged, size as u64);
        }
    }
    if transfer.is_finished() {
        transfer.on_timeout();
        transfer.on_packet(&[0, 4, 0, 1]);
        assert!(transfer.poll_transmit(file.as_slice(), &mut buf).is_none());
    }
});
