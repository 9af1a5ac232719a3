//! The `Range` header (RFC 9110 §14.2): `bytes=` and a list of `first-last`, `first-` or
//! `-suffix` specs.

use std::ops::Range;

/// One range-spec, before the representation's length is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spec {
    /// `first-last`, or `first-` (no last: to the end).
    From { first: u64, last: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// What a `Range` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    One(Spec),
    /// More than one spec: answered with the whole representation (see the crate docs).
    Many,
    /// Not a valid byte-range request, which RFC 9110 lets a server ignore.
    Invalid,
}

pub(crate) fn parse(value: &[u8]) -> Request {
    let Ok(value) = std::str::from_utf8(value) else {
        return Request::Invalid;
    };
    // The unit is case-insensitive; no whitespace is allowed around the `=`.
    let Some((unit, set)) = value.trim_matches([' ', '\t']).split_once('=') else {
        return Request::Invalid;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return Request::Invalid;
    }
    let mut specs = set
        .split(',')
        .map(|element| element.trim_matches([' ', '\t']))
        // Empty list elements are allowed and do not count (RFC 9110 §5.6.1).
        .filter(|element| !element.is_empty())
        .map(spec);
    // Every spec must be valid, even when there are several: a half-valid header is no request.
    match (
        specs.next(),
        specs.try_fold(0usize, |n, s| s.map(|_| n + 1)),
    ) {
        (Some(Some(one)), Some(0)) => Request::One(one),
        (Some(Some(_)), Some(_)) => Request::Many,
        _ => Request::Invalid,
    }
}

fn spec(text: &str) -> Option<Spec> {
    let (first, last) = text.split_once('-')?;
    if first.is_empty() {
        return Some(Spec::Suffix(number(last)?));
    }
    let first = number(first)?;
    if last.is_empty() {
        return Some(Spec::From { first, last: None });
    }
    let last = number(last)?;
    // A last position before the first makes the whole header invalid (RFC 9110 §14.1.1).
    (last >= first).then_some(Spec::From {
        first,
        last: Some(last),
    })
}

/// ASCII digits, saturating at `u64::MAX`: a position beyond any length is still a position,
/// and saturating keeps its meaning (past the end) without an overflow.
fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

impl Spec {
    /// The bytes this spec selects from `len` bytes: never empty, always inside `0..len`;
    /// `None` when it selects nothing (unsatisfiable).
    pub(crate) fn resolve(self, len: u64) -> Option<Range<u64>> {
        match self {
            Spec::From { first, last } => {
                if first >= len {
                    return None;
                }
                // A last position past the end means the end (RFC 9110 §14.1.2).
                let end = last.map_or(len, |last| last.saturating_add(1).min(len));
                Some(first..end)
            }
            Spec::Suffix(0) => None,
            Spec::Suffix(n) => (len > 0).then(|| len - n.min(len)..len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(first: u64, last: Option<u64>) -> Request {
        Request::One(Spec::From { first, last })
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse(b"bytes=0-499"), from(0, Some(499)));
        assert_eq!(parse(b"bytes=500-"), from(500, None));
        assert_eq!(parse(b"bytes=-500"), Request::One(Spec::Suffix(500)));
        assert_eq!(parse(b"bytes=7-7"), from(7, Some(7)));
        assert_eq!(parse(b"BYTES=0-1"), from(0, Some(1)));
        assert_eq!(parse(b"Bytes=0-1"), from(0, Some(1)));
        assert_eq!(parse(b"bytes= 0-1 "), from(0, Some(1)));
        assert_eq!(parse(b"  bytes=0-1,"), from(0, Some(1)));
        assert_eq!(parse(b"bytes=,\t, 0-1 ,"), from(0, Some(1)));
        assert_eq!(parse(b"bytes=-0"), Request::One(Spec::Suffix(0)));
        assert_eq!(parse(b"bytes=0007-0008"), from(7, Some(8)));
        assert_eq!(
            parse(b"bytes=99999999999999999999999-"),
            from(u64::MAX, None)
        );
        assert_eq!(
            parse(b"bytes=0-99999999999999999999999"),
            from(0, Some(u64::MAX))
        );
    }

    #[test]
    fn several_specs_are_many_only_when_all_are_valid() {
        assert_eq!(parse(b"bytes=0-1,3-4"), Request::Many);
        assert_eq!(parse(b"bytes=0-1, -5, 9-"), Request::Many);
        assert_eq!(parse(b"bytes=0-0,0-0"), Request::Many);
        assert_eq!(parse(b"bytes=0-1,x"), Request::Invalid);
        assert_eq!(parse(b"bytes=x,0-1"), Request::Invalid);
        assert_eq!(parse(b"bytes=0-1,5-2"), Request::Invalid);
    }

    #[test]
    fn refuses_what_is_not_a_byte_range() {
        for bad in [
            &b""[..],
            b"bytes",
            b"bytes=",
            b"bytes=,",
            b"bytes=-",
            b"bytes=5",
            b"bytes=5-3",
            b"bytes=a-b",
            b"bytes=1-2-3",
            b"bytes=--1",
            b"bytes=+1-2",
            b"bytes=1 -2",
            b"bytes=0x10-",
            b"bytes =0-1",
            b"bytes= =0-1",
            b"bits=0-1",
            b"items=0-1",
            b"0-1",
            b"bytes=\xff-1",
            "bytes=٣-4".as_bytes(),
        ] {
            assert_eq!(
                parse(bad),
                Request::Invalid,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn resolves_within_the_length() {
        let f = |first, last| Spec::From { first, last };
        assert_eq!(f(0, Some(499)).resolve(1000), Some(0..500));
        assert_eq!(f(0, Some(0)).resolve(1), Some(0..1));
        assert_eq!(f(500, None).resolve(1000), Some(500..1000));
        assert_eq!(f(999, None).resolve(1000), Some(999..1000));
        assert_eq!(f(900, Some(5000)).resolve(1000), Some(900..1000));
        assert_eq!(f(0, Some(u64::MAX)).resolve(10), Some(0..10));
        assert_eq!(f(1000, None).resolve(1000), None);
        assert_eq!(f(1000, Some(1000)).resolve(1000), None);
        assert_eq!(f(0, None).resolve(0), None);
        assert_eq!(f(u64::MAX, None).resolve(u64::MAX), None);
        assert_eq!(f(0, Some(u64::MAX)).resolve(u64::MAX), Some(0..u64::MAX));
        assert_eq!(Spec::Suffix(500).resolve(1000), Some(500..1000));
        assert_eq!(Spec::Suffix(5000).resolve(1000), Some(0..1000));
        assert_eq!(Spec::Suffix(1).resolve(1), Some(0..1));
        assert_eq!(Spec::Suffix(0).resolve(1000), None);
        assert_eq!(Spec::Suffix(5).resolve(0), None);
    }
}
