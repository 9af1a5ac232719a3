//! Network-boot protocols as pure code: bytes and state in, bytes and state out. No sockets, no
//! clocks, no async, so everything here is unit-tested, property-tested and fuzzed alone; the
//! distributor's socket loops sit apart and stay thin.
//!
//! - [`dhcp`]: the DHCP/BOOTP packet codec and the proxyDHCP decision (which clients to answer,
//!   with which boot file, to which address).
//! - [`tftp`]: the TFTP packet codec, option negotiation and the read-transfer state machine,
//!   and the mapping of requested file names onto the cache without escapes.

pub mod dhcp;
pub mod tftp;
