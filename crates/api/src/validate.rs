//! Field validation shared by the gateway (early, for clear errors) and the services (always,
//! because a service trusts no caller).

use crate::error::ApiError;

/// Scripts and kickstarts are small; this bounds memory per request and row.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;
pub const MAX_ARTIFACT_ID_LEN: usize = 64;
/// How many sites one script or artifact may be marked for.
pub const MAX_SITES: usize = 64;

pub fn text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_TEXT_BYTES {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {MAX_TEXT_BYTES} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(ApiError::invalid(field, "must not contain NUL bytes"));
    }
    Ok(())
}

/// Short free text (a hostname, a disk's model): at most `max` bytes, no control characters.
pub fn printable(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {max} bytes of printable text"),
        ));
    }
    Ok(())
}

/// An artifact id names a site (a distributor) or an artifact: letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit. It ends up in NATS subjects and file names, so nothing else.
pub fn artifact_id(field: &str, value: &str) -> Result<(), ApiError> {
    let starts_right = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    bytes_of(
        field,
        value,
        MAX_ARTIFACT_ID_LEN,
        |b| starts_right && (b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
        format_args!("must be 1 to {MAX_ARTIFACT_ID_LEN} letters, digits, '.', '_' or '-', starting with a letter or digit"),
    )
}

/// `Ok` when `value` is 1 to `max` bytes, each of them `allowed`; otherwise `field` is invalid
/// because it `must` be something else.
pub(crate) fn bytes_of(
    field: &str,
    value: &str,
    max: usize,
    allowed: impl Fn(u8) -> bool,
    must: impl std::fmt::Display,
) -> Result<(), ApiError> {
    if !value.is_empty() && value.len() <= max && value.bytes().all(allowed) {
        Ok(())
    } else {
        Err(ApiError::invalid(field, must))
    }
}

/// The sites a script or an artifact is marked for: each a site id ([`artifact_id`]), no
/// repeats, at most [`MAX_SITES`]. An empty list means every site.
pub fn sites(field: &str, sites: &[String]) -> Result<(), ApiError> {
    if sites.len() > MAX_SITES {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_SITES} sites"),
        ));
    }
    for (i, site) in sites.iter().enumerate() {
        artifact_id(&format!("{field}[{i}]"), site)?;
        if sites[..i].contains(site) {
            return Err(ApiError::invalid(
                &format!("{field}[{i}]"),
                format!("site \"{site}\" is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Row ids are UUIDs; returns the canonical lowercase hyphenated form.
pub fn id(field: &str, value: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(value)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ApiError::invalid(field, "must be a UUID"))
}

/// An IP address (v4 or v6), returned in canonical form.
pub fn ip(field: &str, value: &str) -> Result<String, ApiError> {
    value
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| ApiError::invalid(field, "must be an IPv4 or IPv6 address"))
}

/// An Ethernet MAC address (`:` or `-` separated), returned lowercase with `:`.
pub fn mac(field: &str, value: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = value.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(parts.join(":").to_ascii_lowercase())
    } else {
        Err(ApiError::invalid(
            field,
            "must be a MAC address like 52:54:00:12:34:56",
        ))
    }
}

/// A host name (RFC 1123): dot-separated labels of letters, digits and `-`, at most 253 bytes.
pub fn hostname(field: &str, value: &str) -> Result<(), ApiError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if value.len() <= 253 && value.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            "must be a host name: labels of letters, digits and '-' separated by '.'",
        ))
    }
}

/// An IPv4 network (`192.168.1.0/24`) or one address (a /32): the `range` a distributor serves.
pub fn ipv4_range(field: &str, value: &str) -> Result<(std::net::Ipv4Addr, u8), ApiError> {
    let bad = || {
        ApiError::invalid(
            field,
            "must be an IPv4 network like 192.168.1.0/24, or an IPv4 address",
        )
    };
    let (addr, prefix) = match value.split_once('/') {
        Some((a, p)) if !p.starts_with('+') => (a, p.parse::<u8>().map_err(|_| bad())?),
        Some(_) => return Err(bad()),
        None => (value, 32),
    };
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    Ok((addr, prefix))
}

/// Whether `ip` lies in the network [`ipv4_range`] returned.
pub fn in_ipv4_range(ip: std::net::Ipv4Addr, (network, prefix): (std::net::Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bounds() {
        assert!(text("text", "#!ipxe\nshell").is_ok());
        assert!(text("text", "  \n").is_err());
        assert!(text("text", "a\0b").is_err());
        assert!(text("text", &"x".repeat(MAX_TEXT_BYTES)).is_ok());
        assert!(text("text", &"x".repeat(MAX_TEXT_BYTES + 1)).is_err());
    }

    #[test]
    fn artifact_ids_keep_shells_out() {
        for good in [
            "site-1",
            "a",
            "6a3c2f0e-0d2f-4c7e-9f3e-1a2b3c4d5e6f",
            "rack_7.eu",
        ] {
            assert!(artifact_id("artifactId", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a;rm -rf /",
            "$(id)",
            "a/b",
            "é",
            &"a".repeat(65),
        ] {
            let err = artifact_id("artifactId", bad).expect_err(bad);
            assert_eq!(err.field.as_deref(), Some("artifactId"));
        }
    }

    #[test]
    fn ids_are_uuids() {
        let u = "6A3C2F0E-0D2F-4C7E-9F3E-1A2B3C4D5E6F";
        assert_eq!(id("id", u).ok().as_deref(), Some(&*u.to_lowercase()));
        assert!(id("id", "../etc/passwd").is_err());
    }

    #[test]
    fn node_fields() {
        assert_eq!(ip("ip", "10.0.2.15").as_deref(), Ok("10.0.2.15"));
        assert_eq!(ip("ip", "FD00::1").as_deref(), Ok("fd00::1"));
        for bad in [
            "",
            "10.0.2",
            "10.0.2.15;reboot",
            "$(id)",
            "10.0.2.256",
            " 10.0.2.15",
        ] {
            assert!(ip("ip", bad).is_err(), "{bad}");
        }
        assert_eq!(
            mac("mac", "52-54-00-AB-cd-01").as_deref(),
            Ok("52:54:00:ab:cd:01")
        );
        for bad in ["", "52:54:00:ab:cd", "52:54:00:ab:cd:0g", "5254.00ab.cd01"] {
            assert!(mac("mac", bad).is_err(), "{bad}");
        }
        for good in ["node1", "node-1.lab.example", "a"] {
            assert!(hostname("hostname", good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a..b", "a b", "a;b", &"a".repeat(64)] {
            assert!(hostname("hostname", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let r = ipv4_range("range", "10.77.0.0/24").expect("network");
        assert!(in_ipv4_range("10.77.0.2".parse().expect("ip"), r));
        assert!(!in_ipv4_range("10.77.1.2".parse().expect("ip"), r));
        let one = ipv4_range("range", "10.77.0.2").expect("address");
        assert!(in_ipv4_range("10.77.0.2".parse().expect("ip"), one));
        assert!(!in_ipv4_range("10.77.0.3".parse().expect("ip"), one));
        let all = ipv4_range("range", "0.0.0.0/0").expect("all");
        assert!(in_ipv4_range("192.0.2.1".parse().expect("ip"), all));
        for bad in [
            "",
            "10.77.0.0/33",
            "10.77.0.0/+8",
            "fd00::/64",
            "10.77.0/24",
            "10.77.0.0/24;x",
        ] {
            assert!(ipv4_range("range", bad).is_err(), "{bad}");
        }
    }
}
