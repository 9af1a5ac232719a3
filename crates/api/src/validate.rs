//! Field validation shared by the gateway (early, for clear errors) and the services (always,
//! because a service trusts no caller).

use crate::error::ApiError;

/// Scripts and kickstarts are small; this bounds memory per request and row.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;
pub const MAX_ARTIFACT_ID_LEN: usize = 64;

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

/// An artifact id names a site (a distributor) or an artifact: letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit. It ends up in NATS subjects and file names, so nothing else.
pub fn artifact_id(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_ARTIFACT_ID_LEN
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("must be 1 to {MAX_ARTIFACT_ID_LEN} letters, digits, '.', '_' or '-', starting with a letter or digit"),
        ))
    }
}

/// Row ids are UUIDs; returns the canonical lowercase hyphenated form.
pub fn id(field: &str, value: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(value)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ApiError::invalid(field, "must be a UUID"))
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
}
