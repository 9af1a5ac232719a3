//! Strong entity tags, and the entity-tag syntax of the conditional headers (RFC 9110 §8.8.3).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Hex digits of a digest kept in its tag: 128 bits leave no practical chance that two
/// different artifacts share a tag, and keep the header short.
const DIGEST_HEX: usize = 32;

/// A strong entity tag, kept as its header value: the opaque part between double quotes.
///
/// Strong means byte-for-byte: a client may join a range of one response to the bytes of an
/// earlier one with the same tag, so a tag must change whenever any byte does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(String);

/// Why a value cannot be an entity tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidETag(&'static str);

impl fmt::Display for InvalidETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidETag {}

impl ETag {
    /// A tag with this opaque part (what goes between the quotes): printable ASCII without `"`
    /// or spaces. RFC 9110 also allows bytes above 0x7f; they are refused so a tag always
    /// prints and compares as text.
    pub fn new(opaque: &str) -> Result<ETag, InvalidETag> {
        if !opaque
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
        {
            return Err(InvalidETag(
                "an entity tag is printable ascii without quotes or spaces",
            ));
        }
        Ok(ETag(format!("\"{opaque}\"")))
    }

    /// The tag of content named by its digest, `<algorithm>:<hex>` or bare hex with at least 32
    /// hex digits: the first 32 of them, lowercased. `sha256:9F86D081884C7D659A2FEAA0C55AD015A3…`
    /// becomes `"9f86d081884c7d659a2feaa0c55ad015"`.
    ///
    /// The algorithm is dropped: the tag only has to change when the content does, and a
    /// different algorithm gives different digits anyway. A digest names the bytes themselves,
    /// so the tag is strong whatever store or path the bytes come from.
    pub fn from_digest(digest: &str) -> Result<ETag, InvalidETag> {
        let hex = digest.rsplit(':').next().unwrap_or(digest);
        match hex.get(..DIGEST_HEX) {
            Some(head) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                ETag::new(&head.to_ascii_lowercase())
            }
            _ => Err(InvalidETag(
                "a digest is <algorithm>:<hex> with at least 32 hex digits",
            )),
        }
    }

    /// The tag of a file from its metadata, all in hex: `"<len>-<mtime ns>-<inode>"` (an mtime
    /// before 1970 is written `n<ns before>`).
    ///
    /// This is strong for a cache that writes a new file and renames it into place: the new
    /// file has a new inode, so the tag changes even if length and mtime do not. It would miss a
    /// rewrite in place that keeps the length within one filesystem timestamp tick; nothing
    /// that serves with it does that.
    pub fn from_file(len: u64, modified: SystemTime, inode: u64) -> ETag {
        let mtime = match modified.duration_since(UNIX_EPOCH) {
            Ok(after) => format!("{:x}", after.as_nanos()),
            Err(before) => format!("n{:x}", before.duration().as_nanos()),
        };
        ETag(format!("\"{len:x}-{mtime}-{inode:x}\""))
    }

    /// The header value, quotes included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part between the quotes, which is what comparisons look at.
    pub(crate) fn opaque(&self) -> &[u8] {
        let bytes = self.0.as_bytes();
        bytes.get(1..bytes.len().saturating_sub(1)).unwrap_or(&[])
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An entity tag as a request carries it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Tag<'a> {
    pub weak: bool,
    pub opaque: &'a [u8],
}

/// Reads one entity tag (`"…"` or `W/"…"`) from the start of `s`; returns it and what follows.
pub(crate) fn entity_tag(s: &[u8]) -> Option<(Tag<'_>, &[u8])> {
    let (weak, s) = match s.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let s = s.strip_prefix(b"\"")?;
    let end = s.iter().position(|&b| b == b'"')?;
    let opaque = s.get(..end)?;
    // etagc: 0x21, 0x23-0x7e and obs-text; anything else (a space, a control) is malformed.
    if !opaque
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
    {
        return None;
    }
    Some((Tag { weak, opaque }, s.get(end + 1..)?))
}

/// Whether one `If-None-Match` field line names `ours`: `*`, or a list of tags compared weakly
/// (the `W/` ignored, RFC 9110 §8.8.3.2). `None` when the line is malformed.
pub(crate) fn none_match_line(value: &[u8], ours: &ETag) -> Option<bool> {
    let value = trim_ows(value);
    if value == b"*" {
        return Some(true);
    }
    let (mut rest, mut hit, mut tags) = (value, false, 0usize);
    loop {
        // A list may hold empty elements (RFC 9110 §5.6.1): skip commas and spaces between tags.
        rest = skip(rest, |b| b == b',' || is_ows(b));
        if rest.is_empty() {
            break;
        }
        let (tag, after) = entity_tag(rest)?;
        hit |= tag.opaque == ours.opaque();
        tags += 1;
        rest = skip(after, is_ows);
        if !rest.is_empty() && !rest.starts_with(b",") {
            return None;
        }
    }
    (tags > 0).then_some(hit)
}

/// Whether an `If-Range` value that is an entity tag names `ours` by strong comparison: a weak
/// tag never matches, since a range is only safe to join to bytes known to be identical.
/// `None` when the value is not an entity tag at all.
pub(crate) fn if_range_tag(value: &[u8], ours: &ETag) -> Option<bool> {
    let (tag, rest) = entity_tag(trim_ows(value))?;
    rest.is_empty()
        .then_some(!tag.weak && tag.opaque == ours.opaque())
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip(s: &[u8], what: impl Fn(u8) -> bool) -> &[u8] {
    let start = s.iter().position(|&b| !what(b)).unwrap_or(s.len());
    s.get(start..).unwrap_or(&[])
}

pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let s = skip(s, is_ows);
    let end = s.iter().rposition(|&b| !is_ows(b)).map_or(0, |i| i + 1);
    s.get(..end).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tag(opaque: &str) -> ETag {
        ETag::new(opaque).expect("valid tag")
    }

    #[test]
    fn new_quotes_and_refuses_what_cannot_print() {
        assert_eq!(tag("abc").as_str(), "\"abc\"");
        assert_eq!(tag("").as_str(), "\"\"");
        assert_eq!(tag("abc").to_string(), "\"abc\"");
        refuses(
            ETag::new,
            &["a\"b", "a b", "tab\t", "é", "\n"],
            "a b",
            "an entity tag is printable ascii without quotes or spaces",
        );
    }

    /// `make` refuses every one of `bad`, and says `message` for `example`.
    fn refuses<E: std::fmt::Display>(
        make: impl Fn(&str) -> Result<ETag, E>,
        bad: &[&str],
        example: &str,
        message: &str,
    ) {
        for bad in bad {
            assert!(make(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            make(example).map_err(|e| e.to_string()),
            Err(message.to_owned())
        );
    }

    #[test]
    fn from_digest_keeps_the_first_32_hex_digits_lowercased() {
        let hex = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        let expected = "\"9f86d081884c7d659a2feaa0c55ad015\"";
        assert_eq!(
            ETag::from_digest(&format!("sha256:{hex}")).map(|t| t.to_string()),
            Ok(expected.to_owned())
        );
        assert_eq!(
            ETag::from_digest(hex).map(|t| t.to_string()),
            Ok(expected.to_owned())
        );
        assert!(ETag::from_digest(&"a".repeat(32)).is_ok());
        refuses(
            ETag::from_digest,
            &[
                "",
                "sha256:",
                "sha256:abc",
                &"a".repeat(31),
                &format!("sha256:{}g", "a".repeat(40)),
                &format!("sha256:{} ", "a".repeat(40)),
                &format!("{}:", "a".repeat(40)),
            ],
            "md5:x",
            "a digest is <algorithm>:<hex> with at least 32 hex digits",
        );
    }

    #[test]
    fn from_file_changes_with_each_part() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        let base = ETag::from_file(4096, t, 77);
        assert_eq!(base.as_str(), "\"1000-17979cfe362a007b-4d\"");
        assert_ne!(base, ETag::from_file(4097, t, 77));
        assert_ne!(base, ETag::from_file(4096, t + Duration::from_nanos(1), 77));
        assert_ne!(base, ETag::from_file(4096, t, 78));
        let before = UNIX_EPOCH - Duration::from_nanos(255);
        assert_eq!(ETag::from_file(0, before, 0).as_str(), "\"0-nff-0\"");
        assert_ne!(
            ETag::from_file(0, before, 0),
            ETag::from_file(0, UNIX_EPOCH + Duration::from_nanos(255), 0)
        );
        assert!(ETag::new(base.as_str().trim_matches('"')).is_ok());
    }

    #[test]
    fn entity_tags_parse_strictly() {
        assert_eq!(
            entity_tag(b"\"abc\", x"),
            Some((
                Tag {
                    weak: false,
                    opaque: b"abc"
                },
                &b", x"[..]
            ))
        );
        assert_eq!(
            entity_tag(b"W/\"\""),
            Some((
                Tag {
                    weak: true,
                    opaque: b""
                },
                &b""[..]
            ))
        );
        for bad in [
            &b"abc"[..],
            b"\"abc",
            b"w/\"abc\"",
            b"W/ \"abc\"",
            b"\"a b\"",
            b"\"a\x01\"",
            b"",
        ] {
            assert_eq!(entity_tag(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn if_none_match_compares_weakly_over_lists() {
        let ours = tag("v1");
        let cases: [(&[u8], Option<bool>); 16] = [
            (b"\"v1\"", Some(true)),
            (b"W/\"v1\"", Some(true)),
            (b"*", Some(true)),
            (b"  *  ", Some(true)),
            (b"\"v0\", \"v1\"", Some(true)),
            (b"\"v0\",W/\"v1\"", Some(true)),
            (b", ,\"v1\",,", Some(true)),
            (b"\"v0\"", Some(false)),
            (b"\"V1\"", Some(false)),
            (b"\"v0\" , \"v2\"", Some(false)),
            (b"v1", None),
            (b"\"v1\" \"v2\"", None),
            (b"\"v1\";", None),
            (b"*, \"v1\"", None),
            (b"", None),
            (b" , ", None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                none_match_line(value, &ours),
                expected,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn if_range_compares_strongly() {
        let ours = tag("v1");
        assert_eq!(if_range_tag(b"\"v1\"", &ours), Some(true));
        assert_eq!(if_range_tag(b" \"v1\" ", &ours), Some(true));
        assert_eq!(if_range_tag(b"W/\"v1\"", &ours), Some(false));
        assert_eq!(if_range_tag(b"\"v0\"", &ours), Some(false));
        assert_eq!(if_range_tag(b"\"v1\", \"v0\"", &ours), None);
        assert_eq!(if_range_tag(b"Sun, 06 Nov 1994 08:49:37 GMT", &ours), None);
    }

    #[test]
    fn trimming() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
    }
}
