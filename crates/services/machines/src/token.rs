//! Machine tokens: `bfm1.<machine id>.<expiry, unix seconds>.<HMAC-SHA256, hex>`, signed with
//! a key the service keeps in its own table. A token reads and reports for its own machine only.

use bootfleet_api::machines::MACHINE_TOKEN_PREFIX;
use bootfleet_api::{ApiError, ErrorCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a rendered token stays valid: long enough for a slow install and its callback.
pub const TOKEN_TTL_SECS: u64 = 7 * 86_400;

#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

pub use bootfleet_sealbox::{hex, unhex};

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, message)
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKey {
    /// A key from its stored hex form.
    pub fn from_hex(s: &str) -> Option<TokenKey> {
        unhex(s).filter(|k| k.len() >= 32).map(TokenKey)
    }

    /// The key's bytes (other keys of the service are derived from them).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A fresh random key, hex.
    pub fn generate_hex() -> String {
        use rand_core::RngCore;
        let mut key = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut key);
        hex(&key)
    }

    fn sign(&self, payload: &str) -> Hmac<Sha256> {
        // Any key length is accepted by HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
        mac.update(payload.as_bytes());
        mac
    }

    /// A token for machine `id`, valid until `exp` (unix seconds).
    pub fn mint(&self, id: &str, exp: u64) -> String {
        let payload = format!("{MACHINE_TOKEN_PREFIX}{id}.{exp}");
        let sig = self.sign(&payload).finalize().into_bytes();
        format!("{payload}.{}", hex(&sig))
    }

    /// Checks a token for machine `id`: 401 when it is not a valid token of ours (or expired),
    /// 403 when it is valid but for another machine.
    pub fn verify(&self, token: &str, id: &str, now: u64) -> Result<(), ApiError> {
        let rest = token
            .strip_prefix(MACHINE_TOKEN_PREFIX)
            .ok_or_else(|| unauthenticated("token: not a machine token"))?;
        let mut parts = rest.split('.');
        let (Some(subject), Some(exp), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unauthenticated("token: malformed machine token"));
        };
        let exp: u64 = exp
            .parse()
            .map_err(|_| unauthenticated("token: malformed machine token"))?;
        let sig = unhex(sig).ok_or_else(|| unauthenticated("token: malformed machine token"))?;
        self.sign(&format!("{MACHINE_TOKEN_PREFIX}{subject}.{exp}"))
            .verify_slice(&sig)
            .map_err(|_| unauthenticated("token: invalid machine token"))?;
        if exp < now {
            return Err(unauthenticated("token: machine token expired"));
        }
        if subject != id {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                "token: this machine token is for another machine",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_machine_and_expire() {
        let key = TokenKey::from_hex(&TokenKey::generate_hex()).expect("key");
        let t = key.mint("a", 100);
        assert!(key.verify(&t, "a", 50).is_ok());
        assert_eq!(
            key.verify(&t, "b", 50).expect_err("other").code,
            ErrorCode::PermissionDenied
        );
        assert_eq!(
            key.verify(&t, "a", 101).expect_err("expired").code,
            ErrorCode::Unauthenticated
        );
        let forged = t.replace("bfm1.a.100", "bfm1.a.999");
        assert_eq!(
            key.verify(&forged, "a", 50).expect_err("forged").code,
            ErrorCode::Unauthenticated
        );
        let other = TokenKey::from_hex(&TokenKey::generate_hex()).expect("key");
        assert_eq!(
            other.verify(&t, "a", 50).expect_err("foreign").code,
            ErrorCode::Unauthenticated
        );
        for garbage in [
            "",
            "x",
            "bfm1.",
            "bfm1.a.b.c",
            "bfm1.a.1.zz",
            "bfm1.a.1.00.00",
        ] {
            assert_eq!(
                key.verify(garbage, "a", 0).expect_err(garbage).code,
                ErrorCode::Unauthenticated
            );
        }
    }
}
