//! Option negotiation for read requests (RFC 2347 framework; blksize RFC 2348; timeout and tsize
//! RFC 2349; windowsize RFC 7440).
//!
//! Only options we accept go into the OACK, each at most once (the first occurrence wins);
//! unknown or malformed options are left out, which RFC 2347 defines as refusing them. If none
//! is accepted there is no OACK and the transfer starts with DATA 1.

use std::time::Duration;

use super::packet::{Mode, MAX_BLKSIZE};

/// Block size when none is negotiated (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Smallest block size RFC 2348 allows.
pub const MIN_BLKSIZE: u16 = 8;
/// Largest window we grant whatever the limits say: half the 16-bit block-number space, so an
/// ACK from before the window can never be read as one inside it (RFC 7440 allows 65535).
pub const MAX_WINDOWSIZE: u16 = 32768;
/// [`MAX_BLKSIZE`] as the type blksize values use.
const MAX_BLKSIZE_U16: u16 = {
    assert!(MAX_BLKSIZE <= u16::MAX as usize);
    MAX_BLKSIZE as u16
};

/// Server-side bounds on what a client may negotiate, and retransmission policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest block size granted. The default, 1468, fills a 1500-byte Ethernet MTU
    /// (1500 - 20 IP - 8 UDP - 4 TFTP) so no DATA datagram is fragmented.
    pub max_blksize: u16,
    /// Largest window granted. 64 blocks of 1468 bytes is a 94 KB burst, which the receive
    /// buffers of firmware clients absorb.
    pub max_windowsize: u16,
    /// Retransmission interval when the client does not negotiate `timeout`.
    pub default_timeout: Duration,
    /// Retransmissions of one window (or of the OACK) before the transfer fails.
    pub max_retries: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_blksize: 1468,
            max_windowsize: 64,
            // One second suits a LAN, where a lost datagram is better resent soon.
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
        }
    }
}

/// The parameters a read transfer runs with, and the options to acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiation {
    pub blksize: u16,
    pub windowsize: u16,
    /// Retransmission interval: the client's `timeout` if accepted, else the default.
    pub timeout: Duration,
    /// Options for the OACK, in the client's order, names lowercased. Empty: send no OACK.
    pub acknowledged: Vec<(String, String)>,
}

impl Negotiation {
    pub fn needs_oack(&self) -> bool {
        !self.acknowledged.is_empty()
    }
}

/// Negotiates a read request's options against `limits` for a file of `file_size` bytes.
///
/// In netascii mode `tsize` and `windowsize` are not acknowledged: the converted size is not
/// known without reading the whole file, and netascii runs lock-step (the conversion state of a
/// block depends on the block before it, so only one is ever in flight).
pub fn negotiate(
    mode: Mode,
    options: &[(String, String)],
    file_size: u64,
    limits: &Limits,
) -> Negotiation {
    let max_blksize = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE_U16);
    let max_windowsize = limits.max_windowsize.clamp(1, MAX_WINDOWSIZE);
    let mut negotiation = Negotiation {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: limits.default_timeout,
        acknowledged: Vec::new(),
    };
    for (index, (name, value)) in options.iter().enumerate() {
        let repeated = options
            .iter()
            .take(index)
            .any(|(earlier_name, _)| earlier_name == name);
        if repeated {
            continue;
        }
        let Some(number) = parse_decimal(value) else {
            continue;
        };
        let reply = match name.as_str() {
            "blksize" if number >= u64::from(MIN_BLKSIZE) => {
                // Values above RFC 2348's 65464 are clamped like any other large request: the
                // reply is never more than asked, which is all the RFC requires of it.
                let granted = clamp_to_u16(number, max_blksize);
                negotiation.blksize = granted;
                granted.to_string()
            }
            "windowsize" if number >= 1 && mode == Mode::Octet => {
                let granted = clamp_to_u16(number, max_windowsize);
                negotiation.windowsize = granted;
                granted.to_string()
            }
            // RFC 2349: the server answers the same timeout or leaves the option out.
            "timeout" if (1..=255).contains(&number) => {
                negotiation.timeout = Duration::from_secs(number);
                number.to_string()
            }
            // RFC 2349: an RRQ carries 0 and the OACK the real size.
            "tsize" if mode == Mode::Octet => file_size.to_string(),
            _ => continue,
        };
        negotiation.acknowledged.push((name.clone(), reply));
    }
    negotiation
}

/// Plain ASCII decimal; saturates rather than failing on huge values so they clamp like large
/// ones. No sign, no spaces, at least one digit.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |acc, digit| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

fn clamp_to_u16(value: u64, max: u16) -> u16 {
    u16::try_from(value).map_or(max, |value| value.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::options;

    fn run(pairs: &[(&str, &str)]) -> Negotiation {
        negotiate(Mode::Octet, &options(pairs), 12345, &Limits::default())
    }

    #[test]
    fn ipxe_request() {
        let n = run(&[("blksize", "1432"), ("tsize", "0")]);
        assert_eq!(n.blksize, 1432);
        assert_eq!(n.windowsize, 1);
        assert_eq!(
            n.acknowledged,
            options(&[("blksize", "1432"), ("tsize", "12345")])
        );
    }

    #[test]
    fn edk2_request() {
        let n = run(&[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")]);
        assert_eq!((n.blksize, n.windowsize), (1468, 4));
        assert_eq!(
            n.acknowledged,
            options(&[("tsize", "12345"), ("blksize", "1468"), ("windowsize", "4")])
        );
    }

    #[test]
    fn clamps_to_limits() {
        let n = run(&[("blksize", "65464"), ("windowsize", "65535")]);
        assert_eq!((n.blksize, n.windowsize), (1468, 64));
        assert_eq!(
            n.acknowledged,
            options(&[("blksize", "1468"), ("windowsize", "64")])
        );
        let n = run(&[("blksize", "99999999999999999999999")]);
        assert_eq!(n.blksize, 1468);
        let n = run(&[("windowsize", "70000")]);
        assert_eq!(n.windowsize, 64);
    }

    #[test]
    fn a_larger_limit_allows_up_to_the_hard_maximum() {
        let limits = Limits {
            max_blksize: u16::MAX,
            max_windowsize: u16::MAX,
            ..Limits::default()
        };
        let n = negotiate(
            Mode::Octet,
            &options(&[("blksize", "70000"), ("windowsize", "70000")]),
            0,
            &limits,
        );
        assert_eq!((n.blksize, n.windowsize), (65464, MAX_WINDOWSIZE));
    }

    #[test]
    fn ignores_invalid_and_unknown_options() {
        let n = run(&[
            ("blksize", "7"),
            ("windowsize", "0"),
            ("timeout", "0"),
            ("timeout", "256"),
            ("tsize", "-1"),
            ("multicast", ""),
            ("utimeout", "1000"),
            ("blksize", " 1024"),
        ]);
        assert_eq!(n.blksize, DEFAULT_BLKSIZE);
        assert_eq!(n.windowsize, 1);
        assert_eq!(n.timeout, Limits::default().default_timeout);
        assert!(!n.needs_oack());
    }

    #[test]
    fn first_occurrence_wins() {
        let n = run(&[("blksize", "1024"), ("blksize", "512")]);
        assert_eq!(n.blksize, 1024);
        assert_eq!(n.acknowledged, options(&[("blksize", "1024")]));
    }

    #[test]
    fn timeout_is_echoed() {
        let n = run(&[("timeout", "3")]);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(n.acknowledged, options(&[("timeout", "3")]));
    }

    #[test]
    fn netascii_refuses_tsize_and_windowsize() {
        let n = negotiate(
            Mode::Netascii,
            &options(&[("tsize", "0"), ("windowsize", "8"), ("blksize", "1024")]),
            100,
            &Limits::default(),
        );
        assert_eq!(n.windowsize, 1);
        assert_eq!(n.acknowledged, options(&[("blksize", "1024")]));
    }

    #[test]
    fn degenerate_limits_stay_valid() {
        let limits = Limits {
            max_blksize: 0,
            max_windowsize: 0,
            ..Limits::default()
        };
        let n = negotiate(
            Mode::Octet,
            &options(&[("blksize", "1024"), ("windowsize", "4")]),
            0,
            &limits,
        );
        assert_eq!((n.blksize, n.windowsize), (MIN_BLKSIZE, 1));
    }
}
