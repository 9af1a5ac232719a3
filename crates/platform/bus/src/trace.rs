//! W3C trace context (`traceparent: 00-<trace-id>-<span-id>-<flags>`), carried from the HTTP
//! request through every bus message, and logged as the `trace_id` field on both sides.

use std::cell::RefCell;

use rand_core::{OsRng, RngCore};

/// Random bytes for ids, from the kernel's generator 4 KiB at a time per thread: every HTTP
/// request and bus hop takes a trace or span id, and a `getrandom` call for each showed in the
/// gateway's profile (issue 19). Each byte is handed out once.
const POOL_BYTES: usize = 4096;

thread_local! {
    static POOL: RefCell<([u8; POOL_BYTES], usize)> = const { RefCell::new(([0; POOL_BYTES], POOL_BYTES)) };
}

fn random_bytes(out: &mut [u8]) {
    POOL.with(|pool| {
        let (bytes, used) = &mut *pool.borrow_mut();
        if *used + out.len() > POOL_BYTES {
            OsRng.fill_bytes(bytes);
            *used = 0;
        }
        out.copy_from_slice(&bytes[*used..*used + out.len()]);
        // Zeroed as it leaves: an id handed out is not kept here.
        bytes[*used..*used + out.len()].fill(0);
        *used += out.len();
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

/// Lowercase hex in one allocation (the gateway formats a trace id for every request).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    text
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl TraceParent {
    /// A new trace, for a request that arrived without one.
    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        random_bytes(&mut trace_id);
        random_bytes(&mut span_id);
        TraceParent {
            trace_id,
            span_id,
            sampled: true,
        }
    }

    /// The same trace, with a new span id for the next hop.
    pub fn child(&self) -> Self {
        let mut span_id = [0u8; 8];
        random_bytes(&mut span_id);
        TraceParent { span_id, ..*self }
    }

    /// Parses a `traceparent` header; `None` for anything malformed (then a new root is used).
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let trace_id = unhex::<16>(parts.next()?)?;
        let span_id = unhex::<8>(parts.next()?)?;
        let flags = unhex::<1>(parts.next()?)?;
        if version != "00" || parts.next().is_some() {
            return None;
        }
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// Places `span` (not yet entered) in the trace: the child of `parent`, the context the
    /// request arrived with, if any. Returns the context the next hop carries: with spans
    /// exported, `span`'s own ids, so the next hop's span is its child; otherwise a new span id
    /// in the same trace (or a new trace).
    pub fn for_span(parent: Option<&TraceParent>, span: &tracing::Span) -> TraceParent {
        use bootfleet_telemetry::traces;
        if let Some(p) = parent {
            traces::set_remote_parent(span, p.trace_id, p.span_id, p.sampled);
        }
        match traces::span_ids(span) {
            Some((trace_id, span_id, sampled)) => TraceParent {
                trace_id,
                span_id,
                sampled,
            },
            None => parent.map_or_else(TraceParent::new_root, TraceParent::child),
        }
    }

    /// The current span's context, when spans are exported: for work that leaves the bus's
    /// request/reply (a build job in the queue) and should stay in the request's trace.
    pub fn of_current_span() -> Option<TraceParent> {
        bootfleet_telemetry::traces::span_ids(&tracing::Span::current()).map(
            |(trace_id, span_id, sampled)| TraceParent {
                trace_id,
                span_id,
                sampled,
            },
        )
    }

    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_child_keeps_trace() {
        let t = TraceParent::new_root();
        let parsed = TraceParent::parse(&t.to_string());
        assert_eq!(parsed, Some(t));
        let c = t.child();
        assert_eq!(c.trace_id(), t.trace_id());
        assert_ne!(c.to_string(), t.to_string());
    }

    #[test]
    fn written_as_w3c_traceparent_in_lowercase_hex() {
        let t = TraceParent {
            trace_id: [
                0x00, 0x01, 0x09, 0x0a, 0x0f, 0x10, 0x7f, 0x80, 0xa5, 0xc3, 0xde, 0xf0, 0xfe, 0xff,
                0x42, 0x24,
            ],
            span_id: [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31],
            sampled: true,
        };
        assert_eq!(t.trace_id(), "0001090a0f107f80a5c3def0feff4224");
        assert_eq!(
            t.to_string(),
            "00-0001090a0f107f80a5c3def0feff4224-b7ad6b7169203331-01"
        );
        assert_eq!(TraceParent::parse(&t.to_string()), Some(t));
    }

    #[test]
    fn ids_stay_distinct_across_refills_of_the_pool() {
        // 24 bytes a root: 3000 roots take the pool's 4 KiB about 18 times.
        let mut traces = std::collections::HashSet::new();
        let mut spans = std::collections::HashSet::new();
        for _ in 0..3000 {
            let t = TraceParent::new_root();
            assert!(traces.insert(t.trace_id), "a trace id came twice");
            assert!(spans.insert(t.span_id), "a span id came twice");
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "00-abc",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        let ok = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            ok.map(|t| t.trace_id()).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
